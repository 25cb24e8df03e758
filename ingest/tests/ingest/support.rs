//! Test support: a real redis-server on a free loopback port, ingest servers
//! (in-process or the real binary), small clients, and [`wait_for`], which
//! tests use instead of sleeping. The TCP proxy in front of Redis is in
//! [`crate::proxy`].

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use telemetry_ingest::config::IngestArgs;
use telemetry_ingest::server::{self, Listeners};
use telemetry_proto::v1::telemetry_ingest_client::TelemetryIngestClient;
use telemetry_proto::v1::{Ack, Packet};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server child process; killed on drop.
pub struct Redis {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// Extra redis-server arguments, e.g. `["--appendonly", "yes"]`.
    pub fn start_with(extra: &[&str]) -> Redis {
        let mut r = Redis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        r.spawn();
        r
    }

    /// Starts redis-server on this port and data directory (loading its AOF
    /// when `--appendonly yes`) and waits until it answers PING.
    pub fn spawn(&mut self) {
        let child = Command::new(redis_server())
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (make test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut c) = self.client().get_connection()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    pub fn conn(&self) -> redis::Connection {
        self.client().get_connection().unwrap()
    }

    /// Stops the server (SHUTDOWN, so an AOF is complete) and waits for it.
    pub fn stop(&mut self) {
        if let Ok(mut c) = self.client().get_connection() {
            let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query(&mut c);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// kill -9: the process dies without a word, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// `HGET tp:{p}:stats events`.
    pub fn events(&self, pipeline: &str) -> u64 {
        let v: Option<u64> = redis::cmd("HGET")
            .arg(format!("tp:{{{pipeline}}}:stats"))
            .arg("events")
            .query(&mut self.conn())
            .unwrap();
        v.unwrap_or(0)
    }

    /// Sum of the per-device counts.
    pub fn device_total(&self, pipeline: &str) -> u64 {
        let rows: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(format!("tp:{{{pipeline}}}:devices"))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(&mut self.conn())
            .unwrap();
        rows.iter().map(|(_, s)| *s as u64).sum()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn redis_server() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

/// An in-process ingest server.
pub struct Ingest {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<telemetry_ingest::Result<()>>,
}

impl Ingest {
    /// Starts a server with `telemetry-ingest` flags (listen flags are added).
    pub async fn start(redis_url: &str, pipeline: &str, flags: &[&str]) -> Ingest {
        Ingest::start_on(format!("--redis-url={redis_url}"), pipeline, flags).await
    }

    /// Starts a server on the Redis Cluster of seed nodes `seeds`.
    pub async fn start_cluster(seeds: &str, pipeline: &str, flags: &[&str]) -> Ingest {
        Ingest::start_on(format!("--redis-cluster-nodes={seeds}"), pipeline, flags).await
    }

    async fn start_on(redis: String, pipeline: &str, flags: &[&str]) -> Ingest {
        let mut argv = vec![
            "telemetry-ingest".to_string(),
            "--grpc-listen=127.0.0.1:0".into(),
            "--http-listen=127.0.0.1:0".into(),
            redis,
            format!("--pipeline={pipeline}"),
        ];
        argv.extend(flags.iter().map(|s| s.to_string()));
        let args = IngestArgs::try_parse_from(argv).unwrap();
        let listeners = Listeners::bind(&args).await.unwrap();
        let grpc = listeners.grpc.local_addr().unwrap();
        let http = listeners.http.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server::run(args, listeners, shutdown.clone()));
        let ingest = Ingest {
            grpc,
            http,
            shutdown,
            task,
        };
        ingest.wait_ready(Duration::from_secs(10)).await;
        ingest
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    pub async fn client(&self) -> TelemetryIngestClient<tonic::transport::Channel> {
        TelemetryIngestClient::connect(self.grpc_url())
            .await
            .unwrap()
    }

    /// Sends `packets` as one gRPC client stream and returns its Ack.
    pub async fn stream(&self, packets: Vec<Packet>) -> Ack {
        self.client()
            .await
            .stream_packets(tokio_stream::iter(packets))
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn ready(&self) -> bool {
        matches!(reqwest::get(format!("{}/readyz", self.http_url())).await, Ok(r) if r.status() == 200)
    }

    pub async fn wait_ready(&self, limit: Duration) {
        wait_for("ingest to be ready", limit, || async {
            self.ready().await.then_some(())
        })
        .await;
    }

    /// The value of one series on `/metrics`, named as it is printed there
    /// (`name` or `name{label="value"}`); 0 while the series is absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.http_url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter_map(|line| line.split_once(' '))
            .find(|(name, _)| *name == series)
            .map_or(0.0, |(_, value)| value.trim().parse().unwrap())
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// The real `telemetry-ingest` binary as a child process.
pub struct IngestProcess {
    pub child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl IngestProcess {
    /// Starts the binary and waits until it is ready.
    pub async fn start(redis_url: &str, pipeline: &str, flags: &[&str]) -> IngestProcess {
        let p = IngestProcess::spawn(redis_url, pipeline, flags).await;
        p.wait_ready(Duration::from_secs(20)).await;
        p
    }

    /// Starts the binary on port 0 and learns its addresses from its startup
    /// log line alone (JSON logs, read from its stdout by a thread that
    /// drains it until the process exits); does not wait for readiness.
    pub async fn spawn(redis_url: &str, pipeline: &str, flags: &[&str]) -> IngestProcess {
        IngestProcess::spawn_on("127.0.0.1:0", "127.0.0.1:0", redis_url, pipeline, flags).await
    }

    /// [`IngestProcess::spawn`] on given listen addresses, e.g. those of a
    /// process that was killed, so that its clients find it again.
    pub async fn spawn_on(
        grpc_listen: &str,
        http_listen: &str,
        redis_url: &str,
        pipeline: &str,
        flags: &[&str],
    ) -> IngestProcess {
        let mut child = ingest_command(grpc_listen, http_listen, redis_url, pipeline, flags)
            .spawn()
            .unwrap();
        let mut lines = log_lines(child.stdout.take().unwrap());
        let (grpc, http) = serving(&mut lines).await;
        IngestProcess { child, grpc, http }
    }

    pub async fn wait_ready(&self, limit: Duration) {
        let url = format!("http://{}/readyz", self.http);
        wait_for("telemetry-ingest to be ready", limit, || async {
            matches!(reqwest::get(&url).await, Ok(r) if r.status() == 200).then_some(())
        })
        .await;
    }

    /// kill -9, and waits for the process to be gone.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Peak resident memory of the process so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for IngestProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `telemetry-ingest` binary with these flags, JSON logs at `info` on a
/// piped stdout; the caller may add environment variables and spawns it.
pub fn ingest_command(
    grpc_listen: &str,
    http_listen: &str,
    redis_url: &str,
    pipeline: &str,
    flags: &[&str],
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_telemetry-ingest"));
    cmd.arg(format!("--grpc-listen={grpc_listen}"))
        .arg(format!("--http-listen={http_listen}"))
        .arg(format!("--redis-url={redis_url}"))
        .arg(format!("--pipeline={pipeline}"))
        .arg("--log-format=json")
        .args(flags)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

/// The gRPC and HTTP addresses of the startup log line, read from `lines`
/// (which go on with the lines after it).
pub async fn serving(lines: &mut UnboundedReceiver<String>) -> (SocketAddr, SocketAddr) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.recv().await {
            if let Some(addrs) = serving_addrs(&line) {
                return Some(addrs);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("telemetry-ingest did not log its addresses")
}

/// The lines a child writes to `out`, read by a thread that drains it until
/// the child exits (so the child never blocks on a full pipe).
pub fn log_lines(out: impl std::io::Read + Send + 'static) -> UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            // Keep draining after the receiver is gone.
            let _ = tx.send(line);
        }
    });
    rx
}

/// Polls `check` every 20 ms until it returns `Some`, and returns that; fails
/// the test naming `what` once `limit` has passed. Tests wait for the
/// condition they need with this rather than sleeping for a guessed time.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The gRPC and HTTP addresses of a JSON startup log line
/// (`telemetry-ingest serving`), if `line` is that line.
pub fn serving_addrs(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let entry: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = entry.get("fields")?;
    if fields.get("message")?.as_str()? != "telemetry-ingest serving" {
        return None;
    }
    let addr = |name: &str| fields.get(name)?.as_str()?.parse().ok();
    Some((addr("grpc")?, addr("http")?))
}

/// A valid packet; `id` empty means no event id.
pub fn packet(device: &str, id: &str) -> Packet {
    Packet {
        device_id: device.into(),
        timestamp: telemetry_ingest::intake::now_ms(),
        payload: b"{}".to_vec(),
        event_type: "reading".into(),
        event_id: id.into(),
        user_id: String::new(),
        value: 1.0,
        attributes: Default::default(),
    }
}

/// Unique pipeline name per test, so tests may share a Redis.
pub fn pipeline(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

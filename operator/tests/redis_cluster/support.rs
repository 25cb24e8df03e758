//! Local cluster-enabled redis-server processes (each with its own port and
//! data directory, killed on drop), and a driver that calls
//! `converge_once` until the cluster has converged.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use telemetry_operator::redis_cluster::nodes::{self, View};
use telemetry_operator::redis_cluster::{Layout, Plan, Progress, converge_once};

/// How long converging may take before a test fails.
const CONVERGE_LIMIT: Duration = Duration::from_secs(300);

/// Cluster-enabled redis-server processes that know nothing of each other
/// until the operator's code forms them.
pub struct Nodes {
    nodes: Vec<(u16, tempfile::TempDir, Child)>,
    pub password: Option<String>,
}

/// What converging took.
#[derive(Debug)]
pub struct Converged {
    pub rounds: usize,
    pub steps: usize,
    /// Rounds that failed (a command refused), retried by the next.
    pub errors: Vec<String>,
    /// Why rounds waited, each reason once.
    pub waits: Vec<String>,
    pub took: Duration,
    pub last: Progress,
}

impl Converged {
    /// One line for the test's output.
    pub fn summary(&self) -> String {
        format!(
            "{} rounds, {} steps, {} failed rounds, in {:?}; waited for: {:?}",
            self.rounds,
            self.steps,
            self.errors.len(),
            self.took,
            self.waits
        )
    }
}

impl Nodes {
    /// `n` fresh nodes, with `--requirepass`/`--masterauth` when `password`.
    pub async fn start(n: usize, password: Option<&str>) -> Nodes {
        let mut nodes = Nodes {
            nodes: Vec::new(),
            password: password.map(str::to_string),
        };
        for _ in 0..n {
            nodes.add().await;
        }
        nodes
    }

    /// Starts one more fresh node; returns its index.
    pub async fn add(&mut self) -> usize {
        for _ in 0..20 {
            let port = cluster_port();
            if self
                .nodes
                .iter()
                .any(|(p, _, _)| [0, 10000].contains(&p.abs_diff(port)))
            {
                continue;
            }
            let dir = tempfile::tempdir().expect("a data directory");
            let mut cmd = Command::new(
                std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()),
            );
            let args = format!(
                "--port {port} --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file nodes.conf \
                 --cluster-node-timeout 1000 --repl-diskless-sync-delay 0 --appendonly no"
            );
            cmd.args(args.split_whitespace())
                .args(["--save", ""])
                .arg("--dir")
                .arg(dir.path());
            cmd.arg("--logfile").arg(dir.path().join("redis.log"));
            if let Some(pw) = &self.password {
                cmd.args(["--requirepass", pw, "--masterauth", pw]);
            }
            let mut child = cmd
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    break; // the port was taken meanwhile: try another
                }
                if self.connect(port).await.is_ok() {
                    self.nodes.push((port, dir, child));
                    return self.nodes.len() - 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start a cluster node on a free port pair");
    }

    /// `127.0.0.1:port` of every node, in index order (the pods' ordinals).
    pub fn addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|(p, _, _)| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// A connection to node `i`.
    pub async fn conn(&self, i: usize) -> MultiplexedConnection {
        self.connect(self.nodes[i].0)
            .await
            .expect("connect to a node")
    }

    /// `CLUSTER NODES` of node `i`, parsed.
    pub async fn view(&self, i: usize) -> View {
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut self.conn(i).await)
            .await
            .unwrap();
        nodes::parse(&text).unwrap()
    }

    /// `cluster_state` of node `i`.
    pub async fn state(&self, i: usize) -> String {
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut self.conn(i).await)
            .await
            .unwrap();
        let state = info.lines().find_map(|l| l.strip_prefix("cluster_state:"));
        state.unwrap_or_default().trim().to_string()
    }

    /// A cluster client's connection (following MOVED and ASK).
    pub async fn client(&self) -> redis::cluster_async::ClusterConnection {
        let urls: Vec<String> = self
            .addrs()
            .iter()
            .map(|a| format!("redis://{a}"))
            .collect();
        let mut builder = redis::cluster::ClusterClient::builder(urls);
        if let Some(pw) = &self.password {
            builder = builder.password(pw.clone());
        }
        builder
            .build()
            .unwrap()
            .get_async_connection()
            .await
            .expect("a cluster connection")
    }

    /// Calls `converge_once` until it reports convergence; panics after
    /// [`CONVERGE_LIMIT`] with what it saw last.
    pub async fn converge(&self, layout: Layout) -> Converged {
        let (started, addrs) = (Instant::now(), self.addrs());
        let (mut rounds, mut steps, mut errors, mut waits) =
            (0, 0, Vec::new(), Vec::<String>::new());
        let mut last;
        loop {
            rounds += 1;
            match converge_once(&addrs, layout, self.password.as_deref()).await {
                Ok(progress) if progress.converged() => {
                    let took = started.elapsed();
                    return Converged {
                        rounds,
                        steps,
                        errors,
                        waits,
                        took,
                        last: progress,
                    };
                }
                Ok(progress) => {
                    if let Plan::Steps(s) = &progress.plan {
                        steps += s.len();
                    }
                    last = format!("{:?}; {}", progress.plan, progress.health.message);
                    if let Plan::Wait(why) | Plan::Blocked(why) = &progress.plan
                        && !waits.contains(why)
                    {
                        waits.push(why.clone());
                    }
                    if !matches!(progress.plan, Plan::Steps(_)) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                Err(e) => {
                    last = e.to_string();
                    errors.push(last.clone());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            let elapsed = started.elapsed();
            assert!(
                elapsed < CONVERGE_LIMIT,
                "not converged to {layout:?} after {rounds} rounds in {elapsed:?} ({} errors); last seen: {last}",
                errors.len()
            );
        }
    }

    async fn connect(&self, port: u16) -> redis::RedisResult<MultiplexedConnection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        if let Some(pw) = &self.password {
            redis::cmd("AUTH").arg(pw).exec_async(&mut conn).await?;
        }
        redis::cmd("PING").exec_async(&mut conn).await?;
        Ok(conn)
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for (_, _, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port p < 55535 with p and its cluster bus port p + 10000 both free.
fn cluster_port() -> u16 {
    for _ in 0..1000 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < 55535 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair (p, p + 10000) on 127.0.0.1");
}

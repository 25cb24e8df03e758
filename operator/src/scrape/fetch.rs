//! Fetching the ingest pods' `/metrics`: the module's only I/O.
//!
//! One [`Scraper`] holds one HTTP client (its connections are reused from
//! tick to tick) and scrapes a tick's targets concurrently, at most
//! `parallelism` at a time, so a Deployment of hundreds of pods neither waits
//! on them one by one nor opens hundreds of sockets at once. Each pod gets the
//! whole timeout for connect, headers and body, and a body over the size cap
//! is abandoned as soon as it passes the cap: a slow or misbehaving pod costs
//! one slot for at most the timeout, never the tick.

use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{ACCEPT, HeaderValue, USER_AGENT};

use super::ScrapeError;
use super::exposition::{self, Reading};
use crate::{Error, Result};

/// Scrapes in flight at once by default.
pub const DEFAULT_PARALLELISM: usize = 32;
/// Largest `/metrics` body accepted by default (the ingest server's is about
/// 7 KiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// One pod to scrape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The pod's name (the key of the [`SampleCache`](super::SampleCache)).
    pub name: String,
    /// `http://<podIP>:<httpPort>/metrics`, or `https://` when the pod
    /// serves TLS.
    pub url: String,
}

impl Target {
    /// The target for pod `name` serving HTTP at `ip:port` (IPv6
    /// bracketed), over TLS when `tls`.
    pub fn pod(name: impl Into<String>, ip: std::net::IpAddr, port: u16, tls: bool) -> Self {
        let scheme = if tls { "https" } else { "http" };
        Self {
            name: name.into(),
            url: format!("{scheme}://{}/metrics", std::net::SocketAddr::new(ip, port)),
        }
    }
}

/// Scrapes ingest pods' metrics.
#[derive(Clone, Debug)]
pub struct Scraper {
    client: reqwest::Client,
    parallelism: usize,
    max_body_bytes: usize,
}

impl Scraper {
    /// A scraper running at most `parallelism` scrapes at once (at least one).
    pub fn new(parallelism: usize) -> Result<Self> {
        let client = reqwest::Client::builder()
            // Pod IPs are reached directly, never through an HTTP(S)_PROXY
            // from the operator's environment, and a redirect is an error.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(1)
            // A pod serving TLS (`spec.ingest.tls`) is scraped over https
            // without verifying its certificate: the scrape sends no
            // credential and reads only the public /metrics, and the pod
            // is reached by the IP the API server lists for it, which no
            // certificate names (docs/tls.md).
            .danger_accept_invalid_certs(true)
            .build()
            .map_err(Error::HttpClient)?;
        Ok(Self {
            client,
            parallelism: parallelism.max(1),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        })
    }

    /// Changes the body size cap.
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Scrapes every target, each within `timeout`; returns one result per
    /// target, in the order the scrapes finished.
    #[tracing::instrument(name = "scrape", skip_all, fields(targets = targets.len()))]
    pub async fn scrape_all(
        &self,
        targets: Vec<Target>,
        timeout: Duration,
    ) -> Vec<(Target, Result<Reading, ScrapeError>)> {
        futures::stream::iter(targets)
            .map(|target| async move {
                let result = tokio::time::timeout(timeout, self.scrape(&target.url))
                    .await
                    .unwrap_or(Err(ScrapeError::Timeout));
                if let Err(e) = &result {
                    tracing::debug!(
                        pod = %target.name,
                        url = %target.url,
                        reason = e.reason(),
                        error = %e,
                        "scrape failed"
                    );
                }
                (target, result)
            })
            .buffer_unordered(self.parallelism)
            .collect()
            .await
    }

    /// One scrape, without the timeout.
    async fn scrape(&self, url: &str) -> Result<Reading, ScrapeError> {
        let mut resp = self
            .client
            .get(url)
            .header(ACCEPT, HeaderValue::from_static("text/plain;version=0.0.4"))
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
            .send()
            .await
            .map_err(request_error)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(ScrapeError::HttpStatus(status.as_u16()));
        }
        let limit = self.max_body_bytes;
        let announced = resp.content_length().unwrap_or(0);
        if announced > limit as u64 {
            return Err(ScrapeError::BodyTooLarge { limit });
        }
        let mut body = Vec::with_capacity(announced as usize);
        while let Some(chunk) = resp.chunk().await.map_err(request_error)? {
            if body.len() + chunk.len() > limit {
                return Err(ScrapeError::BodyTooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        exposition::parse(&body)
    }
}

const USER_AGENT_VALUE: &str = concat!("telemetry-operator/", env!("CARGO_PKG_VERSION"));

/// Sorts a reqwest error into connect / timeout / anything else, keeping the
/// causes (reqwest's own message is only "error sending request").
fn request_error(e: reqwest::Error) -> ScrapeError {
    if e.is_timeout() {
        return ScrapeError::Timeout;
    }
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    if e.is_connect() {
        ScrapeError::Connect(message)
    } else {
        ScrapeError::Request(message)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;

    use super::super::exposition::tests::EXPOSITION;
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(300);

    /// Serves `router` on a free loopback port until the test's runtime ends.
    async fn serve(router: Router) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    }

    fn target(name: &str, addr: SocketAddr) -> Target {
        Target::pod(name, addr.ip(), addr.port(), false)
    }

    /// Scrapes one target with `scraper` and returns its result.
    async fn scrape_one(scraper: &Scraper, t: Target) -> Result<Reading, ScrapeError> {
        let mut results = scraper.scrape_all(vec![t.clone()], TIMEOUT).await;
        assert_eq!(results.len(), 1);
        let (got, result) = results.pop().unwrap();
        assert_eq!(got, t);
        result
    }

    fn scraper() -> Scraper {
        Scraper::new(DEFAULT_PARALLELISM).unwrap()
    }

    #[test]
    fn targets_point_at_the_pods_metrics_path_with_ipv6_bracketed() {
        let t = Target::pod("p", "10.0.0.7".parse().unwrap(), 8000, false);
        assert_eq!(t.url, "http://10.0.0.7:8000/metrics");
        let t = Target::pod("p", "fd00::7".parse().unwrap(), 8000, false);
        assert_eq!(t.url, "http://[fd00::7]:8000/metrics");
    }

    #[tokio::test]
    async fn a_served_exposition_is_parsed_into_a_reading() {
        let addr = serve(Router::new().route("/metrics", get(|| async { EXPOSITION }))).await;
        let reading = scrape_one(&scraper(), target("a", addr)).await.unwrap();
        assert_eq!(reading.queue_depth, Some(1500.0));
        assert_eq!(reading.queue_capacity, Some(100000.0));
        assert_eq!(reading.accepted_total, Some(123456.0));
        assert_eq!(reading.flush_script_seconds_sum, Some(0.5));
        assert_eq!(reading.flushed_events_sum, Some(123456.0));
        assert_eq!(reading.flush_seconds_sum, Some(0.75));
    }

    #[tokio::test]
    async fn a_pod_slower_than_the_timeout_is_reported_as_timeout() {
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            EXPOSITION
        };
        let addr = serve(Router::new().route("/metrics", get(slow))).await;
        let start = Instant::now();
        let err = scrape_one(&scraper(), target("slow", addr))
            .await
            .unwrap_err();
        let took = start.elapsed();
        assert_eq!(err, ScrapeError::Timeout);
        assert!(took >= TIMEOUT, "{took:?}");
        assert!(took < TIMEOUT + Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn a_body_that_trickles_past_the_timeout_is_reported_as_timeout() {
        // Headers at once, then one line every 100 ms: the timeout covers the
        // body too.
        let trickle = || async {
            let lines = futures::stream::unfold(0u32, |i| async move {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let line = format!("telemetry_ingest_queue_depth {i}\n");
                Some((Ok::<_, std::convert::Infallible>(line), i + 1))
            });
            Body::from_stream(lines)
        };
        let addr = serve(Router::new().route("/metrics", get(trickle))).await;
        let start = Instant::now();
        let err = scrape_one(&scraper(), target("trickle", addr))
            .await
            .unwrap_err();
        assert_eq!(err, ScrapeError::Timeout);
        assert!(start.elapsed() < TIMEOUT + Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_non_success_status_is_reported_with_its_code() {
        let fail = || async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") };
        let addr = serve(Router::new().route("/metrics", get(fail))).await;
        let err = scrape_one(&scraper(), target("a", addr)).await.unwrap_err();
        assert_eq!(err, ScrapeError::HttpStatus(500));
        assert_eq!(err.reason(), "http_status");

        // A redirect is not followed.
        let moved = || async { (StatusCode::FOUND, [("location", "/elsewhere")]) };
        let addr = serve(Router::new().route("/metrics", get(moved))).await;
        let err = scrape_one(&scraper(), target("a", addr)).await.unwrap_err();
        assert_eq!(err, ScrapeError::HttpStatus(302));
    }

    #[tokio::test]
    async fn a_closed_port_is_reported_as_connect() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = scrape_one(&scraper(), target("gone", closed))
            .await
            .unwrap_err();
        assert!(matches!(err, ScrapeError::Connect(_)), "{err:?}");
        assert_eq!(err.reason(), "connect");
        assert!(err.to_string().contains("refused"), "{err}");
    }

    #[tokio::test]
    async fn a_body_that_is_not_an_exposition_is_a_parse_error() {
        let html = || async { "<html><body>It works!</body></html>\n" };
        let addr = serve(Router::new().route("/metrics", get(html))).await;
        let err = scrape_one(&scraper(), target("a", addr)).await.unwrap_err();
        assert!(matches!(err, ScrapeError::Parse(_)), "{err:?}");
        assert_eq!(err.reason(), "parse");
    }

    #[tokio::test]
    async fn a_body_over_the_cap_is_abandoned_whether_announced_or_streamed() {
        let big = "telemetry_ingest_queue_depth 1\n".repeat(100); // 3100 bytes
        let announced = {
            let big = big.clone();
            move || async move { big }
        };
        let streamed = {
            let big = big.clone();
            move || async move {
                let chunks = big
                    .into_bytes()
                    .chunks(500)
                    .map(|c| Ok::<_, std::convert::Infallible>(c.to_vec()))
                    .collect::<Vec<_>>();
                Body::from_stream(futures::stream::iter(chunks))
            }
        };
        let addr = serve(
            Router::new()
                .route("/metrics", get(announced))
                .route("/streamed/metrics", get(streamed)),
        )
        .await;
        let capped = scraper().with_max_body_bytes(2048);
        let too_large = ScrapeError::BodyTooLarge { limit: 2048 };
        let t = target("a", addr);
        assert_eq!(scrape_one(&capped, t.clone()).await.unwrap_err(), too_large);
        let streamed = Target {
            name: "b".into(),
            url: format!("http://{addr}/streamed/metrics"),
        };
        assert_eq!(scrape_one(&capped, streamed).await.unwrap_err(), too_large);
        assert_eq!(too_large.reason(), "body_too_large");
        // Under the cap, the same body is read.
        let roomy = scraper().with_max_body_bytes(4096);
        assert_eq!(
            scrape_one(&roomy, t).await.unwrap().queue_depth,
            Some(100.0)
        );
    }

    #[tokio::test]
    async fn scrapes_run_concurrently_but_never_more_than_the_parallelism() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let handler = {
            let (in_flight, peak) = (in_flight.clone(), peak.clone());
            move || async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                EXPOSITION
            }
        };
        let addr = serve(Router::new().route("/metrics", get(handler))).await;
        let targets: Vec<Target> = (0..12).map(|i| target(&format!("p{i}"), addr)).collect();
        let start = Instant::now();
        let results = Scraper::new(4)
            .unwrap()
            .scrape_all(targets, Duration::from_secs(5))
            .await;
        let took = start.elapsed();
        assert_eq!(results.len(), 12);
        assert!(results.iter().all(|(_, r)| r.is_ok()));
        let mut names: Vec<_> = results.iter().map(|(t, _)| t.name.clone()).collect();
        names.sort_by_key(|n| n[1..].parse::<u32>().unwrap());
        assert_eq!(names, (0..12).map(|i| format!("p{i}")).collect::<Vec<_>>());
        assert_eq!(peak.load(Ordering::SeqCst), 4);
        // Three waves of 300 ms (0.9 s), not twelve (3.6 s).
        assert!(took < Duration::from_millis(2500), "{took:?}");
    }

    #[tokio::test]
    async fn one_failing_pod_does_not_spoil_the_others() {
        let good = serve(Router::new().route("/metrics", get(|| async { EXPOSITION }))).await;
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let results = scraper()
            .scrape_all(vec![target("good", good), target("bad", closed)], TIMEOUT)
            .await;
        for (t, r) in results {
            match t.name.as_str() {
                "good" => assert_eq!(r.unwrap().queue_depth, Some(1500.0)),
                _ => assert_eq!(r.unwrap_err().reason(), "connect"),
            }
        }
    }

    /// A child process killed (and reaped) when dropped, so a failing
    /// assertion does not leave it running.
    struct Process(Child);

    impl Drop for Process {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// `telemetry-ingest` from the same build as this test binary
    /// (`<target>/<profile>/deps/<test>` → `<target>/<profile>/telemetry-ingest`).
    fn ingest_binary() -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        let bin = exe
            .parent()
            .and_then(|deps| deps.parent())
            .unwrap()
            .join("telemetry-ingest");
        assert!(
            bin.is_file(),
            "{} is missing: build it first with `cargo build -p telemetry-ingest --bins` \
             (`make test` does)",
            bin.display()
        );
        bin
    }

    #[tokio::test]
    async fn the_real_ingest_server_exposes_every_series_the_autoscaler_reads() {
        let bin = ingest_binary();
        let redis_port = free_port();
        let _redis = Process(
            Command::new("redis-server")
                .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (scripts/setup installs it)"),
        );
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let _ingest = Process(
            Command::new(&bin)
                .arg(format!("--grpc-listen=127.0.0.1:{}", free_port()))
                .arg(format!("--http-listen={http}"))
                .arg(format!("--redis-url=redis://127.0.0.1:{redis_port}"))
                .arg("--pipeline=scrape-test")
                .arg("--worker-threads=1")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = client.get(format!("http://{http}/readyz")).send().await;
            if matches!(ready, Ok(r) if r.status().is_success()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "telemetry-ingest not ready in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Three events, each answered once stored, so the counters and the
        // flush histograms have moved.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        for device in ["d1", "d2", "d3"] {
            let r = client
                .post(format!("http://{http}/api/v1/events"))
                .json(&serde_json::json!({"deviceId": device, "timestamp": now_ms}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        }

        let reading = scrape_one(&scraper(), target("ingest-0", http))
            .await
            .unwrap();
        assert_eq!(reading.queue_depth, Some(0.0));
        assert!(
            reading.queue_capacity.is_some_and(|c| c > 0.0),
            "{reading:?}"
        );
        assert_eq!(reading.accepted_total, Some(3.0));
        assert_eq!(reading.flushed_events_sum, Some(3.0));
        assert!(
            reading.flush_seconds_sum.is_some_and(|s| s > 0.0),
            "{reading:?}"
        );
        assert!(
            reading.flush_script_seconds_sum.is_some_and(|s| s > 0.0),
            "{reading:?}"
        );
    }

    #[tokio::test]
    async fn a_pod_serving_tls_is_scraped_over_https_whatever_names_its_certificate() {
        let bin = ingest_binary();
        let dir = tempfile::tempdir().unwrap();
        // A certificate for a name only, as a real one is: the pod IP the
        // scraper dials is not in it.
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ingest.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let _ingest = Process(
            Command::new(&bin)
                .arg(format!("--grpc-listen=127.0.0.1:{}", free_port()))
                .arg(format!("--http-listen={http}"))
                // No Redis: /metrics answers all the same.
                .arg(format!("--redis-url=redis://127.0.0.1:{}", free_port()))
                .arg("--pipeline=scrape-tls-test")
                .arg("--worker-threads=1")
                .arg("--tls-cert-file")
                .arg(&cert_file)
                .arg("--tls-key-file")
                .arg(&key_file)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let scraper = scraper();
        let target = Target::pod("ingest-0", http.ip(), http.port(), true);
        assert_eq!(target.url, format!("https://{http}/metrics"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let reading = loop {
            match scrape_one(&scraper, target.clone()).await {
                Ok(reading) => break reading,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no https scrape in 30 s: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        assert!(
            reading.queue_capacity.is_some_and(|c| c > 0.0),
            "{reading:?}"
        );
        let plain = Target::pod("ingest-0", http.ip(), http.port(), false);
        assert!(
            scrape_one(&scraper, plain).await.is_err(),
            "the TLS port takes no plain http"
        );
    }
}

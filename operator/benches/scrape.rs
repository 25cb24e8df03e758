//! One autoscaler tick's scrape of 100 real ingest pods, timed.
//!
//! Starts a redis-server and 100 `telemetry-ingest` processes on 127.0.0.1
//! (all sharing the one Redis), waits until each answers /readyz, then runs
//! `Scraper::scrape_all` over their /metrics with the default parallelism and
//! the spec's default timeout, 20 times, and prints the wall time per tick.
//! Requirement: under 1 s per tick, so a 15 s sync period has ample room.
//! Everything started here is killed on the way out, failure included.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use telemetry_operator::scrape::{DEFAULT_PARALLELISM, Scraper, Target};

const PODS: usize = 100;
const TICKS: usize = 20;
/// `spec.autoscaling.scrape.timeoutSeconds`' default.
const TIMEOUT: Duration = Duration::from_secs(5);
const REQUIREMENT: Duration = Duration::from_secs(1);

/// A child process killed and reaped when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    println!(
        "reproduce: cargo build --release -p telemetry-ingest --bins && \
         cargo bench -p telemetry-operator --bench scrape"
    );
    let bin = ingest_binary()?;

    // Every port is reserved before any is released, so no two collide.
    let reserved: Vec<TcpListener> = (0..1 + 2 * PODS)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let ports: Vec<u16> = reserved
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?;
    drop(reserved);

    let redis_port = ports[0];
    let mut processes = vec![Process(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("redis-server must be installed (scripts/setup installs it)")?,
    )];
    let mut targets = Vec::with_capacity(PODS);
    for i in 0..PODS {
        let (grpc, http) = (ports[1 + 2 * i], ports[2 + 2 * i]);
        processes.push(Process(
            Command::new(&bin)
                .arg(format!("--grpc-listen=127.0.0.1:{grpc}"))
                .arg(format!("--http-listen=127.0.0.1:{http}"))
                .arg(format!("--redis-url=redis://127.0.0.1:{redis_port}"))
                .arg("--pipeline=scrape-bench")
                .arg("--worker-threads=1")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot start {}", bin.display()))?,
        ));
        targets.push((
            format!("ingest-{i}"),
            SocketAddr::from(([127, 0, 0, 1], http)),
        ));
    }
    let started = Instant::now();
    wait_ready(&targets).await?;
    println!(
        "{PODS} ingest processes ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let targets: Vec<Target> = targets
        .into_iter()
        .map(|(name, addr)| Target::pod(name, addr.ip(), addr.port(), false))
        .collect();
    let scraper = Scraper::new(DEFAULT_PARALLELISM)?;
    let mut ticks = Vec::with_capacity(TICKS);
    let mut failed = 0;
    for _ in 0..TICKS {
        let start = Instant::now();
        let results = scraper.scrape_all(targets.clone(), TIMEOUT).await;
        ticks.push(start.elapsed());
        if results.len() != PODS {
            bail!("{} results for {PODS} targets", results.len());
        }
        failed += results
            .iter()
            .filter(|(_, r)| !matches!(r, Ok(r) if r.queue_depth.is_some()))
            .count();
    }
    let first = ticks[0];
    ticks.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let max = ticks[TICKS - 1];
    let met = max < REQUIREMENT && failed == 0;
    println!(
        "scrape of {PODS} pods, {TICKS} ticks, parallelism {DEFAULT_PARALLELISM}: \
         p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms per tick (first, fresh connections: {:.1} ms); \
         {failed} failed scrapes; requirement < {} ms per tick: {}",
        ms(percentile(&ticks, 0.50)),
        ms(percentile(&ticks, 0.95)),
        ms(max),
        ms(first),
        REQUIREMENT.as_millis(),
        if met { "met" } else { "MISSED" },
    );
    drop(processes);
    Ok(if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `telemetry-ingest` next to this benchmark's build (release), or the debug
/// build when there is no release one.
fn ingest_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("unexpected benchmark path")?;
    let release = profile_dir.join("telemetry-ingest");
    if release.is_file() {
        return Ok(release);
    }
    let debug = profile_dir.with_file_name("debug").join("telemetry-ingest");
    if debug.is_file() {
        println!(
            "note: no release telemetry-ingest; using {}",
            debug.display()
        );
        return Ok(debug);
    }
    bail!(
        "{} is missing: build it first with `cargo build --release -p telemetry-ingest --bins`",
        release.display()
    )
}

/// Waits until every pod answers /readyz with 200.
async fn wait_ready(pods: &[(String, SocketAddr)]) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut waiting: Vec<&(String, SocketAddr)> = pods.iter().collect();
    while !waiting.is_empty() {
        let answers =
            futures::future::join_all(
                waiting.iter().map(|(_, addr)| {
                    let url = format!("http://{addr}/readyz");
                    let client = &client;
                    async move {
                        matches!(client.get(url).send().await, Ok(r) if r.status().is_success())
                    }
                }),
            )
            .await;
        waiting = waiting
            .into_iter()
            .zip(answers)
            .filter_map(|(pod, ready)| (!ready).then_some(pod))
            .collect();
        if Instant::now() > deadline {
            bail!(
                "{} ingest processes not ready within 120 s, e.g. {}",
                waiting.len(),
                waiting[0].0
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

//! Soak: a steady load with every aggregation on, for a minute in `make
//! test` and for ten in `make soak` (scripts/soak, a release build at half
//! the measured maximum). Every 10 s it samples the `telemetry-ingest`
//! process's resident memory and open file descriptors, Redis's memory,
//! and the p99 of the time from accepting an event to storing it (from the
//! server's own histogram, over the last interval). It passes when, after
//! the warm-up (the first fifth of the run), resident memory grows by less
//! than 10 % (the median of the last fifth against that of the fifth after
//! the warm-up) and the file descriptors do not grow, and every event sent
//! is stored exactly once.
//!
//! `TELEMETRY_SOAK_SECONDS` (default 60), `TELEMETRY_SOAK_RATE` (events/s,
//! default 2 000) and `TELEMETRY_SOAK_OUT` (default `target/soak`, where
//! the samples go as CSV and as an SVG plot) tune it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use telemetryctl::cli::{GrpcMode, PayloadKind, SendArgs};
use telemetryctl::send::report::Summary;
use telemetryctl::send::send;

use crate::support::{IngestProcess, Redis, pipeline};

const DEFAULT_SECONDS: u64 = 60;
const DEFAULT_RATE: u64 = 2_000;
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Resident memory may grow by less than this, in percent, after warm-up.
const RSS_GROWTH_PERCENT: f64 = 10.0;

/// One sample.
#[derive(Debug, Clone)]
struct Sample {
    at_s: f64,
    rss_kib: u64,
    fds: u64,
    redis_bytes: u64,
    p99_ms: Option<f64>,
    stored: u64,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

fn redis_used_memory(redis: &Redis) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query(&mut redis.conn())
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// `le → cumulative count` of a histogram on a /metrics page, and its count.
fn buckets(page: &str, name: &str) -> BTreeMap<u64, (f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut out = BTreeMap::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let Some((le, value)) = rest.split_once("\"} ") else {
            continue;
        };
        let le: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::INFINITY)
        };
        let count: f64 = value.trim().parse().unwrap_or(0.0);
        // Keyed by the bound's bits: bounds are positive, so the order holds.
        out.insert(le.to_bits(), (le, count));
    }
    out
}

/// The p99 of the observations between two scrapes of a histogram: the
/// upper bound of the bucket the 99th percentile falls in (so it never
/// understates).
fn interval_p99(
    older: &BTreeMap<u64, (f64, f64)>,
    newer: &BTreeMap<u64, (f64, f64)>,
) -> Option<f64> {
    let deltas: Vec<(f64, f64)> = newer
        .iter()
        .map(|(k, (le, n))| (*le, n - older.get(k).map_or(0.0, |o| o.1)))
        .collect();
    let total = deltas.last()?.1;
    if total <= 0.0 {
        return None;
    }
    deltas
        .iter()
        .find(|(_, n)| *n >= total * 0.99)
        .map(|(le, _)| *le)
}

fn load(grpc: String, n: u64, rate: u64) -> SendArgs {
    SendArgs {
        grpc: Some(grpc),
        http: None,
        n,
        devices: 1_000,
        users: 5_000,
        event_types: "reading,purchase,login".into(),
        rate,
        concurrency: 4,
        batch: 100,
        grpc_mode: GrpcMode::Stream,
        payload: PayloadKind::Json,
        duplicates: 0.01,
        invalid: 0.0,
        retries: 10,
        seed: Some(11),
        ca: None,
        api_key: None,
        json: true,
        no_progress: true,
    }
}

#[tokio::test]
async fn soak_keeps_memory_and_file_descriptors_flat_and_stores_everything() {
    let seconds = env_u64("TELEMETRY_SOAK_SECONDS", DEFAULT_SECONDS);
    let rate = env_u64("TELEMETRY_SOAK_RATE", DEFAULT_RATE);
    let out = std::env::var_os("TELEMETRY_SOAK_OUT").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/soak"),
        PathBuf::from,
    );
    let redis = Redis::start();
    let p = pipeline("soak");
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/all-aggregations.yaml");
    let config = format!("--config={}", config.display());
    let ingest = IngestProcess::start(&redis.url(), &p, &[&config]).await;
    let pid = ingest.child.id();
    let metrics = format!("http://{}/metrics", ingest.http);

    let started = Instant::now();
    let sender = tokio::spawn(send(load(
        format!("http://{}", ingest.grpc),
        seconds * rate,
        rate,
    )));
    let mut samples = Vec::new();
    let mut last_page = String::new();
    let mut next = started + SAMPLE_EVERY;
    while !sender.is_finished() {
        tokio::time::sleep_until(next.into()).await;
        next += SAMPLE_EVERY;
        let page = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        let name = "telemetry_ingest_stored_latency_seconds";
        let p99 = interval_p99(&buckets(&last_page, name), &buckets(&page, name));
        let stored = page
            .lines()
            .find_map(|l| l.strip_prefix("telemetry_ingest_accepted_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        last_page = page;
        let s = Sample {
            at_s: started.elapsed().as_secs_f64(),
            rss_kib: proc_status_kib(pid, "VmRSS:"),
            fds: open_fds(pid),
            redis_bytes: redis_used_memory(&redis),
            p99_ms: p99.map(|v| v * 1000.0),
            stored,
        };
        println!(
            "soak t={:>5.0}s rss={} KiB fds={} redis={} B p99={} stored={}",
            s.at_s,
            s.rss_kib,
            s.fds,
            s.redis_bytes,
            s.p99_ms.map_or("-".into(), |v| format!("{v:.1} ms")),
            s.stored
        );
        samples.push(s);
    }
    let summary: Summary = sender.await.unwrap().unwrap();
    write_outputs(&out, seconds, rate, &samples);

    assert!(
        summary.consistent(),
        "every call acknowledged, each event as new or as a duplicate: {summary:?}"
    );
    assert_eq!(
        redis.events(&p),
        summary.accepted,
        "every distinct event acknowledged is stored once: {summary:?}"
    );
    assert_eq!(
        redis.device_total(&p),
        summary.accepted,
        "per-device counts agree"
    );
    // Samples taken while the load ran: the last may fall after it ended.
    let under_load: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at_s <= seconds as f64 + 1.0)
        .collect();
    assert!(under_load.len() >= 4, "too few samples: {samples:?}");
    // Resident memory moves with the allocator from sample to sample: the
    // level after warm-up is the median of the first fifth that follows it,
    // the level at the end the median of the last fifth.
    let warm = (under_load.len() / 5).max(1);
    let base = under_load[warm];
    let last = under_load.last().unwrap();
    let rss_level = |window: &[&Sample]| {
        let mut v: Vec<u64> = window.iter().map(|s| s.rss_kib).collect();
        v.sort_unstable();
        v[v.len() / 2]
    };
    let rss_start = rss_level(&under_load[warm..(2 * warm).min(under_load.len())]);
    let rss_end = rss_level(&under_load[under_load.len() - warm..]);
    let growth = (rss_end as f64 - rss_start as f64) * 100.0 / rss_start as f64;
    let max_fds = under_load[warm..].iter().map(|s| s.fds).max().unwrap();
    println!(
        "soak {seconds} s at {rate} events/s: {} events acknowledged; RSS {rss_start} → \
         {rss_end} KiB ({growth:+.1} % after warm-up, medians of a fifth of the run); \
         fds {} → {} (max {max_fds}); Redis {} → {} MiB; client p99 {:.1} ms",
        summary.accepted,
        base.fds,
        last.fds,
        base.redis_bytes >> 20,
        last.redis_bytes >> 20,
        summary.latency_ms_p99
    );
    assert!(
        growth < RSS_GROWTH_PERCENT,
        "resident memory grew {growth:.1} % after warm-up: {samples:?}"
    );
    assert!(
        max_fds <= base.fds,
        "open file descriptors grew from {} to {max_fds}: {samples:?}",
        base.fds
    );
}

/// `soak-<seconds>s.csv` and `soak-<seconds>s.svg` in `dir`.
fn write_outputs(dir: &std::path::Path, seconds: u64, rate: u64, samples: &[Sample]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut csv =
        String::from("seconds,rss_kib,open_fds,redis_used_bytes,stored_p99_ms,acknowledged\n");
    for s in samples {
        writeln!(
            csv,
            "{:.0},{},{},{},{},{}",
            s.at_s,
            s.rss_kib,
            s.fds,
            s.redis_bytes,
            s.p99_ms.map_or(String::new(), |v| format!("{v:.1}")),
            s.stored
        )
        .unwrap();
    }
    let base = dir.join(format!("soak-{seconds}s"));
    std::fs::write(base.with_extension("csv"), csv).unwrap();
    std::fs::write(base.with_extension("svg"), svg(seconds, rate, samples)).unwrap();
    println!("soak samples: {}.{{csv,svg}}", base.display());
}

/// Four small line charts over time: RSS, open FDs, Redis memory, p99.
fn svg(seconds: u64, rate: u64, samples: &[Sample]) -> String {
    type Series = (&'static str, fn(&Sample) -> Option<f64>);
    let series: [Series; 4] = [
        ("ingest RSS (MiB)", |s| Some(s.rss_kib as f64 / 1024.0)),
        ("ingest open fds", |s| Some(s.fds as f64)),
        ("Redis used memory (MiB)", |s| {
            Some(s.redis_bytes as f64 / 1_048_576.0)
        }),
        ("accept→stored p99 (ms)", |s| s.p99_ms),
    ];
    let (w, h, pad) = (360.0, 180.0, 40.0);
    let t_max = samples.last().map_or(1.0, |s| s.at_s.max(1.0));
    let mut out = String::new();
    writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="11">"#,
        2.0 * (w + pad),
        2.0 * (h + pad) + 20.0
    )
    .unwrap();
    writeln!(
        out,
        r#"<text x="8" y="14">soak: {seconds} s at {rate} events/s, every aggregation; sampled every {} s</text>"#,
        SAMPLE_EVERY.as_secs()
    )
    .unwrap();
    for (i, (label, get)) in series.iter().enumerate() {
        let ox = (i % 2) as f64 * (w + pad) + pad;
        let oy = (i / 2) as f64 * (h + pad) + 20.0 + pad / 2.0;
        let points: Vec<(f64, f64)> = samples
            .iter()
            .filter_map(|s| Some((s.at_s, get(s)?)))
            .collect();
        let y_max = points.iter().map(|p| p.1).fold(0.0_f64, f64::max).max(1e-9) * 1.1;
        writeln!(
            out,
            r##"<rect x="{ox}" y="{oy}" width="{w}" height="{h}" fill="none" stroke="#999"/><text x="{ox}" y="{}">{label}</text><text x="{}" y="{}" text-anchor="end">{y_max:.1}</text><text x="{}" y="{}" text-anchor="end">{t_max:.0} s</text>"##,
            oy - 4.0,
            ox - 2.0,
            oy + 10.0,
            ox + w,
            oy + h + 12.0
        )
        .unwrap();
        let line: Vec<String> = points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", ox + t / t_max * w, oy + h - v / y_max * h))
            .collect();
        writeln!(
            out,
            r##"<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{}"/>"##,
            line.join(" ")
        )
        .unwrap();
    }
    out.push_str("</svg>\n");
    out
}

#[test]
fn the_interval_p99_is_the_bucket_bound_of_the_99th_percentile_of_the_new_observations() {
    let h = |pairs: &[(f64, f64)]| -> BTreeMap<u64, (f64, f64)> {
        pairs
            .iter()
            .map(|&(le, n)| (le.to_bits(), (le, n)))
            .collect()
    };
    let older = h(&[(0.01, 90.0), (0.1, 100.0), (f64::INFINITY, 100.0)]);
    // 1 000 new observations: 985 ≤ 10 ms, 10 more ≤ 100 ms, 5 above.
    let newer = h(&[(0.01, 1075.0), (0.1, 1095.0), (f64::INFINITY, 1100.0)]);
    assert_eq!(interval_p99(&older, &newer), Some(0.1));
    assert_eq!(interval_p99(&newer, &newer), None, "nothing observed");
    let page = "x_bucket{le=\"0.01\"} 3\nx_bucket{le=\"+Inf\"} 4\nx_count 4\n";
    let parsed = buckets(page, "x");
    assert_eq!(parsed.len(), 2);
    assert_eq!(interval_p99(&BTreeMap::new(), &parsed), Some(f64::INFINITY));
}

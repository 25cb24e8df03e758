//! The monitoring the Helm chart ships, against the real processes: every
//! metric that `charts/telemetry-pipeline/files/alerts.yaml` and
//! `files/dashboard.json` query is exported by a real ingest pod or by the
//! operator, and the ingest pods carry the labels and the port the chart's
//! PodMonitor selects.
//!
//! Labelled series appear only once observed, so the test makes each happen
//! first: events (some invalid, some duplicates), a flush that Redis refuses
//! (`maxmemory` set to one byte for a moment), a scrape that times out (the
//! ingest process stopped for a moment), a pipeline whose aggregation does not
//! compile (a reconcile failure), and autoscaler ticks.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::ListParams;
use serde_json::json;
use telemetry_operator::TelemetryPipeline;
use telemetry_testenv::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{World, pod_ip, repo_root, telemetryctl};

/// The pipeline that is watched: autoscaled (so the autoscaler's gauges
/// exist), ticking every 2 s with a 1 s scrape timeout, and a target so high
/// that it stays at one pod.
fn watched() -> anyhow::Result<TelemetryPipeline> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "telemetrypipeline.io/v1alpha1", "kind": "TelemetryPipeline",
        "metadata": {"name": "watched"},
        "spec": {"autoscaling": {
            "minReplicas": 1, "maxReplicas": 2, "syncPeriodSeconds": 2,
            "targetQueueDepthPerPod": 100000, "scrape": {"timeoutSeconds": 1}
        }}
    }))?)
}

/// A pipeline the operator cannot apply: its glob does not compile, which
/// only the operator can tell (`telemetry_operator_reconcile_failures_total`).
fn broken() -> anyhow::Result<TelemetryPipeline> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "telemetrypipeline.io/v1alpha1", "kind": "TelemetryPipeline",
        "metadata": {"name": "broken"},
        "spec": {"aggregation": {"counters": {"dropDevices": ["bad["]}}}
    }))?)
}

/// The metric names in PromQL text: identifiers that start with
/// `telemetry_` (label names and values never do in our queries).
fn metric_names(promql: &str, into: &mut BTreeSet<String>) {
    let mut ident = String::new();
    for c in promql.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            ident.push(c);
            continue;
        }
        if ident.starts_with("telemetry_") {
            into.insert(std::mem::take(&mut ident));
        }
        ident.clear();
    }
}

/// Every metric the chart's alerts and dashboard query, with where.
fn queried_metrics() -> anyhow::Result<BTreeMap<String, &'static str>> {
    let files = repo_root().join("charts/telemetry-pipeline/files");
    let mut names = BTreeMap::new();

    let alerts: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(files.join("alerts.yaml"))?)?;
    let mut found = BTreeSet::new();
    for group in alerts["groups"].as_sequence().into_iter().flatten() {
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            metric_names(rule["expr"].as_str().unwrap_or_default(), &mut found);
        }
    }
    anyhow::ensure!(!found.is_empty(), "no metric found in alerts.yaml");
    names.extend(found.into_iter().map(|n| (n, "alerts.yaml")));

    // Panel queries (`expr`) and the template variables' queries.
    fn walk(v: &serde_json::Value, into: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v.as_str()) {
                        ("expr" | "query" | "definition", Some(q)) => metric_names(q, into),
                        _ => walk(v, into),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, into)),
            _ => {}
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(files.join("dashboard.json"))?)?;
    let mut found = BTreeSet::new();
    walk(&dashboard, &mut found);
    anyhow::ensure!(!found.is_empty(), "no metric found in dashboard.json");
    for n in found {
        names.entry(n).or_insert("dashboard.json");
    }
    Ok(names)
}

/// What one `/metrics` page exports: sample names, and metric families with
/// their type (from `# TYPE`).
#[derive(Default)]
struct Exported {
    samples: BTreeSet<String>,
    families: BTreeMap<String, String>,
}

impl Exported {
    fn parse(text: &str, into: &mut Self) {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some((name, kind)) = rest.split_once(' ') {
                    into.families.insert(name.to_string(), kind.to_string());
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                into.samples.insert(name.to_string());
            }
        }
    }

    /// Whether the metric `name` a query uses is exported: as a sample, a
    /// family, or a histogram's (summary's) `_bucket`, `_sum` or `_count`.
    fn has(&self, name: &str) -> bool {
        if self.samples.contains(name) || self.families.contains_key(name) {
            return true;
        }
        ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix).is_some_and(|family| {
                matches!(
                    self.families.get(family).map(String::as_str),
                    Some("histogram" | "summary")
                )
            })
        })
    }
}

async fn scrape(url: &str) -> anyhow::Result<String> {
    let resp = reqwest::get(url).await?.error_for_status()?;
    Ok(resp.text().await?)
}

/// Sends `command` to Redis at `addr` after `AUTH password`; fails unless
/// both replies are `+OK`.
async fn redis(addr: &str, password: &str, command: &[&str]) -> anyhow::Result<()> {
    let encode = |args: &[&str]| {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        out
    };
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = encode(&["AUTH", password]) + &encode(command);
    stream.write_all(request.as_bytes()).await?;
    let mut replies = String::new();
    let mut buf = [0u8; 256];
    while replies.matches("\r\n").count() < 2 {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "Redis closed the connection: {replies:?}");
        replies.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    anyhow::ensure!(
        replies == "+OK\r\n+OK\r\n",
        "Redis {command:?}: {replies:?}"
    );
    Ok(())
}

fn signal(signal: &str, pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill {signal} {pid}: {status}");
    Ok(())
}

/// A process stopped with SIGSTOP, continued (SIGCONT) when dropped, however
/// the test ends.
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> anyhow::Result<Self> {
        signal("-STOP", pid)?;
        Ok(Self(pid))
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Err(e) = signal("-CONT", self.0) {
            eprintln!("could not continue process {}: {e}", self.0);
        }
    }
}

#[tokio::test]
async fn every_metric_the_charts_alerts_and_dashboard_query_is_exported_by_ingest_or_operator()
-> anyhow::Result<()> {
    let queried = queried_metrics()?;
    let world = World::new("tpl-monitoring").await?;
    let pipelines = world.api::<TelemetryPipeline>();
    pipelines.create(&Default::default(), &watched()?).await?;
    pipelines.create(&Default::default(), &broken()?).await?;
    world.wait_ready("watched").await?;
    let pod = world.ingest_pods("watched", 1).await?.remove(0);
    let ip = pod_ip(&pod);
    let operator = world.operator.as_ref().expect("World::new starts one");

    // The PodMonitor's contract: these labels select the pod, the pipeline
    // label comes from the instance, and port "http" serves /metrics.
    let podmonitor = std::fs::read_to_string(
        repo_root().join("charts/telemetry-pipeline/templates/podmonitor.yaml"),
    )?;
    let labels = pod.labels();
    for (key, value) in [
        ("app.kubernetes.io/name", "telemetry-ingest"),
        ("app.kubernetes.io/managed-by", "telemetry-operator"),
    ] {
        assert_eq!(labels.get(key).map(String::as_str), Some(value), "{key}");
        assert!(
            podmonitor.contains(&format!("{key}: {value}")),
            "the PodMonitor does not select {key}: {value}"
        );
    }
    assert_eq!(
        labels.get("app.kubernetes.io/instance").map(String::as_str),
        Some("watched"),
        "the PodMonitor's pipeline label comes from app.kubernetes.io/instance"
    );
    assert!(
        podmonitor.contains("- port: http"),
        "the PodMonitor scrapes port http"
    );
    let http_port = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers[0].ports.as_ref())
        .and_then(|ports| ports.iter().find(|p| p.name.as_deref() == Some("http")))
        .map(|p| p.container_port);
    assert_eq!(
        http_port,
        Some(8000),
        "the ingest container's port named http"
    );

    // Events, some invalid and some repeated: received, accepted, rejected
    // (by reason), duplicates, flushes.
    telemetryctl(&[
        "send",
        "--grpc",
        &format!("http://{ip}:50051"),
        "--n",
        "2000",
        "--devices",
        "10",
        "--invalid",
        "0.05",
        "--duplicates",
        "0.05",
        "--no-progress",
    ])
    .await?;

    // A flush that Redis refuses: telemetry_ingest_redis_errors_total and
    // telemetry_ingest_flush_failures_total. One byte of maxmemory makes
    // every write fail with OOM, for as long as it takes to send a few events.
    let redis_pod = world
        .api::<Pod>()
        .list(
            &ListParams::default()
                .labels("app.kubernetes.io/name=redis,app.kubernetes.io/instance=watched"),
        )
        .await?
        .items
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no Redis pod"))?;
    let redis_addr = format!("{}:6379", pod_ip(&redis_pod));
    let secret = world.api::<Secret>().get("watched-redis").await?;
    let password = secret
        .data
        .as_ref()
        .and_then(|d| d.get("password"))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .ok_or_else(|| anyhow::anyhow!("no password in Secret watched-redis"))?;
    redis(&redis_addr, &password, &["CONFIG", "SET", "maxmemory", "1"]).await?;
    let refused = telemetryctl(&[
        "send",
        "--http",
        &format!("http://{ip}:8000"),
        "--n",
        "10",
        "--retries",
        "0",
        "--no-progress",
    ])
    .await;
    redis(&redis_addr, &password, &["CONFIG", "SET", "maxmemory", "0"]).await?;
    assert!(
        refused.is_err(),
        "events were stored while Redis was out of memory: {refused:?}"
    );

    // A scrape that times out: telemetry_operator_autoscaler_scrape_errors_total.
    let pid = world
        .cluster
        .container_pid(&pod, "ingest")
        .ok_or_else(|| anyhow::anyhow!("no ingest process for {}", pod.name_any()))?;
    {
        let _stopped = Stopped::stop(pid)?;
        wait_for("a failed scrape", Duration::from_secs(30), || async {
            let errors = operator
                .sum("telemetry_operator_autoscaler_scrape_errors_total")
                .await
                .ok()?;
            (errors > 0.0).then_some(())
        })
        .await?;
    }
    world.wait_ready("watched").await?;

    // Every queried metric shows on one of the two pages. Some appear only
    // after the next ticks (e.g. Redis busy needs two scrapes of a pod).
    let deadline = Instant::now() + Duration::from_secs(60);
    let missing = loop {
        let mut exported = Exported::default();
        Exported::parse(
            &scrape(&format!("http://{ip}:8000/metrics")).await?,
            &mut exported,
        );
        Exported::parse(
            &scrape(&format!("{}/metrics", operator.http)).await?,
            &mut exported,
        );
        let missing: Vec<String> = queried
            .iter()
            .filter(|(name, _)| !exported.has(name))
            .map(|(name, file)| format!("{name} ({file})"))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert!(
        missing.is_empty(),
        "metrics queried by the chart's alerts or dashboard that neither the ingest pod nor the operator exports:\n  {}",
        missing.join("\n  ")
    );
    println!(
        "{} metrics queried by alerts.yaml and dashboard.json, all exported",
        queried.len()
    );

    world.operator.unwrap().stop().await?;
    world.ns.cleanup().await
}

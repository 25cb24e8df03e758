//! Manifests and small checks shared by the end-to-end tests.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use telemetry_testenv::cluster::repo_root;

/// Generous: CI machines are shared and slow at times.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// The pinned versions in tools/testenv/versions.env.
pub fn pinned_versions() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repo_root().join("tools/testenv/versions.env"))
        .expect("tools/testenv/versions.env");
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Creates or updates objects (server-side apply), in order.
pub async fn apply(client: &kube::Client, ns: &str, objects: &[Value]) -> anyhow::Result<()> {
    let params = PatchParams::apply("telemetry-testenv-e2e").force();
    for object in objects {
        let kind = object["kind"].as_str().context("kind")?;
        let name = object["metadata"]["name"].as_str().context("name")?;
        let (group, version) = match object["apiVersion"]
            .as_str()
            .context("apiVersion")?
            .split_once('/')
        {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (
                String::new(),
                object["apiVersion"].as_str().unwrap_or_default().to_owned(),
            ),
        };
        let gvk = kube::api::GroupVersionKind::gvk(&group, &version, kind);
        let (resource, _) = kube::discovery::pinned_kind(client, &gvk).await?;
        let api: Api<kube::api::DynamicObject> =
            Api::namespaced_with(client.clone(), ns, &resource);
        api.patch(name, &params, &Patch::Apply(object))
            .await
            .with_context(|| format!("applying {kind} {name}"))?;
    }
    Ok(())
}

/// A Redis Deployment and its Service `redis` (port 6379 → the named
/// container port, so the target-port mapping is exercised too).
pub fn redis(ns: &str) -> Vec<Value> {
    vec![
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "redis", "namespace": ns},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "redis"}},
                "template": {
                    "metadata": {"labels": {"app": "redis"}},
                    "spec": {"containers": [{
                        "name": "redis", "image": "docker.io/library/redis:7.2",
                        "args": ["--save", "", "--appendonly", "no"],
                        "ports": [{"name": "redis", "containerPort": 6379}],
                        "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 1},
                    }]},
                },
            },
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "redis", "namespace": ns},
            "spec": {"selector": {"app": "redis"}, "ports": [{"port": 6379, "targetPort": "redis"}]},
        }),
    ]
}

/// An ingest Deployment whose Redis URL names the Service (via `$(VAR)`
/// expansion of its args, as the operator's manifests may do).
pub fn ingest(ns: &str, replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "ingest", "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "ingest"}},
            "template": {
                "metadata": {"labels": {"app": "ingest"}},
                "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "containers": [{
                        "name": "ingest", "image": "ghcr.io/telemetrypipeline/telemetry-ingest:dev",
                        "env": [{"name": "REDIS_HOST", "value": "redis"}],
                        "args": ["--redis-url", "redis://$(REDIS_HOST):6379/0", "--pipeline", "e2e"],
                        "ports": [
                            {"name": "grpc", "containerPort": 50051},
                            {"name": "http", "containerPort": 8000},
                        ],
                        // Requests make the pod Burstable: the stand-in must
                        // leave the apiserver's qosClass alone.
                        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5},
                    }],
                },
            },
        },
    })
}

/// A bare pod running redis-server with `args`.
pub fn redis_pod(ns: &str, name: &str, restart_policy: &str, args: &[&str]) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "restartPolicy": restart_policy,
            "containers": [{"name": "redis", "image": "redis", "args": args}],
        },
    })
}

/// GET `url`, returning the status code.
pub async fn http_status(url: &str) -> anyhow::Result<u16> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    Ok(client.get(url).send().await?.status().as_u16())
}

/// The command line of a process.
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// The pods' names.
pub fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

/// The binary the ingest pods run must exist (built by `cargo build --bins`).
pub fn require_ingest_binary() -> anyhow::Result<()> {
    let dir = std::env::var_os("TELEMETRY_BIN_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug"));
    let bin = dir.join("telemetry-ingest");
    anyhow::ensure!(
        Path::new(&bin).is_file(),
        "{} is missing: run `cargo build --bins` first",
        bin.display()
    );
    Ok(())
}

//! API keys on the control plane: a pipeline with `spec.ingest.auth`
//! mounts the Secret, refuses calls without a key, and follows a change of
//! the Secret without restarting its pods.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use telemetry_operator::TelemetryPipeline;
use telemetry_testenv::wait_for;

use crate::support::{World, pod_ip, telemetryctl};

/// A key from `telemetryctl key new`: (key, its keys.yaml entry).
pub async fn new_key(name: &str, scopes: &[&str]) -> anyhow::Result<(String, String)> {
    let mut args = vec!["key", "new", "--name", name];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    let out = telemetryctl(&args).await?;
    let key = out
        .lines()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no key in {out}"))?
        .to_string();
    let entry: String = out
        .lines()
        .skip(2)
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    Ok((key, entry))
}

/// The Secret `name` holding `keys.yaml`, created or replaced.
pub fn key_secret(name: &str, keys_yaml: &str) -> anyhow::Result<Secret> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"keys.yaml": keys_yaml}
    }))?)
}

async fn send(grpc: &str, key: Option<&str>) -> anyhow::Result<String> {
    let mut args = vec![
        "send",
        "--grpc",
        grpc,
        "--n",
        "200",
        "--devices",
        "4",
        "--retries",
        "0",
        "--no-progress",
    ];
    if let Some(key) = key {
        args.extend(["--api-key", key]);
    }
    telemetryctl(&args).await
}

#[tokio::test]
async fn api_keys_are_asked_for_and_a_changed_secret_is_followed_without_a_restart()
-> anyhow::Result<()> {
    let world = World::new("tpl-auth").await?;
    let secrets = world.api::<Secret>();
    let (first, first_entry) = new_key("first", &["write", "read"]).await?;
    secrets
        .create(&Default::default(), &key_secret("api-keys", &first_entry)?)
        .await?;
    world
        .apply_spec(
            "secured",
            json!({"ingest": {"auth": {"secretRef": {"name": "api-keys"}}}}),
        )
        .await?;
    let pod = world.ingest_pods("secured", 1).await?.remove(0);
    let ip = pod_ip(&pod);
    let grpc = format!("http://{ip}:50051");
    let http = format!("http://{ip}:8000");

    // Without a key: refused; with it: stored and queryable.
    send(&grpc, None).await.expect_err("no key, no events");
    send(&grpc, Some(&first)).await?;
    let unauthorized = reqwest::get(format!("{http}/api/v1/stats")).await?;
    assert_eq!(unauthorized.status(), 401);
    let stats = telemetryctl(&["stats", "--http", &http, "--api-key", &first, "--json"]).await?;
    let stats: serde_json::Value = serde_json::from_str(&stats)?;
    assert_eq!(stats["eventsTotal"], 200, "{stats}");
    // Probes and metrics stay open: the kubelet and the autoscaler need them.
    assert_eq!(reqwest::get(format!("{http}/readyz")).await?.status(), 200);
    let metrics = reqwest::get(format!("{http}/metrics"))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains(r#"telemetry_ingest_events_by_key_total{key="first"} 200"#),
        "{metrics}"
    );
    assert!(!metrics.contains(&first), "the key is never shown");
    assert!(
        metrics
            .contains(r#"telemetry_ingest_auth_requests_total{key="",result="unauthenticated"}"#),
        "{metrics}"
    );

    // Rotate: the Secret now holds a second key only.
    let (second, second_entry) = new_key("second", &["write"]).await?;
    secrets
        .patch(
            "api-keys",
            &PatchParams::default(),
            &Patch::Merge(&json!({"stringData": {"keys.yaml": second_entry}})),
        )
        .await?;
    wait_for(
        "the running pod to take the new key",
        Duration::from_secs(120),
        || {
            let grpc = grpc.clone();
            let second = second.clone();
            async move { send(&grpc, Some(&second)).await.ok() }
        },
    )
    .await?;
    send(&grpc, Some(&first))
        .await
        .expect_err("the removed key is refused");

    // Same pod, never restarted, and the template did not roll.
    let pods = world.ingest_pods("secured", 1).await?;
    assert_eq!(
        pods[0].uid(),
        pod.uid(),
        "a key change must not roll the Deployment"
    );
    let restarts = pods[0]
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .restart_count;
    assert_eq!(restarts, 0);

    world.operator.unwrap().stop().await?;
    world.ns.cleanup().await
}

#[tokio::test]
async fn a_missing_api_key_secret_is_named_in_the_status() -> anyhow::Result<()> {
    let world = World::new("tpl-auth-missing").await?;
    let tp: TelemetryPipeline = serde_json::from_value(json!({
        "apiVersion": "telemetrypipeline.io/v1alpha1", "kind": "TelemetryPipeline",
        "metadata": {"name": "nokeys"},
        "spec": {"ingest": {"auth": {"secretRef": {"name": "absent-keys"}}}}
    }))?;
    world
        .api::<TelemetryPipeline>()
        .create(&Default::default(), &tp)
        .await?;
    let tp = world.wait_condition("nokeys", "Degraded", "True").await?;
    let degraded = tp.condition("Degraded").unwrap();
    assert_eq!(degraded.reason, "ApiKeysSecretMissing", "{degraded:?}");
    for part in [
        "\"absent-keys\"",
        "\"keys.yaml\"",
        "spec.ingest.auth.secretRef",
    ] {
        assert!(
            degraded.message.contains(part),
            "{part}: {}",
            degraded.message
        );
    }
    world.operator.unwrap().stop().await?;
    world.ns.cleanup().await
}

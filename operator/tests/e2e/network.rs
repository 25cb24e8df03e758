//! NetworkPolicies on the real apiserver: it accepts what the operator
//! builds, the selectors match the pipeline's real pods, and the spec
//! restricts or removes them. (Nothing enforces them on the test control
//! plane; their effect is the network plugin's.)

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use telemetry_operator::TelemetryPipeline;
use telemetry_testenv::wait_for;

use crate::support::World;

/// Whether `labels` satisfy a `matchLabels` selector.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[tokio::test]
async fn network_policies_let_only_ingest_reach_redis_and_follow_the_spec() -> anyhow::Result<()> {
    let world = World::new("netpol").await?;
    let name = "guarded";
    world
        .apply_spec(
            name,
            json!({"networkPolicy": {"ingestFrom": [
                {"namespaceSelector": {"matchLabels": {"team": "devices"}}}
            ]}}),
        )
        .await?;

    let policies = world.api::<NetworkPolicy>();
    let redis = policies.get(&format!("{name}-redis")).await?;
    let ingest = policies.get(&format!("{name}-ingest")).await?;
    let pods = world.api::<Pod>().list(&ListParams::default()).await?.items;
    let labels_of = |component: &str| -> Vec<BTreeMap<String, String>> {
        pods.iter()
            .filter_map(|p| p.metadata.labels.clone())
            .filter(|l| l.get("app.kubernetes.io/component").map(String::as_str) == Some(component))
            .collect()
    };
    let (ingest_pods, redis_pods) = (labels_of("ingest"), labels_of("redis"));
    assert!(!ingest_pods.is_empty() && !redis_pods.is_empty());

    // Redis: the policy covers the Redis pod, and only the ingest pods are
    // let in, on 6379.
    let spec = redis.spec.clone().unwrap_or_default();
    let covered = spec
        .pod_selector
        .and_then(|s| s.match_labels)
        .unwrap_or_default();
    assert!(redis_pods.iter().all(|l| selects(&covered, l)));
    assert!(ingest_pods.iter().all(|l| !selects(&covered, l)));
    let rules = spec.ingress.unwrap_or_default();
    assert_eq!(rules.len(), 1, "{rules:?}");
    let from = rules[0].from.clone().unwrap_or_default();
    let allowed = from[0]
        .pod_selector
        .clone()
        .and_then(|s| s.match_labels)
        .unwrap_or_default();
    assert!(ingest_pods.iter().all(|l| selects(&allowed, l)));
    assert!(redis_pods.iter().all(|l| !selects(&allowed, l)));
    assert!(from[0].namespace_selector.is_none(), "same namespace only");
    let ports = rules[0].ports.clone().unwrap_or_default();
    assert_eq!(ports.len(), 1);
    assert_eq!(
        serde_json::to_value(&ports[0].port)?,
        json!(6379),
        "{ports:?}"
    );

    // Ingest: the peers of the spec, on the gRPC and HTTP ports.
    let spec = ingest.spec.clone().unwrap_or_default();
    let covered = spec
        .pod_selector
        .and_then(|s| s.match_labels)
        .unwrap_or_default();
    assert!(ingest_pods.iter().all(|l| selects(&covered, l)));
    let rules = spec.ingress.unwrap_or_default();
    assert_eq!(
        serde_json::to_value(&rules[0].from)?,
        json!([{"namespaceSelector": {"matchLabels": {"team": "devices"}}}])
    );
    assert_eq!(
        serde_json::to_value(&rules[0].ports)?,
        json!([{"port": 50051, "protocol": "TCP"}, {"port": 8000, "protocol": "TCP"}])
    );

    // Turned off, both go.
    world
        .api::<TelemetryPipeline>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"networkPolicy": {"enabled": false}}})),
        )
        .await?;
    wait_for(
        "the NetworkPolicies deleted",
        Duration::from_secs(60),
        || {
            let policies = policies.clone();
            async move {
                let left = policies.list(&ListParams::default()).await.ok()?;
                left.items.is_empty().then_some(())
            }
        },
    )
    .await?;

    world.operator.unwrap().stop().await?;
    world.ns.cleanup().await
}

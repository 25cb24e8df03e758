//! Redis password rotation on the real control plane: a new password in the
//! Secret rolls Redis, then the ingest pods, and nothing stored is lost.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use telemetry_operator::resources::rotation::PASSWORD_VERSION_ANNOTATION;
use telemetry_testenv::wait_for;

use crate::support::{World, device_counts, pod_ip, telemetryctl};

async fn send(pod: &Pod, n: &str) -> anyhow::Result<()> {
    telemetryctl(&[
        "send",
        "--grpc",
        &format!("http://{}:50051", pod_ip(pod)),
        "--n",
        n,
        "--devices",
        "10",
        "--no-progress",
    ])
    .await?;
    Ok(())
}

/// When the pod's Ready condition last turned true.
fn ready_since(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

#[tokio::test]
async fn a_new_redis_password_rolls_redis_then_ingest_and_loses_nothing() -> anyhow::Result<()> {
    let world = World::new("rotate").await?;
    let name = "rotated";
    world
        .apply_spec(name, json!({"ingest": {"replicas": 2}}))
        .await?;
    let before = world.ingest_pods(name, 2).await?;
    send(&before[0], "2000").await?;
    let pods = world.api::<Pod>();
    let redis_before = pods.get(&format!("{name}-redis-0")).await?;
    let deployments = world.api::<Deployment>();
    let stamped = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(PASSWORD_VERSION_ANNOTATION).cloned())
    };
    let old_version = stamped(&deployments.get(&format!("{name}-ingest")).await?);
    assert!(
        old_version.is_some(),
        "no password version on the ingest pods"
    );

    // A new password, as a user would set it.
    let secrets = world.api::<Secret>();
    secrets
        .patch(
            &format!("{name}-redis"),
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": "a-new-password-of-32-characters!"}})),
        )
        .await?;

    // Redis restarts first...
    let redis_after = wait_for("a new Redis pod, ready", Duration::from_secs(120), || {
        let pods = pods.clone();
        let old = redis_before.uid();
        async move {
            let pod = pods.get(&format!("{name}-redis-0")).await.ok()?;
            (pod.uid() != old && ready_since(&pod).is_some()).then_some(pod)
        }
    })
    .await?;
    // ... then every ingest pod is replaced, each created once Redis was
    // ready with the new password.
    let old_names: Vec<String> = before.iter().map(|p| p.name_any()).collect();
    let after = wait_for(
        "two new ingest pods, ready",
        Duration::from_secs(180),
        || {
            let world = &world;
            let old_names = old_names.clone();
            async move {
                let pods = world.ingest_pods(name, 2).await.ok()?;
                pods.iter()
                    .all(|p| !old_names.contains(&p.name_any()))
                    .then_some(pods)
            }
        },
    )
    .await?;
    let redis_ready = ready_since(&redis_after).expect("Redis is ready");
    for pod in &after {
        let created = pod.creation_timestamp().expect("created").0;
        assert!(
            created >= redis_ready,
            "ingest pod {} created at {created}, before Redis was ready at {redis_ready}",
            pod.name_any()
        );
    }
    let new_version = stamped(&deployments.get(&format!("{name}-ingest")).await?);
    assert_ne!(new_version, old_version);
    world.wait_ready(name).await?;

    // The new pods store with the new password, and what was stored before
    // the rotation is all there.
    send(&after[0], "1000").await?;
    let counts: BTreeMap<String, u64> =
        device_counts(&format!("http://{}:8000", pod_ip(&after[1]))).await?;
    assert_eq!(counts.values().sum::<u64>(), 3000, "{counts:?}");

    world.operator.unwrap().stop().await?;
    world.ns.cleanup().await
}

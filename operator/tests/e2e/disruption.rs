//! PodDisruptionBudgets on the real control plane: the disruption controller
//! counts the pipeline's pods under them, the Eviction API honours them, and
//! the spec changes or removes them.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{EvictParams, Patch, PatchParams};
use serde_json::json;
use telemetry_operator::TelemetryPipeline;
use telemetry_testenv::wait_for;

use crate::support::World;

/// Waits until the disruption controller reports `expected` pods under the
/// budget `name`, all healthy, and `allowed` disruptions.
async fn counted(
    world: &World,
    name: &str,
    expected: i32,
    allowed: i32,
) -> anyhow::Result<PodDisruptionBudget> {
    let api = world.api::<PodDisruptionBudget>();
    wait_for(
        &format!("budget {name} to count {expected} healthy pods, {allowed} disruptions allowed"),
        Duration::from_secs(90),
        || {
            let api = api.clone();
            async move {
                let pdb = api.get(name).await.ok()?;
                let s = pdb.status.clone()?;
                (s.expected_pods == expected
                    && s.current_healthy == expected
                    && s.disruptions_allowed == allowed)
                    .then_some(pdb)
            }
        },
    )
    .await
}

#[tokio::test]
async fn disruption_budgets_cover_ingest_and_redis_and_evictions_honour_them() -> anyhow::Result<()>
{
    let world = World::new("pdb").await?;
    let name = "budget";
    world
        .apply_spec(
            name,
            json!({"ingest": {"replicas": 2, "podDisruptionBudget": {"maxUnavailable": 0}}}),
        )
        .await?;
    let pipelines = world.api::<TelemetryPipeline>();

    // Both budgets exist, owned by the pipeline, and select exactly its
    // pods: the disruption controller counts 2 ingest pods and 1 Redis pod.
    let ingest = counted(&world, &format!("{name}-ingest"), 2, 0).await?;
    let redis = counted(&world, &format!("{name}-redis"), 1, 1).await?;
    assert_eq!(
        ingest.spec.clone().unwrap_or_default().max_unavailable,
        Some(IntOrString::Int(0))
    );
    assert_eq!(
        redis.spec.clone().unwrap_or_default().max_unavailable,
        Some(IntOrString::Int(1))
    );
    for pdb in [&ingest, &redis] {
        let owner = &pdb.metadata.owner_references.clone().unwrap_or_default()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("TelemetryPipeline", name)
        );
    }

    // A drain's eviction of a serving pod is refused while the budget
    // allows none...
    let pods = world.ingest_pods(name, 2).await?;
    // A client that reports a 429 instead of retrying it (kube's default).
    let mut config = world.cluster.config();
    config.default_retry = false;
    let pod_api = Api::<Pod>::namespaced(kube::Client::try_from(config)?, world.ns());
    let first = pods[0].metadata.name.clone().unwrap_or_default();
    match pod_api.evict(&first, &EvictParams::default()).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 429, "{e:?}");
            assert!(e.message.contains("disruption budget"), "{e:?}");
        }
        other => panic!("an eviction the budget forbids went through: {other:?}"),
    }

    // ... and goes through once the spec allows one.
    let set = |pdb: serde_json::Value| {
        let pipelines = pipelines.clone();
        async move {
            pipelines
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"ingest": {"podDisruptionBudget": pdb}}})),
                )
                .await
        }
    };
    set(json!({"maxUnavailable": 1})).await?;
    counted(&world, &format!("{name}-ingest"), 2, 1).await?;
    pod_api.evict(&first, &EvictParams::default()).await?;

    // A percentage is passed on as it is.
    set(json!({"maxUnavailable": "50%"})).await?;
    let budgets = world.api::<PodDisruptionBudget>();
    wait_for("maxUnavailable 50%", Duration::from_secs(60), || {
        let budgets = budgets.clone();
        async move {
            let pdb = budgets.get(&format!("{name}-ingest")).await.ok()?;
            (pdb.spec?.max_unavailable? == IntOrString::String("50%".into())).then_some(())
        }
    })
    .await?;
    // Turned off, the ingest budget goes; the Redis budget stays.
    set(json!({"enabled": false})).await?;
    wait_for("the ingest budget deleted", Duration::from_secs(60), || {
        let budgets = budgets.clone();
        async move {
            matches!(budgets.get_opt(&format!("{name}-ingest")).await, Ok(None)).then_some(())
        }
    })
    .await?;
    assert!(budgets.get_opt(&format!("{name}-redis")).await?.is_some());

    world.operator.unwrap().stop().await?;
    world.ns.cleanup().await
}

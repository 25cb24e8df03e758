//! End to end on the test control plane (real etcd, kube-apiserver and
//! kube-controller-manager; the kubelet stand-in runs Redis and the ingest
//! service as real processes on 127.0.0.N).
//!
//! Each test gets its own namespace and its own in-process operator scoped to
//! it, so tests run in parallel without seeing each other. Needs the testenv
//! binaries (`scripts/testenv build`) and the workspace binaries
//! (`cargo build -p telemetry-ingest -p telemetryctl`); see docs/operator.md.

mod auth;
mod autoscaling;
mod crash;
mod disruption;
mod leader;
mod monitoring;
mod network;
mod rotation;
mod sharding;
mod support;
mod tls;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use support::{World, device_counts, pod_ip, telemetryctl};
use telemetry_operator::TelemetryPipeline;
use telemetry_testenv::wait_for;

#[tokio::test]
async fn crd_is_served_and_kubectl_explain_is_the_manual() -> anyhow::Result<()> {
    let world = World::new("tpl-explain").await?;
    let spec = world
        .kubectl_ok(&["explain", "telemetrypipeline.spec"])
        .await?;
    for field in ["ingest", "autoscaling", "redis", "aggregation", "paused"] {
        assert!(spec.contains(field), "explain spec lacks {field}:\n{spec}");
    }
    let fsync = world
        .kubectl_ok(&[
            "explain",
            "telemetrypipeline.spec.redis.managed.appendfsync",
        ])
        .await?;
    assert!(fsync.contains("AOF fsync policy"), "{fsync}");
    let windows = world
        .kubectl_ok(&["explain", "tpl.spec.aggregation.windows.retentionSeconds"])
        .await?;
    assert!(
        windows.contains("How long each bucket is kept"),
        "{windows}"
    );
    world.operator.unwrap().stop().await?;
    world.ns.cleanup().await
}

#[tokio::test]
async fn invalid_pipelines_are_rejected_by_the_apiserver_with_the_cel_message() -> anyhow::Result<()>
{
    let world = World::new("tpl-invalid").await?;
    let bad = r#"
apiVersion: telemetrypipeline.io/v1alpha1
kind: TelemetryPipeline
metadata: {name: bad}
spec:
  autoscaling: {minReplicas: 5, maxReplicas: 2, targetQueueDepthPerPod: 100}
"#;
    let path = std::env::temp_dir().join(format!("{}-bad.yaml", world.ns()));
    std::fs::write(&path, bad)?;
    let out = world
        .kubectl(&["apply", "-f", path.to_str().unwrap()])
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "min > max must be rejected");
    assert!(
        stderr.contains(
            "autoscaling.maxReplicas must be greater than or equal to autoscaling.minReplicas"
        ),
        "{stderr}"
    );

    // Immutable storage class: accepted at creation, rejected when changed.
    let api = world.api::<TelemetryPipeline>();
    let tp: TelemetryPipeline = serde_json::from_value(json!({
        "apiVersion": "telemetrypipeline.io/v1alpha1", "kind": "TelemetryPipeline",
        "metadata": {"name": "storage"},
        "spec": {"paused": true, "redis": {"managed": {"storage": {"size": "1Gi", "storageClassName": "slow"}}}}
    }))?;
    api.create(&Default::default(), &tp).await?;
    let patch = json!({"spec": {"redis": {"managed": {"storage": {"storageClassName": "fast"}}}}});
    let err = api
        .patch("storage", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect_err("changing the storage class must be rejected");
    assert!(
        err.to_string().contains("storageClassName is immutable"),
        "{err}"
    );
    std::fs::remove_file(path).ok();
    world.operator.unwrap().stop().await?;
    world.ns.cleanup().await
}

#[tokio::test]
async fn example_pipeline_becomes_ready_with_owned_children_and_stores_events() -> anyhow::Result<()>
{
    let world = World::new("tpl-ready").await?;
    let tp = world
        .apply_and_wait_ready("pipeline-minimal.yaml", "minimal")
        .await?;
    let uid = tp.uid().unwrap();

    // Every child exists, is controlled by the pipeline and carries the labels.
    let owned = |meta: &kube::api::ObjectMeta, what: &str| {
        let owner = meta
            .owner_references
            .as_ref()
            .and_then(|o| o.first())
            .unwrap_or_else(|| panic!("{what} has no ownerReference"));
        assert_eq!(owner.uid, uid, "{what}");
        assert_eq!(owner.controller, Some(true), "{what}");
        let labels = meta.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("app.kubernetes.io/instance").map(String::as_str),
            Some("minimal"),
            "{what}"
        );
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("telemetry-operator"),
            "{what}"
        );
    };
    owned(
        &world.api::<Secret>().get("minimal-redis").await?.metadata,
        "Secret",
    );
    owned(
        &world
            .api::<ConfigMap>()
            .get("minimal-redis")
            .await?
            .metadata,
        "redis ConfigMap",
    );
    owned(
        &world
            .api::<ConfigMap>()
            .get("minimal-ingest")
            .await?
            .metadata,
        "ingest ConfigMap",
    );
    owned(
        &world.api::<Service>().get("minimal-redis").await?.metadata,
        "redis Service",
    );
    owned(
        &world
            .api::<Service>()
            .get("minimal-redis-headless")
            .await?
            .metadata,
        "headless Service",
    );
    owned(
        &world.api::<Service>().get("minimal-ingest").await?.metadata,
        "ingest Service",
    );
    owned(
        &world
            .api::<StatefulSet>()
            .get("minimal-redis")
            .await?
            .metadata,
        "StatefulSet",
    );
    owned(
        &world
            .api::<Deployment>()
            .get("minimal-ingest")
            .await?
            .metadata,
        "Deployment",
    );

    // The status tells the truth.
    let status = tp.status.clone().unwrap();
    assert_eq!(status.observed_generation, tp.metadata.generation);
    assert_eq!((status.replicas, status.ready_replicas), (Some(1), Some(1)));
    let ns = world.ns();
    assert_eq!(
        status.redis_endpoint,
        Some(format!("redis://minimal-redis.{ns}.svc:6379"))
    );
    for t in ["Ready", "RedisReady", "IngestReady"] {
        assert_eq!(
            tp.condition(t).map(|c| c.status.as_str()),
            Some("True"),
            "{t}"
        );
    }
    assert_eq!(
        tp.condition("Degraded").map(|c| c.status.as_str()),
        Some("False")
    );
    let columns = world.kubectl_ok(&["get", "tpl", "minimal"]).await?;
    assert!(
        columns.contains("READY") && columns.contains("True"),
        "{columns}"
    );

    // Events sent to an ingest pod's IP are stored and queryable.
    let pods = world.ingest_pods("minimal", 1).await?;
    let ip = pod_ip(&pods[0]);
    telemetryctl(&[
        "send",
        "--grpc",
        &format!("http://{ip}:50051"),
        "--n",
        "1000",
        "--devices",
        "10",
        "--no-progress",
    ])
    .await?;
    let counts = device_counts(&format!("http://{ip}:8000")).await?;
    assert_eq!(counts.len(), 10, "{counts:?}");
    assert_eq!(counts.values().sum::<u64>(), 1000, "{counts:?}");

    // And a Ready event was recorded for the pipeline.
    let events = world
        .kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=TelemetryPipeline,reason=Ready",
        ])
        .await?;
    assert!(events.contains("Ready"), "{events}");

    world.operator.unwrap().stop().await?;
    world.ns.cleanup().await
}

#[tokio::test]
async fn aggregation_change_reaches_running_pods_without_restart_or_loss() -> anyhow::Result<()> {
    let world = World::new("tpl-reload").await?;
    world
        .apply_and_wait_ready("pipeline-minimal.yaml", "minimal")
        .await?;
    let pod = world.ingest_pods("minimal", 1).await?.remove(0);
    let ip = pod_ip(&pod);
    let grpc = format!("http://{ip}:50051");
    let http = format!("http://{ip}:8000");
    telemetryctl(&[
        "send",
        "--grpc",
        &grpc,
        "--n",
        "500",
        "--devices",
        "5",
        "--seed",
        "1",
        "--no-progress",
    ])
    .await?;

    let window = format!("{http}/api/v1/windows/everything");
    assert_eq!(
        reqwest::get(&window).await?.status(),
        404,
        "no such window yet"
    );
    let patch = json!({"spec": {"aggregation": {"windows": [{"name": "everything"}]}}});
    world
        .api::<TelemetryPipeline>()
        .patch("minimal", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    wait_for(
        "the new window to be served by the running pod",
        Duration::from_secs(60),
        || {
            let window = window.clone();
            async move {
                reqwest::get(&window)
                    .await
                    .ok()?
                    .status()
                    .is_success()
                    .then_some(())
            }
        },
    )
    .await?;
    telemetryctl(&[
        "send",
        "--grpc",
        &grpc,
        "--n",
        "500",
        "--devices",
        "5",
        "--seed",
        "2",
        "--no-progress",
    ])
    .await?;

    // Same pod, never restarted, nothing lost.
    let pods = world.ingest_pods("minimal", 1).await?;
    assert_eq!(
        pods[0].uid(),
        pod.uid(),
        "a config change must not roll the Deployment"
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
    let counts = device_counts(&http).await?;
    assert_eq!(counts.values().sum::<u64>(), 1000, "{counts:?}");
    let cm = world.api::<ConfigMap>().get("minimal-ingest").await?;
    assert!(cm.data.unwrap()["aggregation.yaml"].contains("everything"));

    world.operator.unwrap().stop().await?;
    world.ns.cleanup().await
}

#[tokio::test]
async fn deleted_child_is_recreated() -> anyhow::Result<()> {
    let world = World::new("tpl-recreate").await?;
    world
        .apply_and_wait_ready("pipeline-minimal.yaml", "minimal")
        .await?;
    let services = world.api::<Service>();
    let before = services.get("minimal-ingest").await?.uid();
    services
        .delete("minimal-ingest", &DeleteParams::default())
        .await?;
    let after = wait_for(
        "the ingest Service to come back",
        Duration::from_secs(60),
        || {
            let services = services.clone();
            let before = before.clone();
            async move {
                let svc = services.get_opt("minimal-ingest").await.ok()??;
                (svc.uid() != before).then_some(svc)
            }
        },
    )
    .await?;
    let ports: Vec<_> = after
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, [50051, 8000]);
    world.operator.unwrap().stop().await?;
    world.ns.cleanup().await
}

#[tokio::test]
async fn paused_pipeline_is_left_alone_and_says_so() -> anyhow::Result<()> {
    let world = World::new("tpl-paused").await?;
    world
        .apply_and_wait_ready("pipeline-minimal.yaml", "minimal")
        .await?;
    let pipelines = world.api::<TelemetryPipeline>();
    pipelines
        .patch(
            "minimal",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"paused": true}})),
        )
        .await?;
    let tp = world.wait_condition("minimal", "Paused", "True").await?;
    assert!(
        tp.condition("Paused")
            .unwrap()
            .message
            .contains("spec.paused")
    );

    // Neither a deleted child nor a spec change is acted on.
    world
        .api::<Service>()
        .delete("minimal-ingest", &DeleteParams::default())
        .await?;
    let patch = json!({"spec": {"aggregation": {"dedup": {"enabled": false}}}});
    pipelines
        .patch("minimal", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        world
            .api::<Service>()
            .get_opt("minimal-ingest")
            .await?
            .is_none(),
        "paused: nothing recreated"
    );
    let cm = world.api::<ConfigMap>().get("minimal-ingest").await?;
    assert!(
        cm.data.unwrap()["aggregation.yaml"].contains("enabled: true"),
        "paused: config unchanged"
    );

    // Resuming catches up.
    pipelines
        .patch(
            "minimal",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"paused": false}})),
        )
        .await?;
    world.wait_condition("minimal", "Paused", "False").await?;
    let services = world.api::<Service>();
    wait_for(
        "the Service after resuming",
        Duration::from_secs(60),
        || {
            let services = services.clone();
            async move { services.get_opt("minimal-ingest").await.ok()? }
        },
    )
    .await?;
    world.operator.unwrap().stop().await?;
    world.ns.cleanup().await
}

#[tokio::test]
async fn deleting_the_pipeline_garbage_collects_its_children() -> anyhow::Result<()> {
    let world = World::new("tpl-gc").await?;
    world
        .apply_and_wait_ready("pipeline-minimal.yaml", "minimal")
        .await?;
    world
        .api::<TelemetryPipeline>()
        .delete("minimal", &DeleteParams::foreground())
        .await?;
    let w = &world;
    wait_for(
        "every child to be garbage-collected",
        Duration::from_secs(120),
        || async move {
            let gone = w
                .api::<Deployment>()
                .get_opt("minimal-ingest")
                .await
                .ok()?
                .is_none()
                && w.api::<StatefulSet>()
                    .get_opt("minimal-redis")
                    .await
                    .ok()?
                    .is_none()
                && w.api::<Service>()
                    .get_opt("minimal-ingest")
                    .await
                    .ok()?
                    .is_none()
                && w.api::<Service>()
                    .get_opt("minimal-redis")
                    .await
                    .ok()?
                    .is_none()
                && w.api::<Service>()
                    .get_opt("minimal-redis-headless")
                    .await
                    .ok()?
                    .is_none()
                && w.api::<ConfigMap>()
                    .get_opt("minimal-ingest")
                    .await
                    .ok()?
                    .is_none()
                && w.api::<ConfigMap>()
                    .get_opt("minimal-redis")
                    .await
                    .ok()?
                    .is_none()
                && w.api::<Secret>()
                    .get_opt("minimal-redis")
                    .await
                    .ok()?
                    .is_none();
            gone.then_some(())
        },
    )
    .await?;
    world.operator.unwrap().stop().await?;
    world.ns.cleanup().await
}

#[tokio::test]
async fn operator_restart_changes_nothing_that_is_already_right() -> anyhow::Result<()> {
    let mut world = World::new("tpl-restart").await?;
    world
        .apply_and_wait_ready("pipeline-minimal.yaml", "minimal")
        .await?;
    // Let the first operator settle (status written, no pending requeue).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = world.versions("minimal").await?;
    world.operator.take().unwrap().stop().await?;

    let operator = support::Operator::start(world.client.clone(), world.ns()).await?;
    wait_for(
        "the new operator to reconcile the pipeline",
        Duration::from_secs(60),
        || {
            let operator = &operator;
            async move {
                let n = operator
                    .metric("telemetry_operator_reconciliations_total{result=\"ok\"}")
                    .await
                    .ok()?;
                (n >= 1.0).then_some(())
            }
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = world.versions("minimal").await?;
    assert_eq!(
        before, after,
        "a restart must not write to the pipeline or its children"
    );
    assert_eq!(operator.child_writes().await?, 0.0);
    assert_eq!(
        operator
            .metric("telemetry_operator_status_writes_total")
            .await?,
        0.0
    );
    operator.stop().await?;
    world.ns.cleanup().await
}

#[tokio::test]
async fn autoscaling_leaves_replicas_to_the_autoscaler_after_setting_the_minimum()
-> anyhow::Result<()> {
    let world = World::new("tpl-scale").await?;
    let tp: TelemetryPipeline = serde_json::from_value(json!({
        "apiVersion": "telemetrypipeline.io/v1alpha1", "kind": "TelemetryPipeline",
        "metadata": {"name": "scaled"},
        "spec": {"autoscaling": {"minReplicas": 2, "maxReplicas": 4, "targetQueueDepthPerPod": 100}}
    }))?;
    world
        .api::<TelemetryPipeline>()
        .create(&Default::default(), &tp)
        .await?;
    world.wait_ready("scaled").await?;
    let deployments = world.api::<Deployment>();
    let replicas = |d: &Deployment| d.spec.as_ref().and_then(|s| s.replicas);
    assert_eq!(
        replicas(&deployments.get("scaled-ingest").await?),
        Some(2),
        "created at minReplicas"
    );

    // Someone else (later: the autoscaler) scales; the operator does not fight it.
    world
        .kubectl_ok(&["scale", "deployment/scaled-ingest", "--replicas=3"])
        .await?;
    world.ingest_pods("scaled", 3).await?;
    // A spec change forces a full reconcile and apply of the Deployment.
    let patch = json!({"spec": {"ingest": {"podAnnotations": {"example.com/touched": "yes"}}}});
    world
        .api::<TelemetryPipeline>()
        .patch("scaled", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let d = wait_for(
        "the annotation on the pod template",
        Duration::from_secs(60),
        || {
            let deployments = deployments.clone();
            async move {
                let d = deployments.get("scaled-ingest").await.ok()?;
                let annotations = d
                    .spec
                    .as_ref()?
                    .template
                    .metadata
                    .as_ref()?
                    .annotations
                    .clone()?;
                annotations.contains_key("example.com/touched").then_some(d)
            }
        },
    )
    .await?;
    assert_eq!(
        replicas(&d),
        Some(3),
        "the operator must not reset replicas while autoscaling"
    );

    // A scale-up and a rollout are progress, not problems: they end with
    // Progressing=False and never raise Degraded or a Warning.
    wait_for(
        "the rollout of the annotated template",
        support::READY_TIMEOUT,
        || {
            let deployments = deployments.clone();
            async move {
                let d = deployments.get("scaled-ingest").await.ok()?;
                let s = d.status?;
                let done = s.observed_generation == d.metadata.generation
                    && s.replicas == Some(3)
                    && s.updated_replicas == Some(3)
                    && s.ready_replicas == Some(3);
                done.then_some(())
            }
        },
    )
    .await?;
    let tp = world
        .wait_condition("scaled", "Progressing", "False")
        .await?;
    let progressing = tp.condition("Progressing").unwrap();
    assert_eq!(progressing.reason, "Complete", "{progressing:?}");
    let tp = world.wait_ready("scaled").await?;
    let degraded = tp.condition("Degraded").unwrap();
    assert_eq!(degraded.status, "False", "{degraded:?}");
    let warnings = world
        .kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=TelemetryPipeline,type=Warning",
            "-o",
            "name",
        ])
        .await?;
    assert_eq!(
        warnings.trim(),
        "",
        "no Warning for a scale-up or a rollout"
    );
    world.operator.unwrap().stop().await?;
    world.ns.cleanup().await
}

#[tokio::test]
async fn every_example_applies_and_the_full_one_sets_every_section() -> anyhow::Result<()> {
    let world = World::new("tpl-examples").await?;
    // The production example needs its key Secret, made as its comments say.
    let (key, entry) = auth::new_key("sensors", &["write"]).await?;
    world
        .api::<Secret>()
        .create(
            &Default::default(),
            &auth::key_secret("production-api-keys", &entry)?,
        )
        .await?;
    let dir = support::repo_root().join("examples");
    world
        .kubectl_ok(&["apply", "-f", dir.to_str().unwrap()])
        .await?;
    world.wait_ready("minimal").await?;
    world.wait_ready("production").await?;
    let pods = world.ingest_pods("production", 2).await?;
    let grpc = format!("http://{}:50051", pod_ip(&pods[0]));
    telemetryctl(&[
        "send",
        "--grpc",
        &grpc,
        "--n",
        "100",
        "--api-key",
        &key,
        "--no-progress",
    ])
    .await?;
    let stats = format!("http://{}:8000/api/v1/stats", pod_ip(&pods[0]));
    assert_eq!(
        reqwest::get(&stats).await?.status(),
        401,
        "production asks for a key"
    );
    let full = world.wait_ready("full").await?;
    assert!(full.autoscaling_enabled());

    // Autoscaling: created at minReplicas (2), replicas owned by the autoscaler's manager.
    let d = world.api::<Deployment>().get("full-ingest").await?;
    let spec = d.spec.clone().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.node_selector.unwrap()["kubernetes.io/os"], "linux");
    assert_eq!(
        pod.tolerations.unwrap()[0].key.as_deref(),
        Some("dedicated")
    );
    assert!(pod.affinity.unwrap().pod_anti_affinity.is_some());
    assert_eq!(pod.topology_spread_constraints.unwrap().len(), 1);
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["team"], "data-platform");
    let c = &pod.containers[0];
    assert_eq!(
        c.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0,
        "1Gi"
    );

    // Managed Redis with appendfsync always and a 10Gi claim.
    let cm = world.api::<ConfigMap>().get("full-redis").await?;
    assert!(cm.data.unwrap()["redis.conf"].contains("appendfsync always"));
    let sts = world.api::<StatefulSet>().get("full-redis").await?;
    let claim = sts.spec.unwrap().volume_claim_templates.unwrap()[0]
        .spec
        .clone()
        .unwrap();
    assert_eq!(
        claim.resources.unwrap().requests.unwrap()["storage"].0,
        "10Gi"
    );

    // The aggregation reached the pods: the example's window is served.
    let pods = world.ingest_pods("full", 2).await?;
    let window = format!("http://{}:8000/api/v1/windows/revenue", pod_ip(&pods[0]));
    assert!(
        reqwest::get(&window).await?.status().is_success(),
        "{window}"
    );

    world.operator.unwrap().stop().await?;
    world.ns.cleanup().await
}

#[tokio::test]
async fn a_permanent_problem_is_reported_in_degraded_without_a_hot_loop() -> anyhow::Result<()> {
    let world = World::new("tpl-degraded").await?;
    // The schema accepts any non-empty string; only the operator can tell
    // that this glob does not compile.
    let tp: TelemetryPipeline = serde_json::from_value(json!({
        "apiVersion": "telemetrypipeline.io/v1alpha1", "kind": "TelemetryPipeline",
        "metadata": {"name": "broken"},
        "spec": {"aggregation": {"counters": {"dropDevices": ["bad["]}}}
    }))?;
    world
        .api::<TelemetryPipeline>()
        .create(&Default::default(), &tp)
        .await?;
    let tp = world.wait_condition("broken", "Degraded", "True").await?;
    let degraded = tp.condition("Degraded").unwrap();
    assert_eq!(degraded.reason, "InvalidAggregation");
    assert!(
        degraded.message.contains("dropDevices[0]"),
        "{}",
        degraded.message
    );
    assert_eq!(tp.condition("Ready").unwrap().status, "False");
    assert!(
        world
            .api::<Deployment>()
            .get_opt("broken-ingest")
            .await?
            .is_none(),
        "nothing applied"
    );

    tokio::time::sleep(Duration::from_secs(5)).await;
    let operator = world.operator.as_ref().unwrap();
    let failures = operator
        .metric("telemetry_operator_reconcile_failures_total{reason=\"InvalidAggregation\"}")
        .await?;
    assert!(
        (1.0..=3.0).contains(&failures),
        "no hot loop: {failures} failed reconciles in 5 s"
    );
    let events = world
        .kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=TelemetryPipeline,type=Warning,reason=InvalidAggregation",
        ])
        .await?;
    assert!(events.contains("InvalidAggregation"), "{events}");

    world.operator.unwrap().stop().await?;
    world.ns.cleanup().await
}

#[tokio::test]
async fn a_missing_redis_password_secret_is_named_in_the_status_until_it_exists()
-> anyhow::Result<()> {
    let world = World::new("tpl-secret").await?;
    // Nothing listens on 127.0.0.1:1: naming the Secret needs no Redis, and
    // once the Secret exists the status names the unreachable Redis instead.
    let tp: TelemetryPipeline = serde_json::from_value(json!({
        "apiVersion": "telemetrypipeline.io/v1alpha1", "kind": "TelemetryPipeline",
        "metadata": {"name": "ext"},
        "spec": {"redis": {"external": {
            "url": "redis://127.0.0.1:1",
            "passwordSecretRef": {"name": "redis-creds"}
        }}}
    }))?;
    let pipelines = world.api::<TelemetryPipeline>();
    pipelines.create(&Default::default(), &tp).await?;

    let condition = |tp: &TelemetryPipeline, t: &str| tp.condition(t).cloned();
    let tp = wait_for(
        "Ready=False naming the missing Secret",
        support::READY_TIMEOUT,
        || {
            let pipelines = pipelines.clone();
            async move {
                let tp = pipelines.get("ext").await.ok()?;
                let ready = tp.condition("Ready")?;
                (ready.status == "False" && ready.message.contains("\"redis-creds\"")).then_some(tp)
            }
        },
    )
    .await?;
    let ready = condition(&tp, "Ready").unwrap();
    assert_eq!(ready.reason, "RedisSecretMissing");
    for part in ["\"password\"", "spec.redis.external.passwordSecretRef"] {
        assert!(ready.message.contains(part), "{part}: {}", ready.message);
    }
    let degraded = condition(&tp, "Degraded").unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "RedisSecretMissing")
    );

    // The children are applied regardless, and the kubelet says the same
    // thing its own way on the pod.
    let pods = world.api::<Pod>();
    let waiting = wait_for(
        "the ingest pod to wait on the Secret",
        support::READY_TIMEOUT,
        || {
            let pods = pods.clone();
            async move {
                let list = pods
                    .list(&ListParams::default().labels("app.kubernetes.io/instance=ext"))
                    .await
                    .ok()?;
                list.items.iter().find_map(|p| {
                    let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
                    let waiting = statuses[0].state.as_ref()?.waiting.clone()?;
                    (waiting.reason.as_deref() == Some("CreateContainerConfigError"))
                        .then_some(waiting)
                })
            }
        },
    )
    .await?;
    assert!(
        waiting
            .message
            .as_deref()
            .is_some_and(|m| m.contains("redis-creds")),
        "{waiting:?}"
    );
    let events = world
        .kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=TelemetryPipeline,type=Warning,reason=RedisSecretMissing",
        ])
        .await?;
    assert!(events.contains("RedisSecretMissing"), "{events}");

    // Create it: the pod starts, and the status moves on to what holds it
    // back now, the Redis nobody runs.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "redis-creds"},
        "stringData": {"password": "not-a-real-one"}
    }))?;
    world
        .api::<Secret>()
        .create(&Default::default(), &secret)
        .await?;
    let tp = wait_for(
        "Ready's message to name the Redis instead of the Secret",
        support::READY_TIMEOUT,
        || {
            let pipelines = pipelines.clone();
            async move {
                let tp = pipelines.get("ext").await.ok()?;
                let ready = tp.condition("Ready")?;
                ready.message.contains("redis://127.0.0.1:1").then_some(tp)
            }
        },
    )
    .await?;
    let ready = condition(&tp, "Ready").unwrap();
    assert_eq!(ready.status, "False");
    assert!(!ready.message.contains("redis-creds"), "{}", ready.message);
    assert!(
        ready.message.contains("is running but not ready"),
        "{}",
        ready.message
    );
    let degraded = condition(&tp, "Degraded").unwrap();
    assert_ne!(degraded.reason, "RedisSecretMissing");

    world.operator.unwrap().stop().await?;
    world.ns.cleanup().await
}

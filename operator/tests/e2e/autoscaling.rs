//! The autoscaler end to end: real ingest processes whose queues really
//! grow under load, scraped by the operator, scaled through `/scale`, and
//! shrunk again once the load is gone, with every acknowledged event stored
//! exactly once.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::ListParams;
use telemetry_operator::TelemetryPipeline;
use telemetry_testenv::wait_for;

use crate::support::{World, device_counts, pod_ip, telemetryctl};

/// A pipeline that scales between 1 and 4 pods on a small queue target,
/// ticking every 3 s and shrinking after a 15 s window.
fn pipeline(name: &str) -> String {
    format!(
        r#"
apiVersion: telemetrypipeline.io/v1alpha1
kind: TelemetryPipeline
metadata: {{name: {name}}}
spec:
  autoscaling:
    minReplicas: 1
    maxReplicas: 4
    syncPeriodSeconds: 3
    targetQueueDepthPerPod: 2000
    scrape: {{timeoutSeconds: 2}}
    behavior:
      scaleDown:
        stabilizationWindowSeconds: 15
        policies: [{{type: Percent, value: 100, periodSeconds: 15}}]
"#
    )
}

async fn apply(world: &World, name: &str, yaml: &str) -> anyhow::Result<()> {
    let path = std::env::temp_dir().join(format!("{}-{name}.yaml", world.ns()));
    std::fs::write(&path, yaml)?;
    world
        .kubectl_ok(&["apply", "-f", path.to_str().unwrap()])
        .await?;
    std::fs::remove_file(path).ok();
    Ok(())
}

/// Samples replicas, desired replicas and queue depth every 500 ms until
/// stopped; the rows go to `target/autoscaling-e2e.csv` (plotted by
/// `scripts/plot-autoscaling` into docs/autoscaling-e2e.svg).
struct Trace {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Trace {
    fn start(world: &World, name: &str) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let api = world.api::<TelemetryPipeline>();
        let deployments = world.api::<Deployment>();
        let (name, token) = (name.to_string(), stop.clone());
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut rows = vec!["seconds,replicas,ready,desired,queue".to_string()];
            while !token.is_cancelled() {
                let tp = api.get(&name).await.ok();
                let d = deployments.get(&format!("{name}-ingest")).await.ok();
                let auto = tp.and_then(|t| t.status).and_then(|s| s.autoscaling);
                let ready = d
                    .as_ref()
                    .and_then(|d| d.status.as_ref())
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0);
                rows.push(format!(
                    "{:.1},{},{},{},{}",
                    started.elapsed().as_secs_f64(),
                    d.as_ref().map_or(0, replicas),
                    ready,
                    auto.as_ref().and_then(|a| a.desired_replicas).unwrap_or(0),
                    auto.as_ref()
                        .and_then(|a| a.current_queue_depth)
                        .unwrap_or(0),
                ));
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            rows
        });
        Self { stop, task }
    }

    async fn finish(self) -> anyhow::Result<()> {
        self.stop.cancel();
        let rows = self.task.await?;
        let path = crate::support::bin_dir().join("../autoscaling-e2e.csv");
        std::fs::write(&path, rows.join("\n") + "\n")?;
        eprintln!("trace: {}", path.display());
        Ok(())
    }
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

/// One line of `kubectl get tpl` (what a person watching `-w` sees).
async fn get_line(world: &World, name: &str) -> anyhow::Result<String> {
    let out = world
        .kubectl_ok(&["get", "tpl", name, "--no-headers"])
        .await?;
    Ok(out.trim().to_string())
}

#[tokio::test]
async fn queue_depth_scales_ingest_out_under_load_and_back_in_without_losing_events()
-> anyhow::Result<()> {
    let world = World::new("tpl-autoscale").await?;
    let name = "scaling";
    apply(&world, name, &pipeline(name)).await?;
    world.wait_ready(name).await?;
    let trace = Trace::start(&world, name);
    let first = world.ingest_pods(name, 1).await?.remove(0);
    let grpc = format!("http://{}:50051", pod_ip(&first));
    let http = format!("http://{}:8000", pod_ip(&first));

    // Load that one pod cannot flush as fast as it arrives: many calls in
    // flight at full speed.
    let load = tokio::spawn(async move {
        telemetryctl(&[
            "send",
            "--grpc",
            &grpc,
            "--n",
            "400000",
            "--devices",
            "100",
            "--concurrency",
            "16",
            "--batch",
            "1000",
            "--json",
            "--no-progress",
        ])
        .await
    });

    // Scaled up within two sync periods of the queue being seen.
    let deployments = world.api::<Deployment>();
    let api = world.api::<TelemetryPipeline>();
    let mut watched = Vec::new();
    let seen_queue = wait_for(
        "a queue depth in the status",
        Duration::from_secs(60),
        || {
            let api = api.clone();
            async move {
                let tp = api.get(name).await.ok()?;
                let q = tp.status?.autoscaling?.current_queue_depth?;
                (q > 2000).then_some(q)
            }
        },
    )
    .await?;
    let seen_at = Instant::now();
    watched.push(get_line(&world, name).await?);
    let scaled = wait_for("a scale-up", Duration::from_secs(6 + 4), || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get(&format!("{name}-ingest")).await.ok()?;
            (replicas(&d) > 1).then_some(replicas(&d))
        }
    })
    .await?;
    assert!(
        seen_at.elapsed() <= Duration::from_secs(10),
        "queue {seen_queue} seen, scale-up to {scaled} took {:?}",
        seen_at.elapsed()
    );
    watched.push(get_line(&world, name).await?);

    // Status and events say why.
    let tp = api.get(name).await?;
    let status = tp.status.clone().unwrap().autoscaling.unwrap();
    assert!(status.desired_replicas.unwrap() > 1, "{status:?}");
    assert!(!status.scale_events.is_empty(), "{status:?}");
    let active = tp.condition("ScalingActive").expect("ScalingActive");
    assert_eq!(active.status, "True", "{active:?}");
    let describe = world.kubectl_ok(&["describe", "tpl", name]).await?;
    assert!(
        describe.contains("ScaledUp") && describe.contains("queue depth"),
        "kubectl describe shows the scale-up and why:\n{describe}"
    );

    // The load ends with everything acknowledged.
    let summary = load.await??;
    let summary: serde_json::Value = serde_json::from_str(&summary)?;
    let acked = summary["accepted"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no accepted count in {summary}"))?;
    assert_eq!(acked, 400_000, "{summary}");
    watched.push(get_line(&world, name).await?);

    // Queues drain; after the down window the Deployment is back at min, and
    // the pod that stays is the oldest one (all queues empty: newest go first).
    let d = wait_for("a scale-down to 1", Duration::from_secs(120), || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get(&format!("{name}-ingest")).await.ok()?;
            (replicas(&d) == 1).then_some(d)
        }
    })
    .await?;
    assert_eq!(replicas(&d), 1);
    watched.push(get_line(&world, name).await?);
    let survivors = wait_for("one ingest pod left", Duration::from_secs(120), || {
        let pods = world.api::<Pod>();
        async move {
            let list = pods
                .list(&ListParams::default().labels(&format!(
                    "app.kubernetes.io/name=telemetry-ingest,app.kubernetes.io/instance={name}"
                )))
                .await
                .ok()?;
            (list.items.len() == 1).then_some(list.items)
        }
    })
    .await?;
    assert_eq!(
        survivors[0].name_any(),
        first.name_any(),
        "the oldest pod stays"
    );
    let describe = world.kubectl_ok(&["describe", "tpl", name]).await?;
    assert!(describe.contains("ScaledDown"), "{describe}");

    // Every acknowledged event is stored exactly once.
    let stored: u64 = device_counts(&http).await?.values().sum();
    assert_eq!(stored, acked, "acknowledged = stored");
    eprintln!("kubectl get tpl over the run:\n{}", watched.join("\n"));
    trace.finish().await?;

    world.operator.unwrap().stop().await?;
    world.ns.cleanup().await
}

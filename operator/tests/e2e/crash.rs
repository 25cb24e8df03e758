//! The operator killed with SIGKILL — a real `telemetry-operator` process,
//! with leader election as the chart runs it — in the middle of a reconcile
//! and in the middle of a scale-down: the next process converges, creates no
//! second copy of anything, regenerates no credential, and no acknowledged
//! event is lost (docs/reliability.md, fault 7).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use telemetry_operator::TelemetryPipeline;
use telemetry_testenv::wait_for;

use crate::support::{INGEST_IMAGE, World, device_counts, pod_ip, telemetryctl};

/// A `telemetry-operator` process watching the test namespace, electing a
/// leader through a Lease there with a short term (so that a successor
/// takes over soon after a kill).
struct OperatorProcess {
    child: Child,
    log: std::path::PathBuf,
}

impl OperatorProcess {
    fn start(world: &World, identity: &str) -> anyhow::Result<Self> {
        let log = std::env::temp_dir().join(format!("{}-{identity}.log", world.ns()));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_telemetry-operator"))
            .args([
                "--watch-namespaces",
                world.ns(),
                "--http-listen",
                "127.0.0.1:0",
                "--ingest-image",
                INGEST_IMAGE,
                "--leader-elect",
                "--lease-namespace",
                world.ns(),
                "--identity",
                identity,
                "--lease-duration-seconds",
                "4",
                "--lease-renew-grace-seconds",
                "2",
            ])
            .env("KUBECONFIG", world.cluster.kubeconfig())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        eprintln!(
            "operator {identity}: pid {}, log {}",
            child.id(),
            log.display()
        );
        Ok(Self { child, log })
    }

    /// Fails, with its log, if the process has exited.
    fn running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            anyhow::bail!("the operator exited ({status}):\n{log}");
        }
        Ok(())
    }

    /// SIGKILL, then reaped.
    fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pipeline's direct children: `kind → {name → uid}`. Read with the
/// API (a few milliseconds), so a poll sees a reconcile half-way.
async fn children(
    world: &World,
    name: &str,
) -> anyhow::Result<BTreeMap<String, BTreeMap<String, String>>> {
    let Some(tp) = world.api::<TelemetryPipeline>().get_opt(name).await? else {
        return Ok(BTreeMap::new());
    };
    let uid = tp.uid().unwrap_or_default();
    let lp = ListParams::default();
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    macro_rules! collect {
        ($($k:ty),*) => {$(
            for o in world.api::<$k>().list(&lp).await?.items {
                if o.owner_references().iter().any(|r| r.uid == uid) {
                    out.entry(<$k as kube::Resource>::kind(&()).to_string())
                        .or_default()
                        .insert(o.name_any(), o.uid().unwrap_or_default());
                }
            }
        )*};
    }
    collect!(
        Deployment,
        StatefulSet,
        Service,
        ConfigMap,
        Secret,
        ServiceAccount,
        PodDisruptionBudget,
        NetworkPolicy
    );
    Ok(out)
}

/// `n` events to each pod over gRPC, every one acknowledged; the total.
async fn send_to_each(pods: &[Pod], n: u64) -> anyhow::Result<u64> {
    for pod in pods {
        telemetryctl(&[
            "send",
            "--grpc",
            &format!("http://{}:50051", pod_ip(pod)),
            "--n",
            &n.to_string(),
            "--devices",
            "50",
            "--no-progress",
        ])
        .await?;
    }
    Ok(n * pods.len() as u64)
}

fn count(children: &BTreeMap<String, BTreeMap<String, String>>) -> usize {
    children.values().map(BTreeMap::len).sum()
}

/// `kind → names` with the pipeline's name replaced by `<p>`.
fn shape(
    children: &BTreeMap<String, BTreeMap<String, String>>,
    name: &str,
) -> BTreeMap<String, BTreeSet<String>> {
    children
        .iter()
        .map(|(kind, names)| {
            (
                kind.clone(),
                names.keys().map(|n| n.replacen(name, "<p>", 1)).collect(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_operator_killed_mid_reconcile_converges_without_duplicates_or_new_credentials()
-> anyhow::Result<()> {
    let world = World::without_operator("crash-reconcile").await?;
    let name = "crash";
    let tp: TelemetryPipeline = serde_json::from_value(json!({
        "apiVersion": "telemetrypipeline.io/v1alpha1", "kind": "TelemetryPipeline",
        "metadata": {"name": name},
        "spec": {"ingest": {"replicas": 2}},
    }))?;
    let api = world.api::<TelemetryPipeline>();
    api.patch(
        name,
        &PatchParams::apply("e2e"),
        &Patch::Apply(serde_json::to_value(&tp)?),
    )
    .await?;

    // Each operator is killed the moment it has created something more than
    // its predecessor left: three kills, each inside a reconcile.
    let mut seen = BTreeMap::new();
    let mut first_uids: BTreeMap<String, String> = BTreeMap::new();
    let mut kills = Vec::new();
    for round in 0..3 {
        let mut operator = OperatorProcess::start(&world, &format!("crashing-{round}"))?;
        let before = count(&seen);
        // Killed the moment it has created something; a reconcile that
        // creates nothing within 20 s had nothing left to create.
        let deadline = Instant::now() + Duration::from_secs(20);
        let now = loop {
            let now = children(&world, name).await?;
            if count(&now) > before || Instant::now() >= deadline {
                break now;
            }
            operator.running()?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        operator.kill()?;
        eprintln!(
            "killed operator {round} with {} children: {:?}",
            count(&now),
            shape(&now, name)
        );
        for (kind, names) in &now {
            for (n, uid) in names {
                first_uids
                    .entry(format!("{kind}/{n}"))
                    .or_insert_with(|| uid.clone());
            }
        }
        let grew = count(&now) > before;
        kills.push(count(&now));
        seen = now;
        if !grew {
            break;
        }
    }

    let _survivor = OperatorProcess::start(&world, "survivor")?;
    let restarted = Instant::now();
    world.wait_ready(name).await?;
    eprintln!(
        "Ready {:.1} s after the fourth operator started",
        restarted.elapsed().as_secs_f64()
    );
    let converged = children(&world, name).await?;
    assert!(
        kills[0] > 0 && kills[0] < count(&converged),
        "the first kill fell inside the reconcile: {kills:?} of {}",
        count(&converged)
    );

    // The same objects as a pipeline reconciled without a crash.
    let calm = "calm";
    world
        .apply_spec(calm, json!({"ingest": {"replicas": 2}}))
        .await?;
    let reference = children(&world, calm).await?;
    assert_eq!(
        shape(&converged, name),
        shape(&reference, calm),
        "after the crashes the pipeline has exactly the children a calm one has"
    );
    // Nothing created before a kill was replaced: the Redis password in
    // particular was generated once (a new one would roll Redis).
    for (kind, names) in &converged {
        for (n, uid) in names {
            if let Some(first) = first_uids.get(&format!("{kind}/{n}")) {
                assert_eq!(uid, first, "{kind}/{n} was recreated after a kill");
            }
        }
    }
    let secrets = world.api::<Secret>();
    let password = secrets
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|s| s.name_any().starts_with(name) && s.name_any().contains("redis"))
        .ok_or_else(|| anyhow::anyhow!("no Redis password Secret for {name}"))?;
    assert_eq!(
        first_uids.get(&format!("Secret/{}", password.name_any())),
        password.uid().as_ref(),
        "the password Secret existed before the last kill and is the same object"
    );

    // And it stores what it acknowledges.
    let pods = world.ingest_pods(name, 2).await?;
    let sent = send_to_each(&pods, 5_000).await?;
    let http = format!("http://{}:8000", pod_ip(&pods[0]));
    let stored: u64 = device_counts(&http).await?.values().sum();
    assert_eq!(stored, sent);
    world.ns.cleanup().await
}

#[tokio::test]
async fn an_operator_killed_mid_scale_down_finishes_it_and_loses_no_event() -> anyhow::Result<()> {
    let world = World::without_operator("crash-scale").await?;
    let name = "shrink";
    let mut operator = Some(OperatorProcess::start(&world, "first")?);
    let autoscaling = |min: i32| {
        json!({"autoscaling": {
            "minReplicas": min, "maxReplicas": 3, "syncPeriodSeconds": 2,
            "targetQueueDepthPerPod": 100000, "scrape": {"timeoutSeconds": 1},
            "behavior": {"scaleDown": {
                "stabilizationWindowSeconds": 0,
                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 8}],
            }},
        }})
    };
    world.apply_spec(name, autoscaling(1)).await?;
    let oldest = world.ingest_pods(name, 1).await?.remove(0);
    // Two newer pods, which a scale-down of idle pods removes first.
    world.apply_spec(name, autoscaling(3)).await?;
    let pods = world.ingest_pods(name, 3).await?;

    // Events on every pod, the victims-to-be included: acknowledged, so
    // stored, whatever happens to their pods next.
    let mut sent = send_to_each(&pods, 5_000).await?;
    // The scale-down policy counts the scale-up too (the net change in its
    // period, as HPA does): let it leave the period first.
    let api = world.api::<TelemetryPipeline>();
    wait_for(
        "the scale-up to be older than the scale-down period",
        Duration::from_secs(60),
        || async {
            let status = api.get(name).await.ok()?.status?.autoscaling?;
            let last = status.last_scale_time?.0;
            (k8s_openapi::jiff::Timestamp::now()
                .duration_since(last)
                .as_secs()
                > 9)
            .then_some(())
        },
    )
    .await?;
    // A steady load on the pod that stays, through the crash.
    let grpc = format!("http://{}:50051", pod_ip(&oldest));
    let load = tokio::spawn(async move {
        telemetryctl(&[
            "send",
            "--grpc",
            &grpc,
            "--n",
            "40000",
            "--rate",
            "1000",
            "--devices",
            "50",
            "--seed",
            "7",
            "--json",
            "--no-progress",
        ])
        .await
    });

    // Down to 1, one pod per 8 s: killed right after the first step.
    world.apply_spec(name, autoscaling(1)).await?;
    let deployments = world.api::<Deployment>();
    let ingest = format!("{name}-ingest");
    wait_for("the first scale-down step", Duration::from_secs(60), || {
        let deployments = deployments.clone();
        let ingest = ingest.clone();
        async move {
            let d = deployments.get(&ingest).await.ok()?;
            (d.spec?.replicas? == 2).then_some(())
        }
    })
    .await?;
    operator.take().expect("the first operator").kill()?;
    eprintln!("killed the operator at 2 replicas");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _second = OperatorProcess::start(&world, "second")?;
    let restarted = Instant::now();

    wait_for("the scale-down to finish", Duration::from_secs(90), || {
        let deployments = deployments.clone();
        let ingest = ingest.clone();
        async move {
            let d = deployments.get(&ingest).await.ok()?;
            (d.spec?.replicas? == 1).then_some(())
        }
    })
    .await?;
    eprintln!(
        "scaled to 1 {:.1} s after the second operator started",
        restarted.elapsed().as_secs_f64()
    );
    let survivors = world.ingest_pods(name, 1).await?;
    assert_eq!(
        survivors[0].name_any(),
        oldest.name_any(),
        "the loaded, oldest pod stays"
    );
    let summary: serde_json::Value = serde_json::from_str(&load.await??)?;
    assert_eq!(summary["accepted"].as_u64(), Some(40_000), "{summary}");
    sent += 40_000;

    // No second Deployment or ReplicaSet storm: one Deployment, and every
    // pod left is one of the pipeline's.
    let all = world.api::<Pod>().list(&ListParams::default()).await?;
    let ingest_pods: Vec<_> = all
        .items
        .iter()
        .filter(|p| p.name_any().starts_with(&ingest))
        .collect();
    assert_eq!(
        ingest_pods.len(),
        1,
        "{:?}",
        ingest_pods.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
    assert_eq!(
        children(&world, name)
            .await?
            .get("Deployment")
            .map(BTreeMap::len),
        Some(1)
    );

    let http = format!("http://{}:8000", pod_ip(&survivors[0]));
    let stored: u64 = device_counts(&http).await?.values().sum();
    assert_eq!(stored, sent, "every acknowledged event stored exactly once");
    eprintln!("{sent} events acknowledged, {stored} stored");
    world.ns.cleanup().await
}

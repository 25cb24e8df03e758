//! A sharded pipeline end to end (examples/pipeline-sharded.yaml): three
//! primaries with a replica each become one Redis Cluster covering every
//! slot, the pipeline turns Ready, events flow and queries answer; then
//! `shards: 3 → 4` under load: the operator adds two pods, makes one a
//! primary and moves slots to it while ingest keeps serving; then a
//! primary's pod deleted under load. Every acknowledged event is stored
//! exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use telemetry_operator::TelemetryPipeline;
use telemetry_testenv::wait_for;

use crate::support::{World, device_counts, pod_ip, telemetryctl};

/// How long forming or resharding may take on a loaded two-core machine.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(300);

/// `CLUSTER INFO` and `CLUSTER NODES` of a Redis pod.
async fn cluster_view(pod: &Pod, password: &str) -> anyhow::Result<(String, String)> {
    let client = redis::Client::open(format!("redis://:{password}@{}:6379", pod_ip(pod)))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut conn)
        .await?;
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await?;
    Ok((info, nodes))
}

/// Keys a pod holds.
async fn dbsize(pod: &Pod, password: &str) -> anyhow::Result<u64> {
    let client = redis::Client::open(format!("redis://:{password}@{}:6379", pod_ip(pod)))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    Ok(redis::cmd("DBSIZE").query_async(&mut conn).await?)
}

/// `(primaries owning slots, replicas)` in a `CLUSTER NODES` text.
fn roles(nodes: &str) -> (usize, usize) {
    let lines: Vec<Vec<&str>> = nodes
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let primaries = lines
        .iter()
        .filter(|f| f.len() > 8 && f[2].contains("master"))
        .count();
    let replicas = lines
        .iter()
        .filter(|f| f.len() > 2 && f[2].contains("slave"))
        .count();
    (primaries, replicas)
}

async fn redis_pods(world: &World, name: &str) -> anyhow::Result<Vec<Pod>> {
    let selector = format!("app.kubernetes.io/name=redis,app.kubernetes.io/instance={name}");
    let mut pods = world
        .api::<Pod>()
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    pods.sort_by_key(|p| {
        let name = p.metadata.name.clone().unwrap_or_default();
        name.rsplit('-').next().and_then(|n| n.parse::<u32>().ok())
    });
    Ok(pods)
}

/// One `telemetryctl send` to `grpc`: (sent, acknowledged as new or as a
/// duplicate of a retried call), failing on any event left unacknowledged.
async fn send(grpc: &str, n: u64) -> anyhow::Result<(u64, u64)> {
    let out = telemetryctl(&[
        "send",
        "--grpc",
        grpc,
        // A shard whose primary is gone refuses its events (retryably)
        // until a replica or the restarted pod serves them: about a minute.
        "--retries",
        "40",
        "--n",
        &n.to_string(),
        "--devices",
        "200",
        "--concurrency",
        "8",
        "--batch",
        "500",
        "--json",
        "--no-progress",
    ])
    .await?;
    let summary: serde_json::Value = serde_json::from_str(&out)?;
    let field = |f: &str| summary[f].as_u64().unwrap_or(0);
    anyhow::ensure!(field("failed") == 0, "events never acknowledged: {summary}");
    Ok((field("sent"), field("accepted") + field("duplicates")))
}

/// A sender that keeps going, call after call, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<(u64, u64, u32)>>,
}

impl Load {
    fn start(grpc: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (stop, grpc) = (stop.clone(), grpc.to_string());
            async move {
                let (mut sent, mut acked, mut rounds) = (0, 0, 0);
                while !stop.load(Ordering::SeqCst) || rounds < 2 {
                    let (s, a) = send(&grpc, 10_000).await?;
                    sent += s;
                    acked += a;
                    rounds += 1;
                }
                anyhow::Ok((sent, acked, rounds))
            }
        });
        Load { stop, task }
    }

    /// Stops it; every event it sent must have been acknowledged.
    async fn finish(self, what: &str) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::SeqCst);
        let (sent, acked, rounds) = self.task.await??;
        assert_eq!(
            acked, sent,
            "every event of the {rounds} rounds acknowledged"
        );
        eprintln!("{rounds} rounds of 10 000 events {what}");
        Ok(acked)
    }
}

/// The pod whose node serves slots as a primary, by its own account.
async fn a_primary(pods: &[Pod], password: &str) -> anyhow::Result<Pod> {
    for pod in pods.iter().rev() {
        let (_, nodes) = cluster_view(pod, password).await?;
        let me = nodes
            .lines()
            .find(|l| l.contains("myself"))
            .unwrap_or_default();
        if me.contains("master") && me.split_whitespace().count() > 8 {
            return Ok(pod.clone());
        }
    }
    anyhow::bail!("no primary among the pods")
}

#[tokio::test]
async fn sharded_pipeline_forms_a_covered_cluster_serves_and_grows_a_shard_under_load_losing_nothing()
-> anyhow::Result<()> {
    let world = World::new("tpl-shards").await?;
    let name = "sharded";
    let tp = world
        .apply_and_wait_ready("pipeline-sharded.yaml", name)
        .await?;

    // Ready means formed and covered, a replica for every primary; then
    // the round finds nothing left to do, and every node agrees.
    let cluster = tp
        .status
        .clone()
        .unwrap()
        .redis_cluster
        .expect("status.redisCluster");
    assert_eq!(
        (cluster.shards, cluster.slots_served),
        (3, 16384),
        "{cluster:?}"
    );
    assert!(cluster.message.contains("1 replica each"), "{cluster:?}");
    let api = world.api::<TelemetryPipeline>();
    wait_for("the cluster converged", CLUSTER_TIMEOUT, || {
        let api = api.clone();
        async move {
            let c = api.get(name).await.ok()?.status?.redis_cluster?;
            (c.phase == "Converged").then_some(())
        }
    })
    .await?;
    let password = world.api::<Secret>().get(&format!("{name}-redis")).await?;
    let password = String::from_utf8(password.data.unwrap()["password"].0.clone())?;
    let pods = redis_pods(&world, name).await?;
    assert_eq!(pods.len(), 6);
    for pod in &pods {
        let (info, nodes) = cluster_view(pod, &password).await?;
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
        assert!(info.contains("cluster_known_nodes:6"), "{info}");
        assert_eq!(roles(&nodes), (3, 3), "{nodes}");
    }

    // Events flow and queries answer, from every shard.
    let ingest = world.ingest_pods(name, 1).await?.remove(0);
    let grpc = format!("http://{}:50051", pod_ip(&ingest));
    let http = format!("http://{}:8000", pod_ip(&ingest));
    let (sent, acked) = send(&grpc, 20_000).await?;
    assert_eq!(acked, sent);
    let counts = device_counts(&http).await?;
    assert_eq!(counts.len(), 200);
    assert_eq!(counts.values().sum::<u64>(), acked);
    for pod in &pods {
        let (_, nodes) = cluster_view(pod, &password).await?;
        let me = nodes
            .lines()
            .find(|l| l.contains("myself"))
            .unwrap_or_default();
        if me.contains("master") {
            assert!(
                dbsize(pod, &password).await? > 0,
                "every primary holds keys: {me}"
            );
        }
    }

    // 3 → 4 shards while a sender keeps going.
    let load = Load::start(&grpc);
    tokio::time::sleep(Duration::from_secs(2)).await;
    world
        .api::<TelemetryPipeline>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"redis": {"managed": {"shards": 4}}}})),
        )
        .await?;
    let grown = wait_for("4 shards, converged", CLUSTER_TIMEOUT, || {
        let api = api.clone();
        async move {
            let tp = api.get(name).await.ok()?;
            let c = tp.status.clone()?.redis_cluster?;
            (c.shards == 4 && c.phase == "Converged" && c.slots_migrating == 0).then_some(tp)
        }
    })
    .await?;
    let load_acked = load.finish("during the reshard").await?;

    let cluster = grown.status.clone().unwrap().redis_cluster.unwrap();
    assert_eq!(cluster.slots_served, 16384, "{cluster:?}");
    assert_eq!(grown.condition("Ready").unwrap().status, "True");
    let pods = redis_pods(&world, name).await?;
    assert_eq!(pods.len(), 8);
    let mut primaries_with_keys = 0;
    for pod in &pods {
        let (info, nodes) = cluster_view(pod, &password).await?;
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert_eq!(roles(&nodes), (4, 4), "{nodes}");
        let me = nodes
            .lines()
            .find(|l| l.contains("myself"))
            .unwrap_or_default();
        if me.contains("master") && dbsize(pod, &password).await? > 0 {
            primaries_with_keys += 1;
        }
    }
    assert_eq!(
        primaries_with_keys, 4,
        "the new primary took over its share of the keys"
    );

    // A primary's pod deleted under load: its replica takes over (or the
    // pod, back with its nodes.conf and AOF, serves again); the operator
    // brings the cluster back to 4 shards with a replica each.
    let victim = a_primary(&pods, &password).await?;
    let load = Load::start(&grpc);
    tokio::time::sleep(Duration::from_secs(2)).await;
    world
        .api::<Pod>()
        .delete(&victim.name_any(), &DeleteParams::default())
        .await?;
    let old_uid = victim.uid();
    wait_for(
        "the pod back and the cluster whole",
        CLUSTER_TIMEOUT,
        || {
            let (api, pods, victim) = (api.clone(), world.api::<Pod>(), victim.name_any());
            let old_uid = old_uid.clone();
            async move {
                let back = pods.get(&victim).await.ok()?;
                if back.uid() == old_uid || back.status.as_ref()?.pod_ip.is_none() {
                    return None;
                }
                let tp = api.get(name).await.ok()?;
                let c = tp.status.clone()?.redis_cluster?;
                let ready = tp.condition("Ready")?.status == "True";
                (ready
                    && c.shards == 4
                    && c.phase == "Converged"
                    && c.message.contains("1 replica each"))
                .then_some(())
            }
        },
    )
    .await?;
    let restart_acked = load
        .finish(&format!("while {} restarted", victim.name_any()))
        .await?;

    for pod in &redis_pods(&world, name).await? {
        let (info, nodes) = cluster_view(pod, &password).await?;
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert_eq!(roles(&nodes), (4, 4), "{nodes}");
        if pod.name_any() == victim.name_any() {
            let me = nodes.lines().find(|l| l.contains("myself"));
            eprintln!("{} after its restart: {me:?}", victim.name_any());
        }
    }

    // Every acknowledged event stored exactly once.
    let stored: u64 = device_counts(&http).await?.values().sum();
    assert_eq!(
        stored,
        acked + load_acked + restart_acked,
        "acknowledged = stored"
    );

    world.operator.unwrap().stop().await?;
    world.ns.cleanup().await
}

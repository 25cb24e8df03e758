//! Sharded pipelines on a real Redis Cluster (3 primaries of
//! `redis-server --cluster-enabled yes`, formed by [`RedisCluster`]): the
//! same input gives a 3-shard pipeline the same answers, to the bit, as a
//! single Redis; and faults of the cluster — a primary killed mid-load and
//! replaced by its replica, slots moved to a new shard under load — lose
//! and double no acknowledged event.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::Commands;
use telemetry_ingest::partition::{DEFAULT_PARTITIONS, Partitions};
use telemetry_proto::json::Stats;
use telemetry_proto::v1::Packet;
use telemetryctl::cli::SendArgs;
use telemetryctl::send::report::Summary;
use telemetryctl::send::send;
use tokio::task::block_in_place;

use crate::failures::load;
use crate::redis_cluster::RedisCluster;
use crate::support::{Ingest, Redis, pipeline, wait_for};

const CONFIG: &str = r#"
recentEvents: { perDevice: 4 }
windows:
  - { name: all, aggregates: [count, sum, min, max] }
  - { name: purchases, eventType: purchase, aggregates: [count, sum], perHour: true }
leaderboards:
  - { name: spenders, member: userId, score: sum, bucket: day }
  - { name: devices, member: deviceId, score: count, bucket: hour }
  - { name: regions, member: attribute, memberAttribute: region, score: count, bucket: hour }
"#;

const DEVICES: usize = 90;

/// Deterministic calls: 90 devices, 14 users shared across devices (so a
/// leaderboard member has shares in several partitions), values in
/// quarters (exact sums), timestamps over the last 9 minutes, ids mostly
/// unique, some events sent again inside a call (the same event: same
/// device, same id), some calls sent again whole, and some events without
/// an id. Many equal counts, so ties are everywhere.
fn calls(now_ms: i64) -> Vec<Vec<Packet>> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let types = ["view", "purchase", "click"];
    let regions = ["eu", "us", "apac", "sa"];
    let mut calls: Vec<Vec<Packet>> = Vec::new();
    let mut id = 0;
    for _ in 0..40 {
        let mut call: Vec<Packet> = Vec::new();
        for _ in 0..(20 + next(60)) {
            if next(10) == 1 && !call.is_empty() {
                let again = call[call.len() - 1 - next(call.len().min(5) as u64) as usize].clone();
                call.push(again);
                continue;
            }
            id += 1;
            call.push(Packet {
                device_id: format!("dev-{:03}", next(DEVICES as u64)),
                timestamp: now_ms - next(9 * 60_000) as i64,
                payload: format!("{{\"n\":{id}}}").into_bytes(),
                event_type: types[next(3) as usize].into(),
                event_id: if next(10) == 0 {
                    String::new()
                } else {
                    format!("e{id}")
                },
                user_id: if next(4) == 0 {
                    String::new()
                } else {
                    format!("user-{:02}", next(14))
                },
                value: (next(41) as f64 - 20.0) / 4.0,
                attributes: [("region".to_string(), regions[next(4) as usize].to_string())].into(),
            });
        }
        if next(6) == 0 && !calls.is_empty() {
            // A client resending a call whose answer it lost.
            calls.push(calls[calls.len() - 1].clone());
        }
        calls.push(call);
    }
    calls
}

/// Every answer of the query API that holds an aggregate, by path, as JSON.
async fn answers(ingest: &Ingest) -> BTreeMap<String, serde_json::Value> {
    let now_s = telemetry_ingest::intake::now_ms() / 1000;
    let hour = now_s - now_s % 3600;
    let day = now_s - now_s % 86_400;
    let mut paths: Vec<String> = [
        "/api/v1/devices?limit=10000",
        "/api/v1/devices?limit=7",
        "/api/v1/devices?limit=30&sort=device",
        "/api/v1/devices?deviceId=dev-007",
        "/api/v1/counters",
        "/api/v1/counters?types=view,purchase,nothing",
        "/api/v1/windows/all?minutes=15",
        "/api/v1/windows/purchases?minutes=15",
    ]
    .map(String::from)
    .into();
    for (board, bucket) in [("spenders", day), ("devices", hour), ("regions", hour)] {
        for top in [1, 3, 5, 1000] {
            paths.push(format!(
                "/api/v1/leaderboards/{board}?topN={top}&bucket={bucket}"
            ));
        }
    }
    for d in 0..DEVICES {
        paths.push(format!("/api/v1/devices/dev-{d:03}/recent"));
    }
    let mut answers = BTreeMap::new();
    for path in paths {
        let r = reqwest::get(format!("{}{path}", ingest.http_url()))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        answers.insert(path, r.json().await.unwrap());
    }
    let stats: Stats = reqwest::get(format!("{}/api/v1/stats", ingest.http_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answers.insert(
        "stats".into(),
        serde_json::json!([stats.events_total, stats.devices]),
    );
    answers
}

#[tokio::test]
async fn a_three_shard_pipeline_answers_exactly_what_a_single_redis_does() {
    let cluster = RedisCluster::start(3, 0);
    let redis = Redis::start();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), CONFIG).unwrap();
    let flag = format!("--config={}", config.path().display());
    let p = pipeline("shards");
    let single = Ingest::start(&redis.url(), &p, &[&flag]).await;
    let sharded = Ingest::start_cluster(&cluster.seeds(), &p, &[&flag]).await;

    let now_ms = telemetry_ingest::intake::now_ms();
    let mut events = 0;
    for (i, call) in calls(now_ms).into_iter().enumerate() {
        events += call.len();
        let a = single.stream(call.clone()).await;
        let b = sharded.stream(call).await;
        assert_eq!(a, b, "answer to call {i}");
    }
    let want = answers(&single).await;
    let got = answers(&sharded).await;
    for (path, answer) in &want {
        assert_eq!(&got[path], answer, "GET {path}");
    }
    let stored = &want["stats"][0];
    println!("{events} events sent, {stored} stored; every answer identical");

    // The keys really are spread: every shard holds partitions of it.
    let per_shard = cluster.keys_per_primary();
    assert!(per_shard.iter().all(|&(_, keys)| keys > 0), "{per_shard:?}");
    single.stop().await;
    sharded.stop().await;
}

/// The fault tests' config: a leaderboard of users, so that every event
/// also has a share in its user's partition.
const USERS_BOARD: &str =
    "leaderboards: [{ name: users, member: userId, score: count, bucket: day }]";

/// Events stored, per-device totals and `users` leaderboard totals of
/// pipeline `p`, read from every partition straight from the cluster.
fn stored(cluster: &RedisCluster, p: &str) -> (u64, u64, u64) {
    let client = redis::cluster::ClusterClient::new(
        cluster
            .seeds()
            .split(',')
            .map(|s| format!("redis://{s}"))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let mut conn = client.get_connection().unwrap();
    let partitions = Partitions::sharded(p, DEFAULT_PARTITIONS);
    // The day buckets the events of a test can fall in.
    let now = telemetry_ingest::intake::now_ms() / 1000;
    let mut days = vec![now - now % 86_400, (now - 120) - (now - 120) % 86_400];
    days.dedup();
    let (mut events, mut devices, mut users) = (0, 0.0, 0.0);
    let sum = |rows: Vec<(String, f64)>| rows.iter().map(|(_, s)| s).sum::<f64>();
    for i in 0..partitions.count() {
        let tag = partitions.tag(i);
        let e: Option<u64> = conn.hget(format!("tp:{{{tag}}}:stats"), "events").unwrap();
        events += e.unwrap_or(0);
        devices += sum(conn
            .zrange_withscores(format!("tp:{{{tag}}}:devices"), 0, -1)
            .unwrap());
        for day in &days {
            users += sum(conn
                .zrange_withscores(format!("tp:{{{tag}}}:lb:users:{day}"), 0, -1)
                .unwrap());
        }
    }
    (events, devices as u64, users as u64)
}

/// A config file with [`USERS_BOARD`], and its `--config` flag.
fn users_board() -> (tempfile::NamedTempFile, String) {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), USERS_BOARD).unwrap();
    let flag = format!("--config={}", config.path().display());
    (config, flag)
}

/// Load through the fault: 200 devices, retried as telemetryctl does.
fn cluster_load(ingest: &Ingest, n: u64) -> SendArgs {
    SendArgs {
        devices: 200,
        ..load(ingest.grpc_url(), n, 6_000, 30)
    }
}

async fn wait_flowing(cluster: &RedisCluster, p: &str, n: u64) {
    wait_for(
        "the load to be flowing",
        Duration::from_secs(20),
        || async { (stored(cluster, p).0 >= n).then_some(()) },
    )
    .await;
}

/// What the sender saw, for the test's output.
fn outcome(s: &Summary) -> String {
    format!(
        "sent {}, accepted {}, duplicates {}, retries {}, failed {}, slowest call {} ms",
        s.sent, s.accepted, s.duplicates, s.retries, s.failed, s.latency_ms_max
    )
}

/// Every event sent was acknowledged once in the end, and the cluster holds
/// each exactly once.
fn assert_stored_exactly_once(cluster: &RedisCluster, p: &str, summary: &Summary) {
    assert_eq!(
        summary.failed, 0,
        "every call got through in the end: {summary:?}"
    );
    let acknowledged = summary.accepted + summary.duplicates;
    assert_eq!(
        acknowledged, summary.sent,
        "every event sent was acknowledged"
    );
    let (events, devices, users) = stored(cluster, p);
    assert_eq!(events, acknowledged, "stored = acknowledged: {summary:?}");
    assert_eq!(devices, acknowledged, "per-device counts agree");
    assert_eq!(
        users, acknowledged,
        "the users leaderboard (other partitions) agrees"
    );
}

// The cluster's support blocks (std I/O, waits): on a runtime of its own
// threads (block_in_place), the in-process server keeps serving meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_mid_load_loses_and_doubles_no_acknowledged_event() {
    let mut cluster = RedisCluster::start(3, 1);
    let p = pipeline("shard-kill");
    // A flush is acknowledged once its shard's replica holds it too.
    let (_config, flag) = users_board();
    let ingest = Ingest::start_cluster(
        &cluster.seeds(),
        &p,
        &["--redis-wait-replicas=1", flag.as_str()],
    )
    .await;
    let sender = tokio::spawn(send(cluster_load(&ingest, 30_000)));
    wait_flowing(&cluster, &p, 6_000).await;
    let at_kill = stored(&cluster, &p).0;
    let victim = cluster.primaries()[1];
    let promoted = block_in_place(|| {
        cluster.kill(victim);
        let promoted = cluster.wait_failover(victim);
        // Its shard has no replica left to WAIT for until the killed node
        // is back (as a StatefulSet brings it back), as a replica of the new
        // primary.
        cluster.restart(victim);
        promoted
    });
    let summary: Summary = sender.await.unwrap().unwrap();
    println!(
        "primary {victim} kill -9, replica {promoted} promoted, {victim} back as its replica: \
         {at_kill} events stored at the kill; {}",
        outcome(&summary)
    );
    assert!(at_kill < summary.sent, "the kill fell inside the load");
    assert_stored_exactly_once(&cluster, &p, &summary);
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_moved_to_a_new_shard_under_load_lose_and_double_no_event() {
    let mut cluster = RedisCluster::start(3, 0);
    let p = pipeline("shard-move");
    let (_config, flag) = users_board();
    let ingest = Ingest::start_cluster(&cluster.seeds(), &p, &[flag.as_str()]).await;
    // 50 s of load; the slots move within it (3 to 18 s here, depending on
    // what else the machine runs).
    let n = 200_000;
    let sender = tokio::spawn(send(SendArgs {
        rate: 4_000,
        ..cluster_load(&ingest, n)
    }));
    wait_flowing(&cluster, &p, 4_000).await;
    let added = block_in_place(|| cluster.add_primary());
    let started = std::time::Instant::now();
    block_in_place(|| cluster.rebalance());
    let moved_in = started.elapsed();
    let at_end_of_move = stored(&cluster, &p).0;
    let summary: Summary = sender.await.unwrap().unwrap();
    println!(
        "3 → 4 shards under load: slots moved in {moved_in:?}, {at_end_of_move} events stored \
         by then; {}",
        outcome(&summary)
    );
    assert!(at_end_of_move < n, "the whole move happened under load");
    let on_new: u64 = cluster
        .keys_per_primary()
        .iter()
        .filter(|&&(node, _)| node == added)
        .map(|&(_, keys)| keys)
        .sum();
    assert!(on_new > 0, "the new shard holds partitions of the pipeline");
    assert_stored_exactly_once(&cluster, &p, &summary);
    ingest.stop().await;
}

//! The operator's Redis Cluster manager against real `redis-server
//! --cluster-enabled yes` processes: forming, replicas, live resharding with
//! every key kept, finishing an interrupted migration, and a password.

mod support;

use std::collections::BTreeMap;
use std::time::Instant;

use redis::AsyncCommands;
use support::Nodes;
use telemetry_operator::redis_cluster::{Layout, SlotRange, shares};

fn layout(shards: usize, replicas_per_shard: usize) -> Layout {
    Layout {
        shards,
        replicas_per_shard,
    }
}

/// The slots of each node, checked to be 4 096 on each of 4 nodes.
async fn four_equal_shares(nodes: &Nodes) -> BTreeMap<usize, Vec<SlotRange>> {
    let slots = slots_by_node(nodes).await;
    let counts: Vec<usize> = slots
        .values()
        .map(|r| r.iter().map(SlotRange::len).sum())
        .collect();
    assert_eq!(counts, [4096; 4], "{slots:?}");
    slots
}

/// Slots owned by each node (by index), as node 0 sees them, and checks
/// every node says cluster_state:ok.
async fn slots_by_node(nodes: &Nodes) -> BTreeMap<usize, Vec<SlotRange>> {
    let addrs = nodes.addrs();
    for i in 0..addrs.len() {
        assert_eq!(nodes.state(i).await, "ok", "cluster_state of node {i}");
    }
    let view = nodes.view(0).await;
    let index = |addr: &str| {
        addrs
            .iter()
            .position(|a| a == addr)
            .unwrap_or_else(|| panic!("{addr} unknown"))
    };
    let owners = view.nodes.iter().filter(|n| !n.slots.is_empty());
    owners.map(|n| (index(&n.addr), n.slots.clone())).collect()
}

/// Writes `n` keys spread over many slots; returns them with their values.
async fn write_keys(nodes: &Nodes, n: usize) -> Vec<(String, String)> {
    let mut conn = nodes.client().await;
    let keys: Vec<(String, String)> = (0..n)
        .map(|i| (format!("key:{i}"), format!("value-{i}")))
        .collect();
    for (k, v) in &keys {
        let () = conn
            .set(k, v)
            .await
            .expect("SET through the cluster client");
    }
    keys
}

/// Converging never needed a retry: every planned command succeeded.
fn assert_clean(done: &support::Converged) {
    assert!(done.errors.is_empty(), "rounds failed: {:?}", done.errors);
}

async fn assert_keys(nodes: &Nodes, keys: &[(String, String)]) {
    let mut conn = nodes.client().await;
    for (k, v) in keys {
        let got: Option<String> = conn.get(k).await.expect("GET through the cluster client");
        assert_eq!(got.as_deref(), Some(v.as_str()), "{k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_form_from_fresh_nodes_covering_every_slot() {
    let started = Instant::now();
    let nodes = Nodes::start(3, None).await;
    let done = nodes.converge(layout(3, 0)).await;
    let slots = slots_by_node(&nodes).await;
    let expected: BTreeMap<usize, Vec<SlotRange>> = shares(3)
        .into_iter()
        .enumerate()
        .map(|(i, r)| (i, vec![r]))
        .collect();
    assert_eq!(slots, expected);
    assert_eq!(
        done.last.health.message,
        "3 of 3 shards serving 16384 slots, no replicas"
    );
    assert!(done.last.health.serving());
    assert_clean(&done);
    eprintln!(
        "formed: {}; test took {:?}",
        done.summary(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_attach_one_per_shard() {
    let started = Instant::now();
    let nodes = Nodes::start(6, None).await;
    let done = nodes.converge(layout(3, 1)).await;
    assert_eq!(
        slots_by_node(&nodes)
            .await
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let view = nodes.view(0).await;
    for p in 0..3 {
        let id = &nodes.view(p).await.myself().unwrap().id.clone();
        let replicas = view
            .nodes
            .iter()
            .filter(|n| n.primary.as_ref() == Some(id))
            .count();
        assert_eq!(replicas, 1, "replicas of node {p}");
    }
    assert_eq!(
        done.last.health.message,
        "3 of 3 shards serving 16384 slots, 1 replica each"
    );
    assert_clean(&done);
    eprintln!(
        "formed with replicas: {}; test took {:?}",
        done.summary(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_to_four_shards_moves_slots_and_keeps_every_key() {
    let started = Instant::now();
    let mut nodes = Nodes::start(3, None).await;
    nodes.converge(layout(3, 0)).await;
    let keys = write_keys(&nodes, 2000).await;
    nodes.add().await;
    let done = nodes.converge(layout(4, 0)).await;
    assert_keys(&nodes, &keys).await;
    let slots = four_equal_shares(&nodes).await;
    assert!(
        slots.values().all(|r| r.len() == 1),
        "contiguous shares: {slots:?}"
    );
    let mut total = 0;
    for p in 0..4 {
        let n: usize = redis::cmd("DBSIZE")
            .query_async(&mut nodes.conn(p).await)
            .await
            .unwrap();
        assert!(n > 0, "node {p} holds no key");
        total += n;
    }
    assert_eq!(total, 2000);
    assert_clean(&done);
    eprintln!(
        "grew to four shards: {}; test took {:?}",
        done.summary(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_migration_is_finished() {
    let started = Instant::now();
    let nodes = Nodes::start(3, None).await;
    nodes.converge(layout(3, 0)).await;
    // 40 keys in one slot, and 200 elsewhere.
    let mut keys: Vec<(String, String)> = (0..40)
        .map(|i| (format!("{{open}}:{i}"), format!("v{i}")))
        .collect();
    keys.extend(write_keys(&nodes, 200).await);
    let mut client = nodes.client().await;
    for (k, v) in &keys[..40] {
        let () = client.set(k, v).await.unwrap();
    }
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg("{open}")
        .query_async(&mut client)
        .await
        .unwrap();
    let owner = shares(3)
        .iter()
        .position(|r| r.slots().any(|s| s == slot))
        .unwrap();
    let target = (owner + 1) % 3;
    let (from_id, to_id) = (
        nodes.view(owner).await.myself().unwrap().id.clone(),
        nodes.view(target).await.myself().unwrap().id.clone(),
    );
    let (mut from, mut to) = (nodes.conn(owner).await, nodes.conn(target).await);
    let setslot = |state: &str, id: &str| {
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(state)
            .arg(id)
            .clone()
    };
    setslot("IMPORTING", &from_id)
        .exec_async(&mut to)
        .await
        .unwrap();
    setslot("MIGRATING", &to_id)
        .exec_async(&mut from)
        .await
        .unwrap();
    // Half the keys move, then the migration stops.
    let port = nodes.addrs()[target]
        .rsplit_once(':')
        .unwrap()
        .1
        .to_string();
    let half: Vec<&String> = keys[..20].iter().map(|(k, _)| k).collect();
    let mut migrate = redis::cmd("MIGRATE");
    migrate
        .arg("127.0.0.1")
        .arg(&port)
        .arg("")
        .arg(0)
        .arg(5000)
        .arg("KEYS")
        .arg(half);
    migrate.exec_async(&mut from).await.unwrap();
    let moved: usize = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query_async(&mut to)
        .await
        .unwrap();
    assert_eq!(moved, 20);

    let done = nodes.converge(layout(3, 0)).await;
    assert_eq!(done.last.health.open_slots, 0);
    for i in 0..3 {
        let me = nodes.view(i).await.myself().unwrap().clone();
        assert!(
            me.migrating.is_empty() && me.importing.is_empty(),
            "node {i}: {me:?}"
        );
    }
    let slots = slots_by_node(&nodes).await;
    let expected: BTreeMap<usize, Vec<SlotRange>> = shares(3)
        .into_iter()
        .enumerate()
        .map(|(i, r)| (i, vec![r]))
        .collect();
    assert_eq!(slots, expected, "back to equal shares");
    assert_keys(&nodes, &keys).await;
    assert_clean(&done);
    eprintln!(
        "closed slot {slot} (node {owner} -> {target}): {}; test took {:?}",
        done.summary(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_protected_cluster_forms_and_moves_slots() {
    let started = Instant::now();
    let mut nodes = Nodes::start(3, Some("s3cret-pw")).await;
    let formed = nodes.converge(layout(3, 0)).await;
    let keys = write_keys(&nodes, 300).await;
    nodes.add().await;
    let grown = nodes.converge(layout(4, 0)).await;
    assert_keys(&nodes, &keys).await;
    four_equal_shares(&nodes).await;
    assert_clean(&formed);
    assert_clean(&grown);
    eprintln!(
        "formed: {}; grew: {}; test took {:?}",
        formed.summary(),
        grown.summary(),
        started.elapsed()
    );
}

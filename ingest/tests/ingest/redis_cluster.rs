//! A local Redis Cluster of real `redis-server --cluster-enabled yes`
//! processes, formed with direct CLUSTER commands (no `redis-cli`), and tests
//! of the support itself: formation, failover after SIGKILL, and live slot
//! migration while a client writes.

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::Commands;
use redis::cluster::{ClusterClient, ClusterConnection};

use crate::support::free_port;

/// Number of hash slots of a Redis Cluster.
const SLOTS: usize = 16384;
/// `cluster-node-timeout` of every node: short, so that failover takes a few seconds.
const NODE_TIMEOUT_MS: u64 = 1000;
/// How long formation, failover, rejoin and rebalance may take.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// A local Redis Cluster of real `redis-server --cluster-enabled yes` processes.
///
/// Nodes are numbered in creation order: `start(p, r)` makes nodes `0..p` the
/// primaries (primary `i` owning the `i`-th of `p` equal contiguous slot
/// ranges) and nodes `p + i * r .. p + (i + 1) * r` the replicas of primary `i`.
/// Each node has its own temporary data directory (`nodes.conf`, AOF) and port;
/// every child still running is killed on drop.
pub struct RedisCluster {
    nodes: Vec<Node>,
    /// Extra redis-server arguments of every node (with `--masterauth` added
    /// when `--requirepass` is given).
    extra: Vec<String>,
    /// The `--requirepass` password, used for every command the support sends.
    password: Option<String>,
}

struct Node {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The node ID (`CLUSTER MYID`); kept across restarts by `nodes.conf`.
    id: String,
    /// The slots it owned and the replicas it had when it was last killed.
    killed_as: Option<(Ranges, Vec<usize>)>,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug)]
struct NodeLine {
    id: String,
    port: u16,
    flags: Vec<String>,
    master: Option<String>,
    connected: bool,
    slots: Ranges,
}

impl NodeLine {
    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// What one node believes about every live node, by port: primary or not,
/// the port of its primary, and its slot ranges.
type View = BTreeMap<u16, (bool, Option<u16>, Ranges)>;

/// Inclusive slot ranges.
type Ranges = Vec<(u16, u16)>;

impl RedisCluster {
    /// `primaries` primaries (each with `replicas` replicas), formed and covering all 16384
    /// slots in equal contiguous ranges (as `redis-cli --cluster create` assigns them),
    /// waited for until every node reports cluster_state:ok and agrees on the slot map.
    pub fn start(primaries: usize, replicas: usize) -> RedisCluster {
        RedisCluster::start_with(primaries, replicas, &[])
    }

    /// Same with extra redis-server arguments for every node, e.g.
    /// `["--appendonly", "yes", "--appendfsync", "always"]` or `["--requirepass", "pw"]`
    /// (with a password, `--masterauth` is set too so that replicas can sync,
    /// and every command of the support authenticates).
    pub fn start_with(primaries: usize, replicas: usize, extra: &[&str]) -> RedisCluster {
        assert!(primaries >= 1, "a cluster needs at least one primary");
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let password = extra
            .iter()
            .position(|a| a == "--requirepass")
            .and_then(|i| extra.get(i + 1).cloned());
        if let Some(pw) = &password
            && !extra.iter().any(|a| a == "--masterauth")
        {
            extra.extend(["--masterauth".to_string(), pw.clone()]);
        }
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            extra,
            password,
        };
        for _ in 0..primaries * (1 + replicas) {
            cluster.spawn_new_node();
        }
        for (i, (a, b)) in even_ranges(primaries).into_iter().enumerate() {
            cluster.run::<()>(i, &format!("CLUSTER ADDSLOTSRANGE {a} {b}"));
        }
        // Distinct config epochs up front (as redis-cli does), so that nodes
        // need not resolve epoch collisions after meeting.
        for i in 0..cluster.nodes.len() {
            cluster.run::<()>(i, &format!("CLUSTER SET-CONFIG-EPOCH {}", i + 1));
        }
        for i in 1..cluster.nodes.len() {
            cluster.meet(i);
        }
        cluster.wait("every node to know every other node", || {
            (0..cluster.nodes.len()).try_for_each(|i| cluster.view(i).map(drop))
        });
        for replica in primaries..cluster.nodes.len() {
            let id = &cluster.nodes[(replica - primaries) / replicas].id;
            cluster.run::<()>(replica, &format!("CLUSTER REPLICATE {id}"));
        }
        cluster.wait("the cluster to be formed", || cluster.settled());
        cluster
    }

    /// Seed list "127.0.0.1:p1,127.0.0.1:p2,..." of the live nodes.
    pub fn seeds(&self) -> String {
        let seed = |i: usize| format!("127.0.0.1:{}", self.nodes[i].port);
        let seeds: Vec<String> = self.live().into_iter().map(seed).collect();
        seeds.join(",")
    }

    /// A cluster client seeded with the live nodes (and the password, if any).
    pub fn client(&self) -> ClusterClient {
        let seeds = self.seeds();
        let urls = seeds.split(',').map(|s| format!("redis://{s}"));
        let mut builder = ClusterClient::builder(urls.collect::<Vec<_>>());
        if let Some(pw) = &self.password {
            builder = builder.password(pw.clone());
        }
        builder.build().expect("cluster client from the seed list")
    }

    /// A plain connection to one node (authenticated when a password is set).
    pub fn conn(&self, node: usize) -> redis::Connection {
        let conn = self.connect(node);
        conn.unwrap_or_else(|e| panic!("connecting to node {node}: {e}"))
    }

    /// Node indices that are primaries now (as CLUSTER NODES says), and which primary owns a slot.
    pub fn primaries(&self) -> Vec<usize> {
        let lines = self.lines();
        let primary = |l: &&NodeLine| l.has("master") && !l.has("fail");
        let live = |&i: &usize| self.nodes[i].child.is_some();
        let primaries = lines.iter().filter(primary);
        let nodes = primaries.filter_map(|l| self.index_of(l.port));
        let mut primaries: Vec<usize> = nodes.filter(live).collect();
        primaries.sort_unstable();
        primaries
    }

    /// The primary that owns `slot` now.
    pub fn slot_owner(&self, slot: u16) -> usize {
        self.slot_owners()[slot as usize]
    }

    /// Number of slots each primary owns, by node index.
    pub fn slots_per_primary(&self) -> Vec<(usize, usize)> {
        let owners = self.slot_owners();
        let count = |p: usize| owners.iter().filter(|&&o| o == p).count();
        let primaries = self.primaries().into_iter();
        primaries.map(|p| (p, count(p))).collect()
    }

    /// SIGKILL a node (child process by PID); restart it on the same port and data dir
    /// (it rejoins with its nodes.conf).
    pub fn kill(&mut self, node: usize) {
        let lines = self.lines_of(node).unwrap_or_else(|e| panic!("{e}"));
        let me = lines.iter().find(|l| l.has("myself"));
        let slots = me.map(|l| l.slots.clone()).unwrap_or_default();
        let id = &self.nodes[node].id;
        let replicas = lines.iter().filter(|l| l.master.as_ref() == Some(id));
        let replicas = replicas.filter_map(|l| self.index_of(l.port)).collect();
        self.nodes[node].killed_as = Some((slots, replicas));
        let mut child = self.nodes[node].child.take().expect("node is running");
        child.kill().expect("SIGKILL redis-server");
        child.wait().expect("reap the killed redis-server");
    }

    /// Starts a killed node again on its port and data directory and waits
    /// until the cluster has settled with it (a former primary comes back as
    /// a replica of whoever took over its slots).
    pub fn restart(&mut self, node: usize) {
        assert!(self.nodes[node].child.is_none(), "node {node} is running");
        let n = &self.nodes[node];
        let child = spawn_node(n.port, n.dir.path(), &self.extra, self.password.as_deref())
            .unwrap_or_else(|e| panic!("restarting node {node}: {e}"));
        self.nodes[node].child = Some(child);
        let what = format!("node {node} to rejoin the cluster");
        self.wait(&what, || self.settled());
    }

    /// Waits until a replica of the killed primary has taken over (cluster_state:ok on the
    /// live nodes, all slots covered); returns the new primary's index.
    /// Failure detection needs a majority of primaries alive, so the cluster
    /// needs at least three primaries for this to happen.
    pub fn wait_failover(&self, killed: usize) -> usize {
        let killed_as = self.nodes[killed].killed_as.clone();
        let (slots, replicas) = killed_as.expect("wait_failover needs a node stopped by kill()");
        let first = slots.first().map(|&(a, _)| a);
        let first = first.expect("the killed node was a primary with slots");
        self.wait(&format!("a replica of node {killed} to take over"), || {
            self.settled()?;
            let owners = self.slot_owners();
            let new = owners[first as usize];
            let owned = |&(a, b): &(u16, u16)| (a..=b).all(|s| owners[s as usize] == new);
            let all = slots.iter().all(owned);
            if new == killed || !all {
                return Err(format!("slot {first} is owned by node {new}"));
            }
            assert!(
                replicas.contains(&new),
                "node {new} took over the slots of node {killed}, whose replicas were {replicas:?}"
            );
            Ok(new)
        })
    }

    /// Starts one more empty node and joins it as a primary with no slots.
    pub fn add_primary(&mut self) -> usize {
        let node = self.spawn_new_node();
        self.meet(node);
        self.wait(&format!("new node {node} to join"), || self.settled());
        node
    }

    /// Live slot migration, as `redis-cli --cluster reshard` does it, while clients keep
    /// writing: for each slot, CLUSTER SETSLOT IMPORTING on the target, MIGRATING on the
    /// source, MIGRATE of its keys in batches (CLUSTER GETKEYSINSLOT; MIGRATE ... KEYS ...,
    /// with AUTH when a password is set), then CLUSTER SETSLOT <slot> NODE <target>
    /// on the target, the source and every other primary.
    pub fn move_slots(&self, from: usize, to: usize, slots: impl IntoIterator<Item = u16>) {
        let (from_id, to_id) = (&self.nodes[from].id, &self.nodes[to].id);
        let mut nodes = vec![to, from];
        nodes.extend(
            self.primaries()
                .into_iter()
                .filter(|&p| p != to && p != from),
        );
        // Connections to the target, the source, then the other primaries.
        let mut conns: Vec<_> = nodes.iter().map(|&i| self.conn(i)).collect();
        for slot in slots {
            // Runs a command on nodes[k]; the keys it returns, if any.
            let mut on = |k: usize, cmd: &redis::Cmd| -> Vec<Vec<u8>> {
                let r = cmd
                    .query::<redis::Value>(&mut conns[k])
                    .and_then(|v| match v {
                        redis::Value::Array(_) => Ok(redis::from_redis_value(v)?),
                        _ => Ok(Vec::new()),
                    });
                let node = nodes[k];
                r.unwrap_or_else(|e| panic!("moving slot {slot} to node {to}: {e} on node {node}"))
            };
            let setslot = |state: &str| cmd(&format!("CLUSTER SETSLOT {slot} {state}"));
            on(0, &setslot(&format!("IMPORTING {from_id}")));
            on(1, &setslot(&format!("MIGRATING {to_id}")));
            loop {
                let keys = on(1, &cmd(&format!("CLUSTER GETKEYSINSLOT {slot} 100")));
                if keys.is_empty() {
                    break;
                }
                // An empty key and KEYS: the whole batch in one MIGRATE.
                let mut migrate = redis::cmd("MIGRATE");
                migrate.arg(("127.0.0.1", self.nodes[to].port, "", 0, 5000));
                if let Some(pw) = &self.password {
                    migrate.arg("AUTH").arg(pw);
                }
                on(1, migrate.arg("KEYS").arg(&keys));
            }
            for k in 0..nodes.len() {
                on(k, &setslot(&format!("NODE {to_id}")));
            }
        }
    }

    /// Moves slots so that every primary owns an equal contiguous share (what
    /// `redis-cli --cluster rebalance` would converge to), using move_slots.
    /// The shares go to primaries in the order that keeps the most slots where
    /// they are; returns once the cluster has settled.
    pub fn rebalance(&self) {
        let primaries = self.primaries();
        let owners = self.slot_owners();
        let ranges = even_ranges(primaries.len());
        let overlap: Vec<Vec<usize>> = primaries
            .iter()
            .map(|&p| {
                let owned = |&(a, b): &(u16, u16)| (a..=b).filter(|&s| owners[s as usize] == p);
                ranges.iter().map(|r| owned(r).count()).collect()
            })
            .collect();
        let order = best_assignment(&overlap);
        let mut moves: BTreeMap<(usize, usize), Vec<u16>> = BTreeMap::new();
        for (r, &(a, b)) in ranges.iter().enumerate() {
            let to = primaries[order[r]];
            for slot in a..=b {
                let from = owners[slot as usize];
                if from != to {
                    moves.entry((from, to)).or_default().push(slot);
                }
            }
        }
        for ((from, to), slots) in moves {
            self.move_slots(from, to, slots);
        }
        self.wait("the cluster to settle after rebalancing", || self.settled());
    }

    /// Keys (DBSIZE) on each primary, by node index.
    pub fn keys_per_primary(&self) -> Vec<(usize, u64)> {
        let primaries = self.primaries().into_iter();
        primaries.map(|p| (p, self.run(p, "DBSIZE"))).collect()
    }

    /// Total Redis CPU (used_cpu_sys + used_cpu_user from INFO cpu) per primary, for benchmarks.
    pub fn cpu_seconds_per_primary(&self) -> Vec<(usize, f64)> {
        let cpu = |p: usize| {
            let info: String = self.run(p, "INFO cpu");
            let field = |name| {
                let v = info_field(&info, name).unwrap_or_else(|| panic!("{name} in INFO cpu"));
                v.parse::<f64>().expect("INFO cpu seconds are numbers")
            };
            field("used_cpu_sys") + field("used_cpu_user")
        };
        self.primaries().into_iter().map(|p| (p, cpu(p))).collect()
    }

    /// Starts a node on a fresh port pair (retrying on collisions) and returns its index.
    fn spawn_new_node(&mut self) -> usize {
        let mut last = String::new();
        for _ in 0..20 {
            let port = cluster_port();
            // Not the port of a killed node (kept for its restart) nor a bus port.
            if self
                .nodes
                .iter()
                .any(|n| [0, 10000].contains(&n.port.abs_diff(port)))
            {
                continue;
            }
            let dir = tempfile::tempdir().expect("temporary directory for a cluster node");
            match spawn_node(port, dir.path(), &self.extra, self.password.as_deref()) {
                Ok(child) => {
                    let (child, id, killed_as) = (Some(child), String::new(), None);
                    let i = self.nodes.len();
                    self.nodes.push(Node {
                        port,
                        dir,
                        child,
                        id,
                        killed_as,
                    });
                    self.nodes[i].id = self.run(i, "CLUSTER MYID");
                    return i;
                }
                Err(e) => last = e,
            }
        }
        panic!("could not start a cluster node on a free port pair; last: {last}");
    }

    /// CLUSTER MEET `node` from the first other live node.
    fn meet(&self, node: usize) {
        let from = self.live().into_iter().find(|&i| i != node);
        let from = from.expect("another live node");
        let port = self.nodes[node].port;
        self.run::<()>(from, &format!("CLUSTER MEET 127.0.0.1 {port}"));
    }

    fn live(&self) -> Vec<usize> {
        let live = |&i: &usize| self.nodes[i].child.is_some();
        (0..self.nodes.len()).filter(live).collect()
    }

    fn index_of(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.port == port)
    }

    fn connect(&self, node: usize) -> redis::RedisResult<redis::Connection> {
        connect(self.nodes[node].port, self.password.as_deref())
    }

    /// Runs the command `words` on one node; an error names both.
    fn try_run<T: redis::FromRedisValue>(&self, node: usize, words: &str) -> Result<T, String> {
        let r = self
            .connect(node)
            .and_then(|mut c| cmd(words).query(&mut c));
        r.map_err(|e| format!("{words} on node {node}: {e}"))
    }

    /// [`RedisCluster::try_run`] that panics on errors.
    fn run<T: redis::FromRedisValue>(&self, node: usize, words: &str) -> T {
        self.try_run(node, words).unwrap_or_else(|e| panic!("{e}"))
    }

    /// CLUSTER NODES of one node, parsed.
    fn lines_of(&self, node: usize) -> Result<Vec<NodeLine>, String> {
        let text: String = self.try_run(node, "CLUSTER NODES")?;
        Ok(text.lines().filter_map(parse_node_line).collect())
    }

    /// CLUSTER NODES of the first live node.
    fn lines(&self) -> Vec<NodeLine> {
        let first = *self.live().first().expect("a live node");
        self.lines_of(first).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The owner (node index) of every slot, as the first live node sees it.
    fn slot_owners(&self) -> Vec<usize> {
        let mut owners = vec![usize::MAX; SLOTS];
        for l in self.lines().iter().filter(|l| !l.slots.is_empty()) {
            let i = self
                .index_of(l.port)
                .expect("slots on a node of this cluster");
            for &(a, b) in &l.slots {
                owners[a as usize..=b as usize].fill(i);
            }
        }
        if let Some(s) = owners.iter().position(|&o| o == usize::MAX) {
            panic!("slot {s} has no owner");
        }
        owners
    }

    /// What `node` believes about every live node; an error while it does
    /// not yet know one of them or sees one in handshake, failing or disconnected.
    fn view(&self, node: usize) -> Result<View, String> {
        let lines = self.lines_of(node)?;
        let port_of: HashMap<&str, u16> = lines.iter().map(|l| (l.id.as_str(), l.port)).collect();
        let mut view = View::new();
        for j in self.live() {
            let (port, id) = (self.nodes[j].port, &self.nodes[j].id);
            let l = lines.iter().find(|l| l.port == port && &l.id == id);
            let l = l.ok_or_else(|| format!("node {node} does not know node {j} yet"))?;
            let bad = ["handshake", "noaddr", "fail", "fail?"];
            if !l.connected || bad.iter().any(|f| l.has(f)) {
                return Err(format!("node {node} sees node {j} as {l:?}"));
            }
            let master = l.master.as_deref().and_then(|m| port_of.get(m).copied());
            view.insert(port, (l.has("master"), master, l.slots.clone()));
        }
        Ok(view)
    }

    /// Ok once every live node says cluster_state:ok, all agree on the roles
    /// and slots of the live nodes, live primaries cover every slot, and every
    /// live replica's link to its primary is up; else what is not so yet.
    fn settled(&self) -> Result<(), String> {
        let mut agreed: Option<(usize, View)> = None;
        for i in self.live() {
            let cluster: String = self.try_run(i, "CLUSTER INFO")?;
            if info_field(&cluster, "cluster_state") != Some("ok") {
                return Err(format!("node {i}: {}", cluster.replace("\r\n", " ")));
            }
            let view = self.view(i)?;
            let (primary, _, _) = view[&self.nodes[i].port];
            let replication: String = self.try_run(i, "INFO replication")?;
            if !primary && info_field(&replication, "master_link_status") != Some("up") {
                return Err(format!("replica {i}: {}", replication.replace("\r\n", " ")));
            }
            match &agreed {
                None => agreed = Some((i, view)),
                Some((j, v)) if *v != view => {
                    return Err(format!("node {i} sees {view:?}, node {j} sees {v:?}"));
                }
                Some(_) => {}
            }
        }
        let (_, view) = agreed.ok_or("no live node")?;
        let ranges = view.values().flat_map(|(_, _, s)| s);
        let covered: usize = ranges.map(|&(a, b)| (b - a) as usize + 1).sum();
        if covered != SLOTS {
            return Err(format!("live primaries cover {covered} slots: {view:?}"));
        }
        Ok(())
    }

    /// Polls `check` every 50 ms until it is Ok; panics after [`SETTLE_LIMIT`]
    /// naming `what` and the last thing `check` saw.
    fn wait<T>(&self, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
        let start = Instant::now();
        loop {
            match check() {
                Ok(v) => return v,
                Err(last) if start.elapsed() > SETTLE_LIMIT => {
                    panic!("timed out after {SETTLE_LIMIT:?} waiting for {what}; last seen: {last}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A port p < 55535 with p and its cluster bus port p + 10000 both free
/// (both bound, then released); retries until it finds one.
fn cluster_port() -> u16 {
    for _ in 0..1000 {
        let port = free_port();
        if port < 55535 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair (p, p + 10000) on 127.0.0.1");
}

/// Starts a cluster-enabled redis-server on `port` with data in `dir`, and
/// waits until that very process answers (its pid in INFO server), so that
/// another server already on the port does not pass for it. An error when the
/// process exits (e.g. the port was taken) or does not answer in 10 s.
fn spawn_node(
    port: u16,
    dir: &std::path::Path,
    extra: &[String],
    password: Option<&str>,
) -> Result<Child, String> {
    let redis_server = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    // Any replica may take over however long it was cut off (validity factor
    // 0), and replicas sync at once rather than after a 5 s batching delay.
    let args = format!(
        "--port {port} --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file nodes.conf \
         --cluster-node-timeout {NODE_TIMEOUT_MS} --cluster-replica-validity-factor 0 \
         --repl-diskless-sync-delay 0"
    );
    let mut child = Command::new(redis_server)
        .args(args.split_whitespace())
        .args(["--save", ""])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (make test installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis-server on port {port} exited: {status}"));
        }
        let info: redis::RedisResult<String> =
            connect(port, password).and_then(|mut c| cmd("INFO server").query(&mut c));
        if let Ok(info) = info
            && info_field(&info, "process_id") == Some(child.id().to_string().as_str())
        {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no answer from port {port} in 10 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A connection to 127.0.0.1:`port`, sending AUTH first when there is a password.
fn connect(port: u16, password: Option<&str>) -> redis::RedisResult<redis::Connection> {
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))?.get_connection()?;
    if let Some(pw) = password {
        redis::cmd("AUTH").arg(pw).exec(&mut conn)?;
    }
    Ok(conn)
}

/// A command from its space-separated words.
fn cmd(words: &str) -> redis::Cmd {
    let mut cmd = redis::Cmd::new();
    for word in words.split_whitespace() {
        cmd.arg(word);
    }
    cmd
}

/// The value of `name` in INFO-style `name:value` lines.
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// `n` contiguous slot ranges covering all slots, as `redis-cli --cluster
/// create` assigns them (0-5460, 5461-10922, 10923-16383 for three).
fn even_ranges(n: usize) -> Ranges {
    let per_node = SLOTS as f64 / n as f64;
    let mut first = 0;
    (0..n)
        .map(|i| {
            let last = if i == n - 1 {
                SLOTS - 1
            } else {
                ((i as f64 + 1.0) * per_node - 1.0).round() as usize
            };
            let range = (first as u16, last.max(first) as u16);
            first = last.max(first) + 1;
            range
        })
        .collect()
}

/// The assignment of ranges to primaries that keeps the most slots in
/// place: `order[r]` is the row of `overlap` (slots of range `r` a primary
/// already owns) that gets range `r` (dynamic programming over subsets).
fn best_assignment(overlap: &[Vec<usize>]) -> Vec<usize> {
    let k = overlap.len();
    if k > 16 {
        return (0..k).collect();
    }
    // best[mask]: (kept slots, last primary) for ranges 0..popcount(mask)
    // given to the primaries in mask.
    let mut best: Vec<Option<(usize, usize)>> = vec![None; 1 << k];
    best[0] = Some((0, usize::MAX));
    for mask in 0..1usize << k {
        let Some((kept, _)) = best[mask] else {
            continue;
        };
        let r = mask.count_ones() as usize;
        for p in (0..k).filter(|p| mask & (1 << p) == 0) {
            let next = &mut best[mask | (1 << p)];
            let score = kept + overlap[p][r];
            if next.is_none_or(|(b, _)| score > b) {
                *next = Some((score, p));
            }
        }
    }
    let mut order = vec![0; k];
    let mut mask = (1usize << k) - 1;
    for r in (0..k).rev() {
        let (_, p) = best[mask].expect("every subset is reachable");
        order[r] = p;
        mask &= !(1 << p);
    }
    order
}

/// One line of CLUSTER NODES: `<id> <ip:port@cport[,host]> <flags> <master>
/// <ping> <pong> <epoch> <link> <slot>...`; slots in migration (`[...]`) are skipped.
fn parse_node_line(line: &str) -> Option<NodeLine> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let addr = f.get(1)?.split(['@', ',']).next()?;
    let slots = f.get(8..).unwrap_or_default().iter();
    let slots = slots.filter(|s| !s.starts_with('['));
    let slots = slots.filter_map(|s| match s.split_once('-') {
        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
        None => s.parse().ok().map(|a| (a, a)),
    });
    Some(NodeLine {
        id: f[0].to_string(),
        port: addr.rsplit(':').next()?.parse().ok()?,
        flags: f.get(2)?.split(',').map(str::to_string).collect(),
        master: f.get(3).filter(|m| **m != "-").map(|m| m.to_string()),
        connected: *f.get(7)? == "connected",
        slots: slots.collect(),
    })
}

/// The hash slot of `key`, as the cluster computes it.
fn keyslot(conn: &mut ClusterConnection, key: &str) -> u16 {
    let slot = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(conn);
    slot.expect("CLUSTER KEYSLOT")
}

/// A connection through a new cluster client.
fn cluster_conn(cluster: &RedisCluster) -> ClusterConnection {
    let client = cluster.client();
    client.get_connection().expect("cluster connection")
}

#[test]
fn redis_cluster_forms_three_primaries_covering_every_slot() {
    let started = Instant::now();
    let cluster = RedisCluster::start(3, 0);
    let info: String = cluster.run(0, "CLUSTER INFO");
    assert_eq!(info_field(&info, "cluster_state"), Some("ok"), "{info}");
    let assigned = info_field(&info, "cluster_slots_assigned");
    assert_eq!(assigned, Some("16384"), "{info}");
    assert_eq!(cluster.primaries(), vec![0, 1, 2]);
    let shares = cluster.slots_per_primary();
    assert_eq!(shares, vec![(0, 5461), (1, 5462), (2, 5461)]);
    assert_eq!((cluster.slot_owner(0), cluster.slot_owner(16383)), (0, 2));

    let mut conn = cluster_conn(&cluster);
    let mut owners = Vec::new();
    for i in 0..30 {
        let (key, value) = (format!("key:{i}"), format!("value-{i}"));
        let () = conn
            .set(&key, &value)
            .expect("SET through the cluster client");
        let back: String = conn.get(&key).expect("GET through the cluster client");
        assert_eq!(back, value);
        // The owner answers itself rather than redirecting.
        let owner = cluster.slot_owner(keyslot(&mut conn, &key));
        let direct: Option<String> = cluster.conn(owner).get(&key).expect("GET on the owner");
        assert_eq!(direct, Some(value), "{key} on node {owner}");
        owners.push(owner);
    }
    let keys: u64 = cluster.keys_per_primary().iter().map(|(_, n)| n).sum();
    assert_eq!(keys, 30);
    let everywhere = (0..3).all(|p| owners.contains(&p));
    assert!(everywhere, "keys landed on {owners:?}");
    eprintln!("formed and checked in {:?}", started.elapsed());
}

#[test]
fn redis_cluster_promotes_a_replica_when_a_primary_is_killed() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start(3, 1);
    assert_eq!(cluster.primaries(), vec![0, 1, 2]);
    let mut conn = cluster_conn(&cluster);
    let keys: Vec<String> = (0..300).map(|i| format!("item:{i}")).collect();
    for key in &keys {
        let () = conn.set(key, key.to_uppercase()).expect("SET");
    }
    // WAIT goes to every primary over the connections that wrote; the
    // client answers with the smallest count of acknowledging replicas.
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(10_000)
        .query(&mut conn)
        .expect("WAIT");
    assert_eq!(acked, 1, "every replica has the writes of its primary");

    let victim = cluster.slot_owner(keyslot(&mut conn, &keys[0]));
    drop(conn);
    cluster.kill(victim);
    let killed_at = Instant::now();
    let promoted = cluster.wait_failover(victim);
    let took = killed_at.elapsed();
    eprintln!("node {promoted} took over from node {victim} in {took:?}");
    // The replica of primary p is node 3 + p.
    assert_eq!(promoted, 3 + victim);
    let mut conn = cluster_conn(&cluster);
    assert_eq!(cluster.slot_owner(keyslot(&mut conn, &keys[0])), promoted);
    for key in &keys {
        let v: Option<String> = conn.get(key).expect("GET after failover");
        assert_eq!(v, Some(key.to_uppercase()), "{key} after failover");
    }

    let restarted_at = Instant::now();
    cluster.restart(victim);
    eprintln!("node {victim} rejoined in {:?}", restarted_at.elapsed());
    let mut primaries = vec![0, 1, 2];
    primaries[victim] = promoted;
    primaries.sort_unstable();
    let again = "the killed node comes back as a replica";
    assert_eq!(cluster.primaries(), primaries, "{again}");
    eprintln!("test took {:?}", started.elapsed());
}

#[test]
fn redis_cluster_moves_slots_while_a_client_writes() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start(3, 0);
    let new = cluster.add_primary();
    let shares = vec![(0, 5461), (1, 5462), (2, 5461), (new, 0)];
    assert_eq!(cluster.slots_per_primary(), shares);

    // INCRs on 200 keys until told to stop; the client follows MOVED and
    // ASK and retries TRYAGAIN itself. Returns the errors it saw.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writer = {
        let (mut conn, stop, done) = (cluster_conn(&cluster), stop.clone(), done.clone());
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            for i in 0.. {
                if stop.load(Ordering::Relaxed) || errors.len() >= 1000 {
                    break;
                }
                match conn.incr::<_, _, i64>(format!("counter:{}", i % 200), 1) {
                    Ok(_) => drop(done.fetch_add(1, Ordering::Relaxed)),
                    Err(e) => errors.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            errors
        })
    };
    let wait_for_incrs = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while done.load(Ordering::Relaxed) < n {
            assert!(!writer.is_finished(), "the writer stopped early");
            assert!(Instant::now() < deadline, "timed out waiting for {n} INCRs");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for_incrs(600);
    let (before, rebalance_started) = (done.load(Ordering::Relaxed), Instant::now());
    cluster.rebalance();
    let rebalance_took = rebalance_started.elapsed();
    let during = done.load(Ordering::Relaxed) - before;
    wait_for_incrs(before + during + 400);
    stop.store(true, Ordering::Relaxed);
    let errors = writer.join().expect("writer thread");
    let ok = done.load(Ordering::Relaxed);

    let shares = cluster.slots_per_primary();
    assert!(shares.iter().all(|&(_, n)| n == SLOTS / 4), "{shares:?}");
    let mut conn = cluster_conn(&cluster);
    let mut sum = 0;
    for i in 0..200 {
        let counter: Option<u64> = conn.get(format!("counter:{i}")).expect("GET");
        sum += counter.unwrap_or(0);
    }
    let first_error = errors.first();
    assert_eq!(sum, ok, "counters vs successful INCRs ({first_error:?})");
    assert!(during > 0, "no INCR succeeded while slots moved");
    let (asks, moved) = (errorstat(&cluster, "ASK"), errorstat(&cluster, "MOVED"));
    assert!(asks + moved > 0, "the writer was never redirected");
    let keys = cluster.keys_per_primary();
    assert_eq!(keys.iter().map(|(_, n)| n).sum::<u64>(), 200, "{keys:?}");
    assert!(keys[3].1 > 0, "no key moved to the new primary: {keys:?}");
    eprintln!(
        "rebalance took {rebalance_took:?} with {during} INCRs during it; {ok} INCRs, {} errors, \
         {asks} ASK and {moved} MOVED replies, keys {keys:?}, cpu {:?}; test took {:?}",
        errors.len(),
        cluster.cpu_seconds_per_primary(),
        started.elapsed()
    );
}

/// How many `kind` error replies (ASK, MOVED, ...) the primaries have sent
/// (`errorstat_<kind>:count=` of INFO errorstats).
fn errorstat(cluster: &RedisCluster, kind: &str) -> u64 {
    let count = |p: usize| {
        let info: String = cluster.run(p, "INFO errorstats");
        let field = info_field(&info, &format!("errorstat_{kind}"));
        let count = field.and_then(|v| v.strip_prefix("count=")?.split(',').next()?.parse().ok());
        count.unwrap_or(0)
    };
    cluster.primaries().into_iter().map(count).sum()
}

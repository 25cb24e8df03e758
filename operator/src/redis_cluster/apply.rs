//! The I/O of a round: observe every pod, plan, execute the steps with
//! direct CLUSTER commands.
//!
//! Slots move as `redis-cli --cluster reshard` moves them: `SETSLOT
//! IMPORTING` on the target, `MIGRATING` on the source, the keys in batches
//! (`GETKEYSINSLOT` + `MIGRATE ... KEYS`), then `SETSLOT NODE` on the target
//! first (so that the slot's ownership is never lost between the two), the
//! source, and every other primary — each phase for a whole range of slots
//! in one pipeline per node. Clients keep working throughout: the source
//! answers with ASK for keys already moved.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use redis::aio::MultiplexedConnection;

use super::health::{self, Health};
use super::nodes;
use super::plan::{self, Plan, Pod, Seen, Step};
use super::{Layout, SlotRange};
use crate::{Error, Result};

/// How long observing one pod may take (connect, and each reply).
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command of a step may take; a `MIGRATE` of a batch of
/// large keys needs more than a probe.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// Keys per `MIGRATE`.
const MIGRATE_BATCH: usize = 100;
/// `MIGRATE`'s own timeout for the transfer to the target, in milliseconds.
const MIGRATE_TIMEOUT_MS: u64 = 10_000;

/// What one round did, and how the cluster stood before it.
#[derive(Clone, Debug)]
pub struct Progress {
    /// The plan of this round; its steps, if any, were all executed.
    pub plan: Plan,
    /// The health observed at the start of the round.
    pub health: Health,
}

impl Progress {
    /// Nothing was left to do: the reconciler may stop requeueing soon.
    pub fn converged(&self) -> bool {
        self.plan == Plan::Converged
    }
}

/// One round: observes `pods` (`host:port`, in ordinal order), plans towards
/// `layout`, and executes that round's steps, in order, stopping at the
/// first that fails. Unreachable pods are not errors (they show in the
/// plan and the health); a command that fails is.
pub async fn converge_once(
    pods: &[String],
    layout: Layout,
    password: Option<&str>,
) -> Result<Progress> {
    let observed = observe(pods, password).await;
    let health = health::summarize(layout, &observed);
    let plan = plan::plan(layout, &observed);
    if let Plan::Steps(steps) = &plan {
        let mut conns = Conns {
            pods: &observed,
            password,
            open: HashMap::new(),
        };
        for step in steps {
            tracing::info!(%step, "redis cluster");
            conns.execute(step).await?;
        }
    }
    Ok(Progress { plan, health })
}

/// `CLUSTER NODES` and `CLUSTER INFO` of every pod, concurrently.
pub async fn observe(pods: &[String], password: Option<&str>) -> Vec<Pod> {
    let observed = pods.iter().map(|addr| async move {
        let seen = observe_one(addr, password).await;
        Pod {
            addr: addr.clone(),
            seen,
        }
    });
    join_all(observed).await
}

async fn observe_one(addr: &str, password: Option<&str>) -> Result<Seen, String> {
    let mut conn = connect(addr, password, OBSERVE_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let text: String = cluster(&["NODES"])
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let info: String = cluster(&["INFO"])
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let view = nodes::parse(&text).map_err(|e| e.to_string())?;
    let state = info.lines().find_map(|l| l.strip_prefix("cluster_state:"));
    Ok(Seen {
        view,
        state: state.unwrap_or("unknown").trim().to_string(),
    })
}

/// A connection to `addr`, authenticated when there is a password.
async fn connect(
    addr: &str,
    password: Option<&str>,
    timeout: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    if let Some(pw) = password {
        redis::cmd("AUTH").arg(pw).exec_async(&mut conn).await?;
    }
    Ok(conn)
}

/// `CLUSTER <args>`.
fn cluster(args: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg(args);
    cmd
}

/// The connections of one round's steps, opened on first use.
struct Conns<'a> {
    pods: &'a [Pod],
    password: Option<&'a str>,
    open: HashMap<usize, MultiplexedConnection>,
}

impl Conns<'_> {
    async fn execute(&mut self, step: &Step) -> Result<()> {
        match step {
            Step::Meet { node, peer } => {
                let (ip, port) = self.resolve(*peer).await?;
                self.run(*node, cluster(&["MEET", &ip, &port]), "CLUSTER MEET")
                    .await
            }
            Step::AssignSlots { node, ranges } => {
                let mut cmd = cluster(&["ADDSLOTSRANGE"]);
                for r in ranges {
                    cmd.arg(r.first).arg(r.last);
                }
                self.run(*node, cmd, "CLUSTER ADDSLOTSRANGE").await
            }
            Step::Replicate { node, primary } => {
                let id = self.id(*primary).to_string();
                self.run(*node, cluster(&["REPLICATE", &id]), "CLUSTER REPLICATE")
                    .await
            }
            Step::CloseSlot { slot, from, to } => self.move_slot(*slot, *from, *to, true).await,
            Step::MoveSlots { from, to, slots } => {
                let slots: Vec<u16> = SlotRange::slots(slots).collect();
                self.move_slots(&slots, *from, *to).await
            }
        }
    }

    /// Moves `slot`'s keys from `from` to `to`, then gives it to `to`.
    /// Closing an open slot tolerates the half-done states an interruption
    /// leaves: the target already owning the slot, the source no longer.
    async fn move_slot(&mut self, slot: u16, from: usize, to: usize, closing: bool) -> Result<()> {
        let (from_id, to_id) = (self.id(from).to_string(), self.id(to).to_string());
        let s = slot.to_string();
        let importing = cluster(&["SETSLOT", &s, "IMPORTING", &from_id]);
        self.run_tolerating(
            to,
            importing,
            "CLUSTER SETSLOT IMPORTING",
            closing.then_some("already the owner"),
        )
        .await?;
        let migrating = cluster(&["SETSLOT", &s, "MIGRATING", &to_id]);
        self.run_tolerating(
            from,
            migrating,
            "CLUSTER SETSLOT MIGRATING",
            closing.then_some("not the owner"),
        )
        .await?;
        let (ip, port) = self.target_addr(from, to).await?;
        self.migrate_keys(slot, from, &ip, &port).await?;
        let node = cluster(&["SETSLOT", &s, "NODE", &to_id]);
        self.run(to, node.clone(), "CLUSTER SETSLOT NODE").await?;
        self.run(from, node.clone(), "CLUSTER SETSLOT NODE").await?;
        for other in self
            .primaries()
            .into_iter()
            .filter(|&p| p != from && p != to)
        {
            self.run(other, node.clone(), "CLUSTER SETSLOT NODE")
                .await?;
        }
        Ok(())
    }

    /// Moves every key of `slot` from `from` to the node at `ip:port`, in
    /// batches of [`MIGRATE_BATCH`].
    async fn migrate_keys(&mut self, slot: u16, from: usize, ip: &str, port: &str) -> Result<()> {
        let s = slot.to_string();
        loop {
            let batch = MIGRATE_BATCH.to_string();
            let keys: Vec<Vec<u8>> = self
                .query(
                    from,
                    cluster(&["GETKEYSINSLOT", &s, &batch]),
                    "CLUSTER GETKEYSINSLOT",
                )
                .await?;
            if keys.is_empty() {
                break;
            }
            // An empty key and KEYS: the whole batch in one MIGRATE. REPLACE:
            // a key still on the source is the current one (a MIGRATE cut
            // short may have left a copy on the target).
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg(ip)
                .arg(port)
                .arg("")
                .arg(0)
                .arg(MIGRATE_TIMEOUT_MS)
                .arg("REPLACE");
            if let Some(pw) = self.password {
                migrate.arg("AUTH").arg(pw);
            }
            migrate.arg("KEYS").arg(keys);
            let _: redis::Value = self.query(from, migrate, "MIGRATE").await?;
        }
        Ok(())
    }

    /// Moves `slots` from `from` to `to` as [`Conns::move_slot`] moves one,
    /// each phase for all of them at once (one pipeline per node): every
    /// slot goes through the same states in the same order, in a handful of
    /// round trips instead of several per slot. Slots without keys (most)
    /// skip the key transfer.
    async fn move_slots(&mut self, slots: &[u16], from: usize, to: usize) -> Result<()> {
        let (from_id, to_id) = (self.id(from).to_string(), self.id(to).to_string());
        let setslot = |state: &[&str]| {
            slots
                .iter()
                .map(|slot| {
                    let s = slot.to_string();
                    let mut args = vec!["SETSLOT", s.as_str()];
                    args.extend_from_slice(state);
                    cluster(&args)
                })
                .collect::<Vec<_>>()
        };
        let importing = setslot(&["IMPORTING", &from_id]);
        self.pipeline(to, importing, "CLUSTER SETSLOT IMPORTING")
            .await?;
        let migrating = setslot(&["MIGRATING", &to_id]);
        self.pipeline(from, migrating, "CLUSTER SETSLOT MIGRATING")
            .await?;
        let counts = slots
            .iter()
            .map(|slot| cluster(&["COUNTKEYSINSLOT", &slot.to_string()]))
            .collect();
        let counts = self
            .pipeline(from, counts, "CLUSTER COUNTKEYSINSLOT")
            .await?;
        let (ip, port) = self.target_addr(from, to).await?;
        for (&slot, count) in slots.iter().zip(counts) {
            if !matches!(count, redis::Value::Int(0)) {
                self.migrate_keys(slot, from, &ip, &port).await?;
            }
        }
        let mut owners = vec![to, from];
        owners.extend(
            self.primaries()
                .into_iter()
                .filter(|&p| p != from && p != to),
        );
        for node in owners {
            let owned = setslot(&["NODE", &to_id]);
            self.pipeline(node, owned, "CLUSTER SETSLOT NODE").await?;
        }
        Ok(())
    }

    /// `cmds` in one pipeline on `pod`; their replies, or the first error.
    async fn pipeline(
        &mut self,
        pod: usize,
        cmds: Vec<redis::Cmd>,
        action: &'static str,
    ) -> Result<Vec<redis::Value>> {
        let mut pipe = redis::pipe();
        for cmd in cmds {
            pipe.add_command(cmd);
        }
        let failed = self.failed(pod, action);
        let conn = self.conn(pod).await?;
        pipe.query_async(conn).await.map_err(failed)
    }

    /// The error of `action` failing on `pod`.
    fn failed(
        &self,
        pod: usize,
        action: &'static str,
    ) -> impl FnOnce(redis::RedisError) -> Error + use<> {
        let node = self.pods[pod].addr.clone();
        move |source| Error::RedisCluster {
            node,
            action,
            source,
        }
    }

    /// Reachable pods that are primaries by their own account.
    fn primaries(&self) -> Vec<usize> {
        let me = |p: &Pod| {
            p.seen
                .as_ref()
                .ok()
                .and_then(|s| s.view.myself())
                .is_some_and(|n| n.flags.master)
        };
        (0..self.pods.len())
            .filter(|&p| me(&self.pods[p]))
            .collect()
    }

    /// The node ID of a reachable pod.
    fn id(&self, pod: usize) -> &str {
        let seen = self.pods[pod]
            .seen
            .as_ref()
            .expect("steps name reachable pods");
        &seen
            .view
            .myself()
            .expect("a parsed view has its own line")
            .id
    }

    /// Where `from` reaches `to`: the address `from`'s cluster view has for
    /// it, else the resolved address of the pod.
    async fn target_addr(&self, from: usize, to: usize) -> Result<(String, String)> {
        let seen = self.pods[from]
            .seen
            .as_ref()
            .expect("steps name reachable pods");
        let known = seen.view.node(self.id(to)).map(|n| n.addr.as_str());
        match known
            .and_then(|a| a.rsplit_once(':'))
            .filter(|(ip, _)| !ip.is_empty())
        {
            Some((ip, port)) => Ok((ip.to_string(), port.to_string())),
            None => self.resolve(to).await,
        }
    }

    /// The pod's address with its host resolved: `CLUSTER MEET` takes an IP.
    async fn resolve(&self, pod: usize) -> Result<(String, String)> {
        let addr = &self.pods[pod].addr;
        let found = tokio::net::lookup_host(addr.as_str()).await;
        let fail = |detail: String| Error::RedisClusterAddress {
            addr: addr.clone(),
            detail,
        };
        let found = found.map_err(|e| fail(e.to_string()))?.next();
        let found = found.ok_or_else(|| fail("no address".into()))?;
        Ok((found.ip().to_string(), found.port().to_string()))
    }

    async fn conn(&mut self, pod: usize) -> Result<&mut MultiplexedConnection> {
        if !self.open.contains_key(&pod) {
            let addr = &self.pods[pod].addr;
            let conn = connect(addr, self.password, STEP_TIMEOUT).await;
            let conn = conn.map_err(|source| Error::RedisCluster {
                node: addr.clone(),
                action: "connect",
                source,
            })?;
            self.open.insert(pod, conn);
        }
        Ok(self.open.get_mut(&pod).expect("just opened"))
    }

    async fn query<T: redis::FromRedisValue>(
        &mut self,
        pod: usize,
        cmd: redis::Cmd,
        action: &'static str,
    ) -> Result<T> {
        let failed = self.failed(pod, action);
        let conn = self.conn(pod).await?;
        cmd.query_async(conn).await.map_err(failed)
    }

    async fn run(&mut self, pod: usize, cmd: redis::Cmd, action: &'static str) -> Result<()> {
        self.query::<redis::Value>(pod, cmd, action).await.map(drop)
    }

    /// [`Conns::run`], where an error reply containing `tolerated` counts
    /// as done.
    async fn run_tolerating(
        &mut self,
        pod: usize,
        cmd: redis::Cmd,
        action: &'static str,
        tolerated: Option<&str>,
    ) -> Result<()> {
        match self.run(pod, cmd, action).await {
            Err(Error::RedisCluster { source, .. })
                if tolerated.is_some_and(|t| source.to_string().contains(t)) =>
            {
                Ok(())
            }
            other => other,
        }
    }
}

//! Redis: the connections, the health probe, and the atomic flush.
//!
//! Writes and reads use separate multiplexed connections, so a burst of
//! flushes does not queue the query API behind it. Both reconnect on their
//! own ([`conn`]: a `ConnectionManager` to one Redis, or a cluster
//! connection following the slot map of a Redis Cluster); a command that hit a dropped
//! connection fails without telling whether it ran, which is why every flush
//! is idempotent: the Lua script in `store/flush.lua` checks a per-flush
//! marker before it writes anything, and a retry reuses the same marker.
//!
//! This file does the I/O; what it sends and reads is decided by pure code:
//! - [`script`]: the flush's `EVALSHA` arguments (the layout of
//!   `flush.lua`'s header) and the parser of its reply;
//! - [`refresh`]: when a recent-events list has its TTL set again;
//! - [`tls`]: the certificates a `rediss://` connection trusts.

pub mod conn;
pub mod refresh;
pub mod script;
pub mod tls;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::io::tcp::TcpSettings;
use redis::{ErrorKind, IntoConnectionInfo, ServerErrorKind};

use crate::aggregate::Plan;
use crate::config::RedisArgs;
use crate::keys::Keys;
use crate::partition::Partitions;
use crate::{Error, Result};

use conn::Cluster;
pub use conn::Conn;
use refresh::RefreshLog;
pub use script::Applied;
use script::ScriptReply;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a flush waits for its replicas (`--redis-wait-replicas`)
/// before the attempt counts as failed and is retried.
const WAIT_TIMEOUT: Duration = Duration::from_millis(500);

/// The pipeline's Redis: one server, or the shards of a Redis Cluster.
#[derive(Clone)]
pub struct Store {
    writer: Conn,
    reader: Conn,
    partitions: Arc<Partitions>,
    /// The keys of each partition.
    keys: Arc<[Keys]>,
    sha: Arc<str>,
    /// Replicas that must hold a flush before it counts as stored.
    wait_replicas: u32,
    /// When this pod last set each recent-events list's TTL.
    refreshed: Arc<Mutex<RefreshLog>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.keys[0].prefix())
            .field("partitions", &self.keys.len())
            .finish()
    }
}

impl Store {
    /// Prepares the connections; they are made lazily, so the server starts
    /// (not ready) while Redis is still down.
    pub fn open(args: &RedisArgs, pipeline: &str) -> Result<Store> {
        // rustls (for `rediss://`) uses the process-wide crypto provider; ring
        // is the one the workspace builds, set here so that a second provider
        // brought in by another crate cannot make that choice ambiguous.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (writer, reader, partitions) = if args.is_cluster() {
            let (writer, reader) = cluster_connections(args)?;
            (
                writer,
                reader,
                Partitions::sharded(pipeline, args.redis_partitions),
            )
        } else {
            let (writer, reader) = single_connections(args)?;
            (writer, reader, Partitions::single(pipeline))
        };
        let keys = (0..partitions.count())
            .map(|p| Keys::with_tag(partitions.tag(p)))
            .collect();
        Ok(Store {
            writer,
            reader,
            partitions: Arc::new(partitions),
            keys,
            sha: redis::Script::new(script::SOURCE).get_hash().into(),
            wait_replicas: args.redis_wait_replicas,
            refreshed: Default::default(),
        })
    }

    /// The keys of every partition, by partition.
    pub fn all_keys(&self) -> &[Keys] {
        &self.keys
    }

    /// The keys of partition `p`.
    pub fn partition_keys(&self, p: usize) -> &Keys {
        &self.keys[p]
    }

    pub fn partitions(&self) -> &Partitions {
        &self.partitions
    }

    /// A connection for queries.
    pub fn reader(&self) -> Conn {
        self.reader.clone()
    }

    /// A flush or a query gave up waiting for Redis: on a cluster, the slot
    /// map may be stale (see [`conn`]).
    pub fn timed_out(&self) {
        self.writer.timed_out();
        self.reader.timed_out();
    }

    /// Whether the pipeline is on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.writer, Conn::Cluster(_))
    }

    /// Whether Redis takes writes: `PING` on a single Redis; on a cluster,
    /// `CLUSTER INFO` of any node saying `cluster_state:ok` (every slot
    /// served by a reachable primary).
    pub async fn ping(&self) -> Result<()> {
        match self.writer.clone() {
            mut conn @ Conn::Single(_) => {
                let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            }
            Conn::Cluster(cluster) => {
                use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
                let info = cluster
                    .connection()
                    .route_command(
                        redis::cmd("CLUSTER").arg("INFO").clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                    )
                    .await
                    .inspect_err(|_| cluster.failed())?;
                let info: String = redis::from_redis_value(info)
                    .map_err(|e| Error::UnexpectedReply(format!("CLUSTER INFO: {e}")))?;
                if !info.lines().any(|l| l.trim() == "cluster_state:ok") {
                    let state = info
                        .lines()
                        .find(|l| l.starts_with("cluster_state:"))
                        .unwrap_or("no cluster_state");
                    return Err(Error::Unavailable(format!(
                        "redis cluster: {}",
                        state.trim()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Applies a flush of partition `p` once; returns the claims of the
    /// plan (as numbered in [`crate::aggregate::Slot::Claimed`]) that were
    /// duplicates, and how long the script ran. Replaying the same
    /// `batch_id` returns the first result (without a run time) and writes
    /// nothing.
    ///
    /// The script refuses (writing nothing) a flush in which some ids are
    /// already claimed and names them; the flush is then sent again without
    /// those events. Each round trip is atomic on its own, so a pod dying
    /// between them loses nothing.
    pub async fn apply(&self, batch_id: &str, p: usize, plan: &Plan) -> Result<Applied> {
        let marker = self.keys[p].batch(batch_id);
        let mut duplicates: HashSet<u32> = plan.repeated_claims().iter().copied().collect();
        // On a cluster every key the script touches is declared, so that a
        // slot being migrated answers TRYAGAIN (retried) rather than letting
        // the script write half its keys on either side of the move.
        let declare = matches!(self.writer, Conn::Cluster(_));
        loop {
            let writes = plan.writes(&duplicates);
            let now = Instant::now();
            let refresh = self
                .refreshed
                .lock()
                .expect("not poisoned")
                .due(&writes.lists, now);
            let call = |head: script::Head| {
                script::command(head, &marker, declare, &writes, &refresh, &duplicates)
            };
            let reply = self.eval(call).await?;
            match script::parse_reply(&reply, &writes)? {
                ScriptReply::Applied(applied) => {
                    self.refreshed.lock().expect("not poisoned").record(
                        &writes.lists,
                        &refresh,
                        now,
                    );
                    return Ok(applied);
                }
                ScriptReply::Claimed(claims) => duplicates.extend(claims),
            }
        }
    }

    /// `EVALSHA`, or `EVAL` of the source when the Redis (or the shard)
    /// does not know the script yet, which also caches it there; followed,
    /// on the same connection to the same node, by `WAIT` for the replicas
    /// asked for.
    async fn eval(&self, call: impl Fn(script::Head) -> redis::Cmd) -> Result<String> {
        match self.eval_and_wait(call(script::Head::Sha(&self.sha))).await {
            Err(Error::Redis(e)) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.eval_and_wait(call(script::Head::Source)).await
            }
            other => other,
        }
    }

    async fn eval_and_wait(&self, cmd: redis::Cmd) -> Result<String> {
        let mut conn = self.writer.clone();
        if self.wait_replicas == 0 {
            return Ok(cmd.query_async(&mut conn).await?);
        }
        // One pipeline: routed (on a cluster) to the node of the script's
        // keys, so WAIT covers the script's writes.
        let (reply, replicas): (String, u32) = redis::pipe()
            .add_command(cmd)
            .cmd("WAIT")
            .arg(self.wait_replicas)
            .arg(WAIT_TIMEOUT.as_millis() as u64)
            .query_async(&mut conn)
            .await?;
        if replicas < self.wait_replicas {
            return Err(Error::Unavailable(format!(
                "flush held by {replicas} of the {} replicas asked for \
                 (--redis-wait-replicas) after {WAIT_TIMEOUT:?}",
                self.wait_replicas
            )));
        }
        Ok(reply)
    }
}

/// The write and read connections to a single Redis.
fn single_connections(args: &RedisArgs) -> Result<(Conn, Conn)> {
    // TCP_NODELAY, as Redis sets on its side (redis-rs does not by
    // default): a flush is one large command, and Nagle's algorithm may
    // hold its last segment until the ones before it are acknowledged.
    let mut info = args
        .redis_url
        .as_str()
        .into_connection_info()?
        .set_tcp_settings(TcpSettings::default().set_nodelay(true));
    let mut settings = info.redis_settings().clone();
    if let Some(password) = &args.redis_password {
        settings = settings.set_password(password);
    }
    if let Some(username) = &args.redis_username {
        settings = settings.set_username(username);
    }
    info = info.set_redis_settings(settings);
    let client = match tls::roots(&info, args.redis_ca_file.as_deref())? {
        Some(root_cert) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            },
        )?,
        None => redis::Client::open(info)?,
    };
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200));
    Ok((
        Conn::Single(ConnectionManager::new_lazy_with_config(
            client.clone(),
            config.clone(),
        )?),
        Conn::Single(ConnectionManager::new_lazy_with_config(client, config)?),
    ))
}

/// The write and read connections to a Redis Cluster, made in the
/// background from the seed nodes.
fn cluster_connections(args: &RedisArgs) -> Result<(Conn, Conn)> {
    if let Some(ca) = &args.redis_ca_file {
        return Err(Error::Setting(format!(
            "--redis-ca-file {}: TLS to a Redis Cluster is not supported; \
             use --redis-url for a TLS Redis, or a cluster without TLS",
            ca.display()
        )));
    }
    let nodes = args
        .redis_cluster_nodes
        .iter()
        .map(|n| format!("redis://{n}"));
    // Redirections (MOVED, ASK) and TRYAGAIN during a slot migration are
    // retried here a few times, quickly; the flusher retries the rest
    // within `--flush-timeout-ms`.
    let mut builder = ClusterClientBuilder::new(nodes)
        .retries(4)
        .min_retry_wait(10)
        .max_retry_wait(200)
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .tcp_settings(TcpSettings::default().set_nodelay(true));
    if let Some(password) = &args.redis_password {
        builder = builder.password(password);
    }
    if let Some(username) = &args.redis_username {
        builder = builder.username(username);
    }
    let client = builder.build()?;
    let config = ClusterConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT);
    Ok((
        Conn::Cluster(Arc::new(Cluster::new(client.clone(), config.clone()))),
        Conn::Cluster(Arc::new(Cluster::new(client, config))),
    ))
}

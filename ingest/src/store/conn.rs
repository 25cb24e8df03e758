//! One connection type for both deployments of Redis: a single server
//! (redis-rs `ConnectionManager`, reconnecting on its own) or a Redis
//! Cluster (redis-rs `ClusterConnection`: a connection per shard, MOVED and
//! ASK followed). Commands and single-slot pipelines go through either
//! unchanged.
//!
//! redis-rs learns a new slot map from MOVED replies only: after a primary
//! dies and its replica takes over, commands for its slots keep going to
//! the dead address. So a cluster connection that fails for want of a
//! node ([`Cluster::failed`]) is replaced, at most once a second, by a new
//! one, which reads the slot map afresh from the seed nodes.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::FutureExt;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

/// The shortest time between two replacements of a cluster connection.
const RECONNECT_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// A connection to the pipeline's Redis; cheap to clone (multiplexed).
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(Arc<Cluster>),
}

/// A Redis Cluster connection, replaced when the topology it knows is stale.
pub struct Cluster {
    client: ClusterClient,
    config: ClusterConfig,
    current: RwLock<ClusterConnection>,
    replaced: Mutex<Instant>,
}

impl Cluster {
    /// A connection made in the background from the client's seed nodes.
    pub fn new(client: ClusterClient, config: ClusterConfig) -> Cluster {
        let current = client.get_pending_async_connection_with_config(config.clone());
        Cluster {
            client,
            config,
            current: RwLock::new(current),
            replaced: Mutex::new(Instant::now()),
        }
    }

    /// The connection in use.
    pub fn connection(&self) -> ClusterConnection {
        self.current.read().expect("not poisoned").clone()
    }

    /// A command failed or timed out for want of a node (dead, or no longer
    /// serving the slot): reads the slot map afresh, unless that was done
    /// within the last second.
    pub fn failed(&self) {
        let mut replaced = self.replaced.lock().expect("not poisoned");
        if replaced.elapsed() < RECONNECT_AT_MOST_EVERY {
            return;
        }
        *replaced = Instant::now();
        let fresh = self
            .client
            .get_pending_async_connection_with_config(self.config.clone());
        *self.current.write().expect("not poisoned") = fresh;
        tracing::info!("redis cluster: reconnecting to read the slot map again");
    }

    fn check<T>(&self, result: Result<T, RedisError>) -> Result<T, RedisError> {
        if let Err(e) = &result
            && crate::error::is_connection_error(e)
        {
            self.failed();
        }
        result
    }
}

impl Conn {
    /// Tells a cluster connection that a command timed out (the command's
    /// own error never came back).
    pub fn timed_out(&self) {
        if let Conn::Cluster(c) = self {
            c.failed();
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => {
                let cluster = c.clone();
                async move {
                    let mut conn = cluster.connection();
                    cluster.check(conn.req_packed_command(cmd).await)
                }
                .boxed()
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => {
                let cluster = c.clone();
                async move {
                    let mut conn = cluster.connection();
                    cluster.check(conn.req_packed_commands(pipeline, offset, count).await)
                }
                .boxed()
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(_) => 0,
        }
    }
}

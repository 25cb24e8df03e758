//! Readiness: Redis reachable and not draining. Answered by `/readyz` and by
//! grpc.health.v1, and checked by every ingest call before it takes work.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::Store;
use crate::{Error, Result};

/// How often Redis is pinged while nothing else talks to it.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct Health {
    redis_up: AtomicBool,
    draining: AtomicBool,
    metrics: Metrics,
}

impl Health {
    pub fn new(metrics: Metrics) -> Arc<Health> {
        Arc::new(Health {
            redis_up: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            metrics,
        })
    }

    pub fn ready(&self) -> bool {
        self.redis_up() && !self.draining()
    }

    pub fn redis_up(&self) -> bool {
        self.redis_up.load(Ordering::Relaxed)
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_redis_up(&self, up: bool) {
        if self.redis_up.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!("redis reachable");
            } else {
                tracing::warn!("redis unreachable");
            }
        }
        self.metrics.redis_up.set(up as i64);
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.metrics.draining.set(1);
    }

    /// Whether a new ingest call may start: fails fast while draining or
    /// while Redis is unreachable, so clients retry elsewhere or later.
    pub fn admit(&self) -> Result<()> {
        if self.draining() {
            return Err(Error::ShuttingDown);
        }
        if !self.redis_up() {
            return Err(Error::Unavailable("redis is unreachable".into()));
        }
        Ok(())
    }
}

/// Pings Redis every [`PROBE_INTERVAL`] until `shutdown`.
pub async fn probe(health: Arc<Health>, store: Store, shutdown: CancellationToken) {
    loop {
        let up = tokio::time::timeout(PROBE_INTERVAL, store.ping()).await;
        health.set_redis_up(matches!(up, Ok(Ok(()))));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
}

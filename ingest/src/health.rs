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
/// How often Redis is pinged while it is unreachable: calls are refused
/// until a ping succeeds, so this bounds how long serving takes to resume
/// once Redis is back (well within a second, reconnecting included).
pub const PROBE_INTERVAL_DOWN: Duration = Duration::from_millis(100);

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

/// Pings Redis every [`PROBE_INTERVAL`], or every [`PROBE_INTERVAL_DOWN`]
/// while it is unreachable, until `shutdown`.
pub async fn probe(health: Arc<Health>, store: Store, shutdown: CancellationToken) {
    // The reason of the last failed ping, logged when it changes (not every
    // 100 ms): a refused TLS certificate or login is told apart from a
    // Redis that is down.
    let mut last_error = None;
    loop {
        let error = match tokio::time::timeout(PROBE_INTERVAL, store.ping()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => {
                store.timed_out();
                Some(format!("no PONG within {PROBE_INTERVAL:?}"))
            }
        };
        let up = error.is_none();
        if let Some(e) = &error
            && last_error.as_ref() != Some(e)
        {
            tracing::warn!(error = %e, "redis ping failed");
        }
        last_error = error;
        health.set_redis_up(up);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause_after(up)) => {}
        }
    }
}

/// The pause before the next ping, after one that found Redis `up` or not.
fn pause_after(up: bool) -> Duration {
    if up {
        PROBE_INTERVAL
    } else {
        PROBE_INTERVAL_DOWN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_redis_is_pinged_often_enough_to_resume_within_a_second() {
        assert_eq!(pause_after(true), PROBE_INTERVAL);
        // A failed ping, the pause, and the ping that finds Redis back
        // (bounded by its own timeout) fit in a second.
        assert!(pause_after(false) + PROBE_INTERVAL < Duration::from_secs(1));
    }
}

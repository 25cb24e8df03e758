//! Redis: the connections, the health probe, and the atomic flush.
//!
//! Writes and reads use separate multiplexed connections, so a burst of
//! flushes does not queue the query API behind it. Both reconnect on their
//! own (redis-rs `ConnectionManager`); a command that hit a dropped
//! connection fails without telling whether it ran, which is why every flush
//! is idempotent: the Lua script in `store/flush.lua` checks a per-flush
//! marker before it writes anything, and a retry reuses the same marker.

use std::collections::HashSet;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, Script};

use crate::aggregate::{Amount, Expiry, Plan};
use crate::config::RedisArgs;
use crate::keys::Keys;
use crate::{Error, Result};

/// How long a flush marker outlives its flush: far longer than any retry.
pub const MARKER_TTL_SECONDS: u64 = 120;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The pipeline's Redis.
#[derive(Clone)]
pub struct Store {
    writer: ConnectionManager,
    reader: ConnectionManager,
    keys: Keys,
    script: Script,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.keys.prefix())
            .finish()
    }
}

impl Store {
    /// Prepares the connections; they are made lazily, so the server starts
    /// (not ready) while Redis is still down.
    pub fn open(args: &RedisArgs, keys: Keys) -> Result<Store> {
        let mut info = args.redis_url.as_str().into_connection_info()?;
        if let Some(password) = &args.redis_password {
            let settings = info.redis_settings().clone().set_password(password.clone());
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        Ok(Store {
            writer: ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?,
            reader: ConnectionManager::new_lazy_with_config(client, config)?,
            keys,
            script: Script::new(include_str!("store/flush.lua")),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A connection for queries.
    pub fn reader(&self) -> ConnectionManager {
        self.reader.clone()
    }

    /// `PING` on the write connection.
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.writer.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// Applies a flush once; returns the indices of the plan's entries whose
    /// ids were already claimed (duplicates). Replaying the same `batch_id`
    /// returns the first result and writes nothing.
    pub async fn apply(&self, batch_id: &str, plan: &Plan) -> Result<HashSet<u32>> {
        let mut invocation = self.script.key(self.keys.batch(batch_id));
        invocation.arg(MARKER_TTL_SECONDS);
        invocation.arg(plan.ops.len());
        for (kind, key, field) in &plan.ops {
            invocation.arg(kind.code()).arg(key).arg(field);
        }
        invocation.arg(plan.unconditional.len());
        for (op, x) in &plan.unconditional {
            invocation.arg(op + 1).arg(format_num(*x));
        }
        invocation.arg(plan.entries.len());
        for entry in &plan.entries {
            match &entry.claim {
                Some((key, id)) => invocation.arg(key).arg(id),
                None => invocation.arg("").arg(""),
            };
            invocation.arg(entry.refs.len());
            for (op, amount) in &entry.refs {
                invocation.arg(op + 1);
                match amount {
                    Amount::Num(x) => invocation.arg(format_num(*x)),
                    Amount::Text(s) => invocation.arg(s),
                };
            }
        }
        invocation.arg(plan.expires.len());
        for (key, expiry) in &plan.expires {
            match expiry {
                Expiry::At(t) => invocation.arg(key).arg("at").arg(t),
                Expiry::In(s) => invocation.arg(key).arg("in").arg(s),
            };
        }
        invocation.arg(plan.trims.len());
        for (key, keep) in &plan.trims {
            invocation.arg(key).arg(keep);
        }
        let mut conn = self.writer.clone();
        let result: String = invocation.invoke_async(&mut conn).await?;
        parse_result(&result)
    }
}

/// Numbers as Lua's `tonumber` reads them back exactly (shortest round trip).
fn format_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x:e}")
    }
}

fn parse_result(result: &str) -> Result<HashSet<u32>> {
    let list = result
        .strip_prefix("ok:")
        .ok_or_else(|| Error::Unavailable(format!("unexpected flush result {result:?}")))?;
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .map_err(|_| Error::Unavailable(format!("unexpected flush result {result:?}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_survive_the_trip_through_text() {
        for x in [0.0, 1.0, -3.0, 2.5, 0.1, 1e300, 123456789.123, -0.000001] {
            assert_eq!(
                format_num(x).parse::<f64>().unwrap(),
                x,
                "{}",
                format_num(x)
            );
        }
        assert_eq!(format_num(42.0), "42");
    }

    #[test]
    fn flush_result_lists_duplicate_entries() {
        assert!(parse_result("ok:").unwrap().is_empty());
        assert_eq!(parse_result("ok:0,7").unwrap(), HashSet::from([0, 7]));
        assert!(parse_result("garbage").is_err());
    }
}

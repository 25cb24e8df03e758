//! Redis: the connections, the health probe, and the atomic flush.
//!
//! Writes and reads use separate multiplexed connections, so a burst of
//! flushes does not queue the query API behind it. Both reconnect on their
//! own (redis-rs `ConnectionManager`); a command that hit a dropped
//! connection fails without telling whether it ran, which is why every flush
//! is idempotent: the Lua script in `store/flush.lua` checks a per-flush
//! marker before it writes anything, and a retry reuses the same marker.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use redis::{ErrorKind, IntoConnectionInfo, Script, ServerErrorKind};

use crate::aggregate::{OpKind, Plan, Writes};
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
    refreshed: Arc<Mutex<Refreshed>>,
}

/// When this pod last set the TTL of each recent-events list. A list's TTL
/// is set to `ttl + slack` and refreshed once `slack` has passed, so it
/// lives at least `ttl` after its last write without an `EXPIRE` per flush.
#[derive(Debug, Default)]
struct Refreshed {
    at: foldhash::HashMap<String, Instant>,
    swept: Option<Instant>,
}

impl Refreshed {
    fn due(&self, key: &str, slack: Duration, now: Instant) -> bool {
        self.at
            .get(key)
            .is_none_or(|&t| now.duration_since(t) >= slack)
    }

    fn mark<'a>(&mut self, keys: impl Iterator<Item = &'a str>, at: Instant) {
        for key in keys {
            match self.at.get_mut(key) {
                Some(t) => *t = at,
                None => {
                    self.at.insert(key.to_string(), at);
                }
            }
        }
        if self
            .swept
            .is_none_or(|t| at.duration_since(t) >= REFRESH_SLACK_MAX)
        {
            self.at
                .retain(|_, t| at.saturating_duration_since(*t) < REFRESH_SLACK_MAX);
            self.swept = Some(at);
        }
    }
}

/// The TTL slack of a recent-events list: a tenth of its TTL, 1 s to 1 h.
pub fn refresh_slack(ttl_seconds: u32) -> u32 {
    (ttl_seconds / 10).clamp(1, REFRESH_SLACK_MAX.as_secs() as u32)
}

const REFRESH_SLACK_MAX: Duration = Duration::from_secs(3600);

/// A recent-events list is trimmed back to `keep` once it holds more than
/// this (trimming every flush would cost a command per device per flush).
pub fn trim_above(keep: u32) -> u32 {
    keep + (keep / 2).max(1)
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
        // TCP_NODELAY, as Redis sets on its side (redis-rs does not by
        // default): a flush is one large command, and Nagle's algorithm may
        // hold its last segment until the ones before it are acknowledged.
        let mut info = args
            .redis_url
            .as_str()
            .into_connection_info()?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
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
            refreshed: Default::default(),
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

    /// Applies a flush once; returns the claims of the plan (as numbered in
    /// [`crate::aggregate::Slot::Claimed`]) that were duplicates, and how
    /// long the script ran. Replaying the same `batch_id` returns the first
    /// result (without a run time) and writes nothing.
    ///
    /// The script refuses (writing nothing) a flush in which some ids are
    /// already claimed and names them; the flush is then sent again without
    /// those events. Each round trip is atomic on its own, so a pod dying
    /// between them loses nothing.
    pub async fn apply(&self, batch_id: &str, plan: &Plan) -> Result<Applied> {
        let marker = self.keys.batch(batch_id);
        let mut duplicates: HashSet<u32> = plan.repeated_claims().iter().copied().collect();
        loop {
            let writes = plan.writes(&duplicates);
            let now = Instant::now();
            let refresh: Vec<bool> = {
                let refreshed = self.refreshed.lock().expect("not poisoned");
                writes
                    .lists
                    .iter()
                    .map(|l| {
                        l.ttl.is_some_and(|ttl| {
                            let slack = Duration::from_secs(refresh_slack(ttl).into());
                            refreshed.due(l.key, slack, now)
                        })
                    })
                    .collect()
            };
            let cmd = flush_command(
                self.script.get_hash(),
                &marker,
                &writes,
                &refresh,
                &duplicates,
            );
            let reply = self.eval(&cmd).await?;
            match parse_reply(&reply)? {
                ScriptReply::Applied(applied) => {
                    let refreshed = writes
                        .lists
                        .iter()
                        .zip(&refresh)
                        .filter(|(_, r)| **r)
                        .map(|(l, _)| l.key);
                    self.refreshed
                        .lock()
                        .expect("not poisoned")
                        .mark(refreshed, now);
                    return Ok(applied);
                }
                ScriptReply::Claimed(positions) => {
                    let sent: Vec<u32> = writes
                        .claims
                        .iter()
                        .flat_map(|c| c.claims.iter().copied())
                        .collect();
                    for p in positions {
                        let claim = sent.get(p as usize).ok_or_else(|| {
                            Error::UnexpectedReply(format!("flush script answered {reply:?}"))
                        })?;
                        duplicates.insert(*claim);
                    }
                }
            }
        }
    }

    /// `EVALSHA`, loading the script first when Redis does not know it.
    async fn eval(&self, cmd: &redis::Cmd) -> Result<String> {
        let mut conn = self.writer.clone();
        match cmd.query_async(&mut conn).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.script.load_async(&mut conn).await?;
                Ok(cmd.query_async(&mut conn).await?)
            }
            other => Ok(other?),
        }
    }
}

/// The `EVALSHA` of one flush, in the argument layout of `store/flush.lua`.
fn flush_command(
    sha: &str,
    marker: &str,
    writes: &Writes<'_>,
    refresh: &[bool],
    duplicates: &HashSet<u32>,
) -> redis::Cmd {
    let mut result = String::from("ok:");
    let mut sorted: Vec<u32> = duplicates.iter().copied().collect();
    sorted.sort_unstable();
    for (i, d) in sorted.iter().enumerate() {
        if i > 0 {
            result.push(',');
        }
        result.push_str(itoa::Buffer::new().format(*d));
    }
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha)
        .arg(1)
        .arg(marker)
        .arg(MARKER_TTL_SECONDS)
        .arg(result);
    cmd.arg(writes.claims.len());
    for c in &writes.claims {
        cmd.arg(c.key).arg(c.ids.len());
        for id in &c.ids {
            cmd.arg(*id);
        }
    }
    for kind in OpKind::ALL {
        let groups = writes.groups.iter().filter(|g| g.kind == kind);
        cmd.arg(groups.clone().count());
        for g in groups {
            cmd.arg(g.key).arg(g.fields.len());
            if kind == OpKind::ZsetIncr {
                // Members first, then amounts (ZMSCORE and ZADD in slices).
                for &(member, _) in &g.fields {
                    cmd.arg(member);
                }
                for &(_, x) in &g.fields {
                    amount_arg(&mut cmd, x);
                }
                continue;
            }
            for &(field, x) in &g.fields {
                cmd.arg(field);
                match kind {
                    // Counts: whole numbers, summed exactly below 2^53.
                    OpKind::HashIncr => cmd.arg(x as i64),
                    _ => amount_arg(&mut cmd, x),
                };
            }
        }
    }
    // Lists sharing keep and TTL go in one group, so those are sent once
    // rather than per list.
    let mut groups: Vec<((u32, u32), Vec<usize>)> = Vec::new();
    for (n, l) in writes.lists.iter().enumerate() {
        let shape = (l.keep, l.ttl.map_or(0, |ttl| ttl + refresh_slack(ttl)));
        match groups.iter_mut().find(|(s, _)| *s == shape) {
            Some((_, members)) => members.push(n),
            None => groups.push((shape, vec![n])),
        }
    }
    cmd.arg(groups.len());
    for ((keep, ttl), members) in &groups {
        cmd.arg(*keep)
            .arg(trim_above(*keep))
            .arg(*ttl)
            .arg(members.len());
        for &n in members {
            let l = &writes.lists[n];
            cmd.arg(l.key).arg(l.values.len());
            for v in &l.values {
                cmd.arg(*v);
            }
        }
        let due: Vec<&str> = members
            .iter()
            .filter(|&&n| refresh[n])
            .map(|&n| writes.lists[n].key)
            .collect();
        cmd.arg(due.len());
        for key in due {
            cmd.arg(key);
        }
    }
    cmd.arg(writes.expire_at.len());
    for &(key, at) in &writes.expire_at {
        cmd.arg(key).arg(at);
    }
    cmd
}

/// A summed amount as a script argument: whole numbers (counts, and sums of
/// whole values) as integers, which format several times faster than the
/// shortest round-trip form of a double and read back as the same double;
/// anything else in that shortest form.
fn amount_arg(cmd: &mut redis::Cmd, x: f64) -> &mut redis::Cmd {
    /// Below 2^53 every whole double is exact as an i64.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if x.fract() == 0.0 && x.abs() < EXACT && !(x == 0.0 && x.is_sign_negative()) {
        cmd.arg(x as i64)
    } else {
        cmd.arg(x)
    }
}

/// A flush that is in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The plan's claims that were duplicates.
    pub duplicates: HashSet<u32>,
    /// How long the script ran inside Redis, in microseconds; `None` when an
    /// earlier attempt had applied it and this one only read the marker.
    pub script_micros: Option<u64>,
}

/// What the flush script answered.
#[derive(Debug, PartialEq)]
enum ScriptReply {
    /// Applied (now or by an earlier attempt).
    Applied(Applied),
    /// Nothing written: these positions among the ids sent are taken.
    Claimed(Vec<u32>),
}

fn parse_reply(reply: &str) -> Result<ScriptReply> {
    let bad = || Error::UnexpectedReply(format!("flush script answered {reply:?}"));
    let (reply, script_micros) = match reply.split_once('@') {
        Some((result, micros)) => (result, Some(micros.parse::<u64>().map_err(|_| bad())?)),
        None => (reply, None),
    };
    let (list, applied) = match (reply.strip_prefix("ok:"), reply.strip_prefix("dup:")) {
        (Some(list), _) => (list, true),
        (_, Some(list)) => (list, false),
        _ => return Err(bad()),
    };
    let numbers = list
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().map_err(|_| bad()));
    if applied {
        Ok(ScriptReply::Applied(Applied {
            duplicates: numbers.collect::<Result<_>>()?,
            script_micros,
        }))
    } else {
        Ok(ScriptReply::Claimed(numbers.collect::<Result<_>>()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_ttl_is_refreshed_once_its_slack_has_passed() {
        let mut r = Refreshed::default();
        let t0 = Instant::now();
        let slack = Duration::from_secs(refresh_slack(600).into());
        assert_eq!(slack, Duration::from_secs(60));
        assert!(r.due("k", slack, t0));
        r.mark(["k"].into_iter(), t0);
        assert!(!r.due("k", slack, t0 + Duration::from_secs(59)));
        assert!(r.due("k", slack, t0 + Duration::from_secs(60)));
        assert!(r.due("other", slack, t0));
        assert_eq!(refresh_slack(5), 1);
        assert_eq!(refresh_slack(7 * 24 * 3600), 3600);
        assert_eq!(trim_above(20), 30);
        assert_eq!(trim_above(1), 2);
    }

    #[test]
    fn amounts_are_sent_as_text_that_reads_back_as_the_same_double() {
        let mut cmd = redis::cmd("X");
        let xs = [
            617.0,
            -3.0,
            2.5,
            0.1 + 0.2,
            -0.0,
            1e300,
            9_007_199_254_740_993.0,
        ];
        for x in xs {
            amount_arg(&mut cmd, x);
        }
        let args: Vec<String> = cmd
            .args_iter()
            .skip(1)
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8(b.to_vec()).unwrap(),
                _ => panic!("only simple arguments"),
            })
            .collect();
        assert_eq!(&args[..2], ["617", "-3"]);
        for (text, x) in args.iter().zip(xs) {
            assert_eq!(
                text.parse::<f64>().unwrap().to_bits(),
                x.to_bits(),
                "{text}"
            );
        }
    }

    #[test]
    fn flush_reply_lists_duplicates_or_taken_ids() {
        let applied = |d: &[u32], t: Option<u64>| {
            ScriptReply::Applied(Applied {
                duplicates: d.iter().copied().collect(),
                script_micros: t,
            })
        };
        assert_eq!(parse_reply("ok:@1250").unwrap(), applied(&[], Some(1250)));
        assert_eq!(parse_reply("ok:0,7@3").unwrap(), applied(&[0, 7], Some(3)));
        // A replay answers from the marker, without a run time.
        assert_eq!(parse_reply("ok:0,7").unwrap(), applied(&[0, 7], None));
        assert_eq!(parse_reply("dup:3").unwrap(), ScriptReply::Claimed(vec![3]));
        assert!(parse_reply("garbage").is_err());
        assert!(parse_reply("ok:x").is_err());
        assert!(parse_reply("ok:1@soon").is_err());
    }
}

//! From a batch of events and the aggregation settings to the Redis
//! operations of one flush: a pure function, tested without Redis.
//!
//! Events without an id (or with dedup off) are summed in memory: a thousand
//! events of ten devices become ten `ZINCRBY`s. Events with an id become
//! *conditional entries*: the flush script claims the id in Redis first and
//! applies the entry's operations only when the claim is new, so a duplicate
//! costs nothing and dedup holds across pods. The recent-events pushes of all
//! events travel as entries in arrival order, so lists keep that order.

use std::collections::{BTreeMap, HashMap, HashSet};

use globset::GlobSet;
use telemetry_config::{AggregationConfig, LeaderboardMember, LeaderboardScore, WindowAggregate};

use crate::event::{Event, EventJson};
use crate::keys::{DEDUP_BUCKET_SECONDS, Keys, bucket_start};

/// The aggregation settings, with filters compiled for the hot path.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: AggregationConfig,
    drop_devices: GlobSet,
    drop_types: HashSet<String>,
}

impl Settings {
    pub fn new(config: AggregationConfig) -> telemetry_config::Result<Self> {
        config.validate()?;
        Ok(Settings {
            drop_devices: config.drop_device_matcher()?,
            drop_types: config.counters.drop_event_types.iter().cloned().collect(),
            config,
        })
    }

    /// Whether the filters drop this event before any aggregation.
    pub fn drops(&self, event: &Event) -> bool {
        self.drop_types.contains(&event.event_type)
            || (!self.drop_devices.is_empty() && self.drop_devices.is_match(&event.device_id))
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::new(AggregationConfig::default()).expect("defaults are valid")
    }
}

/// What one operation does to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// `HINCRBY key field n`
    HashIncr,
    /// `HINCRBYFLOAT key field x`
    HashIncrFloat,
    /// `ZINCRBY key x member` (the member is the op's field)
    ZsetIncr,
    /// `HSET key field x` when smaller than the stored value
    HashMin,
    /// `HSET key field x` when larger than the stored value
    HashMax,
    /// `LPUSH key value...` (field unused)
    ListPush,
}

impl OpKind {
    /// The code the flush script dispatches on.
    pub fn code(self) -> &'static str {
        match self {
            OpKind::HashIncr => "h",
            OpKind::HashIncrFloat => "f",
            OpKind::ZsetIncr => "z",
            OpKind::HashMin => "mn",
            OpKind::HashMax => "mx",
            OpKind::ListPush => "l",
        }
    }
}

/// How a key expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// `EXPIREAT key unix_seconds`
    At(i64),
    /// `EXPIRE key seconds` (refreshed by every flush that touches the key)
    In(u32),
}

/// The amount an operation applies.
#[derive(Debug, Clone, PartialEq)]
pub enum Amount {
    Num(f64),
    Text(String),
}

/// One event whose operations depend on a dedup claim, or a recent-events
/// push kept in arrival order (then `claim` is None).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// (dedup set key, event id)
    pub claim: Option<(String, String)>,
    pub refs: Vec<(u32, Amount)>,
}

/// What happened to each event of the batch, by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Filtered out by `counters.dropEventTypes` / `dropDevices`.
    Dropped,
    /// Aggregated unconditionally.
    Counted,
    /// Aggregated if its claim (entry index) is new.
    Claimed(u32),
}

/// The Redis work of one flush.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    /// Distinct (kind, key, field) triples, referenced by index.
    pub ops: Vec<(OpKind, String, String)>,
    index: HashMap<(OpKind, String, String), u32>,
    /// Pre-summed amounts of unconditional events, by op index.
    pub unconditional: BTreeMap<u32, f64>,
    pub entries: Vec<Entry>,
    pub expires: BTreeMap<String, Expiry>,
    pub trims: BTreeMap<String, u32>,
    pub slots: Vec<Slot>,
}

impl Plan {
    /// Plans the flush of `events` in order.
    pub fn build<'a>(
        events: impl IntoIterator<Item = &'a Event>,
        settings: &Settings,
        keys: &Keys,
    ) -> Plan {
        let mut plan = Plan::default();
        let mut scratch = Vec::new();
        for event in events {
            if settings.drops(event) {
                plan.slots.push(Slot::Dropped);
                continue;
            }
            scratch.clear();
            let push = plan.event_ops(event, settings, keys, &mut scratch);
            let claim = match (&event.event_id, settings.config.dedup.enabled) {
                (Some(id), true) => {
                    let hour = bucket_start(event.timestamp.div_euclid(1000), DEDUP_BUCKET_SECONDS);
                    let key = keys.dedup(hour);
                    let ttl = settings.config.dedup.ttl_seconds as i64;
                    plan.expire(&key, Expiry::At(hour + DEDUP_BUCKET_SECONDS + ttl));
                    Some((key, id.clone()))
                }
                _ => None,
            };
            if claim.is_some() {
                let mut refs: Vec<(u32, Amount)> = scratch
                    .iter()
                    .map(|&(op, x)| (op, Amount::Num(x)))
                    .collect();
                refs.extend(push);
                plan.slots.push(Slot::Claimed(plan.entries.len() as u32));
                plan.entries.push(Entry { claim, refs });
            } else {
                for &(op, x) in &scratch {
                    let kind = plan.ops[op as usize].0;
                    let slot = plan.unconditional.entry(op).or_insert(match kind {
                        OpKind::HashMin => f64::INFINITY,
                        OpKind::HashMax => f64::NEG_INFINITY,
                        _ => 0.0,
                    });
                    *slot = match kind {
                        OpKind::HashMin => slot.min(x),
                        OpKind::HashMax => slot.max(x),
                        _ => *slot + x,
                    };
                }
                if let Some(push) = push {
                    plan.entries.push(Entry {
                        claim: None,
                        refs: vec![push],
                    });
                }
                plan.slots.push(Slot::Counted);
            }
        }
        plan
    }

    /// Collects the numeric operations of one event into `out`; returns its
    /// recent-events push, if that feature is on.
    fn event_ops(
        &mut self,
        e: &Event,
        settings: &Settings,
        keys: &Keys,
        out: &mut Vec<(u32, f64)>,
    ) -> Option<(u32, Amount)> {
        let config = &settings.config;
        let secs = e.timestamp.div_euclid(1000);
        out.push((self.op(OpKind::HashIncr, keys.stats(), "events"), 1.0));
        if config.counters.per_device {
            out.push((self.op(OpKind::ZsetIncr, keys.devices(), &e.device_id), 1.0));
        }
        if config.counters.per_event_type {
            out.push((self.op(OpKind::HashIncr, keys.types(), &e.event_type), 1.0));
        }
        for w in &config.windows {
            if w.event_type.as_ref().is_some_and(|t| *t != e.event_type) {
                continue;
            }
            let retention = w.retention_seconds as i64;
            let minute = bucket_start(secs, 60);
            let mut buckets = vec![(keys.window_minute(&w.name, minute), minute + 60 + retention)];
            if w.per_hour {
                let hour = bucket_start(secs, 3600);
                buckets.push((keys.window_hour(&w.name, hour), hour + 3600 + retention));
            }
            for (key, expire_at) in buckets {
                for agg in &w.aggregates {
                    let (kind, field, x) = match agg {
                        WindowAggregate::Count => (OpKind::HashIncr, "count", 1.0),
                        WindowAggregate::Sum => (OpKind::HashIncrFloat, "sum", e.value),
                        WindowAggregate::Min => (OpKind::HashMin, "min", e.value),
                        WindowAggregate::Max => (OpKind::HashMax, "max", e.value),
                    };
                    out.push((self.op(kind, key.clone(), field), x));
                }
                self.expire(&key, Expiry::At(expire_at));
            }
        }
        for l in &config.leaderboards {
            if l.event_type.as_ref().is_some_and(|t| *t != e.event_type) {
                continue;
            }
            let member = match l.member {
                LeaderboardMember::UserId => e.user_id.as_deref(),
                LeaderboardMember::DeviceId => Some(e.device_id.as_str()),
                LeaderboardMember::Attribute => l
                    .member_attribute
                    .as_deref()
                    .and_then(|a| e.attributes.get(a))
                    .map(String::as_str),
            };
            let Some(member) = member.filter(|m| !m.is_empty()) else {
                continue;
            };
            let len = l.bucket.seconds() as i64;
            let bucket = bucket_start(secs, len);
            let key = keys.leaderboard(&l.name, bucket);
            let score = match l.score {
                LeaderboardScore::Count => 1.0,
                LeaderboardScore::Sum => e.value,
            };
            out.push((self.op(OpKind::ZsetIncr, key.clone(), member), score));
            self.expire(&key, Expiry::At(bucket + len + l.retention_seconds as i64));
        }
        let recent = &config.recent_events;
        if recent.per_device == 0 {
            return None;
        }
        let key = keys.recent(&e.device_id);
        if recent.ttl_seconds > 0 {
            self.expire(&key, Expiry::In(recent.ttl_seconds));
        }
        self.trims.insert(key.clone(), recent.per_device);
        let json = serde_json::to_string(&EventJson::from_event(e)).expect("event serialises");
        Some((self.op(OpKind::ListPush, key, ""), Amount::Text(json)))
    }

    fn op(&mut self, kind: OpKind, key: String, field: &str) -> u32 {
        let triple = (kind, key, field.to_string());
        if let Some(&i) = self.index.get(&triple) {
            return i;
        }
        let i = self.ops.len() as u32;
        self.ops.push(triple.clone());
        self.index.insert(triple, i);
        i
    }

    fn expire(&mut self, key: &str, expiry: Expiry) {
        if !self.expires.contains_key(key) {
            self.expires.insert(key.to_string(), expiry);
        }
    }

    /// Whether the flush would write anything at all.
    pub fn is_empty(&self) -> bool {
        self.unconditional.is_empty() && self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use telemetry_config::{LeaderboardConfig, WindowConfig};

    const T: i64 = 1_700_000_000_000; // 22:13:20 UTC

    fn event(device: &str, id: Option<&str>, value: f64) -> Event {
        Event {
            device_id: device.into(),
            timestamp: T,
            payload: Bytes::new(),
            event_type: "purchase".into(),
            event_id: id.map(Into::into),
            user_id: Some("u1".into()),
            value,
            attributes: [("region".to_string(), "eu".to_string())].into(),
        }
    }

    fn settings(f: impl FnOnce(&mut AggregationConfig)) -> Settings {
        let mut c = AggregationConfig::default();
        f(&mut c);
        Settings::new(c).unwrap()
    }

    fn amount(plan: &Plan, kind: OpKind, key: &str, field: &str) -> Option<f64> {
        let i = plan
            .ops
            .iter()
            .position(|(k, kk, f)| *k == kind && kk == key && f == field)?;
        plan.unconditional.get(&(i as u32)).copied()
    }

    #[test]
    fn events_without_ids_are_summed_per_key() {
        let keys = Keys::new("p");
        let s = settings(|c| c.recent_events.per_device = 0);
        let events = [
            event("a", None, 1.0),
            event("a", None, 1.0),
            event("b", None, 1.0),
        ];
        let plan = Plan::build(&events, &s, &keys);
        assert_eq!(
            amount(&plan, OpKind::ZsetIncr, &keys.devices(), "a"),
            Some(2.0)
        );
        assert_eq!(
            amount(&plan, OpKind::ZsetIncr, &keys.devices(), "b"),
            Some(1.0)
        );
        assert_eq!(
            amount(&plan, OpKind::HashIncr, &keys.types(), "purchase"),
            Some(3.0)
        );
        assert_eq!(
            amount(&plan, OpKind::HashIncr, &keys.stats(), "events"),
            Some(3.0)
        );
        assert!(plan.entries.is_empty());
        assert_eq!(plan.slots, [Slot::Counted; 3]);
    }

    #[test]
    fn events_with_ids_become_claims_in_the_event_time_hour() {
        let keys = Keys::new("p");
        let s = settings(|c| c.recent_events.per_device = 0);
        let plan = Plan::build(
            &[event("a", Some("e1"), 0.0), event("a", None, 0.0)],
            &s,
            &keys,
        );
        assert_eq!(plan.slots, [Slot::Claimed(0), Slot::Counted]);
        let hour = bucket_start(T / 1000, 3600);
        assert_eq!(plan.entries[0].claim, Some((keys.dedup(hour), "e1".into())));
        assert_eq!(
            plan.expires[&keys.dedup(hour)],
            Expiry::At(hour + 3600 + 86_400)
        );
        // The unconditional part only holds the event without an id.
        assert_eq!(
            amount(&plan, OpKind::ZsetIncr, &keys.devices(), "a"),
            Some(1.0)
        );
    }

    #[test]
    fn dedup_off_counts_ids_unconditionally() {
        let keys = Keys::new("p");
        let s = settings(|c| {
            c.dedup.enabled = false;
            c.recent_events.per_device = 0;
        });
        let plan = Plan::build(
            &[event("a", Some("e1"), 0.0), event("a", Some("e1"), 0.0)],
            &s,
            &keys,
        );
        assert_eq!(plan.slots, [Slot::Counted; 2]);
        assert_eq!(
            amount(&plan, OpKind::ZsetIncr, &keys.devices(), "a"),
            Some(2.0)
        );
    }

    #[test]
    fn filters_drop_before_anything_is_planned() {
        let keys = Keys::new("p");
        let s = settings(|c| {
            c.counters.drop_devices = vec!["test-*".into()];
            c.counters.drop_event_types = vec!["debug".into()];
        });
        let mut debug = event("a", None, 0.0);
        debug.event_type = "debug".into();
        let plan = Plan::build(&[event("test-1", None, 0.0), debug], &s, &keys);
        assert_eq!(plan.slots, [Slot::Dropped; 2]);
        assert!(plan.is_empty());
    }

    #[test]
    fn windows_bucket_by_event_minute_with_count_sum_min_max() {
        let keys = Keys::new("p");
        let s = settings(|c| {
            c.recent_events.per_device = 0;
            c.windows = vec![WindowConfig {
                name: "revenue".into(),
                event_type: Some("purchase".into()),
                aggregates: vec![
                    WindowAggregate::Count,
                    WindowAggregate::Sum,
                    WindowAggregate::Min,
                    WindowAggregate::Max,
                ],
                per_hour: true,
                retention_seconds: 600,
            }];
        });
        let mut next_minute = event("a", None, 7.0);
        next_minute.timestamp = T + 60_000;
        let mut other_type = event("a", None, 100.0);
        other_type.event_type = "view".into();
        let plan = Plan::build(
            &[
                event("a", None, 2.5),
                event("b", None, 4.0),
                next_minute,
                other_type,
            ],
            &s,
            &keys,
        );
        let m0 = keys.window_minute("revenue", bucket_start(T / 1000, 60));
        let m1 = keys.window_minute("revenue", bucket_start(T / 1000, 60) + 60);
        assert_eq!(amount(&plan, OpKind::HashIncr, &m0, "count"), Some(2.0));
        assert_eq!(amount(&plan, OpKind::HashIncrFloat, &m0, "sum"), Some(6.5));
        assert_eq!(amount(&plan, OpKind::HashMin, &m0, "min"), Some(2.5));
        assert_eq!(amount(&plan, OpKind::HashMax, &m0, "max"), Some(4.0));
        assert_eq!(amount(&plan, OpKind::HashIncr, &m1, "count"), Some(1.0));
        let h = keys.window_hour("revenue", bucket_start(T / 1000, 3600));
        assert_eq!(amount(&plan, OpKind::HashIncr, &h, "count"), Some(3.0));
        assert_eq!(
            plan.expires[&m0],
            Expiry::At(bucket_start(T / 1000, 60) + 60 + 600)
        );
    }

    #[test]
    fn leaderboards_rank_the_configured_member_and_skip_events_without_one() {
        let keys = Keys::new("p");
        let board = |name: &str, member, attr: Option<&str>, score| LeaderboardConfig {
            name: name.into(),
            event_type: None,
            member,
            member_attribute: attr.map(Into::into),
            score,
            bucket: telemetry_config::LeaderboardBucket::Day,
            retention_seconds: 3600,
        };
        let s = settings(|c| {
            c.recent_events.per_device = 0;
            c.leaderboards = vec![
                board(
                    "users",
                    LeaderboardMember::UserId,
                    None,
                    LeaderboardScore::Count,
                ),
                board(
                    "regions",
                    LeaderboardMember::Attribute,
                    Some("region"),
                    LeaderboardScore::Sum,
                ),
            ];
        });
        let mut anonymous = event("a", None, 3.0);
        anonymous.user_id = None;
        let plan = Plan::build(&[event("a", None, 2.0), anonymous], &s, &keys);
        let day = bucket_start(T / 1000, 86_400);
        assert_eq!(
            amount(
                &plan,
                OpKind::ZsetIncr,
                &keys.leaderboard("users", day),
                "u1"
            ),
            Some(1.0)
        );
        assert_eq!(
            amount(
                &plan,
                OpKind::ZsetIncr,
                &keys.leaderboard("regions", day),
                "eu"
            ),
            Some(5.0)
        );
    }

    #[test]
    fn recent_pushes_keep_arrival_order_across_claimed_and_plain_events() {
        let keys = Keys::new("p");
        let s = settings(|c| c.recent_events.per_device = 3);
        let plan = Plan::build(
            &[
                event("a", None, 1.0),
                event("a", Some("x"), 2.0),
                event("a", None, 3.0),
            ],
            &s,
            &keys,
        );
        assert_eq!(plan.entries.len(), 3);
        let values: Vec<f64> = plan
            .entries
            .iter()
            .map(|e| {
                let (_, Amount::Text(json)) = e
                    .refs
                    .iter()
                    .find(|(_, a)| matches!(a, Amount::Text(_)))
                    .unwrap()
                else {
                    unreachable!()
                };
                serde_json::from_str::<EventJson>(json).unwrap().value
            })
            .collect();
        assert_eq!(values, [1.0, 2.0, 3.0]);
        assert_eq!(plan.trims[&keys.recent("a")], 3);
        assert_eq!(plan.slots[1], Slot::Claimed(1));
    }
}

//! From a batch of events and the aggregation settings to the Redis writes of
//! one flush: a pure function, tested without Redis.
//!
//! Everything that can be summed is summed in memory: a thousand events of
//! ten devices become ten sorted-set increments, whatever their ids. Only
//! what cannot be summed stays per event: the dedup claim of an event id
//! and the recent-events value. The plan is built on the assumption that
//! every claim is new (duplicates are rare); when Redis finds claimed ids,
//! the flush script writes nothing and says which, and [`Plan::writes`]
//! recomputes the sums without those events (see `store`). An id repeated inside one flush
//! is a duplicate whatever Redis holds, so that is decided here.
//!
//! The plan is built incrementally ([`Plan::add`]) so that the flusher can
//! stop adding events once the flush's estimated Redis time
//! ([`Plan::cost_micros`]) reaches its budget.

use std::collections::HashSet;

use foldhash::HashMap;
use globset::GlobSet;
use telemetry_config::{AggregationConfig, LeaderboardMember, LeaderboardScore, WindowAggregate};

use crate::event::Event;
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
        (!self.drop_types.is_empty() && self.drop_types.contains(&event.event_type))
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
    /// `ZINCRBY key x member` (the member is the op's field), applied in
    /// slices as `ZMSCORE` + `ZADD`
    ZsetIncr,
    /// `HSET key field x` when smaller than the stored value
    HashMin,
    /// `HSET key field x` when larger than the stored value
    HashMax,
}

impl OpKind {
    /// Every kind, in the order the flush script reads them.
    pub const ALL: [OpKind; 5] = [
        OpKind::HashIncr,
        OpKind::HashIncrFloat,
        OpKind::ZsetIncr,
        OpKind::HashMin,
        OpKind::HashMax,
    ];

    fn identity(self) -> f64 {
        match self {
            OpKind::HashMin => f64::INFINITY,
            OpKind::HashMax => f64::NEG_INFINITY,
            _ => 0.0,
        }
    }

    fn combine(self, acc: f64, x: f64) -> f64 {
        match self {
            OpKind::HashMin => acc.min(x),
            OpKind::HashMax => acc.max(x),
            _ => acc + x,
        }
    }

    /// Redis commands the script spends on one op (min/max read first).
    fn commands(self) -> usize {
        match self {
            OpKind::HashMin | OpKind::HashMax => 2,
            _ => 1,
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

/// What happened to each event of the batch, by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Filtered out by `counters.dropEventTypes` / `dropDevices`.
    Dropped,
    /// Aggregated unconditionally.
    Counted,
    /// Aggregated if its claim (the claim's number in this plan) is new.
    Claimed(u32),
}

/// Estimated Redis CPU of one command issued by the flush script, and of one
/// per-event value (a claimed id, a recent-events value), in microseconds:
/// the starting prices, set from `INFO commandstats` (usec_per_call of
/// `evalsha`); the flusher scales them by what flushes measure
/// ([`crate::calibrate`]).
const COMMAND_MICROS: f64 = 3.0;
const VALUE_MICROS: f64 = 1.5;

/// Events, distinct devices and bytes of recent-event values of a plan; see
/// [`Plan::sized_like`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanSize {
    pub events: usize,
    pub devices: usize,
    pub recent: usize,
}

/// The Redis work of one flush, built event by event.
#[derive(Debug, Default)]
pub struct Plan {
    /// One per event added, in order.
    pub slots: Vec<Slot>,
    keys: Vec<PlannedKey>,
    ops: Vec<Op>,
    stats: Option<u32>,
    /// device id → its increment on the devices key
    devices: HashMap<String, u32>,
    /// event type → its `HINCRBY` on the types key
    types: HashMap<String, u32>,
    buckets: Vec<Bucket>,
    lists: Vec<List>,
    list_index: HashMap<String, u32>,
    /// The stored forms of recent events, back to back (see `List::values`).
    recent: Vec<u8>,
    groups: Vec<ClaimGroup>,
    claims: Vec<Claim>,
    /// (op, amount) of claimed events, in claim order (see `Claim::contrib`).
    contributions: Vec<(u32, f64)>,
    /// Claims that repeat an id claimed earlier in the same plan.
    repeats: Vec<u32>,
    commands: usize,
    values: usize,
}

#[derive(Debug)]
struct PlannedKey {
    name: String,
    expiry: Option<Expiry>,
}

#[derive(Debug)]
struct Op {
    kind: OpKind,
    key: u32,
    field: String,
    /// Every contribution, as if all claims are new.
    total: f64,
    /// Contributions of unclaimed events only (None: there are none).
    unconditional: Option<f64>,
}

/// A window minute / hour or a leaderboard bucket and its ops.
#[derive(Debug)]
struct Bucket {
    tag: BucketTag,
    start: i64,
    key: u32,
    /// Window: op per aggregate (count, sum, min, max); u32::MAX when off.
    window_ops: [u32; 4],
    /// Leaderboard: member → op.
    members: HashMap<String, u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BucketTag {
    Minute(usize),
    Hour(usize),
    Board(usize),
}

#[derive(Debug)]
struct List {
    key: u32,
    keep: u32,
    /// (start, end) in `Plan::recent` of each value, and its claim, in
    /// arrival order.
    values: Vec<(u32, u32, Option<u32>)>,
}

#[derive(Debug)]
struct ClaimGroup {
    hour: i64,
    key: u32,
    /// event id → claim
    ids: HashMap<String, u32>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Claim {
    start: u32,
    end: u32,
}

/// The writes of a plan, grouped the way the flush script applies them.
#[derive(Debug, Default)]
pub struct Writes<'a> {
    /// Dedup sets and the ids to claim in each, with their claim numbers.
    pub claims: Vec<ClaimWrite<'a>>,
    /// Increments and min/max, one group per (kind, key), kinds in
    /// [`OpKind::ALL`] order.
    pub groups: Vec<OpGroup<'a>>,
    /// Recent-events lists: values oldest first (pushed in this order, so
    /// the list reads newest first).
    pub lists: Vec<ListWrite<'a>>,
    /// `EXPIREAT` of window, leaderboard and dedup keys.
    pub expire_at: Vec<(&'a str, i64)>,
}

#[derive(Debug)]
pub struct ClaimWrite<'a> {
    pub key: &'a str,
    pub ids: Vec<&'a str>,
    pub claims: Vec<u32>,
}

#[derive(Debug)]
pub struct OpGroup<'a> {
    pub kind: OpKind,
    pub key: &'a str,
    pub fields: Vec<(&'a str, f64)>,
}

#[derive(Debug)]
pub struct ListWrite<'a> {
    pub key: &'a str,
    pub keep: u32,
    pub ttl: Option<u32>,
    pub values: Vec<&'a [u8]>,
}

impl Plan {
    /// An empty plan with room for about the size of `like` (the previous
    /// flush's), so that a flush of the usual size does not grow its tables
    /// while it is planned.
    pub fn sized_like(like: PlanSize) -> Plan {
        let PlanSize {
            events,
            devices,
            recent,
        } = like;
        // A list per device, where the last flush had recent events.
        let lists = if recent > 0 { devices } else { 0 };
        Plan {
            slots: Vec::with_capacity(events),
            devices: HashMap::with_capacity_and_hasher(devices, Default::default()),
            lists: Vec::with_capacity(lists),
            list_index: HashMap::with_capacity_and_hasher(lists, Default::default()),
            recent: Vec::with_capacity(recent),
            ..Plan::default()
        }
    }

    /// Plans the flush of `events` in order.
    pub fn build<'a>(
        events: impl IntoIterator<Item = &'a Event>,
        settings: &Settings,
        keys: &Keys,
    ) -> Plan {
        let mut plan = Plan::default();
        for event in events {
            plan.add(event, settings, keys);
        }
        plan
    }

    /// How large this plan got.
    pub fn size(&self) -> PlanSize {
        PlanSize {
            events: self.slots.len(),
            devices: self.devices.len().max(self.lists.len()),
            recent: self.recent.len(),
        }
    }

    /// Events added so far.
    pub fn events(&self) -> usize {
        self.slots.len()
    }

    /// Estimated Redis CPU time of the flush script, in microseconds.
    pub fn cost_micros(&self) -> f64 {
        self.commands as f64 * COMMAND_MICROS + self.values as f64 * VALUE_MICROS
    }

    /// Whether the flush would write anything at all.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.claims.is_empty() && self.lists.is_empty()
    }

    /// Claims that repeat an id of the same plan: duplicates whatever Redis
    /// holds (the first one is either new, or a duplicate too).
    pub fn repeated_claims(&self) -> &[u32] {
        &self.repeats
    }

    /// Adds one event.
    pub fn add(&mut self, e: &Event, settings: &Settings, keys: &Keys) {
        if settings.drops(e) {
            self.slots.push(Slot::Dropped);
            return;
        }
        let config = &settings.config;
        let claim = match (&e.event_id, config.dedup.enabled) {
            (Some(id), true) => {
                let claim = self.claims.len() as u32;
                let hour = bucket_start(e.timestamp.div_euclid(1000), DEDUP_BUCKET_SECONDS);
                let group = self.claim_group(hour, config.dedup.ttl_seconds, keys);
                self.slots.push(Slot::Claimed(claim));
                let at = self.contributions.len() as u32;
                self.claims.push(Claim { start: at, end: at });
                let ids = &mut self.groups[group].ids;
                if ids.contains_key(id.as_str()) {
                    self.repeats.push(claim);
                    return;
                }
                ids.insert(id.clone(), claim);
                self.values += 1;
                Some(claim)
            }
            _ => {
                self.slots.push(Slot::Counted);
                None
            }
        };
        self.event_ops(e, settings, keys, claim);
        if let Some(c) = claim {
            self.claims[c as usize].end = self.contributions.len() as u32;
        }
    }

    fn event_ops(&mut self, e: &Event, settings: &Settings, keys: &Keys, claim: Option<u32>) {
        let config = &settings.config;
        let secs = e.timestamp.div_euclid(1000);
        let stats = match self.stats {
            Some(op) => op,
            None => {
                let key = self.key(keys.stats(), None);
                let op = self.new_op(OpKind::HashIncr, key, "events".into());
                self.stats = Some(op);
                op
            }
        };
        self.contribute(stats, 1.0, claim);
        if config.counters.per_device {
            let op = match self.devices.get(e.device_id.as_str()) {
                Some(&op) => op,
                None => {
                    let key = self.key_named(keys, Keys::devices);
                    let op = self.new_op(OpKind::ZsetIncr, key, e.device_id.clone());
                    self.devices.insert(e.device_id.clone(), op);
                    op
                }
            };
            self.contribute(op, 1.0, claim);
        }
        if config.counters.per_event_type {
            let op = match self.types.get(e.event_type.as_str()) {
                Some(&op) => op,
                None => {
                    let key = self.key_named(keys, Keys::types);
                    let op = self.new_op(OpKind::HashIncr, key, e.event_type.clone());
                    self.types.insert(e.event_type.clone(), op);
                    op
                }
            };
            self.contribute(op, 1.0, claim);
        }
        for (w_index, w) in config.windows.iter().enumerate() {
            if w.event_type.as_ref().is_some_and(|t| *t != e.event_type) {
                continue;
            }
            let retention = w.retention_seconds as i64;
            let minute = bucket_start(secs, 60);
            let mut tags = [
                (BucketTag::Minute(w_index), minute, 60),
                (BucketTag::Minute(w_index), 0, 0),
            ];
            let n = if w.per_hour {
                tags[1] = (BucketTag::Hour(w_index), bucket_start(secs, 3600), 3600);
                2
            } else {
                1
            };
            for &(tag, start, len) in &tags[..n] {
                let b = self.bucket(tag, start, || {
                    let name = match tag {
                        BucketTag::Hour(_) => keys.window_hour(&w.name, start),
                        _ => keys.window_minute(&w.name, start),
                    };
                    (name, start + len + retention)
                });
                for agg in &w.aggregates {
                    let (slot, kind, field, x) = match agg {
                        WindowAggregate::Count => (0, OpKind::HashIncr, "count", 1.0),
                        WindowAggregate::Sum => (1, OpKind::HashIncrFloat, "sum", e.value),
                        WindowAggregate::Min => (2, OpKind::HashMin, "min", e.value),
                        WindowAggregate::Max => (3, OpKind::HashMax, "max", e.value),
                    };
                    let mut op = self.buckets[b].window_ops[slot];
                    if op == u32::MAX {
                        op = self.new_op(kind, self.buckets[b].key, field.into());
                        self.buckets[b].window_ops[slot] = op;
                    }
                    self.contribute(op, x, claim);
                }
            }
        }
        for (l_index, l) in config.leaderboards.iter().enumerate() {
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
            let start = bucket_start(secs, len);
            let b = self.bucket(BucketTag::Board(l_index), start, || {
                (
                    keys.leaderboard(&l.name, start),
                    start + len + l.retention_seconds as i64,
                )
            });
            let op = match self.buckets[b].members.get(member) {
                Some(&op) => op,
                None => {
                    let op = self.new_op(OpKind::ZsetIncr, self.buckets[b].key, member.into());
                    self.buckets[b].members.insert(member.into(), op);
                    op
                }
            };
            let score = match l.score {
                LeaderboardScore::Count => 1.0,
                LeaderboardScore::Sum => e.value,
            };
            self.contribute(op, score, claim);
        }
        let recent = &config.recent_events;
        if recent.per_device > 0 {
            let list = match self.list_index.get(e.device_id.as_str()) {
                Some(&l) => l as usize,
                None => {
                    let ttl = (recent.ttl_seconds > 0).then_some(Expiry::In(recent.ttl_seconds));
                    let key = self.key(keys.recent(&e.device_id), ttl);
                    self.lists.push(List {
                        key,
                        keep: recent.per_device,
                        values: Vec::new(),
                    });
                    // LPUSH (LTRIM and EXPIRE only now and then)
                    self.commands += 1;
                    self.list_index
                        .insert(e.device_id.clone(), self.lists.len() as u32 - 1);
                    self.lists.len() - 1
                }
            };
            let start = self.recent.len() as u32;
            crate::recent::encode(e, &mut self.recent);
            let end = self.recent.len() as u32;
            self.lists[list].values.push((start, end, claim));
            self.values += 1;
        }
    }

    fn key(&mut self, name: String, expiry: Option<Expiry>) -> u32 {
        if matches!(expiry, Some(Expiry::At(_))) {
            self.commands += 1;
        }
        self.keys.push(PlannedKey { name, expiry });
        self.keys.len() as u32 - 1
    }

    /// The key of a constant name (devices, types): made once per plan.
    fn key_named(&mut self, keys: &Keys, name: fn(&Keys) -> String) -> u32 {
        let name = name(keys);
        match self.keys.iter().position(|k| k.name == name) {
            Some(i) => i as u32,
            None => self.key(name, None),
        }
    }

    fn bucket(
        &mut self,
        tag: BucketTag,
        start: i64,
        make: impl FnOnce() -> (String, i64),
    ) -> usize {
        if let Some(i) = self
            .buckets
            .iter()
            .position(|b| b.tag == tag && b.start == start)
        {
            return i;
        }
        let (name, expire_at) = make();
        let key = self.key(name, Some(Expiry::At(expire_at)));
        self.buckets.push(Bucket {
            tag,
            start,
            key,
            window_ops: [u32::MAX; 4],
            members: HashMap::default(),
        });
        self.buckets.len() - 1
    }

    fn claim_group(&mut self, hour: i64, ttl_seconds: u32, keys: &Keys) -> usize {
        if let Some(i) = self.groups.iter().position(|g| g.hour == hour) {
            return i;
        }
        let expire_at = hour + DEDUP_BUCKET_SECONDS + ttl_seconds as i64;
        let key = self.key(keys.dedup(hour), Some(Expiry::At(expire_at)));
        // SMISMEMBER, SADD
        self.commands += 2;
        self.groups.push(ClaimGroup {
            hour,
            key,
            ids: HashMap::default(),
        });
        self.groups.len() - 1
    }

    fn new_op(&mut self, kind: OpKind, key: u32, field: String) -> u32 {
        self.commands += kind.commands();
        self.ops.push(Op {
            kind,
            key,
            field,
            total: kind.identity(),
            unconditional: None,
        });
        self.ops.len() as u32 - 1
    }

    fn contribute(&mut self, op: u32, x: f64, claim: Option<u32>) {
        let o = &mut self.ops[op as usize];
        o.total = o.kind.combine(o.total, x);
        match claim {
            Some(_) => self.contributions.push((op, x)),
            None => {
                o.unconditional = Some(
                    o.kind
                        .combine(o.unconditional.unwrap_or(o.kind.identity()), x),
                )
            }
        }
    }

    /// The writes of the flush without the claims in `duplicates` (claim
    /// numbers, as in [`Slot::Claimed`]): their ids are not claimed and
    /// nothing of theirs is counted or pushed.
    pub fn writes(&self, duplicates: &HashSet<u32>) -> Writes<'_> {
        let name = |k: u32| self.keys[k as usize].name.as_str();
        // Sums assume every claim is new; recompute them when one is not.
        let recomputed = duplicates
            .iter()
            .any(|&c| self.claims.get(c as usize).is_some_and(|c| c.end > c.start))
            .then(|| self.totals_without(duplicates));
        let total = |i: usize| match &recomputed {
            Some(t) => t[i],
            None => Some(self.ops[i].total),
        };

        let mut w = Writes::default();
        for g in &self.groups {
            let mut claim = ClaimWrite {
                key: name(g.key),
                ids: Vec::with_capacity(g.ids.len()),
                claims: Vec::with_capacity(g.ids.len()),
            };
            for (id, &c) in &g.ids {
                if !duplicates.contains(&c) {
                    claim.ids.push(id.as_str());
                    claim.claims.push(c);
                }
            }
            if !claim.ids.is_empty() {
                w.claims.push(claim);
            }
        }

        let mut order: Vec<u32> = (0..self.ops.len() as u32).collect();
        order.sort_unstable_by_key(|&i| {
            let op = &self.ops[i as usize];
            (op.kind, op.key)
        });
        for i in order {
            let op = &self.ops[i as usize];
            let Some(x) = total(i as usize) else { continue };
            match w.groups.last_mut() {
                Some(g) if g.kind == op.kind && g.key == name(op.key) => {
                    g.fields.push((&op.field, x));
                }
                _ => w.groups.push(OpGroup {
                    kind: op.kind,
                    key: name(op.key),
                    fields: vec![(&op.field, x)],
                }),
            }
        }

        for list in &self.lists {
            let mut values: Vec<&[u8]> = list
                .values
                .iter()
                .filter(|(_, _, c)| c.is_none_or(|c| !duplicates.contains(&c)))
                .map(|&(start, end, _)| &self.recent[start as usize..end as usize])
                .collect();
            if values.is_empty() {
                continue;
            }
            // Older values would be trimmed at once: not sent at all.
            let skip = values.len().saturating_sub(list.keep as usize);
            values.drain(..skip);
            let ttl = match self.keys[list.key as usize].expiry {
                Some(Expiry::In(s)) => Some(s),
                _ => None,
            };
            w.lists.push(ListWrite {
                key: name(list.key),
                keep: list.keep,
                ttl,
                values,
            });
        }

        for k in &self.keys {
            if let Some(Expiry::At(t)) = k.expiry {
                w.expire_at.push((&k.name, t));
            }
        }
        w
    }

    /// Per op: the combined amount of its unclaimed and non-duplicate
    /// claimed contributions, None when nothing is left of it.
    fn totals_without(&self, duplicates: &HashSet<u32>) -> Vec<Option<f64>> {
        let mut totals: Vec<Option<f64>> = self.ops.iter().map(|op| op.unconditional).collect();
        for (c, claim) in self.claims.iter().enumerate() {
            if duplicates.contains(&(c as u32)) {
                continue;
            }
            for &(op, x) in &self.contributions[claim.start as usize..claim.end as usize] {
                let kind = self.ops[op as usize].kind;
                let t = totals[op as usize].get_or_insert(kind.identity());
                *t = kind.combine(*t, x);
            }
        }
        totals
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

    fn amount_in(w: &Writes, kind: OpKind, key: &str, field: &str) -> Option<f64> {
        w.groups
            .iter()
            .filter(|g| g.kind == kind && g.key == key)
            .flat_map(|g| g.fields.iter())
            .find(|(f, _)| *f == field)
            .map(|&(_, x)| x)
    }

    fn amount(plan: &Plan, kind: OpKind, key: &str, field: &str) -> Option<f64> {
        amount_in(&plan.writes(&HashSet::new()), kind, key, field)
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
        let w = plan.writes(&HashSet::new());
        assert!(w.claims.is_empty() && w.lists.is_empty());
        assert_eq!(plan.slots, [Slot::Counted; 3]);
        // One ZINCRBY group for both devices.
        assert_eq!(
            w.groups
                .iter()
                .filter(|g| g.kind == OpKind::ZsetIncr)
                .count(),
            1
        );
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
        let w = plan.writes(&HashSet::new());
        assert_eq!(w.claims.len(), 1);
        assert_eq!(w.claims[0].key, keys.dedup(hour));
        assert_eq!(
            (&w.claims[0].ids[..], &w.claims[0].claims[..]),
            (&["e1"][..], &[0][..])
        );
        assert!(
            w.expire_at
                .contains(&(keys.dedup(hour).as_str(), hour + 3600 + 86_400))
        );
        // Both count while the claim is presumed new.
        assert_eq!(
            amount_in(&w, OpKind::ZsetIncr, &keys.devices(), "a"),
            Some(2.0)
        );
    }

    #[test]
    fn duplicate_claims_are_taken_out_of_every_sum() {
        let keys = Keys::new("p");
        let s = settings(|c| {
            c.recent_events.per_device = 5;
            c.windows = vec![WindowConfig {
                name: "w".into(),
                event_type: None,
                aggregates: vec![
                    WindowAggregate::Count,
                    WindowAggregate::Sum,
                    WindowAggregate::Min,
                    WindowAggregate::Max,
                ],
                per_hour: false,
                retention_seconds: 600,
            }];
        });
        let plan = Plan::build(
            &[
                event("a", Some("x"), 1.0),
                event("a", None, 5.0),
                event("b", Some("y"), 9.0),
            ],
            &s,
            &keys,
        );
        let m = keys.window_minute("w", bucket_start(T / 1000, 60));
        let all = plan.writes(&HashSet::new());
        assert_eq!(amount_in(&all, OpKind::HashMax, &m, "max"), Some(9.0));
        // Claim 1 (id y, device b) turns out to be a duplicate.
        let w = plan.writes(&HashSet::from([1]));
        assert_eq!(
            amount_in(&w, OpKind::ZsetIncr, &keys.devices(), "a"),
            Some(2.0)
        );
        assert_eq!(amount_in(&w, OpKind::ZsetIncr, &keys.devices(), "b"), None);
        assert_eq!(amount_in(&w, OpKind::HashIncr, &m, "count"), Some(2.0));
        assert_eq!(amount_in(&w, OpKind::HashIncrFloat, &m, "sum"), Some(6.0));
        assert_eq!(amount_in(&w, OpKind::HashMin, &m, "min"), Some(1.0));
        assert_eq!(amount_in(&w, OpKind::HashMax, &m, "max"), Some(5.0));
        assert_eq!(
            amount_in(&w, OpKind::HashIncr, &keys.stats(), "events"),
            Some(2.0)
        );
        assert_eq!(w.claims[0].ids, ["x"]);
        assert_eq!(w.lists.len(), 1, "b's only push is gone");
        assert_eq!(w.lists[0].values.len(), 2);
        // Both claims duplicates: only the unclaimed event is left.
        let w = plan.writes(&HashSet::from([0, 1]));
        assert!(w.claims.is_empty());
        assert_eq!(amount_in(&w, OpKind::HashMin, &m, "min"), Some(5.0));
        assert_eq!(
            amount_in(&w, OpKind::HashIncr, &keys.stats(), "events"),
            Some(1.0)
        );
    }

    #[test]
    fn an_id_repeated_in_one_flush_is_a_duplicate_of_the_first() {
        let keys = Keys::new("p");
        let s = settings(|c| c.recent_events.per_device = 5);
        let plan = Plan::build(
            &[event("a", Some("x"), 1.0), event("b", Some("x"), 1.0)],
            &s,
            &keys,
        );
        assert_eq!(plan.slots, [Slot::Claimed(0), Slot::Claimed(1)]);
        assert_eq!(plan.repeated_claims(), [1]);
        let w = plan.writes(&HashSet::from([1]));
        assert_eq!(amount_in(&w, OpKind::ZsetIncr, &keys.devices(), "b"), None);
        assert_eq!(
            amount_in(&w, OpKind::HashIncr, &keys.stats(), "events"),
            Some(1.0)
        );
        assert_eq!(w.claims[0].ids, ["x"]);
        assert_eq!(w.lists.len(), 1);
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
        let w = plan.writes(&HashSet::new());
        assert!(
            w.expire_at
                .contains(&(m0.as_str(), bucket_start(T / 1000, 60) + 60 + 600))
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
                event("a", None, 4.0),
            ],
            &s,
            &keys,
        );
        let w = plan.writes(&HashSet::new());
        assert_eq!(w.lists.len(), 1);
        let list = &w.lists[0];
        assert_eq!((list.key, list.keep), (keys.recent("a").as_str(), 3));
        assert_eq!(list.ttl, Some(7 * 24 * 3600));
        let values: Vec<f64> = list
            .values
            .iter()
            .map(|stored| crate::recent::decode("a", stored).unwrap().value)
            .collect();
        // The oldest would be trimmed at once, so it is not sent.
        assert_eq!(values, [2.0, 3.0, 4.0]);
        assert_eq!(plan.slots[1], Slot::Claimed(0));
    }

    #[test]
    fn a_plan_sized_like_the_last_one_reports_its_size_and_plans_the_same() {
        let keys = Keys::new("p");
        let s = settings(|c| c.recent_events.per_device = 2);
        let events: Vec<Event> = (0..50)
            .map(|i| event(&format!("d{}", i % 5), Some(&format!("e{i}")), 1.0))
            .collect();
        let first = Plan::build(&events, &s, &keys);
        let size = first.size();
        assert_eq!((size.events, size.devices), (50, 5));
        assert!(size.recent > 0);
        let mut second = Plan::sized_like(size);
        for e in &events {
            second.add(e, &s, &keys);
        }
        let none = HashSet::new();
        let (a, b) = (first.writes(&none), second.writes(&none));
        assert_eq!(
            format!("{:?} {:?} {:?}", a.groups, a.lists, a.expire_at),
            format!("{:?} {:?} {:?}", b.groups, b.lists, b.expire_at)
        );
        // Claims come in the id table's order.
        let ids = |w: &Writes| {
            let mut ids: Vec<String> = w.claims[0].ids.iter().map(|s| s.to_string()).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&a), ids(&b));
    }

    #[test]
    fn cost_grows_with_distinct_keys_not_with_events_of_the_same_keys() {
        let keys = Keys::new("p");
        let s = settings(|c| c.recent_events.per_device = 0);
        let same: Vec<Event> = (0..100).map(|_| event("a", None, 1.0)).collect();
        let distinct: Vec<Event> = (0..100)
            .map(|i| event(&format!("d{i}"), None, 1.0))
            .collect();
        let a = Plan::build(&same, &s, &keys).cost_micros();
        let b = Plan::build(&distinct, &s, &keys).cost_micros();
        assert!(a < 10.0, "{a}");
        assert!(b > 90.0, "{b}");
    }
}

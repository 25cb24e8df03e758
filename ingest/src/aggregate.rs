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
//!
//! By concern: `settings` holds the settings and their filters;
//! `event_ops` what one event adds, per aggregation kind; `writes` the
//! writes of a plan, grouped for the flush script; `parts` the plans of one
//! flush over the partitions of a sharded pipeline. This module holds the
//! plan's tables and its size and cost.

mod event_ops;
mod parts;
mod settings;
mod writes;

#[cfg(test)]
mod fixtures;

use foldhash::HashMap;

pub use event_ops::member_of;
pub use parts::FlushPlan;
pub use settings::Settings;
pub use writes::{ClaimWrite, ListWrite, OpGroup, Writes};

use crate::event::Event;
use crate::keys::{DEDUP_BUCKET_SECONDS, Keys, bucket_start};

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

/// What of an event a plan takes. On Redis Cluster an event's writes live
/// in its device's partition, except its scores on leaderboards of users or
/// attributes, which live in their member's partition (so that members are
/// disjoint across partitions); those go in the plans of the members'
/// partitions, each claimed there on its own (in the member-claims set) so
/// that every part is idempotent per event.
#[derive(Debug, Clone, Copy)]
pub enum Share<'a> {
    /// All of it (a single Redis).
    Whole,
    /// All but the leaderboards flagged (by index in the settings): their
    /// members are in other partitions.
    Home { elsewhere: &'a [bool] },
    /// Only the leaderboards flagged, claimed in the member-claims set; the
    /// event's outcome is its home share's, so no slot is added.
    Members { boards: &'a [bool] },
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
    /// The member-claims set rather than the dedup set.
    members: bool,
    key: u32,
    /// event id → claim
    ids: HashMap<String, u32>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Claim {
    start: u32,
    end: u32,
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
        self.add_share(e, settings, keys, Share::Whole);
    }

    /// Adds the `share` of one event.
    pub fn add_share(&mut self, e: &Event, settings: &Settings, keys: &Keys, share: Share<'_>) {
        let members = matches!(share, Share::Members { .. });
        let slot = |plan: &mut Plan, s: Slot| {
            if !members {
                plan.slots.push(s);
            }
        };
        if settings.drops(e) {
            slot(self, Slot::Dropped);
            return;
        }
        let config = &settings.config;
        let claim = match (&e.event_id, config.dedup.enabled) {
            (Some(id), true) => {
                let claim = self.claims.len() as u32;
                let hour = bucket_start(e.timestamp.div_euclid(1000), DEDUP_BUCKET_SECONDS);
                let group = self.claim_group(hour, config.dedup.ttl_seconds, keys, members);
                slot(self, Slot::Claimed(claim));
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
                slot(self, Slot::Counted);
                None
            }
        };
        self.event_ops(e, settings, keys, claim, share);
        if let Some(c) = claim {
            self.claims[c as usize].end = self.contributions.len() as u32;
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

    /// The claims set of `hour`: the dedup set, or with `members` the
    /// member-claims set (see [`Share::Members`]).
    fn claim_group(&mut self, hour: i64, ttl_seconds: u32, keys: &Keys, members: bool) -> usize {
        if let Some(i) = self
            .groups
            .iter()
            .position(|g| g.hour == hour && g.members == members)
        {
            return i;
        }
        let expire_at = hour + DEDUP_BUCKET_SECONDS + ttl_seconds as i64;
        let name = if members {
            keys.member_claims(hour)
        } else {
            keys.dedup(hour)
        };
        let key = self.key(name, Some(Expiry::At(expire_at)));
        // SMISMEMBER, SADD
        self.commands += 2;
        self.groups.push(ClaimGroup {
            hour,
            members,
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
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use crate::aggregate::fixtures::*;
    use crate::aggregate::{OpKind, Plan, Slot, Writes};
    use crate::event::Event;
    use crate::keys::{Keys, bucket_start};

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

//! What one event adds to a plan, per aggregation kind: the counters
//! (events, per device, per event type), the time windows, the
//! leaderboards and the recent-events lists.

use telemetry_config::{
    AggregationConfig, LeaderboardConfig, LeaderboardMember, LeaderboardScore, WindowAggregate,
};

use super::{BucketTag, Expiry, List, OpKind, Plan, Settings, Share};
use crate::event::Event;
use crate::keys::{Keys, bucket_start};

impl Plan {
    /// The ops (and the recent-events value) of `e`, each contribution
    /// conditional on `claim` when it has one.
    pub(super) fn event_ops(
        &mut self,
        e: &Event,
        settings: &Settings,
        keys: &Keys,
        claim: Option<u32>,
        share: Share<'_>,
    ) {
        let config = &settings.config;
        if !matches!(share, Share::Members { .. }) {
            self.counter_ops(e, config, keys, claim);
            self.window_ops(e, config, keys, claim);
        }
        self.leaderboard_ops(e, config, keys, claim, share);
        if !matches!(share, Share::Members { .. }) {
            self.recent_value(e, config, keys, claim);
        }
    }

    /// The stats key's event count, and the per-device and per-type counts
    /// the counters ask for.
    fn counter_ops(
        &mut self,
        e: &Event,
        config: &AggregationConfig,
        keys: &Keys,
        claim: Option<u32>,
    ) {
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
    }

    /// Count, sum, min and max of the event's minute (and hour) of each
    /// window of its type.
    fn window_ops(
        &mut self,
        e: &Event,
        config: &AggregationConfig,
        keys: &Keys,
        claim: Option<u32>,
    ) {
        let secs = e.timestamp.div_euclid(1000);
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
    }

    /// The event's member's score in the current bucket of each leaderboard
    /// of its type (those of the `share`); events without a member are left
    /// out.
    fn leaderboard_ops(
        &mut self,
        e: &Event,
        config: &AggregationConfig,
        keys: &Keys,
        claim: Option<u32>,
        share: Share<'_>,
    ) {
        let secs = e.timestamp.div_euclid(1000);
        for (l_index, l) in config.leaderboards.iter().enumerate() {
            let here = match share {
                Share::Whole => true,
                Share::Home { elsewhere } => !elsewhere.get(l_index).copied().unwrap_or(false),
                Share::Members { boards } => boards.get(l_index).copied().unwrap_or(false),
            };
            if !here {
                continue;
            }
            let Some(member) = member_of(l, e) else {
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
    }

    /// The event's stored form on its device's recent-events list.
    fn recent_value(
        &mut self,
        e: &Event,
        config: &AggregationConfig,
        keys: &Keys,
        claim: Option<u32>,
    ) {
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
}

/// The member an event scores on leaderboard `l`: none when the board is
/// for another event type or the event lacks the member's field.
pub fn member_of<'e>(l: &LeaderboardConfig, e: &'e Event) -> Option<&'e str> {
    if l.event_type.as_ref().is_some_and(|t| *t != e.event_type) {
        return None;
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
    member.filter(|m| !m.is_empty())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use telemetry_config::{
        LeaderboardConfig, LeaderboardMember, LeaderboardScore, WindowAggregate, WindowConfig,
    };

    use crate::aggregate::fixtures::*;
    use crate::aggregate::{OpKind, Plan, Slot};
    use crate::keys::{Keys, bucket_start};

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
}

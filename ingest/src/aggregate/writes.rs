//! The writes of a plan ([`Writes`]), grouped the way the flush script
//! applies them, and recomputed without the claims Redis found duplicate.

use std::collections::HashSet;

use super::{Expiry, OpKind, Plan};

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

impl<'a> Writes<'a> {
    /// Every key written, each once, in the order the script first touches
    /// them.
    pub fn keys(&self) -> Vec<&'a str> {
        let mut seen = HashSet::new();
        self.claims
            .iter()
            .map(|c| c.key)
            .chain(self.groups.iter().map(|g| g.key))
            .chain(self.lists.iter().map(|l| l.key))
            .chain(self.expire_at.iter().map(|&(k, _)| k))
            .filter(|k| seen.insert(*k))
            .collect()
    }
}

impl Plan {
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
    use std::collections::HashSet;

    use telemetry_config::{WindowAggregate, WindowConfig};

    use crate::aggregate::fixtures::*;
    use crate::aggregate::{OpKind, Plan, Slot};
    use crate::keys::{Keys, bucket_start};

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
}

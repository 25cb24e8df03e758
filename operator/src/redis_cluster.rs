//! The managed Redis Cluster: form it, keep it healthy, reshard it live.
//!
//! For `spec.redis.managed.shards: S` with `replicasPerShard: R` the operator
//! runs S×(1+R) cluster-enabled redis-server pods; this module turns those
//! addresses into one cluster with S primaries owning equal contiguous slot
//! ranges, R replicas each — independent of Kubernetes, so that it can be
//! tested on local processes.
//!
//! One round, as the reconciler calls it ([`converge_once`]):
//! - [`apply::observe`] reads every pod's `CLUSTER NODES` and `CLUSTER INFO`
//!   (unreachable pods are recorded, not fatal), parsed by [`nodes`];
//! - [`plan::plan`] (pure) decides the next bounded batch of [`Step`]s, or
//!   that the cluster must wait (gossip, failover in flight), is blocked
//!   (e.g. a shrink asked for), or has converged; [`health::summarize`]
//!   (pure) condenses the observation for the status;
//! - [`apply`] executes the steps with direct CLUSTER commands, moving keys
//!   with `MIGRATE` so that slots change owners under load without loss.
//!
//! Each round is short and stateless: everything it needs is read back from
//! the nodes, so an operator restart mid-migration resumes where Redis says
//! the migration stands (open slots are closed first).

pub mod apply;
#[cfg(test)]
mod fixture;
pub mod health;
pub mod nodes;
pub mod plan;

pub use apply::{Progress, converge_once};
pub use health::Health;
pub use plan::{Plan, Pod, Seen, Step};

/// Number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// At most this many slots change owner in one round, so that a reconcile
/// pass stays short however large the reshard.
pub const MAX_SLOTS_PER_ROUND: usize = 256;

/// What the cluster should look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Primaries, each owning an equal contiguous share of the slots.
    pub shards: usize,
    /// Replicas of each primary.
    pub replicas_per_shard: usize,
}

/// Inclusive range of hash slots, `first..=last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotRange {
    pub first: u16,
    pub last: u16,
}

impl SlotRange {
    /// The range `first..=last`.
    pub fn new(first: u16, last: u16) -> Self {
        SlotRange { first, last }
    }

    /// Number of slots in the range.
    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// Never true: a range holds at least one slot (kept for clippy's
    /// `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The slots of the range.
    pub fn slots(&self) -> impl Iterator<Item = u16> {
        self.first..=self.last
    }
}

impl std::fmt::Display for SlotRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// The `shards` equal contiguous ranges covering every slot, as `redis-cli
/// --cluster create` assigns them: shard i owns `[i·16384/S, (i+1)·16384/S)`
/// with the bounds rounded to the nearest slot (0-5460, 5461-10922,
/// 10923-16383 for three), so that a cluster formed by hand and one formed
/// here agree.
pub fn shares(shards: usize) -> Vec<SlotRange> {
    let (total, s) = (usize::from(SLOTS), shards.max(1));
    // round((i + 1) · 16384 / S − 1), in integers.
    let last = |i: usize| {
        if i + 1 == s {
            total - 1
        } else {
            (2 * (i + 1) * total - s) / (2 * s)
        }
    };
    let first = |i: usize| if i == 0 { 0 } else { last(i - 1) + 1 };
    let range = |i: usize| SlotRange::new(first(i) as u16, last(i) as u16);
    (0..shards).map(range).collect()
}

/// Contiguous ranges of a sorted, de-duplicated list of slots.
pub fn ranges_of(slots: impl IntoIterator<Item = u16>) -> Vec<SlotRange> {
    let mut ranges: Vec<SlotRange> = Vec::new();
    for slot in slots {
        match ranges.last_mut() {
            Some(r) if r.last.checked_add(1) == Some(slot) => r.last = slot,
            _ => ranges.push(SlotRange::new(slot, slot)),
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_match_redis_cli_cluster_create() {
        let three = shares(3);
        let expected = [(0, 5460), (5461, 10922), (10923, 16383)];
        let expected: Vec<SlotRange> = expected.map(|(a, b)| SlotRange::new(a, b)).into();
        assert_eq!(three, expected);
        for s in 1..=64 {
            let ranges = shares(s);
            assert_eq!(ranges.iter().map(SlotRange::len).sum::<usize>(), 16384);
            assert!(ranges.windows(2).all(|w| w[0].last + 1 == w[1].first));
            let (min, max) = (
                ranges.iter().map(SlotRange::len).min(),
                ranges.iter().map(SlotRange::len).max(),
            );
            assert!(max.unwrap() - min.unwrap() <= 1, "{s} shards: {ranges:?}");
        }
    }

    #[test]
    fn ranges_of_groups_consecutive_slots() {
        let r = ranges_of([1, 2, 3, 7, 9, 10]);
        let expected = [(1, 3), (7, 7), (9, 10)].map(|(a, b)| SlotRange::new(a, b));
        assert_eq!(r, expected);
        assert_eq!(
            r.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["1-3", "7", "9-10"]
        );
    }
}

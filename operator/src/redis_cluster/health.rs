//! A summary of the cluster for the pipeline's status (pure): what serves,
//! what is missing, in numbers and one line for humans.

use super::plan::Pod;
use super::{Layout, SLOTS, SlotRange};

/// The cluster as the pods report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Slots some node claims (by any reachable pod's view).
    pub slots_assigned: usize,
    /// Slots a reachable primary serves by its own account.
    pub slots_served: usize,
    /// Shards the layout asks for.
    pub shards_wanted: usize,
    /// Reachable primaries that serve slots.
    pub shards: usize,
    /// Replicas of each of those primaries (reachable pods replicating it),
    /// in ordinal order of the primaries.
    pub replicas: Vec<usize>,
    /// Slots some pod has open (migrating or importing).
    pub open_slots: usize,
    /// `cluster_state` of each pod in ordinal order; `None` when unreachable.
    pub states: Vec<Option<String>>,
    /// E.g. "3 of 3 shards serving 16384 slots, 1 replica each".
    pub message: String,
}

impl Health {
    /// Every slot served, as many shards as asked for, every node ok.
    pub fn serving(&self) -> bool {
        self.slots_served == usize::from(SLOTS)
            && self.shards == self.shards_wanted
            && self.states.iter().all(|s| s.as_deref() == Some("ok"))
    }
}

/// The health of `pods` (in ordinal order) against `layout`.
pub fn summarize(layout: Layout, pods: &[Pod]) -> Health {
    let seen: Vec<_> = pods.iter().filter_map(|p| p.seen.as_ref().ok()).collect();
    let mut assigned = vec![false; usize::from(SLOTS)];
    for node in seen.iter().flat_map(|s| &s.view.nodes) {
        for r in &node.slots {
            assigned[usize::from(r.first)..=usize::from(r.last)].fill(true);
        }
    }
    let mine: Vec<_> = seen.iter().filter_map(|s| s.view.myself()).collect();
    let primaries: Vec<_> = mine
        .iter()
        .filter(|n| n.flags.master && !n.slots.is_empty())
        .collect();
    let served: usize = primaries
        .iter()
        .flat_map(|n| &n.slots)
        .map(SlotRange::len)
        .sum();
    let replicas: Vec<usize> = primaries
        .iter()
        .map(|p| {
            mine.iter()
                .filter(|n| n.primary.as_ref() == Some(&p.id))
                .count()
        })
        .collect();
    let mut open: Vec<u16> = mine
        .iter()
        .flat_map(|n| n.migrating.iter().chain(&n.importing))
        .map(|(s, _)| *s)
        .collect();
    open.sort_unstable();
    open.dedup();
    let states: Vec<Option<String>> = pods
        .iter()
        .map(|p| p.seen.as_ref().ok().map(|s| s.state.clone()))
        .collect();

    let mut message = format!(
        "{} of {} shards serving {served}",
        primaries.len(),
        layout.shards
    );
    if served != usize::from(SLOTS) {
        message += &format!(" of {SLOTS}");
    }
    message += " slots, ";
    message += &match replicas.first() {
        Some(&n) if replicas.iter().all(|&m| m == n) => match n {
            0 => "no replicas".to_string(),
            1 => "1 replica each".to_string(),
            n => format!("{n} replicas each"),
        },
        _ if replicas.is_empty() => "no replicas".to_string(),
        _ => {
            let counts: Vec<String> = replicas.iter().map(ToString::to_string).collect();
            format!("replicas {}", counts.join("/"))
        }
    };
    let down = states.iter().filter(|s| s.is_none()).count();
    let failing = states
        .iter()
        .filter(|s| s.as_deref().is_some_and(|s| s != "ok"))
        .count();
    let notes = [(down, "unreachable"), (failing, "not cluster_state:ok")];
    for (n, what) in notes.into_iter().filter(|(n, _)| *n > 0) {
        message += &format!("; {n} {} {what}", if n == 1 { "pod" } else { "pods" });
    }
    if !open.is_empty() {
        message += &format!(
            "; {} {} open",
            open.len(),
            if open.len() == 1 { "slot" } else { "slots" }
        );
    }
    Health {
        slots_assigned: assigned.iter().filter(|&&a| a).count(),
        slots_served: served,
        shards_wanted: layout.shards,
        shards: primaries.len(),
        replicas,
        open_slots: open.len(),
        states,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis_cluster::fixture::Sim;

    #[test]
    fn health_names_what_is_missing() {
        let mut sim = Sim::formed(3, 1);
        sim.pods[4].up = false;
        sim.pods[0].migrating.push((5, 1));
        let health = summarize(
            Layout {
                shards: 3,
                replicas_per_shard: 1,
            },
            &sim.observe(),
        );
        assert_eq!(
            health.message,
            "3 of 3 shards serving 16384 slots, replicas 1/0/1; 1 pod unreachable; 1 slot open"
        );
        assert!(!health.serving());
        sim.pods[2].up = false;
        let health = summarize(
            Layout {
                shards: 3,
                replicas_per_shard: 1,
            },
            &sim.observe(),
        );
        assert_eq!(health.slots_served, 10923);
        assert!(
            health
                .message
                .starts_with("2 of 3 shards serving 10923 of 16384 slots"),
            "{}",
            health.message
        );
        assert_eq!(health.states[2], None);
    }
}

//! The next steps towards the desired cluster, a pure function of what every
//! pod reports (the heart of [`super`]).
//!
//! Priorities, each only once the previous ones have nothing to do:
//! 1. membership: every reachable pod knows every other one (`Meet`);
//! 2. open slots left by an interrupted migration are finished (`CloseSlot`);
//! 3. slots nobody owns (a fresh cluster) go to the designated primaries
//!    (`AssignSlots`);
//! 4. empty pods not needed as primaries become replicas (`Replicate`), and
//!    slots move so that every primary owns an equal contiguous share
//!    (`MoveSlots`, at most [`MAX_SLOTS_PER_ROUND`] per round);
//! 5. otherwise wait until every node agrees and says `cluster_state:ok`.
//!
//! What may lose data is never planned: no slot owned anywhere is assigned,
//! no node holding slots is made a replica, forgotten or reset, and a
//! layout with fewer shards than now serve is refused (`Blocked`).

use std::fmt;

use super::nodes::View;
use super::{Layout, SLOTS, SlotRange};
use cluster::Cluster;

mod assign;
mod cluster;
#[cfg(test)]
mod tests;

/// One pod of the StatefulSet, in ordinal order, as observed.
#[derive(Clone, Debug)]
pub struct Pod {
    /// `host:port` the operator reaches it at.
    pub addr: String,
    /// What it reported, or why it could not be asked.
    pub seen: Result<Seen, String>,
}

/// What a reachable pod reported.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Its `CLUSTER NODES`.
    pub view: View,
    /// `cluster_state` of its `CLUSTER INFO` (`ok` or `fail`).
    pub state: String,
}

/// One action on the cluster; pods are indices into the observed pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `CLUSTER MEET` on `node` with `peer`'s address.
    Meet { node: usize, peer: usize },
    /// `CLUSTER ADDSLOTSRANGE` on `node`: slots that no node owns.
    AssignSlots { node: usize, ranges: Vec<SlotRange> },
    /// `CLUSTER REPLICATE` on `node` (empty) of `primary`.
    Replicate { node: usize, primary: usize },
    /// Finish a migration left open: move the slot's remaining keys from
    /// `from` to `to` and give the slot to `to`.
    CloseSlot { slot: u16, from: usize, to: usize },
    /// Live migration of `slots` (every key, then the ownership) from `from`
    /// to `to`.
    MoveSlots {
        from: usize,
        to: usize,
        slots: SlotRange,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Meet { node, peer } => write!(f, "pod {node} meets pod {peer}"),
            Step::AssignSlots { node, ranges } => {
                let ranges: Vec<String> = ranges.iter().map(ToString::to_string).collect();
                write!(f, "pod {node} takes slots {}", ranges.join(","))
            }
            Step::Replicate { node, primary } => write!(f, "pod {node} replicates pod {primary}"),
            Step::CloseSlot { slot, from, to } => {
                write!(
                    f,
                    "slot {slot} left open finishes moving from pod {from} to pod {to}"
                )
            }
            Step::MoveSlots { from, to, slots } => {
                write!(f, "slots {slots} move from pod {from} to pod {to}")
            }
        }
    }
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// These steps, in order.
    Steps(Vec<Step>),
    /// Nothing to do but wait (gossip, a failover, a pod starting): why.
    Wait(String),
    /// Nothing will be done until the spec or the pods change: why.
    Blocked(String),
    /// The cluster is as desired, as far as the pods allow: every pod
    /// reachable and agreeing, every slot in its share, no slot open, every
    /// node `cluster_state:ok`, and as many replicas as there were pods for
    /// (fewer pods than S×(1+R) show in the health, not here).
    Converged,
}

/// The next steps for `pods` (in ordinal order) to reach `layout`.
pub fn plan(layout: Layout, pods: &[Pod]) -> Plan {
    if layout.shards == 0 {
        return Plan::Blocked("a cluster needs at least one shard".into());
    }
    let c = Cluster::new(pods);
    let Some(&hub) = c.reachable.first() else {
        return Plan::Wait("no pod is reachable".into());
    };
    let mut waits: Vec<String> = c.unreachable_reasons();

    // A meet in flight completes (or times out) on its own; meeting again
    // meanwhile only adds handshakes.
    if let Some(p) = c
        .reachable
        .iter()
        .find(|&&p| c.view(p).nodes.iter().any(|n| n.flags.handshake))
    {
        return Plan::Wait(format!("pod {p} is in a handshake"));
    }
    let meets = c.meets(hub);
    if !meets.is_empty() {
        return Plan::Steps(meets);
    }
    // Slots and roles are only decided on a membership everyone agrees on.
    let links = c.unhealthy_links();
    if let Some(first) = links.first() {
        return Plan::Wait(first.clone());
    }

    let (closes, close_waits) = c.closes();
    if !closes.is_empty() {
        return Plan::Steps(closes);
    }
    waits.extend(close_waits);

    let owners = match c.owners() {
        Ok(owners) => owners,
        Err(conflict) => return Plan::Wait(conflict),
    };
    let with_slots: Vec<usize> = c
        .reachable
        .iter()
        .copied()
        .filter(|&p| c.claims(p) > 0)
        .collect();
    if with_slots.len() > layout.shards {
        return Plan::Blocked(format!(
            "{} shards serve slots but the layout asks for {}: removing shards is not supported",
            with_slots.len(),
            layout.shards
        ));
    }
    let empties: Vec<usize> = c
        .reachable
        .iter()
        .copied()
        .filter(|&p| c.is_empty_primary(p))
        .collect();
    let needed = layout.shards - with_slots.len();
    if empties.len() < needed {
        let why = format!(
            "the layout asks for {} shards: {} serve slots and only {} more pods can become primaries",
            layout.shards,
            with_slots.len(),
            empties.len()
        );
        if c.reachable.len() < pods.len() {
            waits.push(why);
            return wait(waits);
        }
        return Plan::Blocked(why);
    }
    let mut primaries: Vec<usize> = with_slots
        .iter()
        .chain(&empties[..needed])
        .copied()
        .collect();
    primaries.sort_unstable();

    let unowned: Vec<u16> = (0..SLOTS)
        .filter(|&s| !c.claimed_anywhere[usize::from(s)])
        .collect();
    if !unowned.is_empty() {
        if c.reachable.len() < pods.len() {
            waits.push(format!("{} slots have no owner", unowned.len()));
            return wait(waits);
        }
        return Plan::Steps(assign::unowned(layout, &primaries, &owners, &unowned));
    }

    let mut steps = c.replicates(layout, &primaries);
    let (moves, move_waits) = assign::moves(layout, &primaries, &owners);
    // A node refuses the keys of a migration (CLUSTERDOWN) until it says
    // cluster_state:ok, which one that has just joined does not for a few
    // seconds: slots move between serving nodes only.
    let not_serving = moves
        .iter()
        .flat_map(|m| match m {
            Step::MoveSlots { from, to, .. } => vec![*from, *to],
            _ => Vec::new(),
        })
        .find(|&p| c.state(p) != "ok");
    match not_serving {
        Some(p) if steps.is_empty() => {
            return Plan::Wait(format!(
                "pod {p} says cluster_state:{}: slots move to it once it serves",
                c.state(p)
            ));
        }
        Some(_) => {}
        None => steps.extend(moves),
    }
    if !steps.is_empty() {
        return Plan::Steps(steps);
    }
    waits.extend(move_waits);
    waits.extend(c.disagreements());
    if waits.is_empty() {
        Plan::Converged
    } else {
        wait(waits)
    }
}

/// Waiting for the first reason (pods unreachable come first: they explain
/// most of the rest), with how many more there are.
fn wait(waits: Vec<String>) -> Plan {
    match waits.len() {
        0 | 1 => Plan::Wait(waits.into_iter().next().unwrap_or_default()),
        n => Plan::Wait(format!("{} (and {} more)", waits[0], n - 1)),
    }
}

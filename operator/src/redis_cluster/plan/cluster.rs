//! The observation indexed for planning: who is reachable, who knows whom,
//! who claims which slot, and what blocks the next steps.

use std::collections::BTreeMap;

use super::{Pod, Step};
use crate::redis_cluster::nodes::{Node, View};
use crate::redis_cluster::{Layout, MAX_SLOTS_PER_ROUND, SLOTS, SlotRange};

/// The observation, indexed for planning.
pub struct Cluster<'a> {
    pub pods: &'a [Pod],
    /// Indices of the pods that answered, in ordinal order.
    pub reachable: Vec<usize>,
    /// Whether any view (also of nodes no longer reachable) lists the slot.
    pub claimed_anywhere: Vec<bool>,
}

impl<'a> Cluster<'a> {
    pub fn new(pods: &'a [Pod]) -> Self {
        let reachable = (0..pods.len()).filter(|&p| pods[p].seen.is_ok()).collect();
        let mut claimed_anywhere = vec![false; usize::from(SLOTS)];
        let views = pods.iter().filter_map(|p| p.seen.as_ref().ok());
        for node in views.flat_map(|s| &s.view.nodes) {
            for r in &node.slots {
                claimed_anywhere[usize::from(r.first)..=usize::from(r.last)].fill(true);
            }
        }
        Cluster {
            pods,
            reachable,
            claimed_anywhere,
        }
    }

    /// The `cluster_state` a reachable pod reports.
    pub fn state(&self, p: usize) -> &'a str {
        &self.pods[p].seen.as_ref().expect("reachable").state
    }

    pub fn view(&self, p: usize) -> &'a View {
        &self.pods[p].seen.as_ref().expect("a reachable pod").view
    }

    /// The pod's own line.
    pub fn me(&self, p: usize) -> &'a Node {
        self.view(p)
            .myself()
            .expect("a parsed view has its own line")
    }

    /// The reachable pod with this node ID.
    pub fn pod_of(&self, id: &str) -> Option<usize> {
        self.reachable
            .iter()
            .copied()
            .find(|&p| self.me(p).id == id)
    }

    /// Whether `a` knows `b` under its current ID (past the handshake).
    pub fn knows(&self, a: usize, b: usize) -> bool {
        let line = self.view(a).node(&self.me(b).id);
        line.is_some_and(|n| !n.flags.handshake)
    }

    /// Slots the pod serves by its own account.
    pub fn claims(&self, p: usize) -> usize {
        self.me(p).slots.iter().map(SlotRange::len).sum()
    }

    pub fn is_empty_primary(&self, p: usize) -> bool {
        let me = self.me(p);
        me.flags.master && me.slots.is_empty() && me.migrating.is_empty() && me.importing.is_empty()
    }

    pub fn unreachable_reasons(&self) -> Vec<String> {
        let down = self
            .pods
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.seen.as_ref().err().map(|e| (i, p, e)));
        down.map(|(i, p, e)| format!("pod {i} ({}) is unreachable: {e}", p.addr))
            .collect()
    }

    /// Meets from the hub to every pod it does not know, else back to the
    /// hub from pods that do not know it, else between any two pods that
    /// still do not know each other (gossip usually does this).
    pub fn meets(&self, hub: usize) -> Vec<Step> {
        let others = self.reachable.iter().copied().filter(|&b| b != hub);
        let from_hub: Vec<Step> = others
            .clone()
            .filter(|&b| !self.knows(hub, b))
            .map(|peer| Step::Meet { node: hub, peer })
            .collect();
        if !from_hub.is_empty() {
            return from_hub;
        }
        let to_hub: Vec<Step> = others
            .filter(|&b| !self.knows(b, hub))
            .map(|node| Step::Meet { node, peer: hub })
            .collect();
        if !to_hub.is_empty() {
            return to_hub;
        }
        let pairs = self
            .reachable
            .iter()
            .flat_map(|&a| self.reachable.iter().map(move |&b| (a, b)));
        let pairs = pairs.filter(|&(a, b)| a < b && !self.knows(a, b) && !self.knows(b, a));
        pairs
            .map(|(node, peer)| Step::Meet { node, peer })
            .collect()
    }

    /// Reachable pods that some reachable pod sees as failing or disconnected.
    pub fn unhealthy_links(&self) -> Vec<String> {
        let mut found = Vec::new();
        for &a in &self.reachable {
            for &b in self.reachable.iter().filter(|&&b| b != a) {
                match self.view(a).node(&self.me(b).id) {
                    None => found.push(format!("pod {a} does not know pod {b} yet")),
                    Some(n) if !n.flags.healthy() || !n.connected => found.push(format!(
                        "pod {a} sees pod {b} as {:?}, link {}",
                        n.flags,
                        if n.connected { "up" } else { "down" }
                    )),
                    Some(_) => {}
                }
            }
        }
        found
    }

    /// `CloseSlot` for every slot a reachable pod has open, at most
    /// [`MAX_SLOTS_PER_ROUND`]; and why some cannot be closed yet.
    pub fn closes(&self) -> (Vec<Step>, Vec<String>) {
        let (mut steps, mut waits) = (BTreeMap::new(), Vec::new());
        for &p in &self.reachable {
            for (slot, to) in &self.me(p).migrating {
                match self.pod_of(to) {
                    Some(to) => drop(steps.insert(
                        *slot,
                        Step::CloseSlot {
                            slot: *slot,
                            from: p,
                            to,
                        },
                    )),
                    None => waits.push(format!(
                        "slot {slot} of pod {p} migrates to {to}, which is not reachable"
                    )),
                }
            }
        }
        for &p in &self.reachable {
            for (slot, from) in &self.me(p).importing {
                // Keys left anywhere are on the importer or the owner; only
                // a reachable owner may hand the slot over (an owner that is
                // down would drop its keys on learning it lost the slot).
                let owner = self.reachable.iter().copied().find(|&o| {
                    self.me(o)
                        .slots
                        .iter()
                        .any(|r| (r.first..=r.last).contains(slot))
                });
                match owner {
                    Some(from) if from != p => {
                        let close = Step::CloseSlot {
                            slot: *slot,
                            from,
                            to: p,
                        };
                        steps.entry(*slot).or_insert(close);
                    }
                    _ => waits.push(format!(
                        "slot {slot} of pod {p} imports from {from}; its owner is not reachable"
                    )),
                }
            }
        }
        (
            steps.into_values().take(MAX_SLOTS_PER_ROUND).collect(),
            waits,
        )
    }

    /// The reachable pod that serves each slot by its own account; an error
    /// when two claim the same slot (a config-epoch conflict Redis resolves).
    pub fn owners(&self) -> Result<Vec<Option<usize>>, String> {
        let mut owners = vec![None; usize::from(SLOTS)];
        for &p in &self.reachable {
            for s in self.me(p).slots.iter().flat_map(SlotRange::slots) {
                if let Some(q) = owners[usize::from(s)].replace(p) {
                    return Err(format!("pods {q} and {p} both claim slot {s}"));
                }
            }
        }
        Ok(owners)
    }

    /// Empty pods that are not among `primaries` replicate the primary with
    /// the fewest replicas while it has fewer than asked for.
    pub fn replicates(&self, layout: Layout, primaries: &[usize]) -> Vec<Step> {
        let replicas_of = |q: usize| {
            let id = &self.me(q).id;
            self.reachable
                .iter()
                .filter(|&&r| self.me(r).primary.as_ref() == Some(id))
                .count()
        };
        let mut counts: Vec<(usize, usize)> =
            primaries.iter().map(|&q| (replicas_of(q), q)).collect();
        let spares = self
            .reachable
            .iter()
            .copied()
            .filter(|&p| self.is_empty_primary(p) && !primaries.contains(&p));
        let mut steps = Vec::new();
        for node in spares {
            let Some(least) = counts
                .iter_mut()
                .filter(|(n, _)| *n < layout.replicas_per_shard)
                .min()
            else {
                break;
            };
            least.0 += 1;
            steps.push(Step::Replicate {
                node,
                primary: least.1,
            });
        }
        steps
    }

    /// Where a pod's view still differs from what the pods say of
    /// themselves (slots, roles), or a node is not `cluster_state:ok`.
    pub fn disagreements(&self) -> Vec<String> {
        let mut found = Vec::new();
        for &a in &self.reachable {
            let state = &self.pods[a].seen.as_ref().expect("reachable").state;
            if state != "ok" {
                found.push(format!("pod {a} says cluster_state:{state}"));
            }
            for &b in &self.reachable {
                let (me, seen) = (self.me(b), self.view(a).node(&self.me(b).id));
                let agrees = seen.is_some_and(|n| n.slots == me.slots && n.primary == me.primary);
                if !agrees {
                    found.push(format!(
                        "pod {a} does not yet see the slots and role pod {b} has"
                    ));
                }
            }
        }
        found
    }
}

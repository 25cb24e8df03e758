//! A simulated cluster for the pure parts' tests: pods whose `CLUSTER
//! NODES` is rendered as Redis writes it (and parsed back), and which the
//! planned steps change as Redis would, checking the plan never risks data.

use super::plan::{Pod, Seen, Step};
use super::{SLOTS, SlotRange, nodes, shares};

/// One simulated pod.
#[derive(Clone, Debug)]
pub struct SimPod {
    pub id: String,
    pub up: bool,
    pub state: &'static str,
    pub primary: Option<usize>,
    pub slots: Vec<bool>,
    pub migrating: Vec<(u16, usize)>,
    pub importing: Vec<(u16, usize)>,
    /// Pods it knows (itself included).
    pub knows: Vec<bool>,
    /// Pods it sees failing.
    pub failing: Vec<bool>,
}

/// Pods in ordinal order.
#[derive(Clone, Debug)]
pub struct Sim {
    pub pods: Vec<SimPod>,
}

impl Sim {
    /// `n` fresh pods that know only themselves.
    pub fn fresh(n: usize) -> Sim {
        let mut sim = Sim { pods: Vec::new() };
        for _ in 0..n {
            sim.add();
        }
        sim
    }

    /// A formed cluster: pods `0..shards` own the shares, then `replicas`
    /// replicas of each in turn; everyone knows everyone.
    pub fn formed(shards: usize, replicas: usize) -> Sim {
        let mut sim = Sim::fresh(shards * (1 + replicas));
        sim.meet_all();
        for (i, r) in shares(shards).iter().enumerate() {
            sim.pods[i].slots[usize::from(r.first)..=usize::from(r.last)].fill(true);
        }
        for r in shards..sim.pods.len() {
            sim.pods[r].primary = Some((r - shards) % shards);
        }
        sim
    }

    /// One more fresh pod (knowing only itself).
    pub fn add(&mut self) -> usize {
        let i = self.pods.len();
        for p in &mut self.pods {
            p.knows.push(false);
            p.failing.push(false);
        }
        let mut knows = vec![false; i + 1];
        knows[i] = true;
        self.pods.push(SimPod {
            id: format!("{:040x}", 0xabc0 + i),
            up: true,
            state: "ok",
            primary: None,
            slots: vec![false; usize::from(SLOTS)],
            migrating: Vec::new(),
            importing: Vec::new(),
            knows,
            failing: vec![false; i + 1],
        });
        i
    }

    pub fn meet_all(&mut self) -> &mut Self {
        let n = self.pods.len();
        self.pods.iter_mut().for_each(|p| p.knows = vec![true; n]);
        self
    }

    /// Slots pod `p` owns, as ranges.
    pub fn ranges(&self, p: usize) -> Vec<SlotRange> {
        super::ranges_of((0..SLOTS).filter(|&s| self.pods[p].slots[usize::from(s)]))
    }

    /// The pods as `plan` sees them.
    pub fn observe(&self) -> Vec<Pod> {
        (0..self.pods.len()).map(|i| self.observe_one(i)).collect()
    }

    fn observe_one(&self, i: usize) -> Pod {
        let addr = format!("redis-{i}.redis:6379");
        if !self.pods[i].up {
            return Pod {
                addr,
                seen: Err("connection refused".into()),
            };
        }
        let me = &self.pods[i];
        let mut text = String::new();
        for (j, p) in self.pods.iter().enumerate().filter(|&(j, _)| me.knows[j]) {
            let mut flags = vec![];
            if i == j {
                flags.push("myself");
            }
            flags.push(if p.primary.is_some() {
                "slave"
            } else {
                "master"
            });
            if me.failing[j] {
                flags.push("fail");
            }
            let primary = p
                .primary
                .map_or("-".to_string(), |q| self.pods[q].id.clone());
            let link = if me.failing[j] {
                "disconnected"
            } else {
                "connected"
            };
            text += &format!(
                "{} 10.0.0.{j}:6379@16379 {} {primary} 0 0 1 {link}",
                p.id,
                flags.join(",")
            );
            for r in self.ranges(j) {
                text += &format!(" {r}");
            }
            if i == j {
                for (s, to) in &p.migrating {
                    text += &format!(" [{s}->-{}]", self.pods[*to].id);
                }
                for (s, from) in &p.importing {
                    text += &format!(" [{s}-<-{}]", self.pods[*from].id);
                }
            }
            text += "\n";
        }
        let view = nodes::parse(&text).expect("the simulation renders valid CLUSTER NODES");
        Pod {
            addr,
            seen: Ok(Seen {
                view,
                state: me.state.into(),
            }),
        }
    }

    /// Applies a step as Redis would (gossip included: everyone learns at
    /// once), panicking where the step could lose data.
    pub fn apply(&mut self, step: &Step) {
        match *step {
            Step::Meet { node, peer } => {
                assert!(
                    self.pods[node].up && self.pods[peer].up,
                    "{step}: to a pod that is down"
                );
                let n = self.pods.len();
                let group: Vec<bool> = (0..n)
                    .map(|j| self.pods[node].knows[j] || self.pods[peer].knows[j])
                    .collect();
                for j in (0..n).filter(|&j| group[j]) {
                    for k in (0..n).filter(|&k| group[k]) {
                        self.pods[j].knows[k] = true;
                    }
                }
            }
            Step::AssignSlots { node, ref ranges } => {
                for s in ranges.iter().flat_map(SlotRange::slots) {
                    let owner = self.pods.iter().position(|p| p.slots[usize::from(s)]);
                    assert_eq!(owner, None, "{step}: slot {s} is owned");
                    self.pods[node].slots[usize::from(s)] = true;
                }
            }
            Step::Replicate { node, primary } => {
                assert!(
                    !self.pods[node].slots.contains(&true),
                    "{step}: the node holds slots"
                );
                assert!(self.pods[primary].primary.is_none(), "{step}: to a replica");
                self.pods[node].primary = Some(primary);
            }
            Step::CloseSlot { slot, from, to } => self.move_slot(slot, from, to),
            Step::MoveSlots { from, to, slots } => {
                for s in slots.slots() {
                    assert!(
                        self.pods[from].slots[usize::from(s)],
                        "{step}: pod {from} does not own {s}"
                    );
                    self.move_slot(s, from, to);
                }
            }
        }
    }

    fn move_slot(&mut self, slot: u16, from: usize, to: usize) {
        assert!(
            self.pods[from].up && self.pods[to].up,
            "moving {slot} between pods that are down"
        );
        assert!(
            self.pods[to].primary.is_none(),
            "moving {slot} to a replica"
        );
        for p in &mut self.pods {
            p.slots[usize::from(slot)] = false;
            p.migrating.retain(|(s, _)| *s != slot);
            p.importing.retain(|(s, _)| *s != slot);
        }
        self.pods[to].slots[usize::from(slot)] = true;
    }
}

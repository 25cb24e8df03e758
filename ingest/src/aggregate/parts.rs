//! The plans of one flush over the partitions of a sharded pipeline: each
//! event goes to its device's partition's plan, its scores on leaderboards
//! of users or attributes to their members' partitions' plans
//! ([`Share`]), and the outcome of each event is read back, in arrival
//! order, from the plan of its device's partition. With one partition (a
//! single Redis) this is one plan.

use telemetry_config::LeaderboardMember;

use super::{Plan, PlanSize, Settings, Share, Slot, member_of};
use crate::event::Event;
use crate::keys::Keys;
use crate::partition::Partitions;

/// One plan per partition that an event of the flush maps to.
#[derive(Debug)]
pub struct FlushPlan {
    /// (partition, its plan), in the order partitions were first met.
    parts: Vec<(usize, Plan)>,
    /// partition → index in `parts`, or `u32::MAX`.
    index: Vec<u32>,
    /// Per event added, the index in `parts` of its home plan.
    route: Vec<u32>,
    /// Per event added, where its member parts start in `member_parts`.
    member_start: Vec<u32>,
    /// Indices in `parts` of the plans holding events' member shares.
    member_parts: Vec<u32>,
    events: usize,
    cost: f64,
}

impl FlushPlan {
    /// An empty flush over `partitions` partitions; with one, its plan is
    /// sized like the last flush's (`last`).
    pub fn new(partitions: usize, last: PlanSize) -> FlushPlan {
        let mut plan = FlushPlan {
            parts: Vec::new(),
            index: vec![u32::MAX; partitions],
            route: Vec::new(),
            member_start: Vec::new(),
            member_parts: Vec::new(),
            events: 0,
            cost: 0.0,
        };
        if partitions == 1 {
            plan.parts.push((0, Plan::sized_like(last)));
            plan.index[0] = 0;
        }
        plan
    }

    /// Adds `e`: to its device's partition, and its scores on leaderboards
    /// of users or attributes to their members' partitions; `keys` are the
    /// keys of each partition.
    pub fn add(&mut self, e: &Event, settings: &Settings, partitions: &Partitions, keys: &[Keys]) {
        let home = partitions.of(&e.device_id);
        self.member_start.push(self.member_parts.len() as u32);
        let boards = &settings.config.leaderboards;
        let spread = partitions.count() > 1
            && !settings.drops(e)
            && boards
                .iter()
                .any(|l| l.member != LeaderboardMember::DeviceId);
        if !spread {
            let i = self.part(home);
            self.add_to(i, e, settings, &keys[home], Share::Whole);
            self.route.push(i);
            self.events += 1;
            return;
        }
        // The member partition of each board, where not the device's.
        let mut elsewhere = vec![false; boards.len()];
        let mut remote: Vec<(usize, Vec<bool>)> = Vec::new();
        for (b, l) in boards.iter().enumerate() {
            if l.member == LeaderboardMember::DeviceId {
                continue;
            }
            let Some(member) = member_of(l, e) else {
                continue;
            };
            let p = partitions.of(member);
            if p == home {
                continue;
            }
            elsewhere[b] = true;
            match remote.iter_mut().find(|(q, _)| *q == p) {
                Some((_, flags)) => flags[b] = true,
                None => {
                    let mut flags = vec![false; boards.len()];
                    flags[b] = true;
                    remote.push((p, flags));
                }
            }
        }
        let i = self.part(home);
        let share = if remote.is_empty() {
            Share::Whole
        } else {
            Share::Home {
                elsewhere: &elsewhere,
            }
        };
        self.add_to(i, e, settings, &keys[home], share);
        self.route.push(i);
        for (p, flags) in &remote {
            let j = self.part(*p);
            self.add_to(j, e, settings, &keys[*p], Share::Members { boards: flags });
            self.member_parts.push(j);
        }
        self.events += 1;
    }

    /// The index in `parts` of partition `p`'s plan, made when missing.
    fn part(&mut self, p: usize) -> u32 {
        let mut i = self.index[p];
        if i == u32::MAX {
            i = self.parts.len() as u32;
            self.index[p] = i;
            self.parts.push((p, Plan::default()));
        }
        i
    }

    fn add_to(&mut self, i: u32, e: &Event, settings: &Settings, keys: &Keys, share: Share<'_>) {
        let plan = &mut self.parts[i as usize].1;
        let before = plan.cost_micros();
        plan.add_share(e, settings, keys, share);
        self.cost += plan.cost_micros() - before;
    }

    pub fn events(&self) -> usize {
        self.events
    }

    /// Estimated Redis time of every part together.
    pub fn cost_micros(&self) -> f64 {
        self.cost
    }

    /// Estimated Redis time of the costliest part (one script call).
    pub fn largest_part_cost(&self) -> f64 {
        self.parts
            .iter()
            .map(|(_, p)| p.cost_micros())
            .fold(0.0, f64::max)
    }

    /// Events of the largest part.
    pub fn largest_part_events(&self) -> usize {
        self.parts
            .iter()
            .map(|(_, p)| p.events())
            .max()
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(|(_, p)| p.is_empty())
    }

    /// The parts: (partition, plan).
    pub fn parts(&self) -> &[(usize, Plan)] {
        &self.parts
    }

    /// The size of the one plan (for the next flush to be sized like it).
    pub fn size(&self) -> PlanSize {
        match self.parts.as_slice() {
            [(_, plan)] => plan.size(),
            _ => PlanSize::default(),
        }
    }

    /// Each event's home part (index in [`FlushPlan::parts`]), its slot
    /// there, and the parts holding its member shares, in the order the
    /// events were added.
    pub fn slots(&self) -> impl Iterator<Item = (usize, Slot, &[u32])> + '_ {
        let mut next = vec![0usize; self.parts.len()];
        self.route.iter().enumerate().map(move |(n, &i)| {
            let i = i as usize;
            let slot = self.parts[i].1.slots[next[i]];
            next[i] += 1;
            let start = self.member_start[n] as usize;
            let end = self
                .member_start
                .get(n + 1)
                .map_or(self.member_parts.len(), |&e| e as usize);
            (i, slot, &self.member_parts[start..end])
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::fixtures::{event, settings};
    use super::*;
    use telemetry_config::{LeaderboardBucket, LeaderboardConfig, LeaderboardScore};

    #[test]
    fn events_go_to_their_partition_and_come_back_in_order() {
        let partitions = Partitions::sharded("p", 4);
        let keys: Vec<Keys> = (0..4).map(|p| Keys::with_tag(partitions.tag(p))).collect();
        let settings = Settings::default();
        let mut plan = FlushPlan::new(4, PlanSize::default());
        let devices: Vec<String> = (0..40).map(|i| format!("dev-{i}")).collect();
        for d in &devices {
            plan.add(&event(d, None, 1.0), &settings, &partitions, &keys);
        }
        assert_eq!(plan.events(), 40);
        assert!(plan.parts().len() > 1, "40 devices over 4 partitions");
        let total: f64 = plan.parts().iter().map(|(_, p)| p.cost_micros()).sum();
        assert!((plan.cost_micros() - total).abs() < 1e-9);
        let largest = plan
            .parts()
            .iter()
            .map(|(_, p)| p.cost_micros())
            .fold(0.0, f64::max);
        assert_eq!(plan.largest_part_cost(), largest);
        assert!(largest < total, "the cost is spread");
        assert!(plan.largest_part_events() < 40);
        // Each event's slot is read from its own partition's plan.
        for (d, (part, _, members)) in devices.iter().zip(plan.slots()) {
            assert_eq!(plan.parts()[part].0, partitions.of(d), "{d}");
            assert!(members.is_empty(), "no leaderboards of users");
        }
        let per_part: usize = plan.parts().iter().map(|(_, p)| p.slots.len()).sum();
        assert_eq!(per_part, 40);
    }

    #[test]
    fn scores_of_users_go_to_the_user_s_partition_claimed_there() {
        let partitions = Partitions::sharded("p", 4);
        let keys: Vec<Keys> = (0..4).map(|p| Keys::with_tag(partitions.tag(p))).collect();
        let settings = settings(|c| {
            c.leaderboards = vec![LeaderboardConfig {
                name: "spenders".into(),
                event_type: None,
                member: LeaderboardMember::UserId,
                member_attribute: None,
                score: LeaderboardScore::Sum,
                bucket: LeaderboardBucket::Day,
                retention_seconds: 86_400,
            }];
        });
        // One device, users in every partition.
        let home = partitions.of("dev-1");
        let users: Vec<String> = (0..20).map(|i| format!("user-{i}")).collect();
        let mut plan = FlushPlan::new(4, PlanSize::default());
        for (i, u) in users.iter().enumerate() {
            let mut e = event("dev-1", Some(&format!("e{i}")), 2.0);
            e.user_id = Some(u.clone());
            plan.add(&e, &settings, &partitions, &keys);
        }
        let none = HashSet::new();
        for (p, part) in plan.parts() {
            let w = part.writes(&none);
            let members: HashSet<&str> = w
                .groups
                .iter()
                .filter(|g| g.key.contains(":lb:spenders:"))
                .flat_map(|g| g.fields.iter().map(|(m, _)| *m))
                .collect();
            // Every member scored in a partition is one of its own.
            for m in &members {
                assert_eq!(partitions.of(m), *p, "{m} scored in partition {p}");
            }
            let claims: Vec<&str> = w.claims.iter().map(|c| c.key).collect();
            if *p == home {
                assert!(claims.iter().all(|k| k.contains(":dedup:")), "{claims:?}");
                assert_eq!(part.slots.len(), 20, "the events' outcomes live at home");
            } else {
                assert!(!members.is_empty());
                assert!(claims.iter().all(|k| k.contains(":mclaims:")), "{claims:?}");
                assert!(part.slots.is_empty(), "member shares add no outcome");
            }
        }
        // Each event depends on its home part and on its user's part.
        for ((part, _, members), u) in plan.slots().zip(&users) {
            assert_eq!(plan.parts()[part].0, home);
            let theirs: Vec<usize> = members
                .iter()
                .map(|&j| plan.parts()[j as usize].0)
                .collect();
            let want = if partitions.of(u) == home {
                vec![]
            } else {
                vec![partitions.of(u)]
            };
            assert_eq!(theirs, want, "{u}");
        }
    }
}

//! The plans of one flush over the partitions of a sharded pipeline: each
//! event goes to its partition's plan, and the outcome of each event is read
//! back, in arrival order, from the plan that holds it. With one partition
//! (a single Redis) this is one plan.

use super::{Plan, PlanSize, Settings, Slot};
use crate::event::Event;
use crate::keys::Keys;

/// One plan per partition that an event of the flush maps to.
#[derive(Debug)]
pub struct FlushPlan {
    /// (partition, its plan), in the order partitions were first met.
    parts: Vec<(usize, Plan)>,
    /// partition → index in `parts`, or `u32::MAX`.
    index: Vec<u32>,
    /// Per event added, the index in `parts` of its plan.
    route: Vec<u32>,
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
            events: 0,
            cost: 0.0,
        };
        if partitions == 1 {
            plan.parts.push((0, Plan::sized_like(last)));
            plan.index[0] = 0;
        }
        plan
    }

    /// Adds `e` to the plan of `partition`, whose keys are `keys`.
    pub fn add(&mut self, e: &Event, settings: &Settings, partition: usize, keys: &Keys) {
        let mut i = self.index[partition];
        if i == u32::MAX {
            i = self.parts.len() as u32;
            self.index[partition] = i;
            self.parts.push((partition, Plan::default()));
        }
        let plan = &mut self.parts[i as usize].1;
        let before = plan.cost_micros();
        plan.add(e, settings, keys);
        self.cost += plan.cost_micros() - before;
        self.events += 1;
        self.route.push(i);
    }

    pub fn events(&self) -> usize {
        self.events
    }

    /// Estimated Redis time of every part together.
    pub fn cost_micros(&self) -> f64 {
        self.cost
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

    /// Each event's part (index in [`FlushPlan::parts`]) and slot, in the
    /// order the events were added.
    pub fn slots(&self) -> impl Iterator<Item = (usize, Slot)> + '_ {
        let mut next = vec![0usize; self.parts.len()];
        self.route.iter().map(move |&i| {
            let i = i as usize;
            let slot = self.parts[i].1.slots[next[i]];
            next[i] += 1;
            (i, slot)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::event;
    use super::*;
    use crate::partition::Partitions;

    #[test]
    fn events_go_to_their_partition_and_come_back_in_order() {
        let partitions = Partitions::sharded("p", 4);
        let keys: Vec<Keys> = (0..4).map(|p| Keys::with_tag(partitions.tag(p))).collect();
        let settings = Settings::default();
        let mut plan = FlushPlan::new(4, PlanSize::default());
        let devices: Vec<String> = (0..40).map(|i| format!("dev-{i}")).collect();
        for d in &devices {
            let p = partitions.of(d);
            plan.add(&event(d, None, 1.0), &settings, p, &keys[p]);
        }
        assert_eq!(plan.events(), 40);
        assert!(plan.parts().len() > 1, "40 devices over 4 partitions");
        let total: f64 = plan.parts().iter().map(|(_, p)| p.cost_micros()).sum();
        assert!((plan.cost_micros() - total).abs() < 1e-9);
        // Each event's slot is read from its own partition's plan.
        for (d, (part, _)) in devices.iter().zip(plan.slots()) {
            assert_eq!(plan.parts()[part].0, partitions.of(d), "{d}");
        }
        let per_part: usize = plan.parts().iter().map(|(_, p)| p.slots.len()).sum();
        assert_eq!(per_part, 40);
    }
}

//! Which primary should own each share — the assignment that keeps the most
//! slots where they are, so that a reshard moves as few keys as possible —
//! and the steps that get the slots there.

use std::collections::BTreeMap;

use super::Step;
use crate::redis_cluster::{Layout, MAX_SLOTS_PER_ROUND, SLOTS, SlotRange, ranges_of, shares};

/// Above this many primaries the exact search (2^k states) gives way to a
/// greedy choice.
const EXACT_UP_TO: usize = 16;

/// The pod that should own each slot: share i of `shards` goes to one of
/// `primaries` (as many as shards), chosen to maximize the slots already
/// owned (`owners`) by the pod their share goes to.
pub fn desired_owners(shards: usize, primaries: &[usize], owners: &[Option<usize>]) -> Vec<usize> {
    let shares = shares(shards);
    // kept[p][r]: slots of share r that primary p already owns.
    let kept: Vec<Vec<usize>> = primaries
        .iter()
        .map(|&p| {
            shares
                .iter()
                .map(|r| {
                    r.slots()
                        .filter(|&s| owners[usize::from(s)] == Some(p))
                        .count()
                })
                .collect()
        })
        .collect();
    let order = if primaries.len() <= EXACT_UP_TO {
        exact(&kept)
    } else {
        greedy(&kept)
    };
    let mut desired = vec![0; usize::from(SLOTS)];
    for (r, range) in shares.iter().enumerate() {
        desired[usize::from(range.first)..=usize::from(range.last)].fill(primaries[order[r]]);
    }
    desired
}

/// The unowned slots of each share, to the primary meant for that share.
pub fn unowned(
    layout: Layout,
    primaries: &[usize],
    owners: &[Option<usize>],
    unowned: &[u16],
) -> Vec<Step> {
    let desired = desired_owners(layout.shards, primaries, owners);
    let mut by_node: BTreeMap<usize, Vec<u16>> = BTreeMap::new();
    for &slot in unowned {
        by_node
            .entry(desired[usize::from(slot)])
            .or_default()
            .push(slot);
    }
    let step = |(node, slots): (usize, Vec<u16>)| Step::AssignSlots {
        node,
        ranges: ranges_of(slots),
    };
    by_node.into_iter().map(step).collect()
}

/// Slot moves towards equal contiguous shares, in slot order, at most
/// [`MAX_SLOTS_PER_ROUND`]; and why some slot cannot move yet.
pub fn moves(
    layout: Layout,
    primaries: &[usize],
    owners: &[Option<usize>],
) -> (Vec<Step>, Vec<String>) {
    let desired = desired_owners(layout.shards, primaries, owners);
    let (mut steps, mut waits, mut budget) = (Vec::<Step>::new(), Vec::new(), MAX_SLOTS_PER_ROUND);
    for slot in 0..SLOTS {
        let to = desired[usize::from(slot)];
        let Some(from) = owners[usize::from(slot)] else {
            waits.push(format!(
                "slot {slot} is held by a node that is not reachable"
            ));
            continue;
        };
        if from == to || budget == 0 {
            continue;
        }
        budget -= 1;
        match steps.last_mut() {
            Some(Step::MoveSlots {
                from: f,
                to: t,
                slots,
            }) if (*f, *t) == (from, to) && slots.last + 1 == slot => {
                slots.last = slot;
            }
            _ => steps.push(Step::MoveSlots {
                from,
                to,
                slots: SlotRange::new(slot, slot),
            }),
        }
    }
    waits.truncate(1);
    (steps, waits)
}

/// `order[r]`: the row of `kept` that gets share r, maximizing the total kept
/// (dynamic programming over subsets of rows; ties go to the lower row, so
/// that a fresh cluster gives share i to the i-th primary).
fn exact(kept: &[Vec<usize>]) -> Vec<usize> {
    let k = kept.len();
    // best[mask]: (kept, the row that took share popcount(mask) - 1).
    let mut best: Vec<Option<(usize, usize)>> = vec![None; 1 << k];
    best[0] = Some((0, usize::MAX));
    for mask in 0..1usize << k {
        let Some((total, _)) = best[mask] else {
            continue;
        };
        let r = mask.count_ones() as usize;
        for p in (0..k).filter(|p| mask & (1 << p) == 0) {
            let next = &mut best[mask | (1 << p)];
            let score = total + kept[p][r];
            if next.is_none_or(|(b, _)| score > b) {
                *next = Some((score, p));
            }
        }
    }
    let mut order = vec![0; k];
    let mut mask = (1usize << k) - 1;
    for r in (0..k).rev() {
        let (_, p) = best[mask].expect("every subset is reachable");
        order[r] = p;
        mask &= !(1 << p);
    }
    order
}

/// Share by share, the free row that keeps the most of it.
fn greedy(kept: &[Vec<usize>]) -> Vec<usize> {
    let mut free: Vec<usize> = (0..kept.len()).collect();
    (0..kept.len())
        .map(|r| {
            let best =
                (0..free.len()).max_by_key(|&i| (kept[free[i]][r], std::cmp::Reverse(free[i])));
            free.remove(best.expect("as many rows as shares"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exact_search_keeps_the_most_and_prefers_lower_rows_on_ties() {
        assert_eq!(exact(&[vec![0, 0], vec![0, 0]]), [0, 1]);
        assert_eq!(exact(&[vec![0, 9], vec![9, 0]]), [1, 0]);
        // Greedy on share 0 would give it row 0 (5 kept) and lose 9.
        let kept = [vec![5, 9], vec![4, 0]];
        assert_eq!(exact(&kept), [1, 0]);
        assert_eq!(greedy(&kept), [0, 1]);
    }

    #[test]
    fn growing_from_three_to_four_keeps_three_quarters_in_place() {
        let mut owners = vec![None; 16384];
        for (i, r) in shares(3).iter().enumerate() {
            owners[usize::from(r.first)..=usize::from(r.last)].fill(Some(i));
        }
        let desired = desired_owners(4, &[0, 1, 2, 3], &owners);
        let kept = (0..16384)
            .filter(|&s| owners[s] == Some(desired[s]))
            .count();
        // Shares of four: 0-4095, 4096-8191, 8192-12287, 12288-16383. The
        // new primary takes a middle one: 4096 + 2731 + 4096 stay, while
        // giving it the last share would keep only 4096 + 2731 + 1365.
        assert_eq!(kept, 10923);
        assert_eq!(desired[0], 0);
        assert_eq!(desired[16383], 2);
        assert!(
            [desired[5000], desired[9000]].contains(&3),
            "{:?}",
            [desired[5000], desired[9000]]
        );
    }
}

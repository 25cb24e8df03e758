//! How the partitions' shares of an aggregate become the answer one Redis
//! would give (pure). Device counts, and leaderboards of devices, are
//! disjoint across partitions (a device lives in one): the union of each
//! partition's top N, ties included, holds the global top N. A leaderboard
//! of users or attributes may hold a member in several partitions, its
//! score the sum of its shares: the top N is found with the threshold
//! algorithm ([`summed_top_n`]), reading deeper until no member left unread
//! can reach it.

use std::collections::HashMap;

/// One partition's rows of a sorted set, best first, as far as read.
#[derive(Debug, Clone, Default)]
pub struct TopRead {
    pub rows: Vec<(String, f64)>,
    /// The read holds every member of the partition.
    pub complete: bool,
}

/// The order of an answer: score descending, then member ascending.
pub fn order(rows: &mut [(String, f64)]) {
    rows.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
}

/// The top `n` of members that are each in at most one partition, from
/// each partition's top `n` with the members tied with its last.
pub fn disjoint_top_n(reads: Vec<Vec<(String, f64)>>, n: usize) -> Vec<(String, f64)> {
    let mut rows: Vec<(String, f64)> = reads.into_iter().flatten().collect();
    order(&mut rows);
    rows.truncate(n);
    rows
}

/// The most a member that no read has returned can score: in a partition
/// read completely it has nothing; in another, at most the last score read
/// there, or nothing (it may be absent).
pub fn unread_bound(reads: &[TopRead]) -> f64 {
    reads
        .iter()
        .filter(|r| !r.complete)
        .map(|r| r.rows.last().map_or(0.0, |&(_, s)| s.max(0.0)))
        .sum()
}

/// The top `n` of summed shares, if the reads settle it: `totals` holds
/// the exact total (every partition's share) of each member some read
/// returned. Settled when every read is complete, or when the `n`-th total
/// is above [`unread_bound`] (strictly: an unread member with an equal
/// total and a smaller name would rank before it). `None`: read deeper.
pub fn summed_top_n(
    reads: &[TopRead],
    totals: &HashMap<String, f64>,
    n: usize,
) -> Option<Vec<(String, f64)>> {
    let mut rows: Vec<(String, f64)> = totals.iter().map(|(m, &s)| (m.clone(), s)).collect();
    order(&mut rows);
    rows.truncate(n);
    let settled = reads.iter().all(|r| r.complete)
        || (rows.len() == n && rows.last().is_some_and(|&(_, s)| s > unread_bound(reads)));
    settled.then_some(rows)
}

/// The members some read returned, each once, and in which partitions
/// their share is not known from the reads (a partition read completely
/// without it holds none).
pub fn missing_shares(reads: &[TopRead]) -> (Vec<String>, Vec<Vec<String>>) {
    let mut members: Vec<String> = reads
        .iter()
        .flat_map(|r| r.rows.iter().map(|(m, _)| m.clone()))
        .collect();
    members.sort();
    members.dedup();
    let missing = reads
        .iter()
        .map(|r| {
            if r.complete {
                return Vec::new();
            }
            members
                .iter()
                .filter(|m| !r.rows.iter().any(|(x, _)| x == *m))
                .cloned()
                .collect()
        })
        .collect();
    (members, missing)
}

/// Count, sum, min and max of one minute of a window, as `HMGET count sum
/// min max` returns them.
pub type MinuteRow = (Option<u64>, Option<f64>, Option<f64>, Option<f64>);

/// One minute's rows of every partition, merged.
pub fn merge_minute(a: MinuteRow, b: MinuteRow) -> MinuteRow {
    let either = |x: Option<f64>, y: Option<f64>, f: fn(f64, f64) -> f64| match (x, y) {
        (Some(x), Some(y)) => Some(f(x, y)),
        (x, None) => x,
        (None, y) => y,
    };
    let count = match (a.0, b.0) {
        (None, None) => None,
        (x, y) => Some(x.unwrap_or(0) + y.unwrap_or(0)),
    };
    (
        count,
        either(a.1, b.1, |x, y| x + y),
        either(a.2, b.2, f64::min),
        either(a.3, b.3, f64::max),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(r: &[(&str, f64)]) -> Vec<(String, f64)> {
        r.iter().map(|&(m, s)| (m.to_string(), s)).collect()
    }

    #[test]
    fn disjoint_partitions_merge_into_the_global_order_ties_by_member() {
        let merged = disjoint_top_n(
            vec![
                rows(&[("d", 9.0), ("b", 5.0)]),
                rows(&[("a", 5.0), ("c", 5.0)]),
                rows(&[("e", 1.0)]),
            ],
            3,
        );
        assert_eq!(merged, rows(&[("d", 9.0), ("a", 5.0), ("b", 5.0)]));
    }

    /// The global top n computed directly from every partition's full set.
    fn brute(parts: &[Vec<(String, f64)>], n: usize) -> Vec<(String, f64)> {
        let mut totals: HashMap<String, f64> = HashMap::new();
        for p in parts {
            for (m, s) in p {
                *totals.entry(m.clone()).or_default() += s;
            }
        }
        let mut all: Vec<_> = totals.into_iter().collect();
        order(&mut all);
        all.truncate(n);
        all
    }

    /// The threshold algorithm as the query runs it, over in-memory sets.
    fn threshold(parts: &[Vec<(String, f64)>], n: usize) -> (Vec<(String, f64)>, usize) {
        let mut k = n;
        loop {
            let reads: Vec<TopRead> = parts
                .iter()
                .map(|p| {
                    let mut sorted = p.clone();
                    order(&mut sorted);
                    let complete = sorted.len() <= k;
                    sorted.truncate(k);
                    TopRead {
                        rows: sorted,
                        complete,
                    }
                })
                .collect();
            let (members, _) = missing_shares(&reads);
            let totals = members
                .iter()
                .map(|m| {
                    let t = parts
                        .iter()
                        .flat_map(|p| p.iter().filter(|(x, _)| x == m).map(|&(_, s)| s))
                        .sum();
                    (m.clone(), t)
                })
                .collect();
            if let Some(top) = summed_top_n(&reads, &totals, n) {
                return (top, k);
            }
            k *= 2;
        }
    }

    #[test]
    fn summed_shares_give_the_global_top_n_whatever_the_spread() {
        // Deterministic pseudo-random sets: members shared by partitions,
        // integer and negative scores, many ties.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for case in 0..300 {
            let p = 1 + (next() % 4) as usize;
            let members = 1 + (next() % 40) as usize;
            let shift = if case % 5 == 0 { 3.0 } else { 0.0 };
            let mut parts: Vec<Vec<(String, f64)>> = vec![Vec::new(); p];
            for part in parts.iter_mut() {
                for m in 0..members {
                    if next() % 3 != 0 {
                        part.push((format!("u{m:02}"), (next() % 7) as f64 - shift));
                    }
                }
            }
            let n = 1 + (next() % 10) as usize;
            let (top, _) = threshold(&parts, n);
            assert_eq!(top, brute(&parts, n), "case {case}: {parts:?}");
        }
    }

    #[test]
    fn a_clear_leader_settles_without_reading_everything() {
        let big: Vec<(String, f64)> = (0..1000).map(|i| (format!("m{i:04}"), 1.0)).collect();
        let mut a = big.clone();
        a.push(("top".into(), 500.0));
        let mut b = big;
        b.push(("top".into(), 400.0));
        let (top, k) = threshold(&[a, b], 1);
        assert_eq!(top, rows(&[("top", 900.0)]));
        // The first read (k = 1) cannot exclude an unread member at 500 +
        // 400 with a smaller name; the second bounds the rest at 1 + 1.
        assert_eq!(k, 2, "settled by the second read, not all 1001 rows");
    }

    #[test]
    fn minutes_merge_counts_sums_and_extremes() {
        let merged = merge_minute(
            (Some(2), Some(3.0), Some(1.0), Some(2.0)),
            (Some(1), Some(-4.0), Some(-4.0), Some(-4.0)),
        );
        assert_eq!(merged, (Some(3), Some(-1.0), Some(-4.0), Some(2.0)));
        let empty = (None, None, None, None);
        assert_eq!(merge_minute(empty, empty), empty);
        assert_eq!(
            merge_minute(empty, (Some(1), Some(2.0), None, None)),
            (Some(1), Some(2.0), None, None)
        );
    }
}

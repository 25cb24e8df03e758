//! How the partitions' shares of an aggregate become the answer one Redis
//! would give (pure). Device counts and leaderboards are disjoint across
//! partitions (a device, a user, an attribute value is scored in one
//! partition only): the union of each partition's top N, ties included,
//! holds the global top N. Windows add counts and sums and keep extremes.

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

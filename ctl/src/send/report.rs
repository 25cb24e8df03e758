//! What the acknowledgements said, per call and for the whole run, and how
//! the run is shown: a progress bar while it lasts, the summary at the end.
//!
//! A call's [`Tally`] (what the server acknowledged) is added with its
//! [`Expected`] counts (what the generator knows it sent) and its latency to
//! the run's [`Totals`], which end as the [`Summary`]. Everything here is
//! pure but the progress bar.

use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::output;

/// What the server acknowledged for (part of) a call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub accepted: u64,
    pub rejected: u64,
    pub duplicates: u64,
    /// Events from the start of the call whose fate is final; a call that
    /// failed is resent from here.
    pub settled: u64,
}

impl Tally {
    /// Adds the counts of `other` (its `settled` is the caller's to track).
    pub fn add(&mut self, other: &Tally) {
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        self.duplicates += other.duplicates;
    }
}

/// What the answers to one call should say, as the generator knows it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub sent: u64,
    /// Invalid events (repeats of invalid ones included).
    pub rejected: u64,
    /// Repeats of valid events.
    pub duplicates: u64,
}

/// How one call ended, after its retries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub tally: Tally,
    /// Attempts after the first.
    pub retries: u64,
    /// Events never acknowledged (the call failed for good).
    pub unacknowledged: u64,
}

/// What a run did; printed at the end.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub expected_rejected: u64,
    pub expected_duplicates: u64,
    /// Events never acknowledged (calls that failed after all retries).
    pub failed: u64,
    pub retries: u64,
    pub elapsed_seconds: f64,
    pub events_per_second: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p95: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_p999: f64,
    pub latency_ms_max: f64,
}

impl Summary {
    /// Every valid event stored once (as new or as duplicate) and every
    /// invalid one rejected.
    pub fn consistent(&self) -> bool {
        self.failed == 0
            && self.rejected == self.expected_rejected
            && self.accepted + self.duplicates == self.sent - self.expected_rejected
    }
}

/// The run so far: its counts, and the latency of every call.
#[derive(Debug)]
pub struct Totals {
    counts: Summary,
    /// Microseconds, from when a call was due to its last answer.
    latency: Histogram<u64>,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            counts: Summary::default(),
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        }
    }
}

impl Totals {
    /// Adds one finished call.
    pub fn record(&mut self, expected: Expected, outcome: &Outcome, latency: Duration) {
        let s = &mut self.counts;
        s.sent += expected.sent;
        s.accepted += outcome.tally.accepted;
        s.rejected += outcome.tally.rejected;
        s.duplicates += outcome.tally.duplicates;
        s.expected_rejected += expected.rejected;
        s.expected_duplicates += expected.duplicates;
        s.retries += outcome.retries;
        s.failed += outcome.unacknowledged;
        let _ = self.latency.record((latency.as_micros() as u64).max(1));
    }

    /// The summary of a run that took `elapsed`.
    pub fn summary(&self, elapsed: Duration) -> Summary {
        let elapsed = elapsed.as_secs_f64();
        let h = &self.latency;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let s = &self.counts;
        Summary {
            elapsed_seconds: elapsed,
            events_per_second: (s.accepted + s.duplicates + s.rejected) as f64 / elapsed.max(1e-9),
            latency_ms_p50: ms(0.5),
            latency_ms_p95: ms(0.95),
            latency_ms_p99: ms(0.99),
            latency_ms_p999: ms(0.999),
            latency_ms_max: h.max() as f64 / 1000.0,
            ..s.clone()
        }
    }
}

/// The bar shown while sending `n` events, unless `hidden`.
pub fn progress_bar(n: u64, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(n);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events  {per_sec}  eta {eta}")
            .expect("valid template"),
    );
    bar
}

pub fn summary_table(s: &Summary) -> String {
    let rows = vec![
        vec!["sent".into(), s.sent.to_string()],
        vec!["acked (accepted)".into(), s.accepted.to_string()],
        vec![
            "rejected".into(),
            format!("{} (expected {})", s.rejected, s.expected_rejected),
        ],
        vec![
            "duplicates".into(),
            format!("{} (expected {})", s.duplicates, s.expected_duplicates),
        ],
        vec!["not acknowledged".into(), s.failed.to_string()],
        vec!["retried calls".into(), s.retries.to_string()],
        vec!["elapsed".into(), format!("{:.2} s", s.elapsed_seconds)],
        vec!["events/s".into(), format!("{:.0}", s.events_per_second)],
        vec![
            "ack latency per call p50/p95/p99".into(),
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                s.latency_ms_p50, s.latency_ms_p95, s.latency_ms_p99
            ),
        ],
        vec![
            "ack latency p99.9 / max".into(),
            format!("{:.2} / {:.2} ms", s.latency_ms_p999, s.latency_ms_max),
        ],
    ];
    let mut out = output::table(&["SUMMARY", ""], &rows);
    if !s.consistent() {
        out.push_str("WARNING: acknowledgements do not match what was sent\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(accepted: u64, rejected: u64, duplicates: u64) -> Outcome {
        Outcome {
            tally: Tally {
                accepted,
                rejected,
                duplicates,
                settled: accepted + rejected + duplicates,
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_run_is_consistent_when_the_acks_match_what_was_sent() {
        let mut t = Totals::default();
        let expected = Expected {
            sent: 100,
            rejected: 2,
            duplicates: 5,
        };
        // A duplicate of a valid event may be stored as new when the
        // original is in the same flush; only the sum must match.
        t.record(expected, &call(94, 2, 4), Duration::from_millis(1));
        t.record(expected, &call(93, 2, 5), Duration::from_millis(2));
        let s = t.summary(Duration::from_secs(2));
        assert!(s.consistent(), "{s:?}");
        assert_eq!(
            (s.sent, s.expected_rejected, s.expected_duplicates),
            (200, 4, 10)
        );
        assert_eq!(s.events_per_second, 100.0);
        assert_eq!(s.latency_ms_max, 2.0);

        t.record(expected, &call(97, 1, 2), Duration::from_millis(1));
        let s = t.summary(Duration::from_secs(2));
        assert!(!s.consistent(), "a valid event counted as rejected");
        assert!(
            summary_table(&s).ends_with("WARNING: acknowledgements do not match what was sent\n")
        );
    }

    #[test]
    fn events_never_acknowledged_make_a_run_inconsistent() {
        let mut t = Totals::default();
        let outcome = Outcome {
            unacknowledged: 10,
            retries: 3,
            ..call(90, 0, 0)
        };
        t.record(
            Expected {
                sent: 100,
                ..Default::default()
            },
            &outcome,
            Duration::ZERO,
        );
        let s = t.summary(Duration::from_secs(1));
        assert_eq!((s.failed, s.retries), (10, 3));
        assert!(!s.consistent());
    }
}

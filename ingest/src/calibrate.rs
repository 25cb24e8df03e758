//! The flush's Redis cost estimate, corrected by what Redis measures.
//!
//! [`crate::aggregate::Plan::cost_micros`] is a static model (a price per
//! command and per value), right for some key shapes and not others, and
//! blind to how fast the host is. The flush script measures its own run time
//! inside Redis (`TIME` at its start and end) and returns it; the flusher
//! keeps a smoothed ratio of measured to estimated time and cuts each flush
//! where the *corrected* estimate reaches `--flush-budget-us`, so a script
//! call stays near its budget whatever the aggregation settings and the
//! machine.
//!
//! The measured time leaves out Redis reading the call's arguments, which
//! grows with the flush too; the budget bounds the script's run.

use std::sync::atomic::{AtomicU64, Ordering};

/// Weight of a new measurement in the smoothed factor.
const SMOOTHING: f64 = 0.2;
/// Flushes estimated below this are left out: their time is mostly the
/// script's fixed cost, which says nothing about the per-command prices.
const MIN_ESTIMATE_MICROS: f64 = 300.0;
/// The factor stays within these bounds, so one odd measurement (a fork for
/// an AOF rewrite, a descheduled Redis) cannot make flushes tiny or huge.
const MIN_FACTOR: f64 = 0.25;
const MAX_FACTOR: f64 = 4.0;

/// Measured ÷ estimated Redis time of recent flushes, shared by the flusher
/// (which reads it to size flushes) and the flush tasks (which update it).
#[derive(Debug)]
pub struct Calibration {
    factor_bits: AtomicU64,
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration {
            factor_bits: AtomicU64::new(1.0f64.to_bits()),
        }
    }
}

impl Calibration {
    /// What to multiply an estimate by.
    pub fn factor(&self) -> f64 {
        f64::from_bits(self.factor_bits.load(Ordering::Relaxed))
    }

    /// Takes the measured run of a flush estimated at `estimated` µs; returns
    /// the new factor.
    pub fn observe(&self, estimated: f64, measured: f64) -> f64 {
        let next = next_factor(self.factor(), estimated, measured);
        // Concurrent flushes may overwrite each other's update; either value
        // is a fair estimate.
        self.factor_bits.store(next.to_bits(), Ordering::Relaxed);
        next
    }
}

/// The smoothed factor after one measurement (pure).
pub fn next_factor(current: f64, estimated: f64, measured: f64) -> f64 {
    if estimated.is_nan()
        || estimated < MIN_ESTIMATE_MICROS
        || !measured.is_finite()
        || measured < 0.0
    {
        return current;
    }
    let sample = (measured / estimated).clamp(MIN_FACTOR, MAX_FACTOR);
    (current + SMOOTHING * (sample - current)).clamp(MIN_FACTOR, MAX_FACTOR)
}

/// Whether a flush estimated at `cost` for `events` events should take a
/// chunk of `next_events` more (pure): yes if, at the flush's cost per event
/// so far, it would end nearer the budget with the chunk than without.
/// Chunks are answered whole, so a flush ends at a chunk boundary.
pub fn take_next_chunk(cost: f64, events: usize, next_events: usize, budget: f64) -> bool {
    let with_next = cost + cost / events.max(1) as f64 * next_events as f64;
    with_next - budget <= budget - cost
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_ends_at_the_chunk_boundary_nearest_the_budget() {
        // 256 events at 10 µs each: 2 560 µs; 256 more would end at 5 120.
        assert!(!take_next_chunk(2_560.0, 256, 256, 3_000.0));
        // A small chunk that keeps it near the budget is taken.
        assert!(take_next_chunk(2_560.0, 256, 40, 3_000.0));
        // Cheap events: far below the budget, the next chunk is taken.
        assert!(take_next_chunk(800.0, 1_024, 256, 3_000.0));
        // Just past the budget beats well short of it.
        assert!(take_next_chunk(2_800.0, 3_584, 256, 3_000.0));
    }

    #[test]
    fn factor_moves_toward_the_measured_ratio() {
        let c = Calibration::default();
        assert_eq!(c.factor(), 1.0);
        // Redis takes 1.5 × the estimate, flush after flush.
        for _ in 0..40 {
            c.observe(2_000.0, 3_000.0);
        }
        assert!((c.factor() - 1.5).abs() < 0.01, "{}", c.factor());
        // One flush moves it a fifth of the way, not all of it.
        let after_one = c.observe(2_000.0, 1_000.0);
        assert!((after_one - 1.3).abs() < 0.01, "{after_one}");
    }

    #[test]
    fn small_flushes_and_nonsense_do_not_count() {
        assert_eq!(next_factor(1.2, 100.0, 5_000.0), 1.2, "estimate too small");
        assert_eq!(next_factor(1.2, 1_000.0, f64::NAN), 1.2);
        assert_eq!(next_factor(1.2, f64::NAN, 1_000.0), 1.2);
        assert_eq!(next_factor(1.2, 1_000.0, -1.0), 1.2);
    }

    #[test]
    fn factor_stays_within_bounds() {
        let mut f = 1.0;
        for _ in 0..200 {
            f = next_factor(f, 1_000.0, 1_000_000.0);
        }
        assert!((f - MAX_FACTOR).abs() < 1e-9, "{f}");
        for _ in 0..200 {
            f = next_factor(f, 1_000.0, 0.0);
        }
        assert!((f - MIN_FACTOR).abs() < 1e-9, "{f}");
    }
}

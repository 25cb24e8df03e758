//! How long an ingest pod may take to drain: the shutdown timeout (and so
//! `terminationGracePeriodSeconds`) derived from the queue capacity and the
//! drain rate the autoscaler measures.
//!
//! A pod that is removed (a scale-down victim, a rollout) stops taking
//! events and flushes its queue before it exits; events it cannot store by
//! its shutdown timeout are not acknowledged and their clients retry. So the
//! timeout should cover a full queue at the rate the pod really stores:
//! `capacity ÷ rate`, plus [`MARGIN_PERCENT`] and [`MARGIN_SECONDS`].
//!
//! The rate is measured only while a pod has a backlog ([`BACKLOG_EVENTS`]
//! or more queued), when its flushes are full batches as in a drain; an idle
//! pod's small flushes would understate it. The slowest such pod counts.
//!
//! Changing the timeout changes the pod template and rolls every ingest pod,
//! so it moves rarely: only up (never below `spec.ingest.shutdownTimeoutSeconds`,
//! never lowered by a faster measurement), in [`STEPS`], and it starts over
//! when the queue capacity changes. And it moves only when the pipeline is
//! [`calm`]: a raise measured under load waits until the load is gone and
//! no scale is pending, so the roll never meets a backlog.

use crate::crd::autoscaling::DrainStatus;

/// Margin on top of `capacity ÷ rate`, in percent of it.
pub const MARGIN_PERCENT: u64 = 50;
/// Margin on top of that, in seconds (the first flushes, the exit).
pub const MARGIN_SECONDS: u64 = 5;
/// A pod with at least this many events queued has a backlog: its flushes
/// are full batches, so its drain rate is what a drain would see.
pub const BACKLOG_EVENTS: u64 = 1_000;
/// The values a derived timeout takes, in seconds; the last is the CRD's
/// maximum of `shutdownTimeoutSeconds`.
pub const STEPS: [i32; 7] = [30, 60, 120, 300, 600, 1200, 3600];

/// Seconds a pod needs to store a full queue of `capacity` events at
/// `events_per_second`, margins included.
pub fn needed_seconds(capacity: i32, events_per_second: u64) -> u64 {
    let capacity = u64::try_from(capacity.max(0)).unwrap_or(0);
    let rate = events_per_second.max(1);
    let bare = capacity.div_ceil(rate);
    bare + (bare * MARGIN_PERCENT).div_ceil(100) + MARGIN_SECONDS
}

/// The smallest step that covers `seconds` (the largest step when none does).
pub fn step_up(seconds: u64) -> i32 {
    STEPS
        .iter()
        .copied()
        .find(|&s| u64::try_from(s).is_ok_and(|s| s >= seconds))
        .unwrap_or(STEPS[STEPS.len() - 1])
}

/// The derived drain settings after a tick: `held` (from the status) if it
/// still applies and is not exceeded; a higher step when the slowest
/// measured rate needs more than both it and `spec_timeout`; `None` when the
/// spec's timeout suffices and nothing is held.
pub fn derive(
    spec_timeout: i32,
    capacity: i32,
    slowest_rate: Option<u64>,
    held: Option<&DrainStatus>,
) -> Option<DrainStatus> {
    let held = held
        .filter(|h| h.queue_capacity == capacity && h.timeout_seconds > spec_timeout)
        .cloned();
    let floor = held
        .as_ref()
        .map_or(spec_timeout, |h| h.timeout_seconds)
        .max(spec_timeout);
    let raised = slowest_rate.and_then(|rate| {
        let needed = needed_seconds(capacity, rate);
        let floor = u64::try_from(floor.max(0)).unwrap_or(0);
        (needed > floor).then(|| DrainStatus {
            timeout_seconds: step_up(needed),
            queue_capacity: capacity,
            events_per_second: i64::try_from(rate).unwrap_or(i64::MAX),
        })
    });
    raised.filter(|r| r.timeout_seconds > spec_timeout).or(held)
}

/// Whether a raise may be applied now: the autoscaler holds, wants what
/// there is (its newest recommendation too, within `bounds` = (min, max)
/// replicas, so no scale-down is pending), and no pod has a backlog.
pub fn calm(
    holds: bool,
    (current, desired): (i32, i32),
    newest_recommendation: Option<i32>,
    bounds: (i32, i32),
    max_pod_queue: u64,
) -> bool {
    let (min, max) = (bounds.0, bounds.1.max(bounds.0));
    holds
        && desired == current
        && newest_recommendation.is_none_or(|r| r.clamp(min, max) == current)
        && max_pod_queue < BACKLOG_EVENTS
}

/// The higher of two derived timeouts that apply to `capacity`.
pub fn higher(
    capacity: i32,
    a: Option<&DrainStatus>,
    b: Option<&DrainStatus>,
) -> Option<DrainStatus> {
    [a, b]
        .into_iter()
        .flatten()
        .filter(|d| d.queue_capacity == capacity)
        .max_by_key(|d| d.timeout_seconds)
        .cloned()
}

/// The slowest drain rate among pods with a backlog: `(queue, rate)` per pod,
/// queue in events and rate in events per second.
pub fn slowest_rate(pods: impl IntoIterator<Item = (u64, Option<f64>)>) -> Option<u64> {
    pods.into_iter()
        .filter(|(queue, _)| *queue >= BACKLOG_EVENTS)
        .filter_map(|(_, rate)| rate)
        .filter(|r| r.is_finite() && *r >= 1.0)
        // Whole events per second, rounded down: the conservative side.
        .map(|r| r.min(u64::MAX as f64) as u64)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(timeout: i32, capacity: i32) -> DrainStatus {
        DrainStatus {
            timeout_seconds: timeout,
            queue_capacity: capacity,
            events_per_second: 1,
        }
    }

    #[test]
    fn needed_seconds_is_capacity_over_rate_plus_half_plus_five() {
        assert_eq!(needed_seconds(100_000, 1_000), 100 + 50 + 5);
        assert_eq!(needed_seconds(100_000, 30_000), 4 + 2 + 5, "rounded up");
        assert_eq!(needed_seconds(100_000, 0), 100_000 + 50_000 + 5, "no rate");
        assert_eq!(needed_seconds(0, 1_000), 5);
    }

    #[test]
    fn steps_round_up_and_stop_at_the_crd_maximum() {
        assert_eq!(step_up(1), 30);
        assert_eq!(step_up(30), 30);
        assert_eq!(step_up(31), 60);
        assert_eq!(step_up(155), 300);
        assert_eq!(step_up(1_000_000), 3600);
    }

    #[test]
    fn a_fast_drain_keeps_the_spec_timeout() {
        // 100 000 events at 30 000/s: 11 s, under the default 25.
        assert_eq!(derive(25, 100_000, Some(30_000), None), None);
        assert_eq!(derive(25, 100_000, None, None), None, "nothing measured");
    }

    #[test]
    fn a_slow_drain_raises_the_timeout_to_a_step() {
        // 100 000 events at 1 000/s: 155 s -> 300.
        let d = derive(25, 100_000, Some(1_000), None).unwrap();
        assert_eq!(d.timeout_seconds, 300);
        assert_eq!(d.queue_capacity, 100_000);
        assert_eq!(d.events_per_second, 1_000);
    }

    #[test]
    fn a_held_timeout_is_never_lowered_by_a_faster_measurement() {
        let h = held(300, 100_000);
        assert_eq!(derive(25, 100_000, Some(50_000), Some(&h)), Some(h.clone()));
        assert_eq!(derive(25, 100_000, None, Some(&h)), Some(h.clone()));
        // Within the held step: no change either.
        assert_eq!(derive(25, 100_000, Some(1_000), Some(&h)), Some(h));
    }

    #[test]
    fn a_slower_measurement_raises_a_held_timeout_by_whole_steps() {
        let h = held(300, 100_000);
        // 100 000 at 200/s: 755 s -> 1200.
        let d = derive(25, 100_000, Some(200), Some(&h)).unwrap();
        assert_eq!(d.timeout_seconds, 1200);
    }

    #[test]
    fn a_new_queue_capacity_or_a_larger_spec_timeout_drops_what_was_held() {
        let h = held(300, 100_000);
        assert_eq!(
            derive(25, 10_000, Some(30_000), Some(&h)),
            None,
            "capacity changed"
        );
        assert_eq!(derive(300, 100_000, None, Some(&h)), None, "spec covers it");
        assert_eq!(derive(600, 100_000, Some(1_000), Some(&h)), None);
    }

    #[test]
    fn calm_means_holding_at_the_wanted_size_without_a_backlog() {
        let b = (1, 4);
        assert!(calm(true, (3, 3), Some(3), b, 999));
        assert!(calm(true, (3, 3), None, b, 0));
        assert!(
            calm(true, (1, 1), Some(0), b, 0),
            "an idle recommendation below min"
        );
        assert!(calm(true, (4, 4), Some(9), b, 0), "pinned at max");
        assert!(!calm(false, (3, 4), Some(4), b, 0), "scaling");
        assert!(
            !calm(true, (3, 3), Some(1), b, 0),
            "a scale-down pending in its window"
        );
        assert!(!calm(true, (3, 3), Some(3), b, 1_000), "a backlog");
    }

    #[test]
    fn the_higher_applicable_timeout_wins() {
        let (a, b, other) = (held(60, 100), held(300, 100), held(1200, 5));
        assert_eq!(higher(100, Some(&a), Some(&b)), Some(b.clone()));
        assert_eq!(higher(100, Some(&other), Some(&a)), Some(a));
        assert_eq!(higher(100, Some(&other), None), None);
    }

    #[test]
    fn only_pods_with_a_backlog_count_and_the_slowest_wins() {
        let pods = [
            (5_000, Some(20_000.0)),
            (2_000, Some(12_500.7)),
            (10, Some(50.0)), // idle: tiny flushes, not a drain
            (8_000, None),    // did not flush in the interval
            (9_000, Some(f64::NAN)),
        ];
        assert_eq!(slowest_rate(pods), Some(12_500));
        assert_eq!(slowest_rate([(10, Some(50.0))]), None);
    }
}

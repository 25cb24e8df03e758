//! What the autoscaler remembers of each pod between ticks, and the rates
//! derived from it.
//!
//! Pure: the time of a scrape is passed in (`now`, milliseconds since the
//! epoch) and nothing here reads a clock. A value is kept only when it is
//! valid (present, finite, ≥ 0), so one bad scrape never erases the last good
//! sample; how old a sample may be before it stops counting is the caller's
//! rule (`maxSampleAge`), since [`Sample::at`] says when it was taken.
//!
//! Queue depths and event rates are integers in milli-units, as the
//! autoscaler's arithmetic wants (spec step 3); rates are computed with u128
//! intermediates, so counters of 10^14 events neither overflow nor lose
//! precision.

use std::collections::{HashMap, HashSet};

use super::Reading;
/// A valid value (milli-units: `round(v × 1000)`, saturating at `u64::MAX`)
/// and when it was scraped: the autoscaler's own sample type.
pub use crate::autoscale::Sample;

/// The flush histograms' sums at one scrape; each `None` when invalid.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct FlushSums {
    at: i64,
    script_seconds: Option<f64>,
    events: Option<f64>,
    seconds: Option<f64>,
}

#[derive(Clone, Debug, Default)]
struct PodSamples {
    queue: Option<Sample>,
    /// The last two valid `accepted_total` samples, older first.
    accepted: [Option<Sample>; 2],
    /// The flush sums of the last two recorded scrapes, older first.
    flush: [Option<FlushSums>; 2],
}

/// The last samples of each pod, keyed by pod name.
#[derive(Clone, Debug, Default)]
pub struct SampleCache {
    pods: HashMap<String, PodSamples>,
}

impl SampleCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a successful scrape of `pod` taken at `now`.
    pub fn record(&mut self, pod: &str, now: i64, reading: &Reading) {
        let entry = self.pods.entry(pod.to_owned()).or_default();
        if let Some(value) = reading.queue_depth.and_then(milli) {
            entry.queue = Some(Sample { value, at: now });
        }
        if let Some(value) = reading.accepted_total.and_then(milli) {
            entry.accepted = [entry.accepted[1], Some(Sample { value, at: now })];
        }
        let sums = FlushSums {
            at: now,
            script_seconds: reading.flush_script_seconds_sum.filter(|v| valid(*v)),
            events: reading.flushed_events_sum.filter(|v| valid(*v)),
            seconds: reading.flush_seconds_sum.filter(|v| valid(*v)),
        };
        entry.flush = [entry.flush[1], Some(sums)];
    }

    /// Drops every pod not in `listed` (pods deleted since the last tick).
    pub fn retain<'a>(&mut self, listed: impl IntoIterator<Item = &'a str>) {
        let listed: HashSet<&str> = listed.into_iter().collect();
        self.pods.retain(|name, _| listed.contains(name.as_str()));
    }

    /// Number of pods with anything cached.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// The pod's last valid queue depth, whatever its age.
    pub fn queue(&self, pod: &str) -> Option<Sample> {
        self.pods.get(pod)?.queue
    }

    /// Events per second (milli-units) between the pod's last two valid
    /// `accepted_total` samples, dated at the newer one.
    pub fn rate(&self, pod: &str) -> Option<Sample> {
        match self.pods.get(pod)?.accepted {
            [Some(older), Some(newer)] => rate(older, newer),
            _ => None,
        }
    }

    /// Seconds Redis spent running the pod's flush scripts between its last
    /// two recorded scrapes (see [`interval_ms`](Self::interval_ms)).
    pub fn redis_busy_seconds(&self, pod: &str) -> Option<f64> {
        let [older, newer] = self.last_two_flush_sums(pod)?;
        increase(older.script_seconds?, newer.script_seconds?)
    }

    /// Events per second the pod stored while flushing, between its last two
    /// recorded scrapes: events flushed ÷ seconds spent flushing. `None`
    /// without data or when it did not flush in that interval.
    pub fn drain_rate(&self, pod: &str) -> Option<f64> {
        let [older, newer] = self.last_two_flush_sums(pod)?;
        drain_rate(
            (older.events?, older.seconds?),
            (newer.events?, newer.seconds?),
        )
    }

    /// Milliseconds between the pod's last two recorded scrapes: the interval
    /// [`redis_busy_seconds`](Self::redis_busy_seconds) and
    /// [`drain_rate`](Self::drain_rate) cover.
    pub fn interval_ms(&self, pod: &str) -> Option<i64> {
        let [older, newer] = self.last_two_flush_sums(pod)?;
        Some(newer.at.saturating_sub(older.at))
    }

    fn last_two_flush_sums(&self, pod: &str) -> Option<[FlushSums; 2]> {
        match self.pods.get(pod)?.flush {
            [Some(older), Some(newer)] if newer.at > older.at => Some([older, newer]),
            _ => None,
        }
    }
}

/// A value the autoscaler may use: finite and not negative.
pub fn valid(v: f64) -> bool {
    v.is_finite() && v >= 0.0
}

/// `v` in milli-units (`round(v × 1000)`, saturating), or `None` when invalid.
pub fn milli(v: f64) -> Option<u64> {
    // `as` saturates: 1e300 × 1000 is +inf and becomes u64::MAX.
    valid(v).then(|| (v * 1000.0).round() as u64)
}

/// Δcounter / Δt in milli-units per second, dated at `newer`; a counter that
/// went down was reset, and its new value is the increase. `None` when
/// Δt ≤ 0.
fn rate(older: Sample, newer: Sample) -> Option<Sample> {
    let dt_ms = newer.at.checked_sub(older.at).filter(|dt| *dt > 0)?;
    let delta = if newer.value >= older.value {
        newer.value - older.value
    } else {
        newer.value
    };
    // milli-units per ms × 1000 = milli-units per s; round half up.
    let dt = dt_ms as u128;
    let per_s = (delta as u128 * 1000 + dt / 2) / dt;
    Some(Sample {
        value: u64::try_from(per_s).unwrap_or(u64::MAX),
        at: newer.at,
    })
}

/// The increase of a counter from `older` to `newer`; a decrease is a reset,
/// and the new value is the increase. `None` when either is invalid.
fn increase(older: f64, newer: f64) -> Option<f64> {
    if !valid(older) || !valid(newer) {
        return None;
    }
    Some(if newer >= older { newer - older } else { newer })
}

/// Events flushed per second of flushing between two (events, seconds)
/// readings of the flush histograms' sums. A reset of either (the process
/// restarted) takes both new values as the increase. `None` when no flush
/// time passed or a value is invalid.
fn drain_rate(older: (f64, f64), newer: (f64, f64)) -> Option<f64> {
    let reset = newer.0 < older.0 || newer.1 < older.1;
    let (events, seconds) = if reset {
        (increase(0.0, newer.0)?, increase(0.0, newer.1)?)
    } else {
        (increase(older.0, newer.0)?, increase(older.1, newer.1)?)
    };
    let r = events / seconds;
    (seconds > 0.0 && r.is_finite()).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(value: u64, at: i64) -> Sample {
        Sample { value, at }
    }

    fn reading(queue: f64, accepted: f64) -> Reading {
        Reading {
            queue_depth: Some(queue),
            accepted_total: Some(accepted),
            ..Reading::default()
        }
    }

    fn flush(script: f64, events: f64, seconds: f64) -> Reading {
        Reading {
            flush_script_seconds_sum: Some(script),
            flushed_events_sum: Some(events),
            flush_seconds_sum: Some(seconds),
            ..Reading::default()
        }
    }

    #[test]
    fn milli_rounds_and_rejects_nan_negative_and_infinite_values() {
        assert_eq!(milli(0.0), Some(0));
        assert_eq!(milli(1.2345), Some(1235));
        assert_eq!(milli(1e14), Some(100_000_000_000_000_000));
        assert_eq!(milli(f64::MAX), Some(u64::MAX), "saturates");
        assert_eq!(milli(f64::NAN), None);
        assert_eq!(milli(-0.001), None);
        assert_eq!(milli(f64::INFINITY), None);
        assert_eq!(milli(f64::NEG_INFINITY), None);
    }

    #[test]
    fn rate_is_the_counter_increase_over_the_interval_dated_at_the_newer_sample() {
        // 900 events in 15 s: 60 events/s.
        assert_eq!(
            rate(s(1_000, 0), s(901_000, 15_000)),
            Some(s(60_000, 15_000))
        );
        // 901 events in 15 s: 60.0667 events/s, rounded to the nearest milli.
        assert_eq!(rate(s(0, 0), s(901_000, 15_000)), Some(s(60_067, 15_000)));
        assert_eq!(
            rate(s(5_000, 0), s(5_000, 1_000)),
            Some(s(0, 1_000)),
            "idle"
        );
    }

    #[test]
    fn a_counter_that_went_down_was_reset_and_its_new_value_is_the_increase() {
        assert_eq!(
            rate(s(900_000, 0), s(30_000, 10_000)),
            Some(s(3_000, 10_000))
        );
    }

    #[test]
    fn no_rate_without_time_passing() {
        assert_eq!(rate(s(0, 5_000), s(1_000, 5_000)), None);
        assert_eq!(rate(s(0, 5_000), s(1_000, 4_000)), None, "clock went back");
        assert_eq!(
            rate(s(0, i64::MIN), s(1_000, i64::MAX)),
            None,
            "Δt overflows"
        );
    }

    #[test]
    fn counters_of_ten_to_the_fourteen_give_exact_rates_without_overflow() {
        let older = s(milli(1e14).unwrap(), 0);
        let newer = s(milli(1e14 + 1_500.0).unwrap(), 15_000);
        assert_eq!(rate(older, newer), Some(s(100_000, 15_000)));
        // The largest increase in the smallest interval saturates.
        assert_eq!(rate(s(0, 0), s(u64::MAX, 1)).unwrap().value, u64::MAX);
        // A reset to 10^14 within one millisecond: 10^20 milli-events/s.
        let reset = rate(s(u64::MAX, 0), s(milli(1e14).unwrap(), 1)).unwrap();
        assert_eq!(reset.value, u64::MAX);
    }

    #[test]
    fn the_cache_keeps_the_last_valid_queue_sample_through_invalid_readings() {
        let mut c = SampleCache::new();
        assert_eq!(c.queue("a"), None);
        c.record("a", 1_000, &reading(150.0, 0.0));
        assert_eq!(c.queue("a"), Some(s(150_000, 1_000)));
        for bad in [f64::NAN, -1.0, f64::INFINITY] {
            c.record("a", 2_000, &reading(bad, 0.0));
            assert_eq!(c.queue("a"), Some(s(150_000, 1_000)), "{bad}");
        }
        c.record("a", 3_000, &Reading::default());
        assert_eq!(c.queue("a"), Some(s(150_000, 1_000)), "series absent");
        c.record("a", 4_000, &reading(0.5, 0.0));
        assert_eq!(c.queue("a"), Some(s(500, 4_000)));
    }

    #[test]
    fn the_cache_rates_the_last_two_valid_counter_samples() {
        let mut c = SampleCache::new();
        c.record("a", 0, &reading(0.0, 1_000.0));
        assert_eq!(c.rate("a"), None, "one sample");
        c.record("a", 15_000, &reading(0.0, f64::NAN));
        assert_eq!(c.rate("a"), None, "an invalid sample does not count");
        c.record("a", 30_000, &reading(0.0, 4_000.0));
        assert_eq!(c.rate("a"), Some(s(100_000, 30_000)), "3000 in 30 s");
        c.record("a", 45_000, &reading(0.0, 5_500.0));
        assert_eq!(c.rate("a"), Some(s(100_000, 45_000)), "1500 in 15 s");
        c.record("a", 45_000, &reading(0.0, 6_000.0));
        assert_eq!(c.rate("a"), None, "two samples at the same time");
    }

    #[test]
    fn a_pod_dropped_by_retain_loses_its_samples() {
        let mut c = SampleCache::new();
        for (i, pod) in ["a", "b", "c"].into_iter().enumerate() {
            c.record(pod, 0, &reading(i as f64, 0.0));
            c.record(pod, 15_000, &reading(i as f64, 15.0));
        }
        c.retain(["a", "c", "never-seen"]);
        assert_eq!(c.len(), 2);
        assert_eq!(c.queue("b"), None);
        assert_eq!(c.rate("b"), None);
        assert_eq!(c.queue("c"), Some(s(2_000, 15_000)));
        assert_eq!(c.rate("a"), Some(s(1_000, 15_000)));
        // A pod that comes back under the same name starts afresh.
        c.record("b", 30_000, &reading(9.0, 30.0));
        assert_eq!(c.rate("b"), None);
        c.retain([]);
        assert!(c.is_empty());
    }

    #[test]
    fn increase_handles_resets_and_rejects_invalid_values() {
        assert_eq!(increase(1.5, 2.0), Some(0.5));
        assert_eq!(increase(2.0, 0.25), Some(0.25), "reset");
        assert_eq!(increase(f64::NAN, 1.0), None);
        assert_eq!(increase(1.0, -1.0), None);
        assert_eq!(increase(0.0, f64::INFINITY), None);
    }

    #[test]
    fn redis_busy_seconds_is_the_script_time_added_since_the_previous_scrape() {
        let mut c = SampleCache::new();
        c.record("a", 0, &flush(10.0, 0.0, 0.0));
        assert_eq!(c.redis_busy_seconds("a"), None, "one scrape");
        c.record("a", 15_000, &flush(13.5, 0.0, 0.0));
        assert_eq!(c.redis_busy_seconds("a"), Some(3.5));
        assert_eq!(c.interval_ms("a"), Some(15_000));
        c.record("a", 30_000, &flush(1.25, 0.0, 0.0));
        assert_eq!(c.redis_busy_seconds("a"), Some(1.25), "restarted pod");
        c.record("a", 45_000, &Reading::default());
        assert_eq!(c.redis_busy_seconds("a"), None, "not in the last scrape");
        c.record("a", 60_000, &flush(f64::NAN, 0.0, 0.0));
        assert_eq!(c.redis_busy_seconds("a"), None, "invalid");
    }

    #[test]
    fn drain_rate_is_events_flushed_per_second_of_flushing() {
        assert_eq!(drain_rate((1_000.0, 1.0), (31_000.0, 1.5)), Some(60_000.0));
        assert_eq!(drain_rate((1_000.0, 1.0), (1_000.0, 1.0)), None, "no flush");
        assert_eq!(
            drain_rate((9_000.0, 9.0), (2_000.0, 0.5)),
            Some(4_000.0),
            "reset"
        );
        assert_eq!(drain_rate((0.0, 0.0), (f64::NAN, 1.0)), None);
        assert_eq!(
            drain_rate((0.0, 0.0), (1e14, 1e-300)),
            None,
            "overflows to inf"
        );

        let mut c = SampleCache::new();
        assert_eq!(c.drain_rate("a"), None, "unknown pod");
        c.record("a", 0, &flush(0.0, 1_000.0, 1.0));
        c.record("a", 15_000, &flush(0.0, 31_000.0, 1.5));
        assert_eq!(c.drain_rate("a"), Some(60_000.0));
    }
}

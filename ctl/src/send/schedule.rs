//! When a worker's calls are due.
//!
//! Without `--rate` a call is due as soon as the one before it is answered
//! (closed loop). With `--rate`, calls are due on a fixed schedule whether or
//! not earlier ones have been answered (open loop, up to [`MAX_IN_FLIGHT`]
//! per connection), and a call's latency is measured from the moment it was
//! due, so a slow server shows up in the latency rather than in a lower
//! offered rate.

use std::time::Duration;

use tokio::time::Instant;

/// Calls one connection has in flight at most in `--rate` mode.
pub const MAX_IN_FLIGHT: usize = 64;

/// One worker's schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// Each call is due once the previous one is answered.
    Closed,
    /// Calls are due at `next`, then every `events / events_per_second`.
    Open {
        next: Instant,
        events_per_second: f64,
    },
}

impl Schedule {
    /// The schedule of worker `worker` of `workers`, sending calls of `batch`
    /// events at `rate` events per second in total (0: closed loop), for a
    /// run that started at `start`.
    pub fn new(start: Instant, worker: usize, workers: usize, batch: u64, rate: u64) -> Self {
        let events_per_second = rate as f64 / workers as f64;
        if events_per_second > 0.0 {
            Schedule::Open {
                next: start + first_due(worker, batch, rate),
                events_per_second,
            }
        } else {
            Schedule::Closed
        }
    }

    /// Whether calls go out without waiting for earlier answers.
    pub fn is_open(&self) -> bool {
        matches!(self, Schedule::Open { .. })
    }

    /// Waits until the next call, of `events` events, is due; returns when
    /// that was, the moment its latency counts from.
    pub async fn due(&mut self, events: u64) -> Instant {
        match self {
            Schedule::Closed => Instant::now(),
            Schedule::Open {
                next,
                events_per_second,
            } => {
                tokio::time::sleep_until(*next).await;
                let due = *next;
                *next += Duration::from_secs_f64(events as f64 / *events_per_second);
                due
            }
        }
    }
}

/// When worker `w`'s first call is due in `--rate` mode: the workers take
/// turns, so calls arrive evenly spaced (one every `batch / rate` seconds)
/// rather than `workers` at a time.
pub fn first_due(w: usize, batch: u64, rate: u64) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    let call_interval = batch as f64 / rate as f64;
    Duration::from_secs_f64(call_interval * w as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_take_turns_so_calls_are_evenly_spaced() {
        // 4 workers, 1 000-event calls, 40 000 events/s: one call every 25 ms
        // overall, each worker every 100 ms, starting 25 ms apart.
        let due: Vec<u128> = (0..4)
            .map(|w| first_due(w, 1_000, 40_000).as_millis())
            .collect();
        assert_eq!(due, [0, 25, 50, 75]);
        assert_eq!(
            first_due(3, 1_000, 0),
            Duration::ZERO,
            "no schedule without --rate"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_calls_are_due_on_schedule_however_late_they_are_sent() {
        let start = Instant::now();
        // Worker 1 of 2 at 1 000 events/s: 500/s of its own, first call
        // after worker 0's (100 ms), then one call of 100 every 200 ms.
        let mut s = Schedule::new(start, 1, 2, 100, 1_000);
        assert!(s.is_open());
        assert_eq!(s.due(100).await - start, Duration::from_millis(100));
        // The worker was held up: the next call is still due at 300 ms, and
        // the one after at 500 ms, without waiting.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(s.due(100).await - start, Duration::from_millis(300));
        assert_eq!(s.due(100).await - start, Duration::from_millis(500));
        assert_eq!(Instant::now() - start, Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_rate_a_call_is_due_when_it_is_sent() {
        let start = Instant::now();
        let mut s = Schedule::new(start, 3, 4, 1_000, 0);
        assert!(!s.is_open());
        tokio::time::sleep(Duration::from_millis(70)).await;
        assert_eq!(s.due(1_000).await - start, Duration::from_millis(70));
    }
}

//! When a recent-events list has its TTL set again: a pure policy, time
//! passed in.
//!
//! An `EXPIRE` on every list at every flush was one of the three commands
//! per device and flush. Instead a list's TTL is set to `ttl + slack` and
//! set again only once `slack` (a tenth of the TTL, 1 s to 1 h) has passed
//! since this pod last set it, so the list still lives at least `ttl` after
//! its last write. The flush script also sets the TTL of a list that its
//! push created, so a pod that never saw a list before (or forgot it) is
//! never the only thing keeping it alive.

use std::time::{Duration, Instant};

use crate::aggregate::ListWrite;

/// The longest slack, and how long the log remembers a list it has not
/// refreshed since (past that its refresh is due whatever the TTL).
const SLACK_MAX: Duration = Duration::from_secs(3600);

/// The TTL slack of a recent-events list: a tenth of its TTL, 1 s to 1 h.
pub fn slack_seconds(ttl_seconds: u32) -> u32 {
    (ttl_seconds / 10).clamp(1, SLACK_MAX.as_secs() as u32)
}

/// The TTL a list is given: its configured TTL plus the slack.
pub fn list_ttl(ttl_seconds: u32) -> u32 {
    ttl_seconds + slack_seconds(ttl_seconds)
}

/// Whether a list with a TTL of `ttl_seconds`, whose TTL this pod last set
/// at `last_set` (`None`: not that it remembers), should have it set again
/// by a flush planned at `now`.
pub fn due(last_set: Option<Instant>, ttl_seconds: u32, now: Instant) -> bool {
    last_set.is_none_or(|t| {
        now.duration_since(t) >= Duration::from_secs(slack_seconds(ttl_seconds).into())
    })
}

/// When this pod last set the TTL of each recent-events list.
#[derive(Debug, Default)]
pub struct RefreshLog {
    set_at: foldhash::HashMap<String, Instant>,
    swept: Option<Instant>,
}

impl RefreshLog {
    /// For each list of a flush planned at `now`, whether the flush sets its
    /// TTL again (a list without a TTL never has one set).
    pub fn due(&self, lists: &[ListWrite<'_>], now: Instant) -> Vec<bool> {
        lists
            .iter()
            .map(|l| {
                l.ttl
                    .is_some_and(|ttl| due(self.set_at.get(l.key).copied(), ttl, now))
            })
            .collect()
    }

    /// Records that a flush planned at `at` set the TTL of the `lists` that
    /// `refresh` (as returned by [`RefreshLog::due`]) marks. Once per
    /// [`SLACK_MAX`] it forgets lists not refreshed for that long, so the
    /// log holds only lists written lately.
    pub fn record(&mut self, lists: &[ListWrite<'_>], refresh: &[bool], at: Instant) {
        for (list, _) in lists.iter().zip(refresh).filter(|(_, r)| **r) {
            match self.set_at.get_mut(list.key) {
                Some(t) => *t = at,
                None => {
                    self.set_at.insert(list.key.to_string(), at);
                }
            }
        }
        if self.swept.is_none_or(|t| at.duration_since(t) >= SLACK_MAX) {
            self.set_at
                .retain(|_, t| at.saturating_duration_since(*t) < SLACK_MAX);
            self.swept = Some(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(key: &str, ttl: Option<u32>) -> ListWrite<'_> {
        ListWrite {
            key,
            keep: 20,
            ttl,
            values: vec![],
        }
    }

    #[test]
    fn slack_is_a_tenth_of_the_ttl_between_a_second_and_an_hour() {
        assert_eq!(slack_seconds(600), 60);
        assert_eq!(slack_seconds(5), 1);
        assert_eq!(slack_seconds(7 * 24 * 3600), 3600);
        assert_eq!(list_ttl(600), 660);
        assert_eq!(list_ttl(5), 6);
    }

    #[test]
    fn a_list_ttl_is_set_again_once_its_slack_has_passed() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert!(due(None, 600, t0), "a list it does not remember");
        assert!(!due(Some(t0), 600, t0 + s(59)));
        assert!(due(Some(t0), 600, t0 + s(60)));
        // A clock read before the last refresh is no time passed.
        assert!(!due(Some(t0 + s(5)), 600, t0));
    }

    #[test]
    fn the_log_refreshes_lists_with_a_ttl_that_it_has_not_refreshed_lately() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let lists = [list("a", Some(600)), list("b", None), list("c", Some(50))];
        let mut log = RefreshLog::default();
        let first = log.due(&lists, t0);
        assert_eq!(first, [true, false, true]);
        log.record(&lists, &first, t0);
        assert_eq!(log.due(&lists, t0 + s(4)), [false, false, false]);
        assert_eq!(log.due(&lists, t0 + s(5)), [false, false, true]);
        assert_eq!(log.due(&lists, t0 + s(60)), [true, false, true]);
        // Only what was sent as refreshed counts as refreshed.
        log.record(&lists, &[false, false, true], t0 + s(60));
        assert_eq!(log.due(&lists, t0 + s(61)), [true, false, false]);
    }

    #[test]
    fn the_log_forgets_lists_not_refreshed_for_an_hour() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut log = RefreshLog::default();
        log.record(&[list("old", Some(600))], &[true], t0);
        log.record(&[list("new", Some(600))], &[true], t0 + s(1800));
        assert_eq!(log.set_at.len(), 2, "swept at most once an hour");
        log.record(&[list("new", Some(600))], &[true], t0 + s(3600));
        assert_eq!(log.set_at.len(), 1);
        assert!(log.set_at.contains_key("new"));
    }
}

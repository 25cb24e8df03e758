//! `spec.autoscaling.behavior`: stabilization windows and rate-limit
//! policies, as HPA's `stabilizeRecommendationWithBehaviors` and
//! `convertDesiredReplicasWithBehaviorRate` do them.
//!
//! Windows and periods look at records strictly newer than `now − length`, so
//! a tick exactly one period after a scale event may take the next step and
//! a tick 10 ms earlier may not. Arithmetic is i64, saturated into i32.

use super::{History, Millis, Recommendation, ScaleEvent, Verdict};
use crate::crd::autoscaling::{Behavior, PolicyType, ScalingPolicy, SelectPolicy};

fn seconds(s: i32) -> Millis {
    Millis::from(s.max(0)) * 1000
}

/// Step 6: clamps `current` between the lowest recommendation inside the
/// scale-up window and the highest inside the scale-down window (`desired`
/// included in both), then records `desired` and forgets what no window
/// can see any more.
pub fn stabilize(
    history: &mut History,
    behavior: &Behavior,
    desired: i32,
    current: i32,
    now: Millis,
) -> i32 {
    let up_cutoff = now - seconds(behavior.scale_up.stabilization_window_seconds);
    let down_cutoff = now - seconds(behavior.scale_down.stabilization_window_seconds);
    let mut lo = desired;
    let mut hi = desired;
    for rec in &history.recommendations {
        if rec.at > up_cutoff {
            lo = lo.min(rec.replicas);
        }
        if rec.at > down_cutoff {
            hi = hi.max(rec.replicas);
        }
    }
    history.recommendations.push(Recommendation {
        replicas: desired,
        at: now,
    });
    prune_recommendations(&mut history.recommendations, up_cutoff, down_cutoff);
    current.clamp(lo, hi)
}

/// Drops the recommendations that can no longer change a decision: those
/// outside both windows, and those that a later one dominates in both
/// directions (a later record lives longer, so an older one matters only if
/// it is higher than every later one for the scale-down window, or lower for
/// the scale-up window). Keeps the history small whatever the sync period.
fn prune_recommendations(recs: &mut Vec<Recommendation>, up_cutoff: Millis, down_cutoff: Millis) {
    recs.retain(|r| r.at > up_cutoff || r.at > down_cutoff);
    let mut keep = vec![false; recs.len()];
    let mut later_max = i32::MIN;
    let mut later_min = i32::MAX;
    for (i, r) in recs.iter().enumerate().rev() {
        let for_down = r.at > down_cutoff && r.replicas > later_max;
        let for_up = r.at > up_cutoff && r.replicas < later_min;
        keep[i] = for_down || for_up;
        later_max = later_max.max(r.replicas);
        later_min = later_min.min(r.replicas);
    }
    let mut i = 0;
    recs.retain(|_| {
        i += 1;
        keep[i - 1]
    });
}

/// Forgets scale events older than the longest policy period.
pub fn prune_scale_events(history: &mut History, behavior: &Behavior, now: Millis) {
    let longest = behavior
        .scale_up
        .policies
        .iter()
        .chain(&behavior.scale_down.policies)
        .map(|p| p.period_seconds)
        .max()
        .unwrap_or(0);
    let cutoff = now - seconds(longest);
    history.scale_events.retain(|e| e.at > cutoff);
}

/// The replica count at the start of the policy period: `current` less the
/// changes of the scale events strictly newer than `now − period`.
fn period_start(events: &[ScaleEvent], period_seconds: i32, current: i32, now: Millis) -> i64 {
    let cutoff = now - seconds(period_seconds);
    events
        .iter()
        .filter(|e| e.at > cutoff)
        .fold(i64::from(current), |start, e| {
            start - (i64::from(e.to) - i64::from(e.from))
        })
}

fn saturate(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(if n > 0 { i32::MAX } else { i32::MIN })
}

/// The highest count the scale-up policies allow now; `None` when scaling up
/// is disabled.
pub fn scale_up_limit(
    events: &[ScaleEvent],
    policies: &[ScalingPolicy],
    select: SelectPolicy,
    current: i32,
    now: Millis,
) -> Option<i32> {
    let proposals = policies.iter().map(|p| {
        let start = period_start(events, p.period_seconds, current, now);
        let value = i64::from(p.value);
        match p.type_ {
            PolicyType::Pods => start + value,
            // Rounded up, so that a small Deployment can always grow.
            PolicyType::Percent => {
                (start * (100 + value)).div_euclid(100)
                    + i64::from((start * (100 + value)).rem_euclid(100) != 0)
            }
        }
    });
    let limit = match select {
        SelectPolicy::Disabled => return None,
        SelectPolicy::Max => proposals.max(),
        SelectPolicy::Min => proposals.min(),
    };
    limit.map(saturate)
}

/// The lowest count the scale-down policies allow now; `None` when scaling
/// down is disabled.
pub fn scale_down_limit(
    events: &[ScaleEvent],
    policies: &[ScalingPolicy],
    select: SelectPolicy,
    current: i32,
    now: Millis,
) -> Option<i32> {
    let proposals = policies.iter().map(|p| {
        let start = period_start(events, p.period_seconds, current, now);
        let value = i64::from(p.value);
        match p.type_ {
            PolicyType::Pods => start - value,
            // Truncated toward zero, as HPA does.
            PolicyType::Percent => start * (100 - value) / 100,
        }
    });
    let limit = match select {
        SelectPolicy::Disabled => return None,
        // Most change when scaling down is the lowest count.
        SelectPolicy::Max => proposals.min(),
        SelectPolicy::Min => proposals.max(),
    };
    limit.map(saturate)
}

/// The stabilized recommendation after the rate limits and the bounds, and
/// the condition that says what held it back, if anything did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limited {
    /// Replicas after limits.
    pub replicas: i32,
    /// `ScalingLimited=True` with its reason, when something held it back.
    pub verdict: Option<Verdict>,
}

/// Step 7: applies the policies of the direction `stabilized` moves in, and
/// `min`/`max`.
pub fn limit(
    history: &History,
    behavior: &Behavior,
    stabilized: i32,
    current: i32,
    min: i32,
    max: i32,
    now: Millis,
) -> Limited {
    let events = &history.scale_events;
    if stabilized > current {
        let rules = &behavior.scale_up;
        let limit = scale_up_limit(events, &rules.policies, rules.select_policy, current, now)
            .unwrap_or(current)
            .max(current);
        let (allowed, verdict) = if limit < max {
            (
                limit,
                Verdict::yes(
                    "ScaleUpLimit",
                    format!(
                        "scale-up to {stabilized} limited to {limit} by behavior.scaleUp policies"
                    ),
                ),
            )
        } else {
            (
                max,
                Verdict::yes(
                    "TooManyReplicas",
                    format!("{stabilized} replicas wanted, maxReplicas is {max}"),
                ),
            )
        };
        if stabilized > allowed {
            return Limited {
                replicas: allowed,
                verdict: Some(verdict),
            };
        }
    } else if stabilized < current {
        let rules = &behavior.scale_down;
        let limit = scale_down_limit(events, &rules.policies, rules.select_policy, current, now)
            .unwrap_or(current)
            .min(current);
        let (allowed, verdict) = if limit > min {
            (
                limit,
                Verdict::yes(
                    "ScaleDownLimit",
                    format!(
                        "scale-down to {stabilized} limited to {limit} by behavior.scaleDown policies"
                    ),
                ),
            )
        } else {
            (
                min,
                Verdict::yes(
                    "TooFewReplicas",
                    format!("{stabilized} replicas wanted, minReplicas is {min}"),
                ),
            )
        };
        if stabilized < allowed {
            return Limited {
                replicas: allowed,
                verdict: Some(verdict),
            };
        }
    }
    Limited {
        replicas: stabilized,
        verdict: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(type_: PolicyType, value: i32, period_seconds: i32) -> ScalingPolicy {
        ScalingPolicy {
            type_,
            value,
            period_seconds,
        }
    }

    #[test]
    fn percent_rounds_up_when_growing_and_toward_zero_when_shrinking() {
        let up = [policy(PolicyType::Percent, 10, 15)];
        assert_eq!(scale_up_limit(&[], &up, SelectPolicy::Max, 3, 0), Some(4));
        let down = [policy(PolicyType::Percent, 10, 15)];
        assert_eq!(
            scale_down_limit(&[], &down, SelectPolicy::Max, 3, 0),
            Some(2)
        );
        let all = [policy(PolicyType::Percent, 100, 15)];
        assert_eq!(
            scale_down_limit(&[], &all, SelectPolicy::Max, 7, 0),
            Some(0)
        );
    }

    #[test]
    fn select_policy_max_allows_the_most_change_and_min_the_least() {
        let p = [
            policy(PolicyType::Pods, 4, 15),
            policy(PolicyType::Percent, 100, 15),
        ];
        assert_eq!(scale_up_limit(&[], &p, SelectPolicy::Max, 2, 0), Some(6));
        assert_eq!(scale_up_limit(&[], &p, SelectPolicy::Min, 2, 0), Some(4));
        assert_eq!(scale_up_limit(&[], &p, SelectPolicy::Disabled, 2, 0), None);
        assert_eq!(scale_down_limit(&[], &p, SelectPolicy::Max, 10, 0), Some(0));
        assert_eq!(scale_down_limit(&[], &p, SelectPolicy::Min, 10, 0), Some(6));
    }

    #[test]
    fn events_count_only_when_strictly_inside_the_period() {
        let p = [policy(PolicyType::Pods, 4, 15)];
        let events = [ScaleEvent {
            from: 2,
            to: 6,
            at: 0,
        }];
        assert_eq!(
            scale_up_limit(&events, &p, SelectPolicy::Max, 6, 14_990),
            Some(6)
        );
        assert_eq!(
            scale_up_limit(&events, &p, SelectPolicy::Max, 6, 15_000),
            Some(10)
        );
    }

    #[test]
    fn extreme_values_saturate() {
        let p = [policy(PolicyType::Percent, i32::MAX, 15)];
        assert_eq!(
            scale_up_limit(&[], &p, SelectPolicy::Max, i32::MAX, 0),
            Some(i32::MAX)
        );
        let p = [policy(PolicyType::Pods, i32::MAX, 15)];
        assert_eq!(
            scale_down_limit(&[], &p, SelectPolicy::Max, i32::MIN + 1, 0),
            Some(i32::MIN)
        );
    }

    #[test]
    fn pruning_keeps_what_a_window_can_still_see() {
        let rec = |replicas, at| Recommendation { replicas, at };
        // Down window 300 s, up window 0: only later-maximum records matter.
        let mut recs = vec![rec(5, 0), rec(9, 10_000), rec(3, 20_000), rec(4, 30_000)];
        prune_recommendations(&mut recs, 30_000, -270_000);
        assert_eq!(recs, vec![rec(9, 10_000), rec(4, 30_000)]);
        // Outside both windows: gone.
        let mut recs = vec![rec(9, 0), rec(4, 400_000)];
        prune_recommendations(&mut recs, 400_000, 100_000);
        assert_eq!(recs, vec![rec(4, 400_000)]);
    }
}

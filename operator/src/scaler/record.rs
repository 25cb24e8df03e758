//! What the autoscaler writes in a pipeline's status, as pure functions:
//! `status.autoscaling` from a decision ([`status_of`]), whether it is worth
//! writing ([`needs_write`]), the history read back after a restart
//! ([`history_from_status`]), the `Scaling*` conditions ([`conditions_of`])
//! and the Events their transitions deserve.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;

use crate::autoscale::{
    self, Decision, History, Inputs, Millis, Recommendation, ScaleEvent, Verdict, condition,
};
use crate::crd::autoscaling::{AutoscalingStatus, RecommendationRecord, ScaleEventRecord};

pub(super) fn timestamp(ms: Millis) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// How far the written time of the newest recommendation may fall behind
/// before the status is rewritten for that time alone. An idle pipeline's
/// status then changes once a minute, not at every tick.
pub const HISTORY_REFRESH_MS: Millis = 60_000;

fn millis(t: &MicroTime) -> Millis {
    t.0.as_millisecond()
}

/// Whether `new` must be written over `old`: when anything changed but the
/// time of the newest recommendation (same replicas), or when that time moved
/// on by [`HISTORY_REFRESH_MS`] or more.
pub fn needs_write(old: Option<&AutoscalingStatus>, new: &AutoscalingStatus) -> bool {
    let Some(old) = old else {
        return true;
    };
    if old == new {
        return false;
    }
    let (Some(old_last), Some(new_last)) = (old.recommendations.last(), new.recommendations.last())
    else {
        return true;
    };
    let without_newest = |s: &AutoscalingStatus| AutoscalingStatus {
        recommendations: s.recommendations[..s.recommendations.len() - 1].to_vec(),
        ..s.clone()
    };
    old_last.replicas != new_last.replicas
        || millis(&new_last.time) - millis(&old_last.time) >= HISTORY_REFRESH_MS
        || without_newest(old) != without_newest(new)
}

/// The history kept in a status, back in the decision's units, read at
/// `now`. The newest recommendation may have been recommended again, unwritten,
/// for up to [`HISTORY_REFRESH_MS`] after its written time (see
/// [`needs_write`]): it is taken as recommended until then (or until `now`),
/// so a restart may scale down a little later than the lost memory would
/// have, never earlier.
pub fn history_from_status(status: Option<&AutoscalingStatus>, now: Millis) -> History {
    let Some(s) = status else {
        return History::default();
    };
    let mut history = History {
        recommendations: s
            .recommendations
            .iter()
            .map(|r| Recommendation {
                replicas: r.replicas,
                at: r.time.0.as_millisecond(),
            })
            .collect(),
        scale_events: s
            .scale_events
            .iter()
            .map(|e| ScaleEvent {
                from: e.from,
                to: e.to,
                at: e.time.0.as_millisecond(),
            })
            .collect(),
        consecutive_failures: u32::try_from(s.consecutive_failures).unwrap_or(0),
    };
    if let Some(newest) = history.recommendations.last_mut() {
        newest.at = newest
            .at
            .max(now.min(newest.at.saturating_add(HISTORY_REFRESH_MS)));
    }
    history
}

/// The status the autoscaler writes for a decision.
pub fn status_of(
    decision: &Decision,
    inputs: &Inputs,
    history: &History,
    scaled_at: Option<Millis>,
    old: Option<&AutoscalingStatus>,
) -> AutoscalingStatus {
    let units = |milli: u128| i64::try_from(milli / 1000).unwrap_or(i64::MAX);
    AutoscalingStatus {
        desired_replicas: Some(decision.desired),
        current_replicas: Some(decision.current),
        current_queue_depth: decision
            .queue
            .as_ref()
            .filter(|q| q.ready > 0)
            .map(|q| units(q.total)),
        max_pod_queue_depth: decision
            .queue
            .as_ref()
            .filter(|q| q.ready > 0)
            .map(|q| units(u128::from(q.max))),
        current_events_per_second: decision
            .rate
            .as_ref()
            .filter(|r| r.ready > 0)
            .map(|r| units(r.total)),
        redis_busy_percent: inputs
            .redis_busy_permille
            .map(|p| i32::try_from(p / 10).unwrap_or(100)),
        last_scale_time: scaled_at
            .map(|ms| Time(timestamp(ms)))
            .or_else(|| old.and_then(|o| o.last_scale_time.clone())),
        recommendations: history
            .recommendations
            .iter()
            .map(|r| RecommendationRecord {
                replicas: r.replicas,
                time: MicroTime(timestamp(r.at)),
            })
            .collect(),
        scale_events: history
            .scale_events
            .iter()
            .map(|e| ScaleEventRecord {
                from: e.from,
                to: e.to,
                time: MicroTime(timestamp(e.at)),
            })
            .collect(),
        consecutive_failures: i32::try_from(history.consecutive_failures).unwrap_or(i32::MAX),
        // The caller sets it: it depends on the pods, not on the decision.
        drain: None,
    }
}

/// The three conditions of a decision, keeping `lastTransitionTime` where
/// the status did not change.
pub fn conditions_of(
    decision: &Decision,
    old: &[Condition],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    [
        (condition::SCALING_ACTIVE, &decision.scaling_active),
        (condition::SCALING_LIMITED, &decision.scaling_limited),
        (condition::FALLBACK_ACTIVE, &decision.fallback_active),
    ]
    .into_iter()
    .map(|(type_, v): (&str, &Verdict)| {
        let status = if v.status { "True" } else { "False" }.to_string();
        let last_transition_time = old
            .iter()
            .find(|o| o.type_ == type_ && o.status == status)
            .map_or_else(|| now.clone(), |o| o.last_transition_time.clone());
        Condition {
            type_: type_.to_string(),
            status,
            reason: v.reason.to_string(),
            message: v.message.clone(),
            observed_generation: generation,
            last_transition_time,
        }
    })
    .collect()
}

pub(super) fn same_conditions(old: &[Condition], new: &[Condition]) -> bool {
    new.iter().all(|n| old.iter().any(|o| o == n)) && old.len() == new.len()
}

/// Events for the autoscaler's condition changes worth a person's attention.
pub(super) fn transition_events(
    old: &[Condition],
    new: &[Condition],
) -> Vec<(EventType, String, String)> {
    let was = |t: &str| {
        old.iter()
            .find(|c| c.type_ == t)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    let mut events = Vec::new();
    for c in new {
        let before = was(&c.type_);
        let changed = before.as_ref() != Some(&(c.status.clone(), c.reason.clone()));
        if !changed {
            continue;
        }
        match (c.type_.as_str(), c.status.as_str(), c.reason.as_str()) {
            (condition::SCALING_LIMITED, "True", autoscale::REDIS_SATURATED) => {
                events.push((EventType::Warning, c.reason.clone(), c.message.clone()))
            }
            (condition::SCALING_LIMITED, "True", autoscale::SCALE_DOWN_DEFERRED) => {
                events.push((EventType::Normal, c.reason.clone(), c.message.clone()))
            }
            (condition::SCALING_ACTIVE, "False", reason @ "FailedGetMetrics") => {
                events.push((EventType::Warning, reason.to_string(), c.message.clone()))
            }
            (condition::FALLBACK_ACTIVE, "True", reason) => {
                events.push((EventType::Warning, reason.to_string(), c.message.clone()))
            }
            _ => {}
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscale::Action;

    #[test]
    fn history_survives_the_status_round_trip_to_the_millisecond() {
        let history = History {
            recommendations: vec![
                Recommendation {
                    replicas: 10,
                    at: 1_700_000_000_123,
                },
                Recommendation {
                    replicas: 2,
                    at: 1_700_000_015_456,
                },
            ],
            scale_events: vec![ScaleEvent {
                from: 4,
                to: 8,
                at: 1_700_000_010_789,
            }],
            consecutive_failures: 3,
        };
        let decision = Decision {
            current: 8,
            desired: 8,
            action: Action::Hold,
            history: history.clone(),
            queue: None,
            rate: None,
            scaling_active: Verdict {
                status: true,
                reason: "ValidMetricFound",
                message: String::new(),
            },
            scaling_limited: Verdict {
                status: false,
                reason: "DesiredWithinRange",
                message: String::new(),
            },
            fallback_active: Verdict {
                status: false,
                reason: "MetricsAvailable",
                message: String::new(),
            },
            why: String::new(),
        };
        let status = status_of(&decision, &Inputs::default(), &history, None, None);
        let json = serde_json::to_value(&status).unwrap();
        let back: AutoscalingStatus = serde_json::from_value(json).unwrap();
        // Read back at the time of the newest record: exactly what was kept.
        assert_eq!(history_from_status(Some(&back), 1_700_000_015_456), history);
    }

    /// Ticks every 15 s of a pipeline whose 10 pods hold `total(t)` events;
    /// persists the status as the autoscaler does (only when
    /// [`needs_write`]), and if `crash_at` is set, forgets its memory there
    /// and reads the history back from the written status. Returns the time
    /// of the first scale-down and how many status writes happened.
    fn run(crash_at: Option<Millis>, total: impl Fn(Millis) -> u64) -> (Option<Millis>, usize) {
        use crate::autoscale::{MILLI, Phase, PodInput, Sample, decide};
        use crate::crd::autoscaling::AutoscalingSpec;
        let spec = AutoscalingSpec::test(2, 20);
        let mut current = 10;
        let mut history = History::default();
        let mut written: Option<AutoscalingStatus> = None;
        let mut writes = 0;
        for tick in 0..80 {
            let now = 1_000_000 + tick * 15_000;
            if crash_at == Some(now) {
                history = history_from_status(written.as_ref(), now);
            }
            let per_pod = total(now) / 10;
            let pods = (0..current)
                .map(|i| PodInput {
                    name: format!("p{i}"),
                    phase: Phase::Running,
                    terminating: false,
                    ready: true,
                    created: 0,
                    queue: Some(Sample {
                        value: per_pod * MILLI,
                        at: now,
                    }),
                    rate: None,
                    deletion_cost: None,
                })
                .collect();
            let inputs = Inputs {
                current,
                pods,
                ..Inputs::default()
            };
            let d = decide(&spec, &history, &inputs, now);
            history = d.history.clone();
            if d.desired < current {
                return (Some(now), writes);
            }
            let new = status_of(&d, &inputs, &history, None, written.as_ref());
            if needs_write(written.as_ref(), &new) {
                written = Some(new);
                writes += 1;
            }
            current = d.desired;
        }
        (None, writes)
    }

    #[test]
    fn an_idle_pipeline_writes_its_status_once_a_minute_not_every_tick() {
        let (scaled, writes) = run(None, |_| 1000);
        assert_eq!(scaled, None);
        // 80 ticks over 20 minutes: the first write, then one per minute.
        assert!(writes <= 22, "{writes} writes");
        assert!(writes >= 19, "{writes} writes");
    }

    #[test]
    fn a_restart_from_the_written_status_never_scales_down_earlier() {
        // 10 pods at the target for 5 minutes, then a backlog that wants 2.
        let load = |now: Millis| if now < 1_300_000 { 1000 } else { 150 };
        let (expected, _) = run(None, load);
        let expected = expected.expect("a scale-down after the window");
        for tick in 1..40 {
            let crash = 1_000_000 + tick * 15_000;
            let (scaled, _) = run(Some(crash), load);
            let scaled = scaled.expect("a scale-down");
            assert!(
                scaled >= expected,
                "restart at {crash}: scaled down at {scaled}, before {expected}"
            );
            assert!(
                scaled <= expected + HISTORY_REFRESH_MS + 15_000,
                "restart at {crash}: scaled down at {scaled}, long after {expected}"
            );
        }
    }
}

//! The pipeline's condition types, and a condition before and after its
//! timestamps: [`Cond`] is what [`compute`](super::compute) decides,
//! [`stamp`] makes `metav1.Condition`s of them, keeping the
//! `lastTransitionTime` of each whose status did not change.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition: Redis and every wanted ingest pod are ready.
pub const READY: &str = "Ready";
/// Condition: the Redis the pipeline writes to is ready.
pub const REDIS_READY: &str = "RedisReady";
/// Condition: the ingest Deployment is rolled out and all its pods are ready.
pub const INGEST_READY: &str = "IngestReady";
/// Condition: the children are still being created, rolled out or scaled.
pub const PROGRESSING: &str = "Progressing";
/// Condition: something is wrong that waiting will not fix; the reason says what.
pub const DEGRADED: &str = "Degraded";
/// Condition: `spec.paused` is set and the operator is changing nothing.
pub const PAUSED: &str = "Paused";

/// One condition before timestamps: type, status, reason, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Cond {
    pub(super) type_: &'static str,
    pub(super) status: bool,
    pub(super) reason: String,
    pub(super) message: String,
}

impl Cond {
    pub(super) fn new(
        type_: &'static str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// `conds` as `metav1.Condition`s of `generation`. One whose type had the
/// same status in `old` keeps its `lastTransitionTime`; the others get `now`.
pub(super) fn stamp(
    conds: impl IntoIterator<Item = Cond>,
    old: &[Condition],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    conds
        .into_iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" }.to_string();
            let last_transition_time = old
                .iter()
                .find(|o| o.type_ == c.type_ && o.status == status)
                .map(|o| o.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: c.type_.to_string(),
                status,
                reason: c.reason,
                message: c.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TelemetryPipeline;
    use crate::status::fixtures::*;
    use crate::status::{Observed, compute, transition_events};

    #[test]
    fn recomputing_from_the_same_observations_gives_an_equal_status() {
        let crash_looping = Observed {
            deployment: Some(deployment(2, 1, 2)),
            ingest_pods: vec![
                ready_pod("pipe-ingest-a"),
                pod(
                    "pipe-ingest-b",
                    false,
                    50,
                    container(
                        false,
                        waiting("CrashLoopBackOff", "back-off"),
                        Some(exited(1)),
                    ),
                ),
            ],
            ..healthy()
        };
        for observed in [healthy(), Observed::default(), crash_looping] {
            let tp = TelemetryPipeline::test();
            let first = compute(&tp, &observed, at(100));
            let tp = tp.with_status(first.clone());
            let second = compute(&tp, &observed, at(200));
            assert_eq!(first, second, "no write when nothing changed");
            assert!(transition_events(Some(&first), &second).is_empty());
        }
    }

    #[test]
    fn last_transition_time_moves_only_when_the_status_flips() {
        let tp = TelemetryPipeline::test();
        let ready = compute(&tp, &healthy(), at(100));
        let tp = tp.with_status(ready);
        let observed = Observed {
            deployment: Some(deployment(2, 1, 2)),
            ..healthy()
        };
        let s = compute(&tp, &observed, at(200));
        assert_eq!(cond(&s, INGEST_READY).last_transition_time, at(200));
        assert_eq!(cond(&s, PROGRESSING).last_transition_time, at(200));
        assert_eq!(cond(&s, REDIS_READY).last_transition_time, at(100));
        assert_eq!(cond(&s, DEGRADED).last_transition_time, at(100));
    }
}

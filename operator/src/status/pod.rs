//! What one pod's status says ([`PodHealth`]): ready, starting (and what it
//! is doing), or failing (and what is wrong), from its conditions and its
//! containers' states, time passed in; and the first failing or starting pod
//! of a part, for its conditions' messages.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

/// How long a pod may stay not ready, without a container error to show for
/// it, before that counts as a problem rather than a pod still starting.
pub const READINESS_GRACE: Duration = Duration::from_secs(120);

/// Container waiting reasons that are ordinary progress; any other waiting
/// reason (CrashLoopBackOff, CreateContainerConfigError, ImagePullBackOff,
/// ErrImagePull, InvalidImageName, ...) is an error the kubelet reports.
const STARTING_REASONS: [&str; 2] = ["ContainerCreating", "PodInitializing"];

/// What one pod's status says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum PodHealth {
    /// Its Ready condition is True.
    Ready,
    /// Not ready yet, for a reason that passes; says what it is doing.
    Starting(String),
    /// Not ready, and waiting will not fix it: reason (`PodFailing` or
    /// `PodNotReady`) and what is wrong.
    Failing(&'static str, String),
}

/// `pod`'s health at `now`. `hint` says what a running container's readiness
/// waits for.
fn pod_health(pod: &Pod, now: &Time, hint: &str) -> PodHealth {
    let status = pod.status.as_ref();
    let conditions = status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let ready = conditions.iter().find(|c| c.type_ == "Ready");
    if ready.is_some_and(|c| c.status == "True") {
        return PodHealth::Ready;
    }
    let containers: Vec<&ContainerStatus> = status
        .into_iter()
        .flat_map(|s| {
            let init = s.init_container_statuses.iter().flatten();
            init.chain(s.container_statuses.iter().flatten())
        })
        .collect();
    if let Some(error) = containers.iter().find_map(|c| container_error(c)) {
        return PodHealth::Failing("PodFailing", error);
    }
    let doing = if let Some(unscheduled) = conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        with_detail(
            "not scheduled",
            unscheduled.reason.as_deref(),
            unscheduled.message.as_deref(),
        )
    } else if let Some(c) = containers.iter().find(|c| !c.ready) {
        container_progress(c, hint)
    } else {
        "waiting for its containers to start".to_string()
    };
    let since = ready
        .and_then(|c| c.last_transition_time.clone())
        .or_else(|| status.and_then(|s| s.start_time.clone()))
        .or_else(|| pod.metadata.creation_timestamp.clone());
    match since {
        Some(since) if now.0.as_second() - since.0.as_second() >= grace_seconds() => {
            PodHealth::Failing(
                "PodNotReady",
                format!("not ready since {}: {doing}", since.0),
            )
        }
        _ => PodHealth::Starting(doing),
    }
}

fn grace_seconds() -> i64 {
    i64::try_from(READINESS_GRACE.as_secs()).unwrap_or(i64::MAX)
}

/// `what: reason: message`, leaving out the parts that are empty.
fn with_detail(what: &str, reason: Option<&str>, message: Option<&str>) -> String {
    [Some(what), reason, message]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

/// How a container last exited, if with an error: "exited with code 1 (Error)".
fn failed_exit(state: Option<&ContainerState>) -> Option<String> {
    let t = state?.terminated.as_ref()?;
    (t.exit_code != 0).then(|| match t.reason.as_deref() {
        Some(reason) if !reason.is_empty() => {
            format!("exited with code {} ({reason})", t.exit_code)
        }
        _ => format!("exited with code {}", t.exit_code),
    })
}

/// What is wrong with a container, if it is failing: waiting with an error
/// reason, terminated with a non-zero exit, or running again (not ready yet)
/// after one. No restart counts or back-off delays: they change by themselves.
fn container_error(c: &ContainerStatus) -> Option<String> {
    let name = &c.name;
    let state = c.state.as_ref();
    if let Some(waiting) = state.and_then(|s| s.waiting.as_ref())
        && let Some(reason) = waiting.reason.as_deref()
        && !reason.is_empty()
        && !STARTING_REASONS.contains(&reason)
    {
        return Some(match failed_exit(c.last_state.as_ref()) {
            Some(exit) if reason == "CrashLoopBackOff" => {
                format!("container {name}: CrashLoopBackOff: last {exit}")
            }
            _ => with_detail(
                &format!("container {name}"),
                Some(reason),
                waiting.message.as_deref(),
            ),
        });
    }
    if let Some(exit) = failed_exit(state) {
        return Some(format!("container {name} {exit}"));
    }
    let running = state.is_some_and(|s| s.running.is_some());
    if running
        && !c.ready
        && let Some(exit) = failed_exit(c.last_state.as_ref())
    {
        return Some(format!("container {name}: restarted after it {exit}"));
    }
    None
}

/// What a container that is not failing and not ready is doing.
fn container_progress(c: &ContainerStatus, hint: &str) -> String {
    let name = &c.name;
    let state = c.state.as_ref();
    if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
        return with_detail(
            &format!("container {name}"),
            waiting.reason.as_deref(),
            waiting.message.as_deref(),
        );
    }
    if state.is_some_and(|s| s.running.is_some()) {
        return format!("container {name} is running but not ready{hint}");
    }
    if state.is_some_and(|s| s.terminated.is_some()) {
        return format!("container {name} has exited");
    }
    format!("container {name} has not started")
}

/// The live pods (not terminating, not finished), by name, with their health.
pub(super) fn classify(pods: &[Pod], now: &Time, hint: &str) -> Vec<(String, PodHealth)> {
    let mut out: Vec<(String, PodHealth)> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .map(|p| (p.name_any(), pod_health(p, now, hint)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The first failing pod, as (reason, "pod NAME: what is wrong"), noting how
/// many more fail.
pub(super) fn first_failure(pods: &[(String, PodHealth)]) -> Option<(&'static str, String)> {
    let failing: Vec<_> = pods
        .iter()
        .filter_map(|(name, health)| match health {
            PodHealth::Failing(reason, message) => Some((name, *reason, message)),
            _ => None,
        })
        .collect();
    let (name, reason, message) = failing.first()?;
    let more = match failing.len() - 1 {
        0 => String::new(),
        1 => " (and 1 more pod)".to_string(),
        n => format!(" (and {n} more pods)"),
    };
    Some((*reason, format!("pod {name}: {message}{more}")))
}

/// "; pod NAME: what it is doing" for the first starting pod, if any.
pub(super) fn first_starting(pods: &[(String, PodHealth)]) -> Option<String> {
    pods.iter().find_map(|(name, health)| match health {
        PodHealth::Starting(doing) => Some(format!("; pod {name}: {doing}")),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TelemetryPipeline;
    use crate::status::fixtures::*;
    use crate::status::{
        DEGRADED, Observed, PROGRESSING, READY, REDIS_READY, compute, transition_events,
    };

    #[test]
    fn a_crash_looping_pod_is_degraded_naming_the_pod_and_reason_with_one_warning() {
        let tp = TelemetryPipeline::test();
        let ready = compute(&tp, &healthy(), at(100));
        let tp = tp.with_status(ready.clone());
        let crashing = |c: ContainerStatus| Observed {
            deployment: Some(deployment(2, 1, 2)),
            ingest_pods: vec![
                ready_pod("pipe-ingest-a"),
                pod("pipe-ingest-b", false, 110, c),
            ],
            ..healthy()
        };
        let back_off = container(
            false,
            waiting(
                "CrashLoopBackOff",
                "back-off 10s restarting failed container",
            ),
            Some(exited(1)),
        );
        let s = compute(&tp, &crashing(back_off), at(120));
        assert_eq!(state(&s, DEGRADED), ("True", "IngestPodFailing"));
        let message = &cond(&s, DEGRADED).message;
        assert_eq!(
            message,
            "pod pipe-ingest-b: container ingest: CrashLoopBackOff: last exited with code 1 (Error)"
        );
        assert_eq!(state(&s, READY), ("False", "IngestPodFailing"));
        assert_eq!(&cond(&s, READY).message, message);
        assert_eq!(state(&s, PROGRESSING), ("False", "Stalled"));
        assert_eq!(
            warnings(&transition_events(Some(&ready), &s)),
            ["IngestPodFailing"]
        );

        // Running again after the crash, not ready yet: still the same
        // problem, so no second Warning.
        let tp = tp.with_status(s.clone());
        let again = compute(
            &tp,
            &crashing(container(false, running(), Some(exited(1)))),
            at(130),
        );
        assert_eq!(state(&again, DEGRADED), ("True", "IngestPodFailing"));
        assert!(
            cond(&again, DEGRADED)
                .message
                .contains("restarted after it exited with code 1"),
            "{}",
            cond(&again, DEGRADED).message
        );
        assert!(transition_events(Some(&s), &again).is_empty());
        assert_eq!(
            cond(&again, DEGRADED).last_transition_time,
            at(120),
            "still degraded since the first crash"
        );
    }

    #[test]
    fn a_container_config_error_naming_a_secret_is_in_readys_message() {
        let tp = TelemetryPipeline::test();
        let observed = Observed {
            deployment: Some(deployment(1, 0, 1)),
            ingest_pods: vec![pod(
                "pipe-ingest-abc",
                false,
                100,
                container(
                    false,
                    waiting("CreateContainerConfigError", "secret \"creds\" not found"),
                    None,
                ),
            )],
            ..healthy()
        };
        let s = compute(&tp, &observed, at(105));
        let ready = cond(&s, READY);
        assert_eq!(ready.reason, "IngestPodFailing");
        assert_eq!(
            ready.message,
            "pod pipe-ingest-abc: container ingest: CreateContainerConfigError: secret \"creds\" not found"
        );
        assert_eq!(state(&s, DEGRADED), ("True", "IngestPodFailing"));
        assert_eq!(state(&s, PROGRESSING), ("False", "Stalled"));
    }

    #[test]
    fn readiness_failing_beyond_the_grace_period_is_degraded() {
        let tp = TelemetryPipeline::test().with_external_redis("redis://cache:6379", None);
        let observed = Observed {
            redis: None,
            redis_pods: vec![],
            deployment: Some(deployment(1, 0, 1)),
            ingest_pods: vec![pod(
                "pipe-ingest-a",
                false,
                1000,
                container(false, running(), None),
            )],
            ..Observed::default()
        };
        let grace = i64::try_from(READINESS_GRACE.as_secs()).unwrap();
        let within = compute(&tp, &observed, at(1000 + grace - 1));
        assert_eq!(state(&within, PROGRESSING), ("True", "PodsStarting"));
        assert_eq!(state(&within, DEGRADED), ("False", "AsExpected"));

        let beyond = compute(&tp, &observed, at(1000 + grace));
        assert_eq!(state(&beyond, DEGRADED), ("True", "IngestPodNotReady"));
        assert_eq!(
            cond(&beyond, DEGRADED).message,
            "pod pipe-ingest-a: not ready since 1970-01-01T00:16:40Z: container ingest is running but not ready (an ingest pod is ready once it reaches Redis at redis://cache:6379)"
        );
        assert_eq!(state(&beyond, READY), ("False", "IngestPodNotReady"));
        assert_eq!(state(&beyond, PROGRESSING), ("False", "Stalled"));

        // Much later: the same status, so nothing to write.
        let tp = tp.with_status(beyond.clone());
        assert_eq!(compute(&tp, &observed, at(1000 + 10 * grace)), beyond);
    }

    #[test]
    fn a_failing_redis_pod_is_degraded_and_explains_why_redis_is_not_ready() {
        let tp = TelemetryPipeline::test();
        let mut redis_pod = pod(
            "pipe-redis-0",
            false,
            100,
            container(
                false,
                waiting("ImagePullBackOff", "Back-off pulling image \"redis:7.9\""),
                None,
            ),
        );
        redis_pod
            .status
            .as_mut()
            .unwrap()
            .container_statuses
            .as_mut()
            .unwrap()[0]
            .name = "redis".into();
        let observed = Observed {
            redis: Some(redis_sts(0)),
            redis_pods: vec![redis_pod],
            deployment: Some(deployment(1, 0, 1)),
            ingest_pods: vec![pod(
                "pipe-ingest-a",
                false,
                100,
                container(
                    false,
                    waiting("ContainerCreating", "waiting for Redis"),
                    None,
                ),
            )],
            ..Observed::default()
        };
        let s = compute(&tp, &observed, at(110));
        assert_eq!(state(&s, DEGRADED), ("True", "RedisPodFailing"));
        assert_eq!(state(&s, READY), ("False", "RedisPodFailing"));
        assert_eq!(
            cond(&s, READY).message,
            "pod pipe-redis-0: container redis: ImagePullBackOff: Back-off pulling image \"redis:7.9\""
        );
        assert_eq!(state(&s, REDIS_READY), ("False", "PodFailing"));
        // The ingest pod waits for Redis, which is progress on its side.
        assert_eq!(state(&s, PROGRESSING), ("True", "PodsStarting"));
    }

    #[test]
    fn terminating_and_finished_pods_do_not_count() {
        let tp = TelemetryPipeline::test();
        let mut old = pod(
            "pipe-ingest-old",
            false,
            0,
            container(false, waiting("CrashLoopBackOff", ""), Some(exited(2))),
        );
        old.metadata.deletion_timestamp = Some(at(90));
        let mut evicted = pod(
            "pipe-ingest-evicted",
            false,
            0,
            container(false, exited(137), None),
        );
        evicted.status.as_mut().unwrap().phase = Some("Failed".into());
        let mut observed = healthy();
        observed.ingest_pods.extend([old, evicted]);
        let s = compute(&tp, &observed, at(100));
        assert_eq!(state(&s, READY), ("True", "Ready"));
        assert_eq!(state(&s, DEGRADED), ("False", "AsExpected"));
        assert_eq!(state(&s, PROGRESSING), ("False", "Complete"));
    }
}

//! The pipeline's status as a pure function of what the operator observed.
//!
//! [`compute`] turns the children's state (and a problem the reconcile ran
//! into, if any) into `metav1.Condition`s, keeping `lastTransitionTime` of
//! conditions whose status did not change, so that computing twice from the
//! same observations yields an equal status and nothing is written.
//! [`transition_events`] names the changes worth a Kubernetes Event.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::EventType;

use crate::crd::{TelemetryPipeline, TelemetryPipelineStatus};
use crate::resources::{Names, RedisConnection, ingest, redis};

/// Condition: Redis and every wanted ingest pod are ready.
pub const READY: &str = "Ready";
/// Condition: the Redis the pipeline writes to is ready.
pub const REDIS_READY: &str = "RedisReady";
/// Condition: the ingest Deployment is rolled out and all its pods are ready.
pub const INGEST_READY: &str = "IngestReady";
/// Condition: something is wrong; the reason says what.
pub const DEGRADED: &str = "Degraded";
/// Condition: `spec.paused` is set and the operator is changing nothing.
pub const PAUSED: &str = "Paused";

/// A problem the reconcile ran into that the user must fix (it is not retried
/// in a hot loop), reported as `Degraded=True` with this reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// PascalCase reason, e.g. `InvalidAggregation`.
    pub reason: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

/// What the operator saw of the children in this reconcile.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The managed Redis StatefulSet (None when missing or when Redis is external).
    pub redis: Option<StatefulSet>,
    /// The ingest Deployment, if it exists.
    pub deployment: Option<Deployment>,
    /// A permanent problem met while applying, if any.
    pub problem: Option<Problem>,
}

/// One condition before timestamps: type, status, reason, message.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cond {
    type_: &'static str,
    status: bool,
    reason: String,
    message: String,
}

impl Cond {
    fn new(type_: &'static str, status: bool, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

fn redis_condition(tp: &TelemetryPipeline, sts: Option<&StatefulSet>) -> Cond {
    if tp.spec.redis.external.is_some() {
        return Cond::new(
            REDIS_READY,
            true,
            "External",
            format!(
                "using the external Redis {}; whether it is reachable shows in IngestReady",
                RedisConnection::of(tp).url
            ),
        );
    }
    let name = Names::of(tp).redis;
    let Some(sts) = sts else {
        return Cond::new(
            REDIS_READY,
            false,
            "NotCreated",
            format!("StatefulSet {name} does not exist yet"),
        );
    };
    let status = sts.status.clone().unwrap_or_default();
    let generation = sts.metadata.generation.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < generation
        || status.update_revision.is_some() && status.current_revision != status.update_revision
    {
        return Cond::new(
            REDIS_READY,
            false,
            "RollingOut",
            format!("StatefulSet {name} is rolling out a new Redis pod"),
        );
    }
    if ready < 1 {
        return Cond::new(
            REDIS_READY,
            false,
            "NotReady",
            format!("StatefulSet {name} has no ready Redis pod"),
        );
    }
    Cond::new(
        REDIS_READY,
        true,
        "Ready",
        format!("Redis pod of StatefulSet {name} is ready"),
    )
}

fn ingest_condition(tp: &TelemetryPipeline, deployment: Option<&Deployment>) -> Cond {
    let name = Names::of(tp).ingest;
    let Some(d) = deployment else {
        return Cond::new(
            INGEST_READY,
            false,
            "NotCreated",
            format!("Deployment {name} does not exist yet"),
        );
    };
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
        return Cond::new(
            INGEST_READY,
            false,
            "RollingOut",
            format!("Deployment {name} has a change not yet picked up"),
        );
    }
    if wanted == 0 {
        return Cond::new(
            INGEST_READY,
            false,
            "ScaledToZero",
            format!("Deployment {name} has 0 replicas"),
        );
    }
    if updated < wanted {
        return Cond::new(
            INGEST_READY,
            false,
            "RollingOut",
            format!("Deployment {name}: {updated} of {wanted} pods updated"),
        );
    }
    if ready < wanted {
        return Cond::new(
            INGEST_READY,
            false,
            "PodsNotReady",
            format!("Deployment {name}: {ready} of {wanted} pods ready"),
        );
    }
    Cond::new(
        INGEST_READY,
        true,
        "Ready",
        format!("Deployment {name}: {ready} of {wanted} pods ready"),
    )
}

/// The status the pipeline should have, given what was observed at `now`.
/// Fields reserved for the autoscaler are left unset: it writes them under its
/// own field manager.
pub fn compute(tp: &TelemetryPipeline, observed: &Observed, now: Time) -> TelemetryPipelineStatus {
    let old = tp.status.clone().unwrap_or_default();
    let generation = tp.metadata.generation;

    let redis = redis_condition(tp, observed.redis.as_ref());
    let ingest = ingest_condition(tp, observed.deployment.as_ref());
    let ready = match (&observed.problem, redis.status, ingest.status) {
        (Some(p), _, _) => Cond::new(READY, false, &p.reason, p.message.clone()),
        (None, false, _) => Cond::new(
            READY,
            false,
            &format!("Redis{}", redis.reason),
            redis.message.clone(),
        ),
        (None, true, false) => Cond::new(
            READY,
            false,
            &format!("Ingest{}", ingest.reason),
            ingest.message.clone(),
        ),
        (None, true, true) => {
            Cond::new(READY, true, "Ready", "Redis and all ingest pods are ready")
        }
    };
    let degraded = if ready.status {
        Cond::new(DEGRADED, false, "AsExpected", "nothing is wrong")
    } else {
        Cond::new(DEGRADED, true, &ready.reason, ready.message.clone())
    };
    let paused = if tp.spec.paused {
        Cond::new(
            PAUSED,
            true,
            "Paused",
            "spec.paused is true: the operator creates, changes and deletes nothing for this pipeline",
        )
    } else {
        Cond::new(
            PAUSED,
            false,
            "Reconciling",
            "the operator keeps the children in line with the spec",
        )
    };

    let conditions = [ready, redis, ingest, degraded, paused]
        .into_iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" }.to_string();
            let last_transition_time = old
                .conditions
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
        .collect();

    let deployment_status = observed.deployment.as_ref().and_then(|d| d.status.clone());
    TelemetryPipelineStatus {
        observed_generation: generation,
        conditions,
        replicas: Some(
            deployment_status
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(0),
        ),
        ready_replicas: Some(
            deployment_status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
        ),
        selector: Some(ingest::selector_string(tp)),
        redis_endpoint: Some(match &tp.spec.redis.external {
            Some(ext) => ext.url.clone(),
            None => redis::url(tp),
        }),
        autoscaling: None,
    }
}

/// A Kubernetes Event worth publishing about a status change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// Normal or Warning.
    pub type_: EventType,
    /// PascalCase reason.
    pub reason: String,
    /// Human-readable note.
    pub note: String,
}

/// Events for condition changes between two statuses: becoming ready, losing
/// readiness (a Warning with the reason), pausing and resuming.
pub fn transition_events(
    old: Option<&TelemetryPipelineStatus>,
    new: &TelemetryPipelineStatus,
) -> Vec<Notice> {
    let find = |s: Option<&TelemetryPipelineStatus>, t: &str| {
        s.and_then(|s| s.conditions.iter().find(|c| c.type_ == t).cloned())
    };
    let mut events = Vec::new();
    if let Some(ready) = find(Some(new), READY) {
        // Becoming ready and losing readiness are news; not being ready yet
        // while the children come up for the first time is not. Problems met
        // while applying are published by the reconcile itself.
        let was_ready = find(old, READY).is_some_and(|c| c.status == "True");
        match (was_ready, ready.status == "True") {
            (false, true) => events.push(Notice {
                type_: EventType::Normal,
                reason: "Ready".into(),
                note: ready.message.clone(),
            }),
            (true, false) => events.push(Notice {
                type_: EventType::Warning,
                reason: ready.reason.clone(),
                note: ready.message.clone(),
            }),
            _ => {}
        }
    }
    if let Some(paused) = find(Some(new), PAUSED) {
        let was = find(old, PAUSED).is_some_and(|c| c.status == "True");
        match (was, paused.status == "True") {
            (false, true) => events.push(Notice {
                type_: EventType::Normal,
                reason: "Paused".into(),
                note: paused.message.clone(),
            }),
            (true, false) => events.push(Notice {
                type_: EventType::Normal,
                reason: "Resumed".into(),
                note: "spec.paused is false again: reconciling".into(),
            }),
            _ => {}
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus, StatefulSetStatus};
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn deployment(wanted: i32, ready: i32, updated: i32) -> Deployment {
        let mut d = Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(wanted),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(1),
                replicas: Some(wanted),
                ready_replicas: Some(ready),
                updated_replicas: Some(updated),
                ..Default::default()
            }),
            ..Default::default()
        };
        d.metadata.generation = Some(1);
        d
    }

    fn redis_sts(ready: i32) -> StatefulSet {
        let mut s = StatefulSet {
            status: Some(StatefulSetStatus {
                observed_generation: Some(1),
                replicas: 1,
                ready_replicas: Some(ready),
                current_revision: Some("r1".into()),
                update_revision: Some("r1".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        s.metadata.generation = Some(1);
        s
    }

    fn cond<'a>(s: &'a TelemetryPipelineStatus, t: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .unwrap_or_else(|| panic!("no {t}"))
    }

    fn healthy() -> Observed {
        Observed {
            redis: Some(redis_sts(1)),
            deployment: Some(deployment(2, 2, 2)),
            problem: None,
        }
    }

    #[test]
    fn all_children_ready_makes_the_pipeline_ready_and_not_degraded() {
        let tp = TelemetryPipeline::test().at_generation(3);
        let s = compute(&tp, &healthy(), at(100));
        assert_eq!(s.observed_generation, Some(3));
        for t in [READY, REDIS_READY, INGEST_READY] {
            assert_eq!(cond(&s, t).status, "True", "{t}");
            assert_eq!(cond(&s, t).observed_generation, Some(3));
        }
        assert_eq!(cond(&s, DEGRADED).status, "False");
        assert_eq!(cond(&s, PAUSED).status, "False");
        assert_eq!((s.replicas, s.ready_replicas), (Some(2), Some(2)));
        assert_eq!(
            s.redis_endpoint.as_deref(),
            Some("redis://pipe-redis.ns.svc:6379")
        );
        assert_eq!(
            s.selector.as_deref(),
            Some("app.kubernetes.io/instance=pipe,app.kubernetes.io/name=telemetry-ingest")
        );
    }

    #[test]
    fn missing_children_are_reported_as_not_created() {
        let tp = TelemetryPipeline::test();
        let s = compute(&tp, &Observed::default(), at(100));
        assert_eq!(cond(&s, READY).status, "False");
        assert_eq!(cond(&s, READY).reason, "RedisNotCreated");
        assert_eq!(cond(&s, REDIS_READY).reason, "NotCreated");
        assert_eq!(cond(&s, INGEST_READY).reason, "NotCreated");
        assert_eq!(cond(&s, DEGRADED).status, "True");
        assert_eq!((s.replicas, s.ready_replicas), (Some(0), Some(0)));
    }

    #[test]
    fn unready_ingest_pods_make_degraded_say_how_many() {
        let tp = TelemetryPipeline::test();
        let observed = Observed {
            deployment: Some(deployment(3, 1, 3)),
            ..healthy()
        };
        let s = compute(&tp, &observed, at(100));
        let degraded = cond(&s, DEGRADED);
        assert_eq!(degraded.status, "True");
        assert_eq!(degraded.reason, "IngestPodsNotReady");
        assert!(
            degraded.message.contains("1 of 3 pods ready"),
            "{}",
            degraded.message
        );
        assert_eq!(cond(&s, REDIS_READY).status, "True");
    }

    #[test]
    fn a_rollout_in_progress_is_not_ready() {
        let tp = TelemetryPipeline::test();
        let observed = Observed {
            deployment: Some(deployment(2, 2, 1)),
            ..healthy()
        };
        let s = compute(&tp, &observed, at(100));
        assert_eq!(cond(&s, INGEST_READY).reason, "RollingOut");
        let mut d = deployment(2, 2, 2);
        d.metadata.generation = Some(2);
        let s = compute(
            &tp,
            &Observed {
                deployment: Some(d),
                ..healthy()
            },
            at(100),
        );
        assert_eq!(cond(&s, INGEST_READY).reason, "RollingOut");
    }

    #[test]
    fn redis_without_a_ready_pod_is_not_ready() {
        let tp = TelemetryPipeline::test();
        let s = compute(
            &tp,
            &Observed {
                redis: Some(redis_sts(0)),
                ..healthy()
            },
            at(100),
        );
        assert_eq!(cond(&s, REDIS_READY).status, "False");
        assert_eq!(cond(&s, READY).reason, "RedisNotReady");
    }

    #[test]
    fn external_redis_is_reported_as_such_with_its_endpoint() {
        let tp = TelemetryPipeline::test().with_external_redis("redis://cache:6379", None);
        let observed = Observed {
            redis: None,
            ..healthy()
        };
        let s = compute(&tp, &observed, at(100));
        assert_eq!(cond(&s, REDIS_READY).reason, "External");
        assert_eq!(cond(&s, READY).status, "True");
        assert_eq!(s.redis_endpoint.as_deref(), Some("redis://cache:6379"));
    }

    #[test]
    fn a_problem_wins_over_healthy_children() {
        let tp = TelemetryPipeline::test();
        let observed = Observed {
            problem: Some(Problem {
                reason: "InvalidAggregation".into(),
                message: "counters.dropDevices[0]: is not a valid glob".into(),
            }),
            ..healthy()
        };
        let s = compute(&tp, &observed, at(100));
        assert_eq!(cond(&s, READY).status, "False");
        let degraded = cond(&s, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "InvalidAggregation")
        );
        assert!(degraded.message.contains("dropDevices"));
    }

    #[test]
    fn paused_is_reported_as_a_condition() {
        let tp = TelemetryPipeline::test().paused();
        let s = compute(&tp, &healthy(), at(100));
        let paused = cond(&s, PAUSED);
        assert_eq!(
            (paused.status.as_str(), paused.reason.as_str()),
            ("True", "Paused")
        );
    }

    #[test]
    fn recomputing_from_the_same_observations_gives_an_equal_status() {
        let tp = TelemetryPipeline::test();
        let first = compute(&tp, &healthy(), at(100));
        let tp = tp.with_status(first.clone());
        let second = compute(&tp, &healthy(), at(200));
        assert_eq!(first, second, "no write when nothing changed");
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
        assert_eq!(cond(&s, REDIS_READY).last_transition_time, at(100));
    }

    #[test]
    fn autoscaler_fields_are_left_to_the_autoscaler() {
        let old = TelemetryPipelineStatus {
            autoscaling: Some(crate::crd::AutoscalingStatus {
                desired_replicas: Some(7),
                current_queue_depth: Some(1234),
                last_scale_time: Some(at(50)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let tp = TelemetryPipeline::test().with_status(old);
        let s = compute(&tp, &healthy(), at(100));
        assert_eq!(s.autoscaling, None);
    }

    #[test]
    fn events_for_ready_degraded_paused_and_resumed() {
        let tp = TelemetryPipeline::test();
        let not_created = compute(&tp, &Observed::default(), at(1));
        assert!(
            transition_events(None, &not_created).is_empty(),
            "a new pipeline is not news"
        );

        let ready = compute(&tp, &healthy(), at(2));
        let ev = transition_events(Some(&not_created), &ready);
        assert_eq!(ev.len(), 1);
        assert_eq!(
            (ev[0].type_, ev[0].reason.as_str()),
            (EventType::Normal, "Ready")
        );
        assert!(transition_events(Some(&ready), &ready).is_empty());

        let broken = compute(
            &tp,
            &Observed {
                redis: Some(redis_sts(0)),
                ..healthy()
            },
            at(3),
        );
        let ev = transition_events(Some(&ready), &broken);
        assert_eq!(ev.len(), 1);
        assert_eq!(
            (ev[0].type_, ev[0].reason.as_str()),
            (EventType::Warning, "RedisNotReady")
        );

        let paused = compute(&tp.clone().paused(), &healthy(), at(4));
        let ev = transition_events(Some(&ready), &paused);
        assert_eq!(
            ev.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
            ["Paused"]
        );
        let ev = transition_events(Some(&paused), &ready);
        assert_eq!(
            ev.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
            ["Resumed"]
        );
    }
}

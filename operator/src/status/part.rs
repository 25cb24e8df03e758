//! Where each part of the pipeline stands ([`Part`]): the managed Redis
//! StatefulSet ([`redis_part`]) or an external Redis, and the ingest
//! Deployment ([`ingest_part`]); each is ready or not, progressing or not,
//! and names its first failing pod.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};

use super::conditions::{Cond, INGEST_READY, READY, REDIS_READY};
use super::observed::ClusterObservation;
use super::pod::{PodHealth, first_failure, first_starting};
use crate::crd::TelemetryPipeline;
use crate::crd::redis::RedisClusterStatus;
use crate::redis_cluster::Plan;
use crate::resources::{Names, RedisConnection};

/// Where one part of the pipeline (Redis or ingest) stands.
pub(super) struct Part {
    /// RedisReady or IngestReady.
    pub(super) ready: Cond,
    /// Why it is still changing, if it is: (reason, message).
    pub(super) progress: Option<(&'static str, String)>,
    /// Its first failing pod, if any: (reason, message).
    pub(super) failure: Option<(&'static str, String)>,
}

impl Part {
    fn creating(
        type_: &'static str,
        message: String,
        failure: Option<(&'static str, String)>,
    ) -> Self {
        Part {
            ready: Cond::new(type_, false, "Creating", message.clone()),
            progress: Some(("Creating", message)),
            failure,
        }
    }

    /// The component's readiness condition when it is not ready: a failing
    /// pod if there is one, else what it is doing, else `fallback`.
    fn not_ready(&self, type_: &'static str, fallback: (&str, String)) -> Cond {
        let (reason, message) = self
            .failure
            .clone()
            .or_else(|| self.progress.clone())
            .unwrap_or(fallback);
        Cond::new(type_, false, reason, message)
    }
}

pub(super) fn redis_part(
    tp: &TelemetryPipeline,
    sts: Option<&StatefulSet>,
    pods: &[(String, PodHealth)],
) -> Part {
    if tp.spec.redis.external.is_some() {
        let message = format!(
            "using the external Redis {}; whether it is reachable shows in IngestReady",
            RedisConnection::of(tp).url
        );
        return Part {
            ready: Cond::new(REDIS_READY, true, "External", message),
            progress: None,
            failure: None,
        };
    }
    let name = Names::of(tp).redis;
    let failure = first_failure(pods);
    let Some(sts) = sts else {
        return Part::creating(
            REDIS_READY,
            format!("StatefulSet {name} does not exist yet"),
            failure,
        );
    };
    let status = sts.status.clone().unwrap_or_default();
    let picked_up = status.observed_generation.unwrap_or(0) >= sts.metadata.generation.unwrap_or(0);
    let revised =
        status.update_revision.is_none() || status.current_revision == status.update_revision;
    let has_ready_pod = status.ready_replicas.unwrap_or(0) >= 1;
    let starting = first_starting(pods);
    // Pods that only fail, none coming up: nothing moves until Degraded's
    // cause is fixed.
    let stalled = failure.is_some() && starting.is_none();
    let doing = starting.unwrap_or_default();
    let progress = if status.observed_generation.is_none() {
        Some((
            "Creating",
            format!("StatefulSet {name} is new; its controller has not acted on it yet"),
        ))
    } else if !picked_up {
        Some((
            "RollingOut",
            format!("StatefulSet {name} has a change not yet picked up"),
        ))
    } else if stalled {
        None
    } else if !revised {
        Some((
            "RollingOut",
            format!("StatefulSet {name} is rolling out a new Redis pod{doing}"),
        ))
    } else if !has_ready_pod {
        Some((
            "PodsStarting",
            format!("StatefulSet {name}: the Redis pod is not ready yet{doing}"),
        ))
    } else {
        None
    };
    let mut part = Part {
        ready: Cond::new(
            REDIS_READY,
            true,
            "Ready",
            format!("Redis pod of StatefulSet {name} is ready"),
        ),
        progress,
        failure,
    };
    if !(picked_up && revised && has_ready_pod) {
        part.ready = part.not_ready(
            REDIS_READY,
            (
                "NotReady",
                format!("StatefulSet {name} has no ready Redis pod"),
            ),
        );
    }
    part
}

/// A managed Redis Cluster's part: the StatefulSet's `part` (its pods), then
/// whether the cluster serves every slot, and what the operator is doing to
/// it. Ready while every slot is served, every node says ok and (with
/// replicas) every primary has one, resharding included (ingest keeps
/// serving then); Progressing until converged;
/// Degraded when the operator is blocked.
pub(super) fn cluster_part(
    tp: &TelemetryPipeline,
    mut part: Part,
    observed: Option<&ClusterObservation>,
) -> (Part, RedisClusterStatus) {
    let wanted = tp.spec.redis.managed().map_or(0, |m| m.shards);
    let mut status = RedisClusterStatus {
        phase: "Forming".into(),
        ..RedisClusterStatus::default()
    };
    let (ready, progress) = match observed {
        None => {
            status.message = "no round run yet".into();
            (false, Some(("ClusterForming", status.message.clone())))
        }
        Some(ClusterObservation::PodsStarting { running, wanted }) => {
            status.message =
                format!("{running} of {wanted} Redis pods running; the cluster forms once all are");
            (false, Some(("ClusterForming", status.message.clone())))
        }
        Some(ClusterObservation::Round {
            health,
            plan,
            error,
        }) => {
            status.shards = i32::try_from(health.shards).unwrap_or(i32::MAX);
            status.slots_served = i32::try_from(health.slots_served).unwrap_or(i32::MAX);
            status.slots_migrating = i32::try_from(health.open_slots).unwrap_or(i32::MAX);
            // With replicas, a flush waits for one (WAIT 1): a primary
            // without one takes no events, so it does not count as serving.
            let need = RedisConnection::of(tp)
                .cluster
                .map_or(0, |c| usize::try_from(c.wait_replicas).unwrap_or(0));
            let serving = health.slots_served == usize::from(crate::redis_cluster::SLOTS)
                && health.states.iter().all(|s| s.as_deref() == Some("ok"))
                && health.replicas.iter().all(|&r| r >= need);
            let formed = health.slots_assigned == usize::from(crate::redis_cluster::SLOTS);
            let growing = formed && (health.shards < health.shards_wanted || health.open_slots > 0);
            let (phase, doing): (&str, Option<String>) = match plan {
                Plan::Converged => ("Converged", None),
                Plan::Blocked(why) => {
                    if part.failure.is_none() {
                        part.failure = Some(("ClusterBlocked", why.clone()));
                    }
                    ("Blocked", None)
                }
                Plan::Wait(why) => ("Waiting", Some(format!("waiting: {why}"))),
                Plan::Steps(steps) if growing => (
                    "Resharding",
                    Some(format!(
                        "resharding to {wanted} shards: {} steps this round",
                        steps.len()
                    )),
                ),
                Plan::Steps(steps) if formed => (
                    "Repairing",
                    Some(format!("{} steps this round", steps.len())),
                ),
                Plan::Steps(_) => ("Forming", Some("forming the cluster".into())),
            };
            status.phase = phase.into();
            status.message = health.message.clone();
            let mut doing = doing;
            if let Some(error) = error {
                let note = format!("the last step failed, retrying: {error}");
                status.message = format!("{}; {note}", status.message);
                doing = Some(doing.map_or(note.clone(), |d| format!("{d}; {note}")));
            }
            let reason = match phase {
                "Resharding" => "Resharding",
                "Forming" => "ClusterForming",
                _ => "ClusterConverging",
            };
            (
                serving,
                doing.map(|d| (reason, format!("{}: {d}", health.message))),
            )
        }
    };
    if part.ready.status {
        let message = format!(
            "Redis Cluster of StatefulSet {}: {}",
            Names::of(tp).redis,
            status.message
        );
        part.ready = match (ready, status.phase.as_str()) {
            (true, _) => Cond::new(REDIS_READY, true, "ClusterServing", message),
            (false, "Forming") => Cond::new(REDIS_READY, false, "ClusterForming", message),
            (false, _) => Cond::new(REDIS_READY, false, "ClusterNotServing", message),
        };
    }
    part.progress = part.progress.or(progress);
    (part, status)
}

pub(super) fn ingest_part(
    tp: &TelemetryPipeline,
    deployment: Option<&Deployment>,
    pods: &[(String, PodHealth)],
) -> Part {
    let name = Names::of(tp).ingest;
    let failure = first_failure(pods);
    let Some(d) = deployment else {
        return Part::creating(
            INGEST_READY,
            format!("Deployment {name} does not exist yet"),
            failure,
        );
    };
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    let picked_up = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let existing = status.replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let starting = first_starting(pods);
    // Pods that only fail, none coming up and none still to be created:
    // nothing moves until Degraded's cause is fixed.
    let stalled = failure.is_some() && starting.is_none() && existing >= wanted;
    let doing = starting.unwrap_or_default();
    let progress = if status.observed_generation.is_none() {
        Some((
            "Creating",
            format!("Deployment {name} is new; its controller has not acted on it yet"),
        ))
    } else if !picked_up {
        Some((
            "RollingOut",
            format!("Deployment {name} has a change not yet picked up"),
        ))
    } else if stalled || wanted == 0 {
        None
    } else if updated < wanted || existing > updated {
        Some((
            "RollingOut",
            format!("Deployment {name}: {updated} of {wanted} pods updated{doing}"),
        ))
    } else if ready < wanted {
        let reason = if ready > 0 {
            "ScalingUp"
        } else {
            "PodsStarting"
        };
        Some((
            reason,
            format!("Deployment {name}: {ready} of {wanted} pods ready{doing}"),
        ))
    } else {
        None
    };
    let mut part = Part {
        ready: Cond::new(
            INGEST_READY,
            true,
            "Ready",
            format!("Deployment {name}: {ready} of {wanted} pods ready"),
        ),
        progress,
        failure,
    };
    if picked_up && wanted == 0 {
        part.ready = Cond::new(
            INGEST_READY,
            false,
            "ScaledToZero",
            format!("Deployment {name} has 0 replicas"),
        );
    } else if !(picked_up && updated >= wanted && ready >= wanted) {
        part.ready = part.not_ready(
            INGEST_READY,
            (
                "PodsNotReady",
                format!("Deployment {name}: {ready} of {wanted} pods ready"),
            ),
        );
    }
    part
}

/// `Ready=False` taken from a part's condition, its reason prefixed with the part.
pub(super) fn not_ready_from(prefix: &str, part: &Part) -> Cond {
    Cond::new(
        READY,
        false,
        &format!("{prefix}{}", part.ready.reason),
        part.ready.message.clone(),
    )
}

#[cfg(test)]
mod tests {
    use crate::crd::TelemetryPipeline;
    use crate::status::fixtures::*;
    use crate::status::{
        DEGRADED, INGEST_READY, Observed, PROGRESSING, READY, REDIS_READY, SecretRef, compute,
        transition_events,
    };

    #[test]
    fn missing_children_are_being_created_which_is_progress_not_a_problem() {
        let tp = TelemetryPipeline::test();
        let s = compute(&tp, &Observed::default(), at(100));
        assert_eq!(state(&s, READY), ("False", "RedisCreating"));
        assert_eq!(state(&s, REDIS_READY), ("False", "Creating"));
        assert_eq!(state(&s, INGEST_READY), ("False", "Creating"));
        assert_eq!(state(&s, PROGRESSING), ("True", "Creating"));
        assert_eq!(state(&s, DEGRADED), ("False", "AsExpected"));
        assert_eq!((s.replicas, s.ready_replicas), (Some(0), Some(0)));
        assert!(
            transition_events(None, &s).is_empty(),
            "a new pipeline is no news"
        );

        // Just created: their controllers have not looked at them yet.
        let mut d = deployment(1, 0, 0);
        d.status = None;
        let mut sts = redis_sts(0);
        sts.status = None;
        let observed = Observed {
            redis: Some(sts),
            deployment: Some(d),
            ..Observed::default()
        };
        let s = compute(&tp, &observed, at(100));
        assert_eq!(state(&s, REDIS_READY), ("False", "Creating"));
        assert_eq!(state(&s, INGEST_READY), ("False", "Creating"));
        assert_eq!(state(&s, PROGRESSING), ("True", "Creating"));
        assert_eq!(state(&s, DEGRADED), ("False", "AsExpected"));
    }

    #[test]
    fn a_rollout_is_progressing_not_degraded_and_raises_no_warning() {
        let tp = TelemetryPipeline::test();
        let ready = compute(&tp, &healthy(), at(100));
        let tp = tp.with_status(ready.clone());

        // The Deployment has not picked up the new template yet.
        let mut d = deployment(2, 2, 2);
        d.metadata.generation = Some(2);
        let observed = Observed {
            deployment: Some(d),
            ..healthy()
        };
        let s = compute(&tp, &observed, at(110));
        assert_eq!(state(&s, INGEST_READY), ("False", "RollingOut"));
        assert_eq!(state(&s, PROGRESSING), ("True", "RollingOut"));
        assert_eq!(state(&s, DEGRADED), ("False", "AsExpected"));

        // A new pod is starting next to the old ones.
        let mut observed = Observed {
            deployment: Some(deployment(2, 2, 1)),
            ..healthy()
        };
        observed.ingest_pods.push(pod(
            "pipe-ingest-new",
            false,
            105,
            container(false, waiting("ContainerCreating", ""), None),
        ));
        let s = compute(&tp, &observed, at(110));
        assert_eq!(state(&s, READY), ("False", "IngestRollingOut"));
        assert_eq!(state(&s, PROGRESSING), ("True", "RollingOut"));
        let message = &cond(&s, PROGRESSING).message;
        assert!(message.contains("1 of 2 pods updated"), "{message}");
        assert!(
            message.contains("pod pipe-ingest-new: container ingest: ContainerCreating"),
            "{message}"
        );
        assert_eq!(state(&s, DEGRADED), ("False", "AsExpected"));
        assert!(
            transition_events(Some(&ready), &s).is_empty(),
            "a rollout is no news"
        );
    }

    #[test]
    fn a_scale_up_with_pods_starting_is_progressing() {
        let tp = TelemetryPipeline::test();
        let ready = compute(&tp, &healthy(), at(100));
        let tp = tp.with_status(ready.clone());
        let mut observed = Observed {
            deployment: Some(deployment(3, 2, 3)),
            ..healthy()
        };
        observed.ingest_pods.push(pod(
            "pipe-ingest-c",
            false,
            100,
            container(false, running(), None),
        ));
        let s = compute(&tp, &observed, at(130));
        assert_eq!(state(&s, PROGRESSING), ("True", "ScalingUp"));
        assert_eq!(state(&s, DEGRADED), ("False", "AsExpected"));
        assert_eq!(state(&s, READY), ("False", "IngestScalingUp"));
        let message = &cond(&s, READY).message;
        assert!(message.contains("2 of 3 pods ready"), "{message}");
        assert!(
            message.contains("pod pipe-ingest-c: container ingest is running but not ready (an ingest pod is ready once it reaches Redis at redis://pipe-redis.ns.svc:6379)"),
            "{message}"
        );
        assert!(transition_events(Some(&ready), &s).is_empty());

        // The first pods of a new pipeline: none ready yet.
        let observed = Observed {
            deployment: Some(deployment(1, 0, 1)),
            ingest_pods: vec![pod(
                "pipe-ingest-a",
                false,
                100,
                container(false, running(), None),
            )],
            ..healthy()
        };
        let s = compute(&tp, &observed, at(130));
        assert_eq!(state(&s, PROGRESSING), ("True", "PodsStarting"));
        assert_eq!(state(&s, INGEST_READY), ("False", "PodsStarting"));
        assert_eq!(state(&s, DEGRADED), ("False", "AsExpected"));
    }

    #[test]
    fn a_fix_rolling_out_next_to_a_failing_pod_is_progressing_and_still_degraded() {
        let tp = TelemetryPipeline::test();
        let observed = Observed {
            deployment: Some(deployment(1, 0, 1)),
            ingest_pods: vec![
                pod(
                    "pipe-ingest-broken",
                    false,
                    0,
                    container(false, waiting("ErrImagePull", "not found"), None),
                ),
                pod(
                    "pipe-ingest-fixed",
                    false,
                    95,
                    container(false, running(), None),
                ),
            ],
            ..healthy()
        };
        let mut observed = observed;
        observed
            .deployment
            .as_mut()
            .unwrap()
            .status
            .as_mut()
            .unwrap()
            .replicas = Some(2);
        let s = compute(&tp, &observed, at(100));
        assert_eq!(state(&s, PROGRESSING), ("True", "RollingOut"));
        assert_eq!(state(&s, DEGRADED), ("True", "IngestPodFailing"));
        assert!(
            cond(&s, DEGRADED)
                .message
                .starts_with("pod pipe-ingest-broken: container ingest: ErrImagePull")
        );
    }

    #[test]
    fn external_redis_is_reported_as_such_with_its_endpoint() {
        let tp = TelemetryPipeline::test().with_external_redis("redis://cache:6379", None);
        let observed = Observed {
            redis: None,
            redis_pods: vec![],
            ..healthy()
        };
        let s = compute(&tp, &observed, at(100));
        assert_eq!(cond(&s, REDIS_READY).reason, "External");
        assert_eq!(cond(&s, READY).status, "True");
        assert_eq!(s.redis_endpoint.as_deref(), Some("redis://cache:6379"));
        assert!(SecretRef::all_of(&tp).is_empty());
    }
}

//! The pipeline's status as a pure function of what the operator observed.
//!
//! [`compute`] turns what the reconcile saw — the StatefulSet and the
//! Deployment, their pods, the Secrets the spec refers to, and a problem met
//! while applying, if any — into `metav1.Condition`s that answer three
//! separate questions:
//! - `Ready`: is the pipeline serving? If not, its reason and message name
//!   the most specific cause known (a failing pod, a missing Secret, a pod
//!   still starting).
//! - `Progressing`: are the children still on their way to what the spec
//!   asks for (created, rolled out, scaled, pods starting)? That is normal and
//!   no warning.
//! - `Degraded`: is something wrong that waiting will not fix (a problem met
//!   while applying, a missing Secret, a pod that crashes, cannot start, or
//!   stays unready past [`READINESS_GRACE`])?
//!
//! Each pod is classified once (ready, starting, failing) from its own status;
//! time is passed in. `lastTransitionTime` of conditions whose status did not
//! change is kept, so that computing twice from the same observations yields
//! an equal status and nothing is written. Messages hold no counters or ages
//! that change by themselves. [`transition_events`] names the changes worth a
//! Kubernetes Event.
//!
//! By concern: `conditions` holds the condition types and the keeping of
//! `lastTransitionTime`; `observed` what the reconcile saw; `pod` each
//! pod's health; `part` where Redis and ingest each stand; `events` the
//! Events a change is worth. [`compute`] puts them together.

mod conditions;
mod events;
mod observed;
mod part;
mod pod;

#[cfg(test)]
mod fixtures;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub use conditions::{DEGRADED, INGEST_READY, PAUSED, PROGRESSING, READY, REDIS_READY};
pub use events::{Notice, transition_events};
pub use observed::{
    ClusterObservation, EXTERNAL_CA_FIELD, EXTERNAL_PASSWORD_FIELD, INGEST_TLS_FIELD, Observed,
    Problem, SecretRef, SecretState, secret_problem,
};
pub use pod::READINESS_GRACE;

use conditions::{Cond, stamp};
use part::{cluster_part, ingest_part, not_ready_from, redis_part};
use pod::classify;

use crate::crd::{TelemetryPipeline, TelemetryPipelineStatus};
use crate::resources::{RedisConnection, ingest, redis};

/// The status the pipeline should have, given what was observed at `now`.
/// Fields reserved for the autoscaler are left unset: it writes them under its
/// own field manager.
pub fn compute(tp: &TelemetryPipeline, observed: &Observed, now: Time) -> TelemetryPipelineStatus {
    let old = tp.status.clone().unwrap_or_default();
    let generation = tp.metadata.generation;

    let ingest_hint = format!(
        " (an ingest pod is ready once it reaches Redis at {})",
        RedisConnection::of(tp).url
    );
    let redis_pods = classify(&observed.redis_pods, &now, "");
    let ingest_pods = classify(&observed.ingest_pods, &now, &ingest_hint);
    let mut redis = redis_part(tp, observed.redis.as_ref(), &redis_pods);
    let mut redis_cluster = None;
    if tp.spec.redis.managed().is_some() && tp.spec.redis.is_cluster() {
        let (part, status) = cluster_part(tp, redis, observed.redis_cluster.as_ref());
        redis = part;
        redis_cluster = Some(status);
    }
    let ingest = ingest_part(tp, observed.deployment.as_ref(), &ingest_pods);
    let secret = secret_problem(&observed.secrets);

    let ready = if let Some(p) = &observed.problem {
        // Not applied as the spec says: not Ready, whatever still runs.
        Cond::new(READY, false, &p.reason, p.message.clone())
    } else if redis.ready.status && ingest.ready.status {
        Cond::new(READY, true, "Ready", "Redis and all ingest pods are ready")
    } else if let Some(p) = &secret {
        // A missing Secret explains unready pods better than they can.
        Cond::new(READY, false, &p.reason, p.message.clone())
    } else if !redis.ready.status
        && (ingest.ready.status || redis.failure.is_some() || ingest.failure.is_none())
    {
        not_ready_from("Redis", &redis)
    } else {
        // Ingest is not ready, and either Redis is or ingest has the failure.
        not_ready_from("Ingest", &ingest)
    };
    let failure = observed
        .problem
        .clone()
        .or(secret)
        .map(|p| (p.reason, p.message))
        .or_else(|| redis.failure.map(|(r, m)| (format!("Redis{r}"), m)))
        .or_else(|| ingest.failure.map(|(r, m)| (format!("Ingest{r}"), m)));
    let degraded = match &failure {
        Some((reason, message)) => Cond::new(DEGRADED, true, reason, message.clone()),
        None => Cond::new(DEGRADED, false, "AsExpected", "nothing is wrong"),
    };
    let progressing = match redis.progress.or(ingest.progress) {
        Some((reason, message)) => Cond::new(PROGRESSING, true, reason, message),
        None if failure.is_some() => Cond::new(
            PROGRESSING,
            false,
            "Stalled",
            "nothing moves until what Degraded reports is fixed",
        ),
        None => Cond::new(
            PROGRESSING,
            false,
            "Complete",
            "Redis and the ingest Deployment are as the spec asks and their pods are ready",
        ),
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

    let conditions = stamp(
        [
            ready,
            redis.ready,
            ingest.ready,
            progressing,
            degraded,
            paused,
        ],
        &old.conditions,
        generation,
        &now,
    );

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
        redis_cluster,
        autoscaling: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fixtures::*;

    mod cluster {
        use super::*;
        use crate::redis_cluster::{Health, Plan, Step};

        fn health(shards: usize, served: usize, open: usize) -> Health {
            Health {
                slots_assigned: 16384,
                slots_served: served,
                shards_wanted: 4,
                shards,
                replicas: vec![0; shards],
                open_slots: open,
                states: vec![Some("ok".into()); 4],
                message: format!("{shards} of 4 shards serving {served} slots, no replicas"),
            }
        }

        fn with(found: Option<ClusterObservation>) -> TelemetryPipelineStatus {
            let tp = TelemetryPipeline::test().with_shards(4, 0);
            let observed = Observed {
                redis_cluster: found,
                ..healthy()
            };
            compute(&tp, &observed, at(100))
        }

        #[test]
        fn a_cluster_still_forming_keeps_redis_unready_and_progressing() {
            let s = with(Some(ClusterObservation::PodsStarting {
                running: 2,
                wanted: 4,
            }));
            assert_eq!(state(&s, REDIS_READY), ("False", "ClusterForming"));
            assert_eq!(state(&s, READY).0, "False");
            assert_eq!(state(&s, PROGRESSING), ("True", "ClusterForming"));
            let c = s.redis_cluster.unwrap();
            assert_eq!((c.phase.as_str(), c.shards), ("Forming", 0));
            assert!(
                c.message.contains("2 of 4 Redis pods running"),
                "{}",
                c.message
            );
        }

        #[test]
        fn a_cluster_serving_every_slot_is_ready_while_it_reshards() {
            let steps = Plan::Steps(vec![Step::Meet { node: 3, peer: 0 }]);
            let s = with(Some(ClusterObservation::Round {
                health: health(3, 16384, 0),
                plan: steps,
                error: None,
            }));
            assert_eq!(state(&s, REDIS_READY), ("True", "ClusterServing"));
            assert_eq!(state(&s, READY).0, "True");
            assert_eq!(state(&s, PROGRESSING), ("True", "Resharding"));
            let c = s.redis_cluster.unwrap();
            assert_eq!(
                (c.phase.as_str(), c.shards, c.slots_served),
                ("Resharding", 3, 16384)
            );

            let s = with(Some(ClusterObservation::Round {
                health: health(4, 16384, 0),
                plan: Plan::Converged,
                error: None,
            }));
            assert_eq!(state(&s, PROGRESSING), ("False", "Complete"));
            assert_eq!(s.redis_cluster.unwrap().phase, "Converged");
        }

        #[test]
        fn uncovered_slots_make_redis_unready_and_a_blocked_plan_degraded() {
            let s = with(Some(ClusterObservation::Round {
                health: health(3, 12288, 0),
                plan: Plan::Blocked("a shard was lost".into()),
                error: None,
            }));
            assert_eq!(state(&s, REDIS_READY), ("False", "ClusterNotServing"));
            assert_eq!(state(&s, DEGRADED), ("True", "RedisClusterBlocked"));
            assert!(cond(&s, DEGRADED).message.contains("a shard was lost"));
            assert_eq!(s.redis_cluster.unwrap().slots_served, 12288);
        }

        #[test]
        fn with_replicas_a_primary_without_one_is_not_serving() {
            let tp = TelemetryPipeline::test().with_shards(4, 1);
            let status = |replicas: Vec<usize>| {
                let observed = Observed {
                    redis_cluster: Some(ClusterObservation::Round {
                        health: Health {
                            replicas,
                            ..health(4, 16384, 0)
                        },
                        plan: Plan::Converged,
                        error: None,
                    }),
                    ..healthy()
                };
                compute(&tp, &observed, at(100))
            };
            let s = status(vec![1, 1, 0, 1]);
            assert_eq!(state(&s, REDIS_READY), ("False", "ClusterNotServing"));
            let s = status(vec![1; 4]);
            assert_eq!(state(&s, REDIS_READY), ("True", "ClusterServing"));
        }

        #[test]
        fn a_single_redis_has_no_cluster_status() {
            let s = compute(&TelemetryPipeline::test(), &healthy(), at(100));
            assert_eq!(s.redis_cluster, None);
            assert_eq!(state(&s, REDIS_READY), ("True", "Ready"));
        }
    }

    #[test]
    fn all_children_ready_makes_the_pipeline_ready_complete_and_not_degraded() {
        let tp = TelemetryPipeline::test().at_generation(3);
        let s = compute(&tp, &healthy(), at(100));
        assert_eq!(s.observed_generation, Some(3));
        for t in [READY, REDIS_READY, INGEST_READY] {
            assert_eq!(cond(&s, t).status, "True", "{t}");
            assert_eq!(cond(&s, t).observed_generation, Some(3));
        }
        assert_eq!(state(&s, PROGRESSING), ("False", "Complete"));
        assert_eq!(state(&s, DEGRADED), ("False", "AsExpected"));
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
        assert_eq!(state(&s, READY), ("False", "InvalidAggregation"));
        assert_eq!(state(&s, DEGRADED), ("True", "InvalidAggregation"));
        assert!(cond(&s, DEGRADED).message.contains("dropDevices"));
        assert_eq!(state(&s, PROGRESSING), ("False", "Stalled"));
        assert_eq!(
            warnings(&transition_events(None, &s)),
            ["InvalidAggregation"]
        );
    }

    #[test]
    fn paused_is_reported_as_a_condition() {
        let tp = TelemetryPipeline::test().paused();
        let s = compute(&tp, &healthy(), at(100));
        assert_eq!(state(&s, PAUSED), ("True", "Paused"));
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
}

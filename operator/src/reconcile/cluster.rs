//! The reconcile's step for a managed Redis Cluster: one bounded round of
//! [`redis_cluster::converge_once`] over the StatefulSet's pods, in ordinal
//! order, once every pod runs with an address.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use tracing::warn;

use crate::crd::redis::ManagedRedis;
use crate::redis_cluster::{self, Layout};
use crate::resources::redis::{REDIS_PORT, pods};
use crate::status::ClusterObservation;

/// How soon a cluster that has not converged is looked at again: each round
/// moves a bounded number of slots, so a reshard is many short passes.
pub const CONVERGING_REQUEUE: Duration = Duration::from_secs(2);

/// Pods of a cluster that are not all running yet: how many are, of how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Starting {
    pub running: usize,
    pub wanted: usize,
}

impl From<Starting> for ClusterObservation {
    fn from(s: Starting) -> Self {
        ClusterObservation::PodsStarting {
            running: s.running,
            wanted: s.wanted,
        }
    }
}

/// `host:port` of each wanted pod in ordinal order, or how many run while
/// one of them is missing, not running, terminating or without an address
/// (pure).
pub fn addresses(
    statefulset: &str,
    managed: &ManagedRedis,
    pods_seen: &[Pod],
) -> Result<Vec<String>, Starting> {
    let wanted = usize::try_from(pods(managed)).unwrap_or(0);
    let address = |ordinal: usize| {
        let name = format!("{statefulset}-{ordinal}");
        let pod = pods_seen.iter().find(|p| p.name_any() == name)?;
        if pod.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let status = pod.status.as_ref()?;
        if status.phase.as_deref() != Some("Running") {
            return None;
        }
        let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
        Some(if ip.contains(':') {
            format!("[{ip}]:{REDIS_PORT}")
        } else {
            format!("{ip}:{REDIS_PORT}")
        })
    };
    let found: Vec<Option<String>> = (0..wanted).map(address).collect();
    let running = found.iter().filter(|a| a.is_some()).count();
    if running == wanted {
        Ok(found.into_iter().flatten().collect())
    } else {
        Err(Starting { running, wanted })
    }
}

/// One round on the cluster of `managed` (its StatefulSet `statefulset`):
/// what it found, for the status.
pub async fn round(
    statefulset: &str,
    managed: &ManagedRedis,
    pods_seen: &[Pod],
    password: &str,
) -> ClusterObservation {
    let addrs = match addresses(statefulset, managed, pods_seen) {
        Ok(addrs) => addrs,
        Err(starting) => return starting.into(),
    };
    let layout = layout(managed);
    match redis_cluster::converge_once(&addrs, layout, Some(password)).await {
        Ok(progress) => ClusterObservation::Round {
            health: progress.health,
            plan: progress.plan,
            error: None,
        },
        Err(error) => {
            warn!(%error, statefulset, "a Redis Cluster step failed; retrying next pass");
            // The cluster as the failed step left it, for the status.
            observation(&addrs, layout, password, Some(error.to_string())).await
        }
    }
}

/// The cluster of `managed` as it stands, changing nothing (a paused
/// pipeline, or one whose reconcile failed).
pub async fn look(
    statefulset: &str,
    managed: &ManagedRedis,
    pods_seen: &[Pod],
    password: &str,
) -> ClusterObservation {
    match addresses(statefulset, managed, pods_seen) {
        Ok(addrs) => observation(&addrs, layout(managed), password, None).await,
        Err(starting) => starting.into(),
    }
}

async fn observation(
    addrs: &[String],
    layout: Layout,
    password: &str,
    error: Option<String>,
) -> ClusterObservation {
    let observed = redis_cluster::apply::observe(addrs, Some(password)).await;
    ClusterObservation::Round {
        health: redis_cluster::health::summarize(layout, &observed),
        plan: redis_cluster::plan::plan(layout, &observed),
        error,
    }
}

fn layout(managed: &ManagedRedis) -> Layout {
    Layout {
        shards: usize::try_from(managed.shards).unwrap_or(0),
        replicas_per_shard: usize::try_from(managed.replicas_per_shard).unwrap_or(0),
    }
}

/// Whether the pass should come back soon for this cluster.
pub fn converging(observed: &ClusterObservation) -> bool {
    match observed {
        ClusterObservation::PodsStarting { .. } => true,
        ClusterObservation::Round { plan, error, .. } => {
            error.is_some()
                || !matches!(
                    plan,
                    redis_cluster::Plan::Converged | redis_cluster::Plan::Blocked(_)
                )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, phase: &str, ip: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                pod_ip: ip.map(Into::into),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn addresses_come_in_ordinal_order_once_every_wanted_pod_runs() {
        let managed = ManagedRedis {
            shards: 2,
            replicas_per_shard: 0,
            ..ManagedRedis::default()
        };
        let mut seen = vec![
            pod("pipe-redis-1", "Running", Some("10.0.0.9")),
            pod("pipe-redis-0", "Running", Some("10.0.0.7")),
            pod("other-redis-0", "Running", Some("10.0.0.1")),
        ];
        assert_eq!(
            addresses("pipe-redis", &managed, &seen),
            Ok(vec![
                "10.0.0.7:6379".to_string(),
                "10.0.0.9:6379".to_string()
            ])
        );
        seen[0] = pod("pipe-redis-1", "Pending", None);
        assert_eq!(
            addresses("pipe-redis", &managed, &seen),
            Err(Starting {
                running: 1,
                wanted: 2
            })
        );
        seen[0] = pod("pipe-redis-1", "Running", Some("fd00::1"));
        assert_eq!(
            addresses("pipe-redis", &managed, &seen).unwrap()[1],
            "[fd00::1]:6379"
        );
    }

    #[test]
    fn only_a_converged_or_blocked_cluster_waits_for_the_resync() {
        let starting = ClusterObservation::PodsStarting {
            running: 1,
            wanted: 3,
        };
        assert!(converging(&starting));
    }
}

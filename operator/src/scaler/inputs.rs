//! What [`decide`](crate::autoscale::decide) sees of the cluster, as pure functions of
//! the objects read and the scrape cache: each pod's [`PodInput`], the
//! Redis busy share, and whether the Deployment is rolling out.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::autoscale::{Inputs, Phase, PodInput, victim};
use crate::scrape::{self, PodClass, SampleCache};

/// The decision's inputs: `current` replicas of `deployment`, its `pods` and
/// what `cache` holds of them; `shards` is the Redis primaries the pods'
/// flushes are spread over.
pub(super) fn inputs(
    current: i32,
    pods: &[Pod],
    cache: &SampleCache,
    deployment: &Deployment,
    shards: u32,
) -> Inputs {
    Inputs {
        current,
        pods: pods.iter().map(|p| pod_input(p, cache)).collect(),
        redis_busy_permille: redis_busy(cache, pods, shards),
        rollout_in_progress: rolling_out(deployment),
    }
}

fn phase(pod: &Pod) -> Phase {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Running") => Phase::Running,
        Some("Succeeded") => Phase::Succeeded,
        Some("Failed") => Phase::Failed,
        Some("Unknown") => Phase::Unknown,
        _ => Phase::Pending,
    }
}

/// One pod as [`decide`](crate::autoscale::decide) sees it.
fn pod_input(pod: &Pod, cache: &SampleCache) -> PodInput {
    let name = pod.name_any();
    PodInput {
        phase: match scrape::classify(pod) {
            // Running without a usable IP: its metric is missing.
            PodClass::Unknown => Phase::Unknown,
            _ => phase(pod),
        },
        terminating: scrape::is_terminating(pod),
        ready: scrape::is_ready(pod),
        created: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_millisecond()),
        queue: cache.queue(&name),
        rate: cache.rate(&name),
        deletion_cost: pod
            .annotations()
            .get(victim::DELETION_COST)
            .and_then(|v| v.parse().ok()),
        name,
    }
}

/// Per mille of the time Redis spent running the listed pods' flush
/// scripts: each pod's busy seconds over the interval between its last two
/// scrapes, summed, and shared by the `shards` primaries of a cluster (the
/// partitions spread the flushes evenly over them: BENCHMARKS.md, "Sharded
/// pipelines"). None until some pod was scraped twice.
fn redis_busy(cache: &SampleCache, pods: &[Pod], shards: u32) -> Option<u32> {
    let shares: Vec<f64> = pods
        .iter()
        .filter_map(|p| {
            let name = p.metadata.name.as_deref()?;
            let busy = cache.redis_busy_seconds(name)?;
            let interval = cache.interval_ms(name).filter(|&ms| ms > 0)? as f64 / 1000.0;
            Some(busy / interval)
        })
        .collect();
    if shares.is_empty() {
        return None;
    }
    let busy: f64 = shares.iter().sum::<f64>() / f64::from(shards.max(1));
    Some((busy * 1000.0).clamp(0.0, 1000.0).round() as u32)
}

/// Whether the Deployment is rolling out: a change not yet observed, pods
/// not yet updated, or more pods than wanted (old ones still going).
fn rolling_out(d: &Deployment) -> bool {
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(status) = d.status.as_ref() else {
        return true;
    };
    status.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0)
        || status.updated_replicas.unwrap_or(0) < wanted
        || status.replicas.unwrap_or(0) > status.updated_replicas.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::Reading;

    #[test]
    fn redis_busy_sums_the_pods_script_time_and_shares_it_among_the_shards() {
        let mut cache = SampleCache::new();
        let mut pods = Vec::new();
        for (name, script) in [("a", 6.0), ("b", 3.0)] {
            let reading = |seconds: f64| Reading {
                flush_script_seconds_sum: Some(seconds),
                ..Reading::default()
            };
            cache.record(name, 0, &reading(0.0));
            cache.record(name, 15_000, &reading(script));
            let mut pod = Pod::default();
            pod.metadata.name = Some(name.into());
            pods.push(pod);
        }
        // 9 s of scripts in 15 s: 60 % of one Redis, 20 % of each of three.
        assert_eq!(redis_busy(&cache, &pods, 1), Some(600));
        assert_eq!(redis_busy(&cache, &pods, 3), Some(200));
        assert_eq!(redis_busy(&SampleCache::new(), &pods, 3), None);
    }

    #[test]
    fn a_deployment_with_pods_not_yet_updated_is_rolling_out() {
        let mut d = Deployment::default();
        d.metadata.generation = Some(2);
        d.spec = Some(k8s_openapi::api::apps::v1::DeploymentSpec {
            replicas: Some(3),
            ..Default::default()
        });
        d.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(3),
            updated_replicas: Some(3),
            ..Default::default()
        });
        assert!(!rolling_out(&d));
        d.status.as_mut().unwrap().updated_replicas = Some(2);
        assert!(rolling_out(&d));
        d.status.as_mut().unwrap().updated_replicas = Some(3);
        d.status.as_mut().unwrap().replicas = Some(4);
        assert!(rolling_out(&d), "an old pod still going");
    }
}

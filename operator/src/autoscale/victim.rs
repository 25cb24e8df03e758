//! The drain-aware scale-down: when to wait, and which pods go.
//!
//! The ReplicaSet controller removes pending and unready pods first, then
//! ready pods by ascending `controller.kubernetes.io/pod-deletion-cost`. So
//! the autoscaler gives its chosen victims a low cost (and clears it on the
//! others) before it lowers the replica count: the pods with the least queued
//! work go, and each drains what it holds on SIGTERM before it exits.

use super::{Action, Phase, PodInput};

/// The annotation the ReplicaSet controller ranks pods by.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
/// The cost given to chosen victims (survivors have none, i.e. 0).
pub const VICTIM_COST: i32 = -1000;

/// One annotation write: set the pod's deletion cost, or remove it (None).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CostWrite {
    /// Pod name.
    pub pod: String,
    /// The new value; None removes the annotation.
    pub cost: Option<i32>,
}

/// Why a scale-down must wait, if it must: a rollout in progress, a pod that
/// is running but not ready and still holds queued events, or pods that are
/// still terminating (from the previous scale-down or otherwise).
pub fn deferral(pods: &[PodInput], rollout_in_progress: bool) -> Option<String> {
    if rollout_in_progress {
        return Some("the Deployment is rolling out".into());
    }
    let finished = |p: &PodInput| matches!(p.phase, Phase::Failed | Phase::Succeeded);
    let terminating: Vec<&str> = pods
        .iter()
        .filter(|p| p.terminating && !finished(p))
        .map(|p| p.name.as_str())
        .collect();
    if !terminating.is_empty() {
        return Some(format!(
            "{} still terminating ({})",
            plural(terminating.len()),
            terminating.join(", ")
        ));
    }
    let holding: Vec<String> = pods
        .iter()
        .filter(|p| p.phase == Phase::Running && !p.ready && !p.terminating)
        .filter_map(|p| {
            let q = p.queue?.value / super::MILLI;
            (q > 0).then(|| format!("{} holds {q} events", p.name))
        })
        .collect();
    if !holding.is_empty() {
        return Some(format!(
            "a running pod that is not ready still has queued events ({})",
            holding.join(", ")
        ));
    }
    None
}

fn plural(n: usize) -> String {
    if n == 1 {
        "1 pod is".into()
    } else {
        format!("{n} pods are")
    }
}

/// The victims of removing `count` pods, best first: pending, unknown or
/// not-ready pods, then ready pods by ascending queue depth (a pod without a
/// sample last: its queue is unknown), the newest first among equals.
pub fn choose(pods: &[PodInput], count: i32) -> Vec<String> {
    let mut candidates: Vec<&PodInput> = pods
        .iter()
        .filter(|p| !p.terminating && !matches!(p.phase, Phase::Failed | Phase::Succeeded))
        .collect();
    let rank = |p: &PodInput| {
        let serving = p.phase == Phase::Running && p.ready;
        let queue = p.queue.map_or(u64::MAX, |s| s.value);
        (serving, queue, std::cmp::Reverse(p.created))
    };
    candidates.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.name.cmp(&b.name)));
    candidates
        .into_iter()
        .take(usize::try_from(count.max(0)).unwrap_or(0))
        .map(|p| p.name.clone())
        .collect()
}

/// The scale-down action for removing `count` pods: its victims and the
/// deletion-cost writes (only for pods whose value changes).
pub fn scale_down(pods: &[PodInput], count: i32) -> Action {
    let victims = choose(pods, count);
    let chosen: std::collections::HashSet<&str> = victims.iter().map(String::as_str).collect();
    let cost_writes = pods
        .iter()
        .filter(|p| !p.terminating)
        .filter_map(|p| {
            let wanted = chosen.contains(p.name.as_str()).then_some(VICTIM_COST);
            (p.deletion_cost != wanted).then(|| CostWrite {
                pod: p.name.clone(),
                cost: wanted,
            })
        })
        .collect();
    Action::ScaleDown {
        victims,
        cost_writes,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Sample;
    use super::*;

    fn pod(name: &str, queue: Option<u64>, ready: bool, created: i64) -> PodInput {
        PodInput {
            name: name.into(),
            phase: Phase::Running,
            terminating: false,
            ready,
            created,
            queue: queue.map(|q| Sample {
                value: q * 1000,
                at: 0,
            }),
            rate: None,
            deletion_cost: None,
        }
    }

    #[test]
    fn unready_pods_go_first_then_the_emptiest_newest_first() {
        let pods = vec![
            pod("a", Some(5), true, 1),
            pod("b", Some(0), true, 1),
            pod("c", Some(0), true, 2),
            pod("d", Some(50), false, 1),
            pod("e", None, true, 3),
        ];
        assert_eq!(choose(&pods, 4), ["d", "c", "b", "a"]);
    }

    #[test]
    fn only_changed_costs_are_written() {
        let mut pods = vec![pod("a", Some(0), true, 1), pod("b", Some(9), true, 1)];
        pods[0].deletion_cost = Some(VICTIM_COST);
        pods[1].deletion_cost = Some(VICTIM_COST);
        let Action::ScaleDown {
            victims,
            cost_writes,
        } = scale_down(&pods, 1)
        else {
            panic!("a scale-down");
        };
        assert_eq!(victims, ["a"]);
        assert_eq!(
            cost_writes,
            [CostWrite {
                pod: "b".into(),
                cost: None
            }]
        );
    }

    #[test]
    fn terminating_pods_and_rollouts_defer_a_scale_down() {
        let mut pods = vec![pod("a", Some(0), true, 1)];
        assert_eq!(deferral(&pods, false), None);
        assert!(deferral(&pods, true).unwrap().contains("rolling out"));
        pods.push(PodInput {
            terminating: true,
            ..pod("z", Some(0), false, 1)
        });
        assert!(deferral(&pods, false).unwrap().contains("z"));
    }
}

//! Test fixtures of the status modules: children, pods and containers in
//! given states, and lookups of conditions in a computed status.

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStatus, StatefulSet, StatefulSetStatus,
};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;

use super::{Notice, Observed};
use crate::crd::TelemetryPipelineStatus;

pub(super) fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(seconds).unwrap())
}

pub(super) fn deployment(wanted: i32, ready: i32, updated: i32) -> Deployment {
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

pub(super) fn redis_sts(ready: i32) -> StatefulSet {
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

/// A container named `ingest` in `state`, with `last` as its previous state.
pub(super) fn container(
    ready: bool,
    state: ContainerState,
    last: Option<ContainerState>,
) -> ContainerStatus {
    ContainerStatus {
        name: "ingest".into(),
        ready,
        state: Some(state),
        last_state: last,
        ..Default::default()
    }
}

pub(super) fn running() -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning::default()),
        ..Default::default()
    }
}

pub(super) fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: Some(message.into()),
        }),
        ..Default::default()
    }
}

pub(super) fn exited(code: i32) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            reason: Some("Error".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A pod whose Ready condition has had `ready` since `since`.
pub(super) fn pod(name: &str, ready: bool, since: i64, c: ContainerStatus) -> Pod {
    let mut p = Pod {
        status: Some(PodStatus {
            phase: Some(if ready { "Running" } else { "Pending" }.into()),
            start_time: Some(at(since)),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                last_transition_time: Some(at(since)),
                ..Default::default()
            }]),
            container_statuses: Some(vec![c]),
            ..Default::default()
        }),
        ..Default::default()
    };
    p.metadata.name = Some(name.into());
    p
}

pub(super) fn ready_pod(name: &str) -> Pod {
    pod(name, true, 10, container(true, running(), None))
}

pub(super) fn cond<'a>(s: &'a TelemetryPipelineStatus, t: &str) -> &'a Condition {
    s.conditions
        .iter()
        .find(|c| c.type_ == t)
        .unwrap_or_else(|| panic!("no {t}"))
}

/// (status, reason) of condition `t`.
pub(super) fn state<'a>(s: &'a TelemetryPipelineStatus, t: &str) -> (&'a str, &'a str) {
    let c = cond(s, t);
    (c.status.as_str(), c.reason.as_str())
}

pub(super) fn healthy() -> Observed {
    Observed {
        redis: Some(redis_sts(1)),
        deployment: Some(deployment(2, 2, 2)),
        redis_pods: vec![ready_pod("pipe-redis-0")],
        ingest_pods: vec![ready_pod("pipe-ingest-a"), ready_pod("pipe-ingest-b")],
        ..Observed::default()
    }
}

pub(super) fn warnings(events: &[Notice]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| e.type_ == EventType::Warning)
        .map(|e| e.reason.as_str())
        .collect()
}

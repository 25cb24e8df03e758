//! The pod status the stand-in reports, built from what its containers do.
//! Pure: the pod worker feeds it container states and times, and patches the
//! result when it differs from what it sent last.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

/// Where one container is, in Kubernetes' terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started_at: String,
    },
    Terminated {
        exit_code: i32,
        signal: Option<i32>,
        reason: String,
        started_at: String,
        finished_at: String,
    },
}

impl State {
    pub fn waiting(reason: &str, message: impl Into<String>) -> State {
        State::Waiting {
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            State::Waiting { reason, message } => {
                json!({"waiting": {"reason": reason, "message": message}})
            }
            State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
            State::Terminated {
                exit_code,
                signal,
                reason,
                started_at,
                finished_at,
            } => {
                let mut t = json!({
                    "exitCode": exit_code, "reason": reason,
                    "startedAt": started_at, "finishedAt": finished_at,
                });
                if let Some(signal) = signal {
                    t["signal"] = json!(signal);
                }
                json!({ "terminated": t })
            }
        }
    }
}

/// The current time as the API writes it (RFC 3339, whole seconds).
pub fn now() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .map_or_else(|_| now.to_string(), |t| t.to_string())
}

/// One container as the pod worker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub state: State,
    pub last_state: Option<State>,
    pub ready: bool,
    pub restart_count: u32,
    /// The process ID, shown as the container ID.
    pub pid: Option<u32>,
    /// Will the container run again (restartPolicy) once it terminated?
    pub will_restart: bool,
}

/// The pod phase for these containers.
pub fn phase(containers: &[Container]) -> &'static str {
    let terminated: Vec<_> = containers
        .iter()
        .filter_map(|c| match &c.state {
            State::Terminated { exit_code, .. } if !c.will_restart => Some(*exit_code),
            _ => None,
        })
        .collect();
    if !containers.is_empty() && terminated.len() == containers.len() {
        return if terminated.iter().all(|c| *c == 0) {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    let started = containers.iter().any(|c| {
        matches!(c.state, State::Running { .. }) || c.restart_count > 0 || c.last_state.is_some()
    });
    if started { "Running" } else { "Pending" }
}

/// Remembers when each condition last changed, as the API expects.
#[derive(Debug, Default)]
pub struct Transitions {
    seen: BTreeMap<&'static str, (bool, String)>,
}

impl Transitions {
    fn condition(&mut self, kind: &'static str, status: bool, now: &str) -> Value {
        let entry = self
            .seen
            .entry(kind)
            .or_insert_with(|| (status, now.to_owned()));
        if entry.0 != status {
            *entry = (status, now.to_owned());
        }
        json!({
            "type": kind,
            "status": if status { "True" } else { "False" },
            "lastTransitionTime": entry.1,
        })
    }
}

/// The `status` of the pod the stand-in owns (not `qosClass`: the apiserver
/// sets it at creation and it is immutable).
pub fn pod_status(
    containers: &[Container],
    pod_ip: Ipv4Addr,
    start_time: &str,
    transitions: &mut Transitions,
    now: &str,
) -> Value {
    let phase = phase(containers);
    let all_ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
    let initialized = true;
    let conditions = vec![
        transitions.condition("PodReadyToStartContainers", true, now),
        transitions.condition("Initialized", initialized, now),
        transitions.condition("ContainersReady", all_ready, now),
        transitions.condition("Ready", all_ready, now),
        transitions.condition("PodScheduled", true, now),
    ];
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            let mut s = json!({
                "name": c.name,
                "image": c.image,
                "imageID": format!("telemetry-kubelet://{}", c.image),
                "ready": c.ready,
                "started": matches!(c.state, State::Running { .. }),
                "restartCount": c.restart_count,
                "state": c.state.to_json(),
                "lastState": c.last_state.as_ref().map_or(json!({}), State::to_json),
            });
            if let Some(pid) = c.pid {
                s["containerID"] = json!(format!("telemetry-kubelet://{pid}"));
            }
            s
        })
        .collect();
    json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": pod_ip.to_string(),
        "podIPs": [{"ip": pod_ip.to_string()}],
        "startTime": start_time,
        "containerStatuses": statuses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(state: State, ready: bool, will_restart: bool) -> Container {
        Container {
            name: "c".into(),
            image: "redis".into(),
            state,
            last_state: None,
            ready,
            restart_count: 0,
            pid: Some(42),
            will_restart,
        }
    }

    fn terminated(code: i32) -> State {
        State::Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            started_at: "t0".into(),
            finished_at: "t1".into(),
        }
    }

    #[test]
    fn phases_follow_the_containers() {
        assert_eq!(
            phase(&[c(State::waiting("ContainerCreating", ""), false, true)]),
            "Pending"
        );
        assert_eq!(
            phase(&[c(
                State::Running {
                    started_at: "t".into()
                },
                false,
                true
            )]),
            "Running"
        );
        assert_eq!(phase(&[c(terminated(0), false, false)]), "Succeeded");
        assert_eq!(
            phase(&[
                c(terminated(1), false, false),
                c(terminated(0), false, false)
            ]),
            "Failed"
        );
        // A container that will restart keeps the pod Running.
        let mut restarting = c(State::waiting("CrashLoopBackOff", ""), false, true);
        restarting.restart_count = 1;
        assert_eq!(phase(&[restarting]), "Running");
    }

    #[test]
    fn ready_conditions_follow_readiness_and_keep_their_transition_time() {
        let mut tr = Transitions::default();
        let ip = Ipv4Addr::new(127, 0, 0, 2);
        let running = State::Running {
            started_at: "t0".into(),
        };
        let s = pod_status(&[c(running.clone(), false, true)], ip, "t0", &mut tr, "t1");
        let ready = |s: &Value| {
            s["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Ready")
                .cloned()
                .unwrap()
        };
        assert_eq!(ready(&s)["status"], "False");
        let s = pod_status(&[c(running.clone(), true, true)], ip, "t0", &mut tr, "t2");
        assert_eq!(ready(&s)["status"], "True");
        assert_eq!(ready(&s)["lastTransitionTime"], "t2");
        let s = pod_status(&[c(running, true, true)], ip, "t0", &mut tr, "t3");
        assert_eq!(ready(&s)["lastTransitionTime"], "t2");
        assert_eq!(s["podIP"], "127.0.0.2");
        assert_eq!(
            s["containerStatuses"][0]["containerID"],
            "telemetry-kubelet://42"
        );
        // The apiserver owns qosClass (immutable once set at creation).
        assert!(s.get("qosClass").is_none());
    }

    #[test]
    fn a_terminated_container_reports_exit_code_and_reason() {
        let mut tr = Transitions::default();
        let s = pod_status(
            &[c(terminated(2), false, false)],
            Ipv4Addr::new(127, 0, 0, 2),
            "t0",
            &mut tr,
            "t1",
        );
        let t = &s["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(t["exitCode"], 2);
        assert_eq!(t["reason"], "Error");
        assert_eq!(s["phase"], "Failed");
    }
}

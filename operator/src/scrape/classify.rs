//! Which ingest pods the autoscaler scrapes, from the pod object alone
//! (autoscaler spec, step 2).
//!
//! A terminating pod is ignored even while it still answers: it is draining,
//! and counting its queue would keep replicas that are already going away.
//! Readiness is reported separately ([`is_ready`]) because it does not decide
//! whether a Running pod is scraped: a NotReady pod with a valid sample still
//! counts, and the scale-down protocol needs to know about it.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

/// What the autoscaler does with one pod of the ingest Deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodClass {
    /// Excluded from everything: terminating, or phase Failed/Succeeded.
    Ignored,
    /// Not started yet (phase Pending, or no phase reported): counts as 0 on
    /// a scale-up, not at all otherwise.
    Pending,
    /// Running with an IP: scrape it there.
    Running {
        /// `status.podIP`.
        ip: IpAddr,
    },
    /// Phase Unknown, or Running without a usable IP: its metric is missing.
    Unknown,
}

/// Classifies `pod` by its deletion timestamp, phase and IP.
pub fn classify(pod: &Pod) -> PodClass {
    if is_terminating(pod) {
        return PodClass::Ignored;
    }
    let status = pod.status.as_ref();
    match status.and_then(|s| s.phase.as_deref()) {
        Some("Failed" | "Succeeded") => PodClass::Ignored,
        None | Some("Pending") => PodClass::Pending,
        Some("Running") => status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok())
            .map_or(PodClass::Unknown, |ip| PodClass::Running { ip }),
        // "Unknown", and any phase a newer Kubernetes might add.
        Some(_) => PodClass::Unknown,
    }
}

/// Whether the pod's `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether the pod is being deleted (`metadata.deletionTimestamp` is set).
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn pod(phase: Option<&str>, ip: Option<&str>) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: phase.map(str::to_string),
                pod_ip: ip.map(str::to_string),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn deleted(mut pod: Pod) -> Pod {
        pod.metadata.deletion_timestamp = Some(Time(Default::default()));
        pod
    }

    fn with_ready(mut pod: Pod, status: &str) -> Pod {
        pod.status.get_or_insert_default().conditions = Some(vec![
            PodCondition {
                type_: "PodScheduled".into(),
                status: "True".into(),
                ..PodCondition::default()
            },
            PodCondition {
                type_: "Ready".into(),
                status: status.into(),
                ..PodCondition::default()
            },
        ]);
        pod
    }

    #[test]
    fn a_running_pod_with_an_ip_is_scraped_at_that_ip() {
        assert_eq!(
            classify(&pod(Some("Running"), Some("10.1.2.3"))),
            PodClass::Running {
                ip: "10.1.2.3".parse().unwrap()
            }
        );
        assert_eq!(
            classify(&pod(Some("Running"), Some("fd00::7"))),
            PodClass::Running {
                ip: "fd00::7".parse().unwrap()
            }
        );
    }

    #[test]
    fn a_running_pod_without_a_usable_ip_is_unknown() {
        assert_eq!(classify(&pod(Some("Running"), None)), PodClass::Unknown);
        assert_eq!(
            classify(&pod(Some("Running"), Some("not-an-ip"))),
            PodClass::Unknown
        );
    }

    #[test]
    fn a_terminating_pod_is_ignored_whatever_its_phase() {
        for phase in [Some("Running"), Some("Pending"), Some("Unknown"), None] {
            let p = deleted(pod(phase, Some("10.0.0.1")));
            assert_eq!(classify(&p), PodClass::Ignored, "{phase:?}");
            assert!(is_terminating(&p));
        }
        assert!(!is_terminating(&pod(Some("Running"), Some("10.0.0.1"))));
    }

    #[test]
    fn finished_pods_are_ignored() {
        assert_eq!(classify(&pod(Some("Failed"), None)), PodClass::Ignored);
        assert_eq!(
            classify(&pod(Some("Succeeded"), Some("10.0.0.1"))),
            PodClass::Ignored
        );
    }

    #[test]
    fn a_pod_without_a_phase_or_in_phase_pending_is_pending() {
        assert_eq!(classify(&pod(Some("Pending"), None)), PodClass::Pending);
        assert_eq!(classify(&pod(None, None)), PodClass::Pending);
        assert_eq!(classify(&Pod::default()), PodClass::Pending);
    }

    #[test]
    fn phase_unknown_and_unrecognised_phases_are_unknown() {
        assert_eq!(
            classify(&pod(Some("Unknown"), Some("10.0.0.1"))),
            PodClass::Unknown
        );
        assert_eq!(
            classify(&pod(Some("Hibernating"), Some("10.0.0.1"))),
            PodClass::Unknown
        );
    }

    #[test]
    fn readiness_is_the_ready_condition_being_true() {
        let running = pod(Some("Running"), Some("10.0.0.1"));
        assert!(!is_ready(&running), "no conditions");
        assert!(is_ready(&with_ready(running.clone(), "True")));
        assert!(!is_ready(&with_ready(running.clone(), "False")));
        assert!(!is_ready(&with_ready(running, "Unknown")));
    }
}

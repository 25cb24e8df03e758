//! The Kubernetes Events a status change is worth ([`transition_events`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::events::EventType;

use super::conditions::{DEGRADED, PAUSED, READY};
use crate::crd::TelemetryPipelineStatus;

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

/// Events for condition changes between two statuses: becoming ready (Normal),
/// becoming degraded or degraded for another reason (a Warning with the
/// reason), pausing and resuming. Not being ready yet — children created,
/// rolled out, scaled, pods starting — is no news, and neither is a degraded
/// message that changes while its reason stays.
pub fn transition_events(
    old: Option<&TelemetryPipelineStatus>,
    new: &TelemetryPipelineStatus,
) -> Vec<Notice> {
    fn find<'a>(s: Option<&'a TelemetryPipelineStatus>, t: &str) -> Option<&'a Condition> {
        s?.conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
    }
    let mut events = Vec::new();
    if let Some(ready) = find(Some(new), READY)
        && find(old, READY).is_none()
    {
        events.push(Notice {
            type_: EventType::Normal,
            reason: "Ready".into(),
            note: ready.message.clone(),
        });
    }
    if let Some(degraded) = find(Some(new), DEGRADED)
        && find(old, DEGRADED).is_none_or(|before| before.reason != degraded.reason)
    {
        events.push(Notice {
            type_: EventType::Warning,
            reason: degraded.reason.clone(),
            note: degraded.message.clone(),
        });
    }
    match (find(old, PAUSED).is_some(), find(Some(new), PAUSED)) {
        (false, Some(paused)) => events.push(Notice {
            type_: EventType::Normal,
            reason: "Paused".into(),
            note: paused.message.clone(),
        }),
        (true, None) if new.conditions.iter().any(|c| c.type_ == PAUSED) => {
            events.push(Notice {
                type_: EventType::Normal,
                reason: "Resumed".into(),
                note: "spec.paused is false again: reconciling".into(),
            });
        }
        _ => {}
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TelemetryPipeline;
    use crate::status::fixtures::*;
    use crate::status::{Observed, Problem, compute};

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

        // Redis restarting is not ready, not degraded: no event.
        let restarting = compute(
            &tp,
            &Observed {
                redis: Some(redis_sts(0)),
                redis_pods: vec![pod(
                    "pipe-redis-0",
                    false,
                    3,
                    container(false, running(), None),
                )],
                ..healthy()
            },
            at(3),
        );
        assert_eq!(state(&restarting, READY), ("False", "RedisPodsStarting"));
        assert!(transition_events(Some(&ready), &restarting).is_empty());

        // A problem is a Warning, once per reason.
        let broken = |reason: &str| {
            compute(
                &tp,
                &Observed {
                    problem: Some(Problem {
                        reason: reason.into(),
                        message: format!("{reason} happened"),
                    }),
                    ..healthy()
                },
                at(4),
            )
        };
        let forbidden = broken("Forbidden");
        let ev = transition_events(Some(&ready), &forbidden);
        assert_eq!(ev.len(), 1);
        assert_eq!(
            (ev[0].type_, ev[0].reason.as_str(), ev[0].note.as_str()),
            (EventType::Warning, "Forbidden", "Forbidden happened")
        );
        assert!(transition_events(Some(&forbidden), &forbidden).is_empty());
        assert_eq!(
            warnings(&transition_events(
                Some(&forbidden),
                &broken("ApplyRejected")
            )),
            ["ApplyRejected"]
        );
        let ev = transition_events(Some(&forbidden), &ready);
        assert_eq!(
            ev.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
            ["Ready"],
            "recovering is a Normal Ready event"
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

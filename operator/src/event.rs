//! Kubernetes Events about a pipeline, published by the reconciler and the
//! autoscaler alike. A failed publish is logged, never an error: an Event is
//! news, not state.

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};
use tracing::warn;

use crate::crd::TelemetryPipeline;

/// Publishes one Event on `tp` through `recorder`.
pub async fn publish(
    recorder: &Recorder,
    tp: &TelemetryPipeline,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &tp.object_ref(&())).await {
        warn!(error = %e, reason, "could not publish an event");
    }
}

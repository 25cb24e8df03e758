//! The autoscaler's writes of its part of the status: `status.autoscaling`
//! and the `Scaling*` conditions, server-side applied under
//! [`AUTOSCALER_MANAGER`] when they changed (what to write comes from the
//! pure [`record`](super::record)), and their removal once autoscaling is
//! disabled.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use super::Scaler;
use super::record::{conditions_of, needs_write, same_conditions, transition_events};
use crate::autoscale::{Decision, condition};
use crate::crd::TelemetryPipeline;
use crate::crd::autoscaling::AutoscalingStatus;
use crate::resources::AUTOSCALER_MANAGER;
use crate::{Error, Result};

impl Scaler {
    /// Writes `status.autoscaling` and the autoscaler's conditions when they
    /// changed, and publishes the events of condition transitions.
    pub(super) async fn write_status(
        &self,
        tp: &TelemetryPipeline,
        decision: &Decision,
        new: AutoscalingStatus,
    ) -> Result<()> {
        let old = held_status(tp).cloned();
        let old_conditions: Vec<Condition> = tp
            .status
            .iter()
            .flat_map(|s| s.conditions.iter())
            .filter(|c| AUTOSCALER_CONDITIONS.contains(&c.type_.as_str()))
            .cloned()
            .collect();
        let now = Time(Timestamp::now());
        let conditions = conditions_of(decision, &old_conditions, tp.metadata.generation, &now);
        if !needs_write(old.as_ref(), &new) && same_conditions(&old_conditions, &conditions) {
            return Ok(());
        }
        self.apply_status(
            tp,
            serde_json::json!({ "autoscaling": new, "conditions": conditions }),
            "update",
        )
        .await?;
        self.metrics.status_writes.inc();
        for (type_, reason, note) in transition_events(&old_conditions, &conditions) {
            crate::event::publish(&self.recorder, tp, type_, &reason, "Autoscale", note).await;
        }
        Ok(())
    }

    /// Server-side applies `status` (the autoscaler's part only) under
    /// [`AUTOSCALER_MANAGER`]: fields it owned and leaves out are removed.
    async fn apply_status(
        &self,
        tp: &TelemetryPipeline,
        status: serde_json::Value,
        verb: &str,
    ) -> Result<()> {
        let ns = tp.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
        let name = tp.name_any();
        let patch = serde_json::json!({
            "apiVersion": TelemetryPipeline::api_version(&()),
            "kind": TelemetryPipeline::kind(&()),
            "status": status,
        });
        Api::<TelemetryPipeline>::namespaced(self.client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::apply(AUTOSCALER_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|e| {
                Error::kube(
                    format!("{verb} autoscaling status of TelemetryPipeline {ns}/{name}"),
                    e,
                )
            })?;
        Ok(())
    }

    /// Removes what the autoscaler wrote once autoscaling is disabled.
    pub(super) async fn clear_status(&self, tp: &TelemetryPipeline) -> Result<()> {
        if !has_autoscaler_status(tp) {
            return Ok(());
        }
        self.apply_status(tp, serde_json::json!({}), "clear")
            .await?;
        self.metrics
            .autoscaler
            .forget(&tp.namespace().unwrap_or_default(), &tp.name_any());
        self.pipelines
            .lock()
            .expect("not poisoned")
            .remove(&Self::key(tp));
        Ok(())
    }
}

/// The autoscaler's part of the pipeline's status, as last read.
pub(super) fn held_status(tp: &TelemetryPipeline) -> Option<&AutoscalingStatus> {
    tp.status.as_ref().and_then(|s| s.autoscaling.as_ref())
}

/// The condition types the autoscaler writes.
pub const AUTOSCALER_CONDITIONS: [&str; 3] = [
    condition::SCALING_ACTIVE,
    condition::SCALING_LIMITED,
    condition::FALLBACK_ACTIVE,
];

pub(super) fn has_autoscaler_status(tp: &TelemetryPipeline) -> bool {
    tp.status.as_ref().is_some_and(|s| {
        s.autoscaling.is_some()
            || s.conditions
                .iter()
                .any(|c| AUTOSCALER_CONDITIONS.contains(&c.type_.as_str()))
    })
}

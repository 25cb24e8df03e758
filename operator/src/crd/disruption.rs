//! `spec.ingest.podDisruptionBudget` and `spec.redis.managed.podDisruptionBudget`:
//! how many pods a voluntary disruption (a node drain, a cluster upgrade) may
//! take at once.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Pods a voluntary disruption may take at once, by default.
pub const DEFAULT_MAX_UNAVAILABLE: i32 = 1;

/// A PodDisruptionBudget over a set of the pipeline's pods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "string(self.maxUnavailable).matches('^[0-9]+$') ? string(self.maxUnavailable) != self.maxUnavailable : string(self.maxUnavailable).matches('^(100|[1-9]?[0-9])%$')",
        "message": "podDisruptionBudget.maxUnavailable must be a count >= 0 or a percentage such as \"25%\""
    }
]))]
pub struct DisruptionBudget {
    /// Create the PodDisruptionBudget. Off: a node drain may evict all of
    /// these pods at once.
    pub enabled: bool,

    /// Pods an eviction may make unavailable at once: a count (`1`) or a
    /// percentage of the pods (`"25%"`, rounded up). `0` blocks every
    /// eviction, which also blocks node drains.
    pub max_unavailable: IntOrString,
}

impl Default for DisruptionBudget {
    fn default() -> Self {
        Self {
            enabled: true,
            max_unavailable: IntOrString::Int(DEFAULT_MAX_UNAVAILABLE),
        }
    }
}

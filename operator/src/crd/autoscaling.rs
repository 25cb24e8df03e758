//! `spec.autoscaling`: the configuration of spec/autoscaler.md.
//!
//! Only the schema and its defaults live here; the scaling behaviour is its own
//! issue. What the operator already does with it: while autoscaling is enabled
//! it does not apply `spec.replicas` to the ingest Deployment (see
//! `resources::ingest`), so it never fights the autoscaler.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest stabilization window, in seconds.
pub const MAX_WINDOW_SECONDS: i32 = 3600;
/// Longest policy period, in seconds.
pub const MAX_POLICY_PERIOD_SECONDS: i32 = 1800;

/// Queue-depth based autoscaling of the ingest Deployment, with the maths and
/// the knobs of a HorizontalPodAutoscaler (autoscaling/v2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.maxReplicas >= (has(self.minReplicas) ? self.minReplicas : 1)",
        "message": "autoscaling.maxReplicas must be greater than or equal to autoscaling.minReplicas"
    },
    {
        "rule": "!has(self.scrape) || !has(self.scrape.timeoutSeconds) || !has(self.syncPeriodSeconds) || self.scrape.timeoutSeconds <= self.syncPeriodSeconds",
        "message": "autoscaling.scrape.timeoutSeconds must not exceed autoscaling.syncPeriodSeconds"
    }
]))]
pub struct AutoscalingSpec {
    /// Whether the operator scales the ingest Deployment. When false,
    /// `ingest.replicas` applies.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Fewest ingest pods (0 allows scaling to zero; it is never done
    /// automatically below 1 while there is a backlog).
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 0))]
    pub min_replicas: i32,

    /// Most ingest pods; at least 1 and at least minReplicas.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,

    /// Seconds between two autoscaling decisions.
    #[serde(default = "default_sync_period")]
    #[schemars(range(min = 1, max = 3600))]
    pub sync_period_seconds: i32,

    /// Target average queue depth per pod, in events (AverageValue
    /// semantics): replicas = ceil(total queue depth / target).
    #[schemars(range(min = 1))]
    pub target_queue_depth_per_pod: i64,

    /// Optional second metric: target accepted events per second per pod.
    /// The larger of the two recommendations wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_events_per_second_per_pod: Option<i64>,

    /// Relative deviation from the target that causes no scaling.
    #[serde(default)]
    pub tolerance: Tolerance,

    /// Stabilization windows and rate limits per direction.
    #[serde(default)]
    pub behavior: Behavior,

    /// How the operator reads each pod's metrics.
    #[serde(default)]
    pub scrape: Scrape,

    /// What to do when no metric can be read for several ticks; absent means
    /// hold the current replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
}

fn default_true() -> bool {
    true
}

fn default_min_replicas() -> i32 {
    1
}

fn default_sync_period() -> i32 {
    15
}

/// Tolerance band around the target, per direction; each in [0, 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Tolerance {
    /// Scale up only when the ratio to target exceeds 1 + scaleUp.
    #[schemars(range(min = 0.0), extend("x-kubernetes-validations" = [
        {"rule": "self < 1.0", "message": "autoscaling.tolerance.scaleUp must be in [0, 1)"}
    ]))]
    pub scale_up: f64,
    /// Scale down only when the ratio to target is below 1 - scaleDown.
    #[schemars(range(min = 0.0), extend("x-kubernetes-validations" = [
        {"rule": "self < 1.0", "message": "autoscaling.tolerance.scaleDown must be in [0, 1)"}
    ]))]
    pub scale_down: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Self {
            scale_up: 0.1,
            scale_down: 0.1,
        }
    }
}

/// Scaling behaviour per direction (as in HPA autoscaling/v2).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Behavior {
    /// Scaling up: no stabilization, at most +4 pods or +100 % per 15 s
    /// (whichever allows more) by default.
    pub scale_up: ScaleUpRules,
    /// Scaling down: 300 s stabilization, at most -100 % per 15 s by default.
    pub scale_down: ScaleDownRules,
}

/// Rules for scaling up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.selectPolicy == 'Disabled' || size(self.policies) > 0",
        "message": "autoscaling.behavior.scaleUp.policies needs at least one policy unless selectPolicy is Disabled"
    }
]))]
pub struct ScaleUpRules {
    /// Seconds of past recommendations considered: the lowest one wins.
    #[schemars(range(min = 0, max = 3600))]
    pub stabilization_window_seconds: i32,
    /// Which policy applies when several do: Max (most change), Min (least
    /// change) or Disabled (never scale up).
    pub select_policy: SelectPolicy,
    /// Rate limits; at least one unless selectPolicy is Disabled.
    #[schemars(length(max = 10))]
    pub policies: Vec<ScalingPolicy>,
}

impl Default for ScaleUpRules {
    fn default() -> Self {
        Self {
            stabilization_window_seconds: 0,
            select_policy: SelectPolicy::Max,
            policies: vec![
                ScalingPolicy {
                    type_: PolicyType::Pods,
                    value: 4,
                    period_seconds: 15,
                },
                ScalingPolicy {
                    type_: PolicyType::Percent,
                    value: 100,
                    period_seconds: 15,
                },
            ],
        }
    }
}

/// Rules for scaling down.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.selectPolicy == 'Disabled' || size(self.policies) > 0",
        "message": "autoscaling.behavior.scaleDown.policies needs at least one policy unless selectPolicy is Disabled"
    }
]))]
pub struct ScaleDownRules {
    /// Seconds of past recommendations considered: the highest one wins, so a
    /// dip shorter than this never removes pods.
    #[schemars(range(min = 0, max = 3600))]
    pub stabilization_window_seconds: i32,
    /// Which policy applies when several do: Max (most change), Min (least
    /// change) or Disabled (never scale down).
    pub select_policy: SelectPolicy,
    /// Rate limits; at least one unless selectPolicy is Disabled.
    #[schemars(length(max = 10))]
    pub policies: Vec<ScalingPolicy>,
}

impl Default for ScaleDownRules {
    fn default() -> Self {
        Self {
            stabilization_window_seconds: 300,
            select_policy: SelectPolicy::Max,
            policies: vec![ScalingPolicy {
                type_: PolicyType::Percent,
                value: 100,
                period_seconds: 15,
            }],
        }
    }
}

/// How to combine several policies of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectPolicy {
    /// The policy that allows the most change.
    #[default]
    Max,
    /// The policy that allows the least change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// One rate limit: at most `value` pods (or percent of the current count)
/// per `periodSeconds`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingPolicy {
    /// Pods (an absolute number) or Percent (of the current replicas).
    #[serde(rename = "type")]
    pub type_: PolicyType,
    /// How many pods, or what percentage; greater than 0.
    #[schemars(range(min = 1))]
    pub value: i32,
    /// Length of the sliding period, in seconds, in (0, 1800].
    #[schemars(range(min = 1, max = 1800))]
    pub period_seconds: i32,
}

/// Unit of a scaling policy's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PolicyType {
    /// An absolute number of pods.
    Pods,
    /// A percentage of the current replica count.
    Percent,
}

/// How the operator scrapes the ingest pods' metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Scrape {
    /// Per-pod scrape timeout, in seconds.
    #[schemars(range(min = 1, max = 60))]
    pub timeout_seconds: i32,
    /// Samples older than this are treated as missing; defaults to twice
    /// syncPeriodSeconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 7200))]
    pub max_sample_age_seconds: Option<i32>,
}

impl Default for Scrape {
    fn default() -> Self {
        Self {
            timeout_seconds: 5,
            max_sample_age_seconds: None,
        }
    }
}

/// Replicas to use after repeated failures to read any metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fallback {
    /// Consecutive failed ticks before the fallback applies.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: i32,
    /// The fallback replica count.
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// static (use `replicas`), currentReplicas (keep the current count),
    /// currentReplicasIfHigher / currentReplicasIfLower (the larger / smaller
    /// of the current count and `replicas`).
    #[serde(default)]
    pub behavior: FallbackBehavior,
}

fn default_failure_threshold() -> i32 {
    3
}

/// How the fallback replica count is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FallbackBehavior {
    /// Exactly `replicas`.
    #[default]
    Static,
    /// The current replica count.
    CurrentReplicas,
    /// max(current, replicas).
    CurrentReplicasIfHigher,
    /// min(current, replicas).
    CurrentReplicasIfLower,
}

impl AutoscalingSpec {
    /// Replicas the operator gives a newly created ingest Deployment: the
    /// minimum, but at least 1 so that the autoscaler has a pod to measure.
    pub fn initial_replicas(&self) -> i32 {
        self.min_replicas.max(1)
    }
}

//! `spec.autoscaling` and `status.autoscaling`: the knobs of the autoscaler and
//! what it reports, including the history it needs to survive a restart.
//!
//! The decision itself is [`crate::autoscale`]; while autoscaling is enabled
//! the operator's own apply leaves the ingest Deployment's `spec.replicas` to
//! the autoscaler's field manager (see `reconcile::apply_deployment`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
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

    /// Fewest ingest pods. The autoscaler itself never goes below 1 (with no
    /// pod there is no queue to measure); 0 lets a person scale the pipeline
    /// to zero by hand (`kubectl scale --replicas=0`), which the autoscaler
    /// then leaves alone until someone scales it up again.
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

    /// Holding scale-ups while Redis, not the ingest pods, is the bottleneck.
    #[serde(default)]
    pub redis_saturation: RedisSaturation,
}

/// When more ingest pods cannot raise throughput because the pipeline's Redis
/// is saturated, the autoscaler holds scale-ups and says so (condition
/// `ScalingLimited`, reason `RedisSaturated`). Scale-downs are unaffected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RedisSaturation {
    /// Whether to hold scale-ups while Redis is saturated.
    pub enabled: bool,
    /// Redis counts as saturated when the ingest pods' flush scripts kept its
    /// main thread busy for at least this percentage of the time (the sum over
    /// pods of `telemetry_ingest_flush_script_seconds` per second). The
    /// scripts are about 77 % of Redis's main-thread time with every
    /// aggregation on, so the default 70 means the main thread is about
    /// 90 % busy.
    #[schemars(range(min = 1, max = 100))]
    pub busy_percent: i32,
}

impl Default for RedisSaturation {
    fn default() -> Self {
        Self {
            enabled: true,
            busy_percent: DEFAULT_REDIS_BUSY_PERCENT,
        }
    }
}

/// Default Redis busy threshold: the flush scripts' share of the time, in
/// percent (measured with `scripts/redis-busy`: a saturated Redis, its main
/// thread 95–100 % busy, runs the scripts 74–76 % of the time).
pub const DEFAULT_REDIS_BUSY_PERCENT: i32 = 70;

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

    /// Samples older than this many seconds count as missing.
    pub fn max_sample_age_seconds(&self) -> i32 {
        self.scrape
            .max_sample_age_seconds
            .unwrap_or_else(|| self.sync_period_seconds.saturating_mul(2))
    }
}

/// What the autoscaler saw and decided at its last tick, and the history
/// that makes its decisions survive an operator restart (written under the
/// autoscaler's own field manager).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    /// The replica count the autoscaler last decided on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,

    /// The Deployment's replica count (spec.replicas) at the last tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_replicas: Option<i32>,

    /// Events accepted but not yet stored, summed over the pods with a valid
    /// sample at the last tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_queue_depth: Option<i64>,

    /// The largest queue depth of one pod at the last tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pod_queue_depth: Option<i64>,

    /// Accepted events per second, summed over the pods with a valid rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_events_per_second: Option<i64>,

    /// Percentage of the last sync period Redis spent running the pods'
    /// flush scripts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_busy_percent: Option<i32>,

    /// When the autoscaler last changed the replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,

    /// Recent recommendations (replicas wanted by the metrics, before
    /// stabilization and rate limits), kept for the stabilization windows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 512))]
    pub recommendations: Vec<RecommendationRecord>,

    /// Recent scale changes made by the autoscaler, kept for the rate limits
    /// of `behavior` policies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 512))]
    pub scale_events: Vec<ScaleEventRecord>,

    /// Ticks in a row without any valid metric (reset by a tick with one).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consecutive_failures: i32,

    /// The ingest pods' shutdown timeout derived from the measured drain
    /// rate, when it is longer than `spec.ingest.shutdownTimeoutSeconds`;
    /// the ingest Deployment uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainStatus>,
}

/// A shutdown timeout the autoscaler derived from what it measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainStatus {
    /// Seconds an ingest pod gets to store its queue after SIGTERM (its
    /// terminationGracePeriodSeconds adds the preStop pause and a margin).
    pub timeout_seconds: i32,
    /// The queue capacity it was derived for; a new capacity starts over.
    pub queue_capacity: i32,
    /// The slowest drain rate measured when it was last raised, in events
    /// per second.
    pub events_per_second: i64,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// One recommendation of the autoscaler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecommendationRecord {
    /// Replicas recommended.
    pub replicas: i32,
    /// When.
    pub time: MicroTime,
}

/// One scale change made by the autoscaler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleEventRecord {
    /// Replicas before.
    pub from: i32,
    /// Replicas after.
    pub to: i32,
    /// When the scale subresource was patched.
    pub time: MicroTime,
}

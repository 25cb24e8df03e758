//! The autoscaler's decision: one pure, deterministic function of the spec,
//! the history, what was observed, and the time.
//!
//! [`decide`] follows docs/autoscaling.md step by step, with the maths of the
//! Kubernetes HorizontalPodAutoscaler (autoscaling/v2) so that anyone who knows
//! HPA can predict it, and the fixes HPA and KEDA users ask for (missing
//! metrics never read as zero, terminating pods ignored, no scale-down on
//! partial data, history that survives a restart, busy pods not chosen as
//! victims, no scale-up while Redis is the bottleneck).
//!
//! - [`metric`]: replicas one metric asks for (HPA's replica calculator) in
//!   exact integer arithmetic on milli-units: no floating point, so 800 events
//!   over 7 pods at a target of 100 asks for 8 pods, not 9.
//! - [`behavior`]: the stabilization windows and the rate-limit policies.
//! - [`victim`]: which pods a scale-down removes, and the
//!   `controller.kubernetes.io/pod-deletion-cost` writes that make the
//!   ReplicaSet controller remove exactly those.
//!
//! Nothing here reads a clock or talks to the apiserver: the caller
//! (`scaler`) scrapes the pods, passes `now`, acts on the [`Decision`], and
//! keeps the returned [`History`] in the pipeline's status.

pub mod behavior;
pub mod drain;
pub mod metric;
pub mod victim;

#[cfg(test)]
mod properties;
#[cfg(test)]
mod scenarios;

use std::fmt::Write as _;

use crate::crd::autoscaling::{AutoscalingSpec, FallbackBehavior};
use metric::{MetricOutcome, PodValue, Tolerance};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Values are carried in thousandths (milli-units) so that fractional rates
/// stay exact integers.
pub const MILLI: u64 = 1000;

/// Most scale events kept in the history (the rate limits look back at most
/// 1800 s; one event per tick at most).
pub const MAX_SCALE_EVENTS: usize = 128;

/// Condition types the autoscaler owns.
pub mod condition {
    /// Whether the autoscaler is able to compute a recommendation.
    pub const SCALING_ACTIVE: &str = "ScalingActive";
    /// Whether the recommendation was held back (bounds, rate limits,
    /// Redis saturation, a deferred scale-down).
    pub const SCALING_LIMITED: &str = "ScalingLimited";
    /// Whether the fallback replica count is in force.
    pub const FALLBACK_ACTIVE: &str = "FallbackActive";
}

/// One metric value of one pod, with the time it was scraped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The value in milli-units (finite and ≥ 0 by construction).
    pub value: u64,
    /// When it was read.
    pub at: Millis,
}

/// The pod phases that matter to the autoscaler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not running yet (or no phase reported).
    Pending,
    /// Running.
    Running,
    /// The node lost touch with the pod.
    Unknown,
    /// Finished successfully.
    Succeeded,
    /// Finished with a failure.
    Failed,
}

/// One pod of the ingest Deployment, as the scraper saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInput {
    /// Pod name.
    pub name: String,
    /// Its phase.
    pub phase: Phase,
    /// Whether it has a deletionTimestamp.
    pub terminating: bool,
    /// Whether its Ready condition is True.
    pub ready: bool,
    /// Its creation time (newest pods go first among equal victims).
    pub created: Millis,
    /// The last valid queue depth sample (events accepted, not yet stored).
    pub queue: Option<Sample>,
    /// The last valid rate sample (accepted events per second).
    pub rate: Option<Sample>,
    /// Its current `controller.kubernetes.io/pod-deletion-cost`, if set.
    pub deletion_cost: Option<i32>,
}

/// Everything observed for one tick.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    /// The Deployment's `spec.replicas`, read through `/scale`.
    pub current: i32,
    /// The Deployment's pods.
    pub pods: Vec<PodInput>,
    /// Per mille of the last sync period Redis spent running flush scripts,
    /// when it could be measured.
    pub redis_busy_permille: Option<u32>,
    /// Whether the Deployment is rolling out a new template.
    pub rollout_in_progress: bool,
}

/// A past recommendation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recommendation {
    /// Replicas the metrics asked for.
    pub replicas: i32,
    /// When.
    pub at: Millis,
}

/// A past change of the replica count made by the autoscaler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScaleEvent {
    /// Replicas before.
    pub from: i32,
    /// Replicas after.
    pub to: i32,
    /// When the change was written.
    pub at: Millis,
}

/// What the autoscaler remembers between ticks (kept in the status).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// Recommendations inside the longer stabilization window.
    pub recommendations: Vec<Recommendation>,
    /// Scale changes inside the longest policy period.
    pub scale_events: Vec<ScaleEvent>,
    /// Ticks in a row without any valid metric.
    pub consecutive_failures: u32,
}

impl History {
    /// Records a scale change once it was written successfully.
    pub fn record_scale(&mut self, from: i32, to: i32, at: Millis) {
        self.scale_events.push(ScaleEvent { from, to, at });
        let excess = self.scale_events.len().saturating_sub(MAX_SCALE_EVENTS);
        self.scale_events.drain(..excess);
    }
}

/// A condition the autoscaler reports: status, reason, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// True or False.
    pub status: bool,
    /// PascalCase reason.
    pub reason: &'static str,
    /// For a person.
    pub message: String,
}

impl Verdict {
    fn yes(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: true,
            reason,
            message: message.into(),
        }
    }

    fn no(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: false,
            reason,
            message: message.into(),
        }
    }
}

/// What to do with the Deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Leave the replica count as it is.
    Hold,
    /// Patch `/scale` up to `Decision::desired`.
    ScaleUp,
    /// Write the deletion costs, wait until they are visible, then patch
    /// `/scale` down to `Decision::desired`.
    ScaleDown {
        /// The pods that should go, in order.
        victims: Vec<String>,
        /// Deletion-cost annotations to write first (only changed values).
        cost_writes: Vec<victim::CostWrite>,
    },
}

/// What one metric showed at this tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricReport {
    /// Sum over the pods with a valid sample, in milli-units.
    pub total: u128,
    /// The largest value of one pod, in milli-units.
    pub max: u64,
    /// Pods with a valid sample.
    pub ready: usize,
    /// Running pods without a valid sample.
    pub missing: usize,
    /// Pending pods.
    pub unready: usize,
    /// Replicas this metric asks for; None when it has no valid sample.
    pub replicas: Option<i32>,
}

/// The outcome of one tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The replica count before the tick.
    pub current: i32,
    /// The replica count to have after it (equal to `current` for a hold).
    pub desired: i32,
    /// What to do.
    pub action: Action,
    /// The history to keep (the caller appends the scale event once the
    /// patch succeeded).
    pub history: History,
    /// The queue-depth metric.
    pub queue: Option<MetricReport>,
    /// The events-per-second metric, when configured.
    pub rate: Option<MetricReport>,
    /// Condition `ScalingActive`.
    pub scaling_active: Verdict,
    /// Condition `ScalingLimited`.
    pub scaling_limited: Verdict,
    /// Condition `FallbackActive`.
    pub fallback_active: Verdict,
    /// Why, in one sentence (for events and logs).
    pub why: String,
}

impl Decision {
    /// Whether Redis saturation held back a scale-up at this tick.
    pub fn redis_saturated(&self) -> bool {
        self.scaling_limited.status && self.scaling_limited.reason == REDIS_SATURATED
    }
}

/// Reason: Redis is the bottleneck, more pods cannot help.
pub const REDIS_SATURATED: &str = "RedisSaturated";
/// Reason: a scale-down waits for a safer moment.
pub const SCALE_DOWN_DEFERRED: &str = "ScaleDownDeferred";

/// The lowest replica count the autoscaler itself goes to.
pub fn floor(spec: &AutoscalingSpec) -> i32 {
    spec.min_replicas.max(1)
}

/// The highest.
pub fn ceiling(spec: &AutoscalingSpec) -> i32 {
    spec.max_replicas.max(floor(spec))
}

fn tolerance(spec: &AutoscalingSpec) -> Tolerance {
    // Tolerances are schema-bounded to [0, 1); parts per million are exact
    // for every value a person writes.
    let ppm = |t: f64| (t.clamp(0.0, 1.0) * 1e6).round() as u128;
    Tolerance {
        up_ppm: ppm(spec.tolerance.scale_up),
        down_ppm: ppm(spec.tolerance.scale_down),
    }
}

/// Per-metric view of the pods: which have a valid value, which are
/// missing, which are unready, which are ignored.
fn values(
    pods: &[PodInput],
    now: Millis,
    max_age: Millis,
    pick: impl Fn(&PodInput) -> Option<Sample>,
) -> Vec<PodValue> {
    pods.iter()
        .filter_map(|pod| {
            if pod.terminating || matches!(pod.phase, Phase::Failed | Phase::Succeeded) {
                return None; // ignored: excluded from everything
            }
            Some(match pod.phase {
                Phase::Pending => PodValue::Unready,
                Phase::Unknown => PodValue::Missing,
                _ => match pick(pod) {
                    Some(s) if now.saturating_sub(s.at) < max_age => PodValue::Ready(s.value),
                    _ => PodValue::Missing,
                },
            })
        })
        .collect()
}

fn report(outcome: &MetricOutcome) -> MetricReport {
    MetricReport {
        total: outcome.total,
        max: outcome.max,
        ready: outcome.ready,
        missing: outcome.missing,
        unready: outcome.unready,
        replicas: outcome.replicas,
    }
}

/// Units (not milli-units) for messages, rounded down.
fn units(milli: u128) -> u128 {
    milli / u128::from(MILLI)
}

fn describe(name: &str, per_pod_unit: &str, m: &MetricReport, target: i64) -> String {
    let mut s = String::new();
    if m.ready == 0 {
        let _ = write!(s, "{name}: no pod has a valid sample");
        return s;
    }
    let avg = m.total / m.ready as u128;
    let _ = write!(
        s,
        "{name} {} over {} pods ({} {per_pod_unit} per pod, target {target})",
        units(m.total),
        m.ready,
        units(avg)
    );
    if m.missing > 0 {
        let _ = write!(s, ", {} without a sample", m.missing);
    }
    if m.unready > 0 {
        let _ = write!(s, ", {} pending", m.unready);
    }
    s
}

/// One tick of the autoscaler (docs/autoscaling.md steps 0–8).
pub fn decide(spec: &AutoscalingSpec, history: &History, inputs: &Inputs, now: Millis) -> Decision {
    let min = floor(spec);
    let max = ceiling(spec);
    let current = inputs.current;
    let mut history = history.clone();
    let mut decision = Decision {
        current,
        desired: current,
        action: Action::Hold,
        history: History::default(),
        queue: None,
        rate: None,
        scaling_active: Verdict::yes("ValidMetricFound", ""),
        scaling_limited: Verdict::no(
            "DesiredWithinRange",
            "the desired count is within the acceptable range",
        ),
        fallback_active: Verdict::no("MetricsAvailable", "no fallback in force"),
        why: String::new(),
    };

    // 0. A Deployment scaled to zero by hand stays there.
    if current <= 0 {
        decision.scaling_active = Verdict::no(
            "ScalingDisabled",
            "the Deployment has 0 replicas: autoscaling resumes once it is scaled up by hand",
        );
        decision.why = "scaled to zero by hand".into();
        decision.history = history;
        return decision;
    }
    if history.recommendations.is_empty() {
        history.recommendations.push(Recommendation {
            replicas: current,
            at: now,
        });
    }

    // 1. Out of bounds: back inside at once, no stabilization or rate limit.
    if current > max || current < min {
        let desired = current.clamp(min, max);
        decision.scaling_limited = if current > max {
            Verdict::yes(
                "TooManyReplicas",
                format!("{current} replicas is more than maxReplicas {max}"),
            )
        } else {
            Verdict::yes(
                "TooFewReplicas",
                format!("{current} replicas is less than minReplicas {min}"),
            )
        };
        decision.scaling_active = Verdict::yes(
            "ValidMetricFound",
            "the replica count is brought back within minReplicas..maxReplicas",
        );
        decision.why = decision.scaling_limited.message.clone();
        decision.desired = desired;
        decision.action = if desired > current {
            Action::ScaleUp
        } else {
            victim::scale_down(&inputs.pods, current - desired)
        };
        decision.history = history;
        return decision;
    }

    // 2–3. Per metric.
    let tol = tolerance(spec);
    let max_age = Millis::from(spec.max_sample_age_seconds()) * 1000;
    let queue_target =
        u128::try_from(spec.target_queue_depth_per_pod.max(1)).unwrap_or(1) * u128::from(MILLI);
    let queue = metric::replicas(
        &values(&inputs.pods, now, max_age, |p| p.queue),
        current,
        queue_target,
        tol,
    );
    let rate = spec.target_events_per_second_per_pod.map(|t| {
        let target = u128::try_from(t.max(1)).unwrap_or(1) * u128::from(MILLI);
        metric::replicas(
            &values(&inputs.pods, now, max_age, |p| p.rate),
            current,
            target,
            tol,
        )
    });
    decision.queue = Some(report(&queue));
    decision.rate = rate.as_ref().map(report);
    let mut why = describe(
        "queue depth",
        "events",
        decision.queue.as_ref().expect("set above"),
        spec.target_queue_depth_per_pod,
    );
    if let (Some(r), Some(t)) = (&decision.rate, spec.target_events_per_second_per_pod) {
        why.push_str("; ");
        why.push_str(&describe("events/s", "events/s", r, t));
    }

    // 4. Combine by max; never scale down on partial information.
    let valid: Vec<i32> = [Some(&queue), rate.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|m| m.replicas)
        .collect();
    let any_invalid =
        queue.replicas.is_none() || rate.as_ref().is_some_and(|r| r.replicas.is_none());
    let mut desired;
    let mut saturation: Option<Verdict> = None;
    if let Some(&best) = valid.iter().max() {
        history.consecutive_failures = 0;
        desired = best;
        decision.scaling_active = Verdict::yes("ValidMetricFound", why.clone());
        let _ = write!(why, ": {desired} replicas wanted");
        if any_invalid && desired < current {
            desired = current;
            why.push_str(
                ", held: one metric has no valid sample, so no scale-down on partial data",
            );
        }
        // 4b. Redis is the bottleneck: more pods cannot raise throughput.
        if let Some(busy) = inputs.redis_busy_permille
            && spec.redis_saturation.enabled
            && busy
                >= u32::try_from(spec.redis_saturation.busy_percent.clamp(1, 100)).unwrap_or(100)
                    * 10
            && desired > current
        {
            let message = format!(
                "Redis spent {}.{}% of the last {} s running flush scripts (threshold {}%): \
                 more ingest pods cannot raise throughput, so {current} replicas are kept \
                 instead of {desired}; give Redis a faster core, or more shards \
                 (spec.redis.managed.shards, a Redis Cluster)",
                busy / 10,
                busy % 10,
                spec.sync_period_seconds,
                spec.redis_saturation.busy_percent
            );
            why = format!("{why}; {message}");
            saturation = Some(Verdict::yes(REDIS_SATURATED, message));
            desired = current;
        }
    } else {
        // 5. No valid metric at all.
        history.consecutive_failures = history.consecutive_failures.saturating_add(1);
        let failures = history.consecutive_failures;
        let fallback = spec
            .fallback
            .as_ref()
            .filter(|f| i64::from(failures) > i64::from(f.failure_threshold));
        let Some(fallback) = fallback else {
            // Pods still starting are not a failure to read metrics.
            let starting = queue.missing == 0;
            decision.scaling_active = if starting {
                Verdict::no(
                    "PodsStarting",
                    format!("no ingest pod is running yet: holding {current} replicas"),
                )
            } else {
                Verdict::no(
                    "FailedGetMetrics",
                    format!(
                        "no valid metric from any pod ({failures} ticks in a row): holding {current} replicas; {why}"
                    ),
                )
            };
            decision.why = format!("no valid metric: holding {current} replicas");
            decision.history = history;
            return decision;
        };
        desired = match fallback.behavior {
            FallbackBehavior::Static => fallback.replicas,
            FallbackBehavior::CurrentReplicas => current,
            FallbackBehavior::CurrentReplicasIfHigher => current.max(fallback.replicas),
            FallbackBehavior::CurrentReplicasIfLower => current.min(fallback.replicas),
        };
        let message = format!(
            "no valid metric for {failures} ticks (failureThreshold {}): fallback to {desired} replicas",
            fallback.failure_threshold
        );
        decision.scaling_active = Verdict::no("FailedGetMetrics", message.clone());
        decision.fallback_active = Verdict::yes("FallbackApplied", message.clone());
        why = message;
    }

    // 6. Stabilize, and remember this recommendation.
    let stabilized = behavior::stabilize(&mut history, &spec.behavior, desired, current, now);
    if stabilized != desired {
        let _ = write!(why, "; the stabilization window keeps {stabilized}");
    }

    // 7. Rate limits and bounds.
    let limited = behavior::limit(&history, &spec.behavior, stabilized, current, min, max, now);
    behavior::prune_scale_events(&mut history, &spec.behavior, now);
    let mut result = limited.replicas.clamp(min, max);
    if let Some(verdict) = limited.verdict {
        let _ = write!(why, "; {}", verdict.message);
        decision.scaling_limited = verdict;
    } else if let Some(verdict) = saturation {
        decision.scaling_limited = verdict;
    }

    // 8. Act.
    decision.action = if result > current {
        Action::ScaleUp
    } else if result < current {
        match victim::deferral(&inputs.pods, inputs.rollout_in_progress) {
            Some(reason) => {
                let message = format!("scale-down to {result} deferred: {reason}");
                let _ = write!(why, "; {message}");
                decision.scaling_limited = Verdict::yes(SCALE_DOWN_DEFERRED, message);
                result = current;
                Action::Hold
            }
            None => victim::scale_down(&inputs.pods, current - result),
        }
    } else {
        Action::Hold
    };
    decision.desired = result;
    decision.why = why;
    decision.history = history;
    decision
}

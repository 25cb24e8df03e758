//! The operator's Prometheus metrics, in one struct.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Reconcile counts, failures by reason, durations, child writes, and
/// leadership.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `telemetry_operator_reconciliations_total{result}`: ok | error.
    pub reconciliations: IntCounterVec,
    /// `telemetry_operator_reconcile_failures_total{reason}`.
    pub failures: IntCounterVec,
    /// `telemetry_operator_reconcile_duration_seconds`.
    pub duration: Histogram,
    /// `telemetry_operator_child_writes_total{kind,operation}`: applies that
    /// changed (created, updated) and deletes of children. Zero while nothing
    /// drifts: the operator makes no spurious writes.
    pub child_writes: IntCounterVec,
    /// `telemetry_operator_status_writes_total`.
    pub status_writes: IntCounter,
    /// The autoscaler's metrics.
    pub autoscaler: AutoscalerMetrics,
    /// `telemetry_operator_leader`: 1 while this replica does the leader's
    /// work (holds the Lease, or runs without leader election), else 0.
    pub leader: IntGauge,
    /// `telemetry_operator_leader_transitions_total{transition}`: acquired,
    /// released (clean shutdown) or lost, by this replica.
    pub leader_transitions: IntCounterVec,
    /// `telemetry_operator_pipeline_ready{namespace,pipeline}`: 1 while the
    /// pipeline's Ready condition is True, else 0; only on the leader, and
    /// only for pipelines that exist ([`Metrics::sync_pipelines`]).
    pub pipeline_ready: IntGaugeVec,
    /// The pipelines that have per-pipeline series, so that a deleted one's
    /// series are removed.
    known: Arc<Mutex<BTreeSet<(String, String)>>>,
}

/// What the autoscaler measures and decides, per pipeline
/// (`namespace`, `pipeline` labels) where it makes sense.
#[derive(Clone)]
pub struct AutoscalerMetrics {
    /// `telemetry_operator_autoscaler_min_replicas`: the spec's bound.
    pub min_replicas: IntGaugeVec,
    /// `telemetry_operator_autoscaler_max_replicas`: the spec's bound (an
    /// alert compares the desired replicas with it).
    pub max_replicas: IntGaugeVec,
    /// `telemetry_operator_autoscaler_desired_replicas`.
    pub desired_replicas: IntGaugeVec,
    /// `telemetry_operator_autoscaler_current_replicas`.
    pub current_replicas: IntGaugeVec,
    /// `telemetry_operator_autoscaler_queue_depth`: summed over pods.
    pub queue_depth: IntGaugeVec,
    /// `telemetry_operator_autoscaler_redis_busy_permille`.
    pub redis_busy_permille: IntGaugeVec,
    /// `telemetry_operator_autoscaler_redis_saturated`: 1 while a scale-up
    /// is held because Redis is the bottleneck.
    pub redis_saturated: IntGaugeVec,
    /// `telemetry_operator_autoscaler_drain_rate_events_per_second`: the
    /// slowest rate a backlogged pod stored at, from the last tick that
    /// measured one; the derived shutdown timeout is based on it.
    pub drain_rate: IntGaugeVec,
    /// `telemetry_operator_autoscaler_scrape_errors_total{reason}`.
    pub scrape_errors: IntCounterVec,
    /// `telemetry_operator_autoscaler_scrape_duration_seconds`: one tick's
    /// scrape of every pod of a pipeline.
    pub scrape_duration: Histogram,
    /// `telemetry_operator_autoscaler_decisions_total{result}`: hold,
    /// scale_up, scale_down, deferred, no_metrics, disabled, error.
    pub decisions: IntCounterVec,
}

impl AutoscalerMetrics {
    fn new(registry: &Registry) -> crate::Result<Self> {
        let pipeline = ["namespace", "pipeline"];
        let gauge = |name: &str, help: &str| -> crate::Result<IntGaugeVec> {
            let g = IntGaugeVec::new(Opts::new(name, help), &pipeline)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str, labels: &[&str]| -> crate::Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let scrape_duration = Histogram::with_opts(
            HistogramOpts::new(
                "telemetry_operator_autoscaler_scrape_duration_seconds",
                "Time to scrape every ingest pod of one pipeline in one tick",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        registry.register(Box::new(scrape_duration.clone()))?;
        Ok(Self {
            min_replicas: gauge(
                "telemetry_operator_autoscaler_min_replicas",
                "spec.autoscaling.minReplicas of the pipeline",
            )?,
            max_replicas: gauge(
                "telemetry_operator_autoscaler_max_replicas",
                "spec.autoscaling.maxReplicas of the pipeline",
            )?,
            desired_replicas: gauge(
                "telemetry_operator_autoscaler_desired_replicas",
                "Ingest replicas the autoscaler decided on at its last tick",
            )?,
            current_replicas: gauge(
                "telemetry_operator_autoscaler_current_replicas",
                "Ingest replicas (the Deployment's spec.replicas) at the last tick",
            )?,
            queue_depth: gauge(
                "telemetry_operator_autoscaler_queue_depth",
                "Events accepted but not yet stored, summed over the ingest pods at the last tick",
            )?,
            redis_busy_permille: gauge(
                "telemetry_operator_autoscaler_redis_busy_permille",
                "Per mille of the last sync period Redis spent running the pods' flush scripts",
            )?,
            redis_saturated: gauge(
                "telemetry_operator_autoscaler_redis_saturated",
                "1 while a scale-up is held because Redis, not the ingest pods, is the bottleneck",
            )?,
            drain_rate: gauge(
                "telemetry_operator_autoscaler_drain_rate_events_per_second",
                "Events per second the slowest backlogged ingest pod stored, at the last tick that measured a backlog",
            )?,
            scrape_errors: counter(
                "telemetry_operator_autoscaler_scrape_errors_total",
                "Failed scrapes of an ingest pod's /metrics, by reason",
                &["reason"],
            )?,
            scrape_duration,
            decisions: counter(
                "telemetry_operator_autoscaler_decisions_total",
                "Autoscaler ticks, by what they decided",
                &["result"],
            )?,
        })
    }
}

impl AutoscalerMetrics {
    /// Removes the pipeline's series: it was deleted, or is no longer
    /// autoscaled.
    pub fn forget(&self, namespace: &str, pipeline: &str) {
        let labels = [namespace, pipeline];
        for gauge in [
            &self.min_replicas,
            &self.max_replicas,
            &self.desired_replicas,
            &self.current_replicas,
            &self.queue_depth,
            &self.redis_busy_permille,
            &self.redis_saturated,
            &self.drain_rate,
        ] {
            // Absent series are fine: not every pipeline has every one.
            let _ = gauge.remove_label_values(&labels);
        }
    }
}

/// A change of this replica's leadership, the label of
/// `telemetry_operator_leader_transitions_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaderTransition {
    /// It took the Lease and started the leader's work.
    Acquired,
    /// It gave the Lease up on a clean shutdown.
    Released,
    /// It stopped holding the Lease while leading.
    Lost,
}

impl LeaderTransition {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaderTransition::Acquired => "acquired",
            LeaderTransition::Released => "released",
            LeaderTransition::Lost => "lost",
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them in a fresh registry.
    pub fn new() -> crate::Result<Self> {
        let registry = Registry::new();
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "telemetry_operator_reconciliations_total",
                "Reconciliations of TelemetryPipelines, by result",
            ),
            &["result"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "telemetry_operator_reconcile_failures_total",
                "Failed reconciliations, by reason",
            ),
            &["reason"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "telemetry_operator_reconcile_duration_seconds",
                "Time spent in one reconciliation",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let child_writes = IntCounterVec::new(
            Opts::new(
                "telemetry_operator_child_writes_total",
                "Children created, changed or deleted, by kind and operation",
            ),
            &["kind", "operation"],
        )?;
        let status_writes = IntCounter::with_opts(Opts::new(
            "telemetry_operator_status_writes_total",
            "TelemetryPipeline status updates",
        ))?;
        let leader = IntGauge::with_opts(Opts::new(
            "telemetry_operator_leader",
            "1 while this replica is the leader and reconciles, else 0",
        ))?;
        let leader_transitions = IntCounterVec::new(
            Opts::new(
                "telemetry_operator_leader_transitions_total",
                "Times this replica acquired, released or lost the leader-election Lease",
            ),
            &["transition"],
        )?;
        registry.register(Box::new(reconciliations.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(child_writes.clone()))?;
        registry.register(Box::new(status_writes.clone()))?;
        let autoscaler = AutoscalerMetrics::new(&registry)?;
        let pipeline_ready = IntGaugeVec::new(
            Opts::new(
                "telemetry_operator_pipeline_ready",
                "1 while the pipeline's Ready condition is True, else 0 (reported by the leader)",
            ),
            &["namespace", "pipeline"],
        )?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(leader_transitions.clone()))?;
        registry.register(Box::new(pipeline_ready.clone()))?;
        Ok(Self {
            registry,
            reconciliations,
            failures,
            duration,
            child_writes,
            status_writes,
            autoscaler,
            leader,
            leader_transitions,
            pipeline_ready,
            known: Arc::default(),
        })
    }

    /// Brings the per-pipeline series in line with the pipelines that exist:
    /// `telemetry_operator_pipeline_ready` for each, and no series at all for
    /// the ones that are gone (their autoscaler gauges included).
    pub fn sync_pipelines(&self, pipelines: &[Arc<crate::TelemetryPipeline>]) {
        let live: BTreeSet<(String, String)> = pipelines
            .iter()
            .map(|tp| (tp.namespace().unwrap_or_default(), tp.name_any()))
            .collect();
        let mut known = self.known.lock().expect("not poisoned");
        for (ns, name) in known.difference(&live) {
            let _ = self.pipeline_ready.remove_label_values(&[ns, name]);
            self.autoscaler.forget(ns, name);
        }
        for tp in pipelines {
            let ready = tp
                .condition(crate::status::READY)
                .is_some_and(|c| c.status == "True");
            self.pipeline_ready
                .with_label_values(&[&tp.namespace().unwrap_or_default(), &tp.name_any()])
                .set(i64::from(ready));
        }
        *known = live;
    }

    /// Removes every per-pipeline series: this replica stopped leading.
    pub fn forget_pipelines(&self) {
        self.sync_pipelines(&[]);
    }

    /// Counts one failed reconciliation under its reason.
    pub fn record_failure(&self, reason: &str) {
        self.reconciliations.with_label_values(&["error"]).inc();
        self.failures.with_label_values(&[reason]).inc();
    }

    /// Records a change of leadership: acquiring the Lease sets the gauge to
    /// 1, releasing or losing it to 0.
    pub fn record_leadership(&self, transition: LeaderTransition) {
        self.leader
            .set(i64::from(transition == LeaderTransition::Acquired));
        self.leader_transitions
            .with_label_values(&[transition.as_str()])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding of gathered metrics cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_metrics_use_prometheus_names() {
        let m = Metrics::new().unwrap();
        m.reconciliations.with_label_values(&["ok"]).inc();
        m.failures.with_label_values(&["Conflict"]).inc();
        m.duration.observe(0.02);
        let text = m.render();
        assert!(
            text.contains("telemetry_operator_reconciliations_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("telemetry_operator_reconcile_failures_total{reason=\"Conflict\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("telemetry_operator_reconcile_duration_seconds_count 1"),
            "{text}"
        );
    }

    #[test]
    fn leadership_sets_the_gauge_and_counts_transitions() {
        let m = Metrics::new().unwrap();
        assert!(m.render().contains("telemetry_operator_leader 0"));
        m.record_leadership(LeaderTransition::Acquired);
        let text = m.render();
        assert!(text.contains("telemetry_operator_leader 1"), "{text}");
        assert!(
            text.contains("telemetry_operator_leader_transitions_total{transition=\"acquired\"} 1"),
            "{text}"
        );
        m.record_leadership(LeaderTransition::Released);
        let text = m.render();
        assert!(text.contains("telemetry_operator_leader 0"), "{text}");
        assert!(
            text.contains("telemetry_operator_leader_transitions_total{transition=\"released\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn per_pipeline_series_follow_the_pipelines_that_exist() {
        let m = Metrics::new().unwrap();
        let named = |name: &str, ready: Option<&str>| {
            let mut tp = crate::TelemetryPipeline::test();
            tp.metadata.name = Some(name.into());
            if let Some(status) = ready {
                tp.status = Some(crate::TelemetryPipelineStatus {
                    conditions: vec![
                        serde_json::from_value(serde_json::json!({
                            "type": "Ready", "status": status, "reason": "R", "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"
                        }))
                        .unwrap(),
                    ],
                    ..Default::default()
                });
            }
            Arc::new(tp)
        };
        let a = named("a", Some("True"));
        let b = named("b", Some("False"));
        let c = named("c", None);
        m.sync_pipelines(&[a.clone(), b.clone(), c.clone()]);
        m.autoscaler
            .max_replicas
            .with_label_values(&["ns", "b"])
            .set(4);
        let text = m.render();
        for line in [
            r#"telemetry_operator_pipeline_ready{namespace="ns",pipeline="a"} 1"#,
            r#"telemetry_operator_pipeline_ready{namespace="ns",pipeline="b"} 0"#,
            r#"telemetry_operator_pipeline_ready{namespace="ns",pipeline="c"} 0"#,
            r#"telemetry_operator_autoscaler_max_replicas{namespace="ns",pipeline="b"} 4"#,
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }

        // b is deleted: its series go, autoscaler gauges included.
        m.sync_pipelines(&[a.clone(), c.clone()]);
        let text = m.render();
        assert!(!text.contains(r#"pipeline="b""#), "{text}");
        assert!(text.contains(r#"pipeline="a"} 1"#), "{text}");

        // Leadership ends: no per-pipeline series at all.
        m.forget_pipelines();
        assert!(!m.render().contains("pipeline="), "{}", m.render());
    }
}

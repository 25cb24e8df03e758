//! The operator's Prometheus metrics, in one struct.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

/// Reconcile counts, failures by reason, durations, and child writes.
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
        registry.register(Box::new(reconciliations.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(child_writes.clone()))?;
        registry.register(Box::new(status_writes.clone()))?;
        Ok(Self {
            registry,
            reconciliations,
            failures,
            duration,
            child_writes,
            status_writes,
        })
    }

    /// The Prometheus text exposition of every metric.
    /// Counts one failed reconciliation under its reason.
    pub fn record_failure(&self, reason: &str) {
        self.reconciliations.with_label_values(&["error"]).inc();
        self.failures.with_label_values(&[reason]).inc();
    }

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
}

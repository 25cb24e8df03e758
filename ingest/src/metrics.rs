//! Prometheus metrics of the ingest server, in one struct.
//!
//! `telemetry_ingest_queue_depth` is what the operator's autoscaler reads: the
//! events accepted by a handler but not yet stored (or failed). It is read from
//! the queue's semaphore when `/metrics` is scraped, so it is never stale.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    pub received: IntCounterVec,
    pub accepted: IntCounter,
    pub rejected: IntCounterVec,
    pub duplicates: IntCounter,
    pub dropped: IntCounter,
    pub queue_depth: IntGauge,
    pub queue_capacity: IntGauge,
    pub flush_duration: Histogram,
    pub stored_latency: Histogram,
    pub flush_batch_size: Histogram,
    pub flush_script: Histogram,
    pub flush_cost_factor: Gauge,
    pub flush_retries: IntCounter,
    pub flush_failures: IntCounter,
    pub redis_errors: IntCounterVec,
    pub redis_up: IntGauge,
    pub draining: IntGauge,
    pub backpressure: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub auth: crate::auth::AuthMetrics,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        Metrics {
            received: counter_vec(
                "telemetry_ingest_received_total",
                "Events received, valid or not, by transport.",
                &["transport"],
            ),
            accepted: counter(
                "telemetry_ingest_accepted_total",
                "Events stored in Redis and acknowledged.",
            ),
            rejected: counter_vec(
                "telemetry_ingest_rejected_total",
                "Events refused by validation, by reason.",
                &["reason"],
            ),
            duplicates: counter(
                "telemetry_ingest_duplicates_total",
                "Events acknowledged as duplicates of an already stored event id.",
            ),
            dropped: counter(
                "telemetry_ingest_dropped_total",
                "Events acknowledged but not aggregated because a filter dropped them.",
            ),
            queue_depth: gauge(
                "telemetry_ingest_queue_depth",
                "Events accepted by a handler and not yet stored.",
            ),
            queue_capacity: gauge(
                "telemetry_ingest_queue_capacity",
                "Capacity of the queue in events.",
            ),
            flush_duration: histogram(
                "telemetry_ingest_flush_duration_seconds",
                "Time to apply one flush to Redis, retries included.",
                prometheus::exponential_buckets(0.0002, 2.0, 16).expect("valid buckets"),
            ),
            stored_latency: histogram(
                "telemetry_ingest_stored_latency_seconds",
                "Time from a chunk of events entering the queue to its flush being answered \
                 (queue wait and flush): the server's share of ack latency.",
                prometheus::exponential_buckets(0.0002, 2.0, 16).expect("valid buckets"),
            ),
            flush_batch_size: histogram(
                "telemetry_ingest_flush_batch_size",
                "Events per flush.",
                prometheus::exponential_buckets(1.0, 2.0, 14).expect("valid buckets"),
            ),
            flush_script: histogram(
                "telemetry_ingest_flush_script_seconds",
                "Run time of each flush script inside Redis (what a query can wait behind).",
                prometheus::exponential_buckets(0.0001, 2.0, 14).expect("valid buckets"),
            ),
            flush_cost_factor: {
                let g = Gauge::new(
                    "telemetry_ingest_flush_cost_factor",
                    "Measured / estimated Redis time of recent flushes; flushes are cut where \
                     the estimate times this reaches --flush-budget-us.",
                )
                .expect("valid metric");
                registry
                    .register(Box::new(g.clone()))
                    .expect("unique metric");
                g.set(1.0);
                g
            },
            flush_retries: counter(
                "telemetry_ingest_flush_retries_total",
                "Flushes retried after a Redis error.",
            ),
            flush_failures: counter(
                "telemetry_ingest_flush_failures_total",
                "Flushes given up on; their events were answered UNAVAILABLE / 503.",
            ),
            redis_errors: counter_vec(
                "telemetry_ingest_redis_errors_total",
                "Redis errors, by kind (connection, command).",
                &["kind"],
            ),
            redis_up: gauge(
                "telemetry_ingest_redis_up",
                "1 when the last Redis command succeeded.",
            ),
            draining: gauge(
                "telemetry_ingest_draining",
                "1 while the server drains for shutdown.",
            ),
            backpressure: counter_vec(
                "telemetry_ingest_backpressure_total",
                "Calls refused because the queue was full, by transport.",
                &["transport"],
            ),
            config_reloads: counter_vec(
                "telemetry_ingest_config_reloads_total",
                "Aggregation config reloads, by result.",
                &["result"],
            ),
            auth: crate::auth::AuthMetrics::register(&registry),
            registry,
        }
    }

    /// Registers a metric defined elsewhere (e.g. only when a feature is
    /// on), returning it.
    pub fn register<C: prometheus::core::Collector + Clone + 'static>(&self, metric: C) -> C {
        self.registry
            .register(Box::new(metric.clone()))
            .expect("unique metric");
        metric
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

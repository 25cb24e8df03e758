//! The metrics of API key checks, registered with the server's
//! [`Metrics`](crate::metrics::Metrics). Labels carry key names from the
//! file, never a presented value: their number is bounded by the file.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

use super::check::Denied;

/// The `key` label of a call that named no known key.
pub const NO_KEY: &str = "";

#[derive(Clone, Debug)]
pub struct AuthMetrics {
    /// `telemetry_ingest_auth_requests_total{key, result}`.
    pub requests: IntCounterVec,
    /// `telemetry_ingest_events_by_key_total{key}`.
    pub events: IntCounterVec,
    /// `telemetry_ingest_api_keys_reloads_total{result}`.
    pub reloads: IntCounterVec,
    /// `telemetry_ingest_api_keys`.
    pub loaded: IntGauge,
}

impl AuthMetrics {
    pub fn register(registry: &Registry) -> AuthMetrics {
        let vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let loaded = IntGauge::new(
            "telemetry_ingest_api_keys",
            "API keys in force (from --api-keys-file); 0 when auth is off.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(loaded.clone()))
            .expect("unique metric");
        AuthMetrics {
            requests: vec(
                "telemetry_ingest_auth_requests_total",
                "Calls checked for an API key, by key name (empty when no known key was \
                 presented) and result (ok, unauthenticated, forbidden).",
                &["key", "result"],
            ),
            events: vec(
                "telemetry_ingest_events_by_key_total",
                "Events stored and acknowledged, by the name of the API key that sent them.",
                &["key"],
            ),
            reloads: vec(
                "telemetry_ingest_api_keys_reloads_total",
                "Reloads of the API key file, by result (ok, invalid); an invalid file \
                 keeps the keys in force.",
                &["result"],
            ),
            loaded,
        }
    }

    pub fn allowed(&self, key: &str) {
        self.requests.with_label_values(&[key, "ok"]).inc();
    }

    pub fn denied(&self, denied: &Denied) {
        let (key, result) = match denied {
            Denied::Scope { key, .. } => (key.as_str(), "forbidden"),
            _ => (NO_KEY, "unauthenticated"),
        };
        self.requests.with_label_values(&[key, result]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keyfile::Scope;

    #[test]
    fn labels_are_key_names_and_results_never_presented_text() {
        let registry = Registry::new();
        let m = AuthMetrics::register(&registry);
        m.allowed("sensors");
        m.denied(&Denied::Unknown);
        m.denied(&Denied::Missing);
        m.denied(&Denied::Scope {
            key: "dash".into(),
            needs: Scope::Write,
        });
        let get = |key: &str, result: &str| m.requests.with_label_values(&[key, result]).get();
        assert_eq!(get("sensors", "ok"), 1);
        assert_eq!(get(NO_KEY, "unauthenticated"), 2);
        assert_eq!(get("dash", "forbidden"), 1);
        let families = registry.gather();
        let series: usize = families
            .iter()
            .filter(|f| f.name() == "telemetry_ingest_auth_requests_total")
            .map(|f| f.get_metric().len())
            .sum();
        assert_eq!(
            series, 3,
            "one series per (name, result), none per presented value"
        );
    }
}

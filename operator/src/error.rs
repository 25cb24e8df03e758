//! The crate's one error type, split into transient and permanent failures.

use std::time::Duration;

/// What failed while reconciling a pipeline or running the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("{action}: {source}")]
    Kube {
        /// What the operator was doing, e.g. "apply Deployment ns/x".
        action: String,
        #[source]
        source: kube::Error,
    },

    /// `spec.aggregation` breaks a rule the schema cannot express.
    #[error("spec.aggregation is invalid: {0}")]
    InvalidAggregation(#[from] telemetry_config::Error),

    /// The managed Redis' Secret exists but holds no usable password.
    #[error("Secret {name} has no '{key}' key; delete the Secret to have a new password generated")]
    RedisSecretInvalid { name: String, key: String },

    /// The TelemetryPipeline object lacks a namespace, name or uid.
    #[error("the TelemetryPipeline has no {0}")]
    MissingObjectKey(&'static str),

    /// A pod's deletion-cost annotation did not read back as written, so a
    /// scale-down could remove the wrong pod; the tick is retried.
    #[error("the deletion cost written to pod {pod} is not visible yet")]
    DeletionCostNotVisible { pod: String },

    /// The HTTP server could not bind or serve.
    #[error("HTTP server: {0}")]
    Http(#[source] std::io::Error),

    /// The HTTP client that scrapes the ingest pods could not be built.
    #[error("HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),

    /// A metric could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),

    /// The leader-election Lease could not be read, created or released.
    #[error("{action}: {source}")]
    Lease {
        /// What the operator was doing, e.g. "take part in the election for
        /// Lease ns/telemetry-operator".
        action: String,
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },

    /// A command to a node of a managed Redis Cluster failed while forming,
    /// healing or resharding it; the next round observes again and retries.
    #[error("Redis Cluster node {node}: {action}: {source}")]
    RedisCluster {
        /// `host:port` of the node.
        node: String,
        /// The command, e.g. "CLUSTER SETSLOT MIGRATING".
        action: &'static str,
        #[source]
        source: redis::RedisError,
    },

    /// The address of a managed Redis Cluster's pod does not resolve.
    #[error("Redis Cluster pod {addr} does not resolve: {detail}")]
    RedisClusterAddress { addr: String, detail: String },

    /// This replica led and no longer holds the Lease: it stopped reconciling
    /// at once, and exits so that it comes back as a follower.
    #[error("lost the Lease {lease}: {reason}; stopped reconciling")]
    LeadershipLost {
        /// `namespace/name` of the Lease.
        lease: String,
        /// How the loss showed.
        reason: &'static str,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a kube error with what the operator was doing.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            action: action.into(),
            source,
        }
    }

    /// Whether retrying cannot help until someone changes the spec or the
    /// cluster: such errors become a `Degraded` condition instead of a
    /// hot retry loop.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Kube { source, .. } => match source {
                // 400 Bad Request, 403 Forbidden (RBAC), 422 Invalid: the
                // apiserver rejected what we sent, and will again.
                kube::Error::Api(status) => matches!(status.code, 400 | 403 | 422),
                _ => false,
            },
            Error::InvalidAggregation(_)
            | Error::RedisSecretInvalid { .. }
            | Error::MissingObjectKey(_) => true,
            Error::Http(_)
            | Error::HttpClient(_)
            | Error::Metrics(_)
            | Error::DeletionCostNotVisible { .. }
            | Error::Lease { .. }
            | Error::RedisCluster { .. }
            | Error::RedisClusterAddress { .. }
            | Error::LeadershipLost { .. } => false,
        }
    }

    /// A short label for metrics and condition reasons (PascalCase).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } => match source {
                kube::Error::Api(status) => match status.code {
                    403 => "Forbidden",
                    409 => "Conflict",
                    400 | 422 => "ApplyRejected",
                    429 => "Throttled",
                    500..=599 => "ApiServerError",
                    _ => "ApiError",
                },
                _ => "ApiUnreachable",
            },
            Error::InvalidAggregation(_) => "InvalidAggregation",
            Error::RedisSecretInvalid { .. } => "RedisSecretInvalid",
            Error::MissingObjectKey(_) => "InvalidObject",
            Error::DeletionCostNotVisible { .. } => "DeletionCostNotVisible",
            Error::Http(_) => "HttpServer",
            Error::HttpClient(_) => "HttpClient",
            Error::Metrics(_) => "Metrics",
            Error::Lease { .. } => "Lease",
            Error::LeadershipLost { .. } => "LeadershipLost",
            Error::RedisCluster { .. } => "RedisCluster",
            Error::RedisClusterAddress { .. } => "RedisClusterAddress",
        }
    }
}

/// Backoff for transient failures: 1 s doubling per consecutive failure, at
/// most 5 minutes.
pub fn backoff(consecutive_failures: u32) -> Duration {
    const MAX: Duration = Duration::from_secs(300);
    let exp = consecutive_failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> Error {
        let status = kube::core::Status::failure("boom", "Reason").with_code(code);
        Error::kube("apply", kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn rejected_requests_are_permanent_and_server_trouble_is_transient() {
        assert!(api(422).is_permanent());
        assert!(api(400).is_permanent());
        assert!(api(403).is_permanent());
        assert!(!api(409).is_permanent());
        assert!(!api(500).is_permanent());
        assert!(!api(429).is_permanent());
        assert_eq!(api(422).reason(), "ApplyRejected");
        assert_eq!(api(409).reason(), "Conflict");
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(9), Duration::from_secs(256));
        assert_eq!(backoff(10), Duration::from_secs(300));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
    }
}

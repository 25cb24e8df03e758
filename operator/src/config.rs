//! Command-line flags (each also an environment variable) and the settings
//! the reconciler uses.

use std::net::SocketAddr;
use std::time::Duration;

/// Where /healthz, /readyz and /metrics are served.
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:8080";
/// The ingest image used when a pipeline does not name one: the release that
/// matches this operator.
pub const DEFAULT_INGEST_IMAGE: &str = concat!(
    "ghcr.io/telemetry-pipeline/telemetry-ingest:",
    env!("CARGO_PKG_VERSION")
);
/// How often every pipeline is re-checked even without a watch event.
pub const DEFAULT_RESYNC_SECONDS: u64 = 300;
/// How many pipelines are reconciled at once.
pub const DEFAULT_CONCURRENCY: u16 = 4;
/// Log format.
pub const DEFAULT_LOG_FORMAT: &str = "plain";
/// How many ingest pods the autoscaler scrapes at once.
pub const DEFAULT_SCRAPE_PARALLELISM: usize = crate::scrape::DEFAULT_PARALLELISM;

/// `telemetry-operator` flags.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "telemetry-operator",
    version,
    about = "Runs TelemetryPipelines: a Redis and a Deployment of ingest pods per resource"
)]
pub struct Args {
    /// Address of the HTTP server with /healthz, /readyz and /metrics.
    #[arg(long, env = "TELEMETRY_OPERATOR_HTTP_LISTEN", default_value = DEFAULT_HTTP_LISTEN)]
    pub http_listen: SocketAddr,

    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "TELEMETRY_OPERATOR_NAMESPACE")]
    pub namespace: Option<String>,

    /// Ingest image for pipelines that do not set spec.ingest.image.
    #[arg(long, env = "TELEMETRY_OPERATOR_INGEST_IMAGE", default_value = DEFAULT_INGEST_IMAGE)]
    pub ingest_image: String,

    /// Seconds between full re-checks of every pipeline.
    #[arg(long, env = "TELEMETRY_OPERATOR_RESYNC_SECONDS", default_value_t = DEFAULT_RESYNC_SECONDS)]
    pub resync_seconds: u64,

    /// Pipelines reconciled concurrently.
    #[arg(long, env = "TELEMETRY_OPERATOR_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: u16,

    /// Ingest pods whose /metrics the autoscaler reads at once.
    #[arg(long, env = "TELEMETRY_OPERATOR_SCRAPE_PARALLELISM", default_value_t = DEFAULT_SCRAPE_PARALLELISM)]
    pub scrape_parallelism: usize,

    /// Log format: plain or json.
    #[arg(long, env = "TELEMETRY_OPERATOR_LOG_FORMAT", default_value = DEFAULT_LOG_FORMAT, value_parser = ["plain", "json"])]
    pub log_format: String,
}

/// What the controller needs from the flags.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch only this namespace.
    pub namespace: Option<String>,
    /// Default ingest image.
    pub ingest_image: String,
    /// Periodic re-check interval.
    pub resync: Duration,
    /// Concurrent reconciles.
    pub concurrency: u16,
    /// Concurrent scrapes of ingest pods.
    pub scrape_parallelism: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: None,
            ingest_image: DEFAULT_INGEST_IMAGE.to_string(),
            resync: Duration::from_secs(DEFAULT_RESYNC_SECONDS),
            concurrency: DEFAULT_CONCURRENCY,
            scrape_parallelism: DEFAULT_SCRAPE_PARALLELISM,
        }
    }
}

impl From<&Args> for Settings {
    fn from(args: &Args) -> Self {
        Self {
            namespace: args.namespace.clone(),
            ingest_image: args.ingest_image.clone(),
            resync: Duration::from_secs(args.resync_seconds.max(1)),
            concurrency: args.concurrency.max(1),
            scrape_parallelism: args.scrape_parallelism.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_match_the_contract() {
        let args = Args::try_parse_from(["telemetry-operator"]).unwrap();
        assert_eq!(args.http_listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(args.namespace, None);
        assert!(
            args.ingest_image
                .starts_with("ghcr.io/telemetry-pipeline/telemetry-ingest:")
        );
        let settings = Settings::from(&args);
        assert_eq!(settings.resync, Duration::from_secs(300));
    }

    #[test]
    fn flags_override_defaults() {
        let args = Args::try_parse_from([
            "telemetry-operator",
            "--http-listen",
            "127.0.0.1:0",
            "--namespace",
            "team-a",
            "--ingest-image",
            "example.com/ingest:dev",
        ])
        .unwrap();
        let settings = Settings::from(&args);
        assert_eq!(settings.namespace.as_deref(), Some("team-a"));
        assert_eq!(settings.ingest_image, "example.com/ingest:dev");
    }
}

//! Command-line flags (each also an environment variable) and the settings
//! the reconciler uses. The only place that reads the environment: the
//! downward-API variables (`POD_NAME`, `POD_NAMESPACE`) and the hostname are
//! resolved here too.

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
/// Leader election is off: one process reconciles, as a single replica.
pub const DEFAULT_LEADER_ELECT: bool = false;
/// The Lease the replicas compete for.
pub const DEFAULT_LEASE_NAME: &str = "telemetry-operator";
/// Where the Lease lives when neither `--lease-namespace` nor `POD_NAMESPACE`
/// says.
pub const DEFAULT_LEASE_NAMESPACE: &str = "default";
/// How long a leader's term lasts after its last renewal: how long a crashed
/// leader's replicas wait before one takes over.
pub const DEFAULT_LEASE_DURATION_SECONDS: u64 = 15;
/// How long before its term ends the leader renews the Lease.
pub const DEFAULT_LEASE_RENEW_GRACE_SECONDS: u64 = 5;
/// Where the hostname is read for the default identity.
const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

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

    /// Watch only these namespaces, comma-separated (default: all
    /// namespaces). With a list, the operator needs RBAC in those namespaces
    /// only (the chart's `rbac.watchNamespaces`).
    #[arg(
        long,
        alias = "namespace",
        env = "TELEMETRY_OPERATOR_WATCH_NAMESPACES",
        value_delimiter = ',',
        value_parser = parse_namespace
    )]
    pub watch_namespaces: Vec<String>,

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

    /// Run as one of several replicas: only the holder of a Lease reconciles.
    #[arg(
        long,
        env = "TELEMETRY_OPERATOR_LEADER_ELECT",
        default_value_t = DEFAULT_LEADER_ELECT,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub leader_elect: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "TELEMETRY_OPERATOR_LEASE_NAME", default_value = DEFAULT_LEASE_NAME)]
    pub lease_name: String,

    /// Namespace of the Lease (default: the pod's namespace from POD_NAMESPACE,
    /// else "default").
    #[arg(long, env = "TELEMETRY_OPERATOR_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// The pod's namespace, from the downward API.
    #[arg(long, env = "POD_NAMESPACE", hide = true)]
    pub pod_namespace: Option<String>,

    /// This replica's name in the Lease (default: the pod's name from POD_NAME,
    /// else the hostname with a random suffix).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Seconds a leader's term lasts after its last renewal.
    #[arg(long, env = "TELEMETRY_OPERATOR_LEASE_DURATION_SECONDS", default_value_t = DEFAULT_LEASE_DURATION_SECONDS)]
    pub lease_duration_seconds: u64,

    /// Seconds before its term ends that the leader renews the Lease
    /// (at least 1, less than the duration).
    #[arg(long, env = "TELEMETRY_OPERATOR_LEASE_RENEW_GRACE_SECONDS", default_value_t = DEFAULT_LEASE_RENEW_GRACE_SECONDS)]
    pub lease_renew_grace_seconds: u64,
}

/// What the controller needs from the flags.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch only these namespaces (sorted, no duplicates); empty: all.
    pub namespaces: Vec<String>,
    /// Default ingest image.
    pub ingest_image: String,
    /// Periodic re-check interval.
    pub resync: Duration,
    /// Concurrent reconciles.
    pub concurrency: u16,
    /// Concurrent scrapes of ingest pods.
    pub scrape_parallelism: usize,
    /// With leader election, only the replica holding this Lease reconciles;
    /// without, this process does.
    pub leader_election: Option<LeaderElection>,
    /// The namespace the operator's pods run in (`POD_NAMESPACE`), if known:
    /// the ingest NetworkPolicy lets them scrape `/metrics`.
    pub operator_namespace: Option<String>,
}

/// Which Lease the replicas compete for, under which name, and its timing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElection {
    /// The Lease's name.
    pub lease_name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This replica's `holderIdentity`; unique among the replicas.
    pub identity: String,
    /// A term lasts this long after the last renewal (whole seconds, at least 2).
    pub duration: Duration,
    /// The leader renews this long before its term ends (whole seconds, at
    /// least 1, less than `duration`).
    pub grace: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            ingest_image: DEFAULT_INGEST_IMAGE.to_string(),
            resync: Duration::from_secs(DEFAULT_RESYNC_SECONDS),
            concurrency: DEFAULT_CONCURRENCY,
            scrape_parallelism: DEFAULT_SCRAPE_PARALLELISM,
            leader_election: None,
            operator_namespace: None,
        }
    }
}

impl From<&Args> for Settings {
    fn from(args: &Args) -> Self {
        Self {
            namespaces: args
                .watch_namespaces
                .iter()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            ingest_image: args.ingest_image.clone(),
            resync: Duration::from_secs(args.resync_seconds.max(1)),
            concurrency: args.concurrency.max(1),
            scrape_parallelism: args.scrape_parallelism.max(1),
            leader_election: args
                .leader_elect
                .then(|| LeaderElection::new(args, default_identity)),
            operator_namespace: args.pod_namespace.clone(),
        }
    }
}

impl LeaderElection {
    /// From the flags; `default_identity` is asked only when neither
    /// `--identity` nor `POD_NAME` gives one. The timing is clamped to what a
    /// Lease can express: a term of at least 2 s, renewed at least 1 s before
    /// it ends and after it began.
    pub fn new(args: &Args, default_identity: impl FnOnce() -> String) -> Self {
        let duration = args.lease_duration_seconds.max(2);
        let grace = args.lease_renew_grace_seconds.clamp(1, duration - 1);
        Self {
            lease_name: args.lease_name.clone(),
            namespace: args
                .lease_namespace
                .clone()
                .or_else(|| args.pod_namespace.clone())
                .unwrap_or_else(|| DEFAULT_LEASE_NAMESPACE.to_string()),
            identity: args.identity.clone().unwrap_or_else(default_identity),
            duration: Duration::from_secs(duration),
            grace: Duration::from_secs(grace),
        }
    }
}

/// A namespace name as Kubernetes defines it (an RFC 1123 label): at most 63
/// lowercase alphanumerics or '-', starting and ending alphanumeric.
fn parse_namespace(value: &str) -> Result<String, String> {
    let name = value.trim();
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(name.to_string())
    } else {
        Err(format!(
            "{value:?} is not a namespace name (at most 63 characters: a-z, 0-9, '-', starting and ending with a letter or digit)"
        ))
    }
}

/// Outside a pod: the hostname plus a random suffix, so that two processes on
/// one machine never share an identity (both would believe they hold the
/// Lease).
fn default_identity() -> String {
    let host = std::fs::read_to_string(HOSTNAME_FILE).unwrap_or_default();
    identity_for_host(host.trim(), rand::random())
}

fn identity_for_host(host: &str, suffix: u32) -> String {
    let host = if host.is_empty() {
        "telemetry-operator"
    } else {
        host
    };
    format!("{host}_{suffix:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_match_the_contract() {
        let args = Args::try_parse_from(["telemetry-operator"]).unwrap();
        assert_eq!(args.http_listen, "0.0.0.0:8080".parse().unwrap());
        assert!(args.watch_namespaces.is_empty());
        assert!(
            args.ingest_image
                .starts_with("ghcr.io/telemetry-pipeline/telemetry-ingest:")
        );
        let settings = Settings::from(&args);
        assert_eq!(settings.resync, Duration::from_secs(300));
        assert!(!args.leader_elect);
        assert_eq!(settings.leader_election, None);
    }

    #[test]
    fn leader_election_defaults_to_the_named_lease_in_the_default_namespace() {
        let args = Args::try_parse_from(["telemetry-operator", "--leader-elect"]).unwrap();
        let election = LeaderElection::new(&args, || "host_0000002a".to_string());
        assert_eq!(
            election,
            LeaderElection {
                lease_name: "telemetry-operator".to_string(),
                namespace: "default".to_string(),
                identity: "host_0000002a".to_string(),
                duration: Duration::from_secs(15),
                grace: Duration::from_secs(5),
            }
        );
        let settings = Settings::from(&args);
        let election = settings.leader_election.expect("--leader-elect");
        assert!(!election.identity.is_empty());
    }

    #[test]
    fn leader_election_flags_override_the_downward_api_and_the_defaults() {
        let args = Args::try_parse_from([
            "telemetry-operator",
            "--leader-elect",
            "--lease-name",
            "tp-leader",
            "--pod-namespace",
            "operators",
            "--identity",
            "telemetry-operator-7d9c-x2b4k",
            "--lease-duration-seconds",
            "30",
            "--lease-renew-grace-seconds",
            "10",
        ])
        .unwrap();
        let election = LeaderElection::new(&args, || unreachable!("--identity is given"));
        assert_eq!(election.lease_name, "tp-leader");
        assert_eq!(election.namespace, "operators", "POD_NAMESPACE");
        assert_eq!(election.identity, "telemetry-operator-7d9c-x2b4k");
        assert_eq!(election.duration, Duration::from_secs(30));
        assert_eq!(election.grace, Duration::from_secs(10));

        let args = Args::try_parse_from([
            "telemetry-operator",
            "--leader-elect",
            "--pod-namespace",
            "operators",
            "--lease-namespace",
            "leases",
        ])
        .unwrap();
        assert!(args.leader_elect);
        let election = LeaderElection::new(&args, || "h_1".to_string());
        assert_eq!(election.namespace, "leases", "the flag wins");
    }

    #[test]
    fn lease_timing_is_clamped_to_a_renewal_inside_the_term() {
        let timing = |duration: &str, grace: &str| {
            let args = Args::try_parse_from([
                "telemetry-operator",
                "--lease-duration-seconds",
                duration,
                "--lease-renew-grace-seconds",
                grace,
            ])
            .unwrap();
            let election = LeaderElection::new(&args, String::new);
            (election.duration.as_secs(), election.grace.as_secs())
        };
        assert_eq!(timing("15", "5"), (15, 5));
        assert_eq!(timing("6", "6"), (6, 5), "grace below the duration");
        assert_eq!(timing("6", "0"), (6, 1), "at least a second");
        assert_eq!(timing("0", "0"), (2, 1), "the shortest term");
    }

    #[test]
    fn the_default_identity_is_the_hostname_with_a_random_suffix() {
        assert_eq!(identity_for_host("node-1", 42), "node-1_0000002a");
        assert_eq!(
            identity_for_host("", 0xdead_beef),
            "telemetry-operator_deadbeef"
        );
        assert_ne!(default_identity(), default_identity());
    }

    #[test]
    fn flags_override_defaults() {
        let args = Args::try_parse_from([
            "telemetry-operator",
            "--http-listen",
            "127.0.0.1:0",
            "--watch-namespaces",
            "team-b,team-a",
            "--ingest-image",
            "example.com/ingest:dev",
        ])
        .unwrap();
        let settings = Settings::from(&args);
        assert_eq!(settings.namespaces, ["team-a", "team-b"]);
        assert_eq!(settings.ingest_image, "example.com/ingest:dev");
    }

    #[test]
    fn watch_namespaces_are_deduplicated_and_the_old_flag_still_works() {
        let args = Args::try_parse_from([
            "telemetry-operator",
            "--watch-namespaces=a, b",
            "--namespace",
            "a",
        ])
        .unwrap();
        assert_eq!(Settings::from(&args).namespaces, ["a", "b"]);
        let all = Args::try_parse_from(["telemetry-operator"]).unwrap();
        assert!(Settings::from(&all).namespaces.is_empty(), "all namespaces");
    }

    #[test]
    fn a_bad_namespace_name_is_refused_naming_the_flag_and_the_rule() {
        let err = Args::try_parse_from(["telemetry-operator", "--watch-namespaces", "ok,Team_A"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--watch-namespaces"), "{err}");
        assert!(err.contains("\"Team_A\" is not a namespace name"), "{err}");
    }
}

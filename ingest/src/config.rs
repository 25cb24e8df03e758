//! Command-line flags (each also an environment variable) and their defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};

use crate::limits::{
    DEFAULT_MAX_ATTRIBUTES, DEFAULT_MAX_FUTURE_SKEW_SECONDS, DEFAULT_MAX_PAST_AGE_SECONDS,
    DEFAULT_MAX_PAYLOAD_BYTES, Limits,
};

pub const DEFAULT_GRPC_LISTEN: &str = "0.0.0.0:50051";
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:8000";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const DEFAULT_PIPELINE: &str = "default";
pub const DEFAULT_QUEUE_CAPACITY: usize = 100_000;
pub const DEFAULT_BATCH_SIZE: usize = 8192;
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 2;
pub const DEFAULT_FLUSH_BUDGET_US: u64 = 3_000;
pub const DEFAULT_FLUSH_CONCURRENCY: usize = 4;
pub const DEFAULT_FLUSH_TIMEOUT_MS: u64 = 1_000;
pub const DEFAULT_BACKPRESSURE_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECONDS: u64 = 25;
pub const DEFAULT_CONFIG_POLL_MS: u64 = 1_000;
pub const DEFAULT_MAX_GRPC_BATCH: usize = 10_000;
pub const DEFAULT_MAX_HTTP_BATCH: usize = 1_000;
pub const DEFAULT_HTTP_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
pub const DEFAULT_HTTP_HEADER_READ_TIMEOUT_SECONDS: u64 = 10;
pub const DEFAULT_IDLE_TIMEOUT_SECONDS: u64 = 300;
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_GRPC_MAX_CONCURRENT_STREAMS: u32 = 1_024;
pub const DEFAULT_GRPC_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
pub const DEFAULT_GRPC_STREAM_IDLE_TIMEOUT_SECONDS: u64 = 60;

/// `telemetry-ingest`: receives events over gRPC and HTTP, aggregates them
/// into Redis, and acknowledges each one only once it is stored.
#[derive(Debug, Clone, Parser)]
#[command(name = "telemetry-ingest", version, about)]
pub struct IngestArgs {
    /// gRPC listen address (TelemetryIngest, TelemetryQuery, health, reflection).
    #[arg(long, env = "TELEMETRY_GRPC_LISTEN", default_value = DEFAULT_GRPC_LISTEN)]
    pub grpc_listen: SocketAddr,

    /// HTTP listen address (JSON API, /healthz, /readyz, /metrics).
    #[arg(long, env = "TELEMETRY_HTTP_LISTEN", default_value = DEFAULT_HTTP_LISTEN)]
    pub http_listen: SocketAddr,

    #[command(flatten)]
    pub redis: RedisArgs,

    /// Pipeline name: every Redis key lives under `tp:{<pipeline>}:`.
    #[arg(long, env = "TELEMETRY_PIPELINE", default_value = DEFAULT_PIPELINE,
          value_parser = parse_pipeline)]
    pub pipeline: String,

    /// Aggregation settings (YAML); re-read when the file changes.
    #[arg(long, env = "TELEMETRY_CONFIG")]
    pub config: Option<PathBuf>,

    /// API keys (YAML list of `{name, sha256, scopes}`); without it every
    /// call is let in. Re-read when the file changes (docs/security.md).
    #[arg(long, env = "TELEMETRY_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,

    #[command(flatten)]
    pub queue: QueueArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub connections: ConnectionArgs,

    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,

    /// Seconds allowed for draining the queue after SIGTERM.
    #[arg(long, env = "TELEMETRY_SHUTDOWN_TIMEOUT_SECONDS", default_value_t = DEFAULT_SHUTDOWN_TIMEOUT_SECONDS)]
    pub shutdown_timeout_seconds: u64,

    /// How often the config file (and the TLS files, with
    /// `--tls-cert-file`) is checked for changes, in milliseconds.
    #[arg(long, env = "TELEMETRY_CONFIG_POLL_MS", default_value_t = DEFAULT_CONFIG_POLL_MS)]
    pub config_poll_ms: u64,

    /// Log format.
    #[arg(long, env = "TELEMETRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

    /// Tokio worker threads; 0 sizes the runtime to the cgroup CPU limit.
    #[arg(long, env = "TELEMETRY_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
}

/// Where Redis is.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL (`redis://[:password@]host:port[/db]`).
    #[arg(long, env = "TELEMETRY_REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis_url: String,

    /// Redis password; overrides one in the URL (keeps secrets out of args).
    #[arg(long, env = "TELEMETRY_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,

    /// Redis ACL user (`AUTH <username> <password>`); without it the
    /// password is the `default` user's.
    #[arg(long, env = "TELEMETRY_REDIS_USERNAME")]
    pub redis_username: Option<String>,

    /// PEM file of CA certificates trusted for a `rediss://` URL, on top of
    /// the system store (which honours `SSL_CERT_FILE`). Refused with a
    /// `redis://` URL.
    #[arg(long, env = "TELEMETRY_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// Redis Cluster seed nodes (`host:port,host:port,…`): the pipeline's
    /// keys are spread over `--redis-partitions` partitions, on whichever
    /// shards own them (docs/redis-layout.md, Sharding). Replaces
    /// `--redis-url`; the password, user and CA flags apply to every node.
    #[arg(long, env = "TELEMETRY_REDIS_CLUSTER_NODES", value_delimiter = ',',
          value_parser = parse_cluster_node, conflicts_with = "redis_url")]
    pub redis_cluster_nodes: Vec<String>,

    /// Partitions of a pipeline on Redis Cluster (1..=1024): at least the
    /// number of shards it will ever have, best a multiple of it. Part of
    /// the stored layout: every pod of a pipeline must use the same number,
    /// and changing it leaves the data written before under other keys.
    #[arg(long, env = "TELEMETRY_REDIS_PARTITIONS",
          default_value_t = crate::partition::DEFAULT_PARTITIONS,
          value_parser = clap::value_parser!(u16).range(1..=crate::partition::MAX_PARTITIONS as i64))]
    pub redis_partitions: u16,

    /// Replicas that must hold a flush before its events are acknowledged
    /// (`WAIT`, within `--flush-timeout-ms`): with 1 or more, a primary
    /// that dies right after a flush cannot take acknowledged events with
    /// it when a replica takes over. 0: acknowledged once the primary has
    /// applied it (durable as its `appendfsync` makes it).
    #[arg(long, env = "TELEMETRY_REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u32,
}

impl RedisArgs {
    /// Whether the pipeline is on Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        !self.redis_cluster_nodes.is_empty()
    }
}

/// The in-memory queue between handlers and the Redis flushers.
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// Events accepted but not yet stored, at most (the backpressure bound).
    #[arg(long, env = "TELEMETRY_QUEUE_CAPACITY", default_value_t = DEFAULT_QUEUE_CAPACITY)]
    pub queue_capacity: usize,

    /// Events per atomic Redis flush (one Lua call), at most; a flush is cut
    /// earlier once its estimated Redis time reaches `--flush-budget-us`.
    #[arg(long, env = "TELEMETRY_BATCH_SIZE", default_value_t = DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,

    /// Redis run time of one flush (one script call) at which it stops
    /// taking more events, in microseconds: estimated from the flush's
    /// commands and values, corrected by what earlier flushes measured inside
    /// Redis. Larger flushes fold more events
    /// into each per-key command (less Redis CPU per event) but hold Redis,
    /// and the queries waiting behind a flush, for longer.
    #[arg(long, env = "TELEMETRY_FLUSH_BUDGET_US", default_value_t = DEFAULT_FLUSH_BUDGET_US,
          value_parser = clap::value_parser!(u64).range(100..=1_000_000))]
    pub flush_budget_us: u64,

    /// Longest wait for a flush to fill up, in milliseconds.
    #[arg(long, env = "TELEMETRY_FLUSH_INTERVAL_MS", default_value_t = DEFAULT_FLUSH_INTERVAL_MS)]
    pub flush_interval_ms: u64,

    /// Flushes in flight to Redis at once.
    #[arg(long, env = "TELEMETRY_FLUSH_CONCURRENCY", default_value_t = DEFAULT_FLUSH_CONCURRENCY)]
    pub flush_concurrency: usize,

    /// How long one flush is retried before its events are failed
    /// (UNAVAILABLE / 503), in milliseconds.
    #[arg(long, env = "TELEMETRY_FLUSH_TIMEOUT_MS", default_value_t = DEFAULT_FLUSH_TIMEOUT_MS)]
    pub flush_timeout_ms: u64,

    /// How long a gRPC call waits for queue space before RESOURCE_EXHAUSTED
    /// (HTTP answers 429 at once), in milliseconds.
    #[arg(long, env = "TELEMETRY_BACKPRESSURE_TIMEOUT_MS", default_value_t = DEFAULT_BACKPRESSURE_TIMEOUT_MS)]
    pub backpressure_timeout_ms: u64,
}

/// Validation limits.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Largest payload, in bytes.
    #[arg(long, env = "TELEMETRY_MAX_PAYLOAD_BYTES", default_value_t = DEFAULT_MAX_PAYLOAD_BYTES)]
    pub max_payload_bytes: usize,

    /// How far in the future a timestamp may be, in seconds (clock skew).
    #[arg(long, env = "TELEMETRY_MAX_FUTURE_SKEW_SECONDS", default_value_t = DEFAULT_MAX_FUTURE_SKEW_SECONDS)]
    pub max_future_skew_seconds: u64,

    /// How old a timestamp may be, in seconds.
    #[arg(long, env = "TELEMETRY_MAX_PAST_AGE_SECONDS", default_value_t = DEFAULT_MAX_PAST_AGE_SECONDS)]
    pub max_past_age_seconds: u64,

    /// Most attributes per event.
    #[arg(long, env = "TELEMETRY_MAX_ATTRIBUTES", default_value_t = DEFAULT_MAX_ATTRIBUTES)]
    pub max_attributes: usize,

    /// Most packets in one gRPC SendBatch / StreamBatches batch.
    #[arg(long, env = "TELEMETRY_MAX_GRPC_BATCH", default_value_t = DEFAULT_MAX_GRPC_BATCH)]
    pub max_grpc_batch: usize,

    /// Most events in one HTTP batch.
    #[arg(long, env = "TELEMETRY_MAX_HTTP_BATCH", default_value_t = DEFAULT_MAX_HTTP_BATCH)]
    pub max_http_batch: usize,
}

/// What one client may hold of the server: connections, streams, request
/// and message sizes, and how long it may stay silent (see docs/ingest.md,
/// "Connection limits").
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Largest HTTP request body, in bytes; a larger one is answered 413.
    #[arg(long, env = "TELEMETRY_HTTP_MAX_BODY_BYTES", default_value_t = DEFAULT_HTTP_MAX_BODY_BYTES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..=1 << 30))]
    pub http_max_body_bytes: usize,

    /// Seconds an HTTP/1 client has to send a whole request head (request
    /// line and headers); also how long a keep-alive connection may wait
    /// for its next request. The connection is closed after it.
    #[arg(long, env = "TELEMETRY_HTTP_HEADER_READ_TIMEOUT_SECONDS",
          default_value_t = DEFAULT_HTTP_HEADER_READ_TIMEOUT_SECONDS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_header_read_timeout_seconds: u64,

    /// Seconds a connection (HTTP or gRPC) may carry no bytes either way
    /// before it is closed.
    #[arg(long, env = "TELEMETRY_IDLE_TIMEOUT_SECONDS", default_value_t = DEFAULT_IDLE_TIMEOUT_SECONDS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout_seconds: u64,

    /// Open connections per listener (gRPC and HTTP each), at most; more
    /// wait in the listen backlog until one closes.
    #[arg(long, env = "TELEMETRY_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_connections: usize,

    /// Concurrent gRPC streams (calls) per connection, at most (HTTP/2
    /// SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, env = "TELEMETRY_GRPC_MAX_CONCURRENT_STREAMS",
          default_value_t = DEFAULT_GRPC_MAX_CONCURRENT_STREAMS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_concurrent_streams: u32,

    /// Largest gRPC message the server decodes, in bytes; a larger one
    /// fails the call with OUT_OF_RANGE.
    #[arg(long, env = "TELEMETRY_GRPC_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_GRPC_MAX_MESSAGE_BYTES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..=1 << 30))]
    pub grpc_max_message_bytes: usize,

    /// Seconds a gRPC client stream may send no message before the server
    /// ends it (DEADLINE_EXCEEDED, with what was settled in the trailers).
    #[arg(long, env = "TELEMETRY_GRPC_STREAM_IDLE_TIMEOUT_SECONDS",
          default_value_t = DEFAULT_GRPC_STREAM_IDLE_TIMEOUT_SECONDS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub grpc_stream_idle_timeout_seconds: u64,
}

impl ConnectionArgs {
    pub fn http_header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.http_header_read_timeout_seconds)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_seconds)
    }
    pub fn grpc_stream_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.grpc_stream_idle_timeout_seconds)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

impl IngestArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_payload_bytes: self.limits.max_payload_bytes,
            max_future_skew_ms: self.limits.max_future_skew_seconds as i64 * 1000,
            max_past_age_ms: self.limits.max_past_age_seconds as i64 * 1000,
            max_attributes: self.limits.max_attributes,
            ..Limits::default()
        }
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_seconds)
    }

    /// Worker threads: the flag, else the cgroup CPU quota, else the cores.
    pub fn runtime_threads(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        cgroup_cpu_limit()
            .map_or(cores, |limit| limit.min(cores))
            .max(1)
    }
}

impl QueueArgs {
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }
    pub fn flush_timeout(&self) -> Duration {
        Duration::from_millis(self.flush_timeout_ms)
    }
    pub fn backpressure_timeout(&self) -> Duration {
        Duration::from_millis(self.backpressure_timeout_ms)
    }
}

/// CPUs granted by cgroup v2 `cpu.max`, rounded up; None when unlimited.
fn cgroup_cpu_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/sys/fs/cgroup/cpu.max").ok()?;
    let mut parts = text.split_whitespace();
    let quota: f64 = parts.next()?.parse().ok()?;
    let period: f64 = parts.next()?.parse().ok()?;
    Some((quota / period).ceil() as usize)
}

/// Pipeline names end up inside a Redis hash tag, so braces are refused.
/// A cluster seed: `host:port`.
fn parse_cluster_node(s: &str) -> Result<String, String> {
    let s = s.trim();
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(s.to_string())
        }
        _ => Err(format!("'{s}' must be host:port")),
    }
}

fn parse_pipeline(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be 1 to 253 characters".into());
    }
    if s.contains(['{', '}']) || s.chars().any(char::is_whitespace) {
        return Err("must not contain '{', '}' or whitespace".into());
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ports_and_url() {
        let args = IngestArgs::try_parse_from(["telemetry-ingest"]).unwrap();
        assert_eq!(args.grpc_listen.to_string(), DEFAULT_GRPC_LISTEN);
        assert_eq!(args.http_listen.to_string(), DEFAULT_HTTP_LISTEN);
        assert_eq!(args.redis.redis_url, DEFAULT_REDIS_URL);
        assert_eq!(args.pipeline, "default");
        assert_eq!(args.queue.queue_capacity, DEFAULT_QUEUE_CAPACITY);
    }

    #[test]
    fn connection_limits_default_to_their_constants_and_refuse_zero() {
        let args = IngestArgs::try_parse_from(["telemetry-ingest"]).unwrap();
        let c = &args.connections;
        assert_eq!(c.http_max_body_bytes, DEFAULT_HTTP_MAX_BODY_BYTES);
        assert_eq!(c.http_header_read_timeout(), Duration::from_secs(10));
        assert_eq!(c.idle_timeout(), Duration::from_secs(300));
        assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(
            c.grpc_max_concurrent_streams,
            DEFAULT_GRPC_MAX_CONCURRENT_STREAMS
        );
        assert_eq!(c.grpc_max_message_bytes, DEFAULT_GRPC_MAX_MESSAGE_BYTES);
        assert_eq!(c.grpc_stream_idle_timeout(), Duration::from_secs(60));
        for flag in [
            "--http-header-read-timeout-seconds",
            "--idle-timeout-seconds",
            "--max-connections",
            "--grpc-max-concurrent-streams",
            "--grpc-stream-idle-timeout-seconds",
        ] {
            let err = IngestArgs::try_parse_from(["telemetry-ingest", flag, "0"]).unwrap_err();
            assert!(err.to_string().contains(flag), "{flag}: {err}");
        }
    }

    #[test]
    fn pipeline_with_brace_is_refused() {
        let err =
            IngestArgs::try_parse_from(["telemetry-ingest", "--pipeline", "a{b"]).unwrap_err();
        assert!(err.to_string().contains("must not contain"), "{err}");
    }

    #[test]
    fn flush_budget_defaults_to_three_ms_and_refuses_values_out_of_range() {
        let args = IngestArgs::try_parse_from(["telemetry-ingest"]).unwrap();
        assert_eq!(args.queue.flush_budget_us, 3_000);
        let args =
            IngestArgs::try_parse_from(["telemetry-ingest", "--flush-budget-us", "2000"]).unwrap();
        assert_eq!(args.queue.flush_budget_us, 2_000);
        let err = IngestArgs::try_parse_from(["telemetry-ingest", "--flush-budget-us", "50"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--flush-budget-us") && err.contains("100"),
            "{err}"
        );
    }
}

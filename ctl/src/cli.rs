//! The command line: every subcommand and flag of `telemetryctl`.
//!
//! The query commands read the HTTP API (`--http`, also `TELEMETRY_HTTP`);
//! `send` talks to either transport. Both take `--api-key` (also
//! `TELEMETRY_API_KEY`) for a server that asks for one; `key new` makes one.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::credential::ApiKey;

pub const DEFAULT_HTTP: &str = "http://127.0.0.1:8000";
pub const DEFAULT_GRPC: &str = "http://127.0.0.1:50051";

#[derive(Debug, Parser)]
#[command(
    name = "telemetryctl",
    version,
    about = "Send events to telemetry-ingest and query its aggregates"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate and send events; prints a summary (exit 1 if anything sent
    /// was not acknowledged as expected).
    Send(SendArgs),
    /// Accepted events per device.
    Devices(DevicesArgs),
    /// Accepted events per event type.
    Counter(CounterArgs),
    /// The top members of a leaderboard.
    Leaderboard(LeaderboardArgs),
    /// A window's per-minute series, drawn as a bar chart.
    Window(WindowArgs),
    /// The latest events of a device.
    Recent(RecentArgs),
    /// Pipeline totals and the server's rates, queue and Redis health.
    Stats(QueryTarget),
    /// API keys for a server started with `--api-keys-file`.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make a random key: prints it once, and the entry (its SHA-256, never
    /// the key) to add to the server's keys.yaml.
    New(KeyNewArgs),
}

#[derive(Debug, Clone, Args)]
pub struct KeyNewArgs {
    /// The key's name, as metrics and logs show it.
    #[arg(long)]
    pub name: String,
    /// What the key may do: `write` (send events), `read` (query); repeat
    /// for both.
    #[arg(long, value_enum, required = true)]
    pub scope: Vec<KeyScope>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyScope {
    Write,
    Read,
}

impl KeyScope {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyScope::Write => "write",
            KeyScope::Read => "read",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// gRPC endpoint, e.g. http://127.0.0.1:50051 (https:// for TLS).
    #[arg(long, conflicts_with = "http", required_unless_present = "http")]
    pub grpc: Option<String>,
    /// HTTP endpoint, e.g. http://127.0.0.1:8000 (https:// for TLS).
    #[arg(long)]
    pub http: Option<String>,
    /// PEM file of the CA certificates an https:// server's certificate is
    /// verified against (only these); without it, the system store.
    #[arg(long, env = "TELEMETRY_CA_FILE")]
    pub ca: Option<PathBuf>,
    /// API key (scope write), sent as `authorization: Bearer <key>`.
    #[arg(long, env = "TELEMETRY_API_KEY", hide_env_values = true)]
    pub api_key: Option<ApiKey>,
    /// Events to send.
    #[arg(long, default_value_t = 100_000)]
    pub n: u64,
    /// Distinct device ids.
    #[arg(long, default_value_t = 100)]
    pub devices: u64,
    /// Distinct user ids (leaderboard members).
    #[arg(long, default_value_t = 1_000)]
    pub users: u64,
    /// Event types, comma-separated (purchase events carry a price as value).
    #[arg(long, default_value = "reading,purchase,login")]
    pub event_types: String,
    /// Events per second in total; 0 sends as fast as the server takes them.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Parallel connections.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Events per call (gRPC stream or batch, HTTP batch ≤ 1000).
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// gRPC call used: client `stream` or unary `batch`.
    #[arg(long, value_enum, default_value_t = GrpcMode::Stream)]
    pub grpc_mode: GrpcMode,
    /// Payload of each event.
    #[arg(long, value_enum, default_value_t = PayloadKind::Json)]
    pub payload: PayloadKind,
    /// Fraction of events that repeat an earlier event (same id).
    #[arg(long, default_value_t = 0.0)]
    pub duplicates: f64,
    /// Fraction of events with an invalid device id.
    #[arg(long, default_value_t = 0.0)]
    pub invalid: f64,
    /// Retries of a call that did not get its answer: refused with a
    /// retryable status (UNAVAILABLE / 503, RESOURCE_EXHAUSTED / 429), or
    /// cut off by the connection (refused, reset or closed, as while a
    /// server restarts). A retry resends the events the server did not
    /// settle, with the same event ids, after a pause that doubles from
    /// 50 ms to 2 s (10 retries ride out about 11 s); an event stored
    /// before its answer was lost comes back as a duplicate, never counted
    /// twice. A call that still fails ends the run.
    #[arg(long, default_value_t = 10)]
    pub retries: u32,
    /// Seed of the generator (random by default).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GrpcMode {
    Stream,
    Batch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PayloadKind {
    Json,
    Binary,
    Text,
    Mixed,
}

/// Where queries go (HTTP JSON API) and how answers are printed.
#[derive(Debug, Clone, Args)]
pub struct QueryTarget {
    /// Base URL of the HTTP API (https:// for TLS).
    #[arg(long, env = "TELEMETRY_HTTP", default_value = DEFAULT_HTTP)]
    pub http: String,
    /// PEM file of the CA certificates an https:// server's certificate is
    /// verified against (only these); without it, the system store.
    #[arg(long, env = "TELEMETRY_CA_FILE")]
    pub ca: Option<PathBuf>,
    /// API key (scope read), sent as `authorization: Bearer <key>`.
    #[arg(long, env = "TELEMETRY_API_KEY", hide_env_values = true)]
    pub api_key: Option<ApiKey>,
    /// Print the raw JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DevicesArgs {
    #[command(flatten)]
    pub target: QueryTarget,
    /// How many devices.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// count (most active first) or device (by id).
    #[arg(long, default_value = "count")]
    pub sort: String,
    /// Only this device.
    #[arg(long)]
    pub device: Option<String>,
}

#[derive(Debug, Args)]
pub struct CounterArgs {
    #[command(flatten)]
    pub target: QueryTarget,
    /// Event types (all when none given).
    pub types: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LeaderboardArgs {
    #[command(flatten)]
    pub target: QueryTarget,
    pub name: String,
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Bucket start (unix seconds); the current bucket by default.
    #[arg(long)]
    pub bucket: Option<i64>,
}

#[derive(Debug, Args)]
pub struct WindowArgs {
    #[command(flatten)]
    pub target: QueryTarget,
    pub name: String,
    #[arg(long, default_value_t = 15)]
    pub minutes: u32,
    /// Chart the sum of values instead of the count.
    #[arg(long)]
    pub sum: bool,
}

#[derive(Debug, Args)]
pub struct RecentArgs {
    #[command(flatten)]
    pub target: QueryTarget,
    pub device: String,
    #[arg(long)]
    pub limit: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn send_takes_exactly_one_of_grpc_and_http() {
        let parse =
            |args: &[&str]| Cli::try_parse_from(["telemetryctl", "send"].iter().chain(args));
        assert!(parse(&[]).is_err());
        assert!(parse(&["--grpc", DEFAULT_GRPC, "--http", DEFAULT_HTTP]).is_err());
        let Command::Send(a) = parse(&["--http", DEFAULT_HTTP]).unwrap().command else {
            panic!("not send");
        };
        assert_eq!((a.n, a.batch, a.concurrency), (100_000, 1_000, 4));
    }
}

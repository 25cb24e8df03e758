//! The `telemetryctl` client: a load generator (`send`) and the query
//! commands (`devices`, `counter`, `leaderboard`, `window`, `recent`,
//! `stats`), over HTTP or gRPC.
//!
//! - [`send`]: generating events, sending them with retries, the summary.
//! - [`output`]: tables, JSON and the window chart.

pub mod output;
pub mod send;

use clap::{Args, Parser, Subcommand};
use serde::de::DeserializeOwned;

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
    Send(send::SendArgs),
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
}

/// Where queries go (HTTP JSON API) and how answers are printed.
#[derive(Debug, Clone, Args)]
pub struct QueryTarget {
    /// Base URL of the HTTP API.
    #[arg(long, env = "TELEMETRY_HTTP", default_value = DEFAULT_HTTP)]
    pub http: String,
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

/// Runs a command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Send(args) => send::run(args).await,
        Command::Devices(a) => {
            let mut url = format!(
                "{}/api/v1/devices?limit={}&sort={}",
                a.target.http, a.limit, a.sort
            );
            if let Some(d) = &a.device {
                url.push_str(&format!("&deviceId={d}"));
            }
            let rows: Vec<telemetry_ingest_query::DeviceCount> = get_json(&url).await?;
            output::print(&a.target, &rows, || output::devices_table(&rows));
            Ok(0)
        }
        Command::Counter(a) => {
            let url = format!(
                "{}/api/v1/counters?types={}",
                a.target.http,
                a.types.join(",")
            );
            let c: telemetry_ingest_query::Counters = get_json(&url).await?;
            output::print(&a.target, &c, || output::counters_table(&c));
            Ok(0)
        }
        Command::Leaderboard(a) => {
            let mut url = format!(
                "{}/api/v1/leaderboards/{}?topN={}",
                a.target.http, a.name, a.top
            );
            if let Some(b) = a.bucket {
                url.push_str(&format!("&bucket={b}"));
            }
            let l: telemetry_ingest_query::Leaderboard = get_json(&url).await?;
            output::print(&a.target, &l, || output::leaderboard_table(&l));
            Ok(0)
        }
        Command::Window(a) => {
            let url = format!(
                "{}/api/v1/windows/{}?minutes={}",
                a.target.http, a.name, a.minutes
            );
            let w: telemetry_ingest_query::Window = get_json(&url).await?;
            output::print(&a.target, &w, || output::window_chart(&w, a.sum));
            Ok(0)
        }
        Command::Recent(a) => {
            let mut url = format!("{}/api/v1/devices/{}/recent", a.target.http, a.device);
            if let Some(l) = a.limit {
                url.push_str(&format!("?limit={l}"));
            }
            let events: Vec<telemetry_proto::json::EventJson> = get_json(&url).await?;
            output::print(&a.target, &events, || output::recent_table(&events));
            Ok(0)
        }
        Command::Stats(t) => {
            let s: telemetry_ingest_query::Stats =
                get_json(&format!("{}/api/v1/stats", t.http)).await?;
            output::print(&t, &s, || output::stats_table(&s));
            Ok(0)
        }
    }
}

use telemetry_proto::json as telemetry_ingest_query;

async fn get_json<T: DeserializeOwned>(url: &str) -> anyhow::Result<T> {
    let response = reqwest::get(url)
        .await
        .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(body);
        anyhow::bail!("{status}: {message}");
    }
    serde_json::from_str(&body).map_err(|e| anyhow::anyhow!("unexpected answer from {url}: {e}"))
}

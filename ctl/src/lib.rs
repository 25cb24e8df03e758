//! telemetryctl: the client of telemetry-ingest. A load generator that checks
//! every acknowledgement it gets (`send`), and the query commands (`devices`,
//! `counter`, `leaderboard`, `window`, `recent`, `stats`). It speaks only the
//! wire contract (`telemetry-proto`: protobuf over gRPC, JSON over HTTP) and
//! knows nothing of the server's code.
//!
//! ```text
//!         ┌─► send:  generator ─► schedule ─► transport (grpc | http) ──► server
//! cli ──► │            ▲ events    when due     │ one Tally per call
//!         │            └── report: Totals ◄─────┘ ─► Summary, exit code
//!         └─► query: URL ─► GET /api/v1/… ─► output (table | chart | JSON)
//! ```
//!
//! - [`cli`]: the command line, every subcommand and flag.
//! - [`send`]: one run of the load generator: workers, each with its own
//!   connection, and the summary at the end. Its parts:
//!   [`send::generator`] (events from pre-encoded templates),
//!   [`send::schedule`] (when a call is due, for `--rate`),
//!   [`send::transport`] (a call over gRPC or HTTP, resumed after retryable
//!   failures), [`send::report`] (tallies, totals, the summary).
//! - [`query`]: the query commands over the HTTP API.
//! - [`output`]: tables, JSON and the window chart (pure).
//! - [`tls`]: `https://` endpoints, verified against `--ca` or the system
//!   store.
//! - [`credential`]: the API key sent (`--api-key`), and `key new`.
//! - [`error`]: what can fail.

pub mod cli;
pub mod credential;
pub mod error;
pub mod output;
pub mod query;
pub mod send;
pub mod tls;

pub use error::{Error, Result};

use cli::{Cli, Command, KeyCommand};

/// Runs a command; returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Send(args) => return send::run(args).await,
        Command::Devices(a) => query::devices(&a).await?,
        Command::Counter(a) => query::counter(&a).await?,
        Command::Leaderboard(a) => query::leaderboard(&a).await?,
        Command::Window(a) => query::window(&a).await?,
        Command::Recent(a) => query::recent(&a).await?,
        Command::Stats(t) => query::stats(&t).await?,
        Command::Key(KeyCommand::New(a)) => credential::new_key(&a)?,
    }
    Ok(0)
}

//! `telemetryctl`: send events to telemetry-ingest and read its aggregates.

use clap::Parser;
use telemetryctl::cli::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let code = telemetryctl::run(cli).await?;
    std::process::exit(code);
}

//! `telemetryctl`: send events to telemetry-ingest and read its aggregates.

use clap::Parser;
use telemetry_ingest::ctl::{self, Cli};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let code = ctl::run(cli).await?;
    std::process::exit(code);
}

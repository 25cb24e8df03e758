//! `telemetry-operator`: flags, logging, signals; everything else is the lib.

use std::io::IsTerminal;

use anyhow::Context as _;
use clap::Parser;
use telemetry_operator::config::{Args, Settings};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only when stdout is a terminal, never into a log file or pipe.
    let logs = tracing_subscriber::fmt()
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(filter);
    if args.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }

    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let listener = tokio::net::TcpListener::bind(args.http_listen)
        .await
        .with_context(|| format!("bind {}", args.http_listen))?;

    // SIGTERM or Ctrl-C: stop taking new reconciles, let running ones finish,
    // stop the HTTP server, exit.
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install the SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down"),
        }
        signal.cancel();
    });

    telemetry_operator::run(client, Settings::from(&args), listener, shutdown).await?;
    Ok(())
}

//! The ingest server binary: flags, logging, runtime, signals; then `run`.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use telemetry_ingest::config::{IngestArgs, LogFormat};
use telemetry_ingest::server::{self, Listeners};
use tokio_util::sync::CancellationToken;

// Every event is a handful of small allocations freed on another thread (the
// flusher); mimalloc's per-thread free lists make that markedly cheaper than
// glibc malloc (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args = IngestArgs::parse();
    init_tracing(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.runtime_threads())
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        let listeners = Listeners::bind(&args).await?;
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        server::run(args, listeners, shutdown).await?;
        Ok(())
    })
}

/// Logs go to stdout: colours only when that is a terminal, never into a
/// file or a pipe; `--log-format json` for machines.
fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(filter);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}

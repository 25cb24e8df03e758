//! `telemetry-kubelet`: the kubelet stand-in of the testenv. Started by
//! `scripts/testenv up`; see the `telemetry_testenv` crate docs.

use std::path::PathBuf;

use clap::Parser;
use telemetry_testenv::kubelet::{self, DEFAULT_NODE_NAME};
use tracing_subscriber::EnvFilter;

const DEFAULT_LOG_FILTER: &str = "info,kube_runtime=warn";

/// Runs the pods of a local Kubernetes control plane as local processes.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The cluster to serve.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Where pod directories (logs, PID files, volumes) go.
    #[arg(long, env = "TELEMETRY_KUBELET_STATE_DIR")]
    state_dir: PathBuf,
    /// Where telemetry-ingest and telemetry-operator are (default: next to
    /// this binary).
    #[arg(long, env = "TELEMETRY_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// The node to register.
    #[arg(long, env = "TELEMETRY_KUBELET_NODE_NAME", default_value = DEFAULT_NODE_NAME)]
    node_name: String,
    /// PATH for pod processes (redis-server, redis-cli).
    #[arg(long = "pod-path", env = "PATH", hide_env_values = true)]
    path: String,
    /// Log filter (tracing-subscriber EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = DEFAULT_LOG_FILTER)]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        // `scripts/testenv up` sends this to a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .init();
    let bin_dir = match args.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default(),
    };
    let config = kubelet::Config {
        kubeconfig: args.kubeconfig,
        state_dir: args.state_dir,
        bin_dir,
        node_name: args.node_name,
        path_env: args.path,
    };
    tracing::info!(?config, "telemetry-kubelet starting");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
        }
    };
    kubelet::run(config, shutdown).await?;
    tracing::info!("telemetry-kubelet stopped");
    Ok(())
}

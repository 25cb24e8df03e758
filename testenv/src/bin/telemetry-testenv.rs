//! `telemetry-testenv`: starts, stops and describes the local Kubernetes
//! control plane of the tests (see the `telemetry_testenv` crate docs and
//! docs/testenv.md). `scripts/testenv` builds the Go binaries and calls
//! this; what `up` and `env` print on stdout is meant for `eval`, progress
//! goes to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use telemetry_testenv::cluster::repo_root;
use telemetry_testenv::control_plane::{self, Options};

/// A real Kubernetes control plane on this machine: etcd, kube-apiserver,
/// kube-controller-manager and the kubelet stand-in, as local processes.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Where PID files, logs, credentials and etcd's data go (default
    /// `<repo>/.state/testenv`).
    #[arg(long, env = "TESTENV_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Where `scripts/testenv build` put etcd, kube-* and kubectl (needed by
    /// `up`).
    #[arg(long, env = "TESTENV_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start (or reuse) the control plane; print the exports for `eval`.
    Up {
        /// Do not start the kubelet stand-in.
        #[arg(long)]
        no_kubelet: bool,
    },
    /// Print the exports of the running control plane again.
    Env,
    /// What runs where, and the log files (exit 1: not running).
    Status,
    /// Stop what `up` started and remove the state directory.
    Down,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("testenv: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> telemetry_testenv::Result<ExitCode> {
    let mut opts = Options::for_repo(&repo_root());
    if let Some(dir) = args.state_dir {
        opts.state_dir = dir;
    }
    // Next to this binary: telemetry-kubelet and the programs pods run.
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(PathBuf::from))
    {
        opts.program_dir = dir;
    }
    opts.bin_dir = args.bin_dir;
    match args.command {
        Cmd::Up { no_kubelet } => {
            opts.kubelet = !no_kubelet;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(telemetry_testenv::Error::io("starting a runtime", "-"))?;
            let env = runtime.block_on(control_plane::up(&opts))?;
            print!("{}", env.exports());
        }
        Cmd::Env => print!("{}", control_plane::env(&opts)?.exports()),
        Cmd::Status => {
            if !control_plane::status(&opts, &mut std::io::stdout())? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Down => control_plane::down(&opts)?,
    }
    Ok(ExitCode::SUCCESS)
}

//! The project's CRDs, applied with the pinned kubectl.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::log;
use crate::error::{Error, Result};

/// Applies `dir/*.yaml` (the project's CRDs), server-side and idempotent,
/// and waits until they are Established.
pub async fn apply_crds(kubectl: &Path, kubeconfig: &Path, dir: &Path) -> Result<()> {
    let any = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        })
        .unwrap_or(false);
    if !any {
        return Ok(());
    }
    log(format_args!("applying CRDs from {}", dir.display()));
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(kubectl);
        cmd.env("KUBECONFIG", kubeconfig)
            .args(extra)
            .arg("-f")
            .arg(dir)
            .stdin(Stdio::null());
        cmd
    };
    let apply = run(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=testenv",
    ]);
    let out = output(apply).await?;
    if !out.status.success() {
        return Err(Error::Invalid(format!(
            "applying {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // Right after creation a CRD has no conditions yet, which `kubectl
    // wait` reports as an error rather than waiting: poll.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = output(run(&[
            "wait",
            "--for",
            "condition=established",
            "--timeout=10s",
        ]))
        .await?;
        if out.status.success() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Invalid(format!(
                "CRDs in {} not established after 60s: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn output(mut cmd: Command) -> Result<std::process::Output> {
    let program = format!("{:?}", cmd.get_program());
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| Error::Invalid(format!("running {program}: {e}")))?
        .map_err(|source| Error::Spawn { program, source })
}

//! What `status` prints: each component's PID, address and log, and the
//! pods the stand-in runs.

use std::io::Write;
use std::path::PathBuf;

use super::{APISERVER, CONTROLLER_MANAGER, ETCD, Env, KUBELET, Options, running};
use crate::daemon::read_pid_file;
use crate::error::{Error, Result};

/// What runs where, and the log files; `Ok(true)` when the control plane
/// runs.
pub fn status(opts: &Options, out: &mut impl Write) -> Result<bool> {
    let w = |e: std::io::Error| Error::Io {
        what: "writing the status",
        path: PathBuf::from("-"),
        source: e,
    };
    if !opts.state_dir.exists() {
        writeln!(
            out,
            "testenv: not running (no {})",
            opts.state_dir.display()
        )
        .map_err(w)?;
        return Ok(false);
    }
    let env = std::fs::read_to_string(opts.cluster_env())
        .ok()
        .and_then(|t| Env::parse(&t, &opts.state_dir));
    writeln!(out, "state dir:  {}", opts.state_dir.display()).map_err(w)?;
    writeln!(
        out,
        "binaries:   {}",
        env.as_ref()
            .map_or("?".into(), |e| e.bin_dir.display().to_string())
    )
    .map_err(w)?;
    writeln!(out, "kubeconfig: {}", opts.kubeconfig().display()).map_err(w)?;
    for name in [ETCD, APISERVER, CONTROLLER_MANAGER, KUBELET] {
        let port = |p: fn(&Env) -> u16| env.as_ref().map_or("?".into(), |e| p(e).to_string());
        let where_ = match name {
            ETCD => format!("http://127.0.0.1:{}", port(|e| e.etcd_port)),
            APISERVER => format!("https://127.0.0.1:{}", port(|e| e.apiserver_port)),
            _ => "-".into(),
        };
        let daemon = opts.daemon(name);
        let pid = daemon
            .alive()
            .map_or("not running".to_string(), |p| format!("pid {p}"));
        writeln!(
            out,
            "  {name:<24} {pid:<12} {where_:<30} log {}",
            daemon.log.display()
        )
        .map_err(w)?;
    }
    let mut pods: Vec<PathBuf> = std::fs::read_dir(opts.state_dir.join("kubelet/pods"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    pods.retain(|d| d.join("pod").is_file());
    pods.sort();
    if pods.is_empty() {
        writeln!(out, "no pods run by telemetry-kubelet").map_err(w)?;
    } else {
        writeln!(out, "pods run by telemetry-kubelet:").map_err(w)?;
    }
    for dir in pods {
        let pod = std::fs::read_to_string(dir.join("pod")).unwrap_or_default();
        writeln!(out, "  {}", pod.trim_end()).map_err(w)?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|x| x == "pid"))
        {
            let container = f.file_stem().unwrap_or_default().to_string_lossy();
            if let Some((pid, exe)) = read_pid_file(f) {
                writeln!(out, "    {container:<20} pid {pid} {}", exe.display()).map_err(w)?;
            }
        }
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|x| x == "log"))
        {
            writeln!(out, "    log {}", f.display()).map_err(w)?;
        }
    }
    Ok(running(opts).is_some())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::control_plane::env;

    #[test]
    fn status_of_a_missing_state_dir_says_not_running() {
        let mut opts = Options::for_repo(Path::new("/nonexistent-repo"));
        opts.state_dir = std::env::temp_dir().join("testenv-status-none-xyz");
        let mut out = Vec::new();
        assert!(!status(&opts, &mut out).unwrap());
        assert!(String::from_utf8(out).unwrap().contains("not running"));
        assert!(env(&opts).is_err());
    }
}

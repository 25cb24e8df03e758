//! Pod processes: started with their own log file and PID file, signalled by
//! PID, reaped by tokio.
//!
//! Each process gets a process group of its own so that a Ctrl-C aimed at
//! whoever started the stand-in does not reach the pods; they stop only when
//! the stand-in stops them.

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use rustix::process::{Pid, Signal, kill_process};

use crate::error::{Error, Result};

/// What to start.
#[derive(Debug, Clone)]
pub struct Spec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// stdout and stderr, appended (across restarts).
    pub log: PathBuf,
    /// "PID EXE" while the process runs; `scripts/testenv down` uses it to
    /// clean up after a stand-in that died.
    pub pid_file: PathBuf,
}

/// A started process.
#[derive(Debug)]
pub struct Running {
    child: tokio::process::Child,
    pid: u32,
    pid_file: PathBuf,
}

/// How a process ended, in container-status terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    pub signal: Option<i32>,
}

impl From<ExitStatus> for Exit {
    fn from(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit { code, signal: None },
            // Shells and the kubelet report death by signal N as 128+N.
            (None, Some(sig)) => Exit {
                code: 128 + sig,
                signal: Some(sig),
            },
            (None, None) => Exit {
                code: -1,
                signal: None,
            },
        }
    }
}

impl Exit {
    /// The container status reason: `Completed` for 0, `Error` otherwise.
    pub fn reason(&self) -> &'static str {
        if self.code == 0 { "Completed" } else { "Error" }
    }
}

impl Running {
    /// Starts the process; the environment is exactly `spec.env` (nothing of
    /// the stand-in's own leaks in, in particular no KUBERNETES_SERVICE_HOST
    /// that would send a client to the Service CIDR).
    pub fn spawn(spec: &Spec) -> Result<Running> {
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .map_err(Error::io("opening container log", &spec.log))?;
        // Names only: values may be secrets.
        let names: Vec<&str> = spec.env.iter().map(|(k, _)| k.as_str()).collect();
        let _ = writeln!(
            log,
            "telemetry-kubelet: starting {} {}\ntelemetry-kubelet: environment: {}",
            spec.program.display(),
            spec.args.join(" "),
            names.join(" ")
        );
        let err = log
            .try_clone()
            .map_err(Error::io("opening container log", &spec.log))?;
        let mut cmd = std::process::Command::new(&spec.program);
        cmd.args(&spec.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.cwd)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0);
        let mut cmd = tokio::process::Command::from(cmd);
        // If the stand-in itself dies unexpectedly, do not leave pods behind.
        cmd.kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            program: spec.program.display().to_string(),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        let exe = std::fs::canonicalize(&spec.program).unwrap_or_else(|_| spec.program.clone());
        std::fs::write(&spec.pid_file, format!("{pid} {}\n", exe.display()))
            .map_err(Error::io("writing pid file", &spec.pid_file))?;
        Ok(Running {
            child,
            pid,
            pid_file: spec.pid_file.clone(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` to the process (not its group: the program decides
    /// what its children get, as PID 1 of a container would).
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = Pid::from_raw(self.pid as i32) {
            let _ = kill_process(pid, signal);
        }
    }

    /// Waits for the process to exit and removes its PID file.
    pub async fn wait(&mut self) -> Exit {
        let status = self.child.wait().await;
        let _ = std::fs::remove_file(&self.pid_file);
        match status {
            Ok(status) => status.into(),
            Err(_) => Exit {
                code: -1,
                signal: None,
            },
        }
    }
}

/// Appends a line to a container log, e.g. how the process ended.
pub fn note(log: &Path, line: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = writeln!(f, "telemetry-kubelet: {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_spawned_process_gets_only_the_given_env_and_a_pid_file() {
        let dir = std::env::temp_dir().join(format!("testenv-process-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = Spec {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "echo \"v=$V home=${HOME:-none}\"; exit 3".into(),
            ],
            env: vec![("V".into(), "42".into())],
            cwd: dir.clone(),
            log: dir.join("c.log"),
            pid_file: dir.join("c.pid"),
        };
        let mut running = Running::spawn(&spec).unwrap();
        assert!(
            std::fs::read_to_string(&spec.pid_file)
                .unwrap()
                .starts_with(&running.pid().to_string())
        );
        let exit = running.wait().await;
        assert_eq!(
            exit,
            Exit {
                code: 3,
                signal: None
            }
        );
        assert_eq!(exit.reason(), "Error");
        assert!(!spec.pid_file.exists());
        let log = std::fs::read_to_string(&spec.log).unwrap();
        assert!(log.contains("v=42 home=none"), "{log}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn sigterm_is_reported_as_128_plus_the_signal() {
        let dir = std::env::temp_dir().join(format!("testenv-process-term-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = Spec {
            program: "/bin/sleep".into(),
            args: vec!["30".into()],
            env: vec![],
            cwd: dir.clone(),
            log: dir.join("c.log"),
            pid_file: dir.join("c.pid"),
        };
        let mut running = Running::spawn(&spec).unwrap();
        running.signal(Signal::TERM);
        assert_eq!(
            running.wait().await,
            Exit {
                code: 143,
                signal: Some(15)
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

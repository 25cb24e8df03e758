//! The control plane's long-running processes (etcd, kube-apiserver,
//! kube-controller-manager, the kubelet stand-in): started detached, each
//! with a log file and a PID file, and later found and stopped by that PID
//! file alone, from another process (`telemetry-testenv down`, a test).
//!
//! A PID file holds `PID EXE`. A process counts as ours only while
//! `/proc/PID/exe` is still EXE, so a reused PID is never signalled; a
//! zombie counts as gone (some sandboxes' PID 1 reaps orphans only now and
//! then).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::error::{Error, Result};

/// Where a daemon's PID file and log live under the state directory.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub name: &'static str,
    pub pid_file: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// `<state>/pids/<name>.pid` and `<state>/logs/<name>.log`.
    pub fn new(state_dir: &Path, name: &'static str) -> Self {
        Self {
            name,
            pid_file: state_dir.join("pids").join(format!("{name}.pid")),
            log: state_dir.join("logs").join(format!("{name}.log")),
        }
    }

    /// Starts `exe` with `args`, output appended to the log, in a process
    /// group of its own (a Ctrl-C aimed at whoever ran `up` does not reach
    /// it), and records it in the PID file.
    pub fn start(&self, exe: &Path, args: &[String]) -> Result<u32> {
        for dir in [&self.pid_file, &self.log]
            .iter()
            .filter_map(|p| p.parent())
        {
            std::fs::create_dir_all(dir).map_err(Error::io("creating state directory", dir))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(Error::io("opening log", &self.log))?;
        let err = log
            .try_clone()
            .map_err(Error::io("opening log", &self.log))?;
        let child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn {
                program: exe.display().to_string(),
                source,
            })?;
        let pid = child.id();
        // Not waited for here: it outlives this process. Dropping the handle
        // neither kills nor waits.
        drop(child);
        let exe = std::fs::canonicalize(exe).unwrap_or_else(|_| exe.to_owned());
        let tmp = self.pid_file.with_extension("pid.tmp");
        std::fs::write(&tmp, format!("{pid} {}\n", exe.display()))
            .map_err(Error::io("writing pid file", &tmp))?;
        std::fs::rename(&tmp, &self.pid_file)
            .map_err(Error::io("writing pid file", &self.pid_file))?;
        Ok(pid)
    }

    /// The recorded PID, if the process still runs the recorded program.
    pub fn alive(&self) -> Option<u32> {
        let (pid, exe) = read_pid_file(&self.pid_file)?;
        process_runs(pid, &exe).then_some(pid)
    }

    /// Whether the running process's executable was replaced on disk since
    /// it started (a rebuild).
    pub fn rebuilt(&self) -> bool {
        self.alive().is_some_and(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|p| p.to_string_lossy().ends_with(" (deleted)"))
        })
    }

    /// SIGTERM, up to `grace` for it to exit, then SIGKILL; only the recorded
    /// PID, and only if it still runs the recorded program.
    pub fn stop(&self, grace: Duration) {
        let Some(pid) = self.alive() else { return };
        eprintln!("testenv: stopping {} (pid {pid})", self.name);
        signal(pid, Signal::TERM);
        if self.wait_exit(pid, grace) {
            return;
        }
        eprintln!(
            "testenv: {} did not exit within {grace:?}; killing pid {pid}",
            self.name
        );
        signal(pid, Signal::KILL);
        self.wait_exit(pid, Duration::from_secs(5));
    }

    /// Waits until the process is no longer ours, then until it is fully
    /// gone: an exiting process loses its `/proc/PID/exe` link while it
    /// still frees its memory, which a large one takes a while to do.
    fn wait_exit(&self, pid: u32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.alive().is_some() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let gone_by = Instant::now() + Duration::from_secs(10);
        while !gone(pid) && Instant::now() < gone_by {
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }
}

/// `PID EXE` from a PID file.
pub fn read_pid_file(path: &Path) -> Option<(u32, PathBuf)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (pid, exe) = text.trim_end().split_once(' ')?;
    Some((pid.parse().ok()?, PathBuf::from(exe)))
}

/// Whether `pid` runs `exe` (also when `exe` was replaced on disk since,
/// which the kernel reports as "EXE (deleted)") and is not a zombie.
pub fn process_runs(pid: u32, exe: &Path) -> bool {
    let Ok(actual) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    let deleted = format!("{} (deleted)", exe.display());
    (actual == exe || actual.as_os_str() == deleted.as_str()) && !gone(pid)
}

/// No such process, or only its zombie.
pub fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may
        // itself hold spaces or parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// Sends `sig` to `pid` (not its group).
pub fn signal(pid: u32, sig: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(pid, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("testenv-daemon-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_started_daemon_is_alive_logs_and_stops_on_sigterm() {
        let dir = state("start");
        let d = Daemon::new(&dir, "sleeper");
        let pid = d
            .start(
                Path::new("/bin/sh"),
                &[
                    "-c".into(),
                    "echo hello; while :; do sleep 0.1; done".into(),
                ],
            )
            .unwrap();
        assert_eq!(d.alive(), Some(pid));
        let (recorded, _) = read_pid_file(&d.pid_file).unwrap();
        assert_eq!(recorded, pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&d.log).unwrap().contains("hello") {
            assert!(Instant::now() < deadline, "nothing in the log");
            std::thread::sleep(Duration::from_millis(20));
        }
        d.stop(Duration::from_secs(10));
        assert_eq!(d.alive(), None);
        assert!(gone(pid));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_pid_file_naming_another_program_is_not_ours() {
        let dir = state("other");
        std::fs::create_dir_all(dir.join("pids")).unwrap();
        let d = Daemon::new(&dir, "x");
        // This test process runs the test binary, not /bin/true.
        std::fs::write(&d.pid_file, format!("{} /bin/true\n", std::process::id())).unwrap();
        assert_eq!(d.alive(), None, "a reused PID is never ours");
        // stop() must not signal this very process.
        d.stop(Duration::from_millis(100));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_or_garbled_pid_file_means_not_running() {
        let dir = state("garbled");
        std::fs::create_dir_all(dir.join("pids")).unwrap();
        let d = Daemon::new(&dir, "y");
        assert_eq!(d.alive(), None);
        std::fs::write(&d.pid_file, "not a pid\n").unwrap();
        assert_eq!(d.alive(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

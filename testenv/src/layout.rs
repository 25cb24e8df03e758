//! Where the stand-in keeps things under its state directory; shared with
//! the test support, which reads PID files and logs from there.
//!
//! ```text
//! <state>/pods/<ns>_<name>_<uid>/pod              "ns/name uid ip" while the pod runs
//! <state>/pods/<ns>_<name>_<uid>/<container>.log  stdout+stderr, plus the stand-in's notes
//! <state>/pods/<ns>_<name>_<uid>/<container>.pid  "PID EXE" while the process runs
//! <state>/pods/<ns>_<name>_<uid>/volumes/<vol>/   emptyDir, ConfigMap and Secret copies
//! <state>/pods/<ns>_<name>_<uid>/kubeconfig        the ServiceAccount's credentials
//! <state>/claims/<ns>/<claim>/                     PersistentVolumeClaims (outlive pods)
//! ```

use std::path::{Path, PathBuf};

/// The directory of one pod.
pub fn pod_dir(state: &Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
    state.join("pods").join(format!("{namespace}_{name}_{uid}"))
}

/// The root of the claim directories.
pub fn claims_dir(state: &Path) -> PathBuf {
    state.join("claims")
}

/// A container's log file.
pub fn container_log(pod_dir: &Path, container: &str) -> PathBuf {
    pod_dir.join(format!("{container}.log"))
}

/// A container's PID file.
pub fn container_pid(pod_dir: &Path, container: &str) -> PathBuf {
    pod_dir.join(format!("{container}.pid"))
}

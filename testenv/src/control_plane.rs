//! The supervisor: `up`, `down`, `status` and `env` of the local control
//! plane (etcd, kube-apiserver, kube-controller-manager built from Go
//! modules by `scripts/testenv build`, plus the kubelet stand-in), run as
//! [`daemon`](crate::daemon)s whose PID files, logs, credentials and ports
//! live in one state directory:
//!
//! ```text
//! <state>/cluster.env           ETCD_PORT, ETCD_PEER_PORT, APISERVER_PORT, BIN
//! <state>/pids/<daemon>.pid     "PID EXE"
//! <state>/logs/<daemon>.log
//! <state>/pki/                  see crate::pki
//! <state>/etcd/                 etcd's data
//! <state>/kubeconfig            the admin (token)
//! <state>/kubeconfig-nobody     a user with no RBAC grants
//! <state>/kubelet/              the stand-in's pods (crate::layout)
//! ```
//!
//! The binary `telemetry-testenv` and the test support ([`crate::cluster`])
//! both call these functions; `scripts/testenv` wraps the binary. Progress
//! goes to stderr, prefixed `testenv:`. What `up` and `env` print is in
//! [`exports`], what `status` prints in [`report`]; [`crd`] applies the
//! project's CRDs.

mod crd;
mod exports;
mod report;

pub use crd::apply_crds;
pub use exports::{Env, shell_quote};
pub use report::status;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::Api;

use crate::daemon::{Daemon, process_runs, read_pid_file};
use crate::error::{Error, Result};
use crate::kubelet::{DEFAULT_NODE_NAME, client_from_kubeconfig as client};
use crate::pki::{self, Pki};

/// Pods get 127.0.0.N addresses; Services get addresses from this range,
/// which nothing routes (the stand-in rewrites Service names to pod IPs).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";

const ETCD: &str = "etcd";
const APISERVER: &str = "kube-apiserver";
const CONTROLLER_MANAGER: &str = "kube-controller-manager";
const KUBELET: &str = "telemetry-kubelet";

/// Where things are.
#[derive(Debug, Clone)]
pub struct Options {
    /// The repository (for `crds/` and for building the stand-in).
    pub repo_root: PathBuf,
    /// The state directory (`TESTENV_STATE_DIR`, default
    /// `<repo>/.state/testenv`).
    pub state_dir: PathBuf,
    /// Where `scripts/testenv build` put etcd, kube-*, kubectl and helm;
    /// needed by `up` only (the others read it from `cluster.env`).
    pub bin_dir: Option<PathBuf>,
    /// Where `telemetry-kubelet` is, and the programs pods run
    /// (`telemetry-ingest`, `telemetry-operator`): `target/debug`.
    pub program_dir: PathBuf,
    /// Where pods' programs are, when not in `program_dir`
    /// (`TELEMETRY_BIN_DIR`).
    pub pod_program_dir: Option<PathBuf>,
    /// Start the kubelet stand-in.
    pub kubelet: bool,
}

impl Options {
    /// The defaults for the repository at `repo_root`: state in
    /// `<repo>/.state/testenv` unless `TESTENV_STATE_DIR` says otherwise,
    /// programs in `$CARGO_TARGET_DIR/debug` (default `<repo>/target/debug`).
    pub fn for_repo(repo_root: &Path) -> Self {
        let state_dir = std::env::var_os("TESTENV_STATE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root.join(".state/testenv"));
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root.join("target"));
        Self {
            repo_root: repo_root.to_owned(),
            state_dir,
            bin_dir: None,
            program_dir: target.join("debug"),
            pod_program_dir: std::env::var_os("TELEMETRY_BIN_DIR").map(PathBuf::from),
            kubelet: true,
        }
    }

    fn daemon(&self, name: &'static str) -> Daemon {
        Daemon::new(&self.state_dir, name)
    }

    fn cluster_env(&self) -> PathBuf {
        self.state_dir.join("cluster.env")
    }

    fn kubeconfig(&self) -> PathBuf {
        self.state_dir.join("kubeconfig")
    }

    fn pki(&self) -> Pki {
        Pki::new(self.state_dir.join("pki"))
    }

    fn logs(&self) -> PathBuf {
        self.state_dir.join("logs")
    }
}

fn log(line: impl std::fmt::Display) {
    eprintln!("testenv: {line}");
}

/// The running control plane, if etcd, kube-apiserver and
/// kube-controller-manager all run.
pub fn running(opts: &Options) -> Option<Env> {
    let text = std::fs::read_to_string(opts.cluster_env()).ok()?;
    let env = Env::parse(&text, &opts.state_dir)?;
    [ETCD, APISERVER, CONTROLLER_MANAGER]
        .iter()
        .all(|d| opts.daemon(d).alive().is_some())
        .then_some(env)
}

/// The exports of the running control plane.
pub fn env(opts: &Options) -> Result<Env> {
    running(opts).ok_or_else(|| {
        Error::Invalid(format!(
            "no testenv runs in {} (start one: eval \"$(scripts/testenv up)\")",
            opts.state_dir.display()
        ))
    })
}

/// Starts the control plane, or reuses the running one; starts the kubelet
/// stand-in if asked and not running (again if it was rebuilt since).
pub async fn up(opts: &Options) -> Result<Env> {
    let env = match running(opts) {
        Some(env) => {
            log(format_args!(
                "reusing the running control plane in {}",
                opts.state_dir.display()
            ));
            env
        }
        None => start_control_plane(opts).await?,
    };
    let kubelet = opts.daemon(KUBELET);
    if opts.kubelet && kubelet.rebuilt() {
        // As when a node's kubelet restarts: pods are stopped and started
        // again.
        log("telemetry-kubelet was rebuilt; restarting it");
        kubelet.stop(Duration::from_secs(120));
    }
    if opts.kubelet && kubelet.alive().is_none() {
        start_kubelet(opts, &env).await?;
    }
    log("ready");
    Ok(env)
}

async fn start_control_plane(opts: &Options) -> Result<Env> {
    let bin_dir = opts.bin_dir.clone().ok_or_else(|| {
        Error::Invalid(
            "`up` needs the control plane's binaries: pass --bin-dir (scripts/testenv up does)"
                .into(),
        )
    })?;
    for program in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kubectl",
    ] {
        if !bin_dir.join(program).is_file() {
            return Err(Error::Invalid(format!(
                "{program} is not in {} (run scripts/testenv build)",
                bin_dir.display()
            )));
        }
    }
    if opts.state_dir.exists() {
        log("removing the stale state of a previous run");
        down(opts)?;
    }
    for dir in ["logs", "pids", "etcd"] {
        let dir = opts.state_dir.join(dir);
        std::fs::create_dir_all(&dir).map_err(Error::io("creating state directory", &dir))?;
    }
    let pki = opts.pki();
    pki.create()?;
    let [etcd_port, etcd_peer_port, apiserver_port] = free_ports()?;
    let env = Env {
        etcd_port,
        etcd_peer_port,
        apiserver_port,
        bin_dir: bin_dir.clone(),
        state_dir: opts.state_dir.clone(),
    };
    let path = opts.cluster_env();
    std::fs::write(&path, env.file()).map_err(Error::io("writing cluster.env", &path))?;

    log(format_args!("starting etcd on 127.0.0.1:{etcd_port}"));
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let peer_url = format!("http://127.0.0.1:{etcd_peer_port}");
    opts.daemon(ETCD).start(
        &bin_dir.join("etcd"),
        &args([
            "--name",
            "testenv",
            "--data-dir",
            &opts.state_dir.join("etcd").display().to_string(),
            "--listen-client-urls",
            &etcd_url,
            "--advertise-client-urls",
            &etcd_url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &format!("testenv={peer_url}"),
            "--unsafe-no-fsync",
            "--quota-backend-bytes",
            "4294967296",
            "--log-level",
            "warn",
        ]),
    )?;
    wait_until(opts, ETCD, Duration::from_secs(60), || async {
        etcd_healthy(etcd_port)
    })
    .await?;

    log(format_args!(
        "starting kube-apiserver on https://127.0.0.1:{apiserver_port}"
    ));
    let file = |name: &str| pki.file(name).display().to_string();
    opts.daemon(APISERVER).start(
        &bin_dir.join("kube-apiserver"),
        &args([
            "--etcd-servers",
            &etcd_url,
            "--bind-address",
            "127.0.0.1",
            "--advertise-address",
            "127.0.0.1",
            "--secure-port",
            &apiserver_port.to_string(),
            "--cert-dir",
            &pki.dir.display().to_string(),
            "--tls-cert-file",
            &file("apiserver.crt"),
            "--tls-private-key-file",
            &file("apiserver.key"),
            "--client-ca-file",
            &file("ca.crt"),
            "--token-auth-file",
            &file("tokens.csv"),
            "--authorization-mode",
            "RBAC",
            "--service-account-issuer",
            "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file",
            &file("sa.pub"),
            "--service-account-signing-key-file",
            &file("sa.key"),
            "--service-cluster-ip-range",
            SERVICE_CIDR,
            "--allow-privileged=true",
            "--disable-admission-plugins",
            "ServiceAccount",
            "--endpoint-reconciler-type",
            "none",
            "--profiling=false",
        ]),
    )?;
    write_kubeconfig(&opts.kubeconfig(), &env, &pki, pki::ADMIN)?;
    write_kubeconfig(
        &opts.state_dir.join("kubeconfig-nobody"),
        &env,
        &pki,
        pki::NOBODY,
    )?;
    let client = client(&opts.kubeconfig()).await?;
    // A loaded machine may take minutes to install the bootstrap RBAC.
    wait_until(opts, APISERVER, Duration::from_secs(180), || {
        let client = client.clone();
        async move {
            let req = http::Request::get("/readyz").body(Vec::new()).ok()?;
            tokio::time::timeout(Duration::from_secs(5), client.request_text(req))
                .await
                .ok()?
                .ok()
        }
    })
    .await?;

    // Before the controller-manager: its garbage collector discovers
    // resource types only every 30 s.
    apply_crds(
        &env.kubectl(),
        &opts.kubeconfig(),
        &opts.repo_root.join("crds"),
    )
    .await?;

    log("starting kube-controller-manager");
    opts.daemon(CONTROLLER_MANAGER).start(
        &bin_dir.join("kube-controller-manager"),
        &args([
            "--kubeconfig",
            &opts.kubeconfig().display().to_string(),
            "--leader-elect=false",
            "--secure-port",
            "0",
            "--root-ca-file",
            &file("ca.crt"),
            "--service-account-private-key-file",
            &file("sa.key"),
            "--cluster-signing-cert-file",
            &file("ca.crt"),
            "--cluster-signing-key-file",
            &file("ca.key"),
            "--controllers",
            "*,-node-lifecycle-controller,-taint-eviction-controller",
        ]),
    )?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    wait_until(
        opts,
        "kube-controller-manager (default ServiceAccount)",
        Duration::from_secs(120),
        || {
            let accounts = accounts.clone();
            async move { accounts.get_opt("default").await.ok().flatten() }
        },
    )
    .await?;
    Ok(env)
}

async fn start_kubelet(opts: &Options, env: &Env) -> Result<()> {
    let exe = opts.program_dir.join(KUBELET);
    if !exe.is_file() {
        log("building the kubelet stand-in (cargo build -p telemetry-testenv --bins)");
        let repo = opts.repo_root.clone();
        let status = tokio::task::spawn_blocking(move || {
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args(["build", "-q", "-p", "telemetry-testenv", "--bins"])
                .current_dir(&repo)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
        })
        .await
        .map_err(|e| Error::Invalid(format!("building the kubelet stand-in: {e}")))?
        .map_err(|source| Error::Spawn {
            program: "cargo".into(),
            source,
        })?;
        if !status.success() {
            return Err(Error::Invalid(format!(
                "building the kubelet stand-in failed ({status})"
            )));
        }
    }
    let state = opts.state_dir.join("kubelet");
    std::fs::create_dir_all(&state).map_err(Error::io("creating state directory", &state))?;
    log("starting telemetry-kubelet");
    let programs = opts
        .pod_program_dir
        .clone()
        .unwrap_or_else(|| opts.program_dir.clone());
    let daemon = opts.daemon(KUBELET);
    daemon.start(
        &exe,
        &args([
            "--kubeconfig",
            &env.kubeconfig().display().to_string(),
            "--state-dir",
            &state.display().to_string(),
            "--bin-dir",
            &programs.display().to_string(),
        ]),
    )?;
    let nodes: Api<Node> = Api::all(client(&env.kubeconfig()).await?);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if daemon.alive().is_none() {
            return Err(Error::Invalid(format!(
                "telemetry-kubelet exited (log: {})",
                daemon.log.display()
            )));
        }
        let node = nodes.get_opt(DEFAULT_NODE_NAME).await.ok().flatten();
        if node.as_ref().is_some_and(node_ready) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Invalid(format!(
                "the kubelet stand-in's node is not Ready after 60s (log: {})",
                daemon.log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Stops what `up` started (the stand-in first: it stops the pods'
/// processes gracefully; then any pod process a crashed stand-in left
/// behind), and removes the state directory.
pub fn down(opts: &Options) -> Result<()> {
    if !opts.state_dir.exists() {
        log(format_args!(
            "nothing to stop ({} does not exist)",
            opts.state_dir.display()
        ));
        return Ok(());
    }
    opts.daemon(KUBELET).stop(Duration::from_secs(120));
    for pid_file in leftover_pid_files(&opts.state_dir.join("kubelet/pods")) {
        if let Some((pid, exe)) = read_pid_file(&pid_file)
            && process_runs(pid, &exe)
        {
            log(format_args!(
                "killing leftover pod process {pid} ({})",
                exe.display()
            ));
            crate::daemon::signal(pid, rustix::process::Signal::KILL);
        }
    }
    opts.daemon(CONTROLLER_MANAGER)
        .stop(Duration::from_secs(20));
    opts.daemon(APISERVER).stop(Duration::from_secs(30));
    opts.daemon(ETCD).stop(Duration::from_secs(20));
    std::fs::remove_dir_all(&opts.state_dir)
        .map_err(Error::io("removing the state directory", &opts.state_dir))?;
    log(format_args!(
        "stopped; removed {}",
        opts.state_dir.display()
    ));
    Ok(())
}

/// `<pods>/*/*.pid`: one per container the stand-in runs.
fn leftover_pid_files(pods: &Path) -> Vec<PathBuf> {
    let Ok(dirs) = std::fs::read_dir(pods) else {
        return Vec::new();
    };
    dirs.flatten()
        .filter_map(|d| std::fs::read_dir(d.path()).ok())
        .flat_map(|files| files.flatten().map(|f| f.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pid"))
        .collect()
}

fn write_kubeconfig(path: &Path, env: &Env, pki: &Pki, user: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testenv\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\nusers:\n- name: {user}\n  user:\n    token: {}\ncontexts:\n- name: testenv\n  context:\n    cluster: testenv\n    user: {user}\n    namespace: default\ncurrent-context: testenv\n",
        env.apiserver_port,
        pki.file("ca.crt").display(),
        pki.token(user)?,
    );
    std::fs::write(path, text).map_err(Error::io("writing a kubeconfig", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(Error::io("restricting a kubeconfig", path))
}

/// Three distinct free TCP ports on 127.0.0.1 (held open together while
/// they are picked, so they differ).
fn free_ports() -> Result<[u16; 3]> {
    let bind = || {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(Error::io("finding a free port", "127.0.0.1:0"))
    };
    let listeners = [bind()?, bind()?, bind()?];
    let port = |l: &TcpListener| {
        l.local_addr()
            .map(|a| a.port())
            .map_err(Error::io("finding a free port", "127.0.0.1:0"))
    };
    Ok([
        port(&listeners[0])?,
        port(&listeners[1])?,
        port(&listeners[2])?,
    ])
}

/// etcd's `/health` says `"health":"true"`.
fn etcd_healthy(port: u16) -> Option<()> {
    let mut stream =
        TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(2))
            .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    reply.contains("\"health\":\"true\"").then_some(())
}

/// Polls `check` every 500 ms until it answers, for at most `timeout`.
async fn wait_until<F, Fut, T>(
    opts: &Options,
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(Error::Invalid(format!(
                "{what} not ready after {}s (logs: {})",
                timeout.as_secs(),
                opts.logs().display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn args<const N: usize>(list: [&str; N]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let [a, b, c] = free_ports().unwrap();
        assert!(a != b && b != c && a != c);
    }
}

//! Test support: the testenv from a test's point of view. [`cluster`]
//! attaches to the control plane (starting it with [`control_plane::up`] if
//! needed) once per test binary; each test takes a [`TestNamespace`] of its
//! own and waits with [`wait_for`].
//!
//! This is the one module that speaks `anyhow`: its callers are tests.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use tokio::sync::OnceCell;

use crate::{control_plane, layout};

/// A running testenv.
#[derive(Debug)]
pub struct Cluster {
    state_dir: PathBuf,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    helm: PathBuf,
    config: kube::Config,
}

static CLUSTER: OnceCell<Cluster> = OnceCell::const_new();

/// The testenv, once per test binary: the Go binaries built if needed
/// (`scripts/testenv bin-dir`), [`control_plane::up`] (which reuses a
/// running control plane, and starts the kubelet stand-in if it is not
/// running), then the project's CRDs applied (server-side, idempotent).
pub async fn cluster() -> anyhow::Result<&'static Cluster> {
    CLUSTER.get_or_try_init(Cluster::start).await
}

/// The repository root (where `scripts/testenv` lives).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the testenv crate sits in the workspace root")
        .to_owned()
}

impl Cluster {
    async fn start() -> anyhow::Result<Cluster> {
        let repo_root = repo_root();
        // The Go build stays in bash; it prints where the binaries are.
        let script = repo_root.join("scripts/testenv");
        let output = tokio::task::spawn_blocking(move || {
            Command::new(&script)
                .arg("bin-dir")
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .with_context(|| format!("running {} bin-dir", script.display()))
        })
        .await??;
        if !output.status.success() {
            bail!("scripts/testenv bin-dir failed ({})", output.status);
        }
        let mut opts = control_plane::Options::for_repo(&repo_root);
        opts.bin_dir = Some(PathBuf::from(
            String::from_utf8_lossy(&output.stdout).trim(),
        ));
        let env = control_plane::up(&opts).await?;
        let kubeconfig = env.kubeconfig();
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?;
        // Again when reusing a running control plane: the CRDs may have
        // changed since it started.
        control_plane::apply_crds(&env.kubectl(), &kubeconfig, &repo_root.join("crds")).await?;
        Ok(Cluster {
            state_dir: env.state_dir.clone(),
            kubectl: env.kubectl(),
            helm: env.helm(),
            kubeconfig,
            config,
        })
    }

    /// A new client. Call it inside each test's runtime: a client's
    /// connection pool lives on the runtime that created it, and every
    /// `#[tokio::test]` has its own.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config.clone())
            .expect("a kube client from the testenv kubeconfig")
    }

    /// The client configuration, for a test that needs a client of its own
    /// (say, without kube's retries of 429 answers).
    pub fn config(&self) -> kube::Config {
        self.config.clone()
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The pinned kubectl, with KUBECONFIG set.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// The pinned helm, with KUBECONFIG set and its caches in the state dir.
    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(&self.helm);
        let home = self.state_dir.join("helm");
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        cmd
    }

    /// The testenv's state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// A fresh namespace, `<prefix>-<random>`, created.
    pub async fn namespace(&self, prefix: &str) -> anyhow::Result<TestNamespace> {
        let name = unique_name(prefix);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"testenv.telemetry.io/test": "true"}}
        }))?;
        Api::<Namespace>::all(self.client())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(TestNamespace {
            name,
            kubectl: self.kubectl.clone(),
            kubeconfig: self.kubeconfig.clone(),
            config: self.config.clone(),
            cleaned: false,
        })
    }

    /// The stand-in's directory for a pod (logs, PID files, volumes).
    pub fn pod_dir(&self, pod: &Pod) -> PathBuf {
        layout::pod_dir(
            &self.state_dir.join("kubelet"),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default(),
            pod.metadata.uid.as_deref().unwrap_or_default(),
        )
    }

    /// The PID of a container's process while it runs.
    pub fn container_pid(&self, pod: &Pod, container: &str) -> Option<u32> {
        let text =
            std::fs::read_to_string(layout::container_pid(&self.pod_dir(pod), container)).ok()?;
        text.split_whitespace().next()?.parse().ok()
    }

    /// A container's log (its stdout and stderr, and the stand-in's notes
    /// about starts, signals and exits).
    pub fn container_log(&self, pod: &Pod, container: &str) -> PathBuf {
        layout::container_log(&self.pod_dir(pod), container)
    }
}

/// A namespace owned by one test. `cleanup().await` deletes it and waits
/// until it is gone; dropping it without that deletes it in the background
/// (unless TESTENV_KEEP_NAMESPACES is set, for debugging).
#[derive(Debug)]
pub struct TestNamespace {
    pub name: String,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    config: kube::Config,
    cleaned: bool,
}

impl TestNamespace {
    /// Deletes the namespace and waits until the namespace controller and
    /// the stand-in have removed everything in it.
    pub async fn cleanup(mut self) -> anyhow::Result<()> {
        self.cleaned = true;
        let api = Api::<Namespace>::all(kube::Client::try_from(self.config.clone())?);
        match api.delete(&self.name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e).context(format!("deleting namespace {}", self.name)),
        }
        let name = self.name.clone();
        let gone = wait_for(
            &format!("namespace {name} to be gone"),
            Duration::from_secs(180),
            || {
                let api = api.clone();
                let name = name.clone();
                async move { matches!(api.get_opt(&name).await, Ok(None)).then_some(()) }
            },
        )
        .await;
        let Err(e) = gone else { return Ok(()) };
        // Say what holds it: the namespace controller's conditions name the
        // remaining content and when it looks again.
        let conditions = match api.get_opt(&name).await {
            Ok(Some(ns)) => ns
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c.status == "True")
                .map(|c| format!("{}: {}", c.type_, c.message.unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("; "),
            _ => String::new(),
        };
        Err(anyhow::anyhow!("{e}; namespace conditions: {conditions}"))
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.cleaned || std::env::var_os("TESTENV_KEEP_NAMESPACES").is_some() {
            return;
        }
        let _ = Command::new(&self.kubectl)
            .env("KUBECONFIG", &self.kubeconfig)
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Polls `f` (every 250 ms) until it returns `Some`, or fails after
/// `timeout` naming `what`.
pub async fn wait_for<F, Fut, T>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The pod's IP if the API says it is Ready.
pub fn ready_ip(pod: &Pod) -> Option<Ipv4Addr> {
    if !crate::context::is_ready(pod) || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

/// Waits until exactly `count` pods match `selector` in `ns`, all Ready and
/// none being deleted; returns them.
pub async fn ready_pods(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let params = ListParams::default().labels(selector);
    wait_for(
        &format!("{count} Ready pods matching {selector} in {ns}"),
        timeout,
        || {
            let api = api.clone();
            let params = params.clone();
            async move {
                let pods = api.list(&params).await.ok()?.items;
                (pods.len() == count && pods.iter().all(|p| ready_ip(p).is_some())).then_some(pods)
            }
        },
    )
    .await
}

/// Whether a process runs (a zombie does not count).
pub fn process_alive(pid: u32) -> bool {
    !crate::daemon::gone(pid)
}

/// `export K=V` lines of `scripts/testenv up`/`env` (values are quoted by
/// [`control_plane::shell_quote`]; our paths need no more unquoting than
/// the outer quotes).
pub fn parse_exports(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let v = v
                .trim()
                .trim_matches('\'')
                .trim_matches('"')
                .replace('\\', "");
            (k.to_owned(), v)
        })
        .collect()
}

fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mix = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let prefix: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(50)
        .collect();
    format!("{}-{:08x}", prefix.trim_matches('-'), mix as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_are_parsed_and_the_path_line_ignored() {
        let text = "export KUBECONFIG=/s/kubeconfig\nexport TESTENV_HELM='/c/bin/helm'\ncase \":$PATH:\" in *) ;; esac\n";
        assert_eq!(
            parse_exports(text),
            vec![
                ("KUBECONFIG".to_string(), "/s/kubeconfig".to_string()),
                ("TESTENV_HELM".to_string(), "/c/bin/helm".to_string())
            ]
        );
    }

    #[test]
    fn namespace_names_are_unique_and_valid() {
        let a = unique_name("E2E_Scale");
        let b = unique_name("E2E_Scale");
        assert_ne!(a, b);
        assert!(a.starts_with("e2e-scale-"), "{a}");
        assert!(
            a.len() <= 63
                && a.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }

    #[test]
    fn this_process_is_alive_and_a_bogus_pid_is_not() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX - 1));
    }
}

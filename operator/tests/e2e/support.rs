//! Test support: an in-process operator per test namespace, the examples,
//! the `telemetryctl` binary, and small waits on the real apiserver.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use telemetry_operator::TelemetryPipeline;
use telemetry_operator::config::{DEFAULT_LEASE_NAME, LeaderElection, Settings};
use telemetry_testenv::{Cluster, TestNamespace, wait_for};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a pipeline may take to become Ready (a Redis and an ingest
/// process start on a loaded two-core machine).
pub const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// The ingest image the operator is told to use; the kubelet stand-in maps
/// any `*/telemetry-ingest` image to the workspace's binary.
pub const INGEST_IMAGE: &str = "ghcr.io/telemetry-pipeline/telemetry-ingest:dev";

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// An example manifest from `examples/`.
pub fn example(file: &str) -> PathBuf {
    repo_root().join("examples").join(file)
}

/// A leader election among the test's replicas: the Lease
/// `telemetry-operator` in the test namespace, `identity` for this replica,
/// and a term of `duration` renewed `grace` before it ends.
pub fn election(ns: &str, identity: &str, duration: Duration, grace: Duration) -> LeaderElection {
    LeaderElection {
        lease_name: DEFAULT_LEASE_NAME.to_string(),
        namespace: ns.to_string(),
        identity: identity.to_string(),
        duration,
        grace,
    }
}

/// The operator, running in this process against one namespace.
pub struct Operator {
    shutdown: CancellationToken,
    task: JoinHandle<telemetry_operator::Result<()>>,
    /// Where its /metrics, /healthz and /readyz are served.
    pub http: String,
}

impl Operator {
    /// Starts the operator for namespace `ns` and waits until /readyz says so.
    pub async fn start(client: Client, ns: &str) -> anyhow::Result<Self> {
        Self::start_with(client, ns, None).await
    }

    /// Starts one replica taking part in `election` and waits until /readyz
    /// says so, which a follower does too.
    pub async fn start_elected(
        client: Client,
        ns: &str,
        election: LeaderElection,
    ) -> anyhow::Result<Self> {
        Self::start_with(client, ns, Some(election)).await
    }

    async fn start_with(
        client: Client,
        ns: &str,
        leader_election: Option<LeaderElection>,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http = format!("http://{}", listener.local_addr()?);
        let settings = Settings {
            namespaces: vec![ns.to_string()],
            ingest_image: INGEST_IMAGE.to_string(),
            leader_election,
            ..Settings::default()
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(telemetry_operator::run(
            client,
            settings,
            listener,
            shutdown.clone(),
        ));
        let url = format!("{http}/readyz");
        wait_for("the operator's /readyz", Duration::from_secs(30), || {
            let url = url.clone();
            async move {
                let resp = reqwest::get(&url).await.ok()?;
                resp.status().is_success().then_some(())
            }
        })
        .await?;
        Ok(Self {
            shutdown,
            task,
            http,
        })
    }

    /// Stops it the way SIGTERM does and waits until it has exited cleanly.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .context("the operator did not shut down within 30 s")??
            .context("the operator's run() failed")?;
        Ok(())
    }

    /// Kills it like a crash: `run()` is dropped wherever it is, so nothing is
    /// released (a Lease it holds stays until its term ends). Then its HTTP
    /// server, a task of its own, is stopped too.
    pub async fn kill(self) -> anyhow::Result<()> {
        self.task.abort();
        match self.task.await {
            Err(join) if join.is_cancelled() => {}
            other => bail!("the operator had already exited: {other:?}"),
        }
        self.shutdown.cancel();
        Ok(())
    }

    /// Waits (at most `timeout`) until `run()` returns by itself; its result.
    pub async fn exited(self, timeout: Duration) -> anyhow::Result<telemetry_operator::Result<()>> {
        let result = tokio::time::timeout(timeout, self.task)
            .await
            .with_context(|| format!("the operator still runs after {timeout:?}"))?;
        self.shutdown.cancel();
        Ok(result?)
    }

    /// Waits (at most `timeout`) until its `telemetry_operator_leader` is 1.
    pub async fn wait_leading(&self, timeout: Duration) -> anyhow::Result<()> {
        wait_for(&format!("{} to lead", self.http), timeout, || async {
            let leader = self.metric("telemetry_operator_leader").await.ok()?;
            (leader == 1.0).then_some(())
        })
        .await
    }

    /// Every sample on /metrics: (series with its labels, value).
    async fn samples(&self) -> anyhow::Result<Vec<(String, f64)>> {
        let text = reqwest::get(format!("{}/metrics", self.http))
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(name, v)| (name.to_string(), v.parse::<f64>().unwrap_or(0.0)))
            .collect())
    }

    /// The value of one sample on /metrics (0 when absent), e.g.
    /// `telemetry_operator_reconciliations_total{result="ok"}`.
    pub async fn metric(&self, series: &str) -> anyhow::Result<f64> {
        Ok(self
            .samples()
            .await?
            .into_iter()
            .filter(|(name, _)| name == series)
            .map(|(_, v)| v)
            .sum())
    }

    /// Sum of every sample of the metric `name`, whatever its labels.
    pub async fn sum(&self, name: &str) -> anyhow::Result<f64> {
        Ok(self
            .samples()
            .await?
            .into_iter()
            .filter(|(series, _)| series.split('{').next() == Some(name))
            .map(|(_, v)| v)
            .sum())
    }

    /// Sum of every `telemetry_operator_child_writes_total` sample.
    pub async fn child_writes(&self) -> anyhow::Result<f64> {
        self.sum("telemetry_operator_child_writes_total").await
    }
}

/// A test's world: the cluster, a fresh namespace, a client and an operator.
pub struct World {
    pub cluster: &'static Cluster,
    pub ns: TestNamespace,
    pub client: Client,
    pub operator: Option<Operator>,
}

impl World {
    /// A namespace `<prefix>-<random>` with an operator watching it.
    pub async fn new(prefix: &str) -> anyhow::Result<Self> {
        let mut world = Self::without_operator(prefix).await?;
        world.operator = Some(Operator::start(world.client.clone(), world.ns()).await?);
        Ok(world)
    }

    /// A namespace `<prefix>-<random>`; the test starts the operators.
    pub async fn without_operator(prefix: &str) -> anyhow::Result<Self> {
        let cluster = telemetry_testenv::cluster().await?;
        let ns = cluster.namespace(prefix).await?;
        let client = cluster.client();
        Ok(Self {
            cluster,
            ns,
            client,
            operator: None,
        })
    }

    /// The leader-election Lease in the test namespace, if it exists.
    pub async fn lease(&self) -> anyhow::Result<Option<Lease>> {
        Ok(self.api::<Lease>().get_opt(DEFAULT_LEASE_NAME).await?)
    }

    /// The Lease's `holderIdentity`.
    pub async fn lease_holder(&self) -> anyhow::Result<Option<String>> {
        Ok(self
            .lease()
            .await?
            .and_then(|lease| lease.spec?.holder_identity))
    }

    /// The namespace's name.
    pub fn ns(&self) -> &str {
        &self.ns.name
    }

    /// Typed API in the test namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), self.ns())
    }

    /// Runs kubectl in the test namespace; returns its output (not checked).
    pub async fn kubectl(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut cmd = self.cluster.kubectl();
        cmd.arg("-n").arg(self.ns()).args(args);
        Ok(tokio::task::spawn_blocking(move || cmd.output()).await??)
    }

    /// Runs kubectl and fails with its stderr unless it succeeds; returns stdout.
    pub async fn kubectl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.kubectl(args).await?;
        if !out.status.success() {
            bail!(
                "kubectl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl apply -f <example>` and `kubectl wait --for=condition=Ready`,
    /// as a user would.
    pub async fn apply_and_wait_ready(
        &self,
        file: &str,
        name: &str,
    ) -> anyhow::Result<TelemetryPipeline> {
        let path = example(file);
        self.kubectl_ok(&["apply", "-f", path.to_str().unwrap()])
            .await?;
        self.wait_ready(name).await
    }

    /// Server-side applies a pipeline `name` with `spec` (JSON) and waits
    /// until it is Ready.
    pub async fn apply_spec(
        &self,
        name: &str,
        spec: serde_json::Value,
    ) -> anyhow::Result<TelemetryPipeline> {
        let tp: TelemetryPipeline = serde_json::from_value(serde_json::json!({
            "apiVersion": "telemetrypipeline.io/v1alpha1", "kind": "TelemetryPipeline",
            "metadata": {"name": name},
            "spec": spec,
        }))?;
        self.api::<TelemetryPipeline>()
            .patch(
                name,
                &PatchParams::apply("e2e"),
                &Patch::Apply(serde_json::to_value(&tp)?),
            )
            .await?;
        self.wait_ready(name).await
    }

    /// `kubectl wait --for=condition=Ready tpl/NAME`.
    pub async fn wait_ready(&self, name: &str) -> anyhow::Result<TelemetryPipeline> {
        let timeout = format!("--timeout={}s", READY_TIMEOUT.as_secs());
        self.kubectl_ok(&[
            "wait",
            "--for=condition=Ready",
            &format!("tpl/{name}"),
            &timeout,
        ])
        .await?;
        Ok(self.api::<TelemetryPipeline>().get(name).await?)
    }

    /// Waits until the pipeline's condition `type_` has `status`.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
    ) -> anyhow::Result<TelemetryPipeline> {
        let api = self.api::<TelemetryPipeline>();
        wait_for(
            &format!("{type_}={status} on tpl/{name}"),
            READY_TIMEOUT,
            || {
                let api = api.clone();
                async move {
                    let tp = api.get(name).await.ok()?;
                    (tp.condition(type_)?.status == status).then_some(tp)
                }
            },
        )
        .await
    }

    /// The Ready ingest pods of pipeline `name`.
    pub async fn ingest_pods(&self, name: &str, count: usize) -> anyhow::Result<Vec<Pod>> {
        let selector =
            format!("app.kubernetes.io/name=telemetry-ingest,app.kubernetes.io/instance={name}");
        telemetry_testenv::ready_pods(&self.client, self.ns(), &selector, count, READY_TIMEOUT)
            .await
    }

    /// `(kind/name → resourceVersion)` of the pipeline and every child.
    pub async fn versions(&self, name: &str) -> anyhow::Result<BTreeMap<String, String>> {
        let selector = format!("app.kubernetes.io/instance={name}");
        let lp = ListParams::default().labels(&selector);
        let mut out = BTreeMap::new();
        let tp = self.api::<TelemetryPipeline>().get(name).await?;
        out.insert(
            format!("TelemetryPipeline/{name}"),
            tp.resource_version().unwrap_or_default(),
        );
        macro_rules! collect {
            ($($k:ty),*) => {$(
                for o in self.api::<$k>().list(&lp).await?.items {
                    out.insert(
                        format!("{}/{}", stringify!($k), o.name_any()),
                        o.resource_version().unwrap_or_default(),
                    );
                }
            )*};
        }
        collect!(Deployment, StatefulSet, Service, ConfigMap, Secret);
        Ok(out)
    }
}

/// The directory of the workspace's binaries (next to this test's `deps/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

/// Runs `telemetryctl` with `args`; fails unless it exits 0.
pub async fn telemetryctl(args: &[&str]) -> anyhow::Result<String> {
    let bin = bin_dir().join("telemetryctl");
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p telemetryctl)",
        bin.display()
    );
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    if !out.status.success() {
        bail!(
            "telemetryctl {args:?} exited {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Events per device, as `telemetryctl devices --json` reports them.
pub async fn device_counts(http: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = telemetryctl(&["devices", "--http", http, "--json", "--limit", "1000"]).await?;
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&text).with_context(|| format!("devices JSON: {text}"))?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r["deviceId"].as_str()?.to_string(), r["count"].as_u64()?)))
        .collect())
}

/// A pod's IP.
pub fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("a Ready pod has an IP")
}

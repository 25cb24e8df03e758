//! The Helm chart, installed from the repository into the test control plane
//! the way a user installs it: the operator runs as pods under the chart's
//! ServiceAccount (the kubelet stand-in hands each pod a bound token, so the
//! apiserver's RBAC decides what it may do), in namespaces that enforce the
//! `restricted` Pod Security Standard.
//!
//! A cluster-wide operator sees every namespace, so these tests run one at a
//! time, and in their own test binary: cargo runs test binaries one after
//! another, so no other test's in-process operator is running meanwhile.
//! Needs the testenv (`scripts/testenv build`) and `cargo build --bins`.

#[allow(dead_code)]
#[path = "../e2e/support.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use support::{READY_TIMEOUT, device_counts, example, pod_ip, repo_root, telemetryctl};
use telemetry_operator::TelemetryPipeline;
use telemetry_testenv::{Cluster, TestNamespace, wait_for};

/// The examples the tests apply: file and pipeline name.
const KIND: (&str, &str) = ("pipeline-kind.yaml", "kind");
const MINIMAL: (&str, &str) = ("pipeline-minimal.yaml", "minimal");

/// One test at a time (see the crate comment).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The chart's directory.
fn chart() -> String {
    repo_root()
        .join("charts/telemetry-pipeline")
        .to_string_lossy()
        .into_owned()
}

/// Runs a command; fails with its output unless it exits 0; returns stdout.
async fn run(mut cmd: std::process::Command, what: &str) -> anyhow::Result<String> {
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    if !out.status.success() {
        bail!(
            "{what} exited {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn helm(cluster: &Cluster, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = cluster.helm();
    cmd.args(args);
    run(cmd, &format!("helm {}", args.join(" "))).await
}

/// `helm uninstall`, waiting until what it deletes is gone.
async fn uninstall(cluster: &Cluster, release: &str, ns: &str) -> anyhow::Result<()> {
    helm(
        cluster,
        &["uninstall", release, "-n", ns, "--wait", "--timeout", "3m"],
    )
    .await
    .map(drop)
}

async fn kubectl(cluster: &Cluster, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = cluster.kubectl();
    cmd.args(args);
    run(cmd, &format!("kubectl {}", args.join(" "))).await
}

/// A fresh namespace that enforces the `restricted` Pod Security Standard.
async fn restricted_namespace(cluster: &Cluster, prefix: &str) -> anyhow::Result<TestNamespace> {
    let ns = cluster.namespace(prefix).await?;
    kubectl(
        cluster,
        &[
            "label",
            "namespace",
            &ns.name,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest",
        ],
    )
    .await?;
    Ok(ns)
}

/// The namespace really refuses a pod that breaks the restricted standard,
/// so a pod that runs there was admitted under it.
async fn assert_enforces_restricted(cluster: &Cluster, ns: &str) -> anyhow::Result<()> {
    let privileged = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"privileged"},
        "spec":{"containers":[{"name":"c","image":"redis:7",
        "securityContext":{"privileged":true}}]}}"#;
    let path = std::env::temp_dir().join(format!("privileged-{ns}.json"));
    std::fs::write(&path, privileged)?;
    let mut cmd = cluster.kubectl();
    cmd.args(["apply", "--dry-run=server", "-n", ns, "-f"])
        .arg(&path);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains("violates PodSecurity \"restricted"),
        "namespace {ns} admitted a privileged pod: {stderr}"
    );
    Ok(())
}

/// No controller in `ns` failed to create a pod (PodSecurity refusals show
/// as FailedCreate events on the ReplicaSet or StatefulSet).
async fn assert_no_pod_refused(cluster: &Cluster, ns: &str) -> anyhow::Result<()> {
    let events = kubectl(
        cluster,
        &[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            "reason=FailedCreate",
            "-o",
            "custom-columns=MSG:.message",
            "--no-headers",
        ],
    )
    .await?;
    ensure!(events.trim().is_empty(), "pods refused in {ns}:\n{events}");
    Ok(())
}

/// The Ready operator pods of release `release`.
async fn operator_pods(
    client: &Client,
    ns: &str,
    release: &str,
    count: usize,
) -> anyhow::Result<Vec<Pod>> {
    let selector =
        format!("app.kubernetes.io/name=telemetry-operator,app.kubernetes.io/instance={release}");
    telemetry_testenv::ready_pods(client, ns, &selector, count, READY_TIMEOUT).await
}

/// `kubectl auth can-i VERB RESOURCE [-n NS]` as the operator's
/// ServiceAccount (`RESOURCE` may name a subresource, `deployments/scale`):
/// true when allowed.
async fn can_i(
    cluster: &Cluster,
    sa: &str,
    verb: &str,
    resource: &str,
    ns: Option<&str>,
) -> anyhow::Result<bool> {
    let mut cmd = cluster.kubectl();
    cmd.args(["auth", "can-i", verb, "--as", sa]);
    match resource.split_once('/') {
        Some((resource, sub)) => cmd.args([resource, "--subresource", sub]),
        None => cmd.arg(resource),
    };
    match ns {
        Some(ns) => cmd.args(["-n", ns]),
        None => cmd.arg("--all-namespaces"),
    };
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match answer.as_str() {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => bail!(
            "kubectl auth can-i {verb} {resource}: {answer} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Applies `examples/<file>` (pipeline `name`) in `ns`, waits for Ready,
/// sends `n` events to an ingest pod and checks that the pipeline holds
/// `total` events.
async fn pipeline_serves(
    cluster: &Cluster,
    client: &Client,
    ns: &str,
    (file, name): (&str, &str),
    n: u64,
    total: u64,
) -> anyhow::Result<()> {
    let file = example(file);
    kubectl(
        cluster,
        &["apply", "-n", ns, "-f", file.to_str().expect("UTF-8 path")],
    )
    .await?;
    let timeout = format!("--timeout={}s", READY_TIMEOUT.as_secs());
    kubectl(
        cluster,
        &[
            "wait",
            "-n",
            ns,
            "--for=condition=Ready",
            &format!("tpl/{name}"),
            &timeout,
        ],
    )
    .await?;
    let selector =
        format!("app.kubernetes.io/name=telemetry-ingest,app.kubernetes.io/instance={name}");
    let pods = telemetry_testenv::ready_pods(client, ns, &selector, 1, READY_TIMEOUT).await?;
    let ip = pod_ip(&pods[0]);
    telemetryctl(&[
        "send",
        "--grpc",
        &format!("http://{ip}:50051"),
        "--n",
        &n.to_string(),
        "--devices",
        "10",
        "--no-progress",
    ])
    .await?;
    let counts = device_counts(&format!("http://{ip}:8000")).await?;
    ensure!(
        counts.values().sum::<u64>() == total,
        "pipeline in {ns} holds {counts:?}, expected {total} events in all"
    );
    Ok(())
}

/// kind-config.yaml maps the node ports of examples/pipeline-kind.yaml's
/// Service to the host ports docs/kind.md sends to: 50051 for gRPC and 8000
/// for HTTP.
async fn assert_kind_ports_reach_the_service(client: &Client, ns: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(repo_root().join("kind-config.yaml"))?;
    let config: serde_json::Value = serde_yaml::from_str(&text)?;
    let mapped: BTreeSet<(i64, i64)> = config["nodes"]
        .as_array()
        .context("kind-config.yaml: nodes")?
        .iter()
        .flat_map(|node| {
            node["extraPortMappings"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|m| m["listenAddress"] == "127.0.0.1")
        .filter_map(|m| Some((m["containerPort"].as_i64()?, m["hostPort"].as_i64()?)))
        .collect();
    let service = Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), ns)
        .get("kind-ingest")
        .await?;
    let spec = service.spec.context("service spec")?;
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    let node_ports: BTreeSet<(String, i64)> = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| Some((p.name?, i64::from(p.node_port?))))
        .collect();
    for (port, host) in [("grpc", 50051), ("http", 8000)] {
        let node_port = node_ports
            .iter()
            .find(|(name, _)| name == port)
            .map(|(_, n)| *n)
            .with_context(|| format!("no {port} node port: {node_ports:?}"))?;
        assert!(
            mapped.contains(&(node_port, host)),
            "kind-config.yaml does not map node port {node_port} ({port}) to 127.0.0.1:{host}: {mapped:?}"
        );
    }
    Ok(())
}

/// Names of the objects labelled as the release's, by kind, in `ns` and
/// cluster-wide.
async fn release_objects(cluster: &Cluster, release: &str) -> anyhow::Result<BTreeSet<String>> {
    let selector =
        format!("app.kubernetes.io/instance={release},app.kubernetes.io/managed-by=Helm");
    let namespaced = kubectl(
        cluster,
        &[
            "get",
            "deployments,replicasets,pods,services,serviceaccounts,configmaps,roles,rolebindings",
            "-A",
            "-l",
            &selector,
            "-o",
            "name",
        ],
    )
    .await?;
    let cluster_wide = kubectl(
        cluster,
        &[
            "get",
            "clusterroles,clusterrolebindings",
            "-l",
            &selector,
            "-o",
            "name",
        ],
    )
    .await?;
    Ok(namespaced
        .lines()
        .chain(cluster_wide.lines())
        .map(str::to_string)
        .collect())
}

#[tokio::test]
async fn cluster_wide_install_serves_a_pipeline_survives_an_upgrade_and_uninstalls_cleanly()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let cluster = telemetry_testenv::cluster().await?;
    let client = cluster.client();
    let system = restricted_namespace(cluster, "tp-system").await?;
    let apps = restricted_namespace(cluster, "tp-apps").await?;
    assert_enforces_restricted(cluster, &system.name).await?;
    assert_enforces_restricted(cluster, &apps.name).await?;
    let release = system.name.clone();
    let sa = format!("system:serviceaccount:{}:{release}-operator", system.name);

    // Install: two operator pods under the chart's ServiceAccount, one leads.
    helm(
        cluster,
        &[
            "install",
            &release,
            &chart(),
            "-n",
            &system.name,
            "--wait",
            "--timeout",
            "5m",
        ],
    )
    .await?;
    let first = operator_pods(&client, &system.name, &release, 2).await?;
    for pod in &first {
        let spec = pod.spec.as_ref().context("pod spec")?;
        assert_eq!(
            spec.service_account_name.as_deref(),
            Some(format!("{release}-operator").as_str()),
            "the operator runs under the chart's ServiceAccount"
        );
    }
    assert!(can_i(cluster, &sa, "patch", "deployments/scale", Some(&apps.name)).await?);
    assert!(can_i(cluster, &sa, "watch", "telemetrypipelines", None).await?);

    // A pipeline in another namespace becomes Ready and stores what it is sent.
    pipeline_serves(cluster, &client, &apps.name, KIND, 1000, 1000).await?;
    assert_no_pod_refused(cluster, &system.name).await?;
    assert_no_pod_refused(cluster, &apps.name).await?;
    assert_kind_ports_reach_the_service(&client, &apps.name).await?;
    let tp = Api::<TelemetryPipeline>::namespaced(client.clone(), &apps.name)
        .get("kind")
        .await?;
    let managers: BTreeSet<_> = tp
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.contains("telemetry-operator"),
        "the in-cluster operator wrote the status: {managers:?}"
    );

    // Upgrade with a changed value: new operator pods replace the old ones,
    // and the pipeline keeps serving and being reconciled.
    helm(
        cluster,
        &[
            "upgrade",
            &release,
            &chart(),
            "-n",
            &system.name,
            "--reuse-values",
            "--set",
            "logLevel=debug",
            "--wait",
            "--timeout",
            "5m",
        ],
    )
    .await?;
    let old: BTreeSet<_> = first.iter().map(|p| p.uid().unwrap_or_default()).collect();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &system.name);
    let selector =
        format!("app.kubernetes.io/name=telemetry-operator,app.kubernetes.io/instance={release}");
    let rolled = wait_for(
        "the old operator pods to be replaced",
        READY_TIMEOUT,
        || {
            let pods = pods.clone();
            let selector = selector.clone();
            let old = old.clone();
            async move {
                let list = pods
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .ok()?;
                let ready: Vec<Pod> = list
                    .items
                    .into_iter()
                    .filter(|p| telemetry_testenv::ready_ip(p).is_some())
                    .collect();
                let all_new = ready
                    .iter()
                    .all(|p| !old.contains(&p.uid().unwrap_or_default()));
                (ready.len() == 2 && all_new).then_some(ready)
            }
        },
    )
    .await?;
    let env = rolled[0].spec.as_ref().context("pod spec")?.containers[0]
        .env
        .clone()
        .unwrap_or_default();
    assert!(
        env.iter()
            .any(|e| e.name == "RUST_LOG" && e.value.as_deref() == Some("debug")),
        "the upgraded pods run with the new log level: {env:?}"
    );
    pipeline_serves(cluster, &client, &apps.name, KIND, 500, 1500).await?;
    kubectl(
        cluster,
        &[
            "patch",
            "tpl",
            "kind",
            "-n",
            &apps.name,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"autoscaling":{"minReplicas":2}}}"#,
        ],
    )
    .await?;
    telemetry_testenv::ready_pods(
        &client,
        &apps.name,
        "app.kubernetes.io/name=telemetry-ingest,app.kubernetes.io/instance=kind",
        2,
        READY_TIMEOUT,
    )
    .await
    .context("the upgraded operator scales to a raised minReplicas")?;

    // Uninstall: what the chart made is gone, the CRD stays.
    apps.cleanup().await?;
    let made = release_objects(cluster, &release).await?;
    for kind in [
        "deployment.apps/",
        "serviceaccount/",
        "clusterrole.rbac.authorization.k8s.io/",
        "clusterrolebinding.rbac.authorization.k8s.io/",
        "role.rbac.authorization.k8s.io/",
        "service/",
    ] {
        assert!(
            made.iter().any(|o| o.starts_with(kind)),
            "the release made a {kind}: {made:?}"
        );
    }
    uninstall(cluster, &release, &system.name).await?;
    let left = wait_for(
        "the release's objects to be gone",
        Duration::from_secs(120),
        || async {
            let left = release_objects(cluster, &release).await.ok()?;
            left.is_empty().then_some(left)
        },
    )
    .await;
    assert!(
        left.is_ok(),
        "left after uninstall: {:?}",
        release_objects(cluster, &release).await?
    );
    kubectl(
        cluster,
        &["get", "crd", "telemetrypipelines.telemetrypipeline.io"],
    )
    .await
    .context("helm uninstall keeps the CRD")?;
    system.cleanup().await
}

#[tokio::test]
async fn namespaced_install_serves_its_namespaces_only_and_may_do_nothing_else()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let cluster = telemetry_testenv::cluster().await?;
    let client = cluster.client();
    let system = restricted_namespace(cluster, "tp-system").await?;
    let a = restricted_namespace(cluster, "tp-a").await?;
    let b = restricted_namespace(cluster, "tp-b").await?;
    let other = restricted_namespace(cluster, "tp-other").await?;
    let release = system.name.clone();
    let sa = format!("system:serviceaccount:{}:{release}-operator", system.name);

    let watch = format!("rbac.watchNamespaces={{{},{}}}", a.name, b.name);
    helm(
        cluster,
        &[
            "install",
            &release,
            &chart(),
            "-n",
            &system.name,
            "--set",
            &watch,
            "--wait",
            "--timeout",
            "5m",
        ],
    )
    .await?;
    let pods = operator_pods(&client, &system.name, &release, 2).await?;
    let args = pods[0].spec.as_ref().context("pod spec")?.containers[0]
        .args
        .clone()
        .unwrap_or_default();
    let expected = format!("--watch-namespaces={},{}", a.name, b.name);
    assert!(
        args.contains(&expected),
        "the operator watches only {expected}: {args:?}"
    );

    // A watched namespace is served.
    pipeline_serves(cluster, &client, &a.name, MINIMAL, 1000, 1000).await?;
    assert_no_pod_refused(cluster, &system.name).await?;
    assert_no_pod_refused(cluster, &a.name).await?;

    // A pipeline in an unwatched namespace is left alone: no status, no
    // children, while a change made after it in a watched namespace is
    // reconciled.
    let file = example("pipeline-minimal.yaml");
    kubectl(
        cluster,
        &[
            "apply",
            "-n",
            &other.name,
            "-f",
            file.to_str().expect("UTF-8 path"),
        ],
    )
    .await?;
    kubectl(
        cluster,
        &[
            "patch",
            "tpl",
            "minimal",
            "-n",
            &a.name,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"ingest":{"replicas":2}}}"#,
        ],
    )
    .await?;
    telemetry_testenv::ready_pods(
        &client,
        &a.name,
        "app.kubernetes.io/name=telemetry-ingest,app.kubernetes.io/instance=minimal",
        2,
        READY_TIMEOUT,
    )
    .await?;
    let untouched = Api::<TelemetryPipeline>::namespaced(client.clone(), &other.name)
        .get("minimal")
        .await?;
    assert!(
        untouched.status.is_none(),
        "a pipeline outside the watched namespaces was reconciled: {:?}",
        untouched.status
    );
    let children = kubectl(
        cluster,
        &[
            "get",
            "deployments,statefulsets",
            "-n",
            &other.name,
            "-o",
            "name",
        ],
    )
    .await?;
    assert!(
        children.trim().is_empty(),
        "children in {}: {children}",
        other.name
    );

    // What the operator may do: its own resources in a watched namespace.
    for (verb, resource) in [
        ("get", "secrets"),
        ("create", "statefulsets.apps"),
        ("patch", "deployments/scale"),
        ("patch", "telemetrypipelines/status"),
        ("create", "events.events.k8s.io"),
    ] {
        assert!(
            can_i(cluster, &sa, verb, resource, Some(&b.name)).await?,
            "{verb} {resource} in a watched namespace"
        );
    }
    // And what it may not.
    let denied: [(&str, &str, Option<&str>); 11] = [
        ("get", "secrets", Some(&other.name)),
        ("list", "secrets", None),
        ("list", "telemetrypipelines", Some(&other.name)),
        ("create", "deployments.apps", Some(&other.name)),
        ("delete", "namespaces", None),
        ("create", "roles.rbac.authorization.k8s.io", Some(&a.name)),
        (
            "create",
            "rolebindings.rbac.authorization.k8s.io",
            Some(&a.name),
        ),
        (
            "create",
            "clusterrolebindings.rbac.authorization.k8s.io",
            None,
        ),
        ("list", "nodes", None),
        ("delete", "pods", Some(&a.name)),
        ("create", "pods/exec", Some(&a.name)),
    ];
    for (verb, resource, ns) in denied {
        assert!(
            !can_i(cluster, &sa, verb, resource, ns).await?,
            "the operator may {verb} {resource} in {ns:?}"
        );
    }

    uninstall(cluster, &release, &system.name).await?;
    for ns in [a, b, other] {
        ns.cleanup().await?;
    }
    system.cleanup().await
}

//! End-to-end tests of the testenv: the real control plane from
//! `scripts/testenv`, and the kubelet stand-in running real processes.
//!
//! Needs `scripts/testenv build` done and `cargo build --bins` (for the
//! ingest binary); attaches to a running testenv or starts one.

mod support;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, ServiceAccount};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{TIMEOUT, apply, cmdline, http_status, names, pinned_versions};
use telemetry_testenv::cluster::repo_root;
use telemetry_testenv::{cluster, process_alive, ready_ip, ready_pods, wait_for};

#[tokio::test]
async fn testenv_runs_the_pinned_versions_with_token_and_client_cert_auth() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let pinned = pinned_versions();

    let out = cluster.kubectl().args(["version", "-o", "json"]).output()?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl version: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        version["serverVersion"]["gitVersion"],
        pinned["K8S_VERSION"]
    );
    assert_eq!(
        version["clientVersion"]["gitVersion"],
        pinned["K8S_VERSION"]
    );

    let out = cluster
        .helm()
        .args(["version", "--template", "{{.Version}}"])
        .output()?;
    assert_eq!(String::from_utf8_lossy(&out.stdout), pinned["HELM_VERSION"]);

    // The admin's client certificate is accepted too (client-CA auth).
    let pki = cluster.state_dir().join("pki");
    let kc = kube::config::Kubeconfig::read_from(cluster.kubeconfig())?;
    let server = kc.clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.server.clone())
        .context("server")?;
    let path = |f: &str| pki.join(f).display().to_string();
    let out = cluster
        .kubectl()
        .env("KUBECONFIG", "/dev/null")
        .args([
            "--server",
            &server,
            "--certificate-authority",
            &path("ca.crt"),
        ])
        .args([
            "--client-certificate",
            &path("admin.crt"),
            "--client-key",
            &path("admin.key"),
        ])
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "testenv-admin",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn rbac_denies_a_service_account_token_without_grants() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.namespace("rbac").await?;
    let client = cluster.client();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "nobody"}}))?,
        )
        .await?;
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 600}}))?;
    let token = accounts
        .create_token_request("nobody", &PostParams::default(), &request)
        .await?
        .status
        .context("token")?
        .token;

    let mut config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(cluster.kubeconfig())?,
        &Default::default(),
    )
    .await?;
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    let unprivileged = kube::Client::try_from(config)?;
    let err = Api::<Secret>::namespaced(unprivileged.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .expect_err("a token without grants must not list secrets");
    match err {
        kube::Error::Api(status) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403 Forbidden, got {other}"),
    }
    // The same request with the admin's credentials is allowed: it is RBAC
    // that said no, not something else.
    Api::<Secret>::namespaced(client, &ns.name)
        .list(&ListParams::default())
        .await?;
    ns.cleanup().await
}

#[tokio::test]
async fn testenv_down_stops_every_process_it_started() -> anyhow::Result<()> {
    // A second, private testenv: the shared one stays up for the other tests.
    let state = std::env::temp_dir().join(format!("testenv-down-{}", std::process::id()));
    let script = repo_root().join("scripts/testenv");
    // If an assertion fails half-way, still stop what this test started.
    struct Down(std::path::PathBuf, std::path::PathBuf);
    impl Drop for Down {
        fn drop(&mut self) {
            if self.1.exists() {
                let _ = std::process::Command::new(&self.0)
                    .arg("down")
                    .env("TESTENV_STATE_DIR", &self.1)
                    .status();
            }
        }
    }
    let _down = Down(script.clone(), state.clone());
    let up = tokio::process::Command::new(&script)
        .arg("up")
        .env("TESTENV_STATE_DIR", &state)
        .stdin(Stdio::null())
        .output()
        .await?;
    anyhow::ensure!(
        up.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(String::from_utf8_lossy(&up.stdout).contains(&format!(
        "export KUBECONFIG={}",
        state.join("kubeconfig").display()
    )));

    let mut pids = Vec::new();
    for name in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "telemetry-kubelet",
    ] {
        let text = std::fs::read_to_string(state.join("pids").join(format!("{name}.pid")))?;
        let pid: u32 = text.split_whitespace().next().context("pid")?.parse()?;
        assert!(process_alive(pid), "{name} (pid {pid}) should run after up");
        pids.push((name, pid));
    }
    // A second `up` reuses what runs.
    let again = tokio::process::Command::new(&script)
        .arg("up")
        .env("TESTENV_STATE_DIR", &state)
        .output()
        .await?;
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("reusing the running control plane"));

    let down = tokio::process::Command::new(&script)
        .arg("down")
        .env("TESTENV_STATE_DIR", &state)
        .output()
        .await?;
    anyhow::ensure!(
        down.status.success(),
        "down failed: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    for (name, pid) in pids {
        assert!(
            !process_alive(pid),
            "{name} (pid {pid}) still runs after down"
        );
    }
    assert!(!state.exists(), "down leaves the state directory behind");
    Ok(())
}

#[tokio::test]
async fn ingest_deployment_runs_real_processes_that_scale_and_stop_on_sigterm() -> anyhow::Result<()>
{
    support::require_ingest_binary()?;
    let cluster = cluster().await?;
    let ns = cluster.namespace("ingest-scale").await?;
    let client = cluster.client();
    let mut objects = support::redis(&ns.name);
    objects.push(support::ingest(&ns.name, 1));
    apply(&client, &ns.name, &objects).await?;

    let redis = ready_pods(&client, &ns.name, "app=redis", 1, TIMEOUT).await?;
    let redis_pid = cluster
        .container_pid(&redis[0], "redis")
        .context("redis pid")?;
    assert!(cmdline(redis_pid).contains("redis-server"));

    let pods = ready_pods(&client, &ns.name, "app=ingest", 1, TIMEOUT).await?;
    let ip = ready_ip(&pods[0]).context("pod ip")?;
    assert!(
        ip.is_loopback() && ip.octets() != [127, 0, 0, 1],
        "pod IP {ip}"
    );
    // Ready means the real readiness probe passed, i.e. Redis was reached
    // through the Service name.
    assert_eq!(http_status(&format!("http://{ip}:8000/readyz")).await?, 200);
    assert_eq!(
        http_status(&format!("http://{ip}:8000/healthz")).await?,
        200
    );

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let scale = |n: i32| json!({"spec": {"replicas": n}});
    deployments
        .patch("ingest", &PatchParams::default(), &Patch::Merge(scale(3)))
        .await?;
    let three = ready_pods(&client, &ns.name, "app=ingest", 3, TIMEOUT).await?;
    let mut ips = BTreeSet::new();
    let mut pids = BTreeSet::new();
    for pod in &three {
        let ip = ready_ip(pod).context("pod ip")?;
        assert_eq!(
            http_status(&format!("http://{ip}:8000/healthz")).await?,
            200,
            "{ip}"
        );
        ips.insert(ip);
        let pid = cluster.container_pid(pod, "ingest").context("ingest pid")?;
        assert!(
            process_alive(pid) && cmdline(pid).contains("telemetry-ingest"),
            "pid {pid}"
        );
        pids.insert(pid);
    }
    assert_eq!(ips.len(), 3, "each pod has its own address: {ips:?}");
    assert_eq!(pids.len(), 3, "each pod has its own process: {pids:?}");

    deployments
        .patch("ingest", &PatchParams::default(), &Patch::Merge(scale(1)))
        .await?;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let remaining = wait_for("ingest to shrink to one pod", TIMEOUT, || {
        let api = pods_api.clone();
        async move {
            let pods = api
                .list(&ListParams::default().labels("app=ingest"))
                .await
                .ok()?
                .items;
            (pods.len() == 1).then_some(pods)
        }
    })
    .await?;
    let removed: Vec<&Pod> = three
        .iter()
        .filter(|p| !names(&remaining).contains(p.metadata.name.as_ref().unwrap()))
        .collect();
    assert_eq!(removed.len(), 2);
    for pod in removed {
        let log = std::fs::read_to_string(cluster.container_log(pod, "ingest"))?;
        assert!(
            log.contains("sending SIGTERM"),
            "no SIGTERM for {:?}:\n{log}",
            pod.metadata.name
        );
        assert!(
            log.contains("exited after SIGTERM with code 0"),
            "{:?} did not exit cleanly on SIGTERM:\n{log}",
            pod.metadata.name
        );
        assert!(cluster.container_pid(pod, "ingest").is_none());
    }
    let survivors: Vec<u32> = remaining
        .iter()
        .filter_map(|p| cluster.container_pid(p, "ingest"))
        .chain([redis_pid])
        .collect();
    assert_eq!(survivors.len(), 2);
    for pid in &pids {
        assert_eq!(process_alive(*pid), survivors.contains(pid), "pid {pid}");
    }

    // Deleting the namespace removes everything, processes included.
    ns.cleanup().await?;
    for pid in survivors {
        assert!(!process_alive(pid), "pid {pid} outlived its namespace");
    }
    Ok(())
}

#[tokio::test]
async fn a_process_that_exits_shows_a_terminated_container_status() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.namespace("crash").await?;
    let client = cluster.client();
    // redis-server refuses an unknown directive and exits 1.
    apply(
        &client,
        &ns.name,
        &[
            support::redis_pod(&ns.name, "once", "Never", &["--no-such-directive", "x"]),
            support::redis_pod(&ns.name, "again", "Always", &["--no-such-directive", "x"]),
        ],
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let status_of = |name: &'static str| {
        let pods = pods.clone();
        move || {
            let pods = pods.clone();
            async move {
                let pod = pods.get(name).await.ok()?;
                let status = pod.status?;
                let container = status.container_statuses?.into_iter().next()?;
                Some((status.phase, container))
            }
        }
    };

    let (phase, once) = wait_for("pod once to terminate", TIMEOUT, || {
        let f = status_of("once");
        async move {
            f().await
                .filter(|(_, c)| c.state.as_ref().is_some_and(|s| s.terminated.is_some()))
        }
    })
    .await?;
    let terminated = once.state.unwrap().terminated.unwrap();
    assert_eq!(terminated.exit_code, 1);
    assert_eq!(terminated.reason.as_deref(), Some("Error"));
    assert_eq!(phase.as_deref(), Some("Failed"));
    assert_eq!(once.restart_count, 0);

    let (_, again) = wait_for("pod again to be restarted", TIMEOUT, || {
        let f = status_of("again");
        async move { f().await.filter(|(_, c)| c.restart_count >= 2) }
    })
    .await?;
    let last = again
        .last_state
        .and_then(|s| s.terminated)
        .context("lastState.terminated")?;
    assert_eq!(last.exit_code, 1);
    ns.cleanup().await
}

#[tokio::test]
async fn pods_get_claims_config_files_that_follow_updates_and_their_service_account()
-> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.namespace("volumes").await?;
    let client = cluster.client();
    apply(
        &client,
        &ns.name,
        &[
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "store"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "conf"},
                   "data": {"redis.conf": "maxmemory 10mb\n"}}),
            json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "store"},
                "spec": {
                    "serviceName": "store", "replicas": 1,
                    "selector": {"matchLabels": {"app": "store"}},
                    "template": {
                        "metadata": {"labels": {"app": "store"}},
                        "spec": {
                            "serviceAccountName": "store",
                            "containers": [{
                                "name": "redis", "image": "redis:7",
                                "args": ["/etc/redis/redis.conf", "--dir", "/data", "--appendonly", "yes"],
                                "volumeMounts": [
                                    {"name": "data", "mountPath": "/data"},
                                    {"name": "conf", "mountPath": "/etc/redis"},
                                ],
                                "readinessProbe": {"exec": {"command": ["sh", "-c", "redis-cli ping | grep PONG"]},
                                                   "periodSeconds": 1},
                            }],
                            "volumes": [{"name": "conf", "configMap": {"name": "conf"}}],
                        },
                    },
                    "volumeClaimTemplates": [{
                        "metadata": {"name": "data"},
                        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                    }],
                },
            }),
        ],
    )
    .await?;
    let pods = ready_pods(&client, &ns.name, "app=store", 1, TIMEOUT).await?;
    let pod = &pods[0];

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns.name);
    wait_for("claim data-store-0 to be Bound", TIMEOUT, || {
        let claims = claims.clone();
        async move {
            let claim = claims.get("data-store-0").await.ok()?;
            (claim.status?.phase.as_deref() == Some("Bound")).then_some(())
        }
    })
    .await?;
    // The AOF lives in the claim's directory, which outlives the pod.
    let claim_dir = cluster
        .state_dir()
        .join("kubelet/claims")
        .join(&ns.name)
        .join("data-store-0");
    wait_for("the AOF in the claim directory", TIMEOUT, || {
        let dir = claim_dir.join("appendonlydir");
        async move { dir.is_dir().then_some(()) }
    })
    .await?;

    let conf = cluster.pod_dir(pod).join("volumes/conf/redis.conf");
    assert_eq!(std::fs::read_to_string(&conf)?, "maxmemory 10mb\n");
    Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
        .patch(
            "conf",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"redis.conf": "maxmemory 20mb\n"}})),
        )
        .await?;
    wait_for("the config file to follow the ConfigMap", Duration::from_secs(10), || {
        let conf = conf.clone();
        async move { (std::fs::read_to_string(&conf).ok()? == "maxmemory 20mb\n").then_some(()) }
    })
    .await?;

    // The process's kubeconfig authenticates as the pod's ServiceAccount.
    let kubeconfig = cluster.pod_dir(pod).join("kubeconfig");
    let out = cluster
        .kubectl()
        .env("KUBECONFIG", &kubeconfig)
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("system:serviceaccount:{}:store", ns.name),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // (redis-server rewrites its own /proc/PID/environ, so read the
    // stand-in's note of what it passed.)
    let log = std::fs::read_to_string(cluster.container_log(pod, "redis"))?;
    let env_line = log
        .lines()
        .find(|l| l.contains("environment:"))
        .context("environment note")?;
    assert!(
        env_line.split_whitespace().any(|w| w == "KUBECONFIG"),
        "{env_line}"
    );
    ns.cleanup().await
}

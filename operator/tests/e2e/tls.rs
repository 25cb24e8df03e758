//! TLS of the ingest pods on the real control plane: a `kubernetes.io/tls`
//! Secret made from an rcgen certificate, probes over https, clients with
//! `telemetryctl --ca`, the autoscaler's https scrape, and a renewed
//! certificate served without restarting the pod.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use serde_json::json;
use telemetry_operator::TelemetryPipeline;
use telemetry_testenv::wait_for;

use crate::support::{World, pod_ip, telemetryctl};

/// A server certificate for `names` (DNS names or IP addresses) signed by
/// `ca`, and its key, both PEM.
fn issue(ca: &CertifiedIssuer<'static, KeyPair>, names: &[String], cn: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names.to_vec()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn tls_secret(name: &str, cert: &str, key: &str) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_string(), ByteString(cert.as_bytes().to_vec())),
            ("tls.key".to_string(), ByteString(key.as_bytes().to_vec())),
        ])),
        ..Default::default()
    }
}

/// `telemetryctl send` of `n` events over gRPC to `pod` with `--ca`.
async fn send_grpc(pod: &Pod, ca: &str, n: &str) -> anyhow::Result<String> {
    telemetryctl(&[
        "send",
        "--grpc",
        &format!("https://{}:50051", pod_ip(pod)),
        "--ca",
        ca,
        "--n",
        n,
        "--devices",
        "10",
        "--no-progress",
    ])
    .await
}

#[tokio::test]
async fn ingest_serves_tls_from_a_secret_and_reloads_a_renewed_certificate_without_a_restart()
-> anyhow::Result<()> {
    let world = World::new("tls").await?;
    let name = "secured";
    let secret_name = "ingest-tls";

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "telemetry e2e CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let dir = tempfile::tempdir()?;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem())?;
    let ca_path = ca_file.to_str().unwrap().to_string();

    // First a certificate that names no address the test can dial: the pod
    // IP is not known before the pod runs.
    let (cert, key) = issue(&ca, &["ingest.tls-e2e.invalid".to_string()], "first");
    let secrets = world.api::<Secret>();
    secrets
        .create(
            &PostParams::default(),
            &tls_secret(secret_name, &cert, &key),
        )
        .await?;

    // Ready means the probes pass over https.
    world
        .apply_spec(
            name,
            json!({
                "ingest": {"tls": {"secretRef": {"name": secret_name}}},
                "autoscaling": {
                    "minReplicas": 1, "maxReplicas": 2, "syncPeriodSeconds": 3,
                    "targetQueueDepthPerPod": 1000, "scrape": {"timeoutSeconds": 2},
                },
            }),
        )
        .await?;
    let pod = world.ingest_pods(name, 1).await?.remove(0);
    let ip = pod_ip(&pod);

    // The autoscaler reads the pod's /metrics over https.
    let api = world.api::<TelemetryPipeline>();
    wait_for(
        "a queue depth read by the autoscaler",
        Duration::from_secs(60),
        || {
            let api = api.clone();
            async move {
                let tp = api.get(name).await.ok()?;
                tp.status?.autoscaling?.current_queue_depth
            }
        },
    )
    .await?;

    // The first certificate does not name the pod IP: refused, saying so.
    let refused = send_grpc(&pod, &ca_path, "10")
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("not trusted"), "{refused}");

    // A renewed certificate that names the pod IP, by an update of the
    // Secret as cert-manager makes it.
    let (cert, key) = issue(&ca, std::slice::from_ref(&ip), "second");
    secrets
        .patch(
            secret_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"tls.crt": cert, "tls.key": key}})),
        )
        .await?;
    // The kubelet refreshes the volume within its sync period, the pod
    // within its poll.
    let sent = wait_for(
        "the renewed certificate served",
        Duration::from_secs(180),
        || {
            let (pod, ca_path) = (&pod, &ca_path);
            async move { send_grpc(pod, ca_path, "1000").await.ok() }
        },
    )
    .await?;
    assert!(sent.contains("1000"), "{sent}");

    // Over https too, and the same pod, never restarted.
    let http = format!("https://{ip}:8000");
    telemetryctl(&[
        "send",
        "--http",
        &http,
        "--ca",
        &ca_path,
        "--n",
        "500",
        "--devices",
        "10",
        "--no-progress",
    ])
    .await?;
    let text = telemetryctl(&["stats", "--http", &http, "--ca", &ca_path, "--json"]).await?;
    let stats: serde_json::Value = serde_json::from_str(&text)?;
    assert_eq!(stats["eventsTotal"], 1500, "{text}");
    let now = world.api::<Pod>().get(&pod.name_any()).await?;
    assert_eq!(now.uid(), pod.uid(), "the pod was replaced");
    let restarts: i32 = now
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default()
        .iter()
        .map(|c| c.restart_count)
        .sum();
    assert_eq!(restarts, 0, "the pod restarted");

    world.operator.unwrap().stop().await?;
    world.ns.cleanup().await
}

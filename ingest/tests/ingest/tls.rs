//! TLS on the gRPC and HTTP listeners (`--tls-cert-file`, `--tls-key-file`):
//! real clients with a test CA made by rcgen, certificate rotation by file
//! replacement, and the handshake inside the connection limits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use telemetry_ingest::config::IngestArgs;
use telemetry_ingest::server::{self, Listeners};
use telemetry_proto::v1::telemetry_ingest_client::TelemetryIngestClient;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::support::{Redis, packet, pipeline, wait_for};

/// How often the server re-reads the files in these tests (`--config-poll-ms`).
const POLL_MS: u64 = 50;

/// A test CA that issues server certificates for 127.0.0.1 and localhost.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, "telemetry tls test CA");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// A server certificate (PEM) named `cn`, and its key (PEM).
    fn issue(&self, cn: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Replaces `path` in one step (write aside, rename), as a Secret volume's
/// update is atomic.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// An in-process ingest server with TLS on, and the files it serves.
struct TlsIngest {
    grpc: SocketAddr,
    http: SocketAddr,
    dir: tempfile::TempDir,
    ca_file: PathBuf,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<telemetry_ingest::Result<()>>,
}

impl TlsIngest {
    async fn start(redis: &Redis, test: &str, ca: &Ca, flags: &[&str]) -> TlsIngest {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ca.issue("first");
        std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), key).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.issuer.pem()).unwrap();
        let mut argv = vec![
            "telemetry-ingest".to_string(),
            "--grpc-listen=127.0.0.1:0".into(),
            "--http-listen=127.0.0.1:0".into(),
            format!("--redis-url={}", redis.url()),
            format!("--pipeline={}", pipeline(test)),
            format!("--config-poll-ms={POLL_MS}"),
            format!("--tls-cert-file={}", dir.path().join("tls.crt").display()),
            format!("--tls-key-file={}", dir.path().join("tls.key").display()),
        ];
        argv.extend(flags.iter().map(|s| s.to_string()));
        let args = IngestArgs::try_parse_from(argv).unwrap();
        let listeners = Listeners::bind(&args).await.unwrap();
        let grpc = listeners.grpc.local_addr().unwrap();
        let http = listeners.http.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server::run(args, listeners, shutdown.clone()));
        let ingest = TlsIngest {
            grpc,
            http,
            dir,
            ca_file,
            shutdown,
            task,
        };
        let client = ingest.https();
        let url = format!("{}/readyz", ingest.http_url());
        wait_for(
            "ingest to be ready over https",
            Duration::from_secs(10),
            || {
                let get = client.get(&url).send();
                async move { matches!(get.await, Ok(r) if r.status() == 200).then_some(()) }
            },
        )
        .await;
        ingest
    }

    fn cert_file(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    fn key_file(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }

    fn http_url(&self) -> String {
        format!("https://{}", self.http)
    }

    fn grpc_url(&self) -> String {
        format!("https://{}", self.grpc)
    }

    /// An HTTP client trusting the test CA only.
    fn https(&self) -> reqwest::Client {
        telemetryctl::tls::http_client(Some(&self.ca_file)).unwrap()
    }

    /// A gRPC client over TLS trusting the test CA only.
    async fn grpc_client(&self) -> TelemetryIngestClient<Channel> {
        let channel = Channel::from_shared(self.grpc_url())
            .unwrap()
            .tls_config(telemetryctl::tls::grpc_config(Some(&self.ca_file)).unwrap())
            .unwrap()
            .connect()
            .await
            .unwrap();
        TelemetryIngestClient::new(channel)
    }

    /// The certificate a new TLS connection to `addr` is served (its DER).
    async fn served_certificate(&self, addr: SocketAddr) -> Vec<u8> {
        let tls = handshake(addr, &self.ca_file).await.unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }

    /// One series of `/metrics` (0 while absent).
    async fn metric(&self, series: &str) -> f64 {
        let text = self
            .https()
            .get(format!("{}/metrics", self.http_url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter_map(|line| line.split_once(' '))
            .find(|(name, _)| *name == series)
            .map_or(0.0, |(_, value)| value.trim().parse().unwrap())
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// A TLS handshake with `addr` (offering h2), trusting the CA in `ca_file`.
async fn handshake(
    addr: SocketAddr,
    ca_file: &Path,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap().to_owned();
    connector.connect(name, tcp).await
}

/// Reads until the peer closes; how long that took. Fails past `limit`.
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("connection still open after {limit:?}"),
        }
    }
}

#[tokio::test]
async fn grpc_and_http_over_tls_store_and_answer_with_the_test_ca() {
    let redis = Redis::start();
    let ca = Ca::new();
    let ingest = TlsIngest::start(&redis, "tls-both", &ca, &[]).await;

    let packets = (0..20)
        .map(|i| packet("tls-grpc", &format!("g-{i}")))
        .collect::<Vec<_>>();
    let ack = ingest
        .grpc_client()
        .await
        .stream_packets(tokio_stream::iter(packets))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ack.accepted, ack.rejected), (20, 0), "{ack:?}");

    let https = ingest.https();
    let now = telemetry_ingest::intake::now_ms();
    let posted = https
        .post(format!("{}/api/v1/events", ingest.http_url()))
        .json(&serde_json::json!({"deviceId": "tls-http", "timestamp": now, "eventId": "h-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200, "{}", posted.text().await.unwrap());

    let devices: serde_json::Value = https
        .get(format!("{}/api/v1/devices?limit=10", ingest.http_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let count = |device: &str| {
        devices
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["deviceId"] == device)
            .map(|d| d["count"].as_u64().unwrap())
    };
    assert_eq!(
        (count("tls-grpc"), count("tls-http")),
        (Some(20), Some(1)),
        "{devices}"
    );
    let healthz = https
        .get(format!("{}/healthz", ingest.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    assert!(
        ingest
            .metric("telemetry_ingest_tls_certificate_expiry_timestamp_seconds")
            .await
            > 1.7e9
    );
    ingest.stop().await;
}

#[tokio::test]
async fn a_plain_text_client_on_a_tls_port_is_refused() {
    let redis = Redis::start();
    let ca = Ca::new();
    let ingest = TlsIngest::start(&redis, "tls-plain", &ca, &[]).await;

    let plain_http = reqwest::get(format!("http://{}/healthz", ingest.http)).await;
    assert!(
        plain_http.is_err(),
        "plain HTTP got an answer: {plain_http:?}"
    );

    let plain_grpc = async {
        let mut client = TelemetryIngestClient::connect(format!("http://{}", ingest.grpc))
            .await
            .map_err(|e| e.to_string())?;
        client
            .stream_packets(tokio_stream::iter(vec![packet("plain", "p-1")]))
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    assert!(
        plain_grpc.is_err(),
        "plain gRPC got an answer: {plain_grpc:?}"
    );
    assert!(
        ingest
            .metric("telemetry_ingest_tls_handshake_failures_total{listener=\"http\"}")
            .await
            >= 1.0
    );
    ingest.stop().await;
}

#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_connections_while_an_open_stream_keeps_going() {
    let redis = Redis::start();
    let ca = Ca::new();
    let ingest = TlsIngest::start(&redis, "tls-rotate", &ca, &[]).await;
    let first = ingest.served_certificate(ingest.grpc).await;

    // A stream opened under the first certificate.
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut client = ingest.grpc_client().await;
    let call = tokio::spawn(async move {
        client
            .stream_packets(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    for i in 0..50 {
        tx.send(packet("rotate", &format!("before-{i}")))
            .await
            .unwrap();
    }

    let (cert, key) = ca.issue("second");
    replace(&ingest.key_file(), &key);
    replace(&ingest.cert_file(), &cert);
    let second = der(&cert);
    assert_ne!(first, second);
    let started = Instant::now();
    wait_for(
        "the new certificate on a new gRPC connection",
        Duration::from_secs(5),
        || async { (ingest.served_certificate(ingest.grpc).await == second).then_some(()) },
    )
    .await;
    let seen_after = started.elapsed();
    assert_eq!(ingest.served_certificate(ingest.http).await, second);

    // The open stream keeps its session and goes on.
    for i in 0..50 {
        tx.send(packet("rotate", &format!("after-{i}")))
            .await
            .unwrap();
    }
    drop(tx);
    let ack = call.await.unwrap().unwrap().into_inner();
    assert_eq!((ack.accepted, ack.rejected), (100, 0), "{ack:?}");
    assert!(
        ingest
            .metric("telemetry_ingest_tls_reloads_total{result=\"ok\"}")
            .await
            >= 1.0
    );
    assert!(
        seen_after < Duration::from_secs(5),
        "seen after {seen_after:?}"
    );
    ingest.stop().await;
}

#[tokio::test]
async fn an_invalid_pair_keeps_the_old_certificate_and_is_counted() {
    let redis = Redis::start();
    let ca = Ca::new();
    let ingest = TlsIngest::start(&redis, "tls-invalid", &ca, &[]).await;
    let first = ingest.served_certificate(ingest.grpc).await;
    let expiry = "telemetry_ingest_tls_certificate_expiry_timestamp_seconds";
    let expiry_before = ingest.metric(expiry).await;

    // A key of another certificate: the pair does not match.
    let (_, other_key) = ca.issue("other");
    replace(&ingest.key_file(), &other_key);
    wait_for(
        "the invalid pair to be counted",
        Duration::from_secs(5),
        || async {
            (ingest
                .metric("telemetry_ingest_tls_reloads_total{result=\"invalid\"}")
                .await
                >= 1.0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(ingest.served_certificate(ingest.grpc).await, first);
    assert_eq!(ingest.served_certificate(ingest.http).await, first);
    assert_eq!(ingest.metric(expiry).await, expiry_before);

    // Not PEM at all: refused as well.
    replace(&ingest.cert_file(), "not a certificate\n");
    wait_for(
        "the second invalid pair to be counted",
        Duration::from_secs(5),
        || async {
            (ingest
                .metric("telemetry_ingest_tls_reloads_total{result=\"invalid\"}")
                .await
                >= 2.0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(ingest.served_certificate(ingest.grpc).await, first);
    assert_eq!(
        ingest
            .metric("telemetry_ingest_tls_reloads_total{result=\"ok\"}")
            .await,
        0.0
    );
    ingest.stop().await;
}

#[tokio::test]
async fn a_handshake_that_never_completes_is_closed_and_frees_its_connection_slot() {
    let redis = Redis::start();
    let ca = Ca::new();
    let ingest = TlsIngest::start(
        &redis,
        "tls-half-open",
        &ca,
        &["--max-connections=1", "--tls-handshake-timeout-seconds=1"],
    )
    .await;
    for addr in [ingest.grpc, ingest.http] {
        // The clients of the start-up checks have closed their connections.
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Connects and sends nothing: it holds the only slot.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let blocked =
            tokio::time::timeout(Duration::from_millis(300), handshake(addr, &ingest.ca_file))
                .await;
        assert!(
            blocked.is_err(),
            "{addr}: a second connection got through while the slot was held"
        );
        let took = closed_within(&mut silent, Duration::from_secs(5)).await;
        assert!(
            took < Duration::from_secs(3),
            "{addr}: closed after {took:?}"
        );
        // The slot is free again: a real client gets through.
        handshake(addr, &ingest.ca_file).await.unwrap();
    }
    assert!(
        ingest
            .metric("telemetry_ingest_tls_handshake_failures_total{listener=\"grpc\"}")
            .await
            >= 1.0
    );
    ingest.stop().await;
}

#[tokio::test]
async fn startup_with_a_key_of_another_certificate_fails_naming_both_files() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = ca.issue("one");
    let (_, key) = ca.issue("two");
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let args = IngestArgs::try_parse_from([
        "telemetry-ingest".to_string(),
        "--grpc-listen=127.0.0.1:0".into(),
        "--http-listen=127.0.0.1:0".into(),
        format!("--tls-cert-file={}", cert_file.display()),
        format!("--tls-key-file={}", key_file.display()),
    ])
    .unwrap();
    let listeners = Listeners::bind(&args).await.unwrap();
    let error = server::run(args, listeners, CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("--tls-key-file {}", key_file.display()))
            && error.contains("does not match the certificate")
            && error.contains(&cert_file.display().to_string()),
        "{error}"
    );
}

/// `telemetryctl` as its command line parses `argv`.
fn ctl(argv: &[&str]) -> telemetryctl::cli::Cli {
    telemetryctl::cli::Cli::try_parse_from(
        std::iter::once("telemetryctl").chain(argv.iter().copied()),
    )
    .unwrap()
}

fn send_args(argv: &[&str]) -> telemetryctl::cli::SendArgs {
    match ctl(argv).command {
        telemetryctl::cli::Command::Send(args) => args,
        other => panic!("not send: {other:?}"),
    }
}

#[tokio::test]
async fn telemetryctl_sends_and_queries_over_tls_with_ca_and_says_when_the_certificate_is_not_trusted()
 {
    let redis = Redis::start();
    let ca = Ca::new();
    let ingest = TlsIngest::start(&redis, "tls-ctl", &ca, &[]).await;
    let ca_file = ingest.ca_file.to_str().unwrap().to_string();
    let (grpc, http) = (ingest.grpc_url(), ingest.http_url());

    for (flag, url) in [("--grpc", &grpc), ("--http", &http)] {
        let common = [
            "send",
            flag,
            url.as_str(),
            "--n",
            "200",
            "--devices",
            "5",
            "--no-progress",
        ];
        let with_ca = [&common[..], &["--ca", &ca_file]].concat();
        let summary = telemetryctl::send::send(send_args(&with_ca)).await.unwrap();
        assert_eq!(
            (summary.accepted, summary.failed),
            (200, 0),
            "{flag}: {summary:?}"
        );

        // The system store does not know the test CA.
        let error = telemetryctl::send::send(send_args(&common))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("certificate is not trusted") && error.contains("--ca"),
            "{flag}: {error}"
        );
    }

    let code = telemetryctl::run(ctl(&["stats", "--http", &http, "--ca", &ca_file, "--json"]))
        .await
        .unwrap();
    assert_eq!(code, 0);
    let error = telemetryctl::run(ctl(&["stats", "--http", &http, "--json"]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("certificate is not trusted") && error.contains("--ca"),
        "{error}"
    );
    ingest.stop().await;
}

//! API keys end to end: a real server with `--api-keys-file`, real gRPC and
//! HTTP clients, a real Redis.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use telemetry_ingest::auth::keyfile::sha256_hex;
use telemetry_proto::v1::telemetry_ingest_client::TelemetryIngestClient;
use telemetry_proto::v1::telemetry_query_client::TelemetryQueryClient;
use telemetry_proto::v1::{Ack, Packet, StatsRequest};
use telemetryctl::cli::{GrpcMode, KeyScope, PayloadKind, SendArgs};
use telemetryctl::credential::NewKey;
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::support::{Ingest, Redis, packet, pipeline, wait_for};

const WRITER: &str = "tpk_writer-secret-0001";
const READER: &str = "tpk_reader-secret-0002";
const NEWCOMER: &str = "tpk_newcomer-secret-0003";

fn entry(name: &str, key: &str, scopes: &str) -> String {
    format!(
        "- name: {name}\n  sha256: {}\n  scopes: {scopes}\n",
        sha256_hex(key)
    )
}

fn key_file(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

/// Replaces the file in one step (write aside, rename), as a Secret volume
/// does.
fn replace_file(path: &Path, content: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, content).unwrap();
    std::fs::rename(&next, path).unwrap();
}

async fn start(redis: &Redis, p: &str, keys: &tempfile::NamedTempFile) -> Ingest {
    let flag = format!("--api-keys-file={}", keys.path().display());
    Ingest::start(&redis.url(), p, &[flag.as_str(), "--config-poll-ms=50"]).await
}

fn with_key<T>(message: T, key: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    request
}

async fn grpc_send(
    ingest: &Ingest,
    key: Option<&str>,
    packets: Vec<Packet>,
) -> Result<Ack, tonic::Status> {
    ingest
        .client()
        .await
        .stream_packets(with_key(tokio_stream::iter(packets), key))
        .await
        .map(tonic::Response::into_inner)
}

async fn grpc_stats(ingest: &Ingest, key: Option<&str>) -> Result<(), tonic::Status> {
    let mut client = TelemetryQueryClient::connect(ingest.grpc_url())
        .await
        .unwrap();
    client
        .stats(with_key(StatsRequest {}, key))
        .await
        .map(|_| ())
}

async fn http(
    ingest: &Ingest,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut request =
        reqwest::Client::new().request(method.clone(), format!("{}{path}", ingest.http_url()));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if method == reqwest::Method::POST {
        let event = serde_json::json!([{
            "deviceId": "dev-http",
            "timestamp": telemetry_ingest::intake::now_ms(),
            "eventType": "reading"
        }]);
        request = request.json(&event);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

async fn metrics_text(ingest: &Ingest) -> String {
    reqwest::get(format!("{}/metrics", ingest.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn grpc_calls_need_a_known_key_with_the_scope_of_the_service() {
    let redis = Redis::start();
    let p = pipeline("auth-grpc");
    let keys = key_file(&(entry("sensors", WRITER, "[write]") + &entry("dash", READER, "[read]")));
    let ingest = start(&redis, &p, &keys).await;

    let status = grpc_send(&ingest, None, vec![packet("d1", "")])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("an API key is required"),
        "{status:?}"
    );

    let status = grpc_send(&ingest, Some("tpk_wrong"), vec![packet("d1", "")])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        !status.message().contains("tpk_wrong"),
        "the key is not echoed: {status:?}"
    );

    let status = grpc_send(&ingest, Some(READER), vec![packet("d1", "")])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        "the key 'dash' lacks scope write, needed to send events"
    );
    assert_eq!(redis.events(&p), 0, "nothing refused was stored");

    let ack = grpc_send(
        &ingest,
        Some(WRITER),
        (0..5).map(|i| packet("d1", &format!("e{i}"))).collect(),
    )
    .await
    .unwrap();
    assert_eq!(ack.accepted, 5);
    assert_eq!(redis.events(&p), 5);

    let status = grpc_stats(&ingest, Some(WRITER)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        "the key 'sensors' lacks scope read, needed to query"
    );
    assert_eq!(
        grpc_stats(&ingest, None).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    grpc_stats(&ingest, Some(READER)).await.unwrap();

    // Health checking stays open.
    let channel = Channel::from_shared(ingest.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Per-key counters, by name and never by key.
    assert_eq!(
        ingest
            .metric(r#"telemetry_ingest_events_by_key_total{key="sensors"}"#)
            .await,
        5.0
    );
    assert_eq!(
        ingest
            .metric(r#"telemetry_ingest_auth_requests_total{key="sensors",result="ok"}"#)
            .await,
        1.0
    );
    assert_eq!(
        ingest
            .metric(r#"telemetry_ingest_auth_requests_total{key="dash",result="forbidden"}"#)
            .await,
        1.0
    );
    assert_eq!(
        ingest
            .metric(r#"telemetry_ingest_auth_requests_total{key="",result="unauthenticated"}"#)
            .await,
        3.0
    );
    let text = metrics_text(&ingest).await;
    for secret in [WRITER, READER, "tpk_wrong", &sha256_hex(WRITER)] {
        assert!(!text.contains(secret), "/metrics shows {secret}");
    }
    ingest.stop().await;
}

#[tokio::test]
async fn http_routes_need_a_key_but_probes_metrics_and_docs_stay_open() {
    let redis = Redis::start();
    let p = pipeline("auth-http");
    let keys = key_file(&(entry("sensors", WRITER, "[write]") + &entry("dash", READER, "[read]")));
    let ingest = start(&redis, &p, &keys).await;
    use reqwest::Method;

    let (status, headers, body) = http(&ingest, Method::POST, "/api/v1/events/batch", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");

    let (status, headers, _) = http(
        &ingest,
        Method::POST,
        "/api/v1/events/batch",
        Some("tpk_wrong"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer");

    let (status, headers, body) =
        http(&ingest, Method::POST, "/api/v1/events/batch", Some(READER)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        headers["www-authenticate"],
        r#"Bearer error="insufficient_scope""#
    );
    assert!(
        body.contains("the key 'dash' lacks scope write, needed to send events"),
        "{body}"
    );
    assert!(!body.contains(READER));
    assert_eq!(redis.events(&p), 0);

    let (status, _, body) = http(&ingest, Method::POST, "/api/v1/events/batch", Some(WRITER)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = http(&ingest, Method::POST, "/api/v1/events", Some(WRITER)).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an array is not one event, but the key let it in: {body}"
    );
    assert_eq!(redis.events(&p), 1);

    for path in ["/api/v1/stats", "/api/v1/devices", "/api/v1/counters"] {
        assert_eq!(
            http(&ingest, Method::GET, path, None).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            http(&ingest, Method::GET, path, Some(WRITER)).await.0,
            StatusCode::FORBIDDEN,
            "{path}"
        );
        assert_eq!(
            http(&ingest, Method::GET, path, Some(READER)).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/openapi.json",
        "/docs/",
    ] {
        assert_eq!(
            http(&ingest, Method::GET, path, None).await.0,
            StatusCode::OK,
            "{path} is open"
        );
    }
    assert_eq!(
        ingest
            .metric(r#"telemetry_ingest_events_by_key_total{key="sensors"}"#)
            .await,
        1.0
    );
    assert_eq!(ingest.metric("telemetry_ingest_api_keys").await, 2.0);
    ingest.stop().await;
}

#[tokio::test]
async fn a_reload_applies_to_new_calls_while_an_open_stream_keeps_sending() {
    let redis = Redis::start();
    let p = pipeline("auth-reload");
    let keys = key_file(&entry("old", WRITER, "[write]"));
    let ingest = start(&redis, &p, &keys).await;

    // A stream opened with the old key, fed as we go.
    let (tx, rx) = tokio::sync::mpsc::channel::<Packet>(16);
    let mut client: TelemetryIngestClient<Channel> = ingest.client().await;
    let call = tokio::spawn(async move {
        client
            .stream_packets(with_key(
                tokio_stream::wrappers::ReceiverStream::new(rx),
                Some(WRITER),
            ))
            .await
    });
    let mut sent = 0u64;
    for _ in 0..50 {
        tx.send(packet("streamer", &format!("s{sent}")))
            .await
            .unwrap();
        sent += 1;
    }
    // The server has let the call in (its events are stored in chunks, the
    // last when the stream ends).
    wait_for(
        "the stream to be let in",
        Duration::from_secs(10),
        || async {
            let admitted = ingest
                .metric(r#"telemetry_ingest_auth_requests_total{key="old",result="ok"}"#)
                .await;
            (admitted >= 1.0).then_some(())
        },
    )
    .await;

    // The old key goes, a new one comes.
    replace_file(keys.path(), &entry("new", NEWCOMER, "[write]"));
    wait_for(
        "the new key to be let in",
        Duration::from_secs(10),
        || async {
            grpc_send(&ingest, Some(NEWCOMER), vec![packet("d2", "")])
                .await
                .ok()
        },
    )
    .await;
    let status = grpc_send(&ingest, Some(WRITER), vec![packet("d3", "")])
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::Unauthenticated,
        "a new call with the removed key"
    );

    // The stream opened before goes on, and everything it sent is acked.
    for _ in 0..50 {
        tx.send(packet("streamer", &format!("s{sent}")))
            .await
            .unwrap();
        sent += 1;
    }
    drop(tx);
    let ack = call.await.unwrap().unwrap().into_inner();
    assert_eq!(ack.accepted, sent, "{ack:?}");
    assert_eq!(
        ingest
            .metric(r#"telemetry_ingest_events_by_key_total{key="old"}"#)
            .await,
        sent as f64
    );
    assert_eq!(
        ingest
            .metric(r#"telemetry_ingest_api_keys_reloads_total{result="ok"}"#)
            .await,
        1.0
    );

    // An invalid file is refused; the keys in force stay.
    replace_file(
        keys.path(),
        "- name: broken\n  sha256: nothex\n  scopes: [write]\n",
    );
    wait_for(
        "the invalid file to be read",
        Duration::from_secs(10),
        || async {
            let refused = r#"telemetry_ingest_api_keys_reloads_total{result="invalid"}"#;
            (ingest.metric(refused).await >= 1.0).then_some(())
        },
    )
    .await;
    grpc_send(&ingest, Some(NEWCOMER), vec![packet("d4", "")])
        .await
        .unwrap();
    // So is an empty one (a file caught half-written must not lock everyone out).
    replace_file(keys.path(), "");
    wait_for(
        "the empty file to be read",
        Duration::from_secs(10),
        || async {
            let refused = r#"telemetry_ingest_api_keys_reloads_total{result="invalid"}"#;
            (ingest.metric(refused).await >= 2.0).then_some(())
        },
    )
    .await;
    grpc_send(&ingest, Some(NEWCOMER), vec![packet("d5", "")])
        .await
        .unwrap();
    ingest.stop().await;
}

#[tokio::test]
async fn an_invalid_key_file_at_startup_is_fatal_and_names_the_entry_and_rule() {
    let redis = Redis::start();
    let keys = key_file(&entry("a", WRITER, "[write, admin]"));
    let argv = [
        "telemetry-ingest".to_string(),
        "--grpc-listen=127.0.0.1:0".into(),
        "--http-listen=127.0.0.1:0".into(),
        format!("--redis-url={}", redis.url()),
        format!("--api-keys-file={}", keys.path().display()),
    ];
    let args =
        <telemetry_ingest::config::IngestArgs as clap::Parser>::try_parse_from(argv).unwrap();
    let listeners = telemetry_ingest::server::Listeners::bind(&args)
        .await
        .unwrap();
    let err = telemetry_ingest::server::run(args, listeners, Default::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("entry 0 ('a'): unknown scope 'admin'"),
        "{err}"
    );
    assert!(err.contains("--api-keys-file"), "{err}");
}

fn send_args(n: u64) -> SendArgs {
    SendArgs {
        grpc: None,
        http: None,
        api_key: None,
        ca: None,
        n,
        devices: 5,
        users: 5,
        event_types: "reading".into(),
        rate: 0,
        concurrency: 2,
        batch: 50,
        grpc_mode: GrpcMode::Stream,
        payload: PayloadKind::Json,
        duplicates: 0.0,
        invalid: 0.0,
        retries: 0,
        seed: Some(3),
        json: true,
        no_progress: true,
    }
}

#[tokio::test]
async fn a_key_from_telemetryctl_key_new_sends_over_both_transports() {
    let redis = Redis::start();
    let p = pipeline("auth-ctl");
    let new = NewKey::from_bytes("loadgen", &[KeyScope::Write], rand::random()).unwrap();
    // What `key new` prints: the key on its second line, then the entry.
    let shown = new.render();
    let key = shown.lines().nth(1).unwrap().to_string();
    let entry: String = shown.lines().skip(3).map(|l| format!("{l}\n")).collect();
    assert_eq!(
        sha256_hex(&key),
        new.sha256,
        "the printed hash is the key's"
    );
    let keys = key_file(&entry);
    let ingest = start(&redis, &p, &keys).await;

    let mut args = send_args(400);
    args.grpc = Some(ingest.grpc_url());
    args.api_key = Some(key.parse().unwrap());
    let summary = telemetryctl::send::send(args).await.unwrap();
    assert!(summary.consistent(), "{summary:?}");
    assert_eq!(summary.accepted, 400);

    let mut args = send_args(300);
    args.http = Some(ingest.http_url());
    args.api_key = Some(key.parse().unwrap());
    let summary = telemetryctl::send::send(args).await.unwrap();
    assert!(summary.consistent(), "{summary:?}");
    assert_eq!(redis.events(&p), 700);
    assert_eq!(
        ingest
            .metric(r#"telemetry_ingest_events_by_key_total{key="loadgen"}"#)
            .await,
        700.0
    );

    // Without the key nothing is acknowledged, and the run says so.
    let mut args = send_args(100);
    args.grpc = Some(ingest.grpc_url());
    let summary = telemetryctl::send::send(args).await.unwrap();
    assert_eq!((summary.accepted, summary.failed), (0, 100), "{summary:?}");
    assert_eq!(redis.events(&p), 700);
    ingest.stop().await;
}

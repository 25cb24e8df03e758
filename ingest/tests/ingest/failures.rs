//! Backpressure, Redis outages and shutdown: nothing acknowledged is lost.

use std::time::{Duration, Instant};

use telemetry_proto::json::EventJson;
use telemetry_proto::v1::Packet;
use telemetryctl::cli::{GrpcMode, PayloadKind, SendArgs};
use telemetryctl::send::report::Summary;
use telemetryctl::send::send;

use crate::support::{Ingest, IngestProcess, Redis, packet, pipeline, wait_for};

/// `--flush-timeout-ms` of the Redis restart test: how long a flush retries
/// before its events are answered UNAVAILABLE.
const FLUSH_TIMEOUT: Duration = Duration::from_millis(1000);

pub(crate) fn load(grpc: String, n: u64, rate: u64, retries: u32) -> SendArgs {
    SendArgs {
        grpc: Some(grpc),
        http: None,
        ca: None,
        api_key: None,
        n,
        devices: 20,
        users: 10,
        event_types: "reading,purchase".into(),
        rate,
        concurrency: 2,
        batch: 100,
        grpc_mode: GrpcMode::Stream,
        payload: PayloadKind::Json,
        duplicates: 0.0,
        invalid: 0.0,
        retries,
        seed: Some(7),
        json: true,
        no_progress: true,
    }
}

fn events(n: usize, tag: &str) -> Vec<Packet> {
    (0..n)
        .map(|i| packet(&format!("bp-{}", i % 3), &format!("{tag}{i}")))
        .collect()
}

#[tokio::test]
async fn full_queue_answers_429_and_resource_exhausted_and_loses_nothing_accepted() {
    let redis = Redis::start();
    let p = pipeline("backpressure");
    let ingest = Ingest::start(
        &redis.url(),
        &p,
        &[
            "--queue-capacity=512",
            "--backpressure-timeout-ms=300",
            "--flush-timeout-ms=10000",
        ],
    )
    .await;
    // Writes stall for 3 s (PING still answers, so the pod stays ready).
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("WRITE")
        .query(&mut redis.conn())
        .unwrap();
    let http = reqwest::Client::new();
    let batch = |tag: &str| {
        events(300, tag)
            .iter()
            .map(EventJson::from)
            .collect::<Vec<_>>()
    };
    let url = format!("{}/api/v1/events/batch", ingest.http_url());
    let first = tokio::spawn(http.post(&url).json(&batch("a")).send());
    wait_for(
        "the first batch to be queued",
        Duration::from_secs(2),
        || async { (ingest.metric("telemetry_ingest_queue_depth").await >= 300.0).then_some(()) },
    )
    .await;

    // 300 of 512 are taken: the next batch is refused at once with 429.
    let started = Instant::now();
    let refused = http.post(&url).json(&batch("b")).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "429 comes at once"
    );
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.headers()["telemetry-settled"], "0");
    // What a refused call did settle is told as gRPC tells it, rejections
    // included: here two invalid events ahead of the chunk that did not fit.
    let mut with_invalid = batch("r");
    for i in 0..2 {
        with_invalid.insert(
            0,
            EventJson::from(&packet("bad device", &format!("bad{i}"))),
        );
    }
    let refused = http.post(&url).json(&with_invalid).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    for (header, value) in [
        ("telemetry-settled", "2"),
        ("telemetry-accepted", "0"),
        ("telemetry-duplicates", "0"),
        ("telemetry-rejected", "2"),
    ] {
        assert_eq!(refused.headers()[header], value, "{header}");
    }

    // A gRPC stream waits for space, then gives up with RESOURCE_EXHAUSTED
    // and says how far it got.
    let err = ingest
        .client()
        .await
        .stream_packets(tokio_stream::iter(events(400, "c")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    let settled: u64 = err
        .metadata()
        .get("telemetry-settled")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let accepted: u64 = err
        .metadata()
        .get("telemetry-accepted")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        settled, accepted,
        "settled events of a valid stream are all accepted"
    );

    // Once Redis takes writes again the first batch is stored and acked.
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), 200);
    let ack: serde_json::Value = first.json().await.unwrap();
    assert_eq!(ack["accepted"], 300);
    // The refused batch, resent, is accepted in full.
    let again: serde_json::Value = http
        .post(&url)
        .json(&batch("b"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["accepted"], 300);
    // Anything the refused stream enqueued before giving up is flushed too.
    wait_for("the queue to drain", Duration::from_secs(5), || async {
        (ingest.metric("telemetry_ingest_queue_depth").await == 0.0).then_some(())
    })
    .await;
    let stored = redis.events(&p);
    assert!(
        stored >= 600 + accepted,
        "acknowledged events are stored: {stored} < {}",
        600 + accepted
    );
    assert!(
        stored <= 600 + 400,
        "nothing beyond what was sent: {stored}"
    );
    ingest.stop().await;
}

#[tokio::test]
async fn redis_restart_during_a_stream_gives_unavailable_then_recovers_with_exact_totals() {
    let mut redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let p = pipeline("restart");
    let flush_timeout = format!("--flush-timeout-ms={}", FLUSH_TIMEOUT.as_millis());
    let ingest = Ingest::start(&redis.url(), &p, &[flush_timeout.as_str()]).await;
    let sender = tokio::spawn(send(load(ingest.grpc_url(), 20_000, 5_000, 500)));
    // Redis goes away mid-stream: once part of it is stored (the sender needs
    // 4 s for all of it).
    wait_for(
        "the stream to be flowing",
        Duration::from_secs(10),
        || async { (redis.events(&p) >= 2_000).then_some(()) },
    )
    .await;
    redis.stop();
    let stopped = Instant::now();

    // With Redis gone readiness drops, and from then on a call fails fast.
    wait_for(
        "readiness to turn false while Redis is down",
        Duration::from_secs(3),
        || async { (!ingest.ready().await).then_some(()) },
    )
    .await;
    let started = Instant::now();
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/events", ingest.http_url()))
        .json(&serde_json::json!({"deviceId": "x", "timestamp": telemetry_ingest::intake::now_ms(), "eventId": "down"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "503 within a second"
    );
    let mut grpc = ingest.client().await;
    let err = grpc
        .stream_packets(tokio_stream::iter(vec![packet("x", "down2")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);

    // Not a wait for a condition: the length of the outage is the scenario.
    // It outlasts the ingest's own flush retries, so whatever of the sender's
    // was in flight when Redis went is answered UNAVAILABLE, and the calls the
    // sender makes meanwhile are refused: both have to be retried.
    let outage = FLUSH_TIMEOUT + Duration::from_millis(200);
    tokio::time::sleep(outage.saturating_sub(stopped.elapsed())).await;
    redis.restart();
    ingest.wait_ready(Duration::from_secs(10)).await;

    let summary: Summary = sender.await.unwrap().unwrap();
    assert_eq!(
        summary.failed, 0,
        "every call eventually got through: {summary:?}"
    );
    assert!(summary.retries > 0, "the outage was felt: {summary:?}");
    assert_eq!(summary.accepted + summary.duplicates, summary.sent);
    assert_eq!(
        redis.events(&p),
        summary.accepted,
        "acknowledged totals match Redis: {summary:?}"
    );
    ingest.stop().await;
}

#[tokio::test]
async fn sigterm_during_streams_drains_and_everything_acknowledged_is_in_redis() {
    let redis = Redis::start();
    let p = pipeline("sigterm");
    let ingest = IngestProcess::start(&redis.url(), &p, &["--shutdown-timeout-seconds=10"]).await;
    let sender = tokio::spawn(send(load(
        format!("http://{}", ingest.grpc),
        1_000_000,
        4_000,
        0,
    )));
    wait_for(
        "the stream to be flowing",
        Duration::from_secs(10),
        || async { (redis.events(&p) >= 2_000).then_some(()) },
    )
    .await;
    let ready = reqwest::get(format!("http://{}/readyz", ingest.http))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    ingest.sigterm();
    let mut ingest = ingest;
    let status = wait_for(
        "telemetry-ingest to exit after SIGTERM",
        Duration::from_secs(10),
        || std::future::ready(ingest.child.try_wait().unwrap()),
    )
    .await;
    assert!(status.success(), "clean exit after draining: {status}");
    let summary: Summary = sender.await.unwrap().unwrap();
    assert!(
        summary.accepted > 0,
        "events were flowing when SIGTERM came"
    );
    assert!(summary.failed > 0, "the stop cut the run short");
    assert_eq!(
        redis.events(&p),
        summary.accepted,
        "everything acknowledged is stored, and only that"
    );
}

//! Hostile and malformed input: each connection, stream and size limit
//! answers with a clear error and leaves the other clients alone.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use telemetry_proto::v1::{Packet, PacketBatch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Ingest, Redis, log_lines, packet, pipeline, wait_for};

/// How long a test waits for something the server must do "soon".
const BOUND: Duration = Duration::from_secs(10);

/// A packet whose payload makes it at least `bytes` long on the wire.
fn large_packet(device: &str, id: &str, bytes: usize) -> Packet {
    let mut p = packet(device, id);
    p.payload = format!("{{\"pad\":\"{}\"}}", "x".repeat(bytes)).into_bytes();
    p
}

fn event_json(device: &str, id: &str, pad: usize) -> serde_json::Value {
    serde_json::json!({
        "deviceId": device,
        "timestamp": telemetry_ingest::intake::now_ms(),
        "eventType": "reading",
        "eventId": id,
        "payload": {"pad": "x".repeat(pad)},
    })
}

/// Reads until the server closes the connection (EOF or reset) and returns
/// how long that took; fails the test if it stays open past `limit`.
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + limit).into(), tcp.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
        }
    }
}

/// The `telemetry-*` trailer `key` of a failed call, as a number.
fn trailer(status: &tonic::Status, key: &str) -> u64 {
    status
        .metadata()
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {status:?}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn an_http_body_over_the_limit_is_413_naming_the_limit_and_other_requests_are_served() {
    let redis = Redis::start();
    let p = pipeline("limits-body");
    let ingest = Ingest::start(&redis.url(), &p, &["--http-max-body-bytes=4096"]).await;
    let http = reqwest::Client::new();

    let single = event_json("d-1", "big-1", 8192);
    let batch = serde_json::json!([event_json("d-1", "big-2", 100), single]);
    for (path, body) in [("events", &single), ("events/batch", &batch)] {
        let r = http
            .post(format!("{}/api/v1/{path}", ingest.http_url()))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        let error = &body["error"];
        assert_eq!(error["code"], "too_large", "{path}: {body}");
        assert_eq!(error["field"], "body", "{path}: {body}");
        assert_eq!(error["reason"], "body.too_large", "{path}: {body}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains("4096") && message.contains("--http-max-body-bytes"),
            "{path}: {message}"
        );
    }

    // The same server takes a request under the limit, and stored nothing
    // of the refused ones.
    let r = http
        .post(format!("{}/api/v1/events", ingest.http_url()))
        .json(&event_json("d-1", "small-1", 100))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(redis.events(&p), 1);
    ingest.stop().await;
}

#[tokio::test]
async fn a_half_sent_request_head_is_closed_after_the_header_read_timeout() {
    let redis = Redis::start();
    let ingest = Ingest::start(
        &redis.url(),
        &pipeline("limits-header"),
        &["--http-header-read-timeout-seconds=1"],
    )
    .await;
    let mut tcp = TcpStream::connect(ingest.http).await.unwrap();
    // A request line and one header, never the blank line that ends them.
    tcp.write_all(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let open_for = closed_within(&mut tcp, BOUND).await;
    assert!(
        open_for >= Duration::from_millis(900),
        "closed after {open_for:?}, before the timeout"
    );

    // An HTTP/1 keep-alive connection that sends no next request goes too.
    let mut tcp = TcpStream::connect(ingest.http).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    closed_within(&mut tcp, BOUND).await;
    ingest.stop().await;
}

#[tokio::test]
async fn a_connection_that_carries_nothing_is_closed_after_the_idle_timeout() {
    let redis = Redis::start();
    let ingest = Ingest::start(
        &redis.url(),
        &pipeline("limits-idle"),
        &["--idle-timeout-seconds=1"],
    )
    .await;
    // Not even the HTTP/2 preface: only the idle timeout can end this one.
    let mut silent = TcpStream::connect(ingest.grpc).await.unwrap();
    let open_for = closed_within(&mut silent, BOUND).await;
    assert!(
        open_for >= Duration::from_millis(900),
        "closed after {open_for:?}, before the timeout"
    );
    // Half a preface is cut the same way.
    let mut half = TcpStream::connect(ingest.grpc).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    closed_within(&mut half, BOUND).await;
    // A working client is not affected.
    let ack = ingest.stream(vec![packet("d-1", "e-1")]).await;
    assert_eq!(ack.accepted, 1);
    ingest.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let redis = Redis::start();
    let ingest = Ingest::start(
        &redis.url(),
        &pipeline("limits-conns"),
        &[
            "--max-connections=2",
            "--http-header-read-timeout-seconds=60",
        ],
    )
    .await;
    // Two connections that hold their places (each served once, so each is
    // known to be accepted).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(ingest.http).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(BOUND, tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(tcp);
    }
    // The third is not served while they are open...
    let mut third = TcpStream::connect(ingest.http).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let waited =
        tokio::time::timeout(Duration::from_millis(500), third.read_to_end(&mut buf)).await;
    assert!(waited.is_err(), "served beyond the limit: {buf:?}");
    // ...and is, once one of them closes.
    drop(held.pop());
    tokio::time::timeout(BOUND, third.read_to_end(&mut buf))
        .await
        .expect("the waiting connection was served once a place was free")
        .unwrap();
    assert!(buf.starts_with(b"HTTP/1.1 200"), "{buf:?}");
    ingest.stop().await;
}

#[tokio::test]
async fn grpc_calls_beyond_the_stream_limit_wait_for_a_free_stream() {
    let redis = Redis::start();
    let p = pipeline("limits-streams");
    let ingest = Ingest::start(&redis.url(), &p, &["--grpc-max-concurrent-streams=1"]).await;
    // One connection (one channel), one stream kept open: its first ack
    // says the server holds it.
    let client = ingest.client().await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(PacketBatch {
        packets: vec![packet("d-1", "open-1")],
        sequence: 1,
    })
    .await
    .unwrap();
    let mut acks = client
        .clone()
        .stream_batches(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(BOUND, acks.message()).await.unwrap();
    assert_eq!(first.unwrap().unwrap().ack.unwrap().accepted, 1);
    // A second call on the same connection waits...
    let mut second = client.clone();
    let mut batch = tokio::spawn(async move {
        second
            .send_batch(PacketBatch {
                packets: vec![packet("d-1", "batch-1")],
                sequence: 1,
            })
            .await
    });
    let waited = tokio::time::timeout(Duration::from_millis(500), &mut batch).await;
    assert!(waited.is_err(), "a second stream was opened: {waited:?}");
    // ...until the first ends.
    drop(tx);
    assert!(acks.message().await.unwrap().is_none());
    let ack = tokio::time::timeout(BOUND, batch)
        .await
        .expect("the waiting call ran once the stream was free")
        .unwrap()
        .unwrap();
    assert_eq!(ack.into_inner().accepted, 1);
    ingest.stop().await;
}

#[tokio::test]
async fn a_grpc_message_over_the_limit_fails_out_of_range_naming_the_limit() {
    let redis = Redis::start();
    let p = pipeline("limits-message");
    let ingest = Ingest::start(&redis.url(), &p, &["--grpc-max-message-bytes=4096"]).await;

    // A unary call: tonic refuses it before the handler, naming the limit.
    let err = ingest
        .client()
        .await
        .send_batch(PacketBatch {
            packets: vec![large_packet("d-1", "big-1", 8192)],
            sequence: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("4096"), "{}", err.message());

    // A client stream: what came before the oversized message is settled,
    // and the status names the flag.
    let err = ingest
        .client()
        .await
        .stream_packets(tokio_stream::iter(vec![
            packet("d-1", "small-1"),
            large_packet("d-1", "big-2", 8192),
        ]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    assert!(
        err.message().contains("4096") && err.message().contains("--grpc-max-message-bytes"),
        "{}",
        err.message()
    );
    assert_eq!(trailer(&err, "telemetry-accepted"), 1);
    assert_eq!(redis.events(&p), 1);

    // Messages under the limit still go through.
    let ack = ingest.stream(vec![packet("d-1", "small-2")]).await;
    assert_eq!(ack.accepted, 1);
    ingest.stop().await;
}

#[tokio::test]
async fn a_silent_client_stream_is_ended_after_the_idle_timeout_with_what_it_sent_acknowledged() {
    let redis = Redis::start();
    let p = pipeline("limits-stream-idle");
    let ingest = Ingest::start(&redis.url(), &p, &["--grpc-stream-idle-timeout-seconds=1"]).await;

    // StreamPackets: two packets, then nothing, with the stream left open.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(packet("d-1", "e-1")).await.unwrap();
    tx.send(packet("d-1", "e-2")).await.unwrap();
    let mut client = ingest.client().await;
    let started = Instant::now();
    let err = tokio::time::timeout(
        BOUND,
        client.stream_packets(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await
    .expect("the silent stream was ended")
    .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(
        err.message().contains("--grpc-stream-idle-timeout-seconds"),
        "{}",
        err.message()
    );
    assert_eq!(trailer(&err, "telemetry-settled"), 2);
    assert_eq!(trailer(&err, "telemetry-accepted"), 2);
    assert_eq!(redis.events(&p), 2);
    drop(tx);

    // StreamBatches: the batch sent is acknowledged, then the status.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(PacketBatch {
        packets: vec![packet("d-1", "e-3")],
        sequence: 7,
    })
    .await
    .unwrap();
    let mut acks = client
        .stream_batches(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(BOUND, acks.message())
        .await
        .unwrap()
        .unwrap()
        .expect("the batch's ack");
    assert_eq!(first.sequence, 7);
    assert_eq!(first.ack.unwrap().accepted, 1);
    let end = tokio::time::timeout(BOUND, acks.message())
        .await
        .expect("the silent stream was ended")
        .unwrap_err();
    assert_eq!(end.code(), tonic::Code::DeadlineExceeded, "{end:?}");
    assert_eq!(redis.events(&p), 3);
    drop(tx);
    ingest.stop().await;
}

/// `--log-format plain` into a pipe: lines without terminal colour codes.
#[tokio::test]
async fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let redis = Redis::start();
    let mut child = Command::new(env!("CARGO_BIN_EXE_telemetry-ingest"))
        .arg("--grpc-listen=127.0.0.1:0")
        .arg("--http-listen=127.0.0.1:0")
        .arg(format!("--redis-url={}", redis.url()))
        .arg(format!("--pipeline={}", pipeline("limits-logs")))
        .arg("--log-format=plain")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut rx = log_lines(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let serving = wait_for("the startup log line", BOUND, || {
        while let Ok(line) = rx.try_recv() {
            lines.push(line);
        }
        let found = lines
            .iter()
            .find(|l| l.contains("telemetry-ingest serving"))
            .cloned();
        async move { found }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(serving.contains("INFO"), "{serving}");
    for line in &lines {
        assert!(!line.contains("\x1b["), "colour codes in {line:?}");
    }
}

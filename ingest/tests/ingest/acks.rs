//! Acknowledgements: exact counts, idempotent flushes, dedup across pods.

use std::collections::{BTreeMap, HashMap};

use telemetry_ingest::aggregate::{Plan, Settings, Slot};
use telemetry_ingest::config::RedisArgs;
use telemetry_ingest::event::Event;
use telemetry_ingest::keys::Keys;
use telemetry_ingest::store::Store;
use telemetry_proto::json::EventJson;
use telemetry_proto::v1::{Packet, PacketBatch};

use crate::proxy::Proxy;
use crate::support::{Ingest, Redis, packet, pipeline};

/// 300 valid events over 7 devices with ids, 20 invalid in between, and 30
/// repeats of earlier ids.
fn mixed_stream() -> (Vec<Packet>, HashMap<String, u64>) {
    let mut packets = Vec::new();
    let mut expected: HashMap<String, u64> = HashMap::new();
    for i in 0..300 {
        let device = format!("dev-{}", i % 7);
        *expected.entry(device.clone()).or_default() += 1;
        packets.push(packet(&device, &format!("e{i}")));
        if i % 15 == 0 {
            let mut bad = packet("bad device", &format!("bad{i}"));
            if i % 30 == 0 {
                bad.device_id = "ok".into();
                bad.timestamp = 0;
            }
            packets.push(bad);
        }
        if i % 10 == 9 {
            packets.push(packet(
                &format!("dev-{}", (i - 3) % 7),
                &format!("e{}", i - 3),
            ));
        }
    }
    (packets, expected)
}

#[tokio::test]
async fn grpc_stream_of_valid_invalid_and_duplicate_events_acks_exact_counts() {
    let redis = Redis::start();
    let p = pipeline("grpc-mixed");
    let ingest = Ingest::start(&redis.url(), &p, &[]).await;
    let (packets, expected) = mixed_stream();
    let ack = ingest.stream(packets).await;
    assert_eq!((ack.accepted, ack.rejected, ack.duplicates), (300, 20, 30));
    assert_eq!(ack.rejected_by_reason["device_id.invalid_chars"], 10);
    assert_eq!(ack.rejected_by_reason["timestamp.missing"], 10);
    assert!(
        ack.rejections
            .iter()
            .all(|r| r.message.contains("deviceId") || r.message.contains("timestamp"))
    );
    assert_eq!(redis.events(&p), 300);
    let rows: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(format!("tp:{{{p}}}:devices"))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(&mut redis.conn())
        .unwrap();
    let stored: HashMap<String, u64> = rows.into_iter().map(|(d, s)| (d, s as u64)).collect();
    assert_eq!(stored, expected);
    // The HTTP device counts agree with the gRPC acks.
    let devices: Vec<serde_json::Value> =
        reqwest::get(format!("{}/api/v1/devices?limit=100", ingest.http_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let total: u64 = devices.iter().map(|d| d["count"].as_u64().unwrap()).sum();
    assert_eq!(total, ack.accepted);
    ingest.stop().await;
}

#[tokio::test]
async fn metrics_count_the_flushed_events_and_time_every_answered_chunk_and_script() {
    let redis = Redis::start();
    let p = pipeline("metrics");
    let ingest = Ingest::start(&redis.url(), &p, &[]).await;
    let (packets, _) = mixed_stream();
    let ack = ingest.stream(packets).await;
    assert_eq!((ack.accepted, ack.duplicates), (300, 30));
    let text = reqwest::get(format!("{}/metrics", ingest.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    assert_eq!(value("telemetry_ingest_accepted_total"), 300.0);
    assert_eq!(value("telemetry_ingest_duplicates_total"), 30.0);
    // Valid events go through a flush, repeats included; rejected ones not.
    assert_eq!(value("telemetry_ingest_flush_batch_size_sum"), 330.0);
    // Every chunk is timed from the queue to its answer, which includes the
    // flush that stored it; every flush carries at least one chunk.
    let chunks = value("telemetry_ingest_stored_latency_seconds_count");
    let flushes = value("telemetry_ingest_flush_duration_seconds_count");
    assert!(chunks >= flushes && flushes >= 1.0, "{chunks} {flushes}");
    assert!(
        value("telemetry_ingest_stored_latency_seconds_sum")
            >= value("telemetry_ingest_flush_duration_seconds_sum")
    );
    // Every flush reports how long its script ran inside Redis, which is
    // part of the flush's round trip; the cost estimate is corrected by it.
    assert_eq!(
        value("telemetry_ingest_flush_script_seconds_count"),
        flushes
    );
    let script = value("telemetry_ingest_flush_script_seconds_sum");
    assert!(
        script > 0.0 && script <= value("telemetry_ingest_flush_duration_seconds_sum"),
        "{script}"
    );
    let factor = value("telemetry_ingest_flush_cost_factor");
    assert!((0.25..=4.0).contains(&factor), "{factor}");
    ingest.stop().await;
}

#[tokio::test]
async fn grpc_unary_batch_and_http_batch_ack_exact_counts() {
    let redis = Redis::start();
    let p = pipeline("batches");
    let ingest = Ingest::start(&redis.url(), &p, &[]).await;
    let (packets, _) = mixed_stream();
    let ack = ingest
        .client()
        .await
        .send_batch(PacketBatch {
            packets: packets.clone(),
            sequence: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ack.accepted, ack.rejected, ack.duplicates), (300, 20, 30));

    // The same events again over HTTP, in batches: all are duplicates now,
    // the invalid ones are still rejected one by one.
    let client = reqwest::Client::new();
    let mut totals = (0, 0, 0);
    for chunk in packets.chunks(100) {
        let body: Vec<_> = chunk.iter().map(EventJson::from).collect();
        let r = client
            .post(format!("{}/api/v1/events/batch", ingest.http_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let a: serde_json::Value = r.json().await.unwrap();
        totals.0 += a["accepted"].as_u64().unwrap();
        totals.1 += a["rejected"].as_u64().unwrap();
        totals.2 += a["duplicates"].as_u64().unwrap();
    }
    assert_eq!(totals, (0, 20, 330));
    assert_eq!(redis.events(&p), 300);
    ingest.stop().await;
}

/// A `Packet` of [`packet`] in its JSON form, built by hand so that the
/// HTTP side does not share code with the server.
fn event_json(p: &Packet) -> serde_json::Value {
    serde_json::json!({
        "deviceId": p.device_id,
        "timestamp": p.timestamp,
        "payload": serde_json::from_slice::<serde_json::Value>(&p.payload).unwrap(),
        "eventType": p.event_type,
        "eventId": p.event_id,
        "value": p.value,
    })
}

#[tokio::test]
async fn grpc_and_http_reject_the_same_events_for_the_same_reasons_and_messages() {
    let redis = Redis::start();
    let over_grpc = Ingest::start(&redis.url(), &pipeline("same-reasons-grpc"), &[]).await;
    let over_http = Ingest::start(&redis.url(), &pipeline("same-reasons-http"), &[]).await;
    let (packets, _) = mixed_stream();
    let ack = over_grpc.stream(packets.clone()).await;
    let body: Vec<_> = packets.iter().map(event_json).collect();
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/events/batch", over_http.http_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let json: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (&json["accepted"], &json["rejected"], &json["duplicates"]),
        (
            &ack.accepted.into(),
            &ack.rejected.into(),
            &ack.duplicates.into()
        )
    );
    let by_reason: BTreeMap<String, u64> =
        serde_json::from_value(json["rejectedByReason"].clone()).unwrap();
    assert_eq!(
        by_reason,
        ack.rejected_by_reason
            .into_iter()
            .collect::<BTreeMap<_, _>>()
    );
    assert_eq!(by_reason.values().sum::<u64>(), ack.rejected);
    let over_http_rejections: Vec<(u64, String, String)> = json["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_string(),
                r["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let over_grpc_rejections: Vec<(u64, String, String)> = ack
        .rejections
        .into_iter()
        .map(|r| (r.index, r.reason, r.message))
        .collect();
    assert_eq!(over_http_rejections.len(), 20);
    assert_eq!(over_http_rejections, over_grpc_rejections);
    over_grpc.stop().await;
    over_http.stop().await;
}

#[tokio::test]
async fn http_bodies_that_are_not_events_are_rejected_with_reasons_from_validation() {
    let redis = Redis::start();
    let p = pipeline("unreadable");
    let ingest = Ingest::start(&redis.url(), &p, &[]).await;
    let http = reqwest::Client::new();
    let now = telemetry_ingest::intake::now_ms();
    // In a batch, an element that is not an event is rejected and counted;
    // its neighbours are stored.
    let batch = serde_json::json!([
        {"deviceId": "d", "timestamp": now},
        42,
        {"deviceId": "d", "timestamp": now, "devcie": 1},
        {"deviceId": "d", "timestamp": now, "payload": "not base64!"},
    ]);
    let r = http
        .post(format!("{}/api/v1/events/batch", ingest.http_url()))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ack: serde_json::Value = r.json().await.unwrap();
    assert_eq!((&ack["accepted"], &ack["rejected"]), (&1.into(), &3.into()));
    assert_eq!(
        ack["rejectedByReason"],
        serde_json::json!({"json.invalid": 2, "payload.invalid": 1})
    );
    let fields: Vec<_> = ack["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["field"].as_str().unwrap()))
        .collect();
    assert_eq!(fields, [(1, "event"), (2, "event"), (3, "payload")]);
    assert!(
        ack["rejections"][1]["message"]
            .as_str()
            .unwrap()
            .contains("devcie"),
        "{ack}"
    );

    // Alone, such an event is a bad request (400); one that breaks a rule
    // once read is unprocessable (422). Both name the field and the reason.
    let single = |body: String| {
        let request = http
            .post(format!("{}/api/v1/events", ingest.http_url()))
            .header("content-type", "application/json")
            .body(body);
        async move {
            let r = request.send().await.unwrap();
            let status = r.status().as_u16();
            let json: serde_json::Value = r.json().await.unwrap();
            (status, json["error"].clone())
        }
    };
    let (status, error) = single("{\"deviceId\": ".into()).await;
    assert_eq!(status, 400);
    assert_eq!(
        (&error["code"], &error["reason"], &error["field"]),
        (
            &"invalid_argument".into(),
            &"json.invalid".into(),
            &"event".into()
        )
    );
    let bad_payload = format!(r#"{{"deviceId":"d","timestamp":{now},"payload":"no!"}}"#);
    let (status, error) = single(bad_payload).await;
    assert_eq!(status, 400);
    assert_eq!(error["reason"], "payload.invalid");
    assert_eq!(
        error["message"],
        "payload: a string payload must be base64; send other JSON values as they are"
    );
    let bad_device = format!(r#"{{"deviceId":"a b","timestamp":{now}}}"#);
    let (status, error) = single(bad_device).await;
    assert_eq!(status, 422);
    assert_eq!(
        (&error["code"], &error["reason"]),
        (&"invalid_event".into(), &"device_id.invalid_chars".into())
    );

    // Every one of them went through the same intake and is counted.
    let text = reqwest::get(format!("{}/metrics", ingest.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rejected = |reason: &str| -> f64 {
        let prefix = format!("telemetry_ingest_rejected_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} missing from /metrics"))
    };
    assert_eq!(rejected("json.invalid"), 3.0);
    assert_eq!(rejected("payload.invalid"), 2.0);
    assert_eq!(rejected("device_id.invalid_chars"), 1.0);
    assert_eq!(redis.events(&p), 1);
    ingest.stop().await;
}

#[tokio::test]
async fn empty_or_oversized_grpc_batch_is_invalid_argument() {
    let redis = Redis::start();
    let ingest = Ingest::start(
        &redis.url(),
        &pipeline("bad-batch"),
        &["--max-grpc-batch=5"],
    )
    .await;
    let mut client = ingest.client().await;
    let err = client
        .send_batch(PacketBatch {
            packets: vec![],
            sequence: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("packets"), "{}", err.message());
    let six = (0..6).map(|i| packet("d", &format!("{i}"))).collect();
    let err = client
        .send_batch(PacketBatch {
            packets: six,
            sequence: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    ingest.stop().await;
}

#[tokio::test]
async fn bidirectional_stream_acks_each_batch_in_order() {
    let redis = Redis::start();
    let p = pipeline("bidi");
    let ingest = Ingest::start(&redis.url(), &p, &[]).await;
    let batches: Vec<PacketBatch> = (0..5u64)
        .map(|s| PacketBatch {
            sequence: s,
            packets: (0..=s)
                .map(|i| packet("bidi", &format!("{s}-{i}")))
                .collect(),
        })
        .collect();
    let mut acks = ingest
        .client()
        .await
        .stream_batches(tokio_stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(a) = acks.message().await.unwrap() {
        seen.push((a.sequence, a.ack.unwrap().accepted));
    }
    assert_eq!(seen, [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]);
    assert_eq!(redis.events(&p), 15);
    ingest.stop().await;
}

fn event(device: &str, id: Option<&str>) -> Event {
    Event {
        device_id: device.into(),
        timestamp: telemetry_ingest::intake::now_ms(),
        payload: Default::default(),
        event_type: "t".into(),
        event_id: id.map(Into::into),
        user_id: None,
        value: 2.0,
        attributes: Default::default(),
    }
}

#[tokio::test]
async fn replayed_flush_with_the_same_batch_id_changes_nothing() {
    let redis = Redis::start();
    let p = pipeline("replay");
    let keys = Keys::new(&p);
    let store = Store::open(
        &RedisArgs {
            redis_url: redis.url(),
            redis_password: None,
            redis_username: None,
            redis_ca_file: None,
            redis_cluster_nodes: Vec::new(),
            redis_partitions: 1,
            redis_wait_replicas: 0,
        },
        &p,
    )
    .unwrap();
    let events = [
        event("a", None),
        event("a", Some("x")),
        event("b", Some("x")),
        event("b", None),
    ];
    let plan = Plan::build(&events, &Settings::default(), &keys);
    let first = store.apply("batch-1", 0, &plan).await.unwrap();
    let Slot::Claimed(second_claim) = plan.slots[2] else {
        panic!("event 2 has an id")
    };
    assert_eq!(
        first.duplicates,
        [second_claim].into(),
        "the second claim of id x is the duplicate"
    );
    assert!(
        first.script_micros.is_some(),
        "a flush that ran reports its run time"
    );
    let snapshot = |r: &Redis| {
        let mut c = r.conn();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("tp:{{{p}}}:*"))
            .query(&mut c)
            .unwrap();
        let mut dump: Vec<(String, Vec<u8>)> = keys
            .into_iter()
            .filter(|k| !k.contains(":batch:"))
            .map(|k| {
                let v: Vec<u8> = redis::cmd("DUMP").arg(&k).query(&mut c).unwrap();
                (k, v)
            })
            .collect();
        dump.sort();
        dump
    };
    let before = snapshot(&redis);
    let again = store.apply("batch-1", 0, &plan).await.unwrap();
    assert_eq!(
        again.duplicates, first.duplicates,
        "a replay returns the first result"
    );
    assert_eq!(again.script_micros, None, "a replay ran nothing");
    assert_eq!(snapshot(&redis), before, "a replay writes nothing");
    assert_eq!(redis.events(&p), 3);
    // A new flush id with the same events is a new flush: ids dedup, the
    // id-less events count again.
    store.apply("batch-2", 0, &plan).await.unwrap();
    assert_eq!(redis.events(&p), 5);
}

#[tokio::test]
async fn flush_whose_reply_is_lost_is_applied_exactly_once() {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port).await;
    let p = pipeline("lost-reply");
    let ingest = Ingest::start(&proxy.url(), &p, &["--flush-timeout-ms=5000"]).await;
    let post = |device: &str| {
        let url = format!("{}/api/v1/events", ingest.http_url());
        let body = serde_json::json!({"deviceId": device, "timestamp": telemetry_ingest::intake::now_ms()});
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    // Warm up: the script is loaded and the connection established.
    assert_eq!(post("warm").await.status(), 200);
    proxy.arm();
    // No event id: only the flush marker keeps a retry from counting twice.
    let r = post("once").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert!(
        proxy.swallowed.load(std::sync::atomic::Ordering::SeqCst),
        "the proxy did drop a reply"
    );
    let count: Option<f64> = redis::cmd("ZSCORE")
        .arg(format!("tp:{{{p}}}:devices"))
        .arg("once")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(count, Some(1.0));
    assert_eq!(redis.events(&p), 2);
    ingest.stop().await;
}

#[tokio::test]
async fn two_instances_on_one_redis_share_dedup_and_add_counts() {
    let redis = Redis::start();
    let p = pipeline("two-pods");
    let a = Ingest::start(&redis.url(), &p, &[]).await;
    let b = Ingest::start(&redis.url(), &p, &[]).await;
    let packets: Vec<Packet> = (0..500)
        .map(|i| packet(&format!("d{}", i % 5), &format!("id{i}")))
        .collect();
    // Both pods get every event at the same time: each id is stored once.
    let (ra, rb) = tokio::join!(
        async {
            a.client()
                .await
                .stream_packets(tokio_stream::iter(packets.clone()))
                .await
                .unwrap()
                .into_inner()
        },
        async {
            b.client()
                .await
                .stream_packets(tokio_stream::iter(packets.clone()))
                .await
                .unwrap()
                .into_inner()
        },
    );
    assert_eq!(ra.accepted + rb.accepted, 500);
    assert_eq!(ra.duplicates + rb.duplicates, 500);
    // Distinct events through either pod add up.
    let more: Vec<Packet> = (500..800)
        .map(|i| packet("d0", &format!("id{i}")))
        .collect();
    let (x, y) = more.split_at(100);
    let ax = a.stream(x.to_vec()).await;
    let by = b.stream(y.to_vec()).await;
    assert_eq!((ax.accepted, by.accepted), (100, 200));
    assert_eq!(redis.events(&p), 800);
    assert_eq!(redis.device_total(&p), 800);
    a.stop().await;
    b.stop().await;
}

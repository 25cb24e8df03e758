//! Aggregations end to end: events in through the real server, queries out,
//! exact values.

use std::time::Duration;

use serde_json::{Value, json};
use telemetry_proto::v1::Packet;
use telemetry_proto::v1::telemetry_query_client::TelemetryQueryClient;

use crate::support::{Ingest, Redis, packet, pipeline, wait_for};

const CONFIG: &str = r#"
recentEvents: { perDevice: 3 }
windows:
  - { name: revenue, eventType: purchase, aggregates: [count, sum, min, max], retentionSeconds: 7200 }
  - { name: short, aggregates: [count], retentionSeconds: 60 }
leaderboards:
  - { name: users, member: userId, score: count, bucket: hour }
  - { name: spend, eventType: purchase, member: userId, score: sum, bucket: day }
  - { name: regions, member: attribute, memberAttribute: region, bucket: day }
"#;

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

async fn start(redis: &Redis, p: &str, config: &tempfile::NamedTempFile) -> Ingest {
    let flag = format!("--config={}", config.path().display());
    Ingest::start(&redis.url(), p, &[flag.as_str(), "--config-poll-ms=50"]).await
}

fn event(device: &str, id: &str, kind: &str, user: &str, value: f64, ts: i64) -> Packet {
    let mut p = packet(device, id);
    p.event_type = kind.into();
    p.user_id = user.into();
    p.value = value;
    p.timestamp = ts;
    p.attributes = [(
        "region".to_string(),
        if value > 10.0 { "eu" } else { "us" }.to_string(),
    )]
    .into();
    p
}

async fn send(ingest: &Ingest, packets: Vec<Packet>) -> (u64, u64) {
    let ack = ingest.stream(packets).await;
    assert_eq!(ack.rejected, 0, "{:?}", ack.rejections);
    (ack.accepted, ack.duplicates)
}

async fn get(ingest: &Ingest, path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{}{path}", ingest.http_url()))
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The recent events of a device from the gRPC `TelemetryQuery` service.
async fn recent_over_grpc(ingest: &Ingest, device: &str) -> Vec<Packet> {
    let mut q = TelemetryQueryClient::connect(ingest.grpc_url())
        .await
        .unwrap();
    q.recent_events(telemetry_proto::v1::RecentEventsRequest {
        device_id: device.into(),
        limit: 0,
    })
    .await
    .unwrap()
    .into_inner()
    .events
}

fn now_ms() -> i64 {
    telemetry_ingest::intake::now_ms()
}

#[tokio::test]
async fn windows_split_events_by_minute_with_count_sum_min_max() {
    let redis = Redis::start();
    let p = pipeline("windows");
    let config = config_file(CONFIG);
    let ingest = start(&redis, &p, &config).await;
    let now = now_ms();
    let this_minute = now.div_euclid(60_000) * 60_000;
    let last_minute = this_minute - 60_000;
    send(
        &ingest,
        vec![
            event("d1", "a", "purchase", "u1", 10.0, last_minute + 5_000),
            event("d1", "b", "purchase", "u1", 2.5, last_minute + 59_999),
            event("d2", "c", "purchase", "u2", 7.0, this_minute),
            event("d2", "d", "view", "u2", 100.0, this_minute + 1),
        ],
    )
    .await;
    let (status, w) = get(&ingest, "/api/v1/windows/revenue?minutes=3").await;
    assert_eq!(status, 200);
    let points = w["points"].as_array().unwrap();
    assert_eq!(points.len(), 3);
    let at = |minute_ms: i64| {
        points
            .iter()
            .find(|p| p["minute"] == minute_ms / 1000)
            .cloned()
    };
    // A query made just after a minute boundary still holds both minutes.
    let last = at(last_minute).expect("last minute in the series");
    assert_eq!(
        (last["count"].as_u64(), last["sum"].as_f64()),
        (Some(2), Some(12.5))
    );
    assert_eq!(
        (last["min"].as_f64(), last["max"].as_f64()),
        (Some(2.5), Some(10.0))
    );
    if let Some(cur) = at(this_minute) {
        assert_eq!(
            (cur["count"].as_u64(), cur["sum"].as_f64()),
            (Some(1), Some(7.0))
        );
    }
    assert_eq!(w["total"]["count"], 3, "the view event is not a purchase");
    assert_eq!(w["total"]["sum"], 19.5);
    assert_eq!(w["total"]["min"], 2.5);
    // The same over gRPC.
    let mut q = TelemetryQueryClient::connect(ingest.grpc_url())
        .await
        .unwrap();
    let r = q
        .window(telemetry_proto::v1::WindowRequest {
            name: "revenue".into(),
            minutes: 3,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.total.unwrap().count, 3);
    ingest.stop().await;
}

#[tokio::test]
async fn window_buckets_expire_after_their_retention() {
    let redis = Redis::start();
    let p = pipeline("retention");
    let config = config_file(CONFIG);
    let ingest = start(&redis, &p, &config).await;
    let now = now_ms();
    // The `short` window keeps a minute for 60 s after it ends: an event from
    // ten minutes ago lands in a bucket that is already past its retention.
    send(
        &ingest,
        vec![
            event("d", "old", "x", "u", 1.0, now - 600_000),
            event("d", "new", "x", "u", 1.0, now),
        ],
    )
    .await;
    let minute = |ms: i64| ms.div_euclid(60_000) * 60;
    let key = |ms: i64| format!("tp:{{{p}}}:win:short:m:{}", minute(ms));
    let mut c = redis.conn();
    let old_exists: bool = redis::cmd("EXISTS")
        .arg(key(now - 600_000))
        .query(&mut c)
        .unwrap();
    assert!(!old_exists, "a bucket past its retention is gone");
    let expire_at: i64 = redis::cmd("EXPIRETIME")
        .arg(key(now))
        .query(&mut c)
        .unwrap();
    assert_eq!(
        expire_at,
        minute(now) + 60 + 60,
        "kept 60 s after the minute ends"
    );
    let (_, w) = get(&ingest, "/api/v1/windows/short?minutes=15").await;
    assert_eq!(w["total"]["count"], 1);
    ingest.stop().await;
}

#[tokio::test]
async fn leaderboards_rank_by_count_or_sum_with_shared_ranks_on_ties() {
    let redis = Redis::start();
    let p = pipeline("leaderboards");
    let config = config_file(CONFIG);
    let ingest = start(&redis, &p, &config).await;
    let now = now_ms();
    let mut events = Vec::new();
    for (user, n) in [("carol", 3), ("alice", 5), ("bob", 3), ("dave", 1)] {
        for i in 0..n {
            events.push(event(
                "d",
                &format!("{user}{i}"),
                "purchase",
                user,
                1.5,
                now,
            ));
        }
    }
    events.push(event("d", "anon", "purchase", "", 99.0, now));
    send(&ingest, events).await;
    let hour = now / 1000 / 3600 * 3600;
    let (status, l) = get(
        &ingest,
        &format!("/api/v1/leaderboards/users?topN=3&bucket={hour}"),
    )
    .await;
    assert_eq!(status, 200);
    let ranked: Vec<(u64, String, f64)> = l["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["rank"].as_u64().unwrap(),
                e["member"].as_str().unwrap().to_string(),
                e["score"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ranked,
        [
            (1, "alice".into(), 5.0),
            (2, "bob".into(), 3.0),
            (2, "carol".into(), 3.0)
        ],
        "ties share a rank and are ordered by member; events without a user are skipped"
    );
    let day = now / 1000 / 86_400 * 86_400;
    let (_, s) = get(
        &ingest,
        &format!("/api/v1/leaderboards/spend?topN=1&bucket={day}"),
    )
    .await;
    assert_eq!(
        s["entries"][0],
        json!({"rank": 1, "member": "alice", "score": 7.5})
    );
    let (_, r) = get(
        &ingest,
        &format!("/api/v1/leaderboards/regions?bucket={day}"),
    )
    .await;
    // Members by attribute: 12 events from "us", the anonymous one from "eu".
    assert_eq!(
        r["entries"][0],
        json!({"rank": 1, "member": "us", "score": 12.0})
    );
    assert_eq!(
        r["entries"][1],
        json!({"rank": 2, "member": "eu", "score": 1.0})
    );
    ingest.stop().await;
}

#[tokio::test]
async fn leaderboard_sums_over_flushes_and_many_members_are_the_senders_arithmetic() {
    let redis = Redis::start();
    let p = pipeline("lb-sums");
    let config = config_file(CONFIG);
    let ingest = start(&redis, &p, &config).await;
    let now = now_ms();
    // 1 300 members in one call: more than one slice of the flush script's
    // sorted-set writes. Three calls, so each member's score is the sum of
    // three flushes' amounts; fractional values, where a rounding anywhere
    // between the pod and Redis would show.
    let members = 1_300;
    let mut expected = vec![0.0f64; members];
    for round in 0..3 {
        let mut events = Vec::new();
        for (m, total) in expected.iter_mut().enumerate() {
            let value = 0.1 * (m + 1) as f64 + 0.7 * round as f64;
            // Per member, one event per call: the flush's amount is the value.
            *total += value;
            events.push(event(
                &format!("d{}", m % 7),
                &format!("r{round}-m{m}"),
                "purchase",
                &format!("u{m:04}"),
                value,
                now,
            ));
        }
        assert_eq!(send(&ingest, events).await, (members as u64, 0));
    }
    let day = now / 1000 / 86_400 * 86_400;
    let (status, l) = get(
        &ingest,
        &format!("/api/v1/leaderboards/spend?topN=1000&bucket={day}"),
    )
    .await;
    assert_eq!(status, 200);
    let entries = l["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1000);
    for e in entries {
        let member = e["member"].as_str().unwrap();
        let m: usize = member[1..].parse().unwrap();
        assert_eq!(e["score"].as_f64().unwrap(), expected[m], "{member}");
    }
    // The highest values rank first.
    assert_eq!(entries[0]["member"], "u1299");
    let (_, users) = get(
        &ingest,
        &format!(
            "/api/v1/leaderboards/users?topN=1000&bucket={}",
            now / 1000 / 3600 * 3600
        ),
    )
    .await;
    let users = users["entries"].as_array().unwrap();
    assert_eq!(users.len(), 1000);
    assert!(users.iter().all(|e| e["score"] == 3.0), "three events each");
    ingest.stop().await;
}

#[tokio::test]
async fn recent_events_keep_the_newest_up_to_the_cap() {
    let redis = Redis::start();
    let p = pipeline("recent");
    let config = config_file(CONFIG);
    let ingest = start(&redis, &p, &config).await;
    let now = now_ms();
    let events: Vec<Packet> = (0..5)
        .map(|i| event("dev-r", &format!("r{i}"), "x", "u", i as f64, now + i))
        .collect();
    send(&ingest, events).await;
    let (status, r) = get(&ingest, "/api/v1/devices/dev-r/recent").await;
    assert_eq!(status, 200);
    let values: Vec<f64> = r
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, [4.0, 3.0, 2.0], "newest first, capped at 3");
    assert_eq!(
        r[0]["payload"],
        json!({}),
        "a JSON payload comes back as JSON"
    );
    let (_, one) = get(&ingest, "/api/v1/devices/dev-r/recent?limit=1").await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    let events = recent_over_grpc(&ingest, "dev-r").await;
    assert_eq!(
        events
            .iter()
            .map(|e| e.event_id.as_str())
            .collect::<Vec<_>>(),
        ["r4", "r3", "r2"]
    );
    ingest.stop().await;
}

#[tokio::test]
async fn recent_events_read_back_every_field_and_lists_of_the_json_form_still_read() {
    let redis = Redis::start();
    let p = pipeline("recent-form");
    let config = config_file(CONFIG);
    let ingest = start(&redis, &p, &config).await;
    let now = now_ms();
    let mut binary = event("dev-f", "f1", "scan", "zoe", -2.25, now);
    binary.payload = vec![0, 159, 146, 150, b'{'];
    binary.attributes = [
        ("region".to_string(), "eu".to_string()),
        ("site".to_string(), "\u{e9}tage 3".to_string()),
    ]
    .into();
    let mut json_payload = event("dev-f", "", "reading", "", 0.0, now + 1);
    json_payload.payload = br#"{"temp":21.5,"ok":true}"#.to_vec();
    json_payload.attributes.clear();
    send(&ingest, vec![binary.clone(), json_payload]).await;
    let (_, r) = get(&ingest, "/api/v1/devices/dev-f/recent").await;
    assert_eq!(
        r,
        json!([
            {"deviceId": "dev-f", "timestamp": now + 1, "payload": {"temp": 21.5, "ok": true},
             "eventType": "reading", "value": 0.0},
            {"deviceId": "dev-f", "timestamp": now, "payload": "AJ+Slns=",
             "eventType": "scan", "eventId": "f1", "userId": "zoe", "value": -2.25,
             "attributes": {"region": "eu", "site": "\u{e9}tage 3"}},
        ])
    );
    let events = recent_over_grpc(&ingest, "dev-f").await;
    assert_eq!(events[1], binary, "the stored event is the packet as sent");

    // A list written by an earlier version holds the JSON form.
    let key = format!("tp:{{{p}}}:recent:dev-old");
    let old =
        r#"{"deviceId":"dev-old","timestamp":5,"payload":{"t":1},"eventType":"x","value":2.5}"#;
    let _: () = redis::cmd("LPUSH")
        .arg(&key)
        .arg(old)
        .query(&mut redis.conn())
        .unwrap();
    send(&ingest, vec![event("dev-old", "n1", "y", "", 1.0, now)]).await;
    let (_, r) = get(&ingest, "/api/v1/devices/dev-old/recent").await;
    let seen: Vec<(&str, f64)> = r
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["eventType"].as_str().unwrap(),
                e["value"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [("y", 1.0), ("x", 2.5)],
        "new form first, then the old"
    );
    assert_eq!(r[1]["payload"], json!({"t": 1}));
    ingest.stop().await;
}

#[tokio::test]
async fn recent_event_lists_expire_after_their_ttl_and_are_refreshed_by_new_events() {
    let redis = Redis::start();
    let p = pipeline("recent-ttl");
    // TTL 2 s: a list's TTL is set to 2 s plus a slack of 1 s, and refreshed
    // by a flush once the slack has passed.
    let config = config_file("recentEvents: { perDevice: 3, ttlSeconds: 2 }\n");
    let ingest = start(&redis, &p, &config).await;
    let key = |device: &str| format!("tp:{{{p}}}:recent:{device}");
    let ttl_ms = |device: &str| -> i64 {
        redis::cmd("PTTL")
            .arg(key(device))
            .query(&mut redis.conn())
            .unwrap()
    };
    send(&ingest, vec![event("keep", "k0", "x", "u", 0.0, now_ms())]).await;
    send(&ingest, vec![event("lapse", "l0", "x", "u", 0.0, now_ms())]).await;
    let first = ttl_ms("keep");
    assert!(
        (2_000..=3_000).contains(&first),
        "TTL set on creation: {first} ms"
    );
    // Past the slack, a new event of `keep` sets its TTL again; `lapse`
    // gets nothing and runs out. Not a wait for a condition: Redis TTLs run
    // on the wall clock, and letting the slack pass is the scenario.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    send(&ingest, vec![event("keep", "k1", "x", "u", 1.0, now_ms())]).await;
    let refreshed = ttl_ms("keep");
    assert!(
        refreshed > first - 1_500 + 500,
        "refreshed: {first} → {refreshed} ms"
    );
    // An idle device's list expires (about 1.5 s from now); `keep`'s lives
    // 1.5 s longer.
    wait_for(
        "the idle device's list to expire",
        Duration::from_secs(3),
        || async {
            (get(&ingest, "/api/v1/devices/lapse/recent").await.1 == json!([])).then_some(())
        },
    )
    .await;
    let (_, kept) = get(&ingest, "/api/v1/devices/keep/recent").await;
    assert_eq!(kept.as_array().map(Vec::len), Some(2), "{kept}");
    ingest.stop().await;
}

async fn send_twice_and_count(dedup: bool) -> (u64, Value) {
    let redis = Redis::start();
    let p = pipeline(if dedup { "dedup-on" } else { "dedup-off" });
    let config = config_file(&format!("{CONFIG}\ndedup: {{ enabled: {dedup} }}\n"));
    let ingest = start(&redis, &p, &config).await;
    let now = now_ms();
    let events: Vec<Packet> = (0..50)
        .map(|i| {
            event(
                &format!("d{}", i % 4),
                &format!("id{i}"),
                "purchase",
                "u",
                2.0,
                now,
            )
        })
        .collect();
    send(&ingest, events.clone()).await;
    send(&ingest, events).await;
    let (_, w) = get(&ingest, "/api/v1/windows/revenue?minutes=2").await;
    ingest.stop().await;
    (redis.events(&p), w["total"].clone())
}

#[tokio::test]
async fn the_same_events_twice_count_once_with_dedup_and_twice_without() {
    let (events, window) = send_twice_and_count(true).await;
    assert_eq!(events, 50);
    assert_eq!(
        (window["count"].as_u64(), window["sum"].as_f64()),
        (Some(50), Some(100.0))
    );
    let (events, window) = send_twice_and_count(false).await;
    assert_eq!(events, 100);
    assert_eq!(
        (window["count"].as_u64(), window["sum"].as_f64()),
        (Some(100), Some(200.0))
    );
}

#[tokio::test]
async fn config_change_during_a_stream_loses_and_doubles_nothing() {
    let redis = Redis::start();
    let p = pipeline("reload");
    let config = config_file("windows: [{ name: before, aggregates: [count] }]\n");
    let ingest = start(&redis, &p, &config).await;
    let args = telemetryctl::cli::SendArgs {
        grpc: Some(ingest.grpc_url()),
        http: None,
        ca: None,
        api_key: None,
        n: 20_000,
        devices: 10,
        users: 10,
        event_types: "reading".into(),
        rate: 8_000,
        concurrency: 2,
        batch: 100,
        grpc_mode: telemetryctl::cli::GrpcMode::Stream,
        payload: telemetryctl::cli::PayloadKind::Json,
        duplicates: 0.02,
        invalid: 0.0,
        retries: 3,
        seed: Some(1),
        json: true,
        no_progress: true,
    };
    let sender = tokio::spawn(telemetryctl::send::send(args));
    // The change lands mid-stream: once part of the stream is stored (the
    // sender needs 2.5 s for all of it), however long it took to start.
    wait_for(
        "the stream to be flowing",
        Duration::from_secs(10),
        || async { (redis.events(&p) >= 2_000).then_some(()) },
    )
    .await;
    replace_file(
        config.path(),
        "windows: [{ name: before, aggregates: [count] }, { name: after, aggregates: [count] }]\n",
    );
    wait_for(
        "the change to be picked up",
        Duration::from_secs(10),
        || async { (get(&ingest, "/api/v1/windows/after?minutes=1").await.0 == 200).then_some(()) },
    )
    .await;
    let summary = sender.await.unwrap().unwrap();
    assert!(summary.consistent(), "{summary:?}");
    assert_eq!(
        redis.events(&p),
        summary.accepted,
        "nothing lost or doubled across the reload"
    );
    assert_eq!(redis.device_total(&p), summary.accepted);
    let (_, before) = get(&ingest, "/api/v1/windows/before?minutes=5").await;
    let (status, after) = get(&ingest, "/api/v1/windows/after?minutes=5").await;
    assert_eq!(status, 200, "the new window is known after the reload");
    assert_eq!(before["total"]["count"].as_u64(), Some(summary.accepted));
    let after = after["total"]["count"].as_u64().unwrap();
    assert!(
        after > 0 && after < summary.accepted,
        "the new window counts from the reload on: {after}"
    );
    // An invalid file is refused and the running config stays.
    replace_file(config.path(), "windows: [{ name: Bad! }]\n");
    wait_for(
        "the invalid file to be read",
        Duration::from_secs(5),
        || async {
            let refused = r#"telemetry_ingest_config_reloads_total{result="invalid"}"#;
            (ingest.metric(refused).await >= 1.0).then_some(())
        },
    )
    .await;
    assert_eq!(get(&ingest, "/api/v1/windows/after?minutes=1").await.0, 200);
    ingest.stop().await;
}

/// Replaces a file's content in one step, as a Kubernetes ConfigMap volume
/// does (a write in place could be read half-done, say empty, which is a
/// valid config).
fn replace_file(path: &std::path::Path, content: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, content).unwrap();
    std::fs::rename(&next, path).unwrap();
}

#[tokio::test]
async fn every_query_route_answers_happy_unknown_and_bad_parameters() {
    let redis = Redis::start();
    let p = pipeline("routes");
    let config = config_file(CONFIG);
    let ingest = start(&redis, &p, &config).await;
    let now = now_ms();
    send(
        &ingest,
        vec![
            event("q1", "1", "purchase", "u", 3.0, now),
            event("q2", "2", "view", "u", 1.0, now),
        ],
    )
    .await;

    let happy = [
        "/api/v1/devices",
        "/api/v1/devices?limit=1&sort=device",
        "/api/v1/devices?deviceId=q1",
        "/api/v1/devices/q1/recent?limit=2",
        "/api/v1/counters",
        "/api/v1/counters?types=purchase,nope",
        "/api/v1/counters/purchase",
        "/api/v1/leaderboards/users?topN=5",
        "/api/v1/windows/revenue?minutes=60",
        "/api/v1/stats",
        "/api/v1/openapi.json",
    ];
    for path in happy {
        let (status, _) = get(&ingest, path).await;
        assert_eq!(status, 200, "{path}");
    }
    let (_, d) = get(&ingest, "/api/v1/devices?limit=1&sort=device").await;
    assert_eq!(d, json!([{"deviceId": "q1", "count": 1}]));
    let (_, c) = get(&ingest, "/api/v1/counters?types=purchase,nope").await;
    assert_eq!(
        c["counters"],
        json!([{"eventType": "purchase", "count": 1}, {"eventType": "nope", "count": 0}])
    );
    let (_, s) = get(&ingest, "/api/v1/stats").await;
    assert_eq!(
        (
            s["eventsTotal"].as_u64(),
            s["devices"].as_u64(),
            s["redisOk"].as_bool()
        ),
        (Some(2), Some(2), Some(true))
    );

    for (path, configured) in [
        ("/api/v1/leaderboards/nope", "users"),
        ("/api/v1/windows/nope", "revenue"),
    ] {
        let (status, body) = get(&ingest, path).await;
        assert_eq!(status, 404, "{path}");
        assert!(
            body["error"]["known"]
                .as_array()
                .unwrap()
                .contains(&json!(configured)),
            "{body}"
        );
    }
    let bad = [
        ("/api/v1/devices?limit=0", "limit"),
        ("/api/v1/devices?sort=size", "sort"),
        ("/api/v1/devices?colour=red", "colour"),
        ("/api/v1/devices/q1/recent?limit=0", "limit"),
        ("/api/v1/leaderboards/users?topN=0", "topN"),
        ("/api/v1/leaderboards/users?bucket=17", "bucket"),
        ("/api/v1/windows/revenue?minutes=0", "minutes"),
        ("/api/v1/windows/revenue?minutes=abc", "minutes"),
    ];
    for (path, param) in bad {
        let (status, body) = get(&ingest, path).await;
        assert_eq!(status, 400, "{path}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(param),
            "{path}: {body}"
        );
    }

    let mut q = TelemetryQueryClient::connect(ingest.grpc_url())
        .await
        .unwrap();
    let err = q
        .leaderboard(telemetry_proto::v1::LeaderboardRequest {
            name: "nope".into(),
            top_n: 0,
            bucket: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = q
        .device_counts(telemetry_proto::v1::DeviceCountsRequest {
            limit: 0,
            device_id: String::new(),
            sort: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let counters = q
        .counters(telemetry_proto::v1::CounterRequest {
            event_types: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counters.total, 2);
    let stats = q
        .stats(telemetry_proto::v1::StatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.events_total, 2);
    ingest.stop().await;
}

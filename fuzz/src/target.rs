//! The fuzz targets: each takes arbitrary bytes, decodes and validates them
//! with the product's own functions, exactly as the server (or the
//! operator) does with what a client sends, and checks what must hold of
//! whatever is accepted. None may panic, whatever the bytes.

use axum::extract::Query as QueryParams;
use prost::Message;
use telemetry_config::AggregationConfig;
use telemetry_ingest::aggregate::Settings;
use telemetry_ingest::config::{DEFAULT_MAX_GRPC_BATCH, DEFAULT_MAX_HTTP_BATCH};
use telemetry_ingest::event::RawEvent;
use telemetry_ingest::grpc::check_batch;
use telemetry_ingest::http::{
    CounterParams, LeaderboardParams, LimitParams, WindowParams, batch_events,
};
use telemetry_ingest::limits::Limits;
use telemetry_ingest::query::{
    DeviceParams, check_bucket, check_minutes, check_recent_limit, check_top_n,
};
use telemetry_ingest::validate::{validate, validate_json};
use telemetry_proto::v1::{
    CounterRequest, DeviceCountsRequest, LeaderboardRequest, Packet, PacketBatch,
    RecentEventsRequest, WindowRequest,
};

/// The server clock every target validates against (2023-11-14T22:13:20Z):
/// fixed, so that a failing input fails again. The seed corpus uses it.
pub const NOW_MS: i64 = 1_700_000_000_000;

/// One fuzz target.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Its name: the libFuzzer binary and the corpus directory.
    pub name: &'static str,
    /// What it reads, as the docs say it.
    pub reads: &'static str,
    pub run: fn(&[u8]),
    /// Tokens the mutator inserts (libFuzzer finds its own).
    pub tokens: &'static [&'static [u8]],
}

const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"null",
    b"true",
    b"-1",
    b"1e308",
    b"1e999",
    b"\\u0000",
    b"\\ud800",
    b"\"deviceId\"",
    b"\"timestamp\"",
    b"\"payload\"",
    b"\"eventType\"",
    b"\"eventId\"",
    b"\"userId\"",
    b"\"value\"",
    b"\"attributes\"",
    b"\"events\"",
    b"1700000000000",
    b"9223372036854775807",
    b"\"AAEC/w==\"",
];

const PROTO_TOKENS: &[&[u8]] = &[
    b"\x0a\x01d",
    b"\x10\x80\xd0\xac\xf3\xbc\x31",
    b"\x1a\x00",
    b"\x22\x04type",
    b"\x2a\x02id",
    b"\x32\x01u",
    b"\x39\x00\x00\x00\x00\x00\x00\xf0\x7f",
    b"\x42\x06\x0a\x01k\x12\x01v",
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    b"\x0a\x80\x80\x80\x80\x08",
];

const QUERY_TOKENS: &[&[u8]] = &[
    b"&",
    b"=",
    b"%",
    b"%00",
    b"%ff",
    b"+",
    b"limit=",
    b"deviceId=",
    b"sort=device",
    b"sort=count",
    b"types=",
    b"topN=",
    b"bucket=",
    b"minutes=",
    b"-1",
    b"0",
    b"18446744073709551616",
    b"-9223372036854775808",
];

const YAML_TOKENS: &[&[u8]] = &[
    b"\n",
    b"  ",
    b"- ",
    b": ",
    b"&a ",
    b"*a",
    b"<<: ",
    b"!!",
    b"counters:",
    b"perDevice: true",
    b"dropEventTypes: [",
    b"dropDevices: [\"*\"]",
    b"dedup:",
    b"ttlSeconds: ",
    b"recentEvents:",
    b"perDevice: ",
    b"windows:",
    b"leaderboards:",
    b"name: ",
    b"eventType: ",
    b"retentionSeconds: ",
    b"bucket: hour",
    b"member: userId",
    b"score: value",
    b"[[[[[[[[",
    b"{{{{{{{{",
];

const METRICS_TOKENS: &[&[u8]] = &[
    b"\n",
    b" ",
    b"{",
    b"}",
    b"=\"",
    b"\",",
    b"# TYPE ",
    b"# HELP ",
    b" gauge",
    b" counter",
    b" histogram",
    b" summary",
    b"_bucket",
    b"le=\"+Inf\"",
    b"quantile=\"0.5\"",
    b"NaN",
    b"+Inf",
    b"-Inf",
    b"telemetry_ingest_queue_depth",
    b"telemetry_ingest_flush_script_seconds_sum",
];

/// Every target, in the order `make fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "grpc_packet",
        reads: "a protobuf `Packet` (one message of StreamPackets), decoded and validated",
        run: grpc_packet,
        tokens: PROTO_TOKENS,
    },
    Target {
        name: "grpc_batch",
        reads: "a protobuf `PacketBatch` (SendBatch, StreamBatches), decoded, its size checked, each packet validated",
        run: grpc_batch,
        tokens: PROTO_TOKENS,
    },
    Target {
        name: "http_event",
        reads: "the JSON body of `POST /api/v1/events`, read and validated",
        run: http_event,
        tokens: JSON_TOKENS,
    },
    Target {
        name: "http_batch",
        reads: "the JSON body of `POST /api/v1/events/batch`, split, its size checked, each event read and validated",
        run: http_batch,
        tokens: JSON_TOKENS,
    },
    Target {
        name: "query_params",
        reads: "the query string of every HTTP query route, and every gRPC `TelemetryQuery` request, decoded and checked",
        run: query_params,
        tokens: QUERY_TOKENS,
    },
    Target {
        name: "aggregation_config",
        reads: "the aggregation config file (`--config` YAML), parsed, validated and compiled into settings",
        run: aggregation_config,
        tokens: YAML_TOKENS,
    },
    Target {
        name: "metrics_text",
        reads: "an ingest pod's `/metrics` body as the operator's scraper parses it",
        run: metrics_text,
        tokens: METRICS_TOKENS,
    },
];

/// The target of that name.
pub fn by_name(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// A packet is validated as it comes; one that passes comes back unchanged
/// when stored and read again as a packet (the recent-events answer).
pub fn grpc_packet(data: &[u8]) {
    let Ok(packet) = Packet::decode(data) else {
        return;
    };
    check_packet(packet);
}

fn check_packet(packet: Packet) {
    let limits = Limits::default();
    if let Ok(event) = validate(RawEvent::from(packet), &limits, NOW_MS) {
        let again = validate(RawEvent::from(Packet::from(&event)), &limits, NOW_MS);
        assert_eq!(
            again.as_ref(),
            Ok(&event),
            "a valid event must survive its packet form"
        );
    }
}

/// A batch is refused as a whole when empty or too large; otherwise each
/// packet is validated on its own.
pub fn grpc_batch(data: &[u8]) {
    let Ok(batch) = PacketBatch::decode(data) else {
        return;
    };
    let n = batch.packets.len();
    match check_batch(&batch, DEFAULT_MAX_GRPC_BATCH) {
        Ok(()) => {
            assert!((1..=DEFAULT_MAX_GRPC_BATCH).contains(&n));
            for packet in batch.packets {
                check_packet(packet);
            }
        }
        Err(e) => assert!(
            n == 0 || n > DEFAULT_MAX_GRPC_BATCH,
            "batch of {n} refused: {e}"
        ),
    }
}

/// One JSON event: either an event or a rejection that names a field and a
/// rule.
pub fn http_event(data: &[u8]) {
    check_json_event(data);
}

fn check_json_event(json: &[u8]) {
    match validate_json(json, &Limits::default(), NOW_MS) {
        Ok(event) => {
            assert!(!event.device_id.is_empty() && !event.event_type.is_empty());
            assert!(event.value.is_finite());
        }
        Err(r) => {
            assert!(!r.reason.is_empty() && !r.field.is_empty() && !r.message.is_empty());
        }
    }
}

/// A JSON batch: split into raw elements (1..=1000), each read and validated
/// on its own, as the handler does.
pub fn http_batch(data: &[u8]) {
    let Ok(events) = batch_events(data, DEFAULT_MAX_HTTP_BATCH) else {
        return;
    };
    assert!((1..=DEFAULT_MAX_HTTP_BATCH).contains(&events.len()));
    for event in events {
        check_json_event(event.get().as_bytes());
    }
}

/// The first byte picks a query route (HTTP query string or gRPC request),
/// the rest is what the client sent for it.
pub fn query_params(data: &[u8]) {
    let Some((&route, rest)) = data.split_first() else {
        return;
    };
    match route % 10 {
        0 => {
            if let Some(p) = http_params::<DeviceParams>(rest) {
                check_devices(&p);
            }
        }
        1 => {
            if let Some(p) = http_params::<LimitParams>(rest) {
                check_recent(p.limit);
            }
        }
        2 => {
            if let Some(p) = http_params::<CounterParams>(rest) {
                assert!(p.types().iter().all(|t| !t.is_empty()));
            }
        }
        3 => {
            if let Some(p) = http_params::<LeaderboardParams>(rest) {
                check_leaderboard(p.top_n, p.bucket);
            }
        }
        4 => {
            if let Some(p) = http_params::<WindowParams>(rest) {
                check_window(p.minutes);
            }
        }
        5 => {
            if let Ok(r) = DeviceCountsRequest::decode(rest)
                && let Ok(p) = DeviceParams::from_proto(&r)
            {
                check_devices(&p);
            }
        }
        6 => {
            if let Ok(r) = RecentEventsRequest::decode(rest) {
                check_recent((r.limit != 0).then_some(r.limit as usize));
            }
        }
        7 => {
            let _ = CounterRequest::decode(rest);
        }
        8 => {
            if let Ok(r) = LeaderboardRequest::decode(rest) {
                check_leaderboard(
                    (r.top_n != 0).then_some(r.top_n as usize),
                    (r.bucket != 0).then_some(r.bucket),
                );
            }
        }
        _ => {
            if let Ok(r) = WindowRequest::decode(rest) {
                check_window((r.minutes != 0).then_some(r.minutes));
            }
        }
    }
}

/// What axum's `Query` extractor makes of a request's query string: `None`
/// when the URI or the parameters are refused (400).
fn http_params<T: serde::de::DeserializeOwned>(query: &[u8]) -> Option<T> {
    let mut uri = b"/api/v1/q?".to_vec();
    uri.extend_from_slice(query);
    let uri = http::Uri::try_from(uri).ok()?;
    QueryParams::<T>::try_from_uri(&uri).ok().map(|q| q.0)
}

fn check_devices(p: &DeviceParams) {
    if let Ok(limit) = p.limit() {
        assert!((1..=telemetry_ingest::query::MAX_DEVICE_LIMIT).contains(&limit));
    }
}

fn check_recent(limit: Option<usize>) {
    for keep in [0, 10, 5_000] {
        if let Ok(n) = check_recent_limit(limit, keep) {
            assert!((1..=telemetry_ingest::query::MAX_RECENT_LIMIT).contains(&n));
        }
    }
}

fn check_leaderboard(top_n: Option<usize>, bucket: Option<i64>) {
    if let Ok(n) = check_top_n(top_n) {
        assert!((1..=telemetry_ingest::query::MAX_TOP_N).contains(&n));
    }
    for len in [3_600, 86_400] {
        if let Ok(b) = check_bucket(bucket, len, NOW_MS / 1000) {
            assert_eq!(b.rem_euclid(len), 0);
        }
    }
}

fn check_window(minutes: Option<u32>) {
    if let Ok(m) = check_minutes(minutes) {
        assert!((1..=telemetry_ingest::query::MAX_WINDOW_MINUTES).contains(&m));
    }
}

/// The config file as the server reads it (UTF-8 text): a config that is
/// accepted compiles into settings, and the YAML the operator renders of it
/// reads back as the same config.
pub fn aggregation_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = AggregationConfig::from_yaml(text) else {
        return;
    };
    let rendered = config.to_yaml();
    let again = AggregationConfig::from_yaml(&rendered);
    assert_eq!(
        again.as_ref().ok(),
        Some(&config),
        "the rendered config must read back the same: {rendered}"
    );
    Settings::new(config).expect("a valid config compiles into settings");
}

/// A pod's `/metrics` body as the operator parses it.
pub fn metrics_text(data: &[u8]) {
    let _ = telemetry_operator::scrape::parse(data);
}

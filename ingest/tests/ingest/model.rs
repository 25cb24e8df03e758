//! Reference-model tests: random mixes of events — several devices, types
//! and users, values, timestamps over several minutes, duplicate ids,
//! invalid events, whole batches sent again — go through the real server
//! (gRPC streams, gRPC batches and HTTP batches, real clients, a real
//! redis-server), and what the query API returns must equal what a small
//! model of the documented semantics (docs/aggregation.md) computes: every
//! answer's accepted / rejected / duplicate counts, per-device and per-type
//! counts, per-minute windows (count, sum, min, max), leaderboards (order
//! and shared ranks on ties), the recent events of each device, and the
//! stored event total.

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use telemetry_proto::json::{AckJson, Counters, DeviceCount, EventJson, Leaderboard, Window};
use telemetry_proto::v1::{Packet, PacketBatch};

use crate::support::{Ingest, Redis, pipeline};

const CONFIG: &str = r#"
recentEvents: { perDevice: 5 }
windows:
  - { name: all, aggregates: [count, sum, min, max] }
  - { name: purchases, eventType: purchase, aggregates: [count, sum] }
leaderboards:
  - { name: spenders, member: userId, score: sum, bucket: day }
  - { name: devices, member: deviceId, score: count, bucket: hour }
"#;

/// Kept per device by [`CONFIG`].
const RECENT_PER_DEVICE: usize = 5;
const DEVICES: [&str; 4] = ["sensor-a", "sensor-b", "pump:1", "gw_2.x"];
const TYPES: [&str; 3] = ["view", "purchase", "click"];
const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
/// Event ids are drawn from this many, so that ids repeat.
const IDS: u32 = 120;

/// How one event is made broken, if at all.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// A device id with a space: `device_id.invalid_chars`.
    BadDevice,
    /// An hour ahead of the server clock: `timestamp.in_future`.
    Future,
}

/// One generated event, relative to the case's start time.
#[derive(Debug, Clone)]
struct Ev {
    device: usize,
    kind: usize,
    user: Option<usize>,
    id: Option<u32>,
    /// In quarters, so that sums are exact in any order.
    quarters: i32,
    /// Milliseconds before the case's start time (0 to 5 minutes).
    age_ms: i64,
    fault: Fault,
}

#[derive(Debug, Clone, Copy)]
enum Transport {
    GrpcStream,
    GrpcBatch,
    HttpBatch,
}

#[derive(Debug, Clone)]
enum Op {
    Send(Transport, Vec<Ev>),
    /// The previous batch again, unchanged (same ids): a client retry.
    Retry(Transport),
}

fn ev() -> impl Strategy<Value = Ev> {
    (
        0..DEVICES.len(),
        0..TYPES.len(),
        proptest::option::weighted(0.8, 0..USERS.len()),
        proptest::option::weighted(0.85, 0..IDS),
        -400..400i32,
        0..300_000i64,
        prop_oneof![18 => Just(Fault::None), 1 => Just(Fault::BadDevice), 1 => Just(Fault::Future)],
    )
        .prop_map(|(device, kind, user, id, quarters, age_ms, fault)| Ev {
            device,
            kind,
            user,
            id,
            quarters,
            age_ms,
            fault,
        })
}

fn transport() -> impl Strategy<Value = Transport> {
    prop_oneof![
        Just(Transport::GrpcStream),
        Just(Transport::GrpcBatch),
        Just(Transport::HttpBatch)
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        5 => (transport(), proptest::collection::vec(ev(), 1..60))
            .prop_map(|(t, events)| Op::Send(t, events)),
        1 => transport().prop_map(Op::Retry),
    ];
    proptest::collection::vec(op, 2..10)
}

impl Ev {
    fn value(&self) -> f64 {
        f64::from(self.quarters) / 4.0
    }

    fn packet(&self, start_ms: i64) -> Packet {
        let device = DEVICES[self.device];
        Packet {
            device_id: match self.fault {
                Fault::BadDevice => format!("{device} x"),
                _ => device.to_string(),
            },
            timestamp: match self.fault {
                Fault::Future => start_ms + 3_600_000,
                _ => start_ms - self.age_ms,
            },
            payload: Vec::new(),
            event_type: TYPES[self.kind].to_string(),
            event_id: self.id.map(|i| format!("id-{i}")).unwrap_or_default(),
            user_id: self.user.map(|u| USERS[u].to_string()).unwrap_or_default(),
            value: self.value(),
            attributes: Default::default(),
        }
    }
}

/// One minute of a window in the model.
#[derive(Debug, Clone, Default, PartialEq)]
struct Minute {
    count: u64,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
}

impl Minute {
    fn add(&mut self, v: f64) {
        self.count += 1;
        self.sum += v;
        self.min = Some(self.min.map_or(v, |m| m.min(v)));
        self.max = Some(self.max.map_or(v, |m| m.max(v)));
    }
}

/// What an answer to one call says.
#[derive(Debug, Clone, Default, PartialEq)]
struct Answer {
    accepted: u64,
    rejected: u64,
    duplicates: u64,
    rejected_by_reason: BTreeMap<String, u64>,
}

/// The documented semantics, computed plainly.
#[derive(Debug, Default)]
struct Model {
    /// (UTC hour of the timestamp, event id) of stored events.
    seen_ids: HashSet<(i64, String)>,
    stored: u64,
    devices: BTreeMap<String, u64>,
    types: BTreeMap<String, u64>,
    /// (window, minute start in unix seconds) → minute.
    windows: BTreeMap<(&'static str, i64), Minute>,
    /// (leaderboard, bucket start in unix seconds) → member → score.
    boards: BTreeMap<(&'static str, i64), BTreeMap<String, f64>>,
    /// Per device, stored events, oldest first.
    recent: BTreeMap<String, Vec<Packet>>,
}

impl Model {
    fn apply(&mut self, packets: &[Packet], start_ms: i64) -> Answer {
        let mut answer = Answer::default();
        for p in packets {
            let reason = if p.device_id.contains(' ') {
                Some("device_id.invalid_chars")
            } else if p.timestamp > start_ms + 60_000 {
                Some("timestamp.in_future")
            } else {
                None
            };
            if let Some(reason) = reason {
                answer.rejected += 1;
                *answer
                    .rejected_by_reason
                    .entry(reason.to_string())
                    .or_default() += 1;
                continue;
            }
            // Dedup scope: the same id with a timestamp in the same UTC hour.
            let claim = (p.timestamp.div_euclid(3_600_000), p.event_id.clone());
            if !p.event_id.is_empty() && !self.seen_ids.insert(claim) {
                answer.duplicates += 1;
                continue;
            }
            answer.accepted += 1;
            self.store(p);
        }
        answer
    }

    fn store(&mut self, p: &Packet) {
        self.stored += 1;
        *self.devices.entry(p.device_id.clone()).or_default() += 1;
        *self.types.entry(p.event_type.clone()).or_default() += 1;
        let minute = p.timestamp.div_euclid(60_000) * 60;
        self.windows
            .entry(("all", minute))
            .or_default()
            .add(p.value);
        if p.event_type == "purchase" {
            self.windows
                .entry(("purchases", minute))
                .or_default()
                .add(p.value);
        }
        let secs = p.timestamp.div_euclid(1000);
        if !p.user_id.is_empty() {
            *self
                .boards
                .entry(("spenders", secs.div_euclid(86_400) * 86_400))
                .or_default()
                .entry(p.user_id.clone())
                .or_default() += p.value;
        }
        *self
            .boards
            .entry(("devices", secs.div_euclid(3_600) * 3_600))
            .or_default()
            .entry(p.device_id.clone())
            .or_default() += 1.0;
        self.recent
            .entry(p.device_id.clone())
            .or_default()
            .push(p.clone());
    }

    /// A leaderboard as documented: by score, highest first, ties by member,
    /// tied members sharing the rank of the first of them.
    fn ranked(&self, key: &(&'static str, i64)) -> Vec<(u32, String, f64)> {
        let mut rows: Vec<(String, f64)> = self.boards[key]
            .iter()
            .map(|(m, s)| (m.clone(), *s))
            .collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut out: Vec<(u32, String, f64)> = Vec::new();
        for (i, (member, score)) in rows.into_iter().enumerate() {
            let rank = match out.last() {
                Some((r, _, s)) if *s == score => *r,
                _ => i as u32 + 1,
            };
            out.push((rank, member, score));
        }
        out
    }
}

/// Sends one batch over `transport` and reads the answer.
async fn send(ingest: &Ingest, transport: Transport, packets: &[Packet]) -> Answer {
    match transport {
        Transport::GrpcStream => ack_answer(ingest.stream(packets.to_vec()).await),
        Transport::GrpcBatch => ack_answer(
            ingest
                .client()
                .await
                .send_batch(PacketBatch {
                    packets: packets.to_vec(),
                    sequence: 0,
                })
                .await
                .unwrap()
                .into_inner(),
        ),
        Transport::HttpBatch => {
            let body: Vec<serde_json::Value> = packets
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "deviceId": p.device_id,
                        "timestamp": p.timestamp,
                        "eventType": p.event_type,
                        "eventId": p.event_id,
                        "userId": p.user_id,
                        "value": p.value,
                    })
                })
                .collect();
            let r = reqwest::Client::new()
                .post(format!("{}/api/v1/events/batch", ingest.http_url()))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let ack: AckJson = r.json().await.unwrap();
            let expected = if ack.accepted + ack.duplicates == 0 {
                422
            } else {
                200
            };
            assert_eq!(status, expected, "{ack:?}");
            Answer {
                accepted: ack.accepted,
                rejected: ack.rejected,
                duplicates: ack.duplicates,
                rejected_by_reason: ack.rejected_by_reason,
            }
        }
    }
}

fn ack_answer(ack: telemetry_proto::v1::Ack) -> Answer {
    Answer {
        accepted: ack.accepted,
        rejected: ack.rejected,
        duplicates: ack.duplicates,
        rejected_by_reason: ack.rejected_by_reason.into_iter().collect(),
    }
}

async fn get<T: serde::de::DeserializeOwned>(ingest: &Ingest, path: &str) -> T {
    let r = reqwest::get(format!("{}{path}", ingest.http_url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "GET {path}");
    r.json().await.unwrap()
}

/// Runs one case against a fresh pipeline and compares every answer and
/// every aggregate with the model.
async fn check(redis: &Redis, case: u32, ops: &[Op]) -> Result<(), TestCaseError> {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), CONFIG).unwrap();
    let p = pipeline(&format!("model-{case}"));
    let flag = format!("--config={}", config.path().display());
    let ingest = Ingest::start(&redis.url(), &p, &[flag.as_str()]).await;
    let result = compare(redis, &p, &ingest, ops).await;
    ingest.stop().await;
    result
}

async fn compare(redis: &Redis, p: &str, ingest: &Ingest, ops: &[Op]) -> Result<(), TestCaseError> {
    let start_ms = telemetry_ingest::intake::now_ms();
    let mut model = Model::default();
    let mut last: Option<Vec<Packet>> = None;
    for (i, op) in ops.iter().enumerate() {
        let (transport, packets) = match op {
            Op::Send(t, events) => (*t, events.iter().map(|e| e.packet(start_ms)).collect()),
            Op::Retry(t) => match &last {
                Some(packets) => (*t, packets.clone()),
                None => continue,
            },
        };
        let expected = model.apply(&packets, start_ms);
        let got = send(ingest, transport, &packets).await;
        prop_assert_eq!(got, expected, "answer to call {} ({:?})", i, transport);
        last = Some(packets);
    }

    let devices: Vec<DeviceCount> = get(ingest, "/api/v1/devices?limit=10000").await;
    let devices: BTreeMap<String, u64> = devices
        .into_iter()
        .map(|d| (d.device_id, d.count))
        .collect();
    prop_assert_eq!(&devices, &model.devices, "per-device counts");

    let counters: Counters = get(ingest, "/api/v1/counters").await;
    let types: BTreeMap<String, u64> = counters
        .counters
        .iter()
        .map(|c| (c.event_type.clone(), c.count))
        .collect();
    prop_assert_eq!(&types, &model.types, "per-type counts");
    prop_assert_eq!(counters.total, model.stored, "counter total");
    prop_assert_eq!(redis.events(p), model.stored, "stored event total");

    for name in ["all", "purchases"] {
        let w: Window = get(ingest, &format!("/api/v1/windows/{name}?minutes=15")).await;
        let got: BTreeMap<i64, Minute> = w
            .points
            .iter()
            .filter(|pt| pt.count > 0)
            .map(|pt| {
                (
                    pt.minute,
                    Minute {
                        count: pt.count,
                        sum: pt.sum,
                        min: pt.min,
                        max: pt.max,
                    },
                )
            })
            .collect();
        let keeps_extremes = name == "all";
        let expected: BTreeMap<i64, Minute> = model
            .windows
            .iter()
            .filter(|((w, _), _)| *w == name)
            .map(|((_, minute), m)| {
                let mut m = m.clone();
                if !keeps_extremes {
                    (m.min, m.max) = (None, None);
                }
                (*minute, m)
            })
            .collect();
        prop_assert_eq!(&got, &expected, "window {} per minute", name);
        let total: u64 = expected.values().map(|m| m.count).sum();
        prop_assert_eq!(w.total.count, total, "window {} total", name);
    }

    for key in model.boards.keys() {
        let (name, bucket) = key;
        let l: Leaderboard = get(
            ingest,
            &format!("/api/v1/leaderboards/{name}?topN=1000&bucket={bucket}"),
        )
        .await;
        let got: Vec<(u32, String, f64)> = l
            .entries
            .into_iter()
            .map(|e| (e.rank, e.member, e.score))
            .collect();
        prop_assert_eq!(
            got,
            model.ranked(key),
            "leaderboard {} bucket {}",
            name,
            bucket
        );
    }

    for device in DEVICES {
        let recent: Vec<EventJson> = get(ingest, &format!("/api/v1/devices/{device}/recent")).await;
        let got: Vec<(String, i64, String, f64)> = recent
            .into_iter()
            .map(|e| (e.event_id, e.timestamp, e.event_type, e.value))
            .collect();
        let expected: Vec<(String, i64, String, f64)> = model
            .recent
            .get(device)
            .map(|events| {
                events
                    .iter()
                    .rev()
                    .take(RECENT_PER_DEVICE)
                    .map(|p| {
                        (
                            p.event_id.clone(),
                            p.timestamp,
                            p.event_type.clone(),
                            p.value,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        prop_assert_eq!(got, expected, "recent events of {}, newest first", device);
    }
    Ok(())
}

#[test]
fn random_event_mixes_store_what_the_reference_model_computes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let redis = Redis::start();
    let mut runner = TestRunner::new(Config {
        cases: 24,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..Config::default()
    });
    let case = std::cell::Cell::new(0);
    let result = runner.run(&ops(), |ops| {
        case.set(case.get() + 1);
        rt.block_on(check(&redis, case.get(), &ops))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

//! Faults on real processes, each ending with the same check: every event
//! acknowledged is stored in Redis exactly once (stored totals equal the
//! acknowledged totals, and every event sent was acknowledged in the end).
//!
//! The tests print what they measured (`--nocapture`): docs/reliability.md
//! quotes those figures.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use telemetry_ingest::config::DEFAULT_FLUSH_TIMEOUT_MS;
use telemetry_proto::json::EventJson;
use telemetry_proto::v1::Packet;
use telemetry_proto::v1::telemetry_ingest_client::TelemetryIngestClient;
use telemetryctl::send::report::Summary;
use telemetryctl::send::send;
use tokio_util::sync::CancellationToken;

use crate::failures::load;
use crate::proxy::Proxy;
use crate::support::{Ingest, IngestProcess, Redis, free_port, packet, pipeline, wait_for};

/// How long nothing listens after an ingest server is killed.
const INGEST_DOWN: Duration = Duration::from_millis(500);
/// How long Redis stays unreachable in the outage test.
const OUTAGE: Duration = Duration::from_secs(30);
/// Added latency of every Redis reply in the slow-Redis test.
const SLOW_REDIS: Duration = Duration::from_millis(50);
/// `--queue-capacity` of the slow-Redis test.
const QUEUE_CAPACITY: usize = 2_000;
/// The bound on the ingest process's peak resident memory under a fault.
const PEAK_RSS_BOUND_KIB: u64 = 256 * 1024;

/// What the clients of [`http_load`] saw.
#[derive(Debug, Default)]
struct Seen {
    /// Events sent (each once; resent calls are not counted again).
    sent: u64,
    /// Events acknowledged: accepted or duplicate, each event by the one
    /// answer that settled it (a 200, or the `telemetry-*` counts of a
    /// refused call). An event that a refused call left in the queue is
    /// stored all the same, and its resend is answered duplicate.
    acknowledged: u64,
    /// Answers by HTTP status; 0 counts calls that got no answer.
    answers: BTreeMap<u16, u64>,
    /// Refused answers (429 / 503) that carried no Retry-After.
    without_retry_after: u64,
    /// Latency of each call answered 200.
    latencies: Vec<Duration>,
}

impl Seen {
    fn answered(&self, status: u16) -> u64 {
        self.answers.get(&status).copied().unwrap_or(0)
    }

    fn refused(&self) -> u64 {
        self.answers
            .iter()
            .filter(|(s, _)| **s != 200)
            .map(|(_, n)| n)
            .sum()
    }

    fn p99(&self) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l[(l.len() * 99 / 100).min(l.len() - 1)]
    }

    fn add(&mut self, other: Seen) {
        self.sent += other.sent;
        self.acknowledged += other.acknowledged;
        for (status, n) in other.answers {
            *self.answers.entry(status).or_default() += n;
        }
        self.without_retry_after += other.without_retry_after;
        self.latencies.extend(other.latencies);
    }
}

/// `clients` HTTP clients that post batches of `batch` new events to
/// `base` back to back until `stop`. A refused call (429, 503, no answer)
/// is resent 50 ms later, from the first event it did not settle, until it
/// is answered 200,
/// the one in hand when `stop` comes included, so every event sent is
/// acknowledged in the end. Events carry ids unless `ids` is false.
fn http_load(
    base: String,
    tag: &'static str,
    clients: usize,
    batch: usize,
    ids: bool,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Seen> {
    let url = format!("{base}/api/v1/events/batch");
    let tasks: Vec<_> = (0..clients)
        .map(|c| tokio::spawn(http_client(url.clone(), tag, c, batch, ids, stop.clone())))
        .collect();
    tokio::spawn(async move {
        let mut seen = Seen::default();
        for t in tasks {
            seen.add(t.await.unwrap());
        }
        seen
    })
}

async fn http_client(
    url: String,
    tag: &'static str,
    client: usize,
    batch: usize,
    ids: bool,
    stop: CancellationToken,
) -> Seen {
    let http = reqwest::Client::new();
    let mut seen = Seen::default();
    let mut call = 0;
    while !stop.is_cancelled() {
        let events: Vec<EventJson> = (0..batch)
            .map(|i| {
                let id = if ids {
                    format!("{tag}-{client}-{call}-{i}")
                } else {
                    String::new()
                };
                EventJson::from(&packet(&format!("{tag}-{}", i % 10), &id))
            })
            .collect();
        call += 1;
        seen.sent += batch as u64;
        let give_up = Instant::now() + OUTAGE * 3;
        let mut offset = 0;
        loop {
            let started = Instant::now();
            match http.post(&url).json(&events[offset..]).send().await {
                Ok(r) if r.status() == 200 => {
                    let ack: serde_json::Value = r.json().await.unwrap();
                    seen.acknowledged +=
                        ack["accepted"].as_u64().unwrap() + ack["duplicates"].as_u64().unwrap();
                    seen.latencies.push(started.elapsed());
                    *seen.answers.entry(200).or_default() += 1;
                    break;
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    assert!(
                        status == 429 || status == 503,
                        "a refusal is retryable: {status} {}",
                        r.text().await.unwrap_or_default()
                    );
                    *seen.answers.entry(status).or_default() += 1;
                    seen.without_retry_after += u64::from(!r.headers().contains_key("retry-after"));
                    let count = |key: &str| -> u64 {
                        r.headers()
                            .get(key)
                            .map_or(0, |v| v.to_str().unwrap().parse().unwrap())
                    };
                    seen.acknowledged +=
                        count("telemetry-accepted") + count("telemetry-duplicates");
                    offset += count("telemetry-settled") as usize;
                }
                Err(_) => *seen.answers.entry(0).or_default() += 1,
            }
            assert!(
                Instant::now() < give_up,
                "a call was refused for {:?}",
                OUTAGE * 3
            );
            // The client's own backoff (shorter than Retry-After, to keep
            // the pressure on).
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    seen
}

/// Sends `packets` as one gRPC stream until every event is acknowledged,
/// resending from the first event a refused attempt did not settle;
/// returns the events acknowledged (accepted or duplicate).
async fn grpc_until_acked(grpc: &str, packets: Vec<Packet>) -> u64 {
    let (acknowledged, offset) = (Cell::new(0), Cell::new(0));
    wait_for("a gRPC stream to be acknowledged", OUTAGE, || {
        let rest = packets[offset.get()..].to_vec();
        let (acknowledged, offset) = (&acknowledged, &offset);
        async move {
            let mut client = TelemetryIngestClient::connect(grpc.to_string())
                .await
                .ok()?;
            match client.stream_packets(tokio_stream::iter(rest)).await {
                Ok(ack) => {
                    let ack = ack.into_inner();
                    acknowledged.set(acknowledged.get() + ack.accepted + ack.duplicates);
                    Some(())
                }
                Err(status) => {
                    let (settled, acked) = settled(&status);
                    acknowledged.set(acknowledged.get() + acked);
                    offset.set(offset.get() + settled);
                    None
                }
            }
        }
    })
    .await;
    acknowledged.get()
}

/// What a refused gRPC call settled: how many events, and how many of them
/// were acknowledged (accepted or duplicate; the rest were rejected).
fn settled(status: &tonic::Status) -> (usize, u64) {
    let count = |key: &str| -> u64 {
        status
            .metadata()
            .get(key)
            .map_or(0, |v| v.to_str().unwrap().parse().unwrap())
    };
    (
        count("telemetry-settled") as usize,
        count("telemetry-accepted") + count("telemetry-duplicates"),
    )
}

/// `n` events with ids `{tag}{i}`.
fn events(n: usize, tag: &str) -> Vec<Packet> {
    (0..n)
        .map(|i| packet(&format!("{tag}-{}", i % 5), &format!("{tag}{i}")))
        .collect()
}

/// Every event sent was acknowledged in the end (accepted, or duplicate of
/// an earlier attempt that stored it), and Redis holds each one exactly
/// once: the stored totals are the acknowledged totals.
fn assert_stored_exactly_once(redis: &Redis, p: &str, sent: u64, acknowledged: u64) {
    assert_eq!(redis.events(p), acknowledged, "stored = acknowledged");
    assert_eq!(acknowledged, sent, "every event sent was acknowledged once");
    assert_eq!(redis.device_total(p), sent, "per-device counts agree");
}

/// The HTTP clients felt the fault (calls answered `status`), every refusal
/// said Retry-After, and the ingest process's peak memory stayed bounded.
fn assert_refused_with_retry_after_in_bounded_memory(seen: &Seen, status: u16, rss_peak: u64) {
    assert!(
        seen.answered(status) > 0,
        "the clients got {status}: {:?}",
        seen.answers
    );
    assert_eq!(
        seen.without_retry_after, 0,
        "every refusal says Retry-After"
    );
    assert!(
        rss_peak < PEAK_RSS_BOUND_KIB,
        "memory stays bounded: {rss_peak} KiB"
    );
}

/// Waits until `n` events of pipeline `p` are stored: the load is flowing.
async fn wait_stored(redis: &Redis, p: &str, n: u64) {
    wait_for(
        "the load to be flowing",
        Duration::from_secs(10),
        || async { (redis.events(p) >= n).then_some(()) },
    )
    .await;
}

/// The end of a `telemetryctl send` run through a fault: the fault was felt
/// (calls were retried), no call failed for good, and Redis holds each event
/// sent exactly once.
fn assert_sent_through_the_fault(redis: &Redis, p: &str, summary: &Summary) {
    assert!(summary.retries > 0, "the fault was felt: {summary:?}");
    assert_eq!(
        summary.failed, 0,
        "every call got through in the end: {summary:?}"
    );
    assert_stored_exactly_once(
        redis,
        p,
        summary.sent,
        summary.accepted + summary.duplicates,
    );
}

#[tokio::test]
async fn ingest_killed_mid_stream_and_restarted_loses_nothing_acknowledged() {
    let redis = Redis::start();
    let p = pipeline("kill-ingest");
    let grpc = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let mut ingest = IngestProcess::spawn_on(&grpc, &http, &redis.url(), &p, &[]).await;
    ingest.wait_ready(Duration::from_secs(20)).await;
    // 30 000 events at 6 000/s over gRPC streams, retried as telemetryctl
    // does by default.
    let sender = tokio::spawn(send(load(format!("http://{grpc}"), 30_000, 6_000, 10)));
    wait_stored(&redis, &p, 6_000).await;
    ingest.kill();
    let killed = Instant::now();
    // Whatever it had queued, flushed or half-acknowledged is gone with it.
    // Not a wait for a condition: the time nothing listens is the scenario.
    // Calls fall due meanwhile (one every ~17 ms) and are refused a
    // connection; the calls in flight at the kill had theirs reset.
    tokio::time::sleep(INGEST_DOWN).await;
    let ingest = IngestProcess::spawn_on(&grpc, &http, &redis.url(), &p, &[]).await;
    ingest.wait_ready(Duration::from_secs(20)).await;
    let back = killed.elapsed();

    let summary: Summary = sender.await.unwrap().unwrap();
    println!(
        "ingest kill -9: serving again after {back:?}; sent {}, accepted {}, \
         duplicates (resent after being stored) {}, retries {}, failed {}",
        summary.sent, summary.accepted, summary.duplicates, summary.retries, summary.failed
    );
    assert_sent_through_the_fault(&redis, &p, &summary);
}

/// Redis is killed (kill -9) under load and restarted from its AOF; the
/// sender retries what was refused meanwhile.
async fn redis_killed_mid_load(appendfsync: &str) {
    let mut redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", appendfsync]);
    let p = pipeline(&format!("kill-redis-{appendfsync}"));
    let ingest = Ingest::start(&redis.url(), &p, &[]).await;
    let sender = tokio::spawn(send(load(ingest.grpc_url(), 30_000, 6_000, 20)));
    wait_stored(&redis, &p, 6_000).await;
    redis.kill();
    let killed = Instant::now();
    wait_for(
        "readiness to turn false with Redis gone",
        Duration::from_secs(3),
        || async { (!ingest.ready().await).then_some(()) },
    )
    .await;
    redis.spawn();
    let loaded = redis.events(&p);
    ingest.wait_ready(Duration::from_secs(10)).await;
    let back = killed.elapsed();
    let summary: Summary = sender.await.unwrap().unwrap();
    println!(
        "redis kill -9 (appendfsync {appendfsync}): ready again after {back:?}; \
         {loaded} events in the AOF on restart; sent {}, accepted {}, duplicates {}, \
         retries {}, failed {}",
        summary.sent, summary.accepted, summary.duplicates, summary.retries, summary.failed
    );
    assert_sent_through_the_fault(&redis, &p, &summary);
    ingest.stop().await;
}

#[tokio::test]
async fn redis_killed_mid_load_with_appendfsync_always_loses_nothing_acknowledged() {
    redis_killed_mid_load("always").await;
}

/// A redis-server process crash (not a machine crash) with everysec: Redis
/// write(2)s the AOF before it sends the replies, so the kernel has what was
/// acknowledged even though it was not fsynced yet (unless a disk too slow
/// for the background fsync makes Redis postpone the write; see
/// docs/reliability.md).
#[tokio::test]
async fn redis_killed_mid_load_with_appendfsync_everysec_loses_nothing_acknowledged() {
    redis_killed_mid_load("everysec").await;
}

#[tokio::test]
async fn redis_unreachable_under_load_answers_503_and_unavailable_then_recovers_within_a_second() {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port).await;
    let p = pipeline("unreachable");
    let ingest = IngestProcess::start(&proxy.url(), &p, &[]).await;
    let base = format!("http://{}", ingest.http);
    let grpc = format!("http://{}", ingest.grpc);
    let stop = CancellationToken::new();
    let load = http_load(base.clone(), "outage", 8, 200, true, stop.clone());
    wait_stored(&redis, &p, 10_000).await;
    let rss_before = ingest.peak_rss_kib();
    proxy.cut();
    let cut = Instant::now();

    wait_for(
        "readiness to turn false with Redis unreachable",
        Duration::from_secs(3),
        || async {
            let r = reqwest::get(format!("{base}/readyz")).await.ok()?;
            (r.status() == 503).then_some(())
        },
    )
    .await;
    // Calls fail fast: 503 with Retry-After, UNAVAILABLE.
    let started = Instant::now();
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/events/batch"))
        .json(&[EventJson::from(&packet("x", "down-http"))])
        .send()
        .await
        .unwrap();
    let http_answer = started.elapsed();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let down = events(100, "down-grpc");
    let started = Instant::now();
    let err = TelemetryIngestClient::connect(grpc.clone())
        .await
        .unwrap()
        .stream_packets(tokio_stream::iter(down.clone()))
        .await
        .unwrap_err();
    let grpc_answer = started.elapsed();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        http_answer < Duration::from_secs(1) && grpc_answer < Duration::from_secs(1),
        "refused within a second: {http_answer:?} {grpc_answer:?}"
    );
    let (settled_down, mut acknowledged) = settled(&err);

    // Not a wait for a condition: the length of the outage is the scenario;
    // the load keeps knocking all along.
    tokio::time::sleep(OUTAGE.saturating_sub(cut.elapsed())).await;
    let rss_outage = ingest.peak_rss_kib();
    proxy.restore();
    let restored = Instant::now();
    let url = format!("{base}/api/v1/events/batch");
    wait_for(
        "an event to be acknowledged again",
        Duration::from_secs(5),
        || async {
            let r = reqwest::Client::new()
                .post(&url)
                .json(&[EventJson::from(&packet("x", "down-http"))])
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    let recovery = restored.elapsed();
    acknowledged += 1;
    acknowledged += grpc_until_acked(&grpc, down[settled_down..].to_vec()).await;
    stop.cancel();
    let seen = load.await.unwrap();
    let rss_peak = ingest.peak_rss_kib();
    println!(
        "redis unreachable {OUTAGE:?}: refused in {http_answer:?} (HTTP 503), {grpc_answer:?} \
         (gRPC UNAVAILABLE); load answers {:?}; serving again {recovery:?} after Redis \
         returned; peak RSS {} MiB before, {} MiB through the outage, {} MiB at the end",
        seen.answers,
        rss_before / 1024,
        rss_outage / 1024,
        rss_peak / 1024
    );
    assert!(
        recovery <= Duration::from_secs(1),
        "serving resumes within a second: {recovery:?}"
    );
    assert_refused_with_retry_after_in_bounded_memory(&seen, 503, rss_peak);
    assert_stored_exactly_once(
        &redis,
        &p,
        seen.sent + 1 + 100,
        seen.acknowledged + acknowledged,
    );
}

#[tokio::test]
async fn flush_replies_lost_under_load_are_applied_exactly_once() {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port).await;
    let p = pipeline("lost-replies");
    let ingest = Ingest::start(&proxy.url(), &p, &["--flush-timeout-ms=5000"]).await;
    let stop = CancellationToken::new();
    // No event ids: only the flush's own id keeps a retried flush from
    // counting twice.
    let load = http_load(ingest.http_url(), "lost", 4, 100, false, stop.clone());
    wait_stored(&redis, &p, 2_000).await;
    for _ in 0..5 {
        proxy.arm();
        wait_for(
            "a flush reply to be swallowed",
            Duration::from_secs(10),
            || async { (!proxy.is_armed()).then_some(()) },
        )
        .await;
    }
    let before = redis.events(&p);
    wait_for("the load to go on", Duration::from_secs(10), || async {
        (redis.events(&p) >= before + 2_000).then_some(())
    })
    .await;
    stop.cancel();
    let seen = load.await.unwrap();
    let retries = ingest.metric("telemetry_ingest_flush_retries_total").await;
    println!(
        "flush replies lost: {} swallowed under load, {retries} flush retries; \
         {} events sent without ids, answers {:?}, stored {}",
        proxy.dropped(),
        seen.sent,
        seen.answers,
        redis.events(&p)
    );
    assert_eq!(proxy.dropped(), 5);
    assert!(retries >= 5.0, "each lost reply was retried: {retries}");
    assert_eq!(
        seen.refused(),
        0,
        "a lost reply is the server's to retry: {:?}",
        seen.answers
    );
    assert_stored_exactly_once(&redis, &p, seen.sent, seen.acknowledged);
    ingest.stop().await;
}

#[tokio::test]
async fn slow_redis_pushes_back_to_clients_with_bounded_p99_and_memory() {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port).await;
    proxy.set_latency(SLOW_REDIS);
    let p = pipeline("slow-redis");
    let ingest = IngestProcess::start(
        &proxy.url(),
        &p,
        &[
            &format!("--queue-capacity={QUEUE_CAPACITY}"),
            "--flush-concurrency=1",
            "--batch-size=200",
            "--backpressure-timeout-ms=20",
        ],
    )
    .await;
    let base = format!("http://{}", ingest.http);
    let grpc = format!("http://{}", ingest.grpc);
    let stop = CancellationToken::new();
    // At most 200 events per flush, one flush at a time, 50 ms each: 4 000
    // events/s; a gRPC call waits for space for less than one flush takes.
    // 16 clients with 200 events each in flight: more than the
    // queue holds.
    let load = http_load(base, "slow", 16, 200, true, stop.clone());
    let started = Instant::now();
    // gRPC streams alongside, until one is refused for a full queue.
    let refused = RefCell::new(Vec::new());
    let acknowledged = Cell::new(0);
    let mut attempt = 0;
    wait_for(
        "a gRPC stream to be refused with RESOURCE_EXHAUSTED",
        Duration::from_secs(20),
        || {
            attempt += 1;
            let packets = events(1_000, &format!("slow-grpc-{attempt}-"));
            let (refused, acknowledged, grpc) = (&refused, &acknowledged, &grpc);
            async move {
                let mut client = TelemetryIngestClient::connect(grpc.clone()).await.unwrap();
                match client
                    .stream_packets(tokio_stream::iter(packets.clone()))
                    .await
                {
                    Ok(ack) => {
                        let ack = ack.into_inner();
                        acknowledged.set(acknowledged.get() + ack.accepted + ack.duplicates);
                        None
                    }
                    Err(status) => {
                        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                        let (settled, acked) = settled(&status);
                        acknowledged.set(acknowledged.get() + acked);
                        refused.borrow_mut().push(packets[settled..].to_vec());
                        Some(())
                    }
                }
            }
        },
    )
    .await;
    let mut acknowledged = acknowledged.get();
    wait_for(
        "enough of the load to be stored",
        Duration::from_secs(60),
        || async { (redis.events(&p) >= 20_000).then_some(()) },
    )
    .await;
    stop.cancel();
    // What Redis took per second while the queue was full.
    let rate = redis.events(&p) as f64 / started.elapsed().as_secs_f64();
    let seen = load.await.unwrap();
    for packets in refused.into_inner() {
        acknowledged += grpc_until_acked(&grpc, packets).await;
    }
    let rss_peak = ingest.peak_rss_kib();
    let p99 = seen.p99();
    // A call waits at most for the queue ahead of it to drain, then for its
    // own flush (retried up to the flush timeout): the p99 is bounded by
    // the queue, not by the load offered. Twice that, for the margin of a
    // busy machine.
    let drain = Duration::from_secs_f64(QUEUE_CAPACITY as f64 / rate);
    let bound = 2 * (drain + Duration::from_millis(DEFAULT_FLUSH_TIMEOUT_MS));
    println!(
        "redis {SLOW_REDIS:?} slower per reply: load answers {:?}; {rate:.0} events/s stored; \
         p99 of acknowledged HTTP calls {p99:?} (bound {bound:?}); {attempt} gRPC streams \
         until RESOURCE_EXHAUSTED; peak RSS {} MiB",
        seen.answers,
        rss_peak / 1024
    );
    assert_refused_with_retry_after_in_bounded_memory(&seen, 429, rss_peak);
    assert!(p99 < bound, "p99 stays bounded: {p99:?} > {bound:?}");
    assert_stored_exactly_once(
        &redis,
        &p,
        seen.sent + 1_000 * attempt,
        seen.acknowledged + acknowledged,
    );
}

#[tokio::test]
async fn sigterm_with_a_full_queue_drains_it_to_redis_before_exiting() {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port).await;
    proxy.set_latency(SLOW_REDIS);
    let p = pipeline("drain");
    let (grpc, http) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    // A slow Redis keeps the queue full: 4 000 events/s out, more offered.
    let flags = [
        "--queue-capacity=2000",
        "--flush-concurrency=1",
        "--batch-size=200",
        "--shutdown-timeout-seconds=20",
    ];
    let mut ingest = IngestProcess::spawn_on(&grpc, &http, &proxy.url(), &p, &flags).await;
    ingest.wait_ready(Duration::from_secs(20)).await;
    let base = format!("http://{http}");
    let stop = CancellationToken::new();
    let load = http_load(base.clone(), "drain", 16, 200, true, stop.clone());
    // Redis's total is read before the queue's depth: an event counts in
    // both only if it is in the one flush under way (at most --batch-size).
    let (stored_before, depth) =
        wait_for("the queue to be full", Duration::from_secs(10), || async {
            let stored = redis.events(&p);
            let text = reqwest::get(format!("{base}/metrics"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let depth: f64 = text.lines().find_map(|l| {
                l.strip_prefix("telemetry_ingest_queue_depth ")?
                    .parse()
                    .ok()
            })?;
            (depth >= 1_600.0).then_some((stored, depth as u64))
        })
        .await;
    stop.cancel();
    ingest.sigterm();
    let signalled = Instant::now();
    let status = wait_for(
        "telemetry-ingest to exit after SIGTERM",
        Duration::from_secs(20),
        || std::future::ready(ingest.child.try_wait().unwrap()),
    )
    .await;
    let drained = signalled.elapsed();
    let stored_at_exit = redis.events(&p);
    assert!(status.success(), "clean exit after draining: {status}");
    assert!(
        stored_at_exit + 200 >= stored_before + depth,
        "the queue was stored before the exit: {stored_before} stored and {depth} \
         queued at SIGTERM, {stored_at_exit} stored at exit"
    );
    // The clients' calls that were refused while it drained are answered
    // by its successor on the same addresses.
    let successor = IngestProcess::spawn_on(&grpc, &http, &proxy.url(), &p, &flags).await;
    successor.wait_ready(Duration::from_secs(20)).await;
    let seen = load.await.unwrap();
    println!(
        "SIGTERM with {depth} events queued (capacity 2000) and {stored_before} stored, Redis \
         {SLOW_REDIS:?} slower: drained and exited in {drained:?}; {stored_at_exit} stored at \
         exit; load answers {:?}",
        seen.answers
    );
    assert_stored_exactly_once(&redis, &p, seen.sent, seen.acknowledged);
}

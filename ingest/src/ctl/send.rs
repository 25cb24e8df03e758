//! `telemetryctl send`: a load generator that checks what it gets back.
//!
//! Workers each open their own connection and send batches of generated
//! events (gRPC client streams or unary batches, or HTTP JSON batches). Every
//! event carries an `eventId`, so a call that fails part-way is resumed from
//! the point the server says it settled (`telemetry-settled`) without any
//! event counting twice. At the end the summary compares what the server
//! acknowledged with what was sent.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use telemetry_proto::v1::telemetry_ingest_client::TelemetryIngestClient;
use telemetry_proto::v1::{Packet, PacketBatch};
use tokio::sync::Mutex;

use crate::event::{EventJson, payload_to_json};
use crate::http::AckJson;

#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// gRPC endpoint, e.g. http://127.0.0.1:50051.
    #[arg(long, conflicts_with = "http", required_unless_present = "http")]
    pub grpc: Option<String>,
    /// HTTP endpoint, e.g. http://127.0.0.1:8000.
    #[arg(long)]
    pub http: Option<String>,
    /// Events to send.
    #[arg(long, default_value_t = 100_000)]
    pub n: u64,
    /// Distinct device ids.
    #[arg(long, default_value_t = 100)]
    pub devices: u64,
    /// Distinct user ids (leaderboard members).
    #[arg(long, default_value_t = 1_000)]
    pub users: u64,
    /// Event types, comma-separated (purchase events carry a price as value).
    #[arg(long, default_value = "reading,purchase,login")]
    pub event_types: String,
    /// Events per second in total; 0 sends as fast as the server takes them.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Parallel connections.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Events per call (gRPC stream or batch, HTTP batch ≤ 1000).
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// gRPC call used: client `stream` or unary `batch`.
    #[arg(long, value_enum, default_value_t = GrpcMode::Stream)]
    pub grpc_mode: GrpcMode,
    /// Payload of each event.
    #[arg(long, value_enum, default_value_t = PayloadKind::Json)]
    pub payload: PayloadKind,
    /// Fraction of events that repeat an earlier event (same id).
    #[arg(long, default_value_t = 0.0)]
    pub duplicates: f64,
    /// Fraction of events with an invalid device id.
    #[arg(long, default_value_t = 0.0)]
    pub invalid: f64,
    /// Retries of a call that failed with a retryable status; a call that
    /// still fails ends the run.
    #[arg(long, default_value_t = 10)]
    pub retries: u32,
    /// Seed of the generator (random by default).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GrpcMode {
    Stream,
    Batch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PayloadKind {
    Json,
    Binary,
    Text,
    Mixed,
}

/// What a run did; printed at the end.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub expected_rejected: u64,
    pub expected_duplicates: u64,
    /// Events never acknowledged (calls that failed after all retries).
    pub failed: u64,
    pub retries: u64,
    pub elapsed_seconds: f64,
    pub events_per_second: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p95: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_p999: f64,
    pub latency_ms_max: f64,
}

impl Summary {
    /// Every valid event stored once (as new or as duplicate) and every
    /// invalid one rejected.
    pub fn consistent(&self) -> bool {
        self.failed == 0
            && self.rejected == self.expected_rejected
            && self.accepted + self.duplicates == self.sent - self.expected_rejected
    }
}

/// Generates one worker's events.
struct Generator {
    rng: StdRng,
    run: String,
    worker: usize,
    seq: u64,
    args: Arc<SendArgs>,
    types: Vec<String>,
    /// Recent events (and whether they were valid) to draw duplicates from.
    history: VecDeque<(Packet, bool)>,
}

impl Generator {
    fn next(&mut self) -> (Packet, bool, bool) {
        if !self.history.is_empty() && self.rng.random_bool(self.args.duplicates.clamp(0.0, 1.0)) {
            let i = self.rng.random_range(0..self.history.len());
            let (p, valid) = self.history[i].clone();
            return (p, valid, true);
        }
        self.seq += 1;
        let valid = !self.rng.random_bool(self.args.invalid.clamp(0.0, 1.0));
        let device = self.rng.random_range(0..self.args.devices.max(1));
        let device_id = if valid {
            format!("device-{device:05}")
        } else {
            format!("bad device {device}!")
        };
        let event_type = self.types[self.rng.random_range(0..self.types.len())].clone();
        let value = if event_type == "purchase" {
            (self.rng.random_range(100..10_000) as f64) / 100.0
        } else {
            self.rng.random_range(0.0..100.0_f64).round()
        };
        let kind = match self.args.payload {
            PayloadKind::Mixed => [PayloadKind::Json, PayloadKind::Binary, PayloadKind::Text]
                [self.rng.random_range(0..3)],
            k => k,
        };
        let payload = match kind {
            PayloadKind::Json => format!(
                r#"{{"seq":{},"temp":{:.1}}}"#,
                self.seq,
                self.rng.random_range(-20.0..40.0_f64)
            )
            .into_bytes(),
            PayloadKind::Binary => (0..self.rng.random_range(16..64))
                .map(|_| self.rng.random())
                .collect(),
            _ => format!("reading {} of {}", self.seq, device_id).into_bytes(),
        };
        let packet = Packet {
            device_id,
            timestamp: crate::intake::now_ms(),
            payload,
            event_type,
            event_id: format!("{}-{}-{}", self.run, self.worker, self.seq),
            user_id: format!("user-{}", self.rng.random_range(0..self.args.users.max(1))),
            value,
            attributes: [(
                "region".to_string(),
                ["eu", "us", "ap"][self.rng.random_range(0..3)].to_string(),
            )]
            .into(),
        };
        if self.history.len() >= 1000 {
            self.history.pop_front();
        }
        self.history.push_back((packet.clone(), valid));
        (packet, valid, false)
    }
}

#[derive(Default)]
struct Tally {
    summary: Summary,
    latency: Option<Histogram<u64>>,
}

/// Counts from one call attempt.
#[derive(Debug, Default, Clone, Copy)]
struct Settled {
    accepted: u64,
    rejected: u64,
    duplicates: u64,
    /// Packets from the start of the call whose fate is final.
    settled: u64,
}

enum Transport {
    Grpc(TelemetryIngestClient<tonic::transport::Channel>, GrpcMode),
    Http(reqwest::Client, String),
}

impl Transport {
    /// One attempt; Err(Some(partial)) is retryable, Err(None) is final.
    async fn send(&mut self, packets: &[Packet]) -> Result<Settled, (Option<Settled>, String)> {
        match self {
            Transport::Grpc(client, mode) => {
                let result = match mode {
                    GrpcMode::Stream => {
                        client
                            .stream_packets(tokio_stream::iter(packets.to_vec()))
                            .await
                    }
                    GrpcMode::Batch => {
                        client
                            .send_batch(PacketBatch {
                                packets: packets.to_vec(),
                                sequence: 0,
                            })
                            .await
                    }
                };
                match result {
                    Ok(r) => {
                        let a = r.into_inner();
                        Ok(Settled {
                            accepted: a.accepted,
                            rejected: a.rejected,
                            duplicates: a.duplicates,
                            settled: packets.len() as u64,
                        })
                    }
                    Err(status) => {
                        let md = status.metadata();
                        let get = |k: &str| {
                            md.get(k)
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0)
                        };
                        let partial = Settled {
                            accepted: get("telemetry-accepted"),
                            rejected: get("telemetry-rejected"),
                            duplicates: get("telemetry-duplicates"),
                            settled: get("telemetry-settled"),
                        };
                        let retryable = matches!(
                            status.code(),
                            tonic::Code::Unavailable
                                | tonic::Code::ResourceExhausted
                                | tonic::Code::Unknown
                        );
                        Err((
                            retryable.then_some(partial),
                            format!("{}: {}", status.code(), status.message()),
                        ))
                    }
                }
            }
            Transport::Http(client, base) => {
                let body: Vec<EventJson> = packets.iter().map(packet_json).collect();
                let response = client
                    .post(format!("{base}/api/v1/events/batch"))
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| (Some(Settled::default()), e.to_string()))?;
                let status = response.status();
                let header = |k: &str| {
                    response
                        .headers()
                        .get(k)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                };
                let partial = Settled {
                    accepted: header("telemetry-accepted"),
                    rejected: 0,
                    duplicates: header("telemetry-duplicates"),
                    settled: header("telemetry-settled"),
                };
                let text = response.text().await.unwrap_or_default();
                if status.is_success() || status.as_u16() == 422 {
                    let ack: AckJson =
                        serde_json::from_str(&text).map_err(|e| (None, e.to_string()))?;
                    return Ok(Settled {
                        accepted: ack.accepted,
                        rejected: ack.rejected,
                        duplicates: ack.duplicates,
                        settled: packets.len() as u64,
                    });
                }
                let retryable = matches!(status.as_u16(), 429 | 503);
                Err((retryable.then_some(partial), format!("{status}: {text}")))
            }
        }
    }
}

/// A packet in the HTTP API's JSON shape.
pub fn packet_json(p: &Packet) -> EventJson {
    EventJson {
        device_id: p.device_id.clone(),
        timestamp: p.timestamp,
        payload: payload_to_json(&p.payload),
        event_type: p.event_type.clone(),
        event_id: p.event_id.clone(),
        user_id: p.user_id.clone(),
        value: p.value,
        attributes: p.attributes.clone().into_iter().collect(),
    }
}

pub async fn run(args: SendArgs) -> anyhow::Result<i32> {
    let summary = send(args.clone()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary_table(&summary));
    }
    Ok(if summary.consistent() { 0 } else { 1 })
}

/// Sends everything and returns the summary.
pub async fn send(args: SendArgs) -> anyhow::Result<Summary> {
    let args = Arc::new(args);
    let run_id = format!("{:08x}", rand::rng().random::<u32>());
    let types: Vec<String> = args
        .event_types
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    anyhow::ensure!(
        !types.is_empty(),
        "--event-types: name at least one event type"
    );
    anyhow::ensure!(args.batch >= 1, "--batch: must be at least 1");
    let progress = if args.no_progress || args.json {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(args.n);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} events  {per_sec}  eta {eta}")
                .expect("valid template"),
        );
        bar
    };
    let tally = Arc::new(Mutex::new(Tally {
        latency: Some(Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")),
        ..Default::default()
    }));
    let started = Instant::now();
    let workers = args.concurrency.max(1);
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for w in 0..workers {
        let share = args.n / workers as u64 + u64::from((w as u64) < args.n % workers as u64);
        let mut transport = match (&args.grpc, &args.http) {
            (Some(url), _) => {
                let client = TelemetryIngestClient::connect(url.clone())
                    .await
                    .with_context(|| format!("cannot connect to {url}"))?
                    .max_encoding_message_size(64 * 1024 * 1024);
                Transport::Grpc(client, args.grpc_mode)
            }
            (None, Some(url)) => Transport::Http(
                reqwest::Client::new(),
                url.trim_end_matches('/').to_string(),
            ),
            (None, None) => anyhow::bail!("give --grpc or --http"),
        };
        let seed = args
            .seed
            .map_or_else(|| rand::rng().random(), |s| s.wrapping_add(w as u64));
        let mut generator = Generator {
            rng: StdRng::seed_from_u64(seed),
            run: run_id.clone(),
            worker: w,
            seq: 0,
            args: args.clone(),
            types: types.clone(),
            history: VecDeque::new(),
        };
        let tally = tally.clone();
        let progress = progress.clone();
        let args = args.clone();
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            let per_worker_rate = args.rate as f64 / workers as f64;
            let mut next_at = tokio::time::Instant::now();
            let mut left = share;
            while left > 0 && !stop.load(Ordering::Relaxed) {
                let n = left.min(args.batch as u64);
                left -= n;
                let mut packets = Vec::with_capacity(n as usize);
                let (mut invalid, mut dup_of_valid) = (0, 0);
                for _ in 0..n {
                    let (p, valid, dup) = generator.next();
                    invalid += u64::from(!valid);
                    dup_of_valid += u64::from(dup && valid);
                    packets.push(p);
                }
                if per_worker_rate > 0.0 {
                    tokio::time::sleep_until(next_at).await;
                    next_at += Duration::from_secs_f64(n as f64 / per_worker_rate);
                }
                let call_started = Instant::now();
                let (settled, retries, failed) =
                    send_with_retries(&mut transport, &packets, args.retries).await;
                if failed > 0 {
                    // A call that failed after every retry ends the run: the
                    // server is gone or refuses, and the summary says so.
                    stop.store(true, Ordering::Relaxed);
                }
                let micros = call_started.elapsed().as_micros() as u64;
                let mut t = tally.lock().await;
                let s = &mut t.summary;
                s.sent += n;
                s.accepted += settled.accepted;
                s.rejected += settled.rejected;
                s.duplicates += settled.duplicates;
                s.expected_rejected += invalid;
                s.expected_duplicates += dup_of_valid;
                s.retries += retries;
                s.failed += failed;
                if let Some(h) = t.latency.as_mut() {
                    let _ = h.record(micros.max(1));
                }
                progress.inc(n);
            }
        }));
    }
    for h in handles {
        h.await.context("a sender task failed")?;
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let t = tally.lock().await;
    let mut s = t.summary.clone();
    s.elapsed_seconds = elapsed;
    s.events_per_second = (s.accepted + s.duplicates + s.rejected) as f64 / elapsed.max(1e-9);
    if let Some(h) = &t.latency {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        s.latency_ms_p50 = ms(0.5);
        s.latency_ms_p95 = ms(0.95);
        s.latency_ms_p99 = ms(0.99);
        s.latency_ms_p999 = ms(0.999);
        s.latency_ms_max = h.max() as f64 / 1000.0;
    }
    Ok(s)
}

/// Sends a call, resuming from the settled point after retryable failures.
/// Returns what settled, the retries made, and the events never settled.
async fn send_with_retries(
    transport: &mut Transport,
    packets: &[Packet],
    retries: u32,
) -> (Settled, u64, u64) {
    let mut total = Settled::default();
    let mut offset = 0usize;
    let mut backoff = Duration::from_millis(50);
    for attempt in 0..=retries {
        match transport.send(&packets[offset..]).await {
            Ok(s) => {
                total.accepted += s.accepted;
                total.rejected += s.rejected;
                total.duplicates += s.duplicates;
                return (total, attempt as u64, 0);
            }
            Err((Some(partial), message)) if attempt < retries => {
                total.accepted += partial.accepted;
                total.duplicates += partial.duplicates;
                total.rejected += partial.rejected.min(partial.settled);
                offset = (offset + partial.settled as usize).min(packets.len());
                tracing::debug!(%message, offset, "retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err((partial, message)) => {
                // What the failed call did settle is acknowledged all the same.
                if let Some(partial) = partial {
                    total.accepted += partial.accepted;
                    total.duplicates += partial.duplicates;
                    total.rejected += partial.rejected.min(partial.settled);
                    offset = (offset + partial.settled as usize).min(packets.len());
                }
                eprintln!("call failed: {message}");
                return (total, attempt as u64, (packets.len() - offset) as u64);
            }
        }
    }
    (total, retries as u64, (packets.len() - offset) as u64)
}

pub fn summary_table(s: &Summary) -> String {
    let rows = vec![
        vec!["sent".into(), s.sent.to_string()],
        vec!["acked (accepted)".into(), s.accepted.to_string()],
        vec![
            "rejected".into(),
            format!("{} (expected {})", s.rejected, s.expected_rejected),
        ],
        vec![
            "duplicates".into(),
            format!("{} (expected {})", s.duplicates, s.expected_duplicates),
        ],
        vec!["not acknowledged".into(), s.failed.to_string()],
        vec!["retried calls".into(), s.retries.to_string()],
        vec!["elapsed".into(), format!("{:.2} s", s.elapsed_seconds)],
        vec!["events/s".into(), format!("{:.0}", s.events_per_second)],
        vec![
            "ack latency per call p50/p95/p99".into(),
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                s.latency_ms_p50, s.latency_ms_p95, s.latency_ms_p99
            ),
        ],
        vec![
            "ack latency p99.9 / max".into(),
            format!("{:.2} / {:.2} ms", s.latency_ms_p999, s.latency_ms_max),
        ],
    ];
    let mut out = super::output::table(&["SUMMARY", ""], &rows);
    if !s.consistent() {
        out.push_str("WARNING: acknowledgements do not match what was sent\n");
    }
    out
}

//! `telemetryctl send`: a load generator that checks what it gets back.
//!
//! Workers each open their own connection and send batches of generated
//! events (gRPC client streams or unary batches, or HTTP JSON batches). Every
//! event carries an `eventId`, so a call that fails part-way is resumed from
//! the point the server says it settled (`telemetry-settled`) without any
//! event counting twice. At the end the summary compares what the server
//! acknowledged with what was sent.
//!
//! The generator shares the machine with the server in benchmarks, so it is
//! cheap per event: each worker draws events from a pool of pre-encoded
//! templates (protobuf or JSON) and appends only the id and timestamp, and
//! the gRPC calls send those bytes as they are (a codec that does not
//! re-encode).
//!
//! With `--rate`, calls are sent on a fixed schedule whether or not earlier
//! ones have been answered (up to [`MAX_IN_FLIGHT`] per connection), and a
//! call's latency is measured from the moment it was due, so a slow server
//! shows up in the latency rather than in a lower offered rate.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use telemetry_proto::v1::{Ack, Packet};
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use telemetry_proto::json::{AckJson, EventJson, payload_to_json};

/// Calls one connection has in flight at most in `--rate` mode.
pub const MAX_IN_FLIGHT: usize = 64;
/// Templates each worker draws its events from. Device and user are drawn
/// per event and written into the template's placeholders, so a pool small
/// enough to stay in the CPU cache still spreads events over every device
/// and user.
const POOL: usize = 64;

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

/// The wire form of generated events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// An encoded `Packet`.
    Protobuf,
    /// An `EventJson` object.
    Json,
}

/// Generates one worker's events: a pool of encoded templates (everything
/// but the id and timestamp), completed per event.
struct Generator {
    rng: StdRng,
    form: Form,
    /// `<run>-<worker>-`: ids are this plus a sequence number.
    id_prefix: String,
    seq: u64,
    duplicates: f64,
    invalid: f64,
    devices: u64,
    users: u64,
    valid_pool: Vec<Template>,
    invalid_pool: Vec<Template>,
    buf: BytesMut,
    /// Recent events (and whether they were valid) to draw duplicates from.
    history: VecDeque<(Bytes, bool)>,
}

impl Generator {
    fn new(args: &SendArgs, types: &[String], form: Form, id_prefix: String, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut pool = |valid: bool, n: usize| -> Vec<Template> {
            (0..n)
                .map(|i| template(&mut rng, args, types, valid, i as u64, form))
                .collect()
        };
        let valid_pool = pool(true, POOL);
        let invalid_pool = if args.invalid > 0.0 {
            pool(false, POOL / 16)
        } else {
            Vec::new()
        };
        Generator {
            rng,
            form,
            id_prefix,
            seq: 0,
            duplicates: args.duplicates.clamp(0.0, 1.0),
            invalid: args.invalid.clamp(0.0, 1.0),
            devices: args.devices.max(1),
            users: args.users.max(1),
            valid_pool,
            invalid_pool,
            buf: BytesMut::new(),
            history: VecDeque::new(),
        }
    }

    /// The next event: its bytes, whether it is valid, whether it repeats
    /// an earlier one.
    fn next(&mut self, now_ms: i64) -> (Bytes, bool, bool) {
        if self.duplicates > 0.0
            && !self.history.is_empty()
            && self.rng.random_bool(self.duplicates)
        {
            let i = self.rng.random_range(0..self.history.len());
            let (bytes, valid) = self.history[i].clone();
            return (bytes, valid, true);
        }
        self.seq += 1;
        let valid = self.invalid <= 0.0 || !self.rng.random_bool(self.invalid);
        let pool = if valid {
            &self.valid_pool
        } else {
            &self.invalid_pool
        };
        let t = &pool[self.rng.random_range(0..pool.len())];
        if self.buf.capacity() - self.buf.len() < t.bytes.len() + 64 {
            self.buf.reserve(64 * 1024);
        }
        let mut seq = itoa::Buffer::new();
        let seq = seq.format(self.seq).as_bytes();
        let id_len = self.id_prefix.len() + seq.len();
        let at = self.buf.len();
        self.buf.put_slice(&t.bytes);
        if let Some((from, width)) = t.device {
            let device = self.rng.random_range(0..self.devices);
            put_digits(&mut self.buf[at + from..at + from + width], device);
        }
        if let Some((from, width)) = t.user {
            let user = self.rng.random_range(0..self.users);
            put_digits(&mut self.buf[at + from..at + from + width], user);
        }
        match self.form {
            Form::Protobuf => {
                // Fields may come in any order: timestamp (2), event_id (5).
                self.buf.put_u8(2 << 3);
                prost::encoding::encode_varint(now_ms as u64, &mut self.buf);
                self.buf.put_u8((5 << 3) | 2);
                prost::encoding::encode_varint(id_len as u64, &mut self.buf);
                self.buf.put_slice(self.id_prefix.as_bytes());
                self.buf.put_slice(seq);
            }
            Form::Json => {
                self.buf.put_slice(b",\"timestamp\":");
                self.buf
                    .put_slice(itoa::Buffer::new().format(now_ms).as_bytes());
                self.buf.put_slice(b",\"eventId\":\"");
                self.buf.put_slice(self.id_prefix.as_bytes());
                self.buf.put_slice(seq);
                self.buf.put_slice(b"\"}");
            }
        }
        let bytes = self.buf.split().freeze();
        if self.duplicates > 0.0 {
            if self.history.len() >= 1000 {
                self.history.pop_front();
            }
            self.history.push_back((bytes.clone(), valid));
        }
        (bytes, valid, false)
    }
}

/// An encoded event without id and timestamp, and where in it the digits
/// of its device and user id go (offset and width).
struct Template {
    bytes: Vec<u8>,
    device: Option<(usize, usize)>,
    user: Option<(usize, usize)>,
}

/// Writes `n` as decimal digits filling `dst`, zero-padded.
fn put_digits(dst: &mut [u8], mut n: u64) {
    for b in dst.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Digits of the largest of `n` ids (0..n), at least 5.
fn id_width(n: u64) -> usize {
    n.saturating_sub(1)
        .checked_ilog10()
        .map_or(1, |d| d as usize + 1)
        .max(5)
}

/// One template: a random event without id and timestamp, encoded, with
/// placeholder device and user ids (all zeros) for `Generator::next` to fill.
fn template(
    rng: &mut StdRng,
    args: &SendArgs,
    types: &[String],
    valid: bool,
    seq: u64,
    form: Form,
) -> Template {
    let (device_width, user_width) = (id_width(args.devices), id_width(args.users));
    let device_id = if valid {
        format!("device-{:0device_width$}", 0)
    } else {
        format!("bad device {}!", rng.random_range(0..args.devices.max(1)))
    };
    let user_id = format!("user-{:0user_width$}", 0);
    let event_type = types[rng.random_range(0..types.len())].clone();
    let value = if event_type == "purchase" {
        (rng.random_range(100..10_000) as f64) / 100.0
    } else {
        rng.random_range(0.0..100.0_f64).round()
    };
    let kind = match args.payload {
        PayloadKind::Mixed => {
            [PayloadKind::Json, PayloadKind::Binary, PayloadKind::Text][rng.random_range(0..3)]
        }
        k => k,
    };
    let payload = match kind {
        PayloadKind::Json => format!(
            r#"{{"seq":{},"temp":{:.1}}}"#,
            seq,
            rng.random_range(-20.0..40.0_f64)
        )
        .into_bytes(),
        PayloadKind::Binary => (0..rng.random_range(16..64))
            .map(|_| rng.random())
            .collect(),
        _ => format!("reading {seq} of {device_id}").into_bytes(),
    };
    let packet = Packet {
        device_id,
        timestamp: 0,
        payload,
        event_type,
        event_id: String::new(),
        user_id: user_id.clone(),
        value,
        attributes: [(
            "region".to_string(),
            ["eu", "us", "ap"][rng.random_range(0..3)].to_string(),
        )]
        .into(),
    };
    let bytes = match form {
        Form::Protobuf => packet.encode_to_vec(),
        Form::Json => {
            // The object without timestamp and closing brace; `next`
            // appends them with the id.
            let json = serde_json::to_string(&packet_json(&packet)).expect("an event serialises");
            let mut json = json.replacen(",\"timestamp\":0", "", 1).into_bytes();
            json.pop();
            json
        }
    };
    // The first occurrence is the field itself (a text payload may repeat
    // the device id; it keeps the placeholder).
    let find = |needle: &str, prefix: usize| {
        bytes
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .map(|at| (at + prefix, needle.len() - prefix))
    };
    Template {
        device: if valid {
            find(&packet.device_id, "device-".len())
        } else {
            None
        },
        user: find(&user_id, "user-".len()),
        bytes,
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

#[derive(Clone)]
enum Transport {
    Grpc(tonic::client::Grpc<Channel>, GrpcMode),
    Http(reqwest::Client, String),
}

const STREAM_PACKETS: &str = "/telemetry.v1.TelemetryIngest/StreamPackets";
const SEND_BATCH: &str = "/telemetry.v1.TelemetryIngest/SendBatch";

impl Transport {
    fn form(&self) -> Form {
        match self {
            Transport::Grpc(..) => Form::Protobuf,
            Transport::Http(..) => Form::Json,
        }
    }

    /// One attempt; Err(Some(partial)) is retryable, Err(None) is final.
    async fn send(&mut self, events: &[Bytes]) -> Result<Settled, (Option<Settled>, String)> {
        match self {
            Transport::Grpc(grpc, mode) => {
                let result = match grpc.ready().await {
                    Err(e) => Err(tonic::Status::unknown(format!("service not ready: {e}"))),
                    Ok(()) => match mode {
                        GrpcMode::Stream => {
                            let stream = tokio_stream::iter(events.to_vec());
                            grpc.client_streaming(
                                tonic::Request::new(stream),
                                PathAndQuery::from_static(STREAM_PACKETS),
                                RawCodec,
                            )
                            .await
                        }
                        GrpcMode::Batch => {
                            // PacketBatch { packets (1): repeated Packet }
                            let len: usize = events.iter().map(|e| e.len() + 6).sum();
                            let mut batch = BytesMut::with_capacity(len);
                            for e in events {
                                batch.put_u8((1 << 3) | 2);
                                prost::encoding::encode_varint(e.len() as u64, &mut batch);
                                batch.put_slice(e);
                            }
                            grpc.unary(
                                tonic::Request::new(batch.freeze()),
                                PathAndQuery::from_static(SEND_BATCH),
                                RawCodec,
                            )
                            .await
                        }
                    },
                };
                match result {
                    Ok(r) => {
                        let a = r.into_inner();
                        Ok(Settled {
                            accepted: a.accepted,
                            rejected: a.rejected,
                            duplicates: a.duplicates,
                            settled: events.len() as u64,
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
                let len: usize = events.iter().map(|e| e.len() + 1).sum();
                let mut body = BytesMut::with_capacity(len + 2);
                body.put_u8(b'[');
                for (i, e) in events.iter().enumerate() {
                    if i > 0 {
                        body.put_u8(b',');
                    }
                    body.put_slice(e);
                }
                body.put_u8(b']');
                let response = client
                    .post(format!("{base}/api/v1/events/batch"))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.freeze())
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
                        settled: events.len() as u64,
                    });
                }
                let retryable = matches!(status.as_u16(), 429 | 503);
                Err((retryable.then_some(partial), format!("{status}: {text}")))
            }
        }
    }
}

/// When worker `w`'s first call is due in `--rate` mode: the workers take
/// turns, so calls arrive evenly spaced (one every `batch / rate` seconds)
/// rather than `workers` at a time.
fn first_due(w: usize, batch: u64, rate: u64) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    let call_interval = batch as f64 / rate as f64;
    Duration::from_secs_f64(call_interval * w as f64)
}

/// Sends pre-encoded `Packet` / `PacketBatch` bytes as they are and decodes
/// the `Ack`.
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Ack;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Ack;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Ack>, tonic::Status> {
        Ack::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("cannot decode the Ack: {e}")))
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
        attributes: p.attributes.clone(),
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
    // The schedule starts when the first worker is connected.
    let start = Arc::new(std::sync::OnceLock::new());
    for w in 0..workers {
        let share = args.n / workers as u64 + u64::from((w as u64) < args.n % workers as u64);
        let transport = match (&args.grpc, &args.http) {
            (Some(url), _) => {
                let channel = Channel::from_shared(url.clone())
                    .with_context(|| format!("--grpc: not a URL: {url}"))?
                    .connect()
                    .await
                    .with_context(|| format!("cannot connect to {url}"))?;
                let grpc =
                    tonic::client::Grpc::new(channel).max_encoding_message_size(64 * 1024 * 1024);
                Transport::Grpc(grpc, args.grpc_mode)
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
        let mut generator = Generator::new(
            &args,
            &types,
            transport.form(),
            format!("{run_id}-{w}-"),
            seed,
        );
        let tally = tally.clone();
        let progress = progress.clone();
        let args = args.clone();
        let stop = stop.clone();
        let start = start.clone();
        handles.push(tokio::spawn(async move {
            let per_worker_rate = args.rate as f64 / workers as f64;
            let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
            let mut calls = tokio::task::JoinSet::new();
            let mut next_at =
                *start.get_or_init(Instant::now) + first_due(w, args.batch as u64, args.rate);
            let mut left = share;
            let mut transport = transport;
            while left > 0 && !stop.load(Ordering::Relaxed) {
                let n = left.min(args.batch as u64);
                left -= n;
                let now_ms = crate::intake::now_ms();
                let mut events = Vec::with_capacity(n as usize);
                let mut call = CallCounts {
                    sent: n,
                    ..Default::default()
                };
                for _ in 0..n {
                    let (bytes, valid, dup) = generator.next(now_ms);
                    call.invalid += u64::from(!valid);
                    call.dup_of_valid += u64::from(dup && valid);
                    events.push(bytes);
                }
                if per_worker_rate > 0.0 {
                    // Open loop: the call is due at `next_at` whatever the
                    // calls before it are doing; latency counts from then.
                    tokio::time::sleep_until(next_at).await;
                    let due = next_at;
                    next_at += Duration::from_secs_f64(n as f64 / per_worker_rate);
                    let permit = in_flight
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("never closed");
                    let (mut transport, tally, progress, stop) = (
                        transport.clone(),
                        tally.clone(),
                        progress.clone(),
                        stop.clone(),
                    );
                    let retries = args.retries;
                    calls.spawn(async move {
                        let outcome = send_with_retries(&mut transport, &events, retries).await;
                        drop(permit);
                        record(&tally, &progress, &stop, call, outcome, due).await;
                    });
                } else {
                    let due = Instant::now();
                    let outcome = send_with_retries(&mut transport, &events, args.retries).await;
                    record(&tally, &progress, &stop, call, outcome, due).await;
                }
            }
            while calls.join_next().await.is_some() {}
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

/// What a call carried, for the summary.
#[derive(Debug, Default, Clone, Copy)]
struct CallCounts {
    sent: u64,
    invalid: u64,
    dup_of_valid: u64,
}

/// Adds one finished call (what it carried, what settled, retries, events
/// never settled) to the tally; latency counts from `due`.
async fn record(
    tally: &Mutex<Tally>,
    progress: &ProgressBar,
    stop: &AtomicBool,
    call: CallCounts,
    (settled, retries, failed): (Settled, u64, u64),
    due: Instant,
) {
    if failed > 0 {
        // A call that failed after every retry ends the run: the server is
        // gone or refuses, and the summary says so.
        stop.store(true, Ordering::Relaxed);
    }
    let micros = due.elapsed().as_micros() as u64;
    let mut t = tally.lock().await;
    let s = &mut t.summary;
    s.sent += call.sent;
    s.accepted += settled.accepted;
    s.rejected += settled.rejected;
    s.duplicates += settled.duplicates;
    s.expected_rejected += call.invalid;
    s.expected_duplicates += call.dup_of_valid;
    s.retries += retries;
    s.failed += failed;
    if let Some(h) = t.latency.as_mut() {
        let _ = h.record(micros.max(1));
    }
    progress.inc(call.sent);
}

/// Sends a call, resuming from the settled point after retryable failures.
/// Returns what settled, the retries made, and the events never settled.
async fn send_with_retries(
    transport: &mut Transport,
    packets: &[Bytes],
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn workers_take_turns_so_calls_are_evenly_spaced() {
        // 4 workers, 1 000-event calls, 40 000 events/s: one call every 25 ms
        // overall, each worker every 100 ms, starting 25 ms apart.
        let due: Vec<u128> = (0..4)
            .map(|w| first_due(w, 1_000, 40_000).as_millis())
            .collect();
        assert_eq!(due, [0, 25, 50, 75]);
        assert_eq!(
            first_due(3, 1_000, 0),
            Duration::ZERO,
            "no schedule without --rate"
        );
    }

    fn args(devices: u64, users: u64, payload: PayloadKind) -> SendArgs {
        SendArgs {
            grpc: None,
            http: None,
            n: 0,
            devices,
            users,
            event_types: "reading,purchase,login".into(),
            rate: 0,
            concurrency: 1,
            batch: 100,
            grpc_mode: GrpcMode::Stream,
            payload,
            duplicates: 0.0,
            invalid: 0.0,
            retries: 0,
            seed: Some(7),
            json: true,
            no_progress: true,
        }
    }

    fn types() -> Vec<String> {
        ["reading", "purchase", "login"].map(String::from).to_vec()
    }

    #[test]
    fn protobuf_events_decode_and_spread_over_every_device_and_user() {
        let args = args(1000, 5000, PayloadKind::Mixed);
        let mut g = Generator::new(&args, &types(), Form::Protobuf, "run-0-".into(), 7);
        let (mut devices, mut users, mut ids) = (HashSet::new(), HashSet::new(), HashSet::new());
        for _ in 0..40_000 {
            let (bytes, valid, dup) = g.next(1_700_000_000_000);
            assert!(valid && !dup);
            let p = Packet::decode(bytes).expect("a Packet");
            assert_eq!(p.timestamp, 1_700_000_000_000);
            let device: u64 = p
                .device_id
                .strip_prefix("device-")
                .unwrap()
                .parse()
                .unwrap();
            let user: u64 = p.user_id.strip_prefix("user-").unwrap().parse().unwrap();
            assert!(device < 1000 && user < 5000, "{p:?}");
            assert_eq!((p.device_id.len(), p.user_id.len()), (12, 10));
            devices.insert(device);
            users.insert(user);
            assert!(ids.insert(p.event_id));
        }
        // 40 000 uniform draws leave none of 1 000 devices and almost none
        // of 5 000 users out (expected misses: ~0 and ~2).
        assert_eq!(devices.len(), 1000);
        assert!(users.len() > 4950, "{}", users.len());
    }

    #[test]
    fn json_events_parse_with_ids_wider_than_five_digits() {
        let args = args(200_000, 3, PayloadKind::Text);
        let mut g = Generator::new(&args, &types(), Form::Json, "run-1-".into(), 9);
        let mut wide = false;
        for _ in 0..2_000 {
            let (bytes, _, _) = g.next(1_700_000_000_000);
            let e: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
            let device = e["deviceId"].as_str().unwrap();
            let n: u64 = device.strip_prefix("device-").unwrap().parse().unwrap();
            assert!(
                n < 200_000 && device.len() == "device-".len() + 6,
                "{device}"
            );
            wide |= n >= 100_000;
            let user: u64 = e["userId"].as_str().unwrap()[5..].parse().unwrap();
            assert!(user < 3);
            assert_eq!(e["timestamp"], 1_700_000_000_000_i64);
        }
        assert!(wide, "ids of six digits are drawn too");
        assert_eq!(id_width(1), 5);
        assert_eq!(id_width(100_000), 5);
        assert_eq!(id_width(100_001), 6);
    }
}

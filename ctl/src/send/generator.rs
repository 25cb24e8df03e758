//! Generated events: each worker draws them from a pool of pre-encoded
//! templates (protobuf or JSON; everything but the id and timestamp) and
//! appends only the id and timestamp, so the generator stays cheap per event
//! when it shares the machine with the server in benchmarks. Device and user
//! are drawn per event and written into the template's placeholders, so a
//! pool small enough to stay in the CPU cache still spreads events over every
//! device and user.
//!
//! Every event carries an `eventId` (`<run>-<worker>-<seq>`), so a call
//! resent after a failure never counts an event twice.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use telemetry_proto::json::EventJson;
use telemetry_proto::v1::Packet;

use super::report::Expected;
use crate::cli::{PayloadKind, SendArgs};

/// Templates each worker draws its events from.
const POOL: usize = 64;

/// The wire form of generated events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// An encoded `Packet`.
    Protobuf,
    /// An `EventJson` object.
    Json,
}

/// Generates one worker's events: a pool of encoded templates (everything
/// but the id and timestamp), completed per event.
pub struct Generator {
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
    pub fn new(
        args: &SendArgs,
        types: &[String],
        form: Form,
        id_prefix: String,
        seed: u64,
    ) -> Self {
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

    /// The events of one call, and what their answers should say.
    pub fn batch(&mut self, n: u64, now_ms: i64) -> (Vec<Bytes>, Expected) {
        let mut events = Vec::with_capacity(n as usize);
        let mut expected = Expected {
            sent: n,
            ..Default::default()
        };
        for _ in 0..n {
            let (bytes, valid, repeat) = self.next(now_ms);
            expected.rejected += u64::from(!valid);
            expected.duplicates += u64::from(repeat && valid);
            events.push(bytes);
        }
        (events, expected)
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
            let json =
                serde_json::to_string(&EventJson::from(&packet)).expect("an event serialises");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::GrpcMode;
    use std::collections::HashSet;

    fn args(devices: u64, users: u64, payload: PayloadKind) -> SendArgs {
        SendArgs {
            grpc: None,
            http: None,
            ca: None,
            api_key: None,
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

    #[test]
    fn a_batch_expects_its_invalid_events_rejected_and_its_valid_repeats_duplicated() {
        let mut args = args(10, 10, PayloadKind::Json);
        (args.duplicates, args.invalid) = (0.2, 0.1);
        let mut g = Generator::new(&args, &types(), Form::Json, "run-2-".into(), 3);
        let (events, expected) = g.batch(2_000, 1_700_000_000_000);
        let (mut invalid, mut repeats, mut ids) = (0, 0, HashSet::new());
        for bytes in &events {
            let e: EventJson = serde_json::from_slice(bytes).expect("an event");
            let valid = e.device_id.starts_with("device-");
            invalid += u64::from(!valid);
            repeats += u64::from(!ids.insert(e.event_id) && valid);
        }
        assert_eq!(expected.sent, 2_000);
        assert_eq!((expected.rejected, expected.duplicates), (invalid, repeats));
        assert!(invalid > 100 && repeats > 200, "{expected:?}");
    }
}

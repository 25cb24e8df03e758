//! The HTTP API's JSON bodies: the camelCase mirror of the `telemetry.v1`
//! messages. The server writes them and `telemetryctl` reads them, so both
//! sides use these definitions and neither can drift from the other.
//!
//! - Events: [`EventJson`], and the JSON form of a payload
//!   ([`payload_to_json`], [`payload_from_json`]).
//! - Ingest answers: [`AckJson`] with its [`RejectionJson`]s.
//! - Query answers: [`DeviceCount`], [`Counters`], [`Leaderboard`],
//!   [`Window`], [`Stats`]; each converts into its protobuf response, which
//!   the gRPC query service sends.
//!
//! With the `utoipa` feature each body also derives `utoipa::ToSchema`, from
//! which the server's OpenAPI document takes its schemas. It is a feature, not
//! a plain dependency, so that clients (telemetryctl) build without the
//! OpenAPI macros they never use.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::v1 as pb;

/// One event on the HTTP API (camelCase fields of `Packet`).
///
/// `payload` is any JSON value: a string is read as base64 (binary payloads),
/// anything else (object, array, number, boolean) is stored as its compact
/// JSON text.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema), schema(as = Event))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventJson {
    // Defaulted for serde so that validation names the missing field; the
    // API requires it all the same.
    #[serde(default)]
    #[cfg_attr(
        feature = "utoipa",
        schema(
            required = true,
            min_length = 1,
            max_length = 128,
            pattern = r"^[A-Za-z0-9._:-]+$"
        )
    )]
    pub device_id: String,
    /// Unix milliseconds.
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(required = true))]
    pub timestamp: i64,
    /// Any JSON value; a string is base64 of a binary payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[cfg_attr(feature = "utoipa", schema(max_length = 128))]
    pub event_type: String,
    /// For deduplication.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[cfg_attr(feature = "utoipa", schema(max_length = 128))]
    pub event_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[cfg_attr(feature = "utoipa", schema(max_length = 128))]
    pub user_id: String,
    #[serde(default)]
    pub value: f64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "utoipa", schema(schema_with = attributes_schema))]
    pub attributes: BTreeMap<String, String>,
}

/// `attributes`: string values of at most 256 characters.
#[cfg(feature = "utoipa")]
fn attributes_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::{ObjectBuilder, Type};
    let value = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(256));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(value))
        .build()
}

/// A packet in the HTTP API's JSON shape.
impl From<&pb::Packet> for EventJson {
    fn from(p: &pb::Packet) -> Self {
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
}

/// Payload bytes as JSON: structured JSON as is, anything else base64.
pub fn payload_to_json(payload: &[u8]) -> Option<Value> {
    if payload.is_empty() {
        return None;
    }
    match serde_json::from_slice::<Value>(payload) {
        Ok(v) if !v.is_string() => Some(v),
        _ => Some(Value::String(STANDARD.encode(payload))),
    }
}

/// Payload bytes from their JSON form (the inverse of [`payload_to_json`]):
/// none or null is empty, a string is base64 (padded or not), anything else
/// is its compact JSON text. `None` for a string that is not base64.
pub fn payload_from_json(value: Option<&Value>) -> Option<Vec<u8>> {
    match value {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::String(s)) => STANDARD
            .decode(s)
            .or_else(|_| STANDARD_NO_PAD.decode(s))
            .ok(),
        Some(v) => Some(serde_json::to_vec(v).expect("JSON value serialises")),
    }
}

/// The answer to an ingest call (camelCase JSON of the gRPC `Ack`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema), schema(as = Ack))]
#[serde(rename_all = "camelCase")]
pub struct AckJson {
    pub accepted: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    pub rejections: Vec<RejectionJson>,
}

/// One rejected event of a call: its index in the call, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema), schema(as = Rejection))]
#[serde(rename_all = "camelCase")]
pub struct RejectionJson {
    pub index: u64,
    pub field: String,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeviceCount {
    pub device_id: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CounterValue {
    pub event_type: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    pub counters: Vec<CounterValue>,
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LeaderboardEntry {
    /// Competition ranking: equal scores share a rank (1, 2, 2, 4).
    pub rank: u32,
    pub member: String,
    pub score: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Leaderboard {
    pub name: String,
    /// Bucket start, unix seconds.
    pub bucket: i64,
    pub entries: Vec<LeaderboardEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WindowPoint {
    /// Minute start, unix seconds (0 in the total).
    pub minute: i64,
    pub count: u64,
    pub sum: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Window {
    pub name: String,
    /// Oldest first; one point per minute, zero-filled.
    pub points: Vec<WindowPoint>,
    pub total: WindowPoint,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub events_total: u64,
    pub devices: u64,
    pub received_total: u64,
    pub accepted_total: u64,
    pub rejected_total: u64,
    pub duplicates_total: u64,
    pub queue_depth: u64,
    pub queue_capacity: u64,
    pub redis_ok: bool,
    pub accepted_per_second: f64,
}

impl From<Counters> for pb::CounterResponse {
    fn from(c: Counters) -> Self {
        pb::CounterResponse {
            counters: c
                .counters
                .into_iter()
                .map(|c| pb::CounterValue {
                    event_type: c.event_type,
                    count: c.count,
                })
                .collect(),
            total: c.total,
        }
    }
}

impl From<Leaderboard> for pb::LeaderboardResponse {
    fn from(l: Leaderboard) -> Self {
        pb::LeaderboardResponse {
            name: l.name,
            bucket: l.bucket,
            entries: l
                .entries
                .into_iter()
                .map(|e| pb::LeaderboardEntry {
                    rank: e.rank,
                    member: e.member,
                    score: e.score,
                })
                .collect(),
        }
    }
}

impl From<WindowPoint> for pb::WindowPoint {
    fn from(p: WindowPoint) -> Self {
        pb::WindowPoint {
            minute: p.minute,
            count: p.count,
            sum: p.sum,
            min: p.min,
            max: p.max,
        }
    }
}

impl From<Window> for pb::WindowResponse {
    fn from(w: Window) -> Self {
        pb::WindowResponse {
            name: w.name,
            points: w.points.into_iter().map(Into::into).collect(),
            total: Some(w.total.into()),
        }
    }
}

impl From<Stats> for pb::StatsResponse {
    fn from(s: Stats) -> Self {
        pb::StatsResponse {
            events_total: s.events_total,
            devices: s.devices,
            received_total: s.received_total,
            accepted_total: s.accepted_total,
            rejected_total: s.rejected_total,
            duplicates_total: s.duplicates_total,
            queue_depth: s.queue_depth,
            queue_capacity: s.queue_capacity,
            redis_ok: s.redis_ok,
            accepted_per_second: s.accepted_per_second,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_json_round_trip_keeps_structured_and_binary_payloads() {
        for bytes in [
            &br#"{"a":[1,2]}"#[..],
            &[0u8, 159, 146, 150][..],
            &b"42"[..],
        ] {
            let json = payload_to_json(bytes);
            assert_eq!(payload_from_json(json.as_ref()).unwrap(), bytes);
        }
    }

    #[test]
    fn string_payload_is_base64_with_or_without_padding() {
        for s in ["AAEC/w==", "AAEC/w"] {
            let json = Value::String(s.into());
            assert_eq!(payload_from_json(Some(&json)).unwrap(), [0, 1, 2, 255]);
        }
        let json = Value::String("not base64!".into());
        assert_eq!(payload_from_json(Some(&json)), None);
    }

    #[test]
    fn json_values_parse_to_the_nearest_double() {
        // Sums of values are compared with what senders compute, so a value
        // must arrive as the double its text names, not one next to it (the
        // default float parsing of serde_json may be off by one unit in the
        // last place; the workspace enables `float_roundtrip`).
        for x in [
            391.20000000000005f64,
            0.1,
            129.70000000000002,
            1e-300,
            2.2250738585072014e-308,
        ] {
            let json = format!(r#"{{"deviceId":"d","timestamp":1,"value":{x:?}}}"#);
            let e: EventJson = serde_json::from_str(&json).unwrap();
            assert_eq!(e.value.to_bits(), x.to_bits(), "{json}");
        }
    }

    #[test]
    fn unknown_json_field_is_refused_by_name() {
        let err = serde_json::from_str::<EventJson>(r#"{"deviceId":"d","devcie":1}"#).unwrap_err();
        assert!(err.to_string().contains("devcie"), "{err}");
    }

    #[test]
    fn a_packet_serialises_with_its_fields_in_camel_case_and_empty_ones_left_out() {
        let p = pb::Packet {
            device_id: "d-1".into(),
            timestamp: 7,
            payload: br#"{"t":1}"#.to_vec(),
            value: 2.5,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&EventJson::from(&p)).unwrap(),
            r#"{"deviceId":"d-1","timestamp":7,"payload":{"t":1},"value":2.5}"#
        );
    }
}

//! The validated event, and its JSON shapes on the HTTP API.
//!
//! A protobuf `Packet` or a JSON [`EventJson`] becomes a [`RawEvent`],
//! [`crate::validate`] checks it into an [`Event`] (both on the way through
//! [`crate::intake`]), and only `Event`s reach the queue.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use telemetry_proto::v1::Packet;

/// An event as received, before any rule is checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawEvent {
    pub device_id: String,
    pub timestamp: i64,
    pub payload: Bytes,
    pub event_type: String,
    pub event_id: String,
    pub user_id: String,
    pub value: f64,
    pub attributes: BTreeMap<String, String>,
}

/// An event that passed validation. Optional fields are `None` when empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub device_id: String,
    /// Unix milliseconds.
    pub timestamp: i64,
    pub payload: Bytes,
    /// `unknown` when the sender gave none.
    pub event_type: String,
    pub event_id: Option<String>,
    pub user_id: Option<String>,
    pub value: f64,
    pub attributes: BTreeMap<String, String>,
}

/// Event type recorded for events that carry none.
pub const UNKNOWN_EVENT_TYPE: &str = "unknown";

impl From<Packet> for RawEvent {
    fn from(p: Packet) -> Self {
        RawEvent {
            device_id: p.device_id,
            timestamp: p.timestamp,
            payload: Bytes::from(p.payload),
            event_type: p.event_type,
            event_id: p.event_id,
            user_id: p.user_id,
            value: p.value,
            attributes: p.attributes,
        }
    }
}

impl From<&Event> for Packet {
    fn from(e: &Event) -> Self {
        Packet {
            device_id: e.device_id.clone(),
            timestamp: e.timestamp,
            payload: e.payload.to_vec(),
            event_type: e.event_type.clone(),
            event_id: e.event_id.clone().unwrap_or_default(),
            user_id: e.user_id.clone().unwrap_or_default(),
            value: e.value,
            attributes: e.attributes.clone(),
        }
    }
}

/// One event on the HTTP API (camelCase fields of `Packet`).
///
/// `payload` is any JSON value: a string is read as base64 (binary payloads),
/// anything else (object, array, number, boolean) is stored as its compact
/// JSON text.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventJson {
    #[serde(default)]
    pub device_id: String,
    #[serde(default)]
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub event_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub event_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_id: String,
    #[serde(default)]
    pub value: f64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// A JSON event whose `payload` is a string that is not base64, so it cannot
/// become a [`RawEvent`] ([`crate::validate`] says how it is rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadNotBase64;

impl EventJson {
    pub fn into_raw(self) -> Result<RawEvent, PayloadNotBase64> {
        let payload = match self.payload {
            None | Some(serde_json::Value::Null) => Bytes::new(),
            Some(serde_json::Value::String(s)) => decode_base64(&s)
                .map(Bytes::from)
                .map_err(|_| PayloadNotBase64)?,
            Some(other) => Bytes::from(serde_json::to_vec(&other).expect("JSON value serialises")),
        };
        Ok(RawEvent {
            device_id: self.device_id,
            timestamp: self.timestamp,
            payload,
            event_type: self.event_type,
            event_id: self.event_id,
            user_id: self.user_id,
            value: self.value,
            attributes: self.attributes,
        })
    }

    /// The JSON form of a stored event: a payload that is JSON (and not a
    /// bare string) comes back as that value, anything else as base64.
    pub fn from_event(e: &Event) -> Self {
        EventJson {
            device_id: e.device_id.clone(),
            timestamp: e.timestamp,
            payload: payload_to_json(&e.payload),
            event_type: e.event_type.clone(),
            event_id: e.event_id.clone().unwrap_or_default(),
            user_id: e.user_id.clone().unwrap_or_default(),
            value: e.value,
            attributes: e.attributes.clone(),
        }
    }
}

fn decode_base64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD.decode(s).or_else(|_| STANDARD_NO_PAD.decode(s))
}

/// Payload bytes as JSON: structured JSON as is, anything else base64.
pub fn payload_to_json(payload: &[u8]) -> Option<serde_json::Value> {
    if payload.is_empty() {
        return None;
    }
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(v) if !v.is_string() => Some(v),
        _ => Some(serde_json::Value::String(STANDARD.encode(payload))),
    }
}

/// Payload bytes from their JSON form (the inverse of [`payload_to_json`]).
pub fn payload_from_json(value: Option<&serde_json::Value>) -> Bytes {
    match value {
        None | Some(serde_json::Value::Null) => Bytes::new(),
        Some(serde_json::Value::String(s)) => Bytes::from(decode_base64(s).unwrap_or_default()),
        Some(v) => Bytes::from(serde_json::to_vec(v).expect("JSON value serialises")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_object_payload_is_stored_as_compact_json() {
        let json: EventJson =
            serde_json::from_str(r#"{"deviceId":"d","timestamp":1,"payload":{"t": 21.5}}"#)
                .unwrap();
        let raw = json.into_raw().unwrap();
        assert_eq!(&raw.payload[..], br#"{"t":21.5}"#);
    }

    #[test]
    fn string_payload_is_base64_with_or_without_padding() {
        for s in ["AAEC/w==", "AAEC/w"] {
            let json = EventJson {
                payload: Some(s.into()),
                ..Default::default()
            };
            assert_eq!(&json.into_raw().unwrap().payload[..], &[0, 1, 2, 255]);
        }
        let json = EventJson {
            payload: Some("not base64!".into()),
            ..Default::default()
        };
        assert_eq!(json.into_raw().unwrap_err(), PayloadNotBase64);
    }

    #[test]
    fn payload_json_round_trip_keeps_structured_and_binary_payloads() {
        for bytes in [
            &br#"{"a":[1,2]}"#[..],
            &[0u8, 159, 146, 150][..],
            &b"42"[..],
        ] {
            let json = payload_to_json(bytes);
            assert_eq!(&payload_from_json(json.as_ref())[..], bytes);
        }
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
}

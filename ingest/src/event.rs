//! The validated event, and its JSON shapes on the HTTP API.
//!
//! Handlers turn a protobuf `Packet` or a JSON [`EventJson`] into a
//! [`RawEvent`], [`crate::validate`] checks it into an [`Event`], and only
//! `Event`s reach the queue.

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
            attributes: p.attributes.into_iter().collect(),
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
            attributes: e.attributes.clone().into_iter().collect(),
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

/// Why a JSON event could not even become a [`RawEvent`].
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadError(pub String);

impl EventJson {
    pub fn into_raw(self) -> Result<RawEvent, PayloadError> {
        let payload = match self.payload {
            None | Some(serde_json::Value::Null) => Bytes::new(),
            Some(serde_json::Value::String(s)) => decode_base64(&s)
                .map(Bytes::from)
                .map_err(|_| PayloadError("payload: a string payload must be base64; send other JSON values as they are".into()))?,
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

/// Appends the stored JSON form of a recent event to `out`: the same text
/// `serde_json` makes of [`EventJson::from_event`] up to payload whitespace
/// and key order, which decoding does not see, written without building the
/// intermediate values (this runs once per stored event).
pub fn write_recent_json(e: &Event, out: &mut Vec<u8>) {
    use std::io::Write;
    let string = |out: &mut Vec<u8>, s: &str| {
        serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail")
    };
    out.extend_from_slice(b"{\"deviceId\":");
    string(out, &e.device_id);
    let _ = write!(out, ",\"timestamp\":{}", e.timestamp);
    if !e.payload.is_empty() {
        out.extend_from_slice(b",\"payload\":");
        if payload_is_structured_json(&e.payload) {
            out.extend_from_slice(&e.payload);
        } else {
            out.push(b'"');
            let at = out.len();
            out.resize(at + e.payload.len().div_ceil(3) * 4, 0);
            let n = STANDARD
                .encode_slice(&e.payload, &mut out[at..])
                .expect("sized for the encoding");
            out.truncate(at + n);
            out.push(b'"');
        }
    }
    if !e.event_type.is_empty() {
        out.extend_from_slice(b",\"eventType\":");
        string(out, &e.event_type);
    }
    if let Some(id) = &e.event_id {
        out.extend_from_slice(b",\"eventId\":");
        string(out, id);
    }
    if let Some(user) = &e.user_id {
        out.extend_from_slice(b",\"userId\":");
        string(out, user);
    }
    out.extend_from_slice(b",\"value\":");
    serde_json::to_writer(&mut *out, &e.value).expect("writing to a Vec cannot fail");
    if !e.attributes.is_empty() {
        out.extend_from_slice(b",\"attributes\":{");
        for (i, (k, v)) in e.attributes.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, k);
            out.push(b':');
            string(out, v);
        }
        out.push(b'}');
    }
    out.push(b'}');
}

/// Whether [`payload_to_json`] keeps the payload as a JSON value (valid
/// JSON, not a bare string), checked without building the value.
fn payload_is_structured_json(payload: &[u8]) -> bool {
    match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        None | Some(b'"') => false,
        Some(_) => serde_json::from_slice::<JsonCheck>(payload).is_ok(),
    }
}

/// Parses JSON the way `serde_json::Value` does (numbers included: one out
/// of f64 range fails both) but keeps nothing.
struct JsonCheck;

impl<'de> serde::Deserialize<'de> for JsonCheck {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonCheck)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonCheck {
    type Value = JsonCheck;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<JsonCheck, E> {
        Ok(JsonCheck)
    }
    fn visit_i64<E>(self, _: i64) -> Result<JsonCheck, E> {
        Ok(JsonCheck)
    }
    fn visit_u64<E>(self, _: u64) -> Result<JsonCheck, E> {
        Ok(JsonCheck)
    }
    fn visit_f64<E>(self, _: f64) -> Result<JsonCheck, E> {
        Ok(JsonCheck)
    }
    fn visit_str<E>(self, _: &str) -> Result<JsonCheck, E> {
        Ok(JsonCheck)
    }
    fn visit_unit<E>(self) -> Result<JsonCheck, E> {
        Ok(JsonCheck)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<JsonCheck, A::Error> {
        while seq.next_element::<JsonCheck>()?.is_some() {}
        Ok(JsonCheck)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<JsonCheck, A::Error> {
        while map.next_key::<serde::de::IgnoredAny>()?.is_some() {
            map.next_value::<JsonCheck>()?;
        }
        Ok(JsonCheck)
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
        assert!(json.into_raw().unwrap_err().0.starts_with("payload:"));
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
    fn recent_json_decodes_like_the_serde_form() {
        let payloads: [&[u8]; 11] = [
            b"",
            br#"{"b":1,"a":[1,2.5]}"#,
            b" { \"x\" : 1 } ",
            br#""a string""#,
            b"42",
            b"1e400",
            &[0, 159, 146, 150],
            b"{\"a\":\"\xff\"}",
            b"{} trailing",
            b"[1e400]",
            b"123456789012345678901234567890",
        ];
        for payload in payloads {
            let e = Event {
                device_id: "d-\"1\"".into(),
                timestamp: 1_700_000_000_123,
                payload: Bytes::copy_from_slice(payload),
                event_type: "t\u{e9}".into(),
                event_id: Some("id\n".into()),
                user_id: None,
                value: 0.1,
                attributes: [("k".to_string(), "v\\".to_string())].into(),
            };
            let mut fast = Vec::new();
            write_recent_json(&e, &mut fast);
            let slow = serde_json::to_vec(&EventJson::from_event(&e)).unwrap();
            let decode = |b: &[u8]| {
                let j: EventJson = serde_json::from_slice(b).unwrap();
                (
                    payload_from_json(j.payload.as_ref()),
                    serde_json::to_value(&j).unwrap(),
                )
            };
            assert_eq!(
                decode(&fast),
                decode(&slow),
                "{:?}",
                String::from_utf8_lossy(&fast)
            );
        }
    }

    #[test]
    fn unknown_json_field_is_refused_by_name() {
        let err = serde_json::from_str::<EventJson>(r#"{"deviceId":"d","devcie":1}"#).unwrap_err();
        assert!(err.to_string().contains("devcie"), "{err}");
    }
}

//! The validated event, and its conversions from and to the wire forms.
//!
//! Handlers turn a protobuf `Packet` or a JSON `EventJson` (both defined in
//! `telemetry-proto`) into a [`RawEvent`], [`crate::validate`] checks it into
//! an [`Event`], and only `Event`s reach the queue.

use std::collections::BTreeMap;

use bytes::Bytes;
use telemetry_proto::json::{EventJson, payload_from_json, payload_to_json};
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

/// A JSON event whose `payload` is a string that is not base64, so it cannot
/// become a [`RawEvent`] ([`crate::validate`] says how it is rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadNotBase64;

impl TryFrom<EventJson> for RawEvent {
    type Error = PayloadNotBase64;

    fn try_from(e: EventJson) -> Result<Self, PayloadNotBase64> {
        let payload = payload_from_json(e.payload.as_ref()).ok_or(PayloadNotBase64)?;
        Ok(RawEvent {
            device_id: e.device_id,
            timestamp: e.timestamp,
            payload: Bytes::from(payload),
            event_type: e.event_type,
            event_id: e.event_id,
            user_id: e.user_id,
            value: e.value,
            attributes: e.attributes,
        })
    }
}

/// The JSON form of a stored event: a payload that is JSON (and not a bare
/// string) comes back as that value, anything else as base64.
impl From<&Event> for EventJson {
    fn from(e: &Event) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_object_payload_is_stored_as_compact_json() {
        let json: EventJson =
            serde_json::from_str(r#"{"deviceId":"d","timestamp":1,"payload":{"t": 21.5}}"#)
                .unwrap();
        let raw = RawEvent::try_from(json).unwrap();
        assert_eq!(&raw.payload[..], br#"{"t":21.5}"#);
    }

    #[test]
    fn string_payload_is_base64_with_or_without_padding() {
        for s in ["AAEC/w==", "AAEC/w"] {
            let json = EventJson {
                payload: Some(s.into()),
                ..Default::default()
            };
            assert_eq!(
                &RawEvent::try_from(json).unwrap().payload[..],
                &[0, 1, 2, 255]
            );
        }
        let json = EventJson {
            payload: Some("not base64!".into()),
            ..Default::default()
        };
        assert_eq!(RawEvent::try_from(json).unwrap_err(), PayloadNotBase64);
    }
}

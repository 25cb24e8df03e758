//! The stored form of a recent event: the protobuf `Packet` encoding of the
//! event without its `device_id` (the list's key names the device).
//!
//! Every accepted event of a pipeline with `recentEvents` on is written
//! once, so the form is chosen for Redis: about half the bytes of the JSON
//! form (every byte of a value is parsed, copied into the script, into the
//! list and into the AOF), and it keeps binary payloads as they came.
//! Writing is by hand from the borrowed [`Event`], without building a
//! `Packet`; reading is prost's decoder. Values that start with `{` are the
//! JSON form that earlier versions wrote, and are read too.

use bytes::Bytes;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use telemetry_proto::json::{EventJson, payload_from_json};
use telemetry_proto::v1::Packet;

use crate::event::Event;

/// Appends the stored form of `e` to `out`.
pub fn encode(e: &Event, out: &mut Vec<u8>) {
    // Field numbers of `Packet` (proto/telemetry/v1/telemetry.proto).
    const TIMESTAMP: u32 = 2;
    const PAYLOAD: u32 = 3;
    const EVENT_TYPE: u32 = 4;
    const EVENT_ID: u32 = 5;
    const USER_ID: u32 = 6;
    const VALUE: u32 = 7;
    const ATTRIBUTES: u32 = 8;

    // The timestamp comes first and is never 0 (validation), so a stored
    // value never starts with `{` (0x7b), the first byte of the JSON form.
    encode_key(TIMESTAMP, WireType::Varint, out);
    encode_varint(e.timestamp as u64, out);
    bytes_field(PAYLOAD, &e.payload, out);
    bytes_field(EVENT_TYPE, e.event_type.as_bytes(), out);
    if let Some(id) = &e.event_id {
        bytes_field(EVENT_ID, id.as_bytes(), out);
    }
    if let Some(user) = &e.user_id {
        bytes_field(USER_ID, user.as_bytes(), out);
    }
    if e.value != 0.0 {
        encode_key(VALUE, WireType::SixtyFourBit, out);
        out.extend_from_slice(&e.value.to_le_bytes());
    }
    for (k, v) in &e.attributes {
        // A map entry is a message { string key = 1; string value = 2; }.
        let len = entry_len(k.len()) + entry_len(v.len());
        encode_key(ATTRIBUTES, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
        bytes_field(1, k.as_bytes(), out);
        bytes_field(2, v.as_bytes(), out);
    }
}

/// Bytes of a length-delimited field of `len` bytes with a one-byte key.
fn entry_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

fn bytes_field(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    if bytes.is_empty() {
        return;
    }
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// Reads a stored value of `device_id`'s list; `None` for bytes that are
/// neither form (nothing this service writes).
pub fn decode(device_id: &str, stored: &[u8]) -> Option<Event> {
    if stored.first() == Some(&b'{') {
        return decode_json(stored);
    }
    let p = Packet::decode(stored).ok()?;
    Some(Event {
        device_id: device_id.to_string(),
        timestamp: p.timestamp,
        payload: Bytes::from(p.payload),
        event_type: p.event_type,
        event_id: (!p.event_id.is_empty()).then_some(p.event_id),
        user_id: (!p.user_id.is_empty()).then_some(p.user_id),
        value: p.value,
        attributes: p.attributes,
    })
}

/// The JSON form of earlier versions (`EventJson`, device id included).
fn decode_json(stored: &[u8]) -> Option<Event> {
    let e: EventJson = serde_json::from_slice(stored).ok()?;
    Some(Event {
        payload: Bytes::from(payload_from_json(e.payload.as_ref()).unwrap_or_default()),
        device_id: e.device_id,
        timestamp: e.timestamp,
        event_type: e.event_type,
        event_id: (!e.event_id.is_empty()).then_some(e.event_id),
        user_id: (!e.user_id.is_empty()).then_some(e.user_id),
        value: e.value,
        attributes: e.attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(payload: &[u8]) -> Event {
        Event {
            device_id: "dev-1".into(),
            timestamp: 1_700_000_000_123,
            payload: Bytes::copy_from_slice(payload),
            event_type: "purchase".into(),
            event_id: Some("id-\u{e9}\n".into()),
            user_id: Some("u1".into()),
            value: -0.1,
            attributes: [
                ("region".to_string(), "eu".to_string()),
                ("k".to_string(), "x".repeat(300)),
            ]
            .into(),
        }
    }

    #[test]
    fn stored_events_read_back_with_every_field() {
        let payloads: [&[u8]; 4] = [
            b"",
            br#"{"seq":1,"temp":21.5}"#,
            &[0, 159, 146, 150],
            &[7; 200],
        ];
        for payload in payloads {
            let e = event(payload);
            let mut stored = Vec::new();
            encode(&e, &mut stored);
            assert_ne!(stored[0], b'{');
            assert_eq!(decode("dev-1", &stored), Some(e.clone()));
            // prost reads it as the Packet the event came from, less the device.
            let mut packet = Packet::from(&e);
            packet.device_id.clear();
            assert_eq!(Packet::decode(&stored[..]).unwrap(), packet);
            assert_eq!(stored.len(), packet.encoded_len());
        }
    }

    #[test]
    fn empty_optional_fields_stay_empty() {
        let e = Event {
            event_id: None,
            user_id: None,
            value: 0.0,
            attributes: Default::default(),
            ..event(b"")
        };
        let mut stored = Vec::new();
        encode(&e, &mut stored);
        assert_eq!(decode("dev-1", &stored), Some(e));
    }

    #[test]
    fn values_of_the_json_form_are_read_too() {
        let json =
            br#"{"deviceId":"dev-1","timestamp":5,"payload":{"t":1},"eventType":"x","value":2.5}"#;
        let e = decode("dev-1", json).unwrap();
        assert_eq!(
            (e.timestamp, e.value, &e.payload[..]),
            (5, 2.5, &br#"{"t":1}"#[..])
        );
        assert_eq!((e.event_id, e.user_id), (None, None));
        assert_eq!(decode("dev-1", b"{not json"), None);
        assert_eq!(decode("dev-1", &[0xff, 0xff]), None);
    }
}

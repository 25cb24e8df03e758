//! The rules an event must pass, as a pure function of the event, the limits
//! and the current time.
//!
//! A broken rule gives a [`Rejection`]: a stable `reason` (the label of the
//! `telemetry_ingest_rejected_total` metric and the key of
//! `Ack.rejected_by_reason`), the JSON field name, and a message that names
//! the field and the rule. Every reason and message comes from here, for
//! both transports: [`validate`] checks a `Packet` or a JSON event once read,
//! [`validate_json`] also reads the JSON (HTTP), rejecting an element that
//! is not an event at all like any other.

use std::fmt;

use telemetry_proto::json::EventJson;

use crate::event::{Event, PayloadNotBase64, RawEvent, UNKNOWN_EVENT_TYPE};
use crate::limits::{ATTRIBUTE_KEY_MAX_LEN, ATTRIBUTE_VALUE_MAX_LEN, DEVICE_ID_MAX_LEN, Limits};

/// Why one event was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable reason, e.g. `device_id.invalid_chars`.
    pub reason: &'static str,
    /// The JSON field, e.g. `deviceId`.
    pub field: &'static str,
    /// What rule was broken, for people.
    pub message: String,
}

/// A JSON event that cannot be read as one: malformed JSON, an unknown
/// field, a value of the wrong type (HTTP only; protobuf decodes or fails the
/// whole call).
pub const JSON_INVALID: &str = "json.invalid";
/// A JSON event whose `payload` is a string that is not base64.
pub const PAYLOAD_INVALID: &str = "payload.invalid";

impl Rejection {
    /// Whether the event could not even be read ([`JSON_INVALID`],
    /// [`PAYLOAD_INVALID`]) rather than broke a rule once read: a single
    /// HTTP event like that is a bad request (400), not an unprocessable
    /// event (422).
    pub fn is_unreadable(&self) -> bool {
        matches!(self.reason, JSON_INVALID | PAYLOAD_INVALID)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn reject(reason: &'static str, field: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        field,
        message: message.into(),
    }
}

fn valid_device_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-')
}

/// Reads one event in its JSON form (see [`EventJson`]) and checks it like
/// [`validate`].
pub fn validate_json(json: &[u8], limits: &Limits, now_ms: i64) -> Result<Event, Rejection> {
    validate(read_json(json)?, limits, now_ms)
}

fn read_json(json: &[u8]) -> Result<RawEvent, Rejection> {
    let event: EventJson = serde_json::from_slice(json).map_err(|e| {
        reject(
            JSON_INVALID,
            "event",
            format!("must be a JSON object with the fields of an event: {e}"),
        )
    })?;
    RawEvent::try_from(event).map_err(|PayloadNotBase64| {
        reject(
            PAYLOAD_INVALID,
            "payload",
            "a string payload must be base64; send other JSON values as they are",
        )
    })
}

/// Checks one event; `now_ms` is the server's clock in unix milliseconds.
pub fn validate(raw: RawEvent, limits: &Limits, now_ms: i64) -> Result<Event, Rejection> {
    if raw.device_id.is_empty() {
        return Err(reject("device_id.missing", "deviceId", "is required"));
    }
    if raw.device_id.len() > DEVICE_ID_MAX_LEN {
        return Err(reject(
            "device_id.too_long",
            "deviceId",
            format!(
                "must be at most {DEVICE_ID_MAX_LEN} characters (got {})",
                raw.device_id.len()
            ),
        ));
    }
    if !raw.device_id.bytes().all(valid_device_char) {
        return Err(reject(
            "device_id.invalid_chars",
            "deviceId",
            "may only contain letters, digits, '.', '_', ':' and '-'",
        ));
    }
    if raw.timestamp <= 0 {
        return Err(reject(
            "timestamp.missing",
            "timestamp",
            "is required: unix milliseconds greater than 0",
        ));
    }
    if raw.timestamp > now_ms.saturating_add(limits.max_future_skew_ms) {
        return Err(reject(
            "timestamp.in_future",
            "timestamp",
            format!(
                "is {} ms ahead of the server clock; at most {} ms is allowed",
                raw.timestamp - now_ms,
                limits.max_future_skew_ms
            ),
        ));
    }
    if raw.timestamp < now_ms.saturating_sub(limits.max_past_age_ms) {
        return Err(reject(
            "timestamp.too_old",
            "timestamp",
            format!(
                "is older than the allowed {} s",
                limits.max_past_age_ms / 1000
            ),
        ));
    }
    if raw.payload.len() > limits.max_payload_bytes {
        return Err(reject(
            "payload.too_large",
            "payload",
            format!(
                "is {} bytes; at most {} bytes are allowed",
                raw.payload.len(),
                limits.max_payload_bytes
            ),
        ));
    }
    check_ident(&raw.event_type, "event_type.invalid", "eventType", limits)?;
    check_ident(&raw.event_id, "event_id.invalid", "eventId", limits)?;
    check_ident(&raw.user_id, "user_id.invalid", "userId", limits)?;
    if !raw.value.is_finite() {
        return Err(reject(
            "value.not_finite",
            "value",
            "must be a finite number",
        ));
    }
    if raw.attributes.len() > limits.max_attributes {
        return Err(reject(
            "attributes.too_many",
            "attributes",
            format!(
                "has {} entries; at most {} are allowed",
                raw.attributes.len(),
                limits.max_attributes
            ),
        ));
    }
    for (k, v) in &raw.attributes {
        if k.is_empty() || k.len() > ATTRIBUTE_KEY_MAX_LEN {
            return Err(reject(
                "attributes.invalid_key",
                "attributes",
                format!("keys must be 1 to {ATTRIBUTE_KEY_MAX_LEN} characters"),
            ));
        }
        if v.len() > ATTRIBUTE_VALUE_MAX_LEN {
            return Err(reject(
                "attributes.value_too_long",
                "attributes",
                format!("value of '{k}' must be at most {ATTRIBUTE_VALUE_MAX_LEN} characters"),
            ));
        }
    }
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    Ok(Event {
        device_id: raw.device_id,
        timestamp: raw.timestamp,
        payload: raw.payload,
        event_type: non_empty(raw.event_type).unwrap_or_else(|| UNKNOWN_EVENT_TYPE.to_string()),
        event_id: non_empty(raw.event_id),
        user_id: non_empty(raw.user_id),
        value: raw.value,
        attributes: raw.attributes,
    })
}

/// Optional identifiers: at most `max_ident_len` printable characters.
fn check_ident(
    value: &str,
    reason: &'static str,
    field: &'static str,
    limits: &Limits,
) -> Result<(), Rejection> {
    if value.len() > limits.max_ident_len {
        return Err(reject(
            reason,
            field,
            format!("must be at most {} characters", limits.max_ident_len),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(reject(reason, field, "must not contain control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn good() -> RawEvent {
        RawEvent {
            device_id: "sensor-1.a_b:c".into(),
            timestamp: NOW,
            event_type: "reading".into(),
            value: 1.5,
            ..Default::default()
        }
    }

    fn reason(raw: RawEvent) -> &'static str {
        validate(raw, &Limits::default(), NOW).unwrap_err().reason
    }

    #[test]
    fn valid_event_passes_and_empty_optionals_become_none() {
        let e = validate(good(), &Limits::default(), NOW).unwrap();
        assert_eq!(e.event_id, None);
        assert_eq!(e.user_id, None);
        let e = validate(
            RawEvent {
                event_type: String::new(),
                ..good()
            },
            &Limits::default(),
            NOW,
        )
        .unwrap();
        assert_eq!(e.event_type, UNKNOWN_EVENT_TYPE);
    }

    #[test]
    fn device_id_rules() {
        assert_eq!(
            reason(RawEvent {
                device_id: String::new(),
                ..good()
            }),
            "device_id.missing"
        );
        assert_eq!(
            reason(RawEvent {
                device_id: "x".repeat(129),
                ..good()
            }),
            "device_id.too_long"
        );
        assert!(
            validate(
                RawEvent {
                    device_id: "x".repeat(128),
                    ..good()
                },
                &Limits::default(),
                NOW
            )
            .is_ok()
        );
        assert_eq!(
            reason(RawEvent {
                device_id: "a b".into(),
                ..good()
            }),
            "device_id.invalid_chars"
        );
        assert_eq!(
            reason(RawEvent {
                device_id: "é".into(),
                ..good()
            }),
            "device_id.invalid_chars"
        );
    }

    #[test]
    fn timestamp_rules_use_the_skew_and_age_limits() {
        let limits = Limits::default();
        assert_eq!(
            reason(RawEvent {
                timestamp: 0,
                ..good()
            }),
            "timestamp.missing"
        );
        let ahead = NOW + limits.max_future_skew_ms;
        assert!(
            validate(
                RawEvent {
                    timestamp: ahead,
                    ..good()
                },
                &limits,
                NOW
            )
            .is_ok()
        );
        assert_eq!(
            reason(RawEvent {
                timestamp: ahead + 1,
                ..good()
            }),
            "timestamp.in_future"
        );
        let old = NOW - limits.max_past_age_ms - 1;
        assert_eq!(
            reason(RawEvent {
                timestamp: old,
                ..good()
            }),
            "timestamp.too_old"
        );
    }

    #[test]
    fn payload_limit_is_inclusive() {
        let limits = Limits {
            max_payload_bytes: 4,
            ..Limits::default()
        };
        let ok = RawEvent {
            payload: vec![0; 4].into(),
            ..good()
        };
        assert!(validate(ok, &limits, NOW).is_ok());
        let big = RawEvent {
            payload: vec![0; 5].into(),
            ..good()
        };
        let r = validate(big, &limits, NOW).unwrap_err();
        assert_eq!((r.reason, r.field), ("payload.too_large", "payload"));
        assert!(r.message.contains("at most 4 bytes"), "{}", r.message);
    }

    #[test]
    fn identifier_value_and_attribute_rules() {
        assert_eq!(
            reason(RawEvent {
                event_id: "i".repeat(129),
                ..good()
            }),
            "event_id.invalid"
        );
        assert_eq!(
            reason(RawEvent {
                user_id: "a\nb".into(),
                ..good()
            }),
            "user_id.invalid"
        );
        assert_eq!(
            reason(RawEvent {
                event_type: "t".repeat(200),
                ..good()
            }),
            "event_type.invalid"
        );
        assert_eq!(
            reason(RawEvent {
                value: f64::NAN,
                ..good()
            }),
            "value.not_finite"
        );
        let many = (0..33).map(|i| (format!("k{i}"), "v".into())).collect();
        assert_eq!(
            reason(RawEvent {
                attributes: many,
                ..good()
            }),
            "attributes.too_many"
        );
        let long = [("k".to_string(), "v".repeat(257))].into();
        assert_eq!(
            reason(RawEvent {
                attributes: long,
                ..good()
            }),
            "attributes.value_too_long"
        );
    }

    fn json_reason(json: &str) -> Rejection {
        validate_json(json.as_bytes(), &Limits::default(), NOW).unwrap_err()
    }

    #[test]
    fn json_event_is_read_then_checked_by_the_same_rules() {
        let e = validate_json(
            br#"{"deviceId":"d-1","timestamp":1700000000000,"payload":{"t":1},"value":2.5}"#,
            &Limits::default(),
            NOW,
        )
        .unwrap();
        assert_eq!((e.device_id.as_str(), e.value), ("d-1", 2.5));
        assert_eq!(&e.payload[..], br#"{"t":1}"#);
        let r = json_reason(r#"{"deviceId":"a b","timestamp":1700000000000}"#);
        assert_eq!(r.reason, "device_id.invalid_chars");
        assert!(!r.is_unreadable());
    }

    #[test]
    fn json_that_is_not_an_event_is_rejected_as_unreadable() {
        for json in [
            "{",
            "null",
            "42",
            r#"{"deviceId":"d","devcie":1}"#,
            r#"{"deviceId":"d","timestamp":"soon"}"#,
        ] {
            let r = json_reason(json);
            assert_eq!((r.reason, r.field), (JSON_INVALID, "event"), "{json}");
            assert!(r.is_unreadable(), "{json}");
            assert!(
                r.to_string()
                    .starts_with("event: must be a JSON object with the fields of an event: "),
                "{r}"
            );
        }
        assert!(json_reason(r#"{"devcie":1}"#).message.contains("devcie"));
        let r = json_reason(r#"{"deviceId":"d","timestamp":1700000000000,"payload":"no!"}"#);
        assert_eq!((r.reason, r.field), (PAYLOAD_INVALID, "payload"));
        assert!(r.is_unreadable());
        assert_eq!(
            r.to_string(),
            "payload: a string payload must be base64; send other JSON values as they are"
        );
    }

    #[test]
    fn message_names_field_and_rule() {
        let r = validate(
            RawEvent {
                device_id: "a b".into(),
                ..good()
            },
            &Limits::default(),
            NOW,
        )
        .unwrap_err();
        assert_eq!(
            r.to_string(),
            "deviceId: may only contain letters, digits, '.', '_', ':' and '-'"
        );
    }
}

//! How large an event may be: the [`Limits`] that [`crate::validate`] checks
//! against, with the defaults of the `--max-*` flags that set them
//! ([`crate::config`] reads these; neither module is read here).

/// Longest `deviceId`, in bytes (the key of per-device counters).
pub const DEVICE_ID_MAX_LEN: usize = 128;
/// Longest `eventType`, `eventId` or `userId`, in bytes.
pub const IDENT_MAX_LEN: usize = 128;
/// Longest attribute key, in bytes.
pub const ATTRIBUTE_KEY_MAX_LEN: usize = 64;
/// Longest attribute value, in bytes.
pub const ATTRIBUTE_VALUE_MAX_LEN: usize = 256;

pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_FUTURE_SKEW_SECONDS: u64 = 300;
pub const DEFAULT_MAX_PAST_AGE_SECONDS: u64 = 30 * 24 * 3600;
pub const DEFAULT_MAX_ATTRIBUTES: usize = 32;

/// Validation limits (see the `--max-*` flags).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_payload_bytes: usize,
    pub max_future_skew_ms: i64,
    pub max_past_age_ms: i64,
    pub max_attributes: usize,
    pub max_ident_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_future_skew_ms: DEFAULT_MAX_FUTURE_SKEW_SECONDS as i64 * 1000,
            max_past_age_ms: DEFAULT_MAX_PAST_AGE_SECONDS as i64 * 1000,
            max_attributes: DEFAULT_MAX_ATTRIBUTES,
            max_ident_len: IDENT_MAX_LEN,
        }
    }
}

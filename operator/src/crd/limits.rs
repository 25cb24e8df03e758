//! `spec.ingest.limits`: what one client may hold of an ingest pod. Each
//! field sets one `telemetry-ingest` flag; a field left out keeps that
//! flag's default (docs/ingest.md, "Connection limits").

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Limits on the connections, streams, request bodies and gRPC messages of
/// each ingest pod. Unset fields keep the ingest server's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct IngestLimits {
    /// Largest HTTP request body, in bytes; a larger one is answered
    /// 413 Payload Too Large and nothing of it is stored. Default 67108864
    /// (64 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 1073741824))]
    pub http_max_body_bytes: Option<i64>,

    /// Seconds an HTTP/1 client has to send a whole request head (request
    /// line and headers), and a keep-alive connection to start its next
    /// request; the connection is closed after it. Default 10.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub http_header_read_timeout_seconds: Option<i32>,

    /// Seconds a connection (gRPC or HTTP) may carry no bytes either way
    /// before it is closed. Default 300.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub idle_timeout_seconds: Option<i32>,

    /// Open connections per pod and listener (gRPC and HTTP each), at most;
    /// further connections wait in the listen backlog until one closes.
    /// Default 10000.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_connections: Option<i32>,

    /// Concurrent gRPC calls per connection, at most (HTTP/2
    /// SETTINGS_MAX_CONCURRENT_STREAMS). Default 1024.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub grpc_max_concurrent_streams: Option<i32>,

    /// Largest gRPC message the pods decode, in bytes; a larger one fails
    /// the call with OUT_OF_RANGE. Default 67108864 (64 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 1073741824))]
    pub grpc_max_message_bytes: Option<i64>,

    /// Seconds a gRPC client stream may send no message before the pod
    /// ends it with DEADLINE_EXCEEDED; what it sent before is stored and
    /// acknowledged. Default 60.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub grpc_stream_idle_timeout_seconds: Option<i32>,
}

impl IngestLimits {
    /// The `telemetry-ingest` environment variables of the fields that are
    /// set, in field order.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let fields: [(&'static str, Option<i64>); 7] = [
            ("TELEMETRY_HTTP_MAX_BODY_BYTES", self.http_max_body_bytes),
            (
                "TELEMETRY_HTTP_HEADER_READ_TIMEOUT_SECONDS",
                self.http_header_read_timeout_seconds.map(i64::from),
            ),
            (
                "TELEMETRY_IDLE_TIMEOUT_SECONDS",
                self.idle_timeout_seconds.map(i64::from),
            ),
            (
                "TELEMETRY_MAX_CONNECTIONS",
                self.max_connections.map(i64::from),
            ),
            (
                "TELEMETRY_GRPC_MAX_CONCURRENT_STREAMS",
                self.grpc_max_concurrent_streams.map(i64::from),
            ),
            (
                "TELEMETRY_GRPC_MAX_MESSAGE_BYTES",
                self.grpc_max_message_bytes,
            ),
            (
                "TELEMETRY_GRPC_STREAM_IDLE_TIMEOUT_SECONDS",
                self.grpc_stream_idle_timeout_seconds.map(i64::from),
            ),
        ];
        fields
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?.to_string())))
            .collect()
    }
}

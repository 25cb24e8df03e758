//! The `telemetry.v1` wire contract: the generated protobuf types, and the
//! JSON bodies of the HTTP API that mirror them.
//!
//! `build.rs` compiles `proto/telemetry/v1/telemetry.proto` (no system protoc
//! needed) into prost messages and tonic services. Every generated protobuf
//! type of the workspace lives here; other crates convert at their edges.
//!
//! - [`v1`]: messages, `telemetry_ingest_{client,server}` and
//!   `telemetry_query_{client,server}`.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC reflection.
//! - [`json`]: the HTTP API's JSON bodies (events, acks, query answers), one
//!   definition for the server and its clients.

pub mod json;

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("telemetry.v1");
}

/// Encoded `FileDescriptorSet` of `telemetry.v1`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/telemetry_descriptor.bin"));

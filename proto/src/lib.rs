//! Generated types of the `telemetry.v1` protobuf package.
//!
//! `build.rs` compiles `proto/telemetry/v1/telemetry.proto` (no system protoc
//! needed) into prost messages and tonic services. Every generated protobuf
//! type of the workspace lives here; other crates convert at their edges.
//!
//! - [`v1`]: messages, `telemetry_ingest_{client,server}` and
//!   `telemetry_query_{client,server}`.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC reflection.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("telemetry.v1");
}

/// Encoded `FileDescriptorSet` of `telemetry.v1`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/telemetry_descriptor.bin"));

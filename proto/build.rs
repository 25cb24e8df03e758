//! Compiles `telemetry/v1/telemetry.proto` with protox (pure Rust, so the
//! build needs no system `protoc`) and generates prost messages and tonic
//! clients and servers, plus the descriptor set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "telemetry/v1/telemetry.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("telemetry_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        // The ingest keeps attributes sorted (BTreeMap); decoding into one
        // directly saves a HashMap, its SipHash and a conversion per event.
        .btree_map(".telemetry.v1.Packet.attributes")
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}

//! Compiles `proto/sluice/v1/*.proto` with protox (pure Rust, so a machine needs no `protoc`),
//! generates prost messages and tonic services, and saves the file descriptor set for reflection.

use std::path::PathBuf;

/// Responses the server sends as `wire::Encoded` messages.
const WIRE_RESPONSES: [&str; 3] = ["FetchResponse", "SubscribeResponse", "ConsumeResponse"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files =
        ["records.proto", "admin.proto", "producer.proto", "consumer.proto"].map(|f| root.join("sluice/v1").join(f));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("sluice_descriptor.bin"), prost::Message::encode_to_vec(&descriptors))?;
    tonic_prost_build::configure()
        // Payloads decode as `Bytes` slices of the receive buffer instead of copied `Vec`s.
        .bytes(".")
        // prost's codec, but each message's send buffer is allocated once (see src/codec.rs).
        .codec_path("crate::codec::SizedCodec")
        .compile_fds(descriptors.clone())?;
    // The services again, for the server: the same requests, but the responses that carry
    // records are `wire::Encoded` messages, so the broker can write stored records straight
    // into the send buffer (see src/wire.rs). Clients keep the plain types above.
    let servers = out.join("servers");
    std::fs::create_dir_all(&servers)?;
    let mut config = tonic_prost_build::configure()
        .build_client(false)
        .out_dir(&servers)
        .codec_path("crate::codec::SizedCodec")
        .extern_path(".sluice.v1", "crate::v1");
    // Produce requests keep their records in the receive buffer (see src/wire_produce.rs).
    config = config.extern_path(".sluice.v1.ProduceRequest", "crate::wire::ProduceRequest");
    for response in WIRE_RESPONSES {
        config = config.extern_path(format!(".sluice.v1.{response}"), format!("crate::wire::{response}"));
    }
    config.compile_fds(descriptors)?;
    Ok(())
}

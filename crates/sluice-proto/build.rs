//! Compiles `proto/sluice/v1/*.proto` with protox (pure Rust, so a machine needs no `protoc`),
//! generates prost messages and tonic services, and saves the file descriptor set for reflection.

use std::path::PathBuf;

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
        .compile_fds(descriptors)?;
    Ok(())
}

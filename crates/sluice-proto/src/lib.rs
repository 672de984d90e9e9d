//! Generated code for the `sluice.v1` gRPC protocol defined in `proto/sluice/v1/*.proto`.
//!
//! Nothing here is written by hand except this file, [`codec`], [`wire`] and its produce requests: messages come from prost,
//! services from tonic (using [`codec::SizedCodec`]), and [`FILE_DESCRIPTOR_SET`] feeds gRPC
//! server reflection.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

pub mod codec;
pub mod wire;
mod wire_produce;

/// The `sluice.v1` package.
pub mod v1 {
    tonic::include_proto!("sluice.v1");
}

/// Encoded `FileDescriptorSet` of the protocol, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sluice_descriptor.bin"));

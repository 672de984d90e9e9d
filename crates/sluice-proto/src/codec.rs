//! The protobuf codec every `sluice.v1` service uses: prost's, except that an encoder reserves a
//! message's exact size before writing it. tonic's default grows its send buffer step by step
//! while prost writes, so a 1 MiB Subscribe or Consume message cost about seven reallocations,
//! each copying what was written and often faulting in fresh pages.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic_prost::ProstCodec;

/// A prost codec whose encoder allocates each message's buffer once.
#[derive(Debug, Clone, Copy)]
pub struct SizedCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for SizedCodec<T, U> {
    fn default() -> Self {
        SizedCodec { _types: PhantomData }
    }
}

/// Encodes a message after reserving its encoded length.
#[derive(Debug, Clone, Copy)]
pub struct SizedEncoder<T> {
    _type: PhantomData<T>,
}

impl<T: Message> Encoder for SizedEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode(buf).map_err(|e| Status::internal(format!("encoding a message: {e}")))
    }
}

impl<T, U> Codec for SizedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = SizedEncoder<T>;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        SizedEncoder { _type: PhantomData }
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::default().decoder()
    }
}

//! Responses with fields the server encoded itself.
//!
//! A protobuf message's encoding is the concatenation of its fields' encodings, in any order.
//! [`Encoded`] is a message whose fields are those of an ordinary message plus bytes the server
//! writes directly (for example stored records, as `repeated Record` entries), so records go
//! from the read buffer into the send buffer in one copy, without building a `Record` for each
//! and encoding it again. On the wire nothing changes: clients decode the plain message.

use std::fmt;

pub use crate::wire_produce::{ProduceRequest, RecordView as ProducedRecord, RequestRecords};

use prost::Message;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType};

/// Fields a server writes in their wire encoding (tag, length, value), after checking them.
pub trait EncodedFields: Send + Sync {
    /// Bytes [`EncodedFields::write`] writes.
    fn encoded_len(&self) -> usize;
    /// Writes exactly [`EncodedFields::encoded_len`] bytes.
    fn write(&self, buf: &mut dyn BufMut);
}

/// A message `M` with extra fields written as they are. Decoding one (which only clients of
/// the generated server types would do) fills `message` and drops unknown fields, as prost does.
#[derive(Default)]
pub struct Encoded<M> {
    /// The ordinary fields.
    pub message: M,
    /// Fields written before `message`'s.
    pub fields: Option<Box<dyn EncodedFields>>,
}

impl<M> Encoded<M> {
    /// `message` with `fields` added.
    pub fn new(message: M, fields: impl EncodedFields + 'static) -> Self {
        Encoded { message, fields: Some(Box::new(fields)) }
    }
}

impl<M> From<M> for Encoded<M> {
    fn from(message: M) -> Self {
        Encoded { message, fields: None }
    }
}

impl<M: fmt::Debug> fmt::Debug for Encoded<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields = self.fields.as_ref().map(|e| e.encoded_len());
        f.debug_struct("Encoded").field("message", &self.message).field("encoded_bytes", &fields).finish()
    }
}

impl<M: Message> Message for Encoded<M> {
    fn encode_raw(&self, mut buf: &mut impl BufMut) {
        if let Some(fields) = &self.fields {
            fields.write(&mut buf);
        }
        self.message.encode_raw(buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        self.message.merge_field(tag, wire_type, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.fields.as_ref().map_or(0, |e| e.encoded_len()) + self.message.encoded_len()
    }

    fn clear(&mut self) {
        self.message.clear();
        self.fields = None;
    }
}

/// `sluice.v1.FetchResponse` as the server sends it.
pub type FetchResponse = Encoded<crate::v1::FetchResponse>;
/// `sluice.v1.SubscribeResponse` as the server sends it.
pub type SubscribeResponse = Encoded<crate::v1::SubscribeResponse>;
/// `sluice.v1.ConsumeResponse` as the server sends it.
pub type ConsumeResponse = Encoded<crate::v1::ConsumeResponse>;

/// The `sluice.v1` services as the server implements them (responses are [`Encoded`]).
pub mod servers {
    include!(concat!(env!("OUT_DIR"), "/servers/sluice.v1.rs"));
}

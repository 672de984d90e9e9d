//! Produce requests as the server decodes them: records stay in the request's receive buffer.
//!
//! prost would build a `Record` per record (with a `Bytes` and its reference count for each key
//! and value, and a `Vec` of headers) only for the broker to copy the bytes into a batch and drop
//! it. [`ProduceRequest`] takes the whole message as one `Bytes` instead and keeps, per record,
//! where its key, value and headers are. It accepts exactly what prost's decoding of
//! `sluice.v1.ProduceRequest` accepts, with the same values (a proptest holds it to that).

use prost::Message;
use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, encode_key, encode_varint, skip_field};

use crate::v1 as pb;

/// Where bytes are in the request buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn of(bytes: &[u8], span: Span) -> &[u8] {
        &bytes[span.start as usize..(span.start + span.len) as usize]
    }
}

/// One record of a request, located in the buffer.
#[derive(Debug, Clone, Copy, Default)]
struct Located {
    key: Option<Span>,
    value: Span,
    timestamp_ms: Option<i64>,
    /// The whole record, scanned again for its headers (only when it has some).
    whole: Span,
    header_count: u32,
    header_bytes: u64,
}

/// One record, borrowed from the request buffer.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// Optional key.
    pub key: Option<&'a [u8]>,
    /// The payload.
    pub value: &'a [u8],
    /// The producer's timestamp, if it set one.
    pub timestamp_ms: Option<i64>,
    /// Number of headers.
    pub header_count: usize,
    /// Bytes of all header names and values.
    pub header_bytes: u64,
    whole: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// The headers, in order, as (name, value). Names were checked to be UTF-8.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let mut rest: &[u8] = if self.header_count == 0 { &[] } else { self.whole };
        std::iter::from_fn(move || {
            while rest.has_remaining() {
                let (tag, wire_type) = decode_key(&mut rest).ok()?;
                if tag == 3 && wire_type == WireType::LengthDelimited {
                    let header = length_delimited(&mut rest).ok()?;
                    let (name, value) = parse_header(header).ok()?;
                    return Some((std::str::from_utf8(name).ok()?, value));
                }
                skip_field(wire_type, tag, &mut rest, DecodeContext::default()).ok()?;
            }
            None
        })
    }
}

/// The records of a produce request, in its receive buffer.
#[derive(Debug, Clone, Default)]
pub struct RequestRecords {
    buffer: Bytes,
    records: Vec<Located>,
}

impl RequestRecords {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when the request has no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Record `index`; panics past the end, like a slice.
    pub fn get(&self, index: usize) -> RecordView<'_> {
        let at = self.records[index];
        RecordView {
            key: at.key.map(|k| Span::of(&self.buffer, k)),
            value: Span::of(&self.buffer, at.value),
            timestamp_ms: at.timestamp_ms,
            header_count: at.header_count as usize,
            header_bytes: at.header_bytes,
            whole: Span::of(&self.buffer, at.whole),
        }
    }

    /// The records in order.
    pub fn iter(&self) -> impl Iterator<Item = RecordView<'_>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
}

/// `sluice.v1.ProduceRequest`, with its records left in the receive buffer.
#[derive(Debug, Clone, Default)]
pub struct ProduceRequest {
    /// See `sluice.v1.ProduceRequest`.
    pub request_id: u64,
    /// See `sluice.v1.ProduceRequest`.
    pub topic: String,
    /// See `sluice.v1.ProduceRequest`.
    pub partition: Option<u32>,
    /// The records, located in the buffer.
    pub records: RequestRecords,
    /// See `sluice.v1.ProduceRequest`.
    pub producer_id: Option<u64>,
    /// See `sluice.v1.ProduceRequest`.
    pub first_sequence: u64,
}

/// Why a request was refused: prost's own error where a prost function found the fault, or
/// `None` for faults found here (a length past the end, a string that is not UTF-8), whose
/// error prost gives when it decodes the same bytes (see [`refusal`]).
type Refused = Option<prost::DecodeError>;

/// The error prost's decoder gives for a request this module refused, so a client sees the
/// same status as from any prost server.
fn refusal(buffer: &[u8]) -> prost::DecodeError {
    match pb::ProduceRequest::decode(buffer) {
        Err(error) => error,
        // Not reached: the proptests hold both decoders to the same answers.
        #[allow(deprecated)]
        Ok(_) => prost::DecodeError::new("invalid produce request"),
    }
}

fn check(expected: WireType, actual: WireType) -> Result<(), Refused> {
    prost::encoding::check_wire_type(expected, actual).map_err(Some)
}

fn length_delimited<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], Refused> {
    let len = decode_varint(rest)?;
    let len = usize::try_from(len).map_err(|_| None)?;
    let (field, tail) = rest.split_at_checked(len).ok_or(None)?;
    *rest = tail;
    Ok(field)
}

fn utf8(bytes: &[u8]) -> Result<&str, Refused> {
    std::str::from_utf8(bytes).map_err(|_| None)
}

/// Where `field` (a subslice) starts in `whole`.
fn span(whole: &[u8], field: &[u8]) -> Span {
    Span { start: (field.as_ptr() as usize - whole.as_ptr() as usize) as u32, len: field.len() as u32 }
}

fn parse_header(mut rest: &[u8]) -> Result<(&[u8], &[u8]), Refused> {
    let (mut name, mut value): (&[u8], &[u8]) = (&[], &[]);
    while rest.has_remaining() {
        let (tag, wire_type) = decode_key(&mut rest)?;
        match tag {
            1 => {
                check(WireType::LengthDelimited, wire_type)?;
                name = length_delimited(&mut rest)?;
                utf8(name)?;
            }
            2 => {
                check(WireType::LengthDelimited, wire_type)?;
                value = length_delimited(&mut rest)?;
            }
            _ => skip_field(wire_type, tag, &mut rest, DecodeContext::default())?,
        }
    }
    Ok((name, value))
}

fn parse_record(buffer: &[u8], whole: &[u8]) -> Result<Located, Refused> {
    let mut record = Located { whole: span(buffer, whole), ..Located::default() };
    let mut rest = whole;
    while rest.has_remaining() {
        let (tag, wire_type) = decode_key(&mut rest)?;
        match tag {
            1 => {
                check(WireType::LengthDelimited, wire_type)?;
                record.key = Some(span(buffer, length_delimited(&mut rest)?));
            }
            2 => {
                check(WireType::LengthDelimited, wire_type)?;
                record.value = span(buffer, length_delimited(&mut rest)?);
            }
            3 => {
                check(WireType::LengthDelimited, wire_type)?;
                let (name, value) = parse_header(length_delimited(&mut rest)?)?;
                record.header_count += 1;
                record.header_bytes += (name.len() + value.len()) as u64;
            }
            4 => {
                check(WireType::Varint, wire_type)?;
                record.timestamp_ms = Some(decode_varint(&mut rest)? as i64);
            }
            5 | 6 => {
                check(WireType::Varint, wire_type)?;
                decode_varint(&mut rest)?;
            }
            _ => skip_field(wire_type, tag, &mut rest, DecodeContext::default())?,
        }
    }
    Ok(record)
}

impl ProduceRequest {
    fn parse(&mut self, buffer: Bytes) -> Result<(), Refused> {
        let mut records = std::mem::take(&mut self.records.records);
        let mut rest: &[u8] = &buffer;
        // Spans are 32-bit; tonic's message limit is far below this.
        if u32::try_from(buffer.len()).is_err() {
            return Err(None);
        }
        while rest.has_remaining() {
            let (tag, wire_type) = decode_key(&mut rest)?;
            match tag {
                1 => {
                    check(WireType::Varint, wire_type)?;
                    self.request_id = decode_varint(&mut rest)?;
                }
                2 => {
                    check(WireType::LengthDelimited, wire_type)?;
                    utf8(length_delimited(&mut rest)?)?.clone_into(&mut self.topic);
                }
                3 => {
                    check(WireType::Varint, wire_type)?;
                    self.partition = Some(decode_varint(&mut rest)? as u32);
                }
                4 => {
                    check(WireType::LengthDelimited, wire_type)?;
                    let whole = length_delimited(&mut rest)?;
                    records.push(parse_record(&buffer, whole)?);
                }
                5 => {
                    check(WireType::Varint, wire_type)?;
                    self.producer_id = Some(decode_varint(&mut rest)?);
                }
                6 => {
                    check(WireType::Varint, wire_type)?;
                    self.first_sequence = decode_varint(&mut rest)?;
                }
                _ => skip_field(wire_type, tag, &mut rest, DecodeContext::default())?,
            }
        }
        self.records = RequestRecords { buffer, records };
        Ok(())
    }

    /// The request as prost's type (copies every record; for tests and tools).
    pub fn to_message(&self) -> pb::ProduceRequest {
        let records = self
            .records
            .iter()
            .map(|r| pb::Record {
                key: r.key.map(Bytes::copy_from_slice),
                value: Bytes::copy_from_slice(r.value),
                headers: r
                    .headers()
                    .map(|(name, value)| pb::Header { name: name.to_owned(), value: Bytes::copy_from_slice(value) })
                    .collect(),
                timestamp_ms: r.timestamp_ms,
                offset: 0,
                partition: 0,
            })
            .collect();
        self.with(self.topic.clone(), records)
    }

    /// prost's type with this request's scalar fields, and `topic` and `records` as given.
    fn with(&self, topic: String, records: Vec<pb::Record>) -> pb::ProduceRequest {
        pb::ProduceRequest {
            request_id: self.request_id,
            topic,
            partition: self.partition,
            records,
            producer_id: self.producer_id,
            first_sequence: self.first_sequence,
        }
    }
}

impl Message for ProduceRequest {
    /// Records are written as they arrived; other fields as prost writes them.
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.with(self.topic.clone(), Vec::new()).encode_raw(buf);
        for record in &self.records.records {
            encode_key(4, WireType::LengthDelimited, buf);
            encode_varint(u64::from(record.whole.len), buf);
            buf.put_slice(Span::of(&self.records.buffer, record.whole));
        }
    }

    fn merge(&mut self, mut buf: impl Buf) -> Result<(), prost::DecodeError> {
        // One `Bytes` for the whole message: a slice of tonic's receive buffer, not a copy.
        let whole = buf.copy_to_bytes(buf.remaining());
        self.parse(whole.clone()).map_err(|refused| refused.unwrap_or_else(|| refusal(&whole)))
    }

    fn merge_field(
        &mut self,
        _tag: u32,
        _wire_type: WireType,
        _buf: &mut impl Buf,
        _ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Only `merge` decodes this message, whole; prost's error for a message it cannot take.
        Err(refusal(&[0x80]))
    }

    fn encoded_len(&self) -> usize {
        // The topic is counted here rather than cloned into `head`: quotas size every request.
        let head = self.with(String::new(), Vec::new());
        let topic = if self.topic.is_empty() { 0 } else { prost::encoding::string::encoded_len(2, &self.topic) };
        let records: usize = self
            .records
            .records
            .iter()
            .map(|r| 1 + prost::encoding::encoded_len_varint(u64::from(r.whole.len)) + r.whole.len as usize)
            .sum();
        head.encoded_len() + topic + records
    }

    fn clear(&mut self) {
        *self = ProduceRequest::default();
    }
}

#[cfg(test)]
#[path = "wire_produce_tests.rs"]
mod tests;

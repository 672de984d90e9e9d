//! Stored records written straight into a response's send buffer, as the `repeated Record`
//! (or `repeated GroupRecord`) entries a client decodes (see `sluice_proto::wire`).
//!
//! Building a `pb::Record` per record (two shared-buffer handles, a `Vec` of headers and a
//! `String` per header name) and having prost encode it was about a quarter of Subscribe's
//! CPU. Here each record is checked once, when the response is built, and copied once, when it
//! is sent. The bytes are those prost writes for the same `Record`: fields in number order, empty
//! values, zero offsets and zero partitions left out. A record of batch format 2 is stored as its
//! fields 1 to 4 already (`sluice_storage::record_v2`) and is copied whole; one of format 1 is
//! encoded field by field.
//!
//! Format 3 stores each record as its whole `repeated Record records = 1` entry, offset and
//! partition included (`sluice_storage::record_v3`). A Fetch or Subscribe response takes the
//! records it needs from such a batch as one run of stored bytes, without a step per record
//! beyond finding where the run starts and ends. Those entries decode to the same records, but
//! their bytes differ from prost's (padded varints, partition before offset, a zero partition
//! written).

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use prost::bytes::BufMut;
use prost::encoding::encoded_len_varint;
use sluice_core::Fetched;
use sluice_core::group::GroupDelivery;
use sluice_proto::v1 as pb;
use sluice_proto::wire::EncodedFields;
use sluice_storage::record_view::StoredRecord;
use sluice_storage::{Batch, RecordStart, RecordView};
use tonic::Status;

/// Protobuf wire type of length-delimited fields.
const LEN: u8 = 2;
/// Protobuf wire type of varints.
const VARINT: u8 = 0;

/// Which records of the batches a response carries.
#[derive(Debug)]
enum Selection {
    /// Offsets `from..until`; record `from` starts at `first` when that is known.
    Range { from: u64, until: u64, first: Option<RecordStart> },
    /// These offsets (ascending), each with its delivery attempt: `GroupRecord` entries. The
    /// walk starts at `first` when known (a small delivery from a large batch walks only its
    /// own part).
    Delivered { records: Vec<(u64, u32)>, first: Option<RecordStart> },
}

/// Stored records as entries of a repeated field.
#[derive(Debug)]
pub struct StoredRecords {
    batches: Vec<Batch>,
    selection: Selection,
    partition: u32,
    field: u8,
    /// Each selected record's `Record` length, in order: measured (walking its headers) when
    /// the response is built, so sending it does not measure again.
    record_lens: Vec<usize>,
    /// For each batch, the bytes of its selected records when they are sent as stored (format
    /// 3 entries of field 1); `None` where the records are written one by one.
    runs: Vec<Option<Range<usize>>>,
    len: usize,
    /// Bytes of runs [`StoredRecords::chunks`] sends as slices.
    sliced: usize,
}

/// What a response takes from its batches, in order: a run of stored entries (bytes of a
/// batch), or one record.
enum Piece<'a, 'b> {
    Run(&'a Batch, Range<usize>),
    Record(&'b Entry<'a>, Option<u32>),
}

/// Runs of stored entries at least this long are sent as slices of their read buffer by
/// [`StoredRecords::chunks`]; shorter pieces are copied together. Each slice becomes an HTTP/2
/// frame, written with a syscall of its own, which costs more than copying a short run.
pub const SLICE_AT_LEAST: usize = 64 * 1024;

fn key(field: u8, wire_type: u8) -> u8 {
    // Every field written here has a number below 16: its key is one byte.
    (field << 3) | wire_type
}

fn bytes_field_len(value: &[u8]) -> usize {
    if value.is_empty() { 0 } else { 1 + encoded_len_varint(value.len() as u64) + value.len() }
}

fn varint_field_len(value: u64) -> usize {
    if value == 0 { 0 } else { 1 + encoded_len_varint(value) }
}

/// Gathers the small pieces of entries (keys, lengths, short fields) and hands them to the
/// send buffer in runs: a `dyn BufMut` call per byte was a tenth of Subscribe's CPU.
struct Out<'a> {
    buf: &'a mut dyn BufMut,
    scratch: [u8; SCRATCH],
    len: usize,
}

const SCRATCH: usize = 256;

impl<'a> Out<'a> {
    fn new(buf: &'a mut dyn BufMut) -> Self {
        Out { buf, scratch: [0; SCRATCH], len: 0 }
    }

    fn flush(&mut self) {
        if self.len > 0 {
            self.buf.put_slice(&self.scratch[..self.len]);
            self.len = 0;
        }
    }

    #[inline]
    fn byte(&mut self, byte: u8) {
        if self.len == SCRATCH {
            self.flush();
        }
        self.scratch[self.len] = byte;
        self.len += 1;
    }

    #[inline]
    fn varint(&mut self, mut value: u64) {
        if self.len + 10 > SCRATCH {
            self.flush();
        }
        while value >= 0x80 {
            self.scratch[self.len] = (value as u8) | 0x80;
            self.len += 1;
            value >>= 7;
        }
        self.scratch[self.len] = value as u8;
        self.len += 1;
    }

    #[inline]
    fn slice(&mut self, bytes: &[u8]) {
        if bytes.len() <= SCRATCH - self.len {
            self.scratch[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        } else {
            self.flush();
            self.buf.put_slice(bytes);
        }
    }

    fn bytes_field(&mut self, field: u8, value: &[u8]) {
        if !value.is_empty() {
            self.byte(key(field, LEN));
            self.varint(value.len() as u64);
            self.slice(value);
        }
    }

    fn varint_field(&mut self, field: u8, value: u64) {
        if value != 0 {
            self.byte(key(field, VARINT));
            self.varint(value);
        }
    }
}

impl Drop for Out<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// One stored record to send: as stored (batch format 2), or decoded (format 1).
enum Entry<'a> {
    Stored(StoredRecord<'a>),
    Decoded(RecordView<'a>),
}

impl Entry<'_> {
    fn offset(&self) -> u64 {
        match self {
            Entry::Stored(record) => record.offset,
            Entry::Decoded(record) => record.offset,
        }
    }
}

/// Length of a `Record` message (without its own key and length).
fn record_len(record: &Entry<'_>, partition: u32) -> Result<usize, String> {
    let fields = match record {
        // Format 3: the stored entry is key byte, length, `Record`.
        Entry::Stored(StoredRecord { entry: Some(entry), .. }) => {
            let mut rest = entry.get(1..).unwrap_or_default();
            let len = prost::encoding::decode_varint(&mut rest).map_err(|_| "stored entry has no length")?;
            return Ok(len as usize);
        }
        Entry::Stored(record) => record.fields.len(),
        Entry::Decoded(record) => v1_fields_len(record)?,
    };
    Ok(fields + varint_field_len(record.offset()) + varint_field_len(u64::from(partition)))
}

/// Length of fields 1 to 4 of a record stored in batch format 1.
fn v1_fields_len(record: &RecordView<'_>) -> Result<usize, String> {
    let mut len = record.key.map_or(0, |k| 1 + encoded_len_varint(k.len() as u64) + k.len());
    len += bytes_field_len(record.value);
    for header in record.headers() {
        let header = header?;
        let inner = bytes_field_len(header.name) + bytes_field_len(header.value);
        len += 1 + encoded_len_varint(inner as u64) + inner;
    }
    // `optional int64 timestamp_ms`: present even when 0; negative values take ten bytes.
    len += 1 + encoded_len_varint(record.timestamp as u64);
    Ok(len)
}

fn put_record(out: &mut Out<'_>, record: &Entry<'_>, partition: u32, len: usize) {
    if let Entry::Stored(StoredRecord { entry: Some(entry), .. }) = record {
        // Format 3 stores the length and the whole `Record`, offset and partition included.
        out.slice(&entry[1..]);
        return;
    }
    out.varint(len as u64);
    // Batch format 2 stores fields 1 to 4 as prost writes them; prost writes 5 and 6 last.
    match record {
        Entry::Stored(record) => out.slice(record.fields),
        Entry::Decoded(record) => put_v1_fields(out, record),
    }
    out.varint_field(5, record.offset());
    out.varint_field(6, u64::from(partition));
}

/// Calls `f` with each record of `batch` from `start` on (or from its first), until `f` returns
/// false; returns false if it did.
fn walk(
    batch: &Batch,
    start: Option<RecordStart>,
    mut f: impl FnMut(Entry<'_>) -> Result<bool, String>,
) -> Result<bool, String> {
    if let Some(stored) = batch.stored_from(start) {
        for record in stored {
            if !f(Entry::Stored(record?))? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    let views = match start {
        Some(start) => batch.views_from(start),
        None => batch.views(),
    };
    for record in views {
        if !f(Entry::Decoded(record?))? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn put_v1_fields(out: &mut Out<'_>, record: &RecordView<'_>) {
    if let Some(k) = record.key {
        out.byte(key(1, LEN));
        out.varint(k.len() as u64);
        out.slice(k);
    }
    out.bytes_field(2, record.value);
    for header in record.headers().flatten() {
        out.byte(key(3, LEN));
        out.varint((bytes_field_len(header.name) + bytes_field_len(header.value)) as u64);
        out.bytes_field(1, header.name);
        out.bytes_field(2, header.value);
    }
    out.byte(key(4, VARINT));
    out.varint(record.timestamp as u64);
}

/// `first`, if it lies in `batch` or after it.
fn first_in(batch: &Batch, first: &Option<RecordStart>) -> Option<RecordStart> {
    first.filter(|f| batch.base_offset() <= f.offset)
}

/// The bytes of `batch` holding its records in `from..until`, if it stores them as whole
/// entries (format 3); `None` for older formats.
fn run_of(batch: &Batch, start: Option<RecordStart>, from: u64, until: u64) -> Result<Option<Range<usize>>, String> {
    let Some(stored) = batch.stored_from(start) else { return Ok(None) };
    if from <= batch.base_offset() && batch.next_offset() <= until {
        let mut stored = batch.stored_from(None).into_iter().flatten();
        // The whole batch: its body is its records' entries, back to back. The log checked each
        // when it stamped them, and the checksum says these are those bytes; the first one's
        // offset is checked against the header here.
        let first = stored.next().transpose()?;
        return Ok(match first.and_then(|record| record.entry.map(|entry| (record, entry))) {
            Some((record, _)) if record.offset == batch.base_offset() => {
                Some(sluice_storage::codec::BATCH_HEADER_BYTES..batch.as_bytes().len())
            }
            _ => None,
        });
    }
    let base = batch.as_bytes().as_ptr() as usize;
    let mut run: Option<Range<usize>> = None;
    for record in stored {
        let record = record?;
        if record.offset >= until {
            break;
        }
        let Some(entry) = record.entry else { return Ok(None) };
        if record.offset >= from {
            let at = entry.as_ptr() as usize - base;
            let end = at + entry.len();
            run = Some(run.map_or(at..end, |r| r.start..end));
        }
    }
    Ok(Some(run.unwrap_or(0..0)))
}

/// Length of one entry's value: a `Record`, or a `GroupRecord` holding one.
fn entry_len(record_len: usize, attempt: Option<u32>) -> usize {
    match attempt {
        None => record_len,
        Some(attempt) => 1 + encoded_len_varint(record_len as u64) + record_len + varint_field_len(u64::from(attempt)),
    }
}

impl StoredRecords {
    /// The records of a read, as `repeated Record records = field`.
    pub fn read(fetched: &Fetched, field: u8) -> Result<Self, Status> {
        let selection = Selection::Range { from: fetched.from, until: fetched.until, first: fetched.first };
        Self::new(fetched.batches.clone(), selection, fetched.partition, field)
    }

    /// The records of a group delivery, as `repeated GroupRecord records = field`.
    pub fn delivered(delivery: &GroupDelivery, field: u8) -> Result<Self, Status> {
        let selection = Selection::Delivered { records: delivery.records.clone(), first: delivery.first };
        Self::new(delivery.batches.clone(), selection, delivery.tp.partition, field)
    }

    fn new(batches: Vec<Batch>, selection: Selection, partition: u32, field: u8) -> Result<Self, Status> {
        let undecodable = |reason: String| {
            tracing::error!(partition, %reason, "undecodable record in a checksummed batch");
            Status::internal("stored record could not be decoded; see the broker log")
        };
        let runs = match &selection {
            Selection::Range { from, until, first } if field == 1 => batches
                .iter()
                .map(|batch| run_of(batch, first_in(batch, first), *from, *until))
                .collect::<Result<_, _>>()
                .map_err(undecodable)?,
            _ => vec![None; batches.len()],
        };
        let mut records =
            StoredRecords { batches, selection, partition, field, record_lens: Vec::new(), runs, len: 0, sliced: 0 };
        let (mut len, mut sliced, mut record_lens) = (0, 0, Vec::new());
        records
            .visit(|piece| {
                match piece {
                    Piece::Run(_, run) => {
                        len += run.len();
                        if run.len() >= SLICE_AT_LEAST {
                            sliced += run.len();
                        }
                    }
                    Piece::Record(record, attempt) => {
                        let record_len = record_len(record, partition)?;
                        let entry = entry_len(record_len, attempt);
                        len += 1 + encoded_len_varint(entry as u64) + entry;
                        record_lens.push(record_len);
                    }
                }
                Ok(())
            })
            .map_err(undecodable)?;
        records.len = len;
        records.sliced = sliced;
        records.record_lens = record_lens;
        Ok(records)
    }

    /// Calls `f` with each selected record (or run of them), in offset order, and each record's
    /// delivery attempt if the selection is a delivery.
    fn visit(&self, mut f: impl FnMut(Piece<'_, '_>) -> Result<(), String>) -> Result<(), String> {
        let start = first_in;
        match &self.selection {
            Selection::Range { from, until, first } => {
                for (batch, run) in self.batches.iter().zip(&self.runs).filter(|(b, _)| b.next_offset() > *from) {
                    if let Some(run) = run {
                        f(Piece::Run(batch, run.clone()))?;
                        if batch.next_offset() >= *until {
                            return Ok(());
                        }
                        continue;
                    }
                    let more = walk(batch, start(batch, first), |record| {
                        let offset = record.offset();
                        if offset >= *from && offset < *until {
                            f(Piece::Record(&record, None))?;
                        }
                        Ok(offset < *until)
                    })?;
                    if !more {
                        return Ok(());
                    }
                }
            }
            Selection::Delivered { records: wanted, first } => {
                let mut wanted = wanted.iter().peekable();
                for batch in self.batches.iter().filter(|b| first.is_none_or(|f| b.next_offset() > f.offset)) {
                    let more = walk(batch, start(batch, first), |record| {
                        let Some(&&(offset, attempt)) = wanted.peek() else { return Ok(false) };
                        if record.offset() == offset {
                            wanted.next();
                            f(Piece::Record(&record, Some(attempt)))?;
                        }
                        Ok(true)
                    })?;
                    if !more {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}

impl EncodedFields for StoredRecords {
    fn encoded_len(&self) -> usize {
        self.len
    }

    fn write(&self, buf: &mut dyn BufMut) {
        let mut out = Out::new(buf);
        let mut lens = self.record_lens.iter().copied();
        // Every record was decoded when the response was built, from the same immutable
        // batches: this pass meets no error, visits the records measured then, in the same
        // order, and writes exactly `len` bytes.
        let _checked_when_built = self.visit(|piece| self.put_piece(&mut out, piece, &mut lens));
    }
}

impl StoredRecords {
    fn put_piece(
        &self,
        out: &mut Out<'_>,
        piece: Piece<'_, '_>,
        lens: &mut impl Iterator<Item = usize>,
    ) -> Result<(), String> {
        let (record, attempt) = match piece {
            Piece::Run(batch, run) => {
                out.slice(&batch.as_bytes()[run]);
                return Ok(());
            }
            Piece::Record(record, attempt) => (record, attempt),
        };
        let len = lens.next().ok_or("more records than when the response was built")?;
        out.byte(key(self.field, LEN));
        match attempt {
            None => put_record(out, record, self.partition, len),
            Some(attempt) => {
                out.varint(entry_len(len, Some(attempt)) as u64);
                out.byte(key(1, LEN));
                put_record(out, record, self.partition, len);
                out.varint_field(2, u64::from(attempt));
            }
        }
        Ok(())
    }

    /// Bytes [`StoredRecords::chunks`] copies (the rest it sends as slices).
    pub fn copied_len(&self) -> usize {
        self.len - self.sliced
    }

    /// The bytes [`EncodedFields::write`] writes, as chunks to send back to back: runs of at
    /// least [`SLICE_AT_LEAST`] stored bytes as slices of their batches (not copied), the rest
    /// copied into `buf`, which is split off into `out` wherever a slice follows.
    pub fn chunks(&self, buf: &mut BytesMut, out: &mut Vec<Bytes>) {
        let mut lens = self.record_lens.iter().copied();
        let _checked_when_built = self.visit(|piece| match piece {
            Piece::Run(batch, run) if run.len() >= SLICE_AT_LEAST => {
                if !buf.is_empty() {
                    out.push(buf.split().freeze());
                }
                out.push(batch.as_bytes().slice(run));
                Ok(())
            }
            piece => self.put_piece(&mut Out::new(buf), piece, &mut lens),
        });
        if !buf.is_empty() {
            out.push(buf.split().freeze());
        }
    }
}

/// `ConsumeResponse.records` (field 3): a `GroupRecords` whose records are stored ones.
#[derive(Debug)]
pub struct DeliveredRecords {
    /// Every field but `records`.
    pub meta: pb::GroupRecords,
    records: StoredRecords,
}

impl DeliveredRecords {
    /// A delivery for the wire.
    pub fn new(delivery: &GroupDelivery) -> Result<Self, Status> {
        let meta = pb::GroupRecords {
            topic: delivery.tp.topic.to_string(),
            partition: delivery.tp.partition,
            generation: delivery.generation,
            records: Vec::new(),
            throttle_ms: 0,
        };
        Ok(DeliveredRecords { meta, records: StoredRecords::delivered(delivery, 4)? })
    }

    fn inner_len(&self) -> usize {
        prost::Message::encoded_len(&self.meta) + self.records.len
    }
}

impl EncodedFields for DeliveredRecords {
    fn encoded_len(&self) -> usize {
        let inner = self.inner_len();
        1 + encoded_len_varint(inner as u64) + inner
    }

    fn write(&self, mut buf: &mut dyn BufMut) {
        let mut out = Out::new(buf);
        out.byte(key(3, LEN));
        out.varint(self.inner_len() as u64);
        drop(out);
        self.records.write(buf);
        prost::Message::encode_raw(&self.meta, &mut buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;
    use prost::Message;
    use sluice_core::group::TopicPartition;
    use sluice_proto::wire::Encoded;
    use sluice_storage::{BatchBuilder, HeaderRef, RecordRef};

    type Spec = (i64, Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>);

    /// Batches of `per_batch` records from `base` on, in format `version`, of `partition`.
    fn batches(records: &[Spec], per_batch: usize, base: u64, version: u8, partition: u32) -> Vec<Batch> {
        let mut out = Vec::new();
        let mut offset = base;
        for chunk in records.chunks(per_batch) {
            let mut builder = match version {
                1 => BatchBuilder::format_v1(),
                2 => BatchBuilder::format_v2(),
                _ => BatchBuilder::default(),
            };
            for (timestamp, key, value, headers) in chunk {
                let headers: Vec<HeaderRef<'_>> =
                    headers.iter().map(|(name, value)| HeaderRef { name, value }).collect();
                builder
                    .push(&RecordRef { timestamp: *timestamp, key: key.as_deref(), value, headers: &headers })
                    .unwrap();
            }
            let bytes = builder.finish().unwrap().into_stored_bytes(offset, partition).unwrap();
            offset += chunk.len() as u64;
            out.push(Batch::from_verified_bytes(Bytes::from(bytes)).unwrap());
        }
        out
    }

    /// The records as the server built them before: one `pb::Record` each, encoded by prost.
    /// Where record `offset` starts, as a group read records it.
    fn first_start(batches: &[Batch], offset: Option<u64>) -> Option<RecordStart> {
        batches.iter().flat_map(|b| b.views().flatten().map(|v| v.start())).find(|s| Some(s.offset) == offset)
    }

    fn reference(batches: &[Batch], partition: u32, keep: impl Fn(u64) -> Option<u32>) -> Vec<pb::GroupRecord> {
        let mut out = Vec::new();
        for batch in batches {
            for record in batch.records() {
                let record = record.unwrap();
                if let Some(attempt) = keep(record.offset) {
                    let record = crate::convert::record(record, partition).unwrap();
                    out.push(pb::GroupRecord { record: Some(record), delivery_attempt: attempt });
                }
            }
        }
        out
    }

    fn spec() -> impl Strategy<Value = Vec<Spec>> {
        let header = ("[a-z-]{0,6}|é", proptest::collection::vec(any::<u8>(), 0..6));
        let record = (
            prop_oneof![Just(0i64), Just(-1i64), any::<i64>()],
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(header, 0..3),
        );
        proptest::collection::vec(record, 1..40)
    }

    proptest! {
        #[test]
        fn a_read_carries_its_records_byte_for_byte_as_prost_before_format_3(
            records in spec(), per_batch in 1usize..8, base in prop_oneof![Just(0u64), 1u64..1 << 40],
            partition in prop_oneof![Just(0u32), any::<u32>()], cut in any::<(u16, u16)>(), version in 1..=3u8,
        ) {
            let batches = batches(&records, per_batch, base, version, partition);
            let n = records.len() as u64;
            let from = base + u64::from(cut.0) % n;
            let until = if cut.1 % 3 == 0 { u64::MAX } else { from + u64::from(cut.1) % (base + n - from) + 1 };
            // Half the reads know where `from` starts (a subscription's cut batch), half walk.
            let first = if cut.0 % 2 == 0 { first_start(&batches, Some(from)) } else { None };
            let fetched = Fetched { partition, batches: batches.clone(), from, until, start_offset: base, end_offset: base + n, first };
            let message = pb::SubscribeResponse { records: Vec::new(), end_offset: base + n, throttle_ms: 7 };
            let encoded = Encoded::new(message, StoredRecords::read(&fetched, 1).unwrap());
            let expected = pb::SubscribeResponse {
                records: reference(&batches, partition, |o| (o >= from && o < until).then_some(0))
                    .into_iter().filter_map(|r| r.record).collect(),
                end_offset: base + n,
                throttle_ms: 7,
            };
            let bytes = encoded.encode_to_vec();
            prop_assert_eq!(bytes.len(), encoded.encoded_len());
            // Format 3 entries are sent as stored: the same records, other bytes than prost's.
            if version < 3 {
                prop_assert_eq!(&bytes, &expected.encode_to_vec());
            }
            prop_assert_eq!(pb::SubscribeResponse::decode(&bytes[..]).unwrap(), expected);
        }

        #[test]
        fn a_delivery_is_encoded_exactly_as_prost_encodes_its_group_records(
            records in spec(), per_batch in 1usize..8, picks in proptest::collection::vec(any::<(bool, u32)>(), 40),
            version in 1..=3u8,
        ) {
            let batches = batches(&records, per_batch, 100, version, 3);
            let listed: Vec<(u64, u32)> = (0..records.len() as u64)
                .filter(|i| picks[*i as usize].0)
                .map(|i| (100 + i, picks[i as usize].1 % 5))
                .collect();
            let delivery = GroupDelivery {
                tp: TopicPartition { topic: "orders".into(), partition: 3 },
                generation: 9,
                batches: batches.clone(),
                records: listed.clone(),
                first: first_start(&batches, listed.first().map(|(o, _)| *o)),
            };
            let mut fields = DeliveredRecords::new(&delivery).unwrap();
            fields.meta.throttle_ms = 11;
            let encoded = Encoded::new(pb::ConsumeResponse { response: None }, fields);
            let attempt = |o: u64| listed.iter().find(|(offset, _)| *offset == o).map(|(_, a)| *a);
            let expected = pb::ConsumeResponse {
                response: Some(pb::consume_response::Response::Records(pb::GroupRecords {
                    topic: "orders".into(),
                    partition: 3,
                    generation: 9,
                    records: reference(&batches, 3, attempt),
                    throttle_ms: 11,
                })),
            };
            let bytes = encoded.encode_to_vec();
            prop_assert_eq!(bytes.len(), encoded.encoded_len());
            prop_assert_eq!(pb::ConsumeResponse::decode(&bytes[..]).unwrap(), expected);
        }
    }
}

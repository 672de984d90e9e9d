//! A group's durable state: `<data_dir>/groups/<group>.group`, replaced atomically (write to a
//! temporary file, fsync, rename, fsync the directory) every `commit_interval` while it
//! changes, when an operator resets it, and at shutdown. It holds the settings and, per
//! partition, the committed offset and the acked ranges above it. It never grows with the log:
//! acked runs collapse into ranges and everything below the committed offset is one number.
//!
//! Little-endian layout (version 5; version 1 to 4 files, without the fields marked v2 to v5,
//! still load):
//!
//! ```text
//! size  field
//! 4     magic "SLGS"
//! 1     version (2)
//! 1     reset policy: 0 earliest, 1 latest
//! 8     ack timeout in ms
//! v2:   4 max delivery attempts (0: the topic's or broker's), 8 backoff initial ms,
//!       8 backoff multiplier (f64 bits), 8 backoff max ms, 1 strict ordering (0/1),
//!       v3: 1 skip damaged records (0/1),
//!       v5: 1 delivery mode (0 partition-owned, 1 shared),
//!       2+N dead-letter topic template (empty: the topic's or broker's)
//! 4     partition count P
//! then P times:
//!   2+T topic name (length, UTF-8)
//!   4   partition
//!   8   committed offset
//!   4   acked range count R, then 16*R: start, end (exclusive)
//!   v2: 4 redriven offset count K, then 8*K: offsets that were redriven and are not done yet
//!       (the acked ranges count them as done: their dead-letter copy was); up to v3 only those
//!       below the committed offset were kept
//!   v2: 4 count A, then 12*A: offset (8) and deliveries made (4) of each record delivered and
//!       not done, so a restart does not reset how often it has been tried
//!   v4: 4 count B, then 16*B: offset (8) and the wall-clock time in ms (8) until which a
//!       failed record waits before its next delivery, so a restart keeps its backoff
//!   v5: 4 count E, then E times: offset (8), deliveries (4), failure reason (2+N), first and
//!       last failure ms (8 + 8), position in batch (4, u32::MAX: unknown) of each record whose
//!       dead-letter copy was being written, so a restart goes on writing it
//! v2: 4 dead-letter count D, then D times: 2+T dead-letter topic, 4 partition, 8 offset,
//!       2+T source topic, 4 source partition, 8 source offset, 8 dead-lettered at (ms);
//!       from v5 always 0: dead letters live in the dead-letter journal ([`super::journal`])
//! v5: 8 journal sequence: the dead-letter journal's changes below it are reflected here
//! 4     CRC-32 of everything before it
//! ```
//!
//! Dead letters are this group's records in dead-letter topics that were not redriven: their
//! count is the group's dead-letter depth, and a redrive removes them, so none is redriven twice.
//! Up to v4 they were in this file, rewritten whole on every flush; a v4 file's dead letters
//! move to the journal at the first flush.

use std::sync::Arc;
use std::time::Duration;

use super::acks::AckSet;
use super::backoff::RetryPolicy;
use super::types::{DeadLettered, DeliveryMode, Failure, GroupSettings, OffsetReset, TopicPartition};

const MAGIC: &[u8; 4] = b"SLGS";
const VERSION: u8 = 5;

/// A record whose dead-letter copy was being written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetteringSnapshot {
    /// Its offset.
    pub offset: u64,
    /// Deliveries made.
    pub attempts: u32,
    /// Why it failed.
    pub failure: Failure,
    /// Where it starts in its batch, if known.
    pub position: Option<u32>,
}

/// One partition in a group file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSnapshot {
    /// The partition.
    pub tp: TopicPartition,
    /// Committed offset and acked ranges.
    pub acks: AckSet,
    /// Redriven offsets (below the committed offset) still to process.
    pub redriven: Vec<u64>,
    /// Deliveries made of records not done yet, by offset.
    pub attempts: Vec<(u64, u32)>,
    /// Records waiting out a backoff: offset and until when (ms since the Unix epoch).
    pub backoffs: Vec<(u64, i64)>,
    /// Records whose dead-letter copy was being written.
    pub dead_lettering: Vec<DeadLetteringSnapshot>,
}

/// What a group file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSnapshot {
    /// Group settings.
    pub settings: GroupSettings,
    /// Per partition state.
    pub partitions: Vec<PartitionSnapshot>,
    /// Dead letters not redriven, keyed by dead-letter partition and offset (only in files
    /// up to v4; later ones keep them in the journal).
    pub dead_letters: Vec<((TopicPartition, u64), DeadLettered)>,
    /// The dead-letter journal's changes below this sequence number are reflected here.
    pub journal_seq: u64,
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Encodes a snapshot.
pub fn encode(snapshot: &GroupSnapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + snapshot.partitions.len() * 48 + snapshot.dead_letters.len() * 64);
    let settings = &snapshot.settings;
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(match settings.reset {
        OffsetReset::Earliest => 0,
        OffsetReset::Latest => 1,
    });
    out.extend_from_slice(&(settings.ack_timeout.as_millis() as u64).to_le_bytes());
    out.extend_from_slice(&settings.max_attempts.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&(settings.retry.initial.as_millis() as u64).to_le_bytes());
    out.extend_from_slice(&settings.retry.multiplier.to_bits().to_le_bytes());
    out.extend_from_slice(&(settings.retry.max.as_millis() as u64).to_le_bytes());
    out.push(u8::from(settings.strict_ordering));
    out.push(u8::from(settings.skip_damaged));
    out.push(match settings.delivery {
        DeliveryMode::PartitionOwned => 0,
        DeliveryMode::Shared => 1,
    });
    put_str(&mut out, settings.dead_letter_topic.as_deref().unwrap_or(""));
    out.extend_from_slice(&(snapshot.partitions.len() as u32).to_le_bytes());
    for p in &snapshot.partitions {
        put_str(&mut out, &p.tp.topic);
        out.extend_from_slice(&p.tp.partition.to_le_bytes());
        out.extend_from_slice(&p.acks.committed().to_le_bytes());
        out.extend_from_slice(&(p.acks.acked().range_count() as u32).to_le_bytes());
        for (start, end) in p.acks.acked().iter() {
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&end.to_le_bytes());
        }
        out.extend_from_slice(&(p.redriven.len() as u32).to_le_bytes());
        for offset in &p.redriven {
            out.extend_from_slice(&offset.to_le_bytes());
        }
        out.extend_from_slice(&(p.attempts.len() as u32).to_le_bytes());
        for (offset, attempts) in &p.attempts {
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&attempts.to_le_bytes());
        }
        out.extend_from_slice(&(p.backoffs.len() as u32).to_le_bytes());
        for (offset, until_ms) in &p.backoffs {
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&until_ms.to_le_bytes());
        }
        out.extend_from_slice(&(p.dead_lettering.len() as u32).to_le_bytes());
        for d in &p.dead_lettering {
            out.extend_from_slice(&d.offset.to_le_bytes());
            out.extend_from_slice(&d.attempts.to_le_bytes());
            put_str(&mut out, &d.failure.reason);
            out.extend_from_slice(&d.failure.first_ms.to_le_bytes());
            out.extend_from_slice(&d.failure.last_ms.to_le_bytes());
            out.extend_from_slice(&d.position.unwrap_or(u32::MAX).to_le_bytes());
        }
    }
    out.extend_from_slice(&(snapshot.dead_letters.len() as u32).to_le_bytes());
    for ((tp, offset), letter) in &snapshot.dead_letters {
        put_str(&mut out, &tp.topic);
        out.extend_from_slice(&tp.partition.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        put_str(&mut out, &letter.source.topic);
        out.extend_from_slice(&letter.source.partition.to_le_bytes());
        out.extend_from_slice(&letter.source_offset.to_le_bytes());
        out.extend_from_slice(&letter.at_ms.to_le_bytes());
    }
    out.extend_from_slice(&snapshot.journal_seq.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err("truncated".into());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().map_err(|_| "u16")?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| "u32")?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| "u64")?))
    }
    fn string(&mut self) -> Result<&'a str, String> {
        let len = usize::from(self.u16()?);
        std::str::from_utf8(self.take(len)?).map_err(|e| e.to_string())
    }
}

fn read_tp(reader: &mut Reader<'_>) -> Result<TopicPartition, String> {
    let topic = reader.string()?;
    Ok(TopicPartition::new(Arc::from(topic), reader.u32()?))
}

/// Decodes a snapshot (version 1 to 5), checking magic, version and checksum. Settings a
/// version 1 file lacks come from `defaults`.
pub fn decode(bytes: &[u8], defaults: &GroupSettings) -> Result<GroupSnapshot, String> {
    if bytes.len() < 4 {
        return Err("file too short".into());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let crc = u32::from_le_bytes(crc.try_into().map_err(|_| "crc")?);
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch".into());
    }
    let mut reader = Reader { rest: body };
    if reader.take(4)? != MAGIC {
        return Err("not a group file".into());
    }
    let version = reader.u8()?;
    if !(1..=VERSION).contains(&version) {
        return Err(format!("unknown version {version}"));
    }
    let reset = match reader.u8()? {
        0 => OffsetReset::Earliest,
        1 => OffsetReset::Latest,
        other => return Err(format!("unknown reset policy {other}")),
    };
    let mut settings = defaults.clone();
    settings.reset = reset;
    settings.ack_timeout = Duration::from_millis(reader.u64()?);
    if version >= 2 {
        let max_attempts = reader.u32()?;
        settings.max_attempts = (max_attempts != 0).then_some(max_attempts);
        settings.retry = RetryPolicy {
            max_attempts: defaults.retry.max_attempts,
            initial: Duration::from_millis(reader.u64()?),
            multiplier: f64::from_bits(reader.u64()?),
            max: Duration::from_millis(reader.u64()?),
            jitter: defaults.retry.jitter,
        };
        settings.strict_ordering = reader.u8()? != 0;
        if version >= 3 {
            settings.skip_damaged = reader.u8()? != 0;
        }
        if version >= 5 {
            settings.delivery = match reader.u8()? {
                0 => DeliveryMode::PartitionOwned,
                1 => DeliveryMode::Shared,
                other => return Err(format!("unknown delivery mode {other}")),
            };
        }
        let template = reader.string()?;
        settings.dead_letter_topic = (!template.is_empty()).then(|| template.to_owned());
    }
    let count = reader.u32()?;
    let mut partitions = Vec::new();
    for _ in 0..count {
        let tp = read_tp(&mut reader)?;
        let committed = reader.u64()?;
        let ranges = reader.u32()?;
        let mut list = Vec::new();
        for _ in 0..ranges {
            let (start, end) = (reader.u64()?, reader.u64()?);
            if start >= end {
                return Err(format!("empty acked range {start}..{end}"));
            }
            list.push((start, end));
        }
        let mut redriven = Vec::new();
        let mut attempts = Vec::new();
        if version >= 2 {
            for _ in 0..reader.u32()? {
                redriven.push(reader.u64()?);
            }
            for _ in 0..reader.u32()? {
                attempts.push((reader.u64()?, reader.u32()?));
            }
        }
        let mut backoffs = Vec::new();
        if version >= 4 {
            for _ in 0..reader.u32()? {
                backoffs.push((reader.u64()?, reader.u64()? as i64));
            }
        }
        let mut dead_lettering = Vec::new();
        if version >= 5 {
            for _ in 0..reader.u32()? {
                let (offset, attempts) = (reader.u64()?, reader.u32()?);
                let reason = Arc::from(reader.string()?);
                let (first_ms, last_ms) = (reader.u64()? as i64, reader.u64()? as i64);
                let position = Some(reader.u32()?).filter(|&p| p != u32::MAX);
                let failure = Failure { reason, first_ms, last_ms };
                dead_lettering.push(DeadLetteringSnapshot { offset, attempts, failure, position });
            }
        }
        partitions.push(PartitionSnapshot {
            tp,
            acks: AckSet::from_parts(committed, list),
            redriven,
            attempts,
            backoffs,
            dead_lettering,
        });
    }
    let mut dead_letters = Vec::new();
    if version >= 2 {
        for _ in 0..reader.u32()? {
            let dlq = read_tp(&mut reader)?;
            let offset = reader.u64()?;
            let source = read_tp(&mut reader)?;
            let source_offset = reader.u64()?;
            let at_ms = reader.u64()? as i64;
            dead_letters.push(((dlq, offset), DeadLettered { source, source_offset, at_ms }));
        }
    }
    let journal_seq = if version >= 5 { reader.u64()? } else { 0 };
    if !reader.rest.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(GroupSnapshot { settings, partitions, dead_letters, journal_seq })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> GroupSettings {
        GroupSettings {
            reset: OffsetReset::Latest,
            ack_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            max_attempts: Some(7),
            dead_letter_topic: Some("{topic}.dead".into()),
            strict_ordering: true,
            skip_damaged: true,
            delivery: DeliveryMode::Shared,
        }
    }

    fn sample() -> GroupSnapshot {
        let mut acks = AckSet::at(40);
        for offset in [42, 43, 50] {
            acks.ack(offset);
        }
        let orders = |p| TopicPartition::new(Arc::from("orders"), p);
        let letter = DeadLettered { source: orders(1), source_offset: 3, at_ms: 1_700_000_000_000 };
        GroupSnapshot {
            settings: settings(),
            partitions: vec![
                PartitionSnapshot {
                    tp: orders(0),
                    acks,
                    redriven: vec![],
                    attempts: vec![(41, 3)],
                    backoffs: vec![(41, 1_700_000_008_000)],
                    dead_lettering: vec![DeadLetteringSnapshot {
                        offset: 44,
                        attempts: 5,
                        failure: Failure { reason: Arc::from("bad input"), first_ms: 10, last_ms: 20 },
                        position: Some(3),
                    }],
                },
                PartitionSnapshot {
                    tp: orders(1),
                    acks: AckSet::at(7),
                    redriven: vec![2, 5, 9],
                    attempts: vec![(5, 1)],
                    backoffs: vec![],
                    dead_lettering: vec![],
                },
            ],
            dead_letters: vec![((TopicPartition::new(Arc::from("orders.dead"), 1), 0), letter)],
            journal_seq: 17,
        }
    }

    #[test]
    fn roundtrips() {
        let snapshot = sample();
        assert_eq!(decode(&encode(&snapshot), &GroupSettings::defaults_for_tests()).unwrap(), snapshot);
    }

    #[test]
    fn any_flipped_or_missing_byte_is_refused() {
        let bytes = encode(&sample());
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x40;
            assert!(decode(&flipped, &settings()).is_err(), "flip at byte {i} accepted");
            assert!(decode(&bytes[..i], &settings()).is_err(), "truncation to {i} bytes accepted");
        }
    }

    #[test]
    fn version_1_files_still_load_with_default_retry_settings() {
        // A version 1 file: settings (latest, 30 s), one partition at 7 with no acked ranges.
        let mut v1 = Vec::new();
        v1.extend_from_slice(b"SLGS");
        v1.push(1);
        v1.push(1);
        v1.extend_from_slice(&30_000u64.to_le_bytes());
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&6u16.to_le_bytes());
        v1.extend_from_slice(b"orders");
        v1.extend_from_slice(&0u32.to_le_bytes());
        v1.extend_from_slice(&7u64.to_le_bytes());
        v1.extend_from_slice(&0u32.to_le_bytes());
        let crc = crc32fast::hash(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let defaults = GroupSettings::defaults_for_tests();
        let loaded = decode(&v1, &defaults).unwrap();
        assert_eq!(loaded.settings.reset, OffsetReset::Latest);
        assert_eq!(loaded.settings.retry, defaults.retry);
        assert_eq!(loaded.partitions[0].acks.committed(), 7);
    }
}

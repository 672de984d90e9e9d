//! A group's durable state: `<data_dir>/groups/<group>.group`, replaced atomically (write to a
//! temporary file, fsync, rename, fsync the directory) every `commit_interval` while it
//! changes, when an operator resets it, and at shutdown. It holds the settings and, per
//! partition, the committed offset and the acked ranges above it. It never grows with the log:
//! acked runs collapse into ranges and everything below the committed offset is one number.
//!
//! Little-endian layout:
//!
//! ```text
//! offset  size  field
//! 0       4     magic "SLGS"
//! 4       1     version (1)
//! 5       1     reset policy: 0 earliest, 1 latest
//! 6       8     ack timeout in ms
//! 14      4     partition count P
//! then P times:
//!         2     topic name length T
//!         T     topic name (UTF-8)
//!         4     partition
//!         8     committed offset
//!         4     acked range count R
//!         16*R  ranges: start, end (exclusive), both u64
//! end     4     CRC-32 of everything before it
//! ```

use std::sync::Arc;
use std::time::Duration;

use super::acks::AckSet;
use super::types::{GroupSettings, OffsetReset, TopicPartition};

const MAGIC: &[u8; 4] = b"SLGS";
const VERSION: u8 = 1;

/// What a group file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    /// Group settings.
    pub settings: GroupSettings,
    /// Per partition: committed offset and acked ranges.
    pub partitions: Vec<(TopicPartition, AckSet)>,
}

/// Encodes a snapshot.
pub fn encode(snapshot: &GroupSnapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + snapshot.partitions.len() * 48);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(match snapshot.settings.reset {
        OffsetReset::Earliest => 0,
        OffsetReset::Latest => 1,
    });
    out.extend_from_slice(&(snapshot.settings.ack_timeout.as_millis() as u64).to_le_bytes());
    out.extend_from_slice(&(snapshot.partitions.len() as u32).to_le_bytes());
    for (tp, acks) in &snapshot.partitions {
        out.extend_from_slice(&(tp.topic.len() as u16).to_le_bytes());
        out.extend_from_slice(tp.topic.as_bytes());
        out.extend_from_slice(&tp.partition.to_le_bytes());
        out.extend_from_slice(&acks.committed().to_le_bytes());
        out.extend_from_slice(&(acks.acked().range_count() as u32).to_le_bytes());
        for (start, end) in acks.acked().iter() {
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&end.to_le_bytes());
        }
    }
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
}

/// Decodes a snapshot, checking magic, version and checksum.
pub fn decode(bytes: &[u8]) -> Result<GroupSnapshot, String> {
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
    if version != VERSION {
        return Err(format!("unknown version {version}"));
    }
    let reset = match reader.u8()? {
        0 => OffsetReset::Earliest,
        1 => OffsetReset::Latest,
        other => return Err(format!("unknown reset policy {other}")),
    };
    let ack_timeout = Duration::from_millis(reader.u64()?);
    let count = reader.u32()?;
    let mut partitions = Vec::new();
    for _ in 0..count {
        let len = usize::from(reader.u16()?);
        let topic = std::str::from_utf8(reader.take(len)?).map_err(|e| e.to_string())?;
        let partition = reader.u32()?;
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
        partitions.push((TopicPartition::new(Arc::from(topic), partition), AckSet::from_parts(committed, list)));
    }
    if !reader.rest.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(GroupSnapshot { settings: GroupSettings { reset, ack_timeout }, partitions })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GroupSnapshot {
        let mut acks = AckSet::at(40);
        for offset in [42, 43, 50] {
            acks.ack(offset);
        }
        GroupSnapshot {
            settings: GroupSettings { reset: OffsetReset::Latest, ack_timeout: Duration::from_secs(30) },
            partitions: vec![
                (TopicPartition::new(Arc::from("orders"), 0), acks),
                (TopicPartition::new(Arc::from("orders"), 1), AckSet::at(7)),
            ],
        }
    }

    #[test]
    fn roundtrips() {
        let snapshot = sample();
        assert_eq!(decode(&encode(&snapshot)).unwrap(), snapshot);
    }

    #[test]
    fn any_flipped_or_missing_byte_is_refused() {
        let bytes = encode(&sample());
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x40;
            assert!(decode(&flipped).is_err(), "flip at byte {i} accepted");
            assert!(decode(&bytes[..i]).is_err(), "truncation to {i} bytes accepted");
        }
    }
}

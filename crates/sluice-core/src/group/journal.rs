//! A group's dead-letter journal: `<data_dir>/groups/<group>.deadletters`, an append-only log
//! of changes to its dead letters (added, redriven, discarded). A flush appends only what
//! changed since the last one, so its cost does not grow with the number of waiting dead
//! letters; the group file ([`super::snapshot`]) stays as small as the records in flight.
//!
//! Crash guarantee: a flush appends and fsyncs the journal before it replaces the group file,
//! and the group file names the journal sequence number it reflects. At start-up every change
//! is replayed into the dead-letter index; a redrive the group file does not reflect yet is
//! applied to its partition again, and a dead letter it does not reflect marks its source
//! record done. A torn final entry (a crash mid-append) is cut off; a damaged entry in the
//! middle is skipped with a warning, costing only that entry.
//!
//! Compaction: once removed entries outnumber live ones (and the file is past 1 MiB), the file
//! is rewritten, off the group lock, from the file itself, with the live entries only.
//!
//! Little-endian layout: the magic `SLDJ` and a version byte (1), then entries:
//!
//! ```text
//! 4     length L of what follows, up to the CRC
//! 1     change: 1 added, 2 redriven, 3 discarded
//! 8     sequence number (0 for entries carried over by compaction)
//! 2+T   dead-letter topic, 4 partition, 8 offset
//! 2+T   source topic, 4 partition, 8 offset
//! 8     dead-lettered at, ms since the Unix epoch
//! 4     CRC-32 of the L bytes
//! ```

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::dead_letter_index::Key;
use super::types::{DeadLettered, TopicPartition};

const MAGIC: &[u8; 4] = b"SLDJ";
const VERSION: u8 = 1;
const HEADER: u64 = 5;
/// Longest entry body: two topic names of at most 255 bytes and the fixed fields.
const MAX_ENTRY: u32 = 1 + 8 + 2 * (2 + 255 + 4 + 8) + 8;
/// Compaction waits until the file is at least this big.
const COMPACT_AFTER_BYTES: u64 = 1 << 20;

/// Extension of a dead-letter journal.
pub const JOURNAL_EXTENSION: &str = "deadletters";

/// What happened to a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It was dead-lettered.
    Added,
    /// It was redriven into the group's processing.
    Redriven,
    /// It was discarded (by an operator, or deleted by retention).
    Discarded,
}

/// One change, with what it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Order of the change in the group.
    pub seq: u64,
    /// What happened.
    pub change: Change,
    /// Where the dead letter is.
    pub key: Key,
    /// Its source and time.
    pub letter: DeadLettered,
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Appends one entry's bytes to `out`.
pub fn encode(entry: &Entry, out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(96);
    body.push(match entry.change {
        Change::Added => 1,
        Change::Redriven => 2,
        Change::Discarded => 3,
    });
    body.extend_from_slice(&entry.seq.to_le_bytes());
    put_str(&mut body, &entry.key.0.topic);
    body.extend_from_slice(&entry.key.0.partition.to_le_bytes());
    body.extend_from_slice(&entry.key.1.to_le_bytes());
    put_str(&mut body, &entry.letter.source.topic);
    body.extend_from_slice(&entry.letter.source.partition.to_le_bytes());
    body.extend_from_slice(&entry.letter.source_offset.to_le_bytes());
    body.extend_from_slice(&entry.letter.at_ms.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = self.bytes.split_at_checked(n)?;
        self.bytes = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn text(&mut self) -> Option<Arc<str>> {
        let len = self.u16()? as usize;
        std::str::from_utf8(self.take(len)?).ok().map(Arc::from)
    }
}

fn decode_body(body: &[u8]) -> Option<Entry> {
    let mut r = Reader { bytes: body };
    let change = match r.take(1)?[0] {
        1 => Change::Added,
        2 => Change::Redriven,
        3 => Change::Discarded,
        _ => return None,
    };
    let seq = r.u64()?;
    let key = (TopicPartition::new(r.text()?, r.u32()?), r.u64()?);
    let source = TopicPartition::new(r.text()?, r.u32()?);
    let letter = DeadLettered { source, source_offset: r.u64()?, at_ms: r.u64()? as i64 };
    r.bytes.is_empty().then_some(Entry { seq, change, key, letter })
}

/// What reading a journal found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Intact entries in file order.
    pub entries: Vec<Entry>,
    /// Where the intact part ends (a torn tail starts there).
    pub good_len: u64,
    /// Damaged entries skipped, with their byte positions.
    pub skipped: Vec<u64>,
    /// Bytes at the end that do not form an entry (a torn append).
    pub torn: u64,
}

/// Parses a journal's bytes. `Err` only for a file that is not a journal at all.
pub fn parse(bytes: &[u8]) -> Result<Loaded, String> {
    if bytes.is_empty() {
        return Ok(Loaded::default());
    }
    if bytes.len() < HEADER as usize || &bytes[..4] != MAGIC {
        return Err("not a dead-letter journal (bad magic)".into());
    }
    if bytes[4] != VERSION {
        return Err(format!("dead-letter journal version {} is not supported (this broker reads {VERSION})", bytes[4]));
    }
    let mut loaded = Loaded { good_len: HEADER, ..Loaded::default() };
    let mut at = HEADER as usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let Some(len) = rest.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])) else { break };
        if len == 0 || len > MAX_ENTRY || rest.len() < 4 + len as usize + 4 {
            break;
        }
        let body = &rest[4..4 + len as usize];
        let crc_at = 4 + len as usize;
        let crc = u32::from_le_bytes([rest[crc_at], rest[crc_at + 1], rest[crc_at + 2], rest[crc_at + 3]]);
        match decode_body(body).filter(|_| crc32fast::hash(body) == crc) {
            Some(entry) => loaded.entries.push(entry),
            None => loaded.skipped.push(at as u64),
        }
        at += 4 + len as usize + 4;
        loaded.good_len = at as u64;
    }
    loaded.torn = bytes.len() as u64 - loaded.good_len;
    Ok(loaded)
}

/// The journal file of one group, written by its flushes (which the group serialises).
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    /// Bytes of intact entries (appends go there; a failed append is cut back to it).
    len: u64,
    live: u64,
    removed: u64,
}

fn io_error<'a>(operation: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> sluice_storage::Error + 'a {
    move |source| sluice_storage::Error::Io { operation, path: path.to_path_buf(), source }
}

impl Journal {
    /// A journal for a new group: the first append starts the file over.
    pub fn empty(path: PathBuf) -> Journal {
        Journal { path, len: 0, live: 0, removed: 0 }
    }

    /// Opens (or starts) the journal at `path`, cutting a torn tail; returns its entries.
    pub fn open(path: PathBuf) -> Result<(Journal, Vec<Entry>), crate::error::Error> {
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_error("reading dead-letter journal", &path)(e).into()),
        };
        let loaded = parse(&bytes).map_err(|reason| crate::error::Error::BadMetadata { path: path.clone(), reason })?;
        for position in &loaded.skipped {
            tracing::warn!(path = %path.display(), position, "skipped a damaged dead-letter journal entry");
        }
        if loaded.torn > 0 {
            tracing::warn!(path = %path.display(), bytes = loaded.torn, "cut a torn entry off the end of a dead-letter journal");
            let file =
                OpenOptions::new().write(true).open(&path).map_err(io_error("opening dead-letter journal", &path))?;
            file.set_len(loaded.good_len).map_err(io_error("truncating dead-letter journal", &path))?;
            file.sync_all().map_err(io_error("syncing dead-letter journal", &path))?;
        }
        let (live, removed) = count(&loaded.entries);
        let journal = Journal { path, len: if bytes.is_empty() { 0 } else { loaded.good_len }, live, removed };
        Ok((journal, loaded.entries))
    }

    /// Appends entries durably (written and fsynced when it returns Ok). A failed append
    /// leaves the file as it was.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), sluice_storage::Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(entries.len() * 96 + HEADER as usize);
        if self.len == 0 {
            bytes.extend_from_slice(MAGIC);
            bytes.push(VERSION);
        }
        for entry in entries {
            encode(entry, &mut bytes);
        }
        let path = self.path.clone();
        let created = self.len == 0;
        let result = (|| {
            let mut file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io_error("opening dead-letter journal", &path))?;
            // Whatever a failed append left past the intact part is overwritten.
            file.set_len(self.len).map_err(io_error("truncating dead-letter journal", &path))?;
            file.seek(SeekFrom::Start(self.len)).map_err(io_error("seeking dead-letter journal", &path))?;
            file.write_all(&bytes).map_err(io_error("appending to dead-letter journal", &path))?;
            file.sync_data().map_err(io_error("syncing dead-letter journal", &path))?;
            if created && let Some(dir) = path.parent() {
                sluice_storage::io::fsync_dir(dir)?;
            }
            Ok(())
        })();
        if result.is_ok() {
            self.len += bytes.len() as u64;
            let (live, removed) = count(entries);
            self.live = (self.live + live).saturating_sub(removed);
            self.removed += removed;
        }
        result
    }

    /// True when removed entries outnumber live ones in a file worth rewriting.
    pub fn wants_compaction(&self) -> bool {
        self.len >= COMPACT_AFTER_BYTES && self.removed > self.live
    }

    /// Rewrites the file with only the live dead letters (from the file itself, so the group
    /// lock is not needed), atomically.
    pub fn compact(&mut self) -> Result<(), crate::error::Error> {
        let mut bytes = Vec::new();
        File::open(&self.path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io_error("reading dead-letter journal", &self.path))?;
        let loaded =
            parse(&bytes).map_err(|reason| crate::error::Error::BadMetadata { path: self.path.clone(), reason })?;
        let mut live: BTreeMap<Key, DeadLettered> = BTreeMap::new();
        for entry in loaded.entries {
            match entry.change {
                Change::Added => live.insert(entry.key, entry.letter),
                Change::Redriven | Change::Discarded => live.remove(&entry.key),
            };
        }
        let mut out = Vec::with_capacity(live.len() * 96 + HEADER as usize);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        for (key, letter) in live.iter() {
            encode(&Entry { seq: 0, change: Change::Added, key: key.clone(), letter: letter.clone() }, &mut out);
        }
        sluice_storage::store::write_atomic(&self.path, &out)?;
        self.len = out.len() as u64;
        self.live = live.len() as u64;
        self.removed = 0;
        Ok(())
    }
}

fn count(entries: &[Entry]) -> (u64, u64) {
    let added = entries.iter().filter(|e| e.change == Change::Added).count() as u64;
    (added, entries.len() as u64 - added)
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;

//! [`PartitionLog`]: the public handle of one partition's log.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use crate::codec::{Batch, EncodedBatch};
use crate::commit::{Appended, CommitQueue, Written};
use crate::config::LogConfig;
use crate::error::{Error, Result};
use crate::io::{Clock, DiskIo, OsDisk, SystemClock, fsync_dir};
use crate::open::OpenContext;
use crate::page_cache::Wait;
use crate::view::LogView;
use crate::writer::{Counters, Writer};

/// A batch queued with [`PartitionLog::enqueue_append`], not yet known to be durable.
#[derive(Debug)]
#[must_use = "a queued append must be completed"]
pub struct AppendTicket(u64);

/// The operating-system seams a log uses; tests replace them.
#[derive(Debug, Clone)]
pub struct LogEnv {
    /// Disk writes and fsync.
    pub io: Arc<dyn DiskIo>,
    /// Wall clock, for segment age.
    pub clock: Arc<dyn Clock>,
    /// The free-space reserve appends must leave (shared by the partitions of one disk);
    /// `None`: appends run until the disk itself is full.
    pub space: Option<Arc<crate::space::FreeSpace>>,
    /// The partition this log holds, stamped into every record it writes (format 3 records
    /// carry their partition, as a read response does).
    pub partition: u32,
}

impl Default for LogEnv {
    fn default() -> Self {
        LogEnv { io: Arc::new(OsDisk), clock: Arc::new(SystemClock), space: None, partition: 0 }
    }
}

/// Batches read from the log, with the log's range at the time of the read.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Whole, checksum-verified batches in offset order. The first may start before the
    /// requested offset; skip records below it.
    pub batches: Vec<Batch>,
    /// Log start offset when read.
    pub start_offset: u64,
    /// Log end offset when read.
    pub end_offset: u64,
}

/// What opening the log found and did (see [`crate::recovery`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recovery {
    /// The log existed and was not closed cleanly (a crash or kill): its active segment was
    /// validated whole.
    pub unclean: bool,
    /// Bytes read and verified.
    pub scanned_bytes: u64,
    /// Bytes of torn tail cut from the active segment.
    pub cut_bytes: u64,
    /// Sealed segments whose index files were rebuilt from the log.
    pub indexes_rebuilt: u64,
    /// Offset ranges no segment holds (lost segment files).
    pub missing_ranges: u64,
}

/// A point-in-time summary of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    /// First readable offset.
    pub start_offset: u64,
    /// Offset the next record gets.
    pub end_offset: u64,
    /// Bytes in all segments.
    pub size_bytes: u64,
    /// Number of segments, the active one included.
    pub segment_count: usize,
    /// fsyncs of segment data since open.
    pub fsyncs: u64,
    /// Batches appended since open.
    pub appended_batches: u64,
    /// Bytes validated by recovery when the log was opened.
    pub recovery_scanned_bytes: u64,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    view: Arc<RwLock<Arc<LogView>>>,
    writer: Mutex<Writer>,
    commit: CommitQueue,
    counters: Arc<Counters>,
    /// The fsync policy, readable without the writer lock (see `config::encode_policy`).
    fsync: std::sync::atomic::AtomicU64,
    /// The writer's first failure, readable without the writer lock.
    poisoned: Arc<std::sync::OnceLock<String>>,
    /// The writer's clock (for the inline-append check).
    clock: Arc<dyn crate::io::Clock>,
}

/// One partition's append-only log: a cheap-clone handle, safe to share between threads.
///
/// One writer and any number of readers proceed concurrently: appends go through a group-commit
/// queue into the single writer; reads work on an immutable snapshot and never wait for appends.
///
/// Dropping the last handle without [`PartitionLog::close`] is treated like a crash by the next
/// open (the active segment is fully validated).
#[derive(Debug, Clone)]
pub struct PartitionLog {
    inner: Arc<Inner>,
}

impl PartitionLog {
    /// Opens the partition in `dir`, creating it if needed, and recovers it (see [`crate::recovery`]).
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig) -> Result<Self> {
        Self::open_with(dir, config, LogEnv::default())
    }

    /// [`PartitionLog::open`] with explicit disk and clock seams.
    pub fn open_with(dir: impl Into<PathBuf>, config: LogConfig, env: LogEnv) -> Result<Self> {
        config.validate()?;
        let dir = dir.into();
        let counters = Arc::new(Counters::default());
        let now_ms = env.clock.now_ms();
        let cx = OpenContext { dir: &dir, config: &config, counters: &counters, now_ms };
        let (sealed, active) = crate::open::load_segments(&cx)?;
        let view = LogView { sealed: Arc::new(sealed), active: active.view() };
        let published = Arc::new(RwLock::new(Arc::new(view.clone())));
        let poisoned = Arc::new(std::sync::OnceLock::new());
        let writer = Writer {
            dir: dir.clone(),
            config,
            sealed: view.sealed,
            active,
            poisoned: Arc::clone(&poisoned),
            closed: false,
            last_sync_ms: now_ms,
            dirty: false,
            io: env.io,
            space: env.space,
            partition: env.partition,
            clock: Arc::clone(&env.clock),
            counters: Arc::clone(&counters),
            published: Arc::clone(&published),
            producer_next: std::collections::HashMap::new(),
        };
        writer.refresh_inline();
        Ok(PartitionLog {
            inner: Arc::new(Inner {
                dir,
                view: published,
                fsync: std::sync::atomic::AtomicU64::new(crate::config::encode_policy(writer.config.fsync)),
                poisoned,
                writer: Mutex::new(writer),
                commit: CommitQueue::default(),
                counters,
                clock: env.clock,
            }),
        })
    }

    fn view(&self) -> Arc<LogView> {
        Arc::clone(&self.inner.view.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        // A panic while writing leaves the writer's fields consistent with the file only up to
        // the last publish; later appends then fail at the next io error or validation.
        self.inner.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Appends a batch and returns its offsets once it is durable per the fsync policy.
    ///
    /// Crash guarantee: when this returns `Ok` under `FsyncPolicy::Always`, the batch survives
    /// power loss; under the other policies it survives a process crash (see
    /// [`crate::FsyncPolicy`]). A batch whose append failed may or may not be present after a
    /// restart, but never partially.
    /// An oversized batch fails with [`Error::BatchTooLarge`] and changes nothing.
    pub fn append(&self, batch: EncodedBatch) -> Result<Appended> {
        // Appenders must not touch the writer mutex before queueing: the leader holds it across
        // the group's fsync, and queueing during that fsync is what group commit is.
        self.append_keep(batch).map(|written| written.appended)
    }

    /// [`PartitionLog::append`], also returning the batch as written (its bytes shared, not
    /// copied), for callers that serve recent batches from memory.
    pub fn append_keep(&self, batch: EncodedBatch) -> Result<Written> {
        self.inner.commit.submit(batch, |group| self.writer().append_group(group))
    }

    /// The first half of [`PartitionLog::append_keep`]: queues `batch` behind every batch
    /// queued before it, without waiting. Batches get offsets in the order they were queued.
    /// The returned ticket must be passed to [`PartitionLog::complete_append`].
    pub fn enqueue_append(&self, batch: EncodedBatch) -> AppendTicket {
        AppendTicket(self.inner.commit.enqueue(batch))
    }

    /// The second half: waits until the ticket's batch is durable per the fsync policy (the
    /// same guarantee as [`PartitionLog::append`]), writing queued batches if no one else is.
    pub fn complete_append(&self, ticket: AppendTicket) -> Result<Written> {
        self.complete_append_with(ticket, |_| {})
    }

    /// [`PartitionLog::complete_append`], calling `on_group` with the results of every group
    /// this appender writes, in offset order, once its batches are durable and visible and
    /// before their appenders are told. A caller that serves recent batches from memory uses it
    /// to publish a whole group at once: readers woken by the group's first batch then find
    /// the others in memory too, instead of waiting for each appender to publish its own.
    pub fn complete_append_with(
        &self,
        ticket: AppendTicket,
        mut on_group: impl FnMut(&[Result<Written>]),
    ) -> Result<Written> {
        self.inner.commit.wait(ticket.0, |group| {
            let results = self.writer().append_group(group);
            on_group(&results);
            results
        })
    }

    /// [`PartitionLog::complete_append_with`] if that writes only to the page cache and waits
    /// for nobody: no other appender is writing, every queued batch together is at most
    /// `max_bytes`, and none of them needs a segment roll, a space reservation or an fsync (by
    /// policy or by time). Otherwise the ticket comes back untouched, for a thread that may
    /// wait on the disk. The check reads what the writer published after its last change; only
    /// a config change or roll racing this very call could make its write do more.
    pub fn try_complete_inline(
        &self,
        ticket: AppendTicket,
        max_bytes: u64,
        mut on_group: impl FnMut(&[Result<Written>]),
    ) -> std::result::Result<Result<Written>, AppendTicket> {
        let counters = &self.inner.counters;
        let room = counters.inline_bytes.load(Ordering::Relaxed).min(max_bytes);
        let records = counters.inline_records.load(Ordering::Relaxed);
        let in_time = self.inner.clock.now_ms() < counters.inline_until_ms.load(Ordering::Relaxed);
        let fits = |pending: &[(u64, EncodedBatch)]| {
            let bytes: u64 = pending.iter().map(|(_, b)| b.len() as u64).sum();
            let count: u64 = pending.iter().map(|(_, b)| u64::from(b.record_count())).sum();
            in_time && bytes <= room && count <= records
        };
        self.inner
            .commit
            .try_wait(ticket.0, fits, |group| {
                let results = self.writer().append_group(group);
                on_group(&results);
                results
            })
            .ok_or(ticket)
    }

    /// Appends waiting behind the one being written (for observing group commit).
    pub fn queued_appends(&self) -> usize {
        self.inner.commit.queued()
    }

    /// Reads whole batches from the one holding `offset`, up to about `max_bytes` (at least one
    /// batch). `offset == end` returns no batches; outside `start..=end` is
    /// [`Error::OffsetOutOfRange`].
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<ReadResult> {
        self.read_waiting(offset, max_bytes, Wait::Disk)
    }

    /// [`PartitionLog::read`] of at most `max_bytes`, if the page cache holds all of it: the read
    /// does not wait for the disk, so it may run where blocking is not allowed. `None` when the
    /// data is not cached, the first batch is larger than `max_bytes` and than 2 MiB, or
    /// anything else goes wrong; [`PartitionLog::read`] then gives the answer (including any
    /// error).
    ///
    /// Sealed segments' indexes are memory-mapped; looking one up may still fault a page in.
    pub fn read_cached(&self, offset: u64, max_bytes: usize) -> Option<ReadResult> {
        self.read_waiting(offset, max_bytes, Wait::CacheOnly).ok()
    }

    fn read_waiting(&self, offset: u64, max_bytes: usize, wait: Wait) -> Result<ReadResult> {
        let view = self.view();
        let (start_offset, end_offset) = (view.start_offset(), view.end_offset());
        if offset == end_offset && offset >= start_offset {
            return Ok(ReadResult { batches: Vec::new(), start_offset, end_offset });
        }
        let batches = view.segment_for(offset)?.read(offset, max_bytes, wait)?;
        Ok(ReadResult { batches, start_offset, end_offset })
    }

    /// The record at `offset`, read alone from `position` of its batch (see
    /// [`Record::position`]); its batch checksum is not verified again.
    pub fn read_record(&self, offset: u64, position: u32) -> Result<crate::codec::Record> {
        let view = self.view();
        if offset >= view.end_offset() {
            return Err(view.out_of_range(offset));
        }
        view.segment_for(offset)?.read_record(offset, position)
    }

    /// The first offset whose record timestamp is `>= timestamp`, or `None` if no record is.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>> {
        let view = self.view();
        for segment in view.segments() {
            if segment.max_timestamp >= timestamp
                && let Some(offset) = segment.offset_for_timestamp(timestamp)?
            {
                return Ok(Some(offset));
            }
        }
        Ok(None)
    }

    /// Calls `visit` with the header of each batch holding offsets at or after `offset`, in order.
    /// Reads 56 bytes per batch, so it suits rebuilding state kept in batch headers (such as
    /// idempotent producers' sequences) without reading records.
    /// Damaged batches are passed over (each logged): the visit goes on after them, and returns
    /// the ranges it could not read.
    pub fn visit_batch_headers(
        &self,
        offset: u64,
        mut visit: impl FnMut(&crate::codec::BatchHeader),
    ) -> Result<Vec<crate::MissingRange>> {
        let view = self.view();
        let mut skipped = Vec::new();
        for segment in view.segments().filter(|s| s.next_offset > offset) {
            let mut from = offset.max(segment.base_offset);
            while from < segment.next_offset {
                match segment.visit_headers(from, &mut visit) {
                    Ok(()) => break,
                    Err(Error::DataLoss { from: bad, to, reason, .. }) => {
                        tracing::warn!(segment = %segment.path.display(), from = bad, to, %reason, "damaged batches passed over while reading batch headers");
                        skipped.push(crate::MissingRange { from: bad, to });
                        from = to;
                    }
                    Err(other) => return Err(other),
                }
            }
        }
        Ok(skipped)
    }

    /// Offset ranges that no segment holds because a segment file was lost (see
    /// [`Error::DataLoss`]); reads there fail, reads elsewhere work.
    pub fn missing_ranges(&self) -> Vec<crate::MissingRange> {
        self.view().gaps()
    }

    /// What opening the log found and did.
    pub fn recovery(&self) -> Recovery {
        let counters = &self.inner.counters;
        Recovery {
            unclean: counters.recovery_unclean.load(Ordering::Relaxed),
            scanned_bytes: counters.recovery_scanned_bytes.load(Ordering::Relaxed),
            cut_bytes: counters.recovery_cut_bytes.load(Ordering::Relaxed),
            indexes_rebuilt: counters.recovery_indexes_rebuilt.load(Ordering::Relaxed),
            missing_ranges: self.view().gaps().len() as u64,
        }
    }

    /// Start and end offsets.
    pub fn offsets(&self) -> (u64, u64) {
        let view = self.view();
        (view.start_offset(), view.end_offset())
    }

    /// Range, size and counters.
    pub fn stats(&self) -> LogStats {
        let view = self.view();
        let counters = &self.inner.counters;
        LogStats {
            start_offset: view.start_offset(),
            end_offset: view.end_offset(),
            size_bytes: view.segments().map(|s| s.len).sum(),
            segment_count: view.segments().count(),
            fsyncs: counters.fsyncs.load(Ordering::Relaxed),
            appended_batches: counters.appended_batches.load(Ordering::Relaxed),
            recovery_scanned_bytes: counters.recovery_scanned_bytes.load(Ordering::Relaxed),
        }
    }

    /// fsyncs now if anything is unsynced. For `FsyncPolicy::Interval`, call this on a timer so
    /// the bound holds when appends stop.
    pub fn sync(&self) -> Result<()> {
        self.writer().sync_active()
    }

    /// fsyncs if the policy is `Interval` and its interval has passed since the last fsync
    /// (appends check this themselves; call it on a timer for when appends stop).
    pub fn sync_if_due(&self) -> Result<()> {
        self.writer().sync_if_due()
    }

    /// Seals the active segment and starts a new one (as a size or age roll would).
    ///
    /// Crash guarantee: the sealed segment's data is fsynced before its index files are written
    /// (and fsynced), and the new segment's name is made durable with a directory fsync; a crash
    /// at any point leaves either the old segment active (validated on open) or both in place.
    pub fn roll(&self) -> Result<()> {
        let mut writer = self.writer();
        if writer.active.len == 0 {
            return Ok(());
        }
        writer.roll()?;
        writer.publish();
        Ok(())
    }

    /// Deletes the closed segments retention selects at time `now_ms`; returns how many.
    ///
    /// Crash guarantee: segments are deleted oldest first and the directory is fsynced, so after
    /// a crash the log starts at some segment boundary at or before the new start offset; no
    /// record at or after it is lost.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize> {
        self.writer().apply_retention(now_ms)
    }

    /// Replaces the config (segment, retention and fsync settings take effect on the next
    /// append or retention run).
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        config.validate()?;
        self.inner.fsync.store(crate::config::encode_policy(config.fsync), Ordering::Relaxed);
        let mut writer = self.writer();
        writer.config = config;
        writer.refresh_inline();
        Ok(())
    }

    /// The current config.
    pub fn config(&self) -> LogConfig {
        self.writer().config.clone()
    }

    /// The current fsync policy (cheap: no lock).
    pub fn config_fsync(&self) -> crate::FsyncPolicy {
        crate::config::decode_policy(self.inner.fsync.load(Ordering::Relaxed))
    }

    /// Removes every record at or after the batch holding `offset` (truncation happens at batch
    /// boundaries); returns the new end offset.
    ///
    /// Crash guarantee: later segments are deleted newest first and the directory fsynced before
    /// the containing segment is cut and fsynced, so a crash part-way leaves a contiguous log that
    /// ends somewhere between the old end and the new one.
    pub fn truncate_to(&self, offset: u64) -> Result<u64> {
        self.writer().truncate_to(offset)
    }

    /// The error that poisoned the log, if one did.
    pub fn poisoned(&self) -> Option<String> {
        self.inner.poisoned.get().cloned()
    }

    /// Clean close: fsync, persist the active index, write the clean-shutdown marker so the
    /// next open needs no recovery scan. Later appends fail with [`Error::Closed`]; reads go on.
    ///
    /// Crash guarantee: the marker is written last (atomically); a crash before it only costs the
    /// next open a full validation of the active segment. A poisoned log writes no marker.
    pub fn close(&self) -> Result<()> {
        self.writer().close()
    }

    /// Closes the log and deletes its whole directory (topic deletion).
    ///
    /// Crash guarantee: none beyond the file system's: a crash part-way can leave some segment
    /// files behind, which the caller's metadata must treat as deleted (the broker removes the
    /// topic from its metadata first, then the directories).
    pub fn delete(self) -> Result<()> {
        let dir = self.inner.dir.clone();
        {
            let mut writer = self.writer();
            writer.closed = true;
        }
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io("deleting partition", &dir, e))?;
        match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => fsync_dir(parent),
            _ => Ok(()),
        }
    }
}

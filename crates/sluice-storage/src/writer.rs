//! The single writer of a partition: appends, rolls, syncs, retention and truncation.
//!
//! All of it runs under the log's writer mutex. After each change the writer publishes a new
//! [`LogView`] for readers; what is published is always whole batches, and under
//! `FsyncPolicy::Always` only synced ones. A write or fsync failure poisons the writer: later
//! appends fail with [`Error::Poisoned`] while the published view stays readable.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::codec::EncodedBatch;
use crate::commit::{Appended, Written};
use crate::config::{FsyncPolicy, LogConfig};
use crate::error::{Error, Result};
use crate::index::{IndexBuilder, IndexEntries, SealedIndex};
use crate::io::{Clock, DiskIo, fsync_dir};
use crate::layout;
use crate::recovery::{self, ScanTarget, Tail};
use crate::retention::{self, RetentionPolicy, SegmentSummary};
use crate::segment::{SegmentIndex, SegmentView};
use crate::view::LogView;

/// Counters readable without locks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub fsyncs: AtomicU64,
    pub appended_batches: AtomicU64,
    pub recovery_scanned_bytes: AtomicU64,
    /// Bytes of torn tail cut from the active segment when the log opened.
    pub recovery_cut_bytes: AtomicU64,
    /// Sealed segments whose index files were missing or damaged and were rebuilt at open.
    pub recovery_indexes_rebuilt: AtomicU64,
    /// True when the log was opened without the clean-shutdown marker.
    pub recovery_unclean: std::sync::atomic::AtomicBool,
    /// Bytes and records that can be appended now without a roll or a space reservation (0
    /// when appends must not be written inline at all: fsync `always`, poisoned, closed), and
    /// until when (ms) no roll or fsync falls due by time. Kept by the writer after every change,
    /// so an appender can tell without the writer lock that a small append touches only the
    /// page cache.
    pub inline_bytes: AtomicU64,
    pub inline_records: AtomicU64,
    pub inline_until_ms: std::sync::atomic::AtomicI64,
}

/// The segment being appended to.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    pub base_offset: u64,
    pub next_offset: u64,
    pub len: u64,
    pub file: Arc<File>,
    pub path: Arc<Path>,
    pub entries: Arc<RwLock<IndexEntries>>,
    pub builder: IndexBuilder,
    /// When the first batch was appended (or the log opened), for `segment_ms`.
    pub created_ms: i64,
    /// End of the disk space reserved ahead of `len` (see `LogConfig::preallocate_bytes`).
    pub reserved_to: u64,
}

impl ActiveSegment {
    pub fn view(&self) -> SegmentView {
        SegmentView {
            base_offset: self.base_offset,
            next_offset: self.next_offset,
            len: self.len,
            max_timestamp: self.builder.max_timestamp(),
            file: Arc::clone(&self.file),
            path: Arc::clone(&self.path),
            index: SegmentIndex::Active(Arc::clone(&self.entries)),
        }
    }

    fn with_entries<T>(&self, f: impl FnOnce(&mut IndexEntries) -> T) -> T {
        let mut entries = self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut entries)
    }
}

/// The writer's world.
#[derive(Debug)]
pub(crate) struct Writer {
    pub dir: PathBuf,
    pub config: LogConfig,
    pub sealed: Arc<Vec<SegmentView>>,
    pub active: ActiveSegment,
    /// Set once, by the first write failure; shared with the log handle so readers (health
    /// checks, DescribeTopic) see it without the writer lock, which a commit holds across fsync.
    pub poisoned: Arc<std::sync::OnceLock<String>>,
    pub closed: bool,
    pub last_sync_ms: i64,
    pub dirty: bool,
    pub io: Arc<dyn DiskIo>,
    pub clock: Arc<dyn Clock>,
    pub space: Option<Arc<crate::space::FreeSpace>>,
    /// Stamped into every record written.
    pub partition: u32,
    pub counters: Arc<Counters>,
    pub published: Arc<RwLock<Arc<LogView>>>,
    /// Each idempotent producer's next sequence, from the batches written (or refused) since
    /// open: a batch that does not start there is refused, so a failed batch's successors queued
    /// behind it are never written past the gap.
    pub producer_next: std::collections::HashMap<u64, u64>,
}

/// Opens (creating if needed) a segment data file for appending.
pub(crate) fn open_segment_file(path: &Path, create: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io("opening segment", path, e))
}

impl Writer {
    pub fn publish(&self) {
        let view = Arc::new(LogView { sealed: Arc::clone(&self.sealed), active: self.active.view() });
        *self.published.write().unwrap_or_else(std::sync::PoisonError::into_inner) = view;
        self.refresh_inline();
    }

    /// Recomputes what may be appended without a roll, a reservation or an fsync (see
    /// [`Counters::inline_bytes`]).
    pub fn refresh_inline(&self) {
        let active = &self.active;
        let mut bytes = if active.len == 0 { u64::MAX } else { self.config.segment_bytes.saturating_sub(active.len) };
        if self.config.preallocate_bytes > 0 {
            bytes = bytes.min(active.reserved_to.saturating_sub(active.len));
        }
        let mut until = i64::MAX;
        match self.config.fsync {
            FsyncPolicy::Always => bytes = 0,
            FsyncPolicy::Interval(interval) => until = self.last_sync_ms.saturating_add(interval.as_millis() as i64),
            FsyncPolicy::Never => {}
        }
        if let Some(ms) = self.config.segment_ms
            && active.len > 0
        {
            until = until.min(active.created_ms.saturating_add(ms as i64));
        }
        if self.closed || self.poisoned.get().is_some() {
            bytes = 0;
        }
        let records = u64::from(u32::MAX).saturating_sub(active.next_offset - active.base_offset);
        self.counters.inline_bytes.store(bytes, Ordering::Relaxed);
        self.counters.inline_records.store(records, Ordering::Relaxed);
        self.counters.inline_until_ms.store(until, Ordering::Relaxed);
    }

    /// Refuses an idempotent producer's batch that does not follow its last one.
    fn check_producer_sequence(&self, batch: &EncodedBatch) -> Result<()> {
        let (producer_id, sequence) = batch.producer();
        match self.producer_next.get(&producer_id) {
            Some(&expected) if producer_id != 0 && expected != sequence => {
                Err(Error::ProducerSequence { producer_id, expected, received: sequence })
            }
            _ => Ok(()),
        }
    }

    fn check_writable(&self) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        match self.poisoned.get() {
            Some(cause) => Err(Error::Poisoned { cause: cause.clone() }),
            None => Ok(()),
        }
    }

    fn poison(&mut self, error: &Error) {
        if self.poisoned.get().is_none() {
            tracing::error!(dir = %self.dir.display(), cause = %error, "partition log poisoned; appends refused until reopened");
            // Clients see this cause (DescribeTopic); the log line above has the paths.
            let _first_failure_wins = self.poisoned.set(error.without_paths());
        }
    }

    /// Writes a group of batches, syncs per policy, publishes, and returns one result per batch.
    pub fn append_group(&mut self, batches: Vec<EncodedBatch>) -> Vec<Result<Written>> {
        let mut results = Vec::with_capacity(batches.len());
        for batch in batches {
            let (producer_id, sequence) = batch.producer();
            let count = u64::from(batch.record_count());
            let result = self
                .check_writable()
                .and_then(|()| self.check_producer_sequence(&batch))
                .and_then(|()| self.write_batch(batch));
            if producer_id != 0 {
                // After a failure the producer must resend from the failed batch on.
                let next = if result.is_ok() { sequence + count } else { sequence };
                if result.is_ok() || !self.producer_next.contains_key(&producer_id) {
                    self.producer_next.insert(producer_id, next);
                }
            }
            // A full disk refuses the batch but leaves the log as it was: appends go on once
            // space is freed. Every other write failure is sticky.
            if let Err(error) = &result
                && !matches!(
                    error,
                    Error::Poisoned { .. }
                        | Error::Closed
                        | Error::BatchTooLarge { .. }
                        | Error::DiskFull { .. }
                        | Error::ProducerSequence { .. }
                )
            {
                self.poison(error);
            }
            results.push(result);
        }
        if results.iter().any(Result::is_ok) {
            if let Err(error) = self.sync_for_policy() {
                self.poison(&error);
                let mut first = Some(error);
                for result in results.iter_mut().filter(|r| r.is_ok()) {
                    *result = Err(first.take().unwrap_or_else(|| Error::Poisoned {
                        cause: self.poisoned.get().cloned().unwrap_or_default(),
                    }));
                }
                return results;
            }
            self.publish();
        }
        results
    }

    fn write_batch(&mut self, mut batch: EncodedBatch) -> Result<Written> {
        let len = batch.len() as u64;
        if batch.len() > self.config.max_batch_bytes {
            return Err(Error::BatchTooLarge { size: batch.len(), limit: self.config.max_batch_bytes });
        }
        let count = u64::from(batch.record_count());
        if let Some(space) = &self.space {
            space.admit(len)?;
        }
        self.maybe_roll(len, count)?;
        self.reserve_ahead(len).map_err(|e| self.disk_full_or(e, len))?;
        let active = &mut self.active;
        let base_offset = active.next_offset;
        let position = active.len;
        let relative = u32::try_from(base_offset - active.base_offset)
            .map_err(|_overflow| Error::InvalidArgument("segment offset range exhausted".into()))?;
        let at = u32::try_from(position).map_err(|_overflow| Error::InvalidArgument("segment exceeds 4 GiB".into()))?;
        let bytes = batch.stamp(base_offset, self.partition)?;
        if let Err(source) = self.io.write_at(&active.file, bytes, position) {
            // Cut any partial write so a reopen need not; recovery would cut it anyway.
            let _best_effort = active.file.set_len(position);
            let error = Error::io("writing segment", active.path.to_path_buf(), source);
            return Err(self.disk_full_or(error, len));
        }
        if active.len == 0 {
            active.created_ms = self.clock.now_ms();
        }
        let max_timestamp = batch.max_timestamp();
        {
            let mut entries = active.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            active.builder.observe(&mut entries, relative, at, max_timestamp);
        }
        active.len += len;
        active.next_offset += count;
        self.dirty = true;
        self.counters.appended_batches.fetch_add(1, Ordering::Relaxed);
        let appended = Appended { base_offset, next_offset: base_offset + count };
        let batch = batch.into_batch().ok_or_else(|| Error::InvalidArgument("batch shorter than its header".into()))?;
        Ok(Written { appended, batch })
    }

    /// `error`, or [`Error::DiskFull`] if it is an io error saying the disk is full: nothing of
    /// the batch stays written (a partial write is cut, a roll is retried whole), so the log can
    /// go on once space is freed.
    fn disk_full_or(&self, error: Error, needed: u64) -> Error {
        match &error {
            Error::Io { source, .. } if crate::space::is_disk_full(source) => {
                tracing::warn!(dir = %self.dir.display(), cause = %error, "disk full; append refused");
                let reserve = self.space.as_ref().map_or(0, |s| s.reserve());
                Error::DiskFull { available: 0, reserve, needed }
            }
            _ => error,
        }
    }

    /// Extends the active segment's reserved blocks when the next `len` bytes would pass them.
    fn reserve_ahead(&mut self, len: u64) -> Result<()> {
        let active = &mut self.active;
        let ahead = self.config.preallocate_bytes;
        if ahead == 0 || active.len + len <= active.reserved_to {
            return Ok(());
        }
        let target = (active.len + len + ahead).min(self.config.segment_bytes.max(active.len + len));
        match rustix::fs::fallocate(
            &*active.file,
            rustix::fs::FallocateFlags::KEEP_SIZE,
            active.reserved_to,
            target - active.reserved_to,
        ) {
            Ok(()) => active.reserved_to = target,
            // A file system without fallocate simply gets no reserve.
            Err(rustix::io::Errno::OPNOTSUPP) => active.reserved_to = u64::MAX,
            Err(e) => return Err(Error::io("reserving segment space", active.path.to_path_buf(), e.into())),
        }
        Ok(())
    }

    fn maybe_roll(&mut self, len: u64, count: u64) -> Result<()> {
        let active = &self.active;
        if active.len == 0 {
            return Ok(());
        }
        let full = active.len + len > self.config.segment_bytes;
        let offsets_exhausted = active.next_offset + count - active.base_offset > u64::from(u32::MAX);
        let old =
            self.config.segment_ms.is_some_and(|ms| self.clock.now_ms().saturating_sub(active.created_ms) >= ms as i64);
        if full || offsets_exhausted || old { self.roll() } else { Ok(()) }
    }

    /// Seals the active segment (fsync, index files) and starts a new one at the next offset.
    pub fn roll(&mut self) -> Result<()> {
        self.sync_active()?;
        let active = &self.active;
        release_reserve(&active.file, &active.path, active.len)?;
        let entries = active.with_entries(|entries| {
            active.builder.finish(entries);
            entries.clone()
        });
        let base = active.base_offset;
        // A full disk here leaves the segment active and the roll to be retried whole; a failed
        // fsync of the segment data above stays sticky.
        entries
            .write_files(&layout::index_path(&self.dir, base), &layout::time_index_path(&self.dir, base))
            .map_err(|e| self.disk_full_or(e, 0))?;
        let index = SealedIndex::open(
            &layout::index_path(&self.dir, base),
            &layout::time_index_path(&self.dir, base),
            active.len,
        )?
        .ok_or_else(|| Error::Corrupt {
            path: layout::index_path(&self.dir, base),
            position: 0,
            reason: "index just written does not validate".into(),
        })?;
        let mut sealed_view = active.view();
        sealed_view.index = SegmentIndex::Sealed(Arc::new(index));
        let next = self.create_segment(active.next_offset).map_err(|e| self.disk_full_or(e, 0))?;
        Arc::make_mut(&mut self.sealed).push(sealed_view);
        self.active = next;
        Ok(())
    }

    /// Creates an empty segment file starting at `base_offset` and makes its name durable.
    pub fn create_segment(&self, base_offset: u64) -> Result<ActiveSegment> {
        create_segment(&self.dir, &self.config, self.clock.now_ms(), base_offset)
    }

    /// fsyncs under `Interval` when due; nothing under the other policies.
    pub fn sync_if_due(&mut self) -> Result<()> {
        match self.config.fsync {
            FsyncPolicy::Interval(_) => self.sync_for_policy(),
            FsyncPolicy::Always | FsyncPolicy::Never => Ok(()),
        }
    }

    fn sync_for_policy(&mut self) -> Result<()> {
        match self.config.fsync {
            FsyncPolicy::Always => self.sync_active(),
            FsyncPolicy::Interval(interval) => {
                let due = self.clock.now_ms().saturating_sub(self.last_sync_ms) >= interval.as_millis() as i64;
                if due { self.sync_active() } else { Ok(()) }
            }
            FsyncPolicy::Never => Ok(()),
        }
    }

    /// fsyncs the active segment if anything was written since the last fsync. A failure
    /// poisons the writer: after a failed fsync the kernel may have dropped the dirty pages, so
    /// no later fsync could vouch for them.
    pub fn sync_active(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if let Err(e) = self.io.sync_data(&self.active.file) {
            let error = Error::io("syncing segment", self.active.path.to_path_buf(), e);
            self.poison(&error);
            return Err(error);
        }
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.last_sync_ms = self.clock.now_ms();
        self.dirty = false;
        self.refresh_inline();
        Ok(())
    }

    /// Applies time and size retention; returns how many segments were deleted.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize> {
        let policy =
            RetentionPolicy { retention_ms: self.config.retention_ms, retention_bytes: self.config.retention_bytes };
        let summaries: Vec<SegmentSummary> = self
            .sealed
            .iter()
            .chain(std::iter::once(&self.active.view()))
            .map(|s| SegmentSummary { size: s.len, max_timestamp: s.max_timestamp })
            .collect();
        let count = retention::select(&summaries, &policy, now_ms);
        if count == 0 {
            return Ok(0);
        }
        let removed: Vec<SegmentView> = Arc::make_mut(&mut self.sealed).drain(..count).collect();
        self.publish();
        for segment in &removed {
            remove_segment_files(&self.dir, segment.base_offset)?;
        }
        fsync_dir(&self.dir)?;
        Ok(count)
    }

    /// Removes every record at or after the batch holding `offset`; returns the new end offset.
    pub fn truncate_to(&mut self, offset: u64) -> Result<u64> {
        self.check_writable()?;
        let view = LogView { sealed: Arc::clone(&self.sealed), active: self.active.view() };
        if offset >= view.end_offset() {
            return Ok(view.end_offset());
        }
        let segment = view.segment_for(offset)?.clone();
        let (position, batch_base) = segment.batch_start(offset)?;
        let keep = self.sealed.iter().position(|s| s.base_offset == segment.base_offset);
        // Newest first, so a crash part-way leaves a contiguous prefix of segments.
        let later: Vec<u64> = match keep {
            Some(i) => self.sealed[i + 1..].iter().map(|s| s.base_offset).chain([self.active.base_offset]).collect(),
            None => Vec::new(),
        };
        for base in later.iter().rev() {
            remove_segment_files(&self.dir, *base)?;
        }
        remove_index_files(&self.dir, segment.base_offset)?;
        fsync_dir(&self.dir)?;
        segment.file.set_len(position).map_err(|e| Error::io("truncating segment", segment.path.to_path_buf(), e))?;
        segment.file.sync_all().map_err(|e| Error::io("syncing segment", segment.path.to_path_buf(), e))?;
        if let Some(i) = keep {
            Arc::make_mut(&mut self.sealed).truncate(i);
        }
        self.active = self.reactivate(&segment, position)?;
        self.dirty = false;
        self.publish();
        debug_assert_eq!(self.active.next_offset, batch_base);
        Ok(self.active.next_offset)
    }

    /// Makes `segment`, cut to `len` bytes, the active segment again, rebuilding its index.
    fn reactivate(&self, segment: &SegmentView, len: u64) -> Result<ActiveSegment> {
        let mut entries = IndexEntries::default();
        let mut builder = IndexBuilder::resume(&entries, self.config.index_interval_bytes);
        let target =
            ScanTarget { file: &segment.file, path: &segment.path, base_offset: segment.base_offset, file_len: len };
        let scanned =
            recovery::scan(&target, crate::index::IndexHit::START, &mut entries, &mut builder, Tail::MustBeIntact)?;
        Ok(ActiveSegment {
            base_offset: segment.base_offset,
            next_offset: scanned.next_offset,
            len,
            file: Arc::clone(&segment.file),
            path: Arc::clone(&segment.path),
            entries: Arc::new(RwLock::new(entries)),
            builder,
            created_ms: self.clock.now_ms(),
            reserved_to: len,
        })
    }

    /// Syncs, writes the active segment's index and the clean-shutdown marker. Idempotent.
    pub fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        if self.poisoned.get().is_some() {
            return Ok(());
        }
        self.sync_active()?;
        let active = &self.active;
        let mut entries = active.with_entries(|entries| entries.clone());
        active.builder.finish(&mut entries);
        let base = active.base_offset;
        entries.write_files(&layout::index_path(&self.dir, base), &layout::time_index_path(&self.dir, base))?;
        crate::store::write_atomic(&self.dir.join(layout::CLEAN_SHUTDOWN_FILE), b"")
    }
}

/// Creates an empty segment file starting at `base_offset` and fsyncs the directory.
pub(crate) fn create_segment(dir: &Path, config: &LogConfig, now_ms: i64, base_offset: u64) -> Result<ActiveSegment> {
    let path = layout::log_path(dir, base_offset);
    let file = open_segment_file(&path, true)?;
    fsync_dir(dir)?;
    let entries = IndexEntries::default();
    Ok(ActiveSegment {
        base_offset,
        next_offset: base_offset,
        len: 0,
        file: Arc::new(file),
        path: Arc::from(path),
        builder: IndexBuilder::resume(&entries, config.index_interval_bytes),
        entries: Arc::new(RwLock::new(entries)),
        created_ms: now_ms,
        reserved_to: 0,
    })
}

/// Frees blocks reserved past the end of a segment's data (truncating to its own length does).
pub(crate) fn release_reserve(file: &File, path: &Path, len: u64) -> Result<()> {
    file.set_len(len).map_err(|e| Error::io("releasing reserved segment space", path, e))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("deleting", path, e)),
        _ => Ok(()),
    }
}

fn remove_index_files(dir: &Path, base_offset: u64) -> Result<()> {
    remove_if_present(&layout::index_path(dir, base_offset))?;
    remove_if_present(&layout::time_index_path(dir, base_offset))
}

/// Deletes a segment's data and index files (the caller fsyncs the directory).
pub(crate) fn remove_segment_files(dir: &Path, base_offset: u64) -> Result<()> {
    remove_index_files(dir, base_offset)?;
    remove_if_present(&layout::log_path(dir, base_offset))
}

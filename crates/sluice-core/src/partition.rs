//! One partition of a topic: its log, the end-offset watch that wakes readers, and its
//! idempotent producers.
//!
//! Storage is synchronous; calls into it that may wait on the disk (reads, appends that fsync
//! or are large) run on tokio's blocking pool. Only work that touches nothing but the page
//! cache runs on the calling task, so no runtime thread waits on the disk: a small append that
//! the log says needs no disk (no other appender writing, no roll, no space reservation, no
//! fsync due; see [`INLINE_APPEND_BYTES`] and `PartitionLog::try_complete_inline`), and a read
//! of up to [`INLINE_READ_BYTES`] that the page cache holds whole (`PartitionLog::read_cached`).
//! Appends are queued in call order and meet in the storage's group-commit queue, where they
//! share fsyncs.
//!
//! Idempotent producers share that queue too: a batch's sequence is checked when it is queued,
//! under a short lock that fixes its place in the log, and the producer's later batches may
//! queue behind it at once. The log refuses a batch that does not follow its producer's last
//! one written, so if a batch fails, those queued behind it fail too instead of being written
//! past the gap; a retry of a batch still in flight waits for the original's result.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sluice_storage::{EncodedBatch, FsyncPolicy, LogConfig, LogStats, PartitionLog, ReadResult};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::producers::{Check, ProducerTable, WrittenBatch};
use crate::record::ProducerRef;
use crate::tail::TailCache;

/// Appends up to this size (records' bytes, and encoded bytes of the group written with them)
/// to a partition without fsync-on-append may be written on the calling task: a page-cache
/// write of this size takes microseconds, less than handing it to the blocking pool and back.
pub const INLINE_APPEND_BYTES: usize = 64 << 10;

/// Reads of up to this size are first tried from the page cache on the calling task: the two
/// thread wake-ups of a blocking-pool read cost about as much as copying a few hundred KiB, and
/// this is the default fetch size and a group delivery's read, so the copy stays as short as
/// the encoding of one response, which runs on the task anyway.
pub const INLINE_READ_BYTES: usize = 1 << 20;

/// Runs a storage call on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Internal(format!("storage task failed: {e}")))?
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record.
    pub base_offset: u64,
    /// True when this was a retried idempotent batch (nothing written).
    pub duplicate: bool,
}

/// What opening a partition needs.
#[derive(Debug, Clone)]
pub struct PartitionSpec {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number.
    pub id: u32,
    /// The partition's log directory.
    pub dir: PathBuf,
    /// The producer-state snapshot file.
    pub snapshot: PathBuf,
    /// Storage settings.
    pub config: LogConfig,
    /// Memory and idempotence settings.
    pub options: PartitionOptions,
}

/// The broker-wide settings every partition opens with.
#[derive(Debug, Clone)]
pub struct PartitionOptions {
    /// Tail cache budget.
    pub tail_cache_bytes: usize,
    /// Recent batches remembered per idempotent producer (see [`crate::producers`]).
    pub idempotence_window: usize,
    /// The free-space reserve shared by every partition of the broker.
    pub space: Option<Arc<sluice_storage::space::FreeSpace>>,
}

impl Default for PartitionOptions {
    fn default() -> Self {
        PartitionOptions {
            tail_cache_bytes: 2 << 20,
            idempotence_window: crate::producers::DEFAULT_WINDOW,
            space: None,
        }
    }
}

/// Loads the producer table: the snapshot if it is usable, then the batches after it. Returns
/// the table, the end offset the snapshot covered, and how many batch headers were replayed.
/// The snapshot is a cache: whatever is wrong with it (missing, unreadable, damaged, ahead of
/// the log), the log is replayed instead, with a warning.
fn load_producers(log: &PartitionLog, snapshot: &Path, window: usize) -> Result<(ProducerTable, u64, u64)> {
    let (start, end) = log.offsets();
    let replay_all = |problem: &str| {
        tracing::warn!(snapshot = %snapshot.display(), problem, "producer snapshot not used; rebuilding producer state from the log");
        (start, ProducerTable::new(window))
    };
    let (covered, mut producers) = match std::fs::read(snapshot) {
        Ok(bytes) => {
            match std::str::from_utf8(&bytes).ok().and_then(|text| ProducerTable::decode_snapshot(text, window)) {
                Some((covered, table)) if covered <= end => (covered, table),
                Some(_) => replay_all("it covers offsets past the end of the log"),
                None => replay_all("it is damaged or of another format version"),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (start, ProducerTable::new(window)),
        Err(e) => replay_all(&format!("it cannot be read: {e}")),
    };
    let mut replayed = 0;
    log.visit_batch_headers(covered.max(start), |h| {
        replayed += 1;
        if h.producer_id != 0 {
            let batch = WrittenBatch {
                first_sequence: h.producer_sequence,
                record_count: h.record_count,
                base_offset: h.base_offset,
            };
            producers.record(h.producer_id, batch);
        }
    })?;
    producers.retain_after(start);
    Ok((producers, covered, replayed))
}

#[derive(Debug)]
struct Inner {
    topic: Arc<str>,
    id: u32,
    log: PartitionLog,
    snapshot: PathBuf,
    /// End offset covered by the last snapshot written (or loaded).
    snapshot_covers: std::sync::atomic::AtomicU64,
    /// Batch headers replayed when the partition opened.
    replayed: u64,
    end: watch::Sender<u64>,
    /// Idempotent producers: what was written, and what is queued and not yet written. Held
    /// only to check a batch's sequence and queue it (never across a write).
    producers: std::sync::Mutex<Producers>,
    /// Recent batches; a std mutex held only to insert or clone a few `Bytes` handles.
    tail: std::sync::Mutex<TailCache>,
    /// Reads the tail cache could not serve, which went to the segment files.
    log_reads: std::sync::atomic::AtomicU64,
    /// Damaged batches found by reads, by first offset (lost segments are the log's to report).
    damage: std::sync::Mutex<std::collections::BTreeMap<u64, Damage>>,
    /// Reads that failed on damaged data.
    damage_reads: std::sync::atomic::AtomicU64,
}

/// Offsets `from..to` of a partition that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// First unreadable offset.
    pub from: u64,
    /// First readable offset after it.
    pub to: u64,
    /// What happened to them.
    pub kind: DamageKind,
}

/// Why offsets cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DamageKind {
    /// A batch failed its checks when read.
    Corrupt {
        /// What was wrong with it.
        reason: String,
    },
    /// The segment file that held them is gone (found when the partition opened).
    Missing,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            DamageKind::Corrupt { reason } => write!(f, "offsets {}..{} damaged ({reason})", self.from, self.to),
            DamageKind::Missing => write!(f, "offsets {}..{} missing (segment file lost)", self.from, self.to),
        }
    }
}

/// A batch of an idempotent producer queued and not yet written; retries of it wait for `done`.
#[derive(Debug)]
struct InFlightBatch {
    first_sequence: u64,
    record_count: u32,
    /// The log's end when it was queued: it lands at or after it.
    queued_at: u64,
    done: watch::Receiver<Option<std::result::Result<u64, String>>>,
}

/// A partition's idempotent producers.
#[derive(Debug, Default)]
struct Producers {
    table: ProducerTable,
    in_flight: std::collections::HashMap<u64, std::collections::VecDeque<InFlightBatch>>,
}

/// What to do with an idempotent batch.
enum Admit {
    /// Queued: complete it, then report it.
    Queued(QueuedAppend, watch::Sender<Option<std::result::Result<u64, String>>>),
    /// Already written at this offset.
    Written(u64),
    /// The same batch is in flight: wait for its result.
    Wait(watch::Receiver<Option<std::result::Result<u64, String>>>),
}

/// An append queued with [`PartitionHandle::enqueue`]. Dropped without
/// [`QueuedAppend::complete`], it is completed in the background, so its batch is still
/// written in its turn and the queue forgets it.
#[derive(Debug)]
pub struct QueuedAppend {
    partition: PartitionHandle,
    ticket: Option<sluice_storage::AppendTicket>,
    inline: bool,
}

impl QueuedAppend {
    /// True when [`QueuedAppend::complete`] may write on the calling task (a small append
    /// without fsync-on-append); it does only if that touches nothing but the page cache.
    pub fn is_inline(&self) -> bool {
        self.inline
    }

    /// Waits until the batch is durable per the topic's fsync policy and visible to readers;
    /// returns its base offset.
    pub async fn complete(mut self) -> Result<u64> {
        let Some(ticket) = self.ticket.take() else {
            return Err(Error::Internal("append completed twice".into()));
        };
        let partition = self.partition.clone();
        let ticket = if self.inline {
            match partition.try_complete_inline(ticket) {
                Ok(written) => return Ok(written.map_err(|e| self.partition.map_storage(e))?.appended.base_offset),
                Err(ticket) => ticket,
            }
        } else {
            ticket
        };
        let written =
            blocking(move || Ok(partition.complete(ticket))).await?.map_err(|e| self.partition.map_storage(e))?;
        Ok(written.appended.base_offset)
    }
}

impl Drop for QueuedAppend {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else { return };
        let partition = self.partition.clone();
        let finish = move || drop(partition.complete(ticket));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(finish)),
            Err(_) => finish(),
        }
    }
}

/// A cheap-clone handle to one partition.
#[derive(Debug, Clone)]
pub struct PartitionHandle {
    inner: Arc<Inner>,
}

impl PartitionHandle {
    /// Opens (or creates) the partition's log and rebuilds its producer table from the snapshot
    /// and the batch headers after it.
    pub async fn open(spec: PartitionSpec) -> Result<Self> {
        let PartitionSpec { topic, id, dir, snapshot, config, options } = spec;
        let snapshot_path = snapshot.clone();
        let (space, window) = (options.space.clone(), options.idempotence_window);
        let (log, producers, covered, replayed) = blocking(move || {
            let started = Instant::now();
            let env = sluice_storage::LogEnv { space, partition: id, ..sluice_storage::LogEnv::default() };
            let log = PartitionLog::open_with(&dir, config, env)?;
            let (producers, covered, replayed) = load_producers(&log, &snapshot_path, window)?;
            tracing::debug!(dir = %dir.display(), elapsed_ms = started.elapsed().as_millis() as u64, producers = producers.len(), replayed, "partition opened");
            Ok((log, producers, covered, replayed))
        })
        .await?;
        let (end, _) = watch::channel(log.offsets().1);
        let tail = std::sync::Mutex::new(TailCache::new(options.tail_cache_bytes));
        Ok(PartitionHandle {
            inner: Arc::new(Inner {
                topic,
                id,
                log,
                snapshot,
                snapshot_covers: std::sync::atomic::AtomicU64::new(covered),
                replayed,
                end,
                producers: std::sync::Mutex::new(Producers { table: producers, in_flight: Default::default() }),
                tail,
                log_reads: std::sync::atomic::AtomicU64::new(0),
                damage: std::sync::Mutex::default(),
                damage_reads: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// Batch headers replayed to rebuild producer state when the partition opened.
    pub fn replayed_batches(&self) -> u64 {
        self.inner.replayed
    }

    /// Writes the producer-state snapshot if the log grew since the last one, so a restart only
    /// replays what came after. Crash guarantee: the file is replaced atomically; a crash leaves
    /// the previous snapshot, which is still correct (it covers fewer batches).
    pub async fn snapshot_producers(&self) -> Result<()> {
        let (text, end) = {
            let producers = self.inner.producers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Every idempotent batch below the earliest one in flight is recorded: the table
            // covers the log up to there (the replay at open re-reads the rest).
            let (start, end) = self.inner.log.offsets();
            let in_flight = producers.in_flight.values().flatten().map(|b| b.queued_at).min();
            let end = in_flight.map_or(end, |at| at.min(end));
            if end <= self.inner.snapshot_covers.load(std::sync::atomic::Ordering::Acquire) {
                return Ok(());
            }
            let mut table = producers.table.clone();
            table.retain_after(start);
            (table.encode_snapshot(end), end)
        };
        let path = self.inner.snapshot.clone();
        blocking(move || Ok(sluice_storage::store::write_atomic(&path, text.as_bytes())?)).await?;
        self.inner.snapshot_covers.fetch_max(end, std::sync::atomic::Ordering::AcqRel);
        Ok(())
    }

    /// Partition number.
    pub fn id(&self) -> u32 {
        self.inner.id
    }

    fn map_storage(&self, error: sluice_storage::Error) -> Error {
        let (topic, partition) = (self.inner.topic.to_string(), self.inner.id);
        match error {
            sluice_storage::Error::DataLoss { from, to, ref path, position, ref reason } => {
                self.inner.damage_reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let found = Damage { from, to, kind: DamageKind::Corrupt { reason: reason.clone() } };
                let new = path.is_some()
                    && self
                        .inner
                        .damage
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(from, found)
                        .is_none();
                if new {
                    tracing::error!(%topic, partition, from, to, file = ?path, position, %reason, "damaged batch found while reading; these offsets cannot be served");
                }
                let reason = if path.is_some() { format!("damaged batch: {reason}") } else { reason.clone() };
                Error::DataLoss { topic, partition, from, to, reason }
            }
            sluice_storage::Error::Corrupt { path, position, reason } => {
                self.inner.damage_reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(%topic, partition, file = %path.display(), position, %reason, "damaged data found while reading");
                Error::Corrupt { topic, partition, reason }
            }
            sluice_storage::Error::Poisoned { cause } => Error::PartitionReadOnly { topic, partition, cause },
            sluice_storage::Error::OffsetOutOfRange { requested, start, end } => {
                Error::OffsetOutOfRange { requested, start, end }
            }
            sluice_storage::Error::Closed => Error::ShuttingDown,
            other => Error::from(other),
        }
    }

    async fn append_batch(
        &self,
        size: usize,
        encode: impl FnOnce() -> Result<EncodedBatch> + Send + 'static,
    ) -> Result<u64> {
        // Encoded here, not on the blocking pool: its buffer then comes from (and returns to)
        // the runtime threads' allocator caches. A blocking-pool thread, one of many, often
        // had to take fresh memory for it, and fresh memory costs a zero-filled page fault.
        self.enqueue(encode()?, size).complete().await
    }

    /// Queues `batch` (of `size` record bytes) behind every append queued before it, without
    /// waiting: offsets follow the order of these calls, however the completions are scheduled.
    /// Crash guarantee: none until [`QueuedAppend::complete`] returns; then that of the
    /// topic's fsync policy.
    pub fn enqueue(&self, batch: EncodedBatch, size: usize) -> QueuedAppend {
        let inline = size <= INLINE_APPEND_BYTES && !matches!(self.inner.log.config_fsync(), FsyncPolicy::Always);
        QueuedAppend { partition: self.clone(), ticket: Some(self.inner.log.enqueue_append(batch)), inline }
    }

    /// Waits for a queued append (blocking); whichever appender writes a group publishes it.
    fn complete(&self, ticket: sluice_storage::AppendTicket) -> sluice_storage::Result<sluice_storage::Written> {
        self.inner.log.complete_append_with(ticket, |group| self.publish(group))
    }

    /// Completes a queued append on the calling thread if that waits on nothing (see the
    /// module docs); otherwise gives the ticket back.
    fn try_complete_inline(
        &self,
        ticket: sluice_storage::AppendTicket,
    ) -> std::result::Result<sluice_storage::Result<sluice_storage::Written>, sluice_storage::AppendTicket> {
        self.inner.log.try_complete_inline(ticket, INLINE_APPEND_BYTES as u64, |group| self.publish(group))
    }

    /// Makes a written group visible to readers: first the tail cache, then the end-offset
    /// watch, so a reader woken by the watch finds every batch of the group in memory.
    fn publish(&self, group: &[sluice_storage::Result<sluice_storage::Written>]) {
        let mut tail = self.inner.tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for written in group.iter().flatten() {
            tail.insert(written.batch.clone());
        }
        drop(tail);
        let visible_end = self.inner.log.offsets().1;
        self.inner.end.send_if_modified(|end| {
            let advanced = visible_end > *end;
            *end = (*end).max(visible_end);
            advanced
        });
    }

    /// Appends the batch `encode` builds (on the calling task) once it is durable per the
    /// topic's fsync policy. With `producer`, a retry of an already written batch returns the
    /// original offsets instead (the batch must carry the same producer id and sequence).
    pub async fn append(
        &self,
        record_count: u32,
        size: usize,
        producer: Option<ProducerRef>,
        encode: impl FnOnce() -> Result<EncodedBatch> + Send + 'static,
    ) -> Result<Appended> {
        let Some(producer) = producer else {
            return Ok(Appended { base_offset: self.append_batch(size, encode).await?, duplicate: false });
        };
        // Encoded before the lock: only the check and the queueing hold it.
        let batch = encode()?;
        let (queued, done) = match self.admit(producer, record_count, batch, size)? {
            Admit::Written(base_offset) => return Ok(Appended { base_offset, duplicate: true }),
            Admit::Wait(mut done) => {
                let result = done.wait_for(Option::is_some).await.map(|r| r.clone()).ok().flatten();
                return match result {
                    Some(Ok(base_offset)) => Ok(Appended { base_offset, duplicate: true }),
                    // The original failed: this retry was not written either; the client may
                    // send it again.
                    Some(Err(cause)) => Err(Error::RetryFailed(cause)),
                    None => Err(Error::RetryFailed("the original request was abandoned".into())),
                };
            }
            Admit::Queued(queued, done) => (queued, done),
        };
        // On its own task: a caller that goes away (a client gone) must not leave the batch
        // unrecorded, or its retries would wait forever.
        let partition = self.clone();
        let finished = tokio::spawn(partition.finish_idempotent(producer, record_count, queued, done));
        let base_offset = finished.await.map_err(|e| Error::Internal(format!("append task failed: {e}")))??;
        Ok(Appended { base_offset, duplicate: false })
    }

    /// Waits for a queued idempotent batch, records it and tells retries waiting for it.
    async fn finish_idempotent(
        self,
        producer: ProducerRef,
        record_count: u32,
        queued: QueuedAppend,
        done: watch::Sender<Option<std::result::Result<u64, String>>>,
    ) -> Result<u64> {
        let result = queued.complete().await;
        let mut producers = self.inner.producers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(queue) = producers.in_flight.get_mut(&producer.producer_id) {
            queue.retain(|b| b.first_sequence != producer.first_sequence);
            if queue.is_empty() {
                producers.in_flight.remove(&producer.producer_id);
            }
        }
        if let Ok(base_offset) = &result {
            let batch =
                WrittenBatch { first_sequence: producer.first_sequence, record_count, base_offset: *base_offset };
            producers.table.record(producer.producer_id, batch);
        }
        drop(producers);
        let _no_retry_waiting = done.send(Some(result.as_ref().map(|o| *o).map_err(|e| e.to_string())));
        result
    }

    /// Checks an idempotent batch's sequence against what is written and in flight, and queues
    /// it if it is next.
    fn admit(&self, producer: ProducerRef, record_count: u32, batch: EncodedBatch, size: usize) -> Result<Admit> {
        let mut producers = self.inner.producers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let in_flight = producers.in_flight.get(&producer.producer_id);
        if let Some(same) = in_flight.and_then(|q| {
            q.iter().find(|b| b.first_sequence == producer.first_sequence && b.record_count == record_count)
        }) {
            return Ok(Admit::Wait(same.done.clone()));
        }
        let expected = in_flight.and_then(|q| q.back()).map(|b| b.first_sequence + u64::from(b.record_count));
        match expected {
            Some(expected) if producer.first_sequence != expected => {
                // Not next after what is in flight: a retry of a written batch, or a gap.
                return match producers.table.check(producer.producer_id, producer.first_sequence, record_count)? {
                    Check::Duplicate(batch) => Ok(Admit::Written(batch.base_offset)),
                    Check::Append => Err(Error::OutOfOrderSequence {
                        producer_id: producer.producer_id,
                        expected,
                        received: producer.first_sequence,
                    }),
                };
            }
            Some(_) => {}
            None => {
                if let Check::Duplicate(batch) =
                    producers.table.check(producer.producer_id, producer.first_sequence, record_count)?
                {
                    return Ok(Admit::Written(batch.base_offset));
                }
            }
        }
        let queued = self.enqueue(batch, size);
        let (done, waiting) = watch::channel(None);
        let queued_at = self.inner.log.offsets().1;
        let entry = InFlightBatch { first_sequence: producer.first_sequence, record_count, queued_at, done: waiting };
        producers.in_flight.entry(producer.producer_id).or_default().push_back(entry);
        Ok(Admit::Queued(queued, done))
    }

    /// Reads whole batches from the one holding `offset`: from the tail cache when it holds
    /// them, otherwise from the log: on this task when the page cache holds a small read,
    /// else on the blocking pool.
    pub async fn read(&self, offset: u64, max_bytes: usize) -> Result<ReadResult> {
        let (start_offset, end_offset) = self.offsets();
        let cached = self.inner.tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner).read(offset, max_bytes);
        if let Some(batches) = cached.filter(|_| offset >= start_offset) {
            return Ok(ReadResult { batches, start_offset, end_offset });
        }
        self.inner.log_reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if max_bytes <= INLINE_READ_BYTES
            && let Some(read) = self.inner.log.read_cached(offset, max_bytes)
        {
            return Ok(read);
        }
        let log = self.inner.log.clone();
        blocking(move || Ok(log.read(offset, max_bytes))).await?.map_err(|e| self.map_storage(e))
    }

    /// Reads since open that the tail cache could not serve (readers behind the recent
    /// batches, or batches larger than the cache): each read the segment files, from the page
    /// cache or on the blocking pool.
    pub fn log_reads(&self) -> u64 {
        self.inner.log_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records read alone from their positions in their batches (see
    /// `sluice_storage::Record::position`), in one blocking call; each may fail on its own.
    pub async fn read_records(&self, wanted: Vec<(u64, u32)>) -> Result<Vec<Result<sluice_storage::Record>>> {
        let log = self.inner.log.clone();
        let read = blocking(move || Ok(wanted.iter().map(|&(o, p)| log.read_record(o, p)).collect::<Vec<_>>())).await?;
        Ok(read.into_iter().map(|r| r.map_err(|e| self.map_storage(e))).collect())
    }

    /// The first offset with a timestamp at or after `timestamp`, if any.
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>> {
        let log = self.inner.log.clone();
        blocking(move || Ok(log.offset_for_timestamp(timestamp))).await?.map_err(|e| self.map_storage(e))
    }

    /// Start and end offsets.
    pub fn offsets(&self) -> (u64, u64) {
        self.inner.log.offsets()
    }

    /// Waits until the end offset passes `offset`, the deadline passes, or `cancel` fires.
    /// Returns the end offset then.
    pub async fn wait_past(&self, offset: u64, deadline: tokio::time::Instant, cancel: &CancellationToken) -> u64 {
        let mut end = self.inner.end.subscribe();
        let wait = end.wait_for(|end| *end > offset);
        tokio::select! {
            _ = wait => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = cancel.cancelled() => {}
        }
        *self.inner.end.borrow()
    }

    /// A receiver of end-offset changes.
    pub fn watch_end(&self) -> watch::Receiver<u64> {
        self.inner.end.subscribe()
    }

    /// Range, size and counters of the log.
    pub fn stats(&self) -> LogStats {
        self.inner.log.stats()
    }

    /// Offset ranges known to be unreadable, in offset order: segments lost before the
    /// partition opened, and damaged batches that reads have found since. Ranges that
    /// retention has deleted are no longer listed.
    pub fn damage(&self) -> Vec<Damage> {
        let start = self.offsets().0;
        let mut all: Vec<Damage> = self
            .inner
            .log
            .missing_ranges()
            .into_iter()
            .map(|m| Damage { from: m.from, to: m.to, kind: DamageKind::Missing })
            .collect();
        let mut found = self.inner.damage.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        found.retain(|_, d| d.to > start);
        all.extend(found.values().cloned());
        all.retain(|d| d.to > start);
        all.sort_by_key(|d| d.from);
        all
    }

    /// Reads that failed on damaged data since the partition opened.
    pub fn damage_reads(&self) -> u64 {
        self.inner.damage_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The error that made the partition read-only, if any.
    pub fn poisoned(&self) -> Option<String> {
        self.inner.log.poisoned()
    }

    /// The underlying log (for maintenance: retention, sync, config changes).
    pub(crate) fn log(&self) -> &PartitionLog {
        &self.inner.log
    }
}

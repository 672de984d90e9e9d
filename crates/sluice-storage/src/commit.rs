//! Group commit: concurrent appenders share one write-and-fsync.
//!
//! An appender queues its batch. If no append is in progress it becomes the leader: it takes
//! every queued batch (its own included), writes them all and fsyncs once, then posts each
//! appender's result and wakes the followers. Appenders that queued while a leader was busy wait;
//! the next of them to wake leads the following group. One fsync thus covers as many appends as
//! arrived during the previous one, which is what lets `FsyncPolicy::Always` approach the disk's
//! throughput with many producers.
//!
//! A leader whose group is done leads the next group too if appends queued meanwhile (up to
//! [`MAX_GROUPS_PER_LEADER`] groups): handing over to a sleeping follower would put a thread
//! wake-up (tens of microseconds on a VM) between every two fsyncs.
//!
//! Lock order: the queue's mutex is never held while the group is written (the leader releases
//! it first), so it never nests with the log's writer mutex.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::codec::{Batch, EncodedBatch};
use crate::error::{Error, Result};

/// Where a batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset after its last record (the log's end offset once the batch is visible).
    pub next_offset: u64,
}

/// Groups one appender may lead before it returns its own result; bounds the leader's latency.
pub const MAX_GROUPS_PER_LEADER: usize = 4;

/// An appended batch: where it landed, and its bytes as stored (shared, not copied), for callers
/// that keep recent batches in memory.
#[derive(Debug, Clone)]
pub struct Written {
    /// Where the batch landed.
    pub appended: Appended,
    /// The batch exactly as written.
    pub batch: Batch,
}

#[derive(Debug, Default)]
struct QueueState {
    pending: Vec<(u64, EncodedBatch)>,
    results: HashMap<u64, Result<Written>>,
    next_ticket: u64,
    leader_active: bool,
    /// Appenders blocked on `done`. A leader wakes them only if there are any: a condvar
    /// notify is a futex syscall even with no one waiting, and the lone appender (the common
    /// case at low rates) would pay it on every append.
    waiters: usize,
}

/// The queue of appends waiting to be written.
#[derive(Debug, Default)]
pub(crate) struct CommitQueue {
    state: Mutex<QueueState>,
    done: Condvar,
}

fn lock(mutex: &Mutex<QueueState>) -> MutexGuard<'_, QueueState> {
    // The queue's state stays consistent even if a holder panicked: every update is one push,
    // insert or flag store.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Clears `leader_active` and wakes waiters even if the leader's write panics, so followers
/// are never left waiting for a leader that is gone.
struct LeaderGuard<'a> {
    queue: &'a CommitQueue,
    tickets: Vec<u64>,
    results: Vec<Result<Written>>,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.queue.state);
        let mut results = std::mem::take(&mut self.results).into_iter();
        for ticket in self.tickets.drain(..) {
            let result = results
                .next()
                .unwrap_or_else(|| Err(Error::Poisoned { cause: "the append that carried this batch failed".into() }));
            state.results.insert(ticket, result);
        }
        state.leader_active = false;
        if state.waiters > 0 {
            self.queue.done.notify_all();
        }
    }
}

impl CommitQueue {
    /// Queues `batch` and returns its result once it is written by whichever appender leads.
    /// `write` is called with a group of batches and returns one result per batch, in order.
    pub fn submit(
        &self,
        batch: EncodedBatch,
        write: impl FnMut(Vec<EncodedBatch>) -> Vec<Result<Written>>,
    ) -> Result<Written> {
        let ticket = self.enqueue(batch);
        self.wait(ticket, write)
    }

    /// Queues `batch` behind every batch queued before it and returns its ticket at once.
    /// Batches are written in ticket order, so a caller that queues in order gets offsets in
    /// that order however its waits are scheduled. Every ticket must be passed to
    /// [`CommitQueue::wait`], or its result is kept forever.
    pub fn enqueue(&self, batch: EncodedBatch) -> u64 {
        let mut state = lock(&self.state);
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.pending.push((ticket, batch));
        ticket
    }

    /// Returns the result of `ticket`'s batch once it is written, leading the write of the
    /// queued batches (with `write`) when no other appender is.
    pub fn wait(
        &self,
        ticket: u64,
        mut write: impl FnMut(Vec<EncodedBatch>) -> Vec<Result<Written>>,
    ) -> Result<Written> {
        let mut state = lock(&self.state);
        let mut groups_led = 0;
        loop {
            let done = state.results.contains_key(&ticket);
            let may_lead = !state.leader_active && !state.pending.is_empty();
            if done && !(may_lead && groups_led > 0 && groups_led < MAX_GROUPS_PER_LEADER) {
                return state.results.remove(&ticket).unwrap_or(Err(Error::Closed));
            }
            if !may_lead {
                state.waiters += 1;
                state = self.done.wait(state).unwrap_or_else(PoisonError::into_inner);
                state.waiters -= 1;
                continue;
            }
            groups_led += 1;
            state.leader_active = true;
            let (tickets, batches): (Vec<u64>, Vec<EncodedBatch>) =
                std::mem::take(&mut state.pending).into_iter().unzip();
            drop(state);
            let mut guard = LeaderGuard { queue: self, tickets, results: Vec::new() };
            guard.results = write(batches);
            drop(guard);
            state = lock(&self.state);
        }
    }

    /// Like [`CommitQueue::wait`], but only if it needs no waiting: returns the result if
    /// another appender wrote the batch already, or leads one group if no one else is writing
    /// and `may_write` accepts every queued batch; otherwise `None`, and the ticket stays valid.
    pub fn try_wait(
        &self,
        ticket: u64,
        may_write: impl FnOnce(&[(u64, EncodedBatch)]) -> bool,
        write: impl FnOnce(Vec<EncodedBatch>) -> Vec<Result<Written>>,
    ) -> Option<Result<Written>> {
        let mut state = lock(&self.state);
        if let Some(result) = state.results.remove(&ticket) {
            return Some(result);
        }
        if state.leader_active || !state.pending.iter().any(|(t, _)| *t == ticket) || !may_write(&state.pending) {
            return None;
        }
        state.leader_active = true;
        let (tickets, batches): (Vec<u64>, Vec<EncodedBatch>) = std::mem::take(&mut state.pending).into_iter().unzip();
        drop(state);
        let mut guard = LeaderGuard { queue: self, tickets, results: Vec::new() };
        guard.results = write(batches);
        drop(guard);
        lock(&self.state).results.remove(&ticket)
    }

    /// Appends queued behind the one being written.
    pub fn queued(&self) -> usize {
        lock(&self.state).pending.len()
    }
}

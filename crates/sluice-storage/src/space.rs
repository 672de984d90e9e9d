//! The disk-space guard that every partition on one file system shares.
//!
//! Appends are refused with [`Error::DiskFull`] while free space is below a reserve, before the
//! disk is completely full: the small files the broker writes when it cannot refuse (index
//! files at a roll, group offsets, producer snapshots, the shutdown flush) then still fit. As
//! soon as space is back (a topic deleted, files removed), appends are admitted again; a full
//! disk never makes a partition read-only.
//!
//! Free space is measured with `statvfs` at most every [`REFRESH_MS`] while there is room, and
//! on every append while there is not (so freed space is seen at once); between measurements
//! each admitted append is subtracted from the estimate, so partitions writing at once cannot
//! together overshoot the reserve by more than what one interval's measurement misses.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::io::Clock;

/// Longest time between two measurements of free space while appends are admitted.
pub const REFRESH_MS: i64 = 100;

/// Free space above the reserve below which the disk counts as full (see [`FreeSpace::is_low`]).
pub const LOW_MARGIN: u64 = 1 << 20;

/// Free space of the file system holding a directory, and the reserve kept on it.
#[derive(Debug)]
pub struct FreeSpace {
    dir: PathBuf,
    reserve: u64,
    /// Bytes free as last measured, minus the bytes admitted since.
    estimate: AtomicU64,
    measured_at_ms: AtomicI64,
    /// Set once a measurement failed, so the warning is logged once.
    warned: AtomicBool,
    clock: Arc<dyn Clock>,
}

impl FreeSpace {
    /// A guard for the file system of `dir` that keeps `reserve` bytes free.
    pub fn new(dir: impl Into<PathBuf>, reserve: u64, clock: Arc<dyn Clock>) -> Self {
        let space = FreeSpace {
            dir: dir.into(),
            reserve,
            estimate: AtomicU64::new(u64::MAX),
            measured_at_ms: AtomicI64::new(i64::MIN),
            warned: AtomicBool::new(false),
            clock,
        };
        space.measure(space.clock.now_ms());
        space
    }

    /// The reserve in bytes.
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    fn measure(&self, now_ms: i64) {
        match rustix::fs::statvfs(&self.dir) {
            Ok(stat) => self.estimate.store(stat.f_bavail.saturating_mul(stat.f_frsize), Ordering::Relaxed),
            Err(e) => {
                // Without a measurement appends are admitted: the write itself still reports a
                // full disk.
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(dir = %self.dir.display(), cause = %e, "cannot measure free disk space; the reserve is not enforced");
                }
                self.estimate.store(u64::MAX, Ordering::Relaxed);
            }
        }
        self.measured_at_ms.store(now_ms, Ordering::Relaxed);
    }

    fn fits(&self, len: u64) -> bool {
        self.estimate.load(Ordering::Relaxed) >= self.reserve.saturating_add(len)
    }

    /// Free bytes now (measured if the last measurement is stale).
    pub fn available(&self) -> u64 {
        let now = self.clock.now_ms();
        if now.saturating_sub(self.measured_at_ms.load(Ordering::Relaxed)) >= REFRESH_MS {
            self.measure(now);
        }
        self.estimate.load(Ordering::Relaxed)
    }

    /// True while free space is within [`LOW_MARGIN`] of the reserve: too little for the next
    /// batch of ordinary size, so the disk counts as full for readiness and topic creation.
    pub fn is_low(&self) -> bool {
        self.available() < self.reserve.saturating_add(LOW_MARGIN)
    }

    /// Admits an append of `len` bytes, or refuses it with [`Error::DiskFull`] if it would
    /// leave less than the reserve free.
    pub fn admit(&self, len: u64) -> Result<()> {
        let now = self.clock.now_ms();
        let stale = now.saturating_sub(self.measured_at_ms.load(Ordering::Relaxed)) >= REFRESH_MS;
        if stale || !self.fits(len) {
            self.measure(now);
        }
        if !self.fits(len) {
            return Err(self.full(len));
        }
        let _always_some =
            self.estimate.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |e| Some(e.saturating_sub(len)));
        Ok(())
    }

    /// The error for an append of `needed` bytes that does not fit.
    pub fn full(&self, needed: u64) -> Error {
        Error::DiskFull { available: self.estimate.load(Ordering::Relaxed), reserve: self.reserve, needed }
    }
}

/// True for an io error that means the disk (or the user's quota) is full.
pub fn is_disk_full(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error() || code == rustix::io::Errno::DQUOT.raw_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::SystemClock;

    #[test]
    fn appends_are_refused_inside_the_reserve_and_admitted_outside_it() {
        let dir = tempfile::tempdir().unwrap();
        let roomy = FreeSpace::new(dir.path(), 0, Arc::new(SystemClock));
        roomy.admit(4096).unwrap();
        let free = roomy.available();
        assert!(free > 0);
        let tight = FreeSpace::new(dir.path(), free.saturating_mul(2).max(1 << 40), Arc::new(SystemClock));
        assert!(tight.is_low());
        match tight.admit(1) {
            Err(Error::DiskFull { reserve, needed: 1, .. }) => assert_eq!(reserve, tight.reserve()),
            other => panic!("expected DiskFull, got {other:?}"),
        }
    }

    #[test]
    fn full_disk_errors_are_told_apart_from_other_io_errors() {
        assert!(is_disk_full(&std::io::Error::from_raw_os_error(28)));
        assert!(!is_disk_full(&std::io::Error::from_raw_os_error(5)), "EIO is not a full disk");
    }
}

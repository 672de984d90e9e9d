//! The seams between the log and the operating system: disk writes, fsync and the clock.
//!
//! Production uses [`OsDisk`] and [`SystemClock`]. Tests inject their own to count fsyncs, hold
//! one open to observe group commit, or fail a write the way a full disk would.

use std::fmt::Debug;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Writes and syncs segment data.
pub trait DiskIo: Send + Sync + Debug + 'static {
    /// Writes all of `bytes` at `position`.
    fn write_at(&self, file: &File, bytes: &[u8], position: u64) -> io::Result<()> {
        file.write_all_at(bytes, position)
    }

    /// Forces the file's data (and the metadata needed to read it, such as its length) to disk.
    fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }
}

/// The real disk.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsDisk;

impl DiskIo for OsDisk {}

/// Wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + Debug + 'static {
    /// Now, in ms since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// fsyncs a directory so that files created, renamed or deleted in it survive a crash.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("syncing directory", dir, e))
}

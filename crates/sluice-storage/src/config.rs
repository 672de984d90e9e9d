//! Configuration of one partition log.

use std::time::Duration;

use crate::error::{Error, Result};

/// When appended data is forced to disk, and so what survives a crash.
///
/// | policy        | an append returns after      | after a process crash (`kill -9`) | after power loss / kernel crash |
/// |---------------|------------------------------|------------------------------------|---------------------------------|
/// | `Always`      | its batch is fsynced         | every acknowledged batch           | every acknowledged batch        |
/// | `Interval(d)` | its batch is written         | every acknowledged batch           | batches acknowledged up to `d` before the crash may be lost |
/// | `Never`       | its batch is written         | every acknowledged batch           | anything since the last segment roll may be lost |
///
/// Under every policy a segment is fsynced when it is sealed, so recovery only ever has to
/// validate the active segment, and the log is always cut at a batch boundary: a torn batch is
/// dropped, never served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// fsync before acknowledging; concurrent appends share one fsync (group commit).
    #[default]
    Always,
    /// fsync at most this often, on the append path; appends are acknowledged once written.
    Interval(Duration),
    /// never fsync on append (the OS writes back when it likes); segments are still fsynced on roll and close.
    Never,
}

/// Packs a policy into a word for lock-free reads: 0 = always, 1 = never, 2 + ms = interval.
pub(crate) fn encode_policy(policy: FsyncPolicy) -> u64 {
    match policy {
        FsyncPolicy::Always => 0,
        FsyncPolicy::Never => 1,
        FsyncPolicy::Interval(d) => 2 + u64::try_from(d.as_millis()).unwrap_or(u64::MAX - 2),
    }
}

/// The inverse of [`encode_policy`].
pub(crate) fn decode_policy(word: u64) -> FsyncPolicy {
    match word {
        0 => FsyncPolicy::Always,
        1 => FsyncPolicy::Never,
        ms => FsyncPolicy::Interval(Duration::from_millis(ms - 2)),
    }
}

/// Settings of one partition log. Build with [`LogConfig::default`] and override fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment before the active one would exceed this size.
    pub segment_bytes: u64,
    /// Roll to a new segment when the active one is older than this (since its first append).
    pub segment_ms: Option<u64>,
    /// Add a sparse index entry after at least this many bytes since the previous one.
    pub index_interval_bytes: u64,
    /// Largest encoded batch accepted by `append`.
    pub max_batch_bytes: usize,
    /// Delete closed segments whose newest record is older than this.
    pub retention_ms: Option<u64>,
    /// Delete the oldest closed segments while the partition is larger than this.
    pub retention_bytes: Option<u64>,
    /// When data is forced to disk.
    pub fsync: FsyncPolicy,
    /// Reserve disk blocks this many bytes ahead of the write position (`fallocate` with
    /// `KEEP_SIZE`, so the file's length stays the data's length), so that writeback of appended
    /// data need not also allocate blocks; 0 disables. The reserve is released when a segment is
    /// sealed or reopened.
    pub preallocate_bytes: u64,
}

/// Largest segment: index entries hold 32-bit byte positions.
pub const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(7 * 24 * 3600 * 1000),
            index_interval_bytes: 4096,
            max_batch_bytes: 16 << 20,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            fsync: FsyncPolicy::Always,
            preallocate_bytes: 0,
        }
    }
}

impl LogConfig {
    /// Checks every setting, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidArgument(msg));
        if self.segment_bytes < 1024 || self.segment_bytes > MAX_SEGMENT_BYTES {
            return bad(format!(
                "segment_bytes must be between 1024 and {MAX_SEGMENT_BYTES}, got {}",
                self.segment_bytes
            ));
        }
        if self.segment_ms == Some(0) {
            return bad("segment_ms must be at least 1".into());
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes must be at least 1".into());
        }
        if self.max_batch_bytes == 0 || self.max_batch_bytes as u64 > MAX_SEGMENT_BYTES {
            return bad(format!(
                "max_batch_bytes must be between 1 and {MAX_SEGMENT_BYTES}, got {}",
                self.max_batch_bytes
            ));
        }
        if let FsyncPolicy::Interval(d) = self.fsync
            && d.is_zero()
        {
            return bad("fsync interval must be at least 1ms (use `always` for every write)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_fsync_always() {
        let config = LogConfig::default();
        config.validate().unwrap();
        assert_eq!(config.fsync, FsyncPolicy::Always);
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let cases: Vec<(LogConfig, &str)> = vec![
            (LogConfig { segment_bytes: 10, ..Default::default() }, "segment_bytes"),
            (LogConfig { segment_bytes: 1 << 33, ..Default::default() }, "segment_bytes"),
            (LogConfig { segment_ms: Some(0), ..Default::default() }, "segment_ms"),
            (LogConfig { index_interval_bytes: 0, ..Default::default() }, "index_interval_bytes"),
            (LogConfig { max_batch_bytes: 0, ..Default::default() }, "max_batch_bytes"),
            (LogConfig { fsync: FsyncPolicy::Interval(Duration::ZERO), ..Default::default() }, "fsync"),
        ];
        for (config, name) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(name), "{err} should name {name}");
        }
    }
}

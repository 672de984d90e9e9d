//! Topic metadata on disk: `<data_dir>/topics/<name>/topic.meta`, one `key=value` per line,
//! closed by a checksum line.
//!
//! ```text
//! version=2
//! partitions=3
//! retention_ms=604800000        # or "none"
//! retention_bytes=none
//! segment_bytes=1073741824
//! segment_ms=604800000
//! max_message_bytes=1048576
//! fsync=always                  # always | never | interval:<ms>
//! max_delivery_attempts=none    # or a number (groups' default for this topic)
//! dead_letter_topic=none        # or a topic name (groups' default for this topic)
//! crc32=1a2b3c4d                # CRC-32 of every byte above (see sluice_storage::store)
//! ```
//!
//! Version 1 files have no checksum line; they still load, and the broker rewrites them as
//! version 2 when it opens. A version 2 file whose checksum does not match is refused, naming
//! the file: a changed digit (`partitions=2` turned into `1`) must not be trusted.
//!
//! The file is replaced atomically (write, fsync, rename, fsync directory).
//!
//! A topic directory holds `topic.meta`, one log directory per partition (`0/`, `1/`, ...,
//! owned by the storage engine), one producer-state snapshot per partition (`0.producers`,
//! ...; see [`crate::producers`]) and, only while the topic is being deleted, the marker
//! `topic.deleting`. Deletion writes the marker (durably) before it removes anything, and only
//! the marker lets a start-up remove a topic directory: a topic directory that has partitions
//! but neither metadata nor the marker is damage, and the broker refuses to start, naming it
//! (see [`recover_topic_meta`] for the way out).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_storage::FsyncPolicy;

use crate::config::TopicConfig;
use crate::error::{Error, Result};

/// Name of the metadata file in a topic directory.
pub const TOPIC_META_FILE: &str = "topic.meta";
/// Marker present only while a topic is being deleted.
pub const TOPIC_DELETING_FILE: &str = "topic.deleting";
/// Directory under the data dir that holds topics.
pub const TOPICS_DIR: &str = "topics";
const VERSION: u32 = 2;
/// The first format, without a checksum line.
const LEGACY_VERSION: u32 = 1;

/// What is persisted about a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    /// Partition count.
    pub partitions: u32,
    /// Settings.
    pub config: TopicConfig,
}

/// Directory of a topic.
pub fn topic_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(TOPICS_DIR).join(name)
}

/// Directory of one partition's log.
pub fn partition_dir(topic_dir: &Path, partition: u32) -> PathBuf {
    topic_dir.join(partition.to_string())
}

/// Producer-state snapshot of one partition (beside its log directory, which storage owns).
pub fn producer_snapshot(topic_dir: &Path, partition: u32) -> PathBuf {
    topic_dir.join(format!("{partition}.producers"))
}

/// Everything needed to open one partition of a topic.
pub fn partition_spec(
    topic: &std::sync::Arc<str>,
    topic_dir: &Path,
    partition: u32,
    config: sluice_storage::LogConfig,
    options: crate::partition::PartitionOptions,
) -> crate::partition::PartitionSpec {
    crate::partition::PartitionSpec {
        topic: std::sync::Arc::clone(topic),
        id: partition,
        dir: partition_dir(topic_dir, partition),
        snapshot: producer_snapshot(topic_dir, partition),
        config,
        options,
    }
}

fn option_text(value: Option<u64>) -> String {
    value.map_or_else(|| "none".to_owned(), |v| v.to_string())
}

/// Text form of an fsync policy: `always`, `never` or `interval:<ms>`.
pub fn fsync_text(policy: FsyncPolicy) -> String {
    match policy {
        FsyncPolicy::Always => "always".into(),
        FsyncPolicy::Never => "never".into(),
        FsyncPolicy::Interval(d) => format!("interval:{}", d.as_millis()),
    }
}

/// Parses `always`, `never` or `interval:<ms>`.
pub fn parse_fsync(text: &str) -> Option<FsyncPolicy> {
    match text {
        "always" => Some(FsyncPolicy::Always),
        "never" => Some(FsyncPolicy::Never),
        other => {
            let ms = other.strip_prefix("interval:")?.trim_end_matches("ms").parse().ok()?;
            Some(FsyncPolicy::Interval(Duration::from_millis(ms)))
        }
    }
}

impl TopicMeta {
    /// The file's text, checksum line included.
    pub fn encode(&self) -> String {
        sluice_storage::store::with_checksum(&self.encode_body())
    }

    fn encode_body(&self) -> String {
        let c = &self.config;
        format!(
            "version={VERSION}\npartitions={}\nretention_ms={}\nretention_bytes={}\nsegment_bytes={}\nsegment_ms={}\nmax_message_bytes={}\nfsync={}\nmax_delivery_attempts={}\ndead_letter_topic={}\n",
            self.partitions,
            option_text(c.retention_ms),
            option_text(c.retention_bytes),
            c.segment_bytes,
            c.segment_ms,
            c.max_message_bytes,
            fsync_text(c.fsync),
            option_text(c.max_delivery_attempts.map(u64::from)),
            c.dead_letter_topic.as_deref().unwrap_or("none"),
        )
    }

    /// Reads and parses the file at `path`. Errors name the file.
    pub fn load(path: &Path) -> Result<LoadedMeta> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::Storage(sluice_storage::Error::Io {
                operation: "reading topic metadata",
                path: path.to_path_buf(),
                source: e,
            })
        })?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| Error::BadMetadata { path: path.to_path_buf(), reason: format!("not valid UTF-8 ({e})") })?;
        let legacy =
            matches!(sluice_storage::store::verify_checksum(text), sluice_storage::store::Checked::Unchecked(_));
        Ok(LoadedMeta { meta: Self::decode(text, path)?, legacy })
    }

    /// Parses the file's text (checking its checksum line); `path` is for the error message.
    pub fn decode(text: &str, path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::BadMetadata { path: path.to_path_buf(), reason };
        let (text, expected_version) = match sluice_storage::store::verify_checksum(text) {
            sluice_storage::store::Checked::Intact(body) => (body, VERSION),
            sluice_storage::store::Checked::Unchecked(body) => (body, LEGACY_VERSION),
            sluice_storage::store::Checked::Damaged(reason) => return Err(bad(reason)),
        };
        let mut partitions = None;
        let mut config = TopicConfig::default();
        let mut version = None;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (key, value) = line.split_once('=').ok_or_else(|| bad(format!("line '{line}' is not key=value")))?;
            let number = || value.parse::<u64>().map_err(|e| bad(format!("{key}: {e}")));
            let optional = || if value == "none" { Ok(None) } else { number().map(Some) };
            match key {
                "version" => version = Some(number()?),
                "partitions" => partitions = Some(u32::try_from(number()?).map_err(|e| bad(format!("{key}: {e}")))?),
                "retention_ms" => config.retention_ms = optional()?,
                "retention_bytes" => config.retention_bytes = optional()?,
                "segment_bytes" => config.segment_bytes = number()?,
                "segment_ms" => config.segment_ms = number()?,
                "max_message_bytes" => {
                    config.max_message_bytes = u32::try_from(number()?).map_err(|e| bad(format!("{key}: {e}")))?
                }
                "fsync" => config.fsync = parse_fsync(value).ok_or_else(|| bad(format!("fsync '{value}'")))?,
                "max_delivery_attempts" => {
                    config.max_delivery_attempts =
                        optional()?.map(|n| u32::try_from(n).map_err(|e| bad(format!("{key}: {e}")))).transpose()?
                }
                "dead_letter_topic" => {
                    config.dead_letter_topic = (value != "none").then(|| value.to_owned());
                }
                _ => return Err(bad(format!("unknown key '{key}'"))),
            }
        }
        match version {
            Some(v) if v == u64::from(expected_version) => {}
            Some(v) if v == u64::from(VERSION) => return Err(bad("no checksum line".into())),
            Some(v) => return Err(bad(format!("unsupported version {v}"))),
            None => return Err(bad("no version line".into())),
        }
        let partitions = partitions.ok_or_else(|| bad("no partitions".into()))?;
        Ok(TopicMeta { partitions, config })
    }
}

/// A metadata file as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedMeta {
    /// What it says.
    pub meta: TopicMeta,
    /// True for a version 1 file (no checksum): it should be rewritten.
    pub legacy: bool,
}

/// Rebuilds a lost `topic.meta` from the partition directories in `topic_dir`: as many
/// partitions as the highest numbered directory says, with `defaults` as the settings (the
/// lost settings cannot be known; check them with `sluice topic describe` and alter them).
/// Refuses if the file exists or no partition directory does. Writes atomically.
pub fn recover_topic_meta(topic_dir: &Path, defaults: &TopicConfig) -> Result<TopicMeta> {
    let meta_path = topic_dir.join(TOPIC_META_FILE);
    if meta_path.exists() {
        return Err(Error::InvalidArgument(format!("{} exists; nothing to recover", meta_path.display())));
    }
    let io = |e| {
        Error::Storage(sluice_storage::Error::Io {
            operation: "listing topic",
            path: topic_dir.to_path_buf(),
            source: e,
        })
    };
    let mut highest = None;
    for entry in std::fs::read_dir(topic_dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let id = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok());
        if let Some(id) = id.filter(|_| entry.path().is_dir()) {
            highest = highest.max(Some(id));
        }
    }
    let Some(highest) = highest else {
        return Err(Error::InvalidArgument(format!("{} holds no partition directories", topic_dir.display())));
    };
    let meta = TopicMeta { partitions: highest + 1, config: defaults.clone() };
    sluice_storage::store::write_atomic(&meta_path, meta.encode().as_bytes())?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_roundtrips() {
        let meta = TopicMeta {
            partitions: 6,
            config: TopicConfig {
                retention_ms: None,
                retention_bytes: Some(10 << 30),
                fsync: FsyncPolicy::Interval(Duration::from_millis(250)),
                max_delivery_attempts: Some(3),
                dead_letter_topic: Some("orders.failed".into()),
                ..TopicConfig::default()
            },
        };
        let path = Path::new("t/topic.meta");
        assert_eq!(TopicMeta::decode(&meta.encode(), path).unwrap(), meta);
    }

    #[test]
    fn damaged_metadata_names_the_file_and_problem() {
        let path = Path::new("t/topic.meta");
        for text in ["version=1\n", "version=2\npartitions=1\n", "version=1\npartitions=x\n", "garbage"] {
            let err = TopicMeta::decode(text, path).unwrap_err().to_string();
            assert!(err.contains("t/topic.meta"), "{err}");
        }
    }

    #[test]
    fn a_changed_digit_is_detected_and_version_1_files_still_load() {
        let path = Path::new("t/topic.meta");
        let meta = TopicMeta { partitions: 2, config: TopicConfig::default() };
        let edited = meta.encode().replace("partitions=2", "partitions=1");
        let err = TopicMeta::decode(&edited, path).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch") && err.contains("t/topic.meta"), "{err}");
        let legacy = meta.encode_body().replace("version=2", "version=1");
        assert_eq!(TopicMeta::decode(&legacy, path).unwrap(), meta);
    }
}

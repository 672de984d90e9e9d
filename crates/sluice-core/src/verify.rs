//! Offline verification of a whole data directory (the `sluice-server verify` command): topic
//! metadata, every partition's segments and indexes (see [`sluice_storage::verify`]), producer
//! snapshots and group files. It only reads, and it needs no broker: run it on a stopped
//! broker's data directory before anything repairs it.

use std::path::{Path, PathBuf};

use sluice_storage::verify::{Finding, PartitionReport, Severity, verify_partition};

use crate::error::{Error, Result};
use crate::group::{GROUP_FILE_EXTENSION, GROUPS_DIR, journal, snapshot};
use crate::metadata::{self, TopicMeta};
use crate::producers::ProducerTable;

/// One partition's result.
#[derive(Debug, Clone)]
pub struct PartitionResult {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// What its log holds and what is wrong with it.
    pub report: PartitionReport,
}

/// The result of verifying a data directory.
#[derive(Debug, Clone, Default)]
pub struct DataDirReport {
    /// Every partition found, by topic and number.
    pub partitions: Vec<PartitionResult>,
    /// Findings outside partition logs: metadata, producer snapshots, group files.
    pub findings: Vec<Finding>,
}

impl DataDirReport {
    /// True when anything is damaged (notes do not count).
    pub fn is_damaged(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Damage)
            || self.partitions.iter().any(|p| p.report.is_damaged())
    }

    fn add(&mut self, severity: Severity, path: &Path, what: impl Into<String>) {
        self.findings.push(Finding { severity, path: path.to_path_buf(), position: None, what: what.into() });
    }
}

fn io(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Storage(sluice_storage::Error::Io { operation, path, source })
}

/// Sorted entries of a directory (none if it does not exist).
fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(read) => {
            for entry in read {
                paths.push(entry.map_err(io("listing", dir))?.path());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("listing", dir)(e)),
    }
    paths.sort();
    Ok(paths)
}

/// Verifies everything under `data_dir` without changing a byte.
pub fn verify_data_dir(data_dir: &Path) -> Result<DataDirReport> {
    let mut report = DataDirReport::default();
    for dir in entries(&data_dir.join(metadata::TOPICS_DIR))? {
        let Some(topic) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
        if dir.is_dir() {
            verify_topic(&dir, &topic, &mut report)?;
        }
    }
    let defaults = crate::config::GroupDefaults::default().settings();
    for path in entries(&data_dir.join(GROUPS_DIR))? {
        if path.extension().and_then(|e| e.to_str()) == Some(journal::JOURNAL_EXTENSION) {
            verify_journal(&path, &mut report)?;
            continue;
        }
        if path.extension().and_then(|e| e.to_str()) != Some(GROUP_FILE_EXTENSION) {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(io("reading group file", &path))?;
        if let Err(reason) = snapshot::decode(&bytes, &defaults) {
            report.add(Severity::Damage, &path, format!("group file: {reason}"));
        }
    }
    Ok(report)
}

fn verify_journal(path: &Path, report: &mut DataDirReport) -> Result<()> {
    let bytes = std::fs::read(path).map_err(io("reading dead-letter journal", path))?;
    match journal::parse(&bytes) {
        Err(reason) => report.add(Severity::Damage, path, format!("dead-letter journal: {reason}")),
        Ok(loaded) => {
            for position in loaded.skipped {
                report.add(Severity::Damage, path, format!("damaged dead-letter journal entry at byte {position}"));
            }
            if loaded.torn > 0 {
                let torn = format!(
                    "{} bytes at byte {} do not form an entry (a torn append); the next start cuts them off",
                    loaded.torn, loaded.good_len
                );
                report.add(Severity::Note, path, torn);
            }
        }
    }
    Ok(())
}

fn verify_topic(dir: &Path, topic: &str, report: &mut DataDirReport) -> Result<()> {
    let meta_path = dir.join(metadata::TOPIC_META_FILE);
    let deleting = dir.join(metadata::TOPIC_DELETING_FILE).exists();
    if deleting {
        report.add(Severity::Note, dir, "an interrupted deletion: the next start finishes it");
    }
    let mut declared = None;
    match TopicMeta::load(&meta_path) {
        Ok(loaded) => {
            if loaded.legacy {
                report.add(Severity::Note, &meta_path, "version 1 (no checksum); the next start rewrites it");
            }
            declared = Some(loaded.meta.partitions);
        }
        Err(_) if deleting => {}
        Err(Error::Storage(sluice_storage::Error::Io { source, .. }))
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            report.add(Severity::Damage, &meta_path, "missing; `sluice-server recover-topic-meta` rebuilds it");
        }
        Err(e) => report.add(Severity::Damage, &meta_path, e.to_string()),
    }
    let mut found = Vec::new();
    for path in entries(dir)? {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if let Some(partition) = name.parse::<u32>().ok().filter(|_| path.is_dir()) {
            found.push(partition);
            let log = verify_partition(&path)?;
            report.partitions.push(PartitionResult { topic: topic.to_owned(), partition, report: log });
        } else if name.ends_with(".producers") {
            let intact = std::fs::read(&path)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .and_then(|text| ProducerTable::decode_snapshot(&text, usize::MAX).map(|_| ()));
            if intact.is_none() {
                report.add(
                    Severity::Note,
                    &path,
                    "producer snapshot is damaged; the next start rebuilds it from the log",
                );
            }
        }
    }
    if let Some(count) = declared {
        for partition in (0..count).filter(|p| !found.contains(p)) {
            let missing = metadata::partition_dir(dir, partition);
            report.add(Severity::Damage, &missing, "partition directory is missing (the next start creates it empty)");
        }
    }
    report.partitions.sort_by_key(|p| (p.topic.clone(), p.partition));
    Ok(())
}

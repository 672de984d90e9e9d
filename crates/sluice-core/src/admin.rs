//! Topic lifecycle: create, delete, reconfigure, add partitions.
//!
//! Crash guarantees: creation writes the metadata file (atomically) before the partition
//! directories, and a restart creates any partition directory that is missing (or removes a
//! topic directory with neither metadata nor partitions); deletion first writes the durable
//! marker `topic.deleting`, and a restart removes a topic directory that has it. So a crash
//! mid-way leaves either the whole topic or none of it, and a lost metadata file alone never
//! makes the broker delete data (see [`crate::metadata`]).

use std::sync::Arc;
use std::sync::PoisonError;

use crate::broker::{Broker, Topic, open_topic};
use crate::config::{TopicConfig, TopicConfigChange};
use crate::error::{Error, Result};
use crate::metadata::{self, TopicMeta};
use crate::partition::{PartitionHandle, blocking};

/// A topic's state for DescribeTopic.
#[derive(Debug, Clone)]
pub struct TopicDescription {
    /// Name.
    pub name: String,
    /// Settings.
    pub config: TopicConfig,
    /// Per partition state.
    pub partitions: Vec<PartitionDescription>,
}

/// One partition's state for DescribeTopic.
#[derive(Debug, Clone)]
pub struct PartitionDescription {
    /// Partition number.
    pub id: u32,
    /// Log statistics.
    pub stats: sluice_storage::LogStats,
    /// The cause, if a write failure made it read-only (no file paths).
    pub poisoned: Option<String>,
    /// Offset ranges that cannot be read.
    pub damage: Vec<crate::partition::Damage>,
}

fn write_meta(dir: std::path::PathBuf, meta: TopicMeta) -> impl FnOnce() -> Result<()> + Send + 'static {
    move || {
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::Storage(sluice_storage::Error::Io {
                operation: "creating topic directory",
                path: dir.clone(),
                source: e,
            })
        })?;
        sluice_storage::store::write_atomic(&dir.join(metadata::TOPIC_META_FILE), meta.encode().as_bytes())?;
        Ok(())
    }
}

impl Broker {
    fn topics_dir(&self) -> std::path::PathBuf {
        self.inner.config.data_dir.join(metadata::TOPICS_DIR)
    }

    fn check_partitions(&self, partitions: u32) -> Result<()> {
        let max = self.inner.config.max_partitions;
        if partitions == 0 || partitions > max {
            return Err(Error::InvalidArgument(format!("partitions must be between 1 and {max}, got {partitions}")));
        }
        Ok(())
    }

    /// Creates a topic with `partitions` partitions and `config`.
    pub async fn create_topic(&self, name: &str, partitions: u32, config: TopicConfig) -> Result<Arc<Topic>> {
        self.check_open()?;
        crate::topic_name::validate(name)?;
        self.check_partitions(partitions)?;
        config.validate()?;
        let _serialised = self.inner.admin.lock().await;
        if self.topic(name).is_ok() {
            return Err(Error::TopicExists(name.to_owned()));
        }
        self.check_space()?;
        let meta = TopicMeta { partitions, config };
        blocking(write_meta(metadata::topic_dir(&self.inner.config.data_dir, name), meta.clone())).await?;
        let topic = Arc::new(open_topic(&self.topics_dir(), name, meta, self.partition_options()).await?);
        self.inner.topics.write().unwrap_or_else(PoisonError::into_inner).insert(name.to_owned(), Arc::clone(&topic));
        tracing::info!(topic = name, partitions, "topic created");
        Ok(topic)
    }

    /// Deletes a topic and all its data.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.check_open()?;
        let _serialised = self.inner.admin.lock().await;
        let topic = self.topic(name)?;
        self.inner.topics.write().unwrap_or_else(PoisonError::into_inner).remove(name);
        let dir = topic.dir.clone();
        let logs: Vec<_> = topic.partitions().iter().map(|p| p.log().clone()).collect();
        blocking(move || {
            // The marker, durable before anything is removed, is what lets a restart after a
            // crash here finish the deletion; nothing else does.
            sluice_storage::store::write_atomic(&dir.join(metadata::TOPIC_DELETING_FILE), b"")?;
            for log in logs {
                log.delete()?;
            }
            // The remaining files (producer snapshots) go with the directory.
            std::fs::remove_dir_all(&dir).map_err(|e| {
                Error::Storage(sluice_storage::Error::Io { operation: "deleting topic", path: dir.clone(), source: e })
            })?;
            Ok(())
        })
        .await?;
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    /// Applies `change` to a topic's settings and persists them: all of it, or (when the
    /// result is invalid) none of it.
    pub async fn alter_topic_config(&self, name: &str, change: &TopicConfigChange) -> Result<Arc<Topic>> {
        self.check_open()?;
        let _serialised = self.inner.admin.lock().await;
        let topic = self.topic(name)?;
        let config = change.applied_to(&topic.config());
        config.validate()?;
        // Every check happens before anything changes: the file, then each partition's log,
        // are only written with a config known to be valid.
        config.log_config().validate().map_err(|e| match e {
            sluice_storage::Error::InvalidArgument(reason) => Error::InvalidArgument(reason),
            other => Error::from(other),
        })?;
        let partitions = topic.partitions();
        let meta = TopicMeta { partitions: partitions.len() as u32, config: config.clone() };
        blocking(write_meta(topic.dir.clone(), meta)).await?;
        // On the blocking pool: each log's writer lock may be held across an fsync.
        let (logs, log_config) = (partitions.iter().map(|p| p.log().clone()).collect::<Vec<_>>(), config.log_config());
        blocking(move || {
            for log in logs {
                log.set_config(log_config.clone())?;
            }
            Ok(())
        })
        .await?;
        *topic.config.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(topic)
    }

    /// Raises a topic's partition count to `partitions`.
    pub async fn add_partitions(&self, name: &str, partitions: u32) -> Result<Arc<Topic>> {
        self.check_open()?;
        self.check_partitions(partitions)?;
        let _serialised = self.inner.admin.lock().await;
        let topic = self.topic(name)?;
        self.check_space()?;
        let current = topic.partitions();
        if partitions <= current.len() as u32 {
            return Err(Error::InvalidArgument(format!(
                "topic '{name}' has {} partitions; the new count must be larger",
                current.len()
            )));
        }
        let config = topic.config();
        let meta = TopicMeta { partitions, config: config.clone() };
        blocking(write_meta(topic.dir.clone(), meta)).await?;
        let mut all = current.as_ref().clone();
        for id in current.len() as u32..partitions {
            let options = self.partition_options();
            let spec = metadata::partition_spec(&topic.name, &topic.dir, id, config.log_config(), options);
            all.push(PartitionHandle::open(spec).await?);
        }
        *topic.partitions.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(all);
        tracing::info!(topic = name, partitions, "partitions added");
        Ok(topic)
    }

    /// A topic's settings and per-partition state.
    pub fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let topic = self.topic(name)?;
        let partitions = topic
            .partitions()
            .iter()
            .map(|p| PartitionDescription { id: p.id(), stats: p.stats(), poisoned: p.poisoned(), damage: p.damage() })
            .collect();
        Ok(TopicDescription { name: name.to_owned(), config: topic.config(), partitions })
    }

    /// Bytes used by all partitions.
    pub fn data_bytes(&self) -> u64 {
        self.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.stats().size_bytes).collect::<Vec<_>>()).sum()
    }
}

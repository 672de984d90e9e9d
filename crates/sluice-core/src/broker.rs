//! [`Broker`]: the handle every request goes through.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{BrokerConfig, TopicConfig};
use crate::error::{Error, Result};
use crate::metadata::{self, TopicMeta};
use crate::partition::PartitionHandle;

/// Per-topic traffic counters.
#[derive(Debug, Default)]
pub struct TopicCounters {
    /// Records appended.
    pub records_in: AtomicU64,
    /// Record bytes appended (key + value + headers).
    pub bytes_in: AtomicU64,
    /// Records returned to Fetch and Subscribe.
    pub records_out: AtomicU64,
    /// Batch bytes returned to Fetch and Subscribe.
    pub bytes_out: AtomicU64,
}

/// A topic: its settings and partitions.
#[derive(Debug)]
pub struct Topic {
    pub(crate) name: Arc<str>,
    pub(crate) dir: PathBuf,
    pub(crate) config: RwLock<TopicConfig>,
    pub(crate) partitions: RwLock<Arc<Vec<PartitionHandle>>>,
    pub(crate) next_unkeyed: AtomicU32,
    pub(crate) counters: TopicCounters,
}

impl Topic {
    /// Topic name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Current settings.
    pub fn config(&self) -> TopicConfig {
        self.config.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Current partitions.
    pub fn partitions(&self) -> Arc<Vec<PartitionHandle>> {
        Arc::clone(&self.partitions.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Traffic counters.
    pub fn counters(&self) -> &TopicCounters {
        &self.counters
    }

    /// One partition, or `PartitionNotFound` naming the valid range.
    pub fn partition(&self, id: u32) -> Result<PartitionHandle> {
        let partitions = self.partitions();
        partitions.get(id as usize).cloned().ok_or_else(|| Error::PartitionNotFound {
            topic: self.name.to_string(),
            partition: id,
            count: partitions.len() as u32,
        })
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub config: BrokerConfig,
    /// Never held across an await (std lock); changes go through `admin`.
    pub topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises topic creation, deletion and reconfiguration.
    pub admin: tokio::sync::Mutex<()>,
    pub shutdown: CancellationToken,
    pub closed: AtomicBool,
    pub tasks: tokio::sync::Mutex<JoinSet<()>>,
    pub started: Instant,
    pub groups: crate::group::Groups,
    /// The free-space reserve of the data directory's disk, shared by every partition.
    pub space: Arc<sluice_storage::space::FreeSpace>,
    /// What start-up recovery did.
    pub recovery: crate::recovery_report::RecoveryReport,
}

/// The broker core: a cheap-clone handle, shared by every request.
#[derive(Debug, Clone)]
pub struct Broker {
    pub(crate) inner: Arc<Inner>,
}

impl Broker {
    /// Opens the data directory, reloads every topic, and starts the maintenance task
    /// (retention and interval fsyncs). Must be called inside a tokio runtime.
    pub async fn open(config: BrokerConfig) -> Result<Self> {
        config.topic_defaults.validate()?;
        let topics_dir = config.data_dir.join(metadata::TOPICS_DIR);
        let dir = topics_dir.clone();
        let found = crate::partition::blocking(move || list_topics(&dir)).await?;
        let clock: Arc<dyn sluice_storage::Clock> = Arc::new(sluice_storage::SystemClock);
        let space = Arc::new(sluice_storage::space::FreeSpace::new(&topics_dir, config.min_free_bytes, clock));
        let options = partition_options(&config, &space);
        let mut topics = BTreeMap::new();
        for (name, meta) in found {
            let topic = open_topic(&topics_dir, &name, meta, options.clone()).await?;
            topics.insert(name, Arc::new(topic));
        }
        let data_dir = config.data_dir.clone();
        let group_defaults = config.groups.settings();
        let groups = crate::partition::blocking(move || crate::group::Groups::load(&data_dir, &group_defaults)).await?;
        let offsets = |tp: &crate::group::TopicPartition| {
            topics
                .get(&*tp.topic)
                .and_then(|t: &Arc<Topic>| t.partitions().get(tp.partition as usize).map(|p| p.offsets()))
        };
        let mut recovery = crate::recovery_report::RecoveryReport::default();
        for topic in topics.values() {
            for partition in topic.partitions().iter() {
                recovery.add_partition(&partition.log().recovery(), partition.replayed_batches());
            }
        }
        recovery.group_positions_moved = groups.clamp_to_ends(&offsets);
        recovery.log();
        tracing::info!(data_dir = %config.data_dir.display(), topics = topics.len(), groups = groups.all().len(), "broker opened");
        let broker = Broker {
            inner: Arc::new(Inner {
                config,
                topics: RwLock::new(topics),
                admin: tokio::sync::Mutex::new(()),
                shutdown: CancellationToken::new(),
                closed: AtomicBool::new(false),
                tasks: tokio::sync::Mutex::new(JoinSet::new()),
                started: Instant::now(),
                groups,
                space,
                recovery,
            }),
        };
        let maintenance = crate::maintenance::run(broker.clone());
        let group_maintenance = crate::group::maintenance::run(broker.clone());
        let dead_letters = crate::group::dead_letter::run(broker.clone());
        let mut tasks = broker.inner.tasks.lock().await;
        tasks.spawn(maintenance);
        tasks.spawn(group_maintenance);
        tasks.spawn(dead_letters);
        drop(tasks);
        Ok(broker)
    }

    /// The broker's settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

    /// The settings every partition opens with.
    pub(crate) fn partition_options(&self) -> crate::partition::PartitionOptions {
        partition_options(&self.inner.config, &self.inner.space)
    }

    /// What start-up recovery did.
    pub fn recovery(&self) -> crate::recovery_report::RecoveryReport {
        self.inner.recovery
    }

    /// The data directory's free space and reserve (for health and metrics).
    pub fn free_space(&self) -> &sluice_storage::space::FreeSpace {
        &self.inner.space
    }

    /// Refuses a write with [`Error::DiskFull`] while free space is below the reserve.
    pub(crate) fn check_space(&self) -> Result<()> {
        let space = &self.inner.space;
        if space.is_low() { Err(space.full(0).into()) } else { Ok(()) }
    }

    /// Snapshots producer state of every partition now (the maintenance task does it
    /// periodically, and shutdown does it last).
    pub async fn snapshot_producers(&self) {
        crate::maintenance::snapshot_pass(self).await;
    }

    /// Time since the broker opened.
    pub fn uptime(&self) -> std::time::Duration {
        self.inner.started.elapsed()
    }

    /// Fires when the broker starts shutting down (streams end on it).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// A topic by name.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.inner
            .topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| Error::TopicNotFound(name.to_owned()))
    }

    /// All topics, by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.inner.topics.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) { Err(Error::ShuttingDown) } else { Ok(()) }
    }

    /// Ordered, idempotent shutdown: new requests are refused, waiting reads and streams end,
    /// the maintenance task stops, then every partition is synced and closed cleanly (so the
    /// next start needs no recovery scan).
    pub async fn shutdown(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.shutdown.cancel();
        let mut tasks = self.inner.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
        let _serialised = self.inner.admin.lock().await;
        self.end_all_sessions(&crate::group::SessionEnd::Shutdown);
        let mut first_error = self.flush_groups().await.err();
        for topic in self.topics() {
            for partition in topic.partitions().iter() {
                if let Err(e) = partition.snapshot_producers().await {
                    tracing::warn!(topic = %topic.name, partition = partition.id(), cause = %e, "producer snapshot failed; the next start replays more of the log");
                }
                let log = partition.log().clone();
                if let Err(e) = crate::partition::blocking(move || Ok(log.close()?)).await {
                    tracing::error!(topic = %topic.name, partition = partition.id(), cause = %e, "closing partition failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        tracing::info!("broker closed");
        first_error.map_or(Ok(()), Err)
    }
}

fn partition_options(
    config: &BrokerConfig,
    space: &Arc<sluice_storage::space::FreeSpace>,
) -> crate::partition::PartitionOptions {
    crate::partition::PartitionOptions {
        tail_cache_bytes: config.tail_cache_bytes,
        idempotence_window: config.idempotence_window,
        // Without a reserve, appends run into the disk's own ENOSPC, handled the same way.
        space: (config.min_free_bytes > 0).then(|| Arc::clone(space)),
    }
}

/// Topic directories with their metadata.
///
/// A directory with the deletion marker is the remains of an interrupted delete and is
/// removed. One with neither metadata nor marker is removed only if it holds nothing but a
/// temporary file (the remains of an interrupted creation, which writes the metadata before any
/// partition); otherwise opening fails, naming the file, and nothing is deleted. Version 1
/// metadata files are rewritten with a checksum.
fn list_topics(topics_dir: &std::path::Path) -> Result<Vec<(String, TopicMeta)>> {
    let io = |operation: &'static str, path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| Error::Storage(sluice_storage::Error::Io { operation, path, source })
    };
    std::fs::create_dir_all(topics_dir).map_err(io("creating topics directory", topics_dir))?;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(topics_dir).map_err(io("listing topics", topics_dir))? {
        let entry = entry.map_err(io("listing topics", topics_dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        let dir = entry.path();
        if crate::topic_name::validate(&name).is_err() || !dir.is_dir() {
            continue;
        }
        let meta_path = dir.join(metadata::TOPIC_META_FILE);
        if dir.join(metadata::TOPIC_DELETING_FILE).exists() {
            tracing::warn!(topic = %name, "finishing an interrupted topic deletion");
            std::fs::remove_dir_all(&dir).map_err(io("deleting topic", &dir))?;
            continue;
        }
        if !meta_path.exists() {
            // Creation writes the metadata (through a temporary file) before anything else, so
            // a directory holding nothing but that temporary file is an interrupted creation.
            let holds_data = std::fs::read_dir(&dir)
                .map_err(io("listing topic", &dir))?
                .filter_map(|e| e.ok())
                .any(|e| !e.file_name().to_string_lossy().ends_with(sluice_storage::layout::TEMP_SUFFIX));
            if holds_data {
                return Err(Error::MissingTopicMeta { path: meta_path, topic: name });
            }
            tracing::warn!(topic = %name, "removing the remains of an interrupted topic creation (no metadata, no data)");
            std::fs::remove_dir_all(&dir).map_err(io("deleting topic", &dir))?;
            continue;
        }
        let loaded = TopicMeta::load(&meta_path)?;
        if loaded.legacy {
            tracing::info!(topic = %name, "rewriting version 1 topic metadata with a checksum");
            sluice_storage::store::write_atomic(&meta_path, loaded.meta.encode().as_bytes())?;
        }
        found.push((name, loaded.meta));
    }
    Ok(found)
}

pub(crate) async fn open_topic(
    topics_dir: &std::path::Path,
    name: &str,
    meta: TopicMeta,
    options: crate::partition::PartitionOptions,
) -> Result<Topic> {
    let name: Arc<str> = Arc::from(name);
    let dir = metadata::topic_dir(topics_dir.parent().unwrap_or(topics_dir), &name);
    let mut partitions = Vec::with_capacity(meta.partitions as usize);
    for id in 0..meta.partitions {
        let spec = metadata::partition_spec(&name, &dir, id, meta.config.log_config(), options.clone());
        partitions.push(PartitionHandle::open(spec).await?);
    }
    Ok(Topic {
        name,
        dir,
        config: RwLock::new(meta.config),
        partitions: RwLock::new(Arc::new(partitions)),
        next_unkeyed: AtomicU32::new(0),
        counters: TopicCounters::default(),
    })
}

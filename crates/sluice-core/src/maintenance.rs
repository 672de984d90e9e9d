//! The broker's background work: retention, fsyncs for `FsyncPolicy::Interval` partitions when
//! appends stop, and producer-state snapshots. One tracked task; it ends when the broker shuts
//! down.

use std::time::{SystemTime, UNIX_EPOCH};

use sluice_storage::FsyncPolicy;

use crate::broker::Broker;
use crate::partition::blocking;

async fn retention_pass(broker: &Broker) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    for topic in broker.topics() {
        for partition in topic.partitions().iter() {
            let log = partition.log().clone();
            match blocking(move || Ok(log.apply_retention(now)?)).await {
                Ok(0) => {}
                Ok(deleted) => {
                    tracing::info!(topic = %topic.name(), partition = partition.id(), segments = deleted, "retention deleted segments")
                }
                Err(e) => {
                    tracing::warn!(topic = %topic.name(), partition = partition.id(), cause = %e, "retention failed")
                }
            }
        }
    }
}

async fn interval_syncs(broker: &Broker) {
    for topic in broker.topics() {
        if !matches!(topic.config().fsync, FsyncPolicy::Interval(_)) {
            continue;
        }
        for partition in topic.partitions().iter() {
            let log = partition.log().clone();
            if let Err(e) = blocking(move || Ok(log.sync_if_due()?)).await {
                tracing::warn!(topic = %topic.name(), partition = partition.id(), cause = %e, "interval fsync failed");
            }
        }
    }
}

/// Snapshots producer state of every partition that grew, bounding what a restart replays.
pub(crate) async fn snapshot_pass(broker: &Broker) {
    for topic in broker.topics() {
        for partition in topic.partitions().iter() {
            if let Err(e) = partition.snapshot_producers().await {
                tracing::warn!(topic = %topic.name(), partition = partition.id(), cause = %e, "producer snapshot failed");
            }
        }
    }
}

/// Runs until the broker's shutdown token fires.
pub(crate) async fn run(broker: Broker) {
    let config = broker.config().clone();
    let shutdown = broker.shutdown_token();
    let mut retention = tokio::time::interval(config.retention_check_interval);
    let mut syncs = tokio::time::interval(config.fsync_check_interval);
    let mut snapshots = tokio::time::interval(config.producer_snapshot_interval);
    for timer in [&mut retention, &mut syncs, &mut snapshots] {
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    snapshots.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = retention.tick() => retention_pass(&broker).await,
            _ = syncs.tick() => interval_syncs(&broker).await,
            _ = snapshots.tick() => snapshot_pass(&broker).await,
        }
    }
}

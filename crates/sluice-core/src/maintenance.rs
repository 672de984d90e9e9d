//! The broker's background work: retention, and fsyncs for `FsyncPolicy::Interval` partitions
//! when appends stop. One tracked task; it ends when the broker shuts down.

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

/// Runs until the broker's shutdown token fires.
pub(crate) async fn run(broker: Broker) {
    let config = broker.config().clone();
    let shutdown = broker.shutdown_token();
    let mut retention = tokio::time::interval(config.retention_check_interval);
    let mut syncs = tokio::time::interval(config.fsync_check_interval);
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    syncs.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = retention.tick() => retention_pass(&broker).await,
            _ = syncs.tick() => interval_syncs(&broker).await,
        }
    }
}

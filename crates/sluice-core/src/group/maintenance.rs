//! The groups' background work, in one tracked task: ack-timeout expiry and session timeouts
//! (every tick), rebalancing when subscribed topics gain partitions or disappear, and writing
//! changed offsets plus refreshing lag ages every `commit_interval`.

use std::time::{Duration, Instant};

use super::Group;
use super::types::TopicPartition;
use crate::broker::Broker;

/// How often deadlines are checked: the resolution of ack and session timeouts.
const TICK: Duration = Duration::from_millis(20);
/// How often partition counts of subscribed topics are compared with the last rebalance.
const TOPOLOGY_CHECK: Duration = Duration::from_secs(1);

fn expire(broker: &Broker, group: &Group, now: Instant) {
    let (timed_out, queued) = {
        let mut state = group.lock();
        let timed_out = state.expire(now);
        (timed_out, !state.dead_letter_jobs.is_empty())
    };
    if queued {
        broker.groups().dead_letter_wake.notify_one();
    }
    for (member, reason) in timed_out {
        broker.remove_member(group, member, reason);
    }
}

fn check_topology(broker: &Broker, group: &Group) {
    let mut state = group.lock();
    if state.members.is_empty() {
        return;
    }
    let topology = broker.group_topology(&state, &[]);
    state.topic_attempts = broker.topic_attempt_limits(&topology);
    if topology != state.topology {
        tracing::info!(group = %group.id, "subscribed topics changed; rebalancing");
        let offsets = |tp: &TopicPartition| broker.partition_offsets(tp);
        state.rebalance(&topology, &offsets);
    }
}

/// Forgets dead letters that retention (or a deleted topic) removed from their dead-letter
/// topic: they can no longer be redriven, and the group file must not grow with them forever.
fn prune_dead_letters(broker: &Broker, group: &Group) {
    let mut state = group.lock();
    if state.dead_letters.len() == 0 {
        return;
    }
    // Each dead-letter partition's start is looked up once, and only what lies below it is
    // touched: the cost does not grow with the dead letters that stay.
    let mut removed = 0;
    for tp in state.dead_letters.partitions() {
        let start = broker.partition_offsets(&tp).map_or(u64::MAX, |(start, _)| start);
        removed += state.dead_letters.prune_below(&tp, start);
    }
    if removed > 0 {
        state.dirty = true;
        tracing::info!(group = %group.id, removed, "forgot dead letters deleted by retention");
    }
}

/// Learns the timestamp of each partition's oldest unacked record (for lag in seconds) when it
/// is not among the delivered records the group already tracks.
async fn refresh_lag_ages(broker: &Broker, group: &Group) {
    let wanted: Vec<(TopicPartition, u64)> = {
        let state = group.lock();
        state
            .partitions
            .iter()
            .filter(|(_, p)| p.ledger.get(p.ledger.committed()).is_none())
            .map(|(tp, p)| (tp.clone(), p.ledger.committed()))
            .collect()
    };
    for (tp, committed) in wanted {
        let Ok(handle) = broker.topic(&tp.topic).and_then(|t| t.partition(tp.partition)) else { continue };
        let timestamp = if handle.offsets().1 <= committed {
            None
        } else {
            match handle.read(committed, 1).await {
                Ok(read) => read
                    .batches
                    .iter()
                    .flat_map(|b| b.records())
                    .filter_map(Result::ok)
                    .find(|r| r.offset >= committed)
                    .map(|r| r.timestamp),
                Err(_) => None,
            }
        };
        if let Some(partition) = group.lock().partitions.get_mut(&tp)
            && partition.ledger.committed() == committed
        {
            partition.oldest_unacked_timestamp = timestamp;
        }
    }
}

/// Runs until the broker shuts down.
pub(crate) async fn run(broker: Broker) {
    let shutdown = broker.shutdown_token();
    let commit_interval = broker.config().groups.commit_interval;
    let mut tick = tokio::time::interval(TICK);
    let mut topology = tokio::time::interval(TOPOLOGY_CHECK);
    let mut commit = tokio::time::interval(commit_interval);
    for timer in [&mut tick, &mut topology, &mut commit] {
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let now = Instant::now();
                for group in broker.groups().all() {
                    expire(&broker, &group, now);
                }
            }
            _ = topology.tick() => {
                for group in broker.groups().all() {
                    check_topology(&broker, &group);
                }
            }
            _ = commit.tick() => {
                for group in broker.groups().all() {
                    prune_dead_letters(&broker, &group);
                    refresh_lag_ages(&broker, &group).await;
                }
                let _logged_inside = broker.flush_groups().await;
            }
        }
    }
}

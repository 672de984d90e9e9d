//! Conversions between protocol messages and the broker core's consumer-group types.

use std::sync::Arc;
use std::time::Duration;

use sluice_core::group::admin::{GroupDescription, ResetSpec, ResetTarget};
use sluice_core::group::{
    AckOutcome, AckRefusal, AssignmentView, DeliveryMode, GroupSettings, JoinSpec, LeaseEnd, LeaseEndReason, NackSpec,
    OffsetReset, PolicyChange, RetryOverrides, TopicPartition,
};
use sluice_proto::v1 as pb;
use tonic::Status;

fn invalid(message: impl Into<String>) -> Status {
    crate::status::to_status(sluice_core::Error::InvalidArgument(message.into()))
}

fn nonzero<T: PartialEq + Default>(value: T) -> Option<T> {
    if value == T::default() { None } else { Some(value) }
}

fn reset_policy(value: i32) -> Result<Option<OffsetReset>, Status> {
    match pb::OffsetReset::try_from(value) {
        Ok(pb::OffsetReset::Unspecified) => Ok(None),
        Ok(pb::OffsetReset::Earliest) => Ok(Some(OffsetReset::Earliest)),
        Ok(pb::OffsetReset::Latest) => Ok(Some(OffsetReset::Latest)),
        Err(_) => Err(invalid(format!("unknown offset reset policy {value}"))),
    }
}

fn ordering(value: i32) -> Result<Option<bool>, Status> {
    match pb::Ordering::try_from(value) {
        Ok(pb::Ordering::Unspecified) => Ok(None),
        Ok(pb::Ordering::Relaxed) => Ok(Some(false)),
        Ok(pb::Ordering::Strict) => Ok(Some(true)),
        Err(_) => Err(invalid(format!("unknown ordering {value}"))),
    }
}

fn on_damage(value: i32) -> Result<Option<bool>, Status> {
    match pb::OnDamage::try_from(value) {
        Ok(pb::OnDamage::Unspecified) => Ok(None),
        Ok(pb::OnDamage::Stop) => Ok(Some(false)),
        Ok(pb::OnDamage::Skip) => Ok(Some(true)),
        Err(_) => Err(invalid(format!("unknown on_damage {value}"))),
    }
}

fn delivery_mode(value: i32) -> Result<Option<DeliveryMode>, Status> {
    match pb::Delivery::try_from(value) {
        Ok(pb::Delivery::Unspecified) => Ok(None),
        Ok(pb::Delivery::PartitionOwned) => Ok(Some(DeliveryMode::PartitionOwned)),
        Ok(pb::Delivery::Shared) => Ok(Some(DeliveryMode::Shared)),
        Err(_) => Err(invalid(format!("unknown delivery mode {value}"))),
    }
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// A join request for the core.
pub fn join(join: pb::Join) -> Result<JoinSpec, Status> {
    let policy = PolicyChange {
        reset: reset_policy(join.reset)?,
        ack_timeout: nonzero(join.ack_timeout_ms).map(|ms| millis(u64::from(ms))),
        retry: RetryOverrides {
            max_attempts: nonzero(join.max_delivery_attempts),
            initial: nonzero(join.backoff_initial_ms).map(|ms| millis(u64::from(ms))),
            multiplier: if join.backoff_multiplier == 0.0 { None } else { Some(join.backoff_multiplier) },
            max: nonzero(join.backoff_max_ms).map(|ms| millis(u64::from(ms))),
        },
        dead_letter_topic: nonzero(join.dead_letter_topic),
        strict_ordering: ordering(join.ordering)?,
        skip_damaged: on_damage(join.on_damage)?,
        delivery: delivery_mode(join.delivery)?,
    };
    Ok(JoinSpec {
        group: join.group,
        topics: join.topics,
        member_name: join.member_name,
        max_in_flight_records: nonzero(join.max_in_flight_records),
        max_in_flight_bytes: nonzero(join.max_in_flight_bytes),
        session_timeout: nonzero(join.session_timeout_ms).map(|ms| millis(u64::from(ms))),
        policy,
        max_lease_expiries: nonzero(join.max_lease_expiries),
        ack_receipts: join.ack_receipts,
    })
}

/// A group config from CreateGroup or AlterGroupConfig as a policy change.
pub fn policy(config: Option<pb::GroupConfig>) -> Result<PolicyChange, Status> {
    let config = config.unwrap_or_default();
    Ok(PolicyChange {
        reset: reset_policy(config.reset)?,
        ack_timeout: config.ack_timeout_ms.map(millis),
        retry: RetryOverrides {
            max_attempts: config.max_delivery_attempts,
            initial: config.backoff_initial_ms.map(millis),
            multiplier: config.backoff_multiplier,
            max: config.backoff_max_ms.map(millis),
        },
        dead_letter_topic: config.dead_letter_topic,
        strict_ordering: ordering(config.ordering)?,
        skip_damaged: on_damage(config.on_damage)?,
        delivery: delivery_mode(config.delivery)?,
    })
}

/// A group's policy for the wire, every field set.
pub fn config(settings: &GroupSettings) -> pb::GroupConfig {
    pb::GroupConfig {
        reset: match settings.reset {
            OffsetReset::Earliest => pb::OffsetReset::Earliest,
            OffsetReset::Latest => pb::OffsetReset::Latest,
        } as i32,
        ack_timeout_ms: Some(settings.ack_timeout.as_millis() as u64),
        max_delivery_attempts: Some(settings.max_attempts.unwrap_or(0)),
        backoff_initial_ms: Some(settings.retry.initial.as_millis() as u64),
        backoff_multiplier: Some(settings.retry.multiplier),
        backoff_max_ms: Some(settings.retry.max.as_millis() as u64),
        dead_letter_topic: Some(settings.dead_letter_topic.clone().unwrap_or_default()),
        ordering: if settings.strict_ordering { pb::Ordering::Strict } else { pb::Ordering::Relaxed } as i32,
        on_damage: if settings.skip_damaged { pb::OnDamage::Skip } else { pb::OnDamage::Stop } as i32,
        delivery: match settings.delivery {
            DeliveryMode::PartitionOwned => pb::Delivery::PartitionOwned,
            DeliveryMode::Shared => pb::Delivery::Shared,
        } as i32,
    }
}

/// A lease notice for the wire.
pub fn lease_end(ended: LeaseEnd) -> pb::LeaseExpired {
    pb::LeaseExpired {
        topic: ended.tp.topic.to_string(),
        partition: ended.tp.partition,
        offsets: ended.offsets,
        reason: match ended.reason {
            LeaseEndReason::AckTimeout => pb::LeaseEndReason::AckTimeout,
            LeaseEndReason::OffsetsReset => pb::LeaseEndReason::OffsetsReset,
            LeaseEndReason::RecordsGone => pb::LeaseEndReason::RecordsGone,
            LeaseEndReason::Skipped => pb::LeaseEndReason::Skipped,
        } as i32,
    }
}

/// Offsets and ranges of an ack or renew as inclusive ranges.
pub fn ranges(offsets: &[u64], ranges: &[pb::OffsetRange]) -> Vec<(u64, u64)> {
    offsets.iter().map(|&o| (o, o)).chain(ranges.iter().map(|r| (r.first, r.last))).collect()
}

/// The topic-partition an ack names.
pub fn topic_partition(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(Arc::from(topic), partition)
}

fn grouped(tps: &[TopicPartition]) -> Vec<pb::TopicPartitions> {
    let mut out: Vec<pb::TopicPartitions> = Vec::new();
    for tp in tps {
        match out.last_mut() {
            Some(last) if last.topic == *tp.topic => last.partitions.push(tp.partition),
            _ => out.push(pb::TopicPartitions { topic: tp.topic.to_string(), partitions: vec![tp.partition] }),
        }
    }
    out
}

/// An assignment change for the wire.
pub fn assignment(view: &AssignmentView) -> pb::Assignment {
    pb::Assignment {
        generation: view.generation,
        partitions: grouped(&view.partitions),
        revoking: grouped(&view.revoking),
    }
}

/// A nack for the core.
pub fn nack(nack: &pb::Nack) -> NackSpec {
    NackSpec {
        reason: std::sync::Arc::from(nack.reason.as_str()),
        retryable: nack.retryable.unwrap_or(true),
        delay: nack.delay_ms.map(|ms| Duration::from_millis(u64::from(ms))),
    }
}

/// One message per refused range.
pub fn refusals(tp: &TopicPartition, outcome: &AckOutcome) -> Vec<pb::AckRefused> {
    outcome
        .refused
        .iter()
        .map(|&(first, last, reason)| pb::AckRefused {
            topic: tp.topic.to_string(),
            partition: tp.partition,
            range: Some(pb::OffsetRange { first, last }),
            reason: match reason {
                AckRefusal::NotOwner => pb::AckRefusalReason::NotOwner,
                AckRefusal::StaleGeneration => pb::AckRefusalReason::StaleGeneration,
                AckRefusal::NotDelivered => pb::AckRefusalReason::NotDelivered,
                AckRefusal::LeasedToOther => pb::AckRefusalReason::LeasedToOther,
            } as i32,
        })
        .collect()
}

fn tp_ref(tp: &TopicPartition) -> pb::TopicPartitionRef {
    pb::TopicPartitionRef { topic: tp.topic.to_string(), partition: tp.partition }
}

/// A group description for the wire.
pub fn description(d: GroupDescription) -> pb::DescribeGroupResponse {
    pb::DescribeGroupResponse {
        group: d.group,
        generation: d.generation,
        reset: match d.settings.reset {
            OffsetReset::Earliest => "earliest".into(),
            OffsetReset::Latest => "latest".into(),
        },
        ack_timeout_ms: d.settings.ack_timeout.as_millis() as u64,
        members: d
            .members
            .into_iter()
            .map(|m| pb::GroupMember {
                member_id: m.member_id.0,
                name: m.name,
                topics: m.topics,
                partitions: m.partitions.iter().map(tp_ref).collect(),
                revoking: m.revoking.iter().map(tp_ref).collect(),
                in_flight: m.in_flight,
            })
            .collect(),
        partitions: d
            .partitions
            .into_iter()
            .map(|p| pb::GroupPartition {
                topic: p.tp.topic.to_string(),
                partition: p.tp.partition,
                owner: p.owner.map(|m| m.0),
                committed_offset: p.committed,
                end_offset: p.end_offset,
                lag: p.lag,
                lag_seconds: p.lag_seconds,
                in_flight: p.in_flight,
                awaiting_redelivery: p.awaiting_redelivery,
                stalled: p.stalled.map(|s| pb::DamagedRange { from_offset: s.from, to_offset: s.to, reason: s.reason }),
            })
            .collect(),
        rebalances: d.rebalances,
        acks: d.acks,
        dead_letter_depth: d.dead_letter_depth,
        nacks: d.nacks,
        redeliveries: d.redeliveries,
        dead_lettered: d.dead_lettered.iter().map(|(_, n)| n).sum(),
        max_delivery_attempts: d.settings.max_attempts.unwrap_or(0),
        dead_letter_topic: d.settings.dead_letter_topic.clone().unwrap_or_default(),
        strict_ordering: d.settings.strict_ordering,
        on_damage: if d.settings.skip_damaged { pb::OnDamage::Skip } else { pb::OnDamage::Stop } as i32,
        damaged_skipped: d.damaged_skipped,
        offsets_moved_to_end: d.offsets_past_end,
        dead_letters_failing: d.dead_letters_failing,
        dead_letter_error: d.dead_letter_error.clone().unwrap_or_default(),
        dead_letter_failures: d.dead_letter_failures,
        config: Some(config(&d.settings)),
    }
}

/// A reset request for the core.
pub fn reset(request: pb::ResetGroupOffsetsRequest) -> Result<ResetSpec, Status> {
    use pb::reset_group_offsets_request::Target;
    let target = match request.target {
        Some(Target::Earliest(_)) => ResetTarget::Earliest,
        Some(Target::Latest(_)) => ResetTarget::Latest,
        Some(Target::TimestampMs(ts)) => ResetTarget::Timestamp(ts),
        Some(Target::Offset(offset)) => ResetTarget::Offset(offset),
        None => return Err(invalid("reset needs a target: earliest, latest, timestamp_ms or offset")),
    };
    Ok(ResetSpec {
        group: request.group,
        topic: request.topic,
        partitions: request.partitions,
        target,
        force: request.force,
    })
}

/// The group listing for the wire.
pub fn group_list(groups: Vec<sluice_core::group::admin::GroupSummary>) -> pb::ListGroupsResponse {
    pb::ListGroupsResponse {
        groups: groups
            .into_iter()
            .map(|g| pb::GroupSummary {
                group: g.group,
                members: g.members,
                partitions: g.partitions,
                generation: g.generation,
            })
            .collect(),
    }
}

/// New positions after a reset, for the wire.
pub fn reset_response(positions: &[(TopicPartition, u64)]) -> pb::ResetGroupOffsetsResponse {
    pb::ResetGroupOffsetsResponse {
        offsets: positions
            .iter()
            .map(|(tp, offset)| pb::PartitionOffset {
                topic: tp.topic.to_string(),
                partition: tp.partition,
                offset: *offset,
            })
            .collect(),
    }
}

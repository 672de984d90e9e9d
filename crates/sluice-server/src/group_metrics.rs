//! Consumer-group metrics, read from the core on each scrape: lag in records and in seconds
//! (the age of the oldest unacked record, what an on-call person alerts on), in-flight records,
//! members, rebalances and acks.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use sluice_core::Broker;
use sluice_core::group::admin::{GroupDescription, PartitionLag};

/// Reads group state at scrape time.
#[derive(Debug)]
pub(crate) struct GroupCollector {
    pub(crate) broker: Broker,
}

fn partition_family(
    encoder: &mut DescriptorEncoder<'_>,
    groups: &[GroupDescription],
    (name, help): (&str, &str),
    value: fn(&PartitionLag) -> f64,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for group in groups {
        for p in &group.partitions {
            let id = p.tp.partition.to_string();
            let labels = [("group", group.group.as_str()), ("topic", &*p.tp.topic), ("partition", id.as_str())];
            ConstGauge::new(value(p)).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

fn group_family(
    encoder: &mut DescriptorEncoder<'_>,
    groups: &[GroupDescription],
    (name, help, kind): (&str, &str, MetricType),
    value: fn(&GroupDescription) -> u64,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for group in groups {
        let labels = [("group", group.group.as_str())];
        let metric = family.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(value(group)).encode(metric)?,
            _ => ConstGauge::new(i64::try_from(value(group)).unwrap_or(i64::MAX)).encode(metric)?,
        }
    }
    Ok(())
}

impl Collector for GroupCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let groups = self.broker.describe_groups();
        let lag = ("sluice_group_lag_records", "Records not yet acked by the group (end offset - committed offset)");
        partition_family(&mut encoder, &groups, lag, |p| p.lag as f64)?;
        let age = ("sluice_group_lag_seconds", "Age of the group's oldest unacked record, in seconds");
        partition_family(&mut encoder, &groups, age, |p| p.lag_seconds)?;
        let committed = ("sluice_group_committed_offset", "Lowest offset the group has not acked");
        partition_family(&mut encoder, &groups, committed, |p| p.committed as f64)?;
        let in_flight = ("sluice_group_in_flight_records", "Records delivered to the group and not yet acked");
        partition_family(&mut encoder, &groups, in_flight, |p| f64::from(p.in_flight))?;
        let members = ("sluice_group_members", "Connected members", MetricType::Gauge);
        group_family(&mut encoder, &groups, members, |g| g.members.len() as u64)?;
        let rebalances = ("sluice_group_rebalances", "Rebalances since the broker started", MetricType::Counter);
        group_family(&mut encoder, &groups, rebalances, |g| g.rebalances)?;
        let acks = ("sluice_group_acks", "Records acked since the broker started", MetricType::Counter);
        group_family(&mut encoder, &groups, acks, |g| g.acks)?;
        let nacks = ("sluice_group_nacks", "Records nacked since the broker started", MetricType::Counter);
        group_family(&mut encoder, &groups, nacks, |g| g.nacks)?;
        let again =
            ("sluice_group_redeliveries", "Deliveries after the first since the broker started", MetricType::Counter);
        group_family(&mut encoder, &groups, again, |g| g.redeliveries)?;
        let stalled = (
            "sluice_group_partition_stalled",
            "1 while delivery from the partition is stopped at offsets that cannot be read",
        );
        partition_family(&mut encoder, &groups, stalled, |p| if p.stalled.is_some() { 1.0 } else { 0.0 })?;
        let skipped = (
            "sluice_group_damaged_records_skipped",
            "Unreadable records passed over (skip_damaged) since the broker started",
            MetricType::Counter,
        );
        group_family(&mut encoder, &groups, skipped, |g| g.damaged_skipped)?;
        let past_end = (
            "sluice_group_offsets_moved_to_end",
            "Committed offsets found past their partition's end and moved to it, since the broker started",
            MetricType::Counter,
        );
        group_family(&mut encoder, &groups, past_end, |g| g.offsets_past_end)?;
        let failing = (
            "sluice_group_dead_letters_failing",
            "Failed records whose dead-letter copy could not be written yet (retried with backoff)",
            MetricType::Gauge,
        );
        group_family(&mut encoder, &groups, failing, |g| g.dead_letters_failing)?;
        let failures = (
            "sluice_group_dead_letter_failures",
            "Failed tries to write dead-letter copies since the broker started",
            MetricType::Counter,
        );
        group_family(&mut encoder, &groups, failures, |g| g.dead_letter_failures)?;
        let depth = ("sluice_group_dead_letter_depth", "Dead-lettered records not yet redriven", MetricType::Gauge);
        group_family(&mut encoder, &groups, depth, |g| g.dead_letter_depth)?;
        dead_letter_families(&mut encoder, &groups)
    }
}

fn dead_letter_families(
    encoder: &mut DescriptorEncoder<'_>,
    groups: &[GroupDescription],
) -> Result<(), std::fmt::Error> {
    let help = "Records moved to a dead-letter topic since the broker started, by source topic";
    let mut family = encoder.encode_descriptor("sluice_group_dead_lettered", help, None, MetricType::Counter)?;
    for group in groups {
        for (topic, count) in &group.dead_lettered {
            let labels = [("group", group.group.as_str()), ("topic", topic.as_str())];
            ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
        }
    }
    let help = "Age of the group's oldest dead-lettered record not yet redriven, in seconds";
    let mut family =
        encoder.encode_descriptor("sluice_group_dead_letter_oldest_seconds", help, None, MetricType::Gauge)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    for group in groups {
        if let Some(oldest) = group.oldest_dead_letter_ms {
            let labels = [("group", group.group.as_str())];
            ConstGauge::new((now - oldest).max(0) as f64 / 1000.0).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

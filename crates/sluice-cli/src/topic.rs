//! `sluice topic …`.

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use sluice_client::{Client, pb};

use crate::error::CliError;
use crate::output::Printer;
use crate::units;

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions.
        #[arg(long, short, default_value_t = 1)]
        partitions: u32,
        #[command(flatten)]
        config: ConfigFlags,
    },
    /// List topics.
    List,
    /// Show a topic's config and each partition's offsets, size and segments.
    Describe { name: String },
    /// Change a topic's config; only the flags given change.
    Alter {
        name: String,
        #[command(flatten)]
        config: ConfigFlags,
    },
    /// Delete a topic and its data.
    Delete { name: String },
    /// Raise a topic's partition count (keys may map to other partitions afterwards).
    AddPartitions {
        name: String,
        /// The new total number of partitions.
        #[arg(long)]
        to: u32,
    },
}

/// Per-topic settings; unset flags keep the broker default (create) or the current value (alter).
#[derive(Debug, Args)]
pub struct ConfigFlags {
    /// Delete segments older than this: 7d, 12h, or `forever`.
    #[arg(long, value_parser = units::parse_retention)]
    retention: Option<i64>,
    /// Delete the oldest segments while a partition is larger: 10GiB, or `unlimited`.
    #[arg(long, value_parser = units::parse_retention_bytes)]
    retention_bytes: Option<i64>,
    /// Roll to a new segment file at this size: 64MiB.
    #[arg(long, value_parser = units::parse_size)]
    segment_bytes: Option<u64>,
    /// Roll to a new segment when the active one is this old: 1d.
    #[arg(long, value_parser = units::parse_duration)]
    segment_age: Option<std::time::Duration>,
    /// Largest record (key + value + headers): 1MiB.
    #[arg(long, value_parser = units::parse_size)]
    max_message_bytes: Option<u64>,
    /// Durability of appends: always, never, or interval:100ms.
    #[arg(long, value_parser = parse_fsync)]
    fsync: Option<(pb::FsyncPolicy, Option<u64>)>,
    /// Consumer groups' default delivery attempts before dead-lettering (0 = broker default).
    #[arg(long)]
    max_delivery_attempts: Option<u32>,
    /// Consumer groups' default dead-letter topic ("" = the broker's `<topic>.dlq`).
    #[arg(long)]
    dead_letter_topic: Option<String>,
}

fn parse_fsync(text: &str) -> Result<(pb::FsyncPolicy, Option<u64>), String> {
    match text.trim() {
        "always" => Ok((pb::FsyncPolicy::Always, None)),
        "never" => Ok((pb::FsyncPolicy::Never, None)),
        "interval" => Ok((pb::FsyncPolicy::Interval, None)),
        other => match other.strip_prefix("interval:") {
            Some(every) => Ok((pb::FsyncPolicy::Interval, Some(units::parse_duration(every)?.as_millis() as u64))),
            None => Err(format!("'{text}' is not one of always, never, interval:<duration>")),
        },
    }
}

impl ConfigFlags {
    fn to_proto(&self) -> Result<pb::TopicConfig, CliError> {
        let max_message_bytes = match self.max_message_bytes {
            Some(bytes) => {
                Some(u32::try_from(bytes).map_err(|_| CliError::Usage("--max-message-bytes is above 4GiB".into()))?)
            }
            None => None,
        };
        let (fsync, fsync_interval_ms) = self.fsync.map_or((pb::FsyncPolicy::Unspecified, None), |f| f);
        Ok(pb::TopicConfig {
            retention_ms: self.retention,
            retention_bytes: self.retention_bytes,
            segment_bytes: self.segment_bytes,
            max_message_bytes,
            fsync: fsync as i32,
            fsync_interval_ms,
            segment_ms: self.segment_age.map(|d| d.as_millis() as u64),
            max_delivery_attempts: self.max_delivery_attempts,
            dead_letter_topic: self.dead_letter_topic.clone(),
        })
    }
}

fn fsync_text(config: &pb::TopicConfig) -> String {
    match pb::FsyncPolicy::try_from(config.fsync).unwrap_or_default() {
        pb::FsyncPolicy::Always => "always".into(),
        pb::FsyncPolicy::Never => "never".into(),
        pb::FsyncPolicy::Interval => match config.fsync_interval_ms {
            Some(ms) => format!("interval:{}", units::format_age(ms as i64)),
            None => "interval".into(),
        },
        pb::FsyncPolicy::Unspecified => "default".into(),
    }
}

pub fn config_json(config: &pb::TopicConfig) -> Value {
    json!({
        "retention_ms": config.retention_ms,
        "retention_bytes": config.retention_bytes,
        "segment_bytes": config.segment_bytes,
        "segment_ms": config.segment_ms,
        "max_message_bytes": config.max_message_bytes,
        "fsync": fsync_text(config),
        "max_delivery_attempts": config.max_delivery_attempts,
        "dead_letter_topic": config.dead_letter_topic,
    })
}

fn topic_json(topic: &pb::TopicInfo) -> Value {
    json!({
        "name": topic.name,
        "partitions": topic.partitions,
        "config": config_json(&topic.config.clone().unwrap_or_default()),
    })
}

async fn print_topic(printer: &Printer, topic: Option<pb::TopicInfo>, done: &str) -> Result<(), CliError> {
    let topic = topic.unwrap_or_default();
    if printer.json_mode() {
        return printer.json(&topic_json(&topic));
    }
    printer.line(&format!("{done} topic {} ({} partitions)", topic.name, topic.partitions))
}

async fn describe(client: &Client, printer: &Printer, name: &str) -> Result<(), CliError> {
    let described = client.describe_topic(name).await?;
    let topic = described.topic.unwrap_or_default();
    let config = topic.config.clone().unwrap_or_default();
    if printer.json_mode() {
        let partitions: Vec<Value> = described
            .partitions
            .iter()
            .map(|p| {
                json!({
                    "partition": p.partition,
                    "start_offset": p.start_offset,
                    "end_offset": p.end_offset,
                    "records": p.end_offset - p.start_offset,
                    "size_bytes": p.size_bytes,
                    "segments": p.segments,
                    "poisoned": (!p.poisoned.is_empty()).then_some(&p.poisoned),
                    "damaged": p.damaged.iter().map(|d| json!({
                        "from_offset": d.from_offset,
                        "to_offset": d.to_offset,
                        "reason": d.reason,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let mut value = topic_json(&topic);
        value["partition_details"] = Value::Array(partitions);
        return printer.json(&value);
    }
    let size: u64 = described.partitions.iter().map(|p| p.size_bytes).sum();
    let records: u64 = described.partitions.iter().map(|p| p.end_offset - p.start_offset).sum();
    let mut pairs = vec![
        ("topic", topic.name.clone()),
        ("partitions", topic.partitions.to_string()),
        ("records", records.to_string()),
        ("size", units::format_size(size)),
        ("retention", units::format_retention(config.retention_ms)),
        ("retention bytes", units::format_size_limit(config.retention_bytes)),
        ("segment bytes", config.segment_bytes.map_or("default".into(), units::format_size)),
        ("max message bytes", config.max_message_bytes.map_or("default".into(), |b| units::format_size(u64::from(b)))),
        ("fsync", fsync_text(&config)),
    ];
    if let Some(ms) = config.segment_ms {
        pairs.push(("segment age", units::format_age(ms as i64)));
    }
    if let Some(attempts) = config.max_delivery_attempts.filter(|&a| a > 0) {
        pairs.push(("max delivery attempts", attempts.to_string()));
    }
    if let Some(dlq) = config.dead_letter_topic.as_ref().filter(|t| !t.is_empty()) {
        pairs.push(("dead-letter topic", dlq.clone()));
    }
    printer.pairs(&pairs)?;
    printer.line("")?;
    let rows: Vec<Vec<String>> = described
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                p.start_offset.to_string(),
                p.end_offset.to_string(),
                (p.end_offset - p.start_offset).to_string(),
                units::format_size(p.size_bytes),
                p.segments.to_string(),
                partition_status(p),
            ]
        })
        .collect();
    printer.table(&["PARTITION", "START", "END", "RECORDS", "SIZE", "SEGMENTS", "STATUS"], &rows)
}

/// "ok", or what is wrong with a partition: read-only, and offsets that cannot be read.
fn partition_status(p: &pb::PartitionInfo) -> String {
    let mut problems = Vec::new();
    if !p.poisoned.is_empty() {
        problems.push(format!("read-only: {}", p.poisoned));
    }
    problems.extend(
        p.damaged.iter().map(|d| format!("offsets {}..{} unreadable ({})", d.from_offset, d.to_offset, d.reason)),
    );
    if problems.is_empty() { "ok".into() } else { problems.join("; ") }
}

pub async fn run(client: &Client, printer: &Printer, command: TopicCommand) -> Result<(), CliError> {
    let mut admin = client.admin();
    match command {
        TopicCommand::Create { name, partitions, config } => {
            let request = pb::CreateTopicRequest { name, partitions, config: Some(config.to_proto()?) };
            let created = admin.create_topic(request).await?;
            print_topic(printer, created.into_inner().topic, "created").await
        }
        TopicCommand::List => {
            let topics = client.list_topics().await?;
            if printer.json_mode() {
                return printer.json(&Value::Array(topics.iter().map(topic_json).collect()));
            }
            let rows: Vec<Vec<String>> = topics
                .iter()
                .map(|t| {
                    let config = t.config.clone().unwrap_or_default();
                    vec![
                        t.name.clone(),
                        t.partitions.to_string(),
                        units::format_retention(config.retention_ms),
                        units::format_size_limit(config.retention_bytes),
                        fsync_text(&config),
                    ]
                })
                .collect();
            printer.table(&["TOPIC", "PARTITIONS", "RETENTION", "RETENTION BYTES", "FSYNC"], &rows)
        }
        TopicCommand::Describe { name } => describe(client, printer, &name).await,
        TopicCommand::Alter { name, config } => {
            let request = pb::AlterTopicConfigRequest { name, config: Some(config.to_proto()?) };
            let altered = admin.alter_topic_config(request).await?;
            print_topic(printer, altered.into_inner().topic, "altered").await
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(pb::DeleteTopicRequest { name: name.clone() }).await?;
            if printer.json_mode() {
                return printer.json(&json!({ "deleted": name }));
            }
            printer.line(&format!("deleted topic {name}"))
        }
        TopicCommand::AddPartitions { name, to } => {
            let request = pb::AddPartitionsRequest { name, partitions: to };
            let grown = admin.add_partitions(request).await?;
            print_topic(printer, grown.into_inner().topic, "grew").await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_flags_parse_with_their_interval() {
        assert_eq!(parse_fsync("always"), Ok((pb::FsyncPolicy::Always, None)));
        assert_eq!(parse_fsync("interval:100ms"), Ok((pb::FsyncPolicy::Interval, Some(100))));
        assert!(parse_fsync("sometimes").is_err());
    }
}

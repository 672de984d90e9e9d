//! `sluice group …`.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use sluice_client::{Client, pb};

use crate::error::CliError;
use crate::output::Printer;
use crate::units;

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List consumer groups with their total lag.
    List,
    /// Show a group's members, assignment, committed and end offsets, and lag.
    Describe { group: String },
    /// Create a group with a policy before any member joins (members then join without one).
    Create {
        group: String,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Change a group's policy: only the options given change. The delivery mode changes only
    /// while no member is connected.
    Alter {
        group: String,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Move a group's committed offsets; previews unless --execute is given.
    Reset(ResetArgs),
    /// Delete a group and its committed offsets.
    Delete {
        group: String,
        /// Delete even while members are connected.
        #[arg(long)]
        force: bool,
    },
}

/// A group's policy, as `create` and `alter` take it.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// How records are shared: `partition-owned` (each partition to one member, in order) or
    /// `shared` (any member takes any record; parallelism beyond partitions, no order).
    #[arg(long, value_parser = ["partition-owned", "shared"])]
    delivery: Option<String>,
    /// Where to start without a committed offset: `earliest` or `latest`.
    #[arg(long, value_parser = ["earliest", "latest"])]
    reset: Option<String>,
    /// Time a delivered record may stay unacked before it goes to the group again (e.g. 30s).
    #[arg(long, value_parser = units::parse_duration)]
    ack_timeout: Option<Duration>,
    /// Deliveries before a record is dead-lettered (0 with alter: each topic's or the broker's).
    #[arg(long)]
    max_attempts: Option<u32>,
    /// First redelivery backoff (e.g. 1s).
    #[arg(long, value_parser = units::parse_duration)]
    backoff_initial: Option<Duration>,
    /// Backoff growth per further failure.
    #[arg(long)]
    backoff_multiplier: Option<f64>,
    /// Longest backoff (e.g. 5m).
    #[arg(long, value_parser = units::parse_duration)]
    backoff_max: Option<Duration>,
    /// Dead-letter topic; `{topic}` stands for the source topic ("" with alter: the topic's or
    /// the broker's).
    #[arg(long)]
    dead_letter_topic: Option<String>,
    /// `strict` holds back later records of a partition while one waits for redelivery.
    #[arg(long, value_parser = ["strict", "relaxed"])]
    ordering: Option<String>,
    /// `skip` passes over records that cannot be read; `stop` stalls their partition.
    #[arg(long, value_parser = ["stop", "skip"])]
    on_damage: Option<String>,
}

impl PolicyArgs {
    fn to_proto(&self) -> pb::GroupConfig {
        let ms = |d: Duration| d.as_millis() as u64;
        pb::GroupConfig {
            reset: match self.reset.as_deref() {
                Some("earliest") => pb::OffsetReset::Earliest,
                Some("latest") => pb::OffsetReset::Latest,
                _ => pb::OffsetReset::Unspecified,
            } as i32,
            ack_timeout_ms: self.ack_timeout.map(ms),
            max_delivery_attempts: self.max_attempts,
            backoff_initial_ms: self.backoff_initial.map(ms),
            backoff_multiplier: self.backoff_multiplier,
            backoff_max_ms: self.backoff_max.map(ms),
            dead_letter_topic: self.dead_letter_topic.clone(),
            ordering: match self.ordering.as_deref() {
                Some("strict") => pb::Ordering::Strict,
                Some("relaxed") => pb::Ordering::Relaxed,
                _ => pb::Ordering::Unspecified,
            } as i32,
            on_damage: match self.on_damage.as_deref() {
                Some("skip") => pb::OnDamage::Skip,
                Some("stop") => pb::OnDamage::Stop,
                _ => pb::OnDamage::Unspecified,
            } as i32,
            delivery: match self.delivery.as_deref() {
                Some("shared") => pb::Delivery::Shared,
                Some("partition-owned") => pb::Delivery::PartitionOwned,
                _ => pb::Delivery::Unspecified,
            } as i32,
        }
    }
}

fn delivery_name(value: i32) -> &'static str {
    if value == pb::Delivery::Shared as i32 { "shared" } else { "partition-owned" }
}

fn config_json(c: &pb::GroupConfig) -> Value {
    json!({
        "delivery": delivery_name(c.delivery),
        "reset": if c.reset == pb::OffsetReset::Latest as i32 { "latest" } else { "earliest" },
        "ack_timeout_ms": c.ack_timeout_ms,
        "max_delivery_attempts": c.max_delivery_attempts,
        "backoff_initial_ms": c.backoff_initial_ms,
        "backoff_multiplier": c.backoff_multiplier,
        "backoff_max_ms": c.backoff_max_ms,
        "dead_letter_topic": c.dead_letter_topic,
        "ordering": if c.ordering == pb::Ordering::Strict as i32 { "strict" } else { "relaxed" },
        "on_damage": if c.on_damage == pb::OnDamage::Skip as i32 { "skip" } else { "stop" },
    })
}

fn print_config(printer: &Printer, verb: &str, group: &str, config: Option<pb::GroupConfig>) -> Result<(), CliError> {
    let config = config.unwrap_or_default();
    if printer.json_mode() {
        return printer.json(&json!({ "group": group, "config": config_json(&config) }));
    }
    printer.line(&format!("{verb} group {group}"))?;
    let or = |value: Option<u64>| value.map_or("-".to_owned(), |v| format!("{v} ms"));
    printer.pairs(&[
        ("delivery", delivery_name(config.delivery).to_owned()),
        ("ack timeout", or(config.ack_timeout_ms)),
        ("max attempts", config.max_delivery_attempts.filter(|&n| n > 0).map_or("per topic".into(), |n| n.to_string())),
        (
            "backoff",
            format!(
                "{} x{} up to {}",
                or(config.backoff_initial_ms),
                config.backoff_multiplier.unwrap_or(0.0),
                or(config.backoff_max_ms)
            ),
        ),
        ("dead-letter topic", config.dead_letter_topic.filter(|t| !t.is_empty()).unwrap_or_else(|| "per topic".into())),
    ])
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    group: String,
    /// The topic whose offsets move.
    #[arg(long)]
    topic: String,
    /// Only these partitions (repeatable; default: all).
    #[arg(long = "partition", short)]
    partitions: Vec<u32>,
    #[command(flatten)]
    target: Target,
    /// Apply the reset (without it, only the preview is printed).
    #[arg(long)]
    execute: bool,
    /// Apply even while members are connected.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Target {
    /// To each partition's first retained record.
    #[arg(long)]
    to_earliest: bool,
    /// To each partition's end (skip everything there now).
    #[arg(long)]
    to_latest: bool,
    /// To this offset.
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<u64>,
    /// To the first record at or after a time: `1h` (ago) or `2026-11-23T08:00:00Z`.
    #[arg(long, value_name = "TIME", value_parser = units::parse_since)]
    to_time: Option<i64>,
}

impl Target {
    /// The reset target as the broker takes it (clap guarantees exactly one flag is set).
    fn to_proto(&self) -> pb::reset_group_offsets_request::Target {
        use pb::reset_group_offsets_request::Target as T;
        match (self.to_offset, self.to_time) {
            _ if self.to_earliest => T::Earliest(pb::Earliest {}),
            _ if self.to_latest => T::Latest(pb::Latest {}),
            (Some(offset), _) => T::Offset(offset),
            (None, time) => T::TimestampMs(time.unwrap_or(0)),
        }
    }
}

async fn describe_group(client: &Client, group: &str) -> Result<pb::DescribeGroupResponse, CliError> {
    Ok(client.admin().describe_group(pb::DescribeGroupRequest { group: group.to_owned() }).await?.into_inner())
}

fn total_lag(described: &pb::DescribeGroupResponse) -> u64 {
    described.partitions.iter().map(|p| p.lag).sum()
}

fn refs(partitions: &[pb::TopicPartitionRef]) -> String {
    let mut by_topic: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for p in partitions {
        by_topic.entry(&p.topic).or_default().push(p.partition.to_string());
    }
    let parts: Vec<String> = by_topic.iter().map(|(t, ps)| format!("{t}[{}]", ps.join(","))).collect();
    if parts.is_empty() { "-".into() } else { parts.join(" ") }
}

fn describe_json(d: &pb::DescribeGroupResponse) -> Value {
    let members: Vec<Value> = d
        .members
        .iter()
        .map(|m| {
            let tps = |list: &[pb::TopicPartitionRef]| -> Vec<Value> {
                list.iter().map(|p| json!({ "topic": p.topic, "partition": p.partition })).collect()
            };
            json!({
                "member_id": m.member_id,
                "name": m.name,
                "topics": m.topics,
                "partitions": tps(&m.partitions),
                "revoking": tps(&m.revoking),
                "in_flight": m.in_flight,
            })
        })
        .collect();
    let partitions: Vec<Value> = d
        .partitions
        .iter()
        .map(|p| {
            json!({
                "topic": p.topic,
                "partition": p.partition,
                "owner": p.owner,
                "committed_offset": p.committed_offset,
                "end_offset": p.end_offset,
                "lag": p.lag,
                "lag_seconds": p.lag_seconds,
                "in_flight": p.in_flight,
                "awaiting_redelivery": p.awaiting_redelivery,
                "stalled": p.stalled.as_ref().map(|s| json!({
                    "from_offset": s.from_offset,
                    "to_offset": s.to_offset,
                    "reason": s.reason,
                })),
            })
        })
        .collect();
    json!({
        "group": d.group,
        "generation": d.generation,
        "lag": total_lag(d),
        "members": members,
        "partitions": partitions,
        "acks": d.acks,
        "nacks": d.nacks,
        "redeliveries": d.redeliveries,
        "dead_lettered": d.dead_lettered,
        "dead_letter_depth": d.dead_letter_depth,
        "dead_letter_topic": d.dead_letter_topic,
        "max_delivery_attempts": d.max_delivery_attempts,
        "strict_ordering": d.strict_ordering,
        "on_damage": if d.on_damage == pb::OnDamage::Skip as i32 { "skip" } else { "stop" },
        "damaged_skipped": d.damaged_skipped,
        "offsets_moved_to_end": d.offsets_moved_to_end,
        "dead_letters_failing": d.dead_letters_failing,
        "dead_letter_error": (!d.dead_letter_error.is_empty()).then_some(&d.dead_letter_error),
        "rebalances": d.rebalances,
        "config": d.config.as_ref().map(config_json),
    })
}

async fn describe(client: &Client, printer: &Printer, group: &str) -> Result<(), CliError> {
    let d = describe_group(client, group).await?;
    if printer.json_mode() {
        return printer.json(&describe_json(&d));
    }
    let or_default = |text: &str| if text.is_empty() { "per topic".to_owned() } else { text.to_owned() };
    let mut pairs = vec![
        ("group", d.group.clone()),
        ("generation", d.generation.to_string()),
        ("members", d.members.len().to_string()),
        ("lag", format!("{} records", total_lag(&d))),
        ("dead letters", format!("{} waiting, {} in all", d.dead_letter_depth, d.dead_lettered)),
        ("dead-letter topic", or_default(&d.dead_letter_topic)),
        (
            "max attempts",
            if d.max_delivery_attempts == 0 { "per topic".into() } else { d.max_delivery_attempts.to_string() },
        ),
        ("ordering", if d.strict_ordering { "strict".into() } else { "relaxed".into() }),
        ("delivery", delivery_name(d.config.as_ref().map_or(0, |c| c.delivery)).into()),
    ];
    // Shown only when they say something, so the usual description stays short.
    if d.on_damage == pb::OnDamage::Skip as i32 || d.damaged_skipped > 0 {
        let policy = if d.on_damage == pb::OnDamage::Skip as i32 { "skip" } else { "stop" };
        pairs.push(("on damage", format!("{policy} ({} unreadable records skipped)", d.damaged_skipped)));
    }
    if d.dead_letters_failing > 0 {
        let failing =
            format!("{} not written yet, retried with backoff: {}", d.dead_letters_failing, d.dead_letter_error);
        pairs.push(("dead letters failing", failing));
    }
    if d.offsets_moved_to_end > 0 {
        pairs.push(("moved to end", format!("{} positions past a partition's end", d.offsets_moved_to_end)));
    }
    printer.pairs(&pairs)?;
    if !d.members.is_empty() {
        printer.line("")?;
        let rows: Vec<Vec<String>> = d
            .members
            .iter()
            .map(|m| {
                vec![
                    m.member_id.to_string(),
                    m.name.clone(),
                    refs(&m.partitions),
                    refs(&m.revoking),
                    m.in_flight.to_string(),
                ]
            })
            .collect();
        printer.table(&["MEMBER", "NAME", "PARTITIONS", "REVOKING", "IN-FLIGHT"], &rows)?;
    }
    printer.line("")?;
    let rows: Vec<Vec<String>> = d
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.topic.clone(),
                p.partition.to_string(),
                p.owner.map_or("-".into(), |o| o.to_string()),
                p.committed_offset.to_string(),
                p.end_offset.to_string(),
                p.lag.to_string(),
                if p.lag == 0 || p.lag_seconds <= 0.0 {
                    "-".into()
                } else {
                    units::format_age((p.lag_seconds * 1000.0) as i64)
                },
                p.in_flight.to_string(),
            ]
        })
        .collect();
    printer.table(&["TOPIC", "PARTITION", "OWNER", "COMMITTED", "END", "LAG", "LAG AGE", "IN-FLIGHT"], &rows)?;
    for p in &d.partitions {
        if let Some(s) = &p.stalled {
            printer.line(&format!(
                "STALLED {}/{}: offsets {}..{} cannot be read ({}); to go on: sluice group reset {} --topic {} --partition {} --to-offset {} --execute --force",
                p.topic, p.partition, s.from_offset, s.to_offset, s.reason, d.group, p.topic, p.partition, s.to_offset
            ))?;
        }
    }
    Ok(())
}

async fn list(client: &Client, printer: &Printer) -> Result<(), CliError> {
    let mut groups = client.admin().list_groups(pb::ListGroupsRequest {}).await?.into_inner().groups;
    groups.sort_by(|a, b| a.group.cmp(&b.group));
    let mut described = Vec::with_capacity(groups.len());
    for g in &groups {
        described.push(describe_group(client, &g.group).await?);
    }
    if printer.json_mode() {
        let rows: Vec<Value> = groups
            .iter()
            .zip(&described)
            .map(|(g, d)| {
                json!({
                    "group": g.group,
                    "members": g.members,
                    "partitions": g.partitions,
                    "generation": g.generation,
                    "lag": total_lag(d),
                    "dead_letter_depth": d.dead_letter_depth,
                })
            })
            .collect();
        return printer.json(&Value::Array(rows));
    }
    let rows: Vec<Vec<String>> = groups
        .iter()
        .zip(&described)
        .map(|(g, d)| {
            vec![
                g.group.clone(),
                g.members.to_string(),
                g.partitions.to_string(),
                g.generation.to_string(),
                total_lag(d).to_string(),
                d.dead_letter_depth.to_string(),
            ]
        })
        .collect();
    printer.table(&["GROUP", "MEMBERS", "PARTITIONS", "GENERATION", "LAG", "DEAD LETTERS"], &rows)
}

/// Where each chosen partition would move, computed from the same reads the broker makes.
async fn preview(
    client: &Client,
    args: &ResetArgs,
    group: &pb::DescribeGroupResponse,
) -> Result<Vec<(u32, Option<u64>, u64)>, CliError> {
    let topic = client.describe_topic(&args.topic).await?;
    let mut out = Vec::new();
    for p in &topic.partitions {
        if !args.partitions.is_empty() && !args.partitions.contains(&p.partition) {
            continue;
        }
        let current = group
            .partitions
            .iter()
            .find(|gp| gp.topic == args.topic && gp.partition == p.partition)
            .map(|gp| gp.committed_offset);
        use pb::reset_group_offsets_request::Target as T;
        let target = match args.target.to_proto() {
            T::Earliest(_) => p.start_offset,
            T::Latest(_) => p.end_offset,
            T::Offset(offset) => offset,
            T::TimestampMs(ts) => {
                let at = pb::StartPosition { position: Some(pb::start_position::Position::TimestampMs(ts)) };
                let fetched = client.fetch(&args.topic, p.partition, at, Duration::ZERO).await?;
                fetched.records.first().map_or(fetched.next_offset, |r| r.offset)
            }
        };
        out.push((p.partition, current, target));
    }
    for wanted in &args.partitions {
        if !out.iter().any(|(p, _, _)| p == wanted) {
            return Err(CliError::Usage(format!("topic {} has no partition {wanted}", args.topic)));
        }
    }
    Ok(out)
}

async fn reset(client: &Client, printer: &Printer, args: ResetArgs) -> Result<(), CliError> {
    let group = describe_group(client, &args.group).await?;
    let plan = preview(client, &args, &group).await?;
    let mut applied: BTreeMap<u32, u64> = BTreeMap::new();
    if args.execute {
        let target = args.target.to_proto();
        let request = pb::ResetGroupOffsetsRequest {
            group: args.group.clone(),
            topic: args.topic.clone(),
            partitions: args.partitions.clone(),
            target: Some(target),
            force: args.force,
        };
        let response = client.admin().reset_group_offsets(request).await?.into_inner();
        applied.extend(response.offsets.iter().map(|o| (o.partition, o.offset)));
    }
    let rows: Vec<(u32, Option<u64>, u64)> =
        plan.iter().map(|&(p, current, target)| (p, current, applied.get(&p).copied().unwrap_or(target))).collect();
    if printer.json_mode() {
        let partitions: Vec<Value> = rows
            .iter()
            .map(|(p, current, target)| json!({ "partition": p, "current": current, "target": target }))
            .collect();
        return printer.json(&json!({
            "group": args.group,
            "topic": args.topic,
            "executed": args.execute,
            "partitions": partitions,
        }));
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|(p, current, target)| {
            let change = current.map_or("-".into(), |c| format!("{:+}", *target as i128 - c as i128));
            vec![
                args.topic.clone(),
                p.to_string(),
                current.map_or("-".into(), |c| c.to_string()),
                target.to_string(),
                change,
            ]
        })
        .collect();
    printer.table(&["TOPIC", "PARTITION", "CURRENT", "NEW", "CHANGE"], &table)?;
    if args.execute {
        printer.line(&format!("reset group {} on {}", args.group, args.topic))
    } else {
        let members = if group.members.is_empty() {
            String::new()
        } else {
            format!("; the group has {} members connected, so --force is needed too", group.members.len())
        };
        printer.line(&format!("dry run: nothing changed (add --execute to apply{members})"))
    }
}

pub async fn run(client: &Client, printer: &Printer, command: GroupCommand) -> Result<(), CliError> {
    match command {
        GroupCommand::List => list(client, printer).await,
        GroupCommand::Describe { group } => describe(client, printer, &group).await,
        GroupCommand::Reset(args) => reset(client, printer, args).await,
        GroupCommand::Create { group, policy } => {
            let request = pb::CreateGroupRequest { group: group.clone(), config: Some(policy.to_proto()) };
            let created = client.admin().create_group(request).await?.into_inner();
            print_config(printer, "created", &group, created.config)
        }
        GroupCommand::Alter { group, policy } => {
            let request = pb::AlterGroupConfigRequest { group: group.clone(), config: Some(policy.to_proto()) };
            let altered = client.admin().alter_group_config(request).await?.into_inner();
            print_config(printer, "altered", &group, altered.config)
        }
        GroupCommand::Delete { group, force } => {
            client.admin().delete_group(pb::DeleteGroupRequest { group: group.clone(), force }).await?;
            if printer.json_mode() {
                return printer.json(&json!({ "deleted": group }));
            }
            printer.line(&format!("deleted group {group}"))
        }
    }
}

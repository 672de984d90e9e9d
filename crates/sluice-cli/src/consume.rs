//! `sluice consume TOPIC`: read partitions from a position, or consume as a group member.

use std::io::Write;
use std::time::Duration;

use base64::Engine;
use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use sluice_client::{Client, GroupEvent, pb};
use tokio::sync::mpsc;

use crate::error::CliError;
use crate::output::Printer;
use crate::units;

/// How long a caught-up `--follow` read waits on the broker before asking again.
const FOLLOW_POLL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One line per record: partition:offset, time, key, headers, value.
    Text,
    /// One JSON object per line, with every field.
    Json,
    /// The value alone, then a newline.
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Earliest,
    Latest,
    Offset(u64),
}

fn parse_start(text: &str) -> Result<Start, String> {
    match text {
        "earliest" | "beginning" => Ok(Start::Earliest),
        "latest" | "end" => Ok(Start::Latest),
        n => n.parse().map(Start::Offset).map_err(|_| format!("'{text}' is not earliest, latest or an offset")),
    }
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Where each partition read starts: earliest (the default), latest, or an offset.
    #[arg(long, value_parser = parse_start, conflicts_with_all = ["since", "group"])]
    offset: Option<Start>,
    /// Start at the first record at or after a time: `10m` (ago) or `2026-11-23T08:00:00Z`.
    #[arg(long, value_parser = units::parse_since, conflicts_with = "group")]
    since: Option<i64>,
    /// Read only this partition (default: all).
    #[arg(long, short, conflicts_with = "group")]
    partition: Option<u32>,
    /// Keep printing new records as they arrive (until interrupted or --count).
    #[arg(long, short)]
    follow: bool,
    /// Consume as a member of this group: partitions are shared with its other members, reading
    /// starts at the group's committed offsets, and every record printed is acknowledged.
    #[arg(long, short)]
    group: Option<String>,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Record format (default: text, or json with `-o json`).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// With --group and without --follow: leave once nothing has arrived for this long and the
    /// member's partitions have nothing left to deliver.
    #[arg(long, value_parser = units::parse_duration, default_value = "1s")]
    wait: Duration,
}

/// Writes records in the chosen format and counts them.
struct Sink {
    out: std::io::BufWriter<std::io::Stdout>,
    format: Format,
    topic: String,
    printed: u64,
    limit: u64,
}

fn text_or_base64(bytes: &[u8], field: &str, object: &mut serde_json::Map<String, Value>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => object.insert(field.into(), Value::String(text.into())),
        Err(_) => object
            .insert(format!("{field}_base64"), Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))),
    };
}

impl Sink {
    fn done(&self) -> bool {
        self.printed >= self.limit
    }

    fn write(&mut self, record: &pb::Record, attempt: Option<u32>) -> Result<(), CliError> {
        let time = record.timestamp_ms.map_or_else(|| "-".into(), units::format_time);
        match self.format {
            Format::Raw => {
                self.out.write_all(&record.value)?;
                self.out.write_all(b"\n")?;
            }
            Format::Text => {
                let mut line = format!("{}:{} {time}", record.partition, record.offset);
                if let Some(key) = &record.key {
                    line.push_str(&format!(" key={}", String::from_utf8_lossy(key)));
                }
                if !record.headers.is_empty() {
                    let headers: Vec<String> = record
                        .headers
                        .iter()
                        .map(|h| format!("{}={}", h.name, String::from_utf8_lossy(&h.value)))
                        .collect();
                    line.push_str(&format!(" [{}]", headers.join(" ")));
                }
                if let Some(attempt) = attempt.filter(|&a| a > 1) {
                    line.push_str(&format!(" attempt={attempt}"));
                }
                writeln!(self.out, "{line} {}", String::from_utf8_lossy(&record.value))?;
            }
            Format::Json => {
                let mut object = serde_json::Map::new();
                object.insert("topic".into(), json!(self.topic));
                object.insert("partition".into(), json!(record.partition));
                object.insert("offset".into(), json!(record.offset));
                object.insert("timestamp_ms".into(), json!(record.timestamp_ms));
                object.insert("timestamp".into(), json!(time));
                match &record.key {
                    Some(key) => text_or_base64(key, "key", &mut object),
                    None => {
                        object.insert("key".into(), Value::Null);
                    }
                }
                let headers: Vec<Value> = record
                    .headers
                    .iter()
                    .map(|h| {
                        let mut header = serde_json::Map::new();
                        header.insert("name".into(), json!(h.name));
                        text_or_base64(&h.value, "value", &mut header);
                        Value::Object(header)
                    })
                    .collect();
                object.insert("headers".into(), Value::Array(headers));
                text_or_base64(&record.value, "value", &mut object);
                if let Some(attempt) = attempt {
                    object.insert("delivery_attempt".into(), json!(attempt));
                }
                writeln!(self.out, "{}", Value::Object(object))?;
            }
        }
        self.printed += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), CliError> {
        self.out.flush()?;
        Ok(())
    }
}

fn start_position(args: &ConsumeArgs) -> pb::StartPosition {
    use pb::start_position::Position;
    let position = match (args.since, args.offset) {
        (Some(ts), _) => Position::TimestampMs(ts),
        (None, Some(Start::Offset(offset))) => Position::Offset(offset),
        (None, Some(Start::Latest)) => Position::Latest(pb::Latest {}),
        (None, Some(Start::Earliest) | None) => Position::Earliest(pb::Earliest {}),
    };
    pb::StartPosition { position: Some(position) }
}

fn at_offset(offset: u64) -> pb::StartPosition {
    pb::StartPosition { position: Some(pb::start_position::Position::Offset(offset)) }
}

async fn partitions(client: &Client, args: &ConsumeArgs) -> Result<Vec<u32>, CliError> {
    let described = client.describe_topic(&args.topic).await?;
    let all: Vec<u32> = described.partitions.iter().map(|p| p.partition).collect();
    match args.partition {
        Some(p) if all.contains(&p) => Ok(vec![p]),
        Some(p) => Err(CliError::Usage(format!("topic {} has no partition {p} (it has {})", args.topic, all.len()))),
        None => Ok(all),
    }
}

/// Each partition in turn, from the start position to the end it had when reading began.
async fn read_to_end(client: &Client, args: &ConsumeArgs, sink: &mut Sink) -> Result<(), CliError> {
    for partition in partitions(client, args).await? {
        let first = client.fetch(&args.topic, partition, start_position(args), Duration::ZERO).await?;
        let end = first.end_offset;
        let mut response = first;
        loop {
            for record in &response.records {
                if sink.done() || record.offset >= end {
                    break;
                }
                sink.write(record, None)?;
            }
            sink.flush()?;
            if sink.done() || response.next_offset >= end || response.records.is_empty() {
                break;
            }
            response = client.fetch(&args.topic, partition, at_offset(response.next_offset), Duration::ZERO).await?;
        }
        if sink.done() {
            break;
        }
    }
    Ok(())
}

/// Every partition at once, long-polling at the end; only --count or an interrupt stops it.
async fn follow(client: &Client, args: &ConsumeArgs, sink: &mut Sink) -> Result<(), CliError> {
    let (tx, mut rx) = mpsc::channel::<Result<Vec<pb::Record>, CliError>>(16);
    for partition in partitions(client, args).await? {
        let (client, topic, tx, start) = (client.clone(), args.topic.clone(), tx.clone(), start_position(args));
        tokio::spawn(async move {
            let mut from = start;
            loop {
                let fetched = client.fetch(&topic, partition, from, FOLLOW_POLL).await;
                let (next, records) = match fetched {
                    Ok(response) => (response.next_offset, Ok(response.records)),
                    Err(e) => (0, Err(CliError::from(e))),
                };
                let failed = records.is_err();
                if tx.send(records).await.is_err() || failed {
                    return;
                }
                from = at_offset(next);
            }
        });
    }
    drop(tx);
    while let Some(records) = rx.recv().await {
        for record in &records? {
            if sink.done() {
                break;
            }
            sink.write(record, None)?;
        }
        sink.flush()?;
        if sink.done() {
            break;
        }
    }
    Ok(())
}

/// Inclusive ranges covering sorted offsets.
fn ranges(offsets: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &offset in offsets {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == offset => *last = offset,
            _ => out.push((offset, offset)),
        }
    }
    out
}

/// True when no partition this member owns has records left to deliver, so a quiet spell means
/// the member has read everything rather than that the broker is slow. A partition stalled at
/// records that cannot be read delivers nothing more until an operator acts: it counts as read,
/// with a warning saying where and how to go on.
async fn caught_up(client: &Client, group: &str, member_id: u64) -> Result<bool, CliError> {
    let request = pb::DescribeGroupRequest { group: group.to_owned() };
    let described = client.admin().describe_group(request).await?.into_inner();
    let mine = described.partitions.iter().filter(|p| p.owner == Some(member_id));
    let mut done = true;
    for p in mine {
        match &p.stalled {
            Some(s) => eprintln!(
                "warning: {}/{} stopped at offsets {}..{} that cannot be read ({}); `sluice group describe {group}` says how to go on",
                p.topic, p.partition, s.from_offset, s.to_offset, s.reason
            ),
            None => done &= p.lag == 0,
        }
    }
    Ok(done)
}

async fn consume_group(client: &Client, args: &ConsumeArgs, group: &str, sink: &mut Sink) -> Result<(), CliError> {
    let join = pb::Join {
        group: group.to_owned(),
        topics: vec![args.topic.clone()],
        member_name: format!("sluice-cli-{}", std::process::id()),
        // No more than --count in flight: records the CLI would not print are not delivered,
        // so they are not released unprinted (which would count as a failed attempt).
        max_in_flight_records: args.count.map_or(0, |n| n.min(1_000_000) as u32),
        ..Default::default()
    };
    let mut member = client.join_group(join).await?;
    let mut heartbeat = tokio::time::interval((member.session_timeout() / 3).max(Duration::from_millis(100)));
    let idle = tokio::time::sleep(args.wait);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            event = member.next() => match event? {
                None => break,
                Some(GroupEvent::Records(batch)) => {
                    let mut printed = Vec::with_capacity(batch.records.len());
                    for delivered in &batch.records {
                        let Some(record) = &delivered.record else { continue };
                        if sink.done() {
                            break;
                        }
                        sink.write(record, Some(delivered.delivery_attempt))?;
                        printed.push(record.offset);
                    }
                    sink.flush()?;
                    printed.sort_unstable();
                    if !printed.is_empty() {
                        member.ack(&batch.topic, batch.partition, batch.generation, &ranges(&printed)).await?;
                    }
                    if sink.done() {
                        break;
                    }
                    idle.as_mut().reset(tokio::time::Instant::now() + args.wait);
                }
                Some(GroupEvent::Assignment(_)) => idle.as_mut().reset(tokio::time::Instant::now() + args.wait),
                Some(GroupEvent::AckReceipt(_)) => {}
                Some(GroupEvent::LeaseExpired(expired)) => {
                    eprintln!("warning: {}/{} offsets {:?} were not acked within the group's ack timeout; they will be delivered again", expired.topic, expired.partition, expired.offsets);
                }
                Some(GroupEvent::AckRefused(refused)) => {
                    let range = refused.range.unwrap_or_default();
                    eprintln!("warning: ack of {}/{} offsets {}..={} refused ({:?})", refused.topic, refused.partition, range.first, range.last, refused.reason());
                }
            },
            _ = heartbeat.tick() => member.heartbeat().await?,
            () = &mut idle, if !args.follow => {
                if caught_up(client, group, member.member_id()).await? {
                    break;
                }
                idle.as_mut().reset(tokio::time::Instant::now() + args.wait);
            }
        }
    }
    member.leave().await?;
    Ok(())
}

pub async fn run(client: &Client, printer: &Printer, args: ConsumeArgs) -> Result<(), CliError> {
    let default = if printer.json_mode() { Format::Json } else { Format::Text };
    let mut sink = Sink {
        out: std::io::BufWriter::new(std::io::stdout()),
        format: args.format.unwrap_or(default),
        topic: args.topic.clone(),
        printed: 0,
        limit: args.count.unwrap_or(u64::MAX),
    };
    match (&args.group, args.follow) {
        (Some(group), _) => consume_group(client, &args, group, &mut sink).await,
        (None, true) => follow(client, &args, &mut sink).await,
        (None, false) => read_to_end(client, &args, &mut sink).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_offsets_are_acked_as_ranges() {
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), vec![(1, 3), (7, 7), (9, 10)]);
        assert!(ranges(&[]).is_empty());
    }

    #[test]
    fn start_positions_parse() {
        assert_eq!(parse_start("earliest"), Ok(Start::Earliest));
        assert_eq!(parse_start("latest"), Ok(Start::Latest));
        assert_eq!(parse_start("42"), Ok(Start::Offset(42)));
        assert!(parse_start("soon").is_err());
    }
}

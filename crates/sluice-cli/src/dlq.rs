//! `sluice dlq …`: dead letters, their reasons, redrive and discard.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use sluice_client::{Client, pb};

use crate::error::CliError;
use crate::output::Printer;
use crate::units;

/// Dead letters the redrive preview prints before asking.
const PREVIEW_ROWS: usize = 20;

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List the records of a dead-letter topic (e.g. orders.dlq) with their reasons.
    List {
        /// The dead-letter topic.
        topic: String,
        /// Only this group's dead letters.
        #[arg(long, short)]
        group: Option<String>,
        /// Only those whose last failure is at or after a time: `1h` (ago) or RFC 3339.
        #[arg(long, value_parser = units::parse_since)]
        since: Option<i64>,
        /// Most records to print.
        #[arg(long, short = 'n', default_value_t = 100)]
        limit: usize,
        /// Include records already redriven.
        #[arg(long)]
        all: bool,
    },
    /// Dead letters waiting, per dead-letter topic and group.
    Stats,
    /// Send dead-lettered records back to one group, which alone processes them again.
    Redrive(ResolveArgs),
    /// Mark dead-lettered records of one group as handled without processing them again: they
    /// leave its dead-letter depth (the records stay in the topic until retention).
    Discard(ResolveArgs),
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The dead-letter topic.
    topic: String,
    /// The group whose dead letters are redriven to it, or discarded.
    #[arg(long, short)]
    group: String,
    #[command(flatten)]
    selection: Selection,
    /// Go ahead without asking.
    #[arg(long, short)]
    yes: bool,
    /// Only show which dead letters are selected.
    #[arg(long, conflicts_with = "yes")]
    dry_run: bool,
}

/// What to do with the selected dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolution {
    Redrive,
    Discard,
}

impl Resolution {
    fn verb(self) -> &'static str {
        match self {
            Resolution::Redrive => "redrive",
            Resolution::Discard => "discard",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Resolution::Redrive => "redriven",
            Resolution::Discard => "discarded",
        }
    }
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Selection {
    /// Every dead letter of the group in the topic.
    #[arg(long)]
    all: bool,
    /// These dead-letter positions: `PARTITION:OFFSET`, comma-separated (`0:12,0:15`).
    #[arg(long, value_delimiter = ',', value_parser = parse_position)]
    offsets: Vec<(u32, u64)>,
    /// A range of one dead-letter partition: `PARTITION:FIRST-LAST` (`0:10-20`).
    #[arg(long, value_parser = parse_range)]
    range: Option<(u32, u64, u64)>,
}

fn parse_position(text: &str) -> Result<(u32, u64), String> {
    let bad = || format!("'{text}' is not PARTITION:OFFSET");
    let (p, o) = text.trim().split_once(':').ok_or_else(bad)?;
    Ok((p.parse().map_err(|_| bad())?, o.parse().map_err(|_| bad())?))
}

fn parse_range(text: &str) -> Result<(u32, u64, u64), String> {
    let bad = || format!("'{text}' is not PARTITION:FIRST-LAST");
    let (p, span) = text.trim().split_once(':').ok_or_else(bad)?;
    let (first, last) = span.split_once('-').ok_or_else(bad)?;
    let (first, last): (u64, u64) = (first.parse().map_err(|_| bad())?, last.parse().map_err(|_| bad())?);
    if first > last {
        return Err(format!("'{text}': FIRST is after LAST"));
    }
    Ok((p.parse().map_err(|_| bad())?, first, last))
}

impl Selection {
    fn matches(&self, d: &pb::DeadLetter) -> bool {
        if self.all {
            return true;
        }
        if let Some((p, first, last)) = self.range {
            return d.partition == p && (first..=last).contains(&d.offset);
        }
        self.offsets.contains(&(d.partition, d.offset))
    }

    fn positions(&self) -> pb::DeadLetterOffsets {
        let positions = self.offsets.iter().map(|&(partition, offset)| pb::TopicPartitionOffset { partition, offset });
        pb::DeadLetterOffsets { positions: positions.collect() }
    }

    fn to_proto(&self) -> pb::redrive_dead_letters_request::Selection {
        use pb::redrive_dead_letters_request::Selection as S;
        match self.range {
            _ if self.all => S::All(pb::AllDeadLetters {}),
            Some((partition, first, last)) => S::Range(pb::DeadLetterRange { partition, first, last }),
            None => S::Offsets(self.positions()),
        }
    }

    fn to_discard_proto(&self) -> pb::DeadLetterSelection {
        use pb::dead_letter_selection::Selection as S;
        let selection = match self.range {
            _ if self.all => S::All(pb::AllDeadLetters {}),
            Some((partition, first, last)) => S::Range(pb::DeadLetterRange { partition, first, last }),
            None => S::Offsets(self.positions()),
        };
        pb::DeadLetterSelection { selection: Some(selection) }
    }
}

/// Pages through dead letters until `limit` are gathered; returns them and the depth.
async fn gather(
    client: &Client,
    topic: &str,
    group: &str,
    since: i64,
    limit: usize,
    keep: impl Fn(&pb::DeadLetter) -> bool,
) -> Result<(Vec<pb::DeadLetter>, u64), CliError> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListDeadLettersRequest {
            topic: topic.to_owned(),
            group: group.to_owned(),
            since_ms: since,
            until_ms: 0,
            page_token,
            limit: 1000,
        };
        let page = client.admin().list_dead_letters(request).await?.into_inner();
        out.extend(page.dead_letters.into_iter().filter(&keep));
        if out.len() >= limit || page.next_page_token.is_empty() {
            out.truncate(limit);
            return Ok((out, page.depth));
        }
        page_token = page.next_page_token;
    }
}

fn dead_letter_json(d: &pb::DeadLetter) -> Value {
    let record = d.record.clone().unwrap_or_default();
    json!({
        "partition": d.partition,
        "offset": d.offset,
        "group": d.group,
        "source_topic": d.source_topic,
        "source_partition": d.source_partition,
        "source_offset": d.source_offset,
        "reason": d.reason,
        "delivery_count": d.delivery_count,
        "first_failure_ms": d.first_failure_ms,
        "last_failure_ms": d.last_failure_ms,
        "redriven": d.redriven,
        "key": record.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
        "value": String::from_utf8_lossy(&record.value),
    })
}

fn dead_letter_rows(letters: &[pb::DeadLetter]) -> Vec<Vec<String>> {
    let now = units::now_ms();
    letters
        .iter()
        .map(|d| {
            vec![
                d.partition.to_string(),
                d.offset.to_string(),
                d.group.clone(),
                format!("{}/{}@{}", d.source_topic, d.source_partition, d.source_offset),
                d.delivery_count.to_string(),
                units::format_age(now - d.last_failure_ms),
                if d.redriven { "redriven".into() } else { "waiting".into() },
                d.reason.clone(),
            ]
        })
        .collect()
}

const HEADER: [&str; 8] = ["PARTITION", "OFFSET", "GROUP", "SOURCE", "ATTEMPTS", "AGE", "STATE", "REASON"];

/// The dead-letter topic a group uses for a source topic: the group's own, the topic's, or
/// the broker's `<topic>.dlq`.
fn dead_letter_topic(
    group: &pb::DescribeGroupResponse,
    topic: &str,
    topics: &BTreeMap<String, pb::TopicConfig>,
) -> String {
    if !group.dead_letter_topic.is_empty() {
        return group.dead_letter_topic.replace("{topic}", topic);
    }
    match topics.get(topic).and_then(|c| c.dead_letter_topic.clone()).filter(|t| !t.is_empty()) {
        Some(configured) => configured,
        None => format!("{topic}.dlq"),
    }
}

async fn stats(client: &Client, printer: &Printer) -> Result<(), CliError> {
    let topics: BTreeMap<String, pb::TopicConfig> =
        client.list_topics().await?.into_iter().map(|t| (t.name, t.config.unwrap_or_default())).collect();
    let groups = client.admin().list_groups(pb::ListGroupsRequest {}).await?.into_inner().groups;
    // (dead-letter topic, group) -> (source topics, depth)
    let mut rows: BTreeMap<(String, String), (Vec<String>, u64)> = BTreeMap::new();
    for g in groups {
        let described =
            client.admin().describe_group(pb::DescribeGroupRequest { group: g.group.clone() }).await?.into_inner();
        let mut sources: Vec<&str> = described.partitions.iter().map(|p| p.topic.as_str()).collect();
        sources.dedup();
        for source in sources {
            let dlq = dead_letter_topic(&described, source, &topics);
            if !topics.contains_key(&dlq) {
                continue;
            }
            let entry = rows.entry((dlq.clone(), g.group.clone())).or_insert_with(|| (Vec::new(), 0));
            if entry.0.is_empty() {
                entry.1 = gather(client, &dlq, &g.group, 0, 0, |_| false).await?.1;
            }
            entry.0.push(source.to_owned());
        }
    }
    if printer.json_mode() {
        let out: Vec<Value> = rows
            .iter()
            .map(|((dlq, group), (sources, depth))| json!({ "topic": dlq, "group": group, "source_topics": sources, "depth": depth }))
            .collect();
        return printer.json(&Value::Array(out));
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|((dlq, group), (sources, depth))| vec![dlq.clone(), group.clone(), sources.join(","), depth.to_string()])
        .collect();
    printer.table(&["DEAD-LETTER TOPIC", "GROUP", "SOURCE TOPICS", "DEPTH"], &table)
}

fn confirm(question: &str) -> Result<bool, CliError> {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|source| CliError::Io { context: "reading the answer".into(), source })?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// Redrives or discards the selected dead letters, after a preview and a confirmation.
async fn resolve(client: &Client, printer: &Printer, args: ResolveArgs, how: Resolution) -> Result<(), CliError> {
    let selection = &args.selection;
    let (chosen, _) =
        gather(client, &args.topic, &args.group, 0, usize::MAX, |d| !d.redriven && selection.matches(d)).await?;
    if !printer.json_mode() {
        printer.line(&format!(
            "{} dead letters of group {} in {} would be {}",
            chosen.len(),
            args.group,
            args.topic,
            how.done()
        ))?;
        if !chosen.is_empty() {
            printer.table(&HEADER, &dead_letter_rows(&chosen[..chosen.len().min(PREVIEW_ROWS)]))?;
            if chosen.len() > PREVIEW_ROWS {
                printer.line(&format!("… and {} more", chosen.len() - PREVIEW_ROWS))?;
            }
        }
    }
    let go = if chosen.is_empty() || args.dry_run {
        false
    } else if args.yes {
        true
    } else if std::io::stdin().is_terminal() {
        let question = match how {
            Resolution::Redrive => format!("redrive {} records to group {}?", chosen.len(), args.group),
            Resolution::Discard => format!("discard {} dead letters of group {}?", chosen.len(), args.group),
        };
        confirm(&question)?
    } else {
        return Err(CliError::Usage(format!(
            "{} needs confirmation: add --yes (or --dry-run to only preview)",
            how.verb()
        )));
    };
    let (topic, group) = (args.topic.clone(), args.group.clone());
    let count = match (go, how) {
        (false, _) => 0,
        (true, Resolution::Redrive) => {
            let request = pb::RedriveDeadLettersRequest { topic, group, selection: Some(args.selection.to_proto()) };
            client.admin().redrive_dead_letters(request).await?.into_inner().redriven
        }
        (true, Resolution::Discard) => {
            let request =
                pb::DiscardDeadLettersRequest { topic, group, selection: Some(args.selection.to_discard_proto()) };
            client.admin().discard_dead_letters(request).await?.into_inner().discarded
        }
    };
    if printer.json_mode() {
        let preview: Vec<Value> = chosen.iter().map(dead_letter_json).collect();
        return printer.json(&json!({ "selected": preview, how.done(): count, "dry_run": !go }));
    }
    match how {
        Resolution::Redrive => printer.line(&format!("redriven {count} records to group {}", args.group)),
        Resolution::Discard => printer.line(&format!("discarded {count} dead letters of group {}", args.group)),
    }
}

pub async fn run(client: &Client, printer: &Printer, command: DlqCommand) -> Result<(), CliError> {
    match command {
        DlqCommand::List { topic, group, since, limit, all } => {
            let group = group.unwrap_or_default();
            let (letters, depth) =
                gather(client, &topic, &group, since.unwrap_or(0), limit, |d| all || !d.redriven).await?;
            if printer.json_mode() {
                let rows: Vec<Value> = letters.iter().map(dead_letter_json).collect();
                return printer.json(&json!({ "topic": topic, "depth": depth, "dead_letters": rows }));
            }
            printer.table(&HEADER, &dead_letter_rows(&letters))?;
            printer.line(&format!("{depth} waiting (not yet redriven)"))
        }
        DlqCommand::Stats => stats(client, printer).await,
        DlqCommand::Redrive(args) => resolve(client, printer, args, Resolution::Redrive).await,
        DlqCommand::Discard(args) => resolve(client, printer, args, Resolution::Discard).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_ranges_parse() {
        assert_eq!(parse_position("0:12"), Ok((0, 12)));
        assert!(parse_position("12").is_err());
        assert_eq!(parse_range("1:10-20"), Ok((1, 10, 20)));
        assert!(parse_range("1:20-10").is_err());
    }
}

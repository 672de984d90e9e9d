//! `sluice produce TOPIC`.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use serde_json::json;
use sluice_client::{Client, RecordPosition, pb};

use crate::error::CliError;
use crate::output::Printer;

/// Payload bytes per request when reading stdin.
const BATCH_BYTES: usize = 1 << 20;

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to append to.
    topic: String,
    /// Record values, one record each. Without any (and without --file), each line of stdin is
    /// a record.
    values: Vec<String>,
    /// Key of every record (records with one key go to one partition, in order).
    #[arg(long, short, conflicts_with = "key_from")]
    key: Option<String>,
    /// Split each value at the first SEP: the key before it, the value after (e.g. `--key-from :`
    /// makes "order-1:paid" a record keyed order-1). Values without SEP get no key.
    #[arg(long, value_name = "SEP")]
    key_from: Option<String>,
    /// A header on every record, repeatable: `--header trace-id=abc`.
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Append to this partition instead of choosing by key.
    #[arg(long, short)]
    partition: Option<u32>,
    /// The whole file (or `-` for all of stdin) as one record.
    #[arg(long, conflicts_with = "values")]
    file: Option<PathBuf>,
    /// Most records per request when reading lines from stdin. A request is sent once the one
    /// before it is acknowledged, so records of one key stay in order.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch: u32,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("'{text}' is not NAME=VALUE")),
    }
}

impl ProduceArgs {
    fn record(&self, line: &[u8]) -> pb::Record {
        let (key, value) = match &self.key_from {
            Some(sep) => match find(line, sep.as_bytes()) {
                Some(at) => (Some(Bytes::copy_from_slice(&line[..at])), &line[at + sep.len()..]),
                None => (None, line),
            },
            None => (self.key.as_ref().map(|k| Bytes::copy_from_slice(k.as_bytes())), line),
        };
        let headers = self
            .headers
            .iter()
            .map(|(name, value)| pb::Header { name: name.clone(), value: Bytes::copy_from_slice(value.as_bytes()) })
            .collect();
        pb::Record { key, value: Bytes::copy_from_slice(value), headers, ..Default::default() }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn key_text(record: &pb::Record) -> String {
    record.key.as_ref().map_or_else(String::new, |k| String::from_utf8_lossy(k).into_owned())
}

async fn produce_each(
    client: &Client,
    printer: &Printer,
    args: &ProduceArgs,
    records: Vec<pb::Record>,
) -> Result<(), CliError> {
    let keys: Vec<String> = records.iter().map(key_text).collect();
    let positions = client.produce(&args.topic, args.partition, records).await?;
    if printer.json_mode() {
        let rows: Vec<_> = positions
            .iter()
            .zip(&keys)
            .map(|(p, key)| json!({ "partition": p.partition, "offset": p.offset, "key": (!key.is_empty()).then_some(key) }))
            .collect();
        return printer.json(&serde_json::Value::Array(rows));
    }
    let rows: Vec<Vec<String>> = positions
        .iter()
        .zip(&keys)
        .map(|(p, key)| vec![p.partition.to_string(), p.offset.to_string(), key.clone()])
        .collect();
    printer.table(&["PARTITION", "OFFSET", "KEY"], &rows)
}

/// Per partition: records, first and last offset.
#[derive(Debug, Default)]
struct Landed(BTreeMap<u32, (u64, u64, u64)>);

impl Landed {
    fn add(&mut self, positions: &[RecordPosition]) {
        for p in positions {
            let entry = self.0.entry(p.partition).or_insert((0, p.offset, p.offset));
            entry.0 += 1;
            entry.1 = entry.1.min(p.offset);
            entry.2 = entry.2.max(p.offset);
        }
    }
}

async fn produce_lines(client: &Client, printer: &Printer, args: &ProduceArgs) -> Result<(), CliError> {
    if std::io::stdin().is_terminal() {
        eprintln!("reading records from stdin, one per line; end with Ctrl-D");
    }
    let started = Instant::now();
    let progress = std::io::stderr().is_terminal();
    let mut last_progress = started;
    let mut stdin = std::io::stdin().lock();
    let mut landed = Landed::default();
    let mut total = 0u64;
    let mut line = Vec::new();
    loop {
        let mut batch = Vec::with_capacity(args.batch as usize);
        let mut bytes = 0;
        while batch.len() < args.batch as usize && bytes < BATCH_BYTES {
            line.clear();
            let read = stdin
                .read_until(b'\n', &mut line)
                .map_err(|source| CliError::Io { context: "reading stdin".into(), source })?;
            if read == 0 {
                break;
            }
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            bytes += text.len();
            batch.push(args.record(text));
        }
        if batch.is_empty() {
            break;
        }
        let count = batch.len() as u64;
        let positions = client.produce(&args.topic, args.partition, batch).await?;
        landed.add(&positions);
        total += count;
        if progress && last_progress.elapsed() >= Duration::from_millis(200) {
            last_progress = Instant::now();
            let rate = total as f64 / started.elapsed().as_secs_f64();
            eprint!("\r{total} records produced ({rate:.0}/s)");
            let _ = std::io::stderr().flush();
        }
    }
    if progress && last_progress != started {
        eprintln!();
    }
    let seconds = started.elapsed().as_secs_f64();
    if printer.json_mode() {
        let partitions: Vec<_> = landed
            .0
            .iter()
            .map(|(p, (n, first, last))| json!({ "partition": p, "records": n, "first_offset": first, "last_offset": last }))
            .collect();
        return printer
            .json(&json!({ "topic": args.topic, "records": total, "seconds": seconds, "partitions": partitions }));
    }
    printer.line(&format!("produced {total} records to {} in {seconds:.2}s", args.topic))?;
    let rows: Vec<Vec<String>> = landed
        .0
        .iter()
        .map(|(p, (n, first, last))| vec![p.to_string(), n.to_string(), first.to_string(), last.to_string()])
        .collect();
    if rows.is_empty() { Ok(()) } else { printer.table(&["PARTITION", "RECORDS", "FIRST", "LAST"], &rows) }
}

pub async fn run(client: &Client, printer: &Printer, args: ProduceArgs) -> Result<(), CliError> {
    if let Some(path) = &args.file {
        let value = if path.as_os_str() == "-" {
            let mut all = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut all)
                .map_err(|source| CliError::Io { context: "reading stdin".into(), source })?;
            all
        } else {
            std::fs::read(path)
                .map_err(|source| CliError::Io { context: format!("reading {}", path.display()), source })?
        };
        let mut record = args.record(&[]);
        record.value = Bytes::from(value);
        return produce_each(client, printer, &args, vec![record]).await;
    }
    if args.values.is_empty() {
        return produce_lines(client, printer, &args).await;
    }
    let records = args.values.iter().map(|v| args.record(v.as_bytes())).collect();
    produce_each(client, printer, &args, records).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: ProduceArgs,
    }

    #[test]
    fn key_from_splits_at_the_first_separator() {
        let wrap = Wrap::parse_from(["x", "t", "--key-from", "::", "-H", "trace=a=b"]);
        let record = wrap.args.record(b"order-1::paid::twice");
        assert_eq!(record.key.as_deref(), Some(&b"order-1"[..]));
        assert_eq!(&record.value[..], b"paid::twice");
        assert_eq!(record.headers[0].name, "trace");
        assert_eq!(&record.headers[0].value[..], b"a=b");
        let unkeyed = wrap.args.record(b"no separator");
        assert!(unkeyed.key.is_none());
        assert!(parse_header("=x").is_err());
    }
}

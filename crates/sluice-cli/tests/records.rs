//! `sluice produce` and `sluice consume` against a real broker.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::{Broker, sluice_command};
use serde_json::Value;

#[test]
fn produced_records_come_back_with_keys_headers_and_timestamps() {
    let broker = Broker::start();
    broker.sluice(&["topic", "create", "orders", "-p", "4"]).ok();
    let before = common::now_ms();
    let positions = broker
        .sluice(&[
            "produce",
            "orders",
            "--key",
            "order-7",
            "-H",
            "trace-id=abc",
            "-H",
            "type=created",
            "one",
            "two",
            "-o",
            "json",
        ])
        .ok()
        .json();
    let positions = positions.as_array().unwrap();
    assert_eq!(positions.len(), 2);
    assert_eq!(positions[0]["partition"], positions[1]["partition"], "one key, one partition");
    let partition = positions[0]["partition"].as_u64().unwrap();
    assert_eq!(positions[1]["offset"].as_u64(), positions[0]["offset"].as_u64().map(|o| o + 1));

    let records = broker.sluice(&["consume", "orders", "--format", "json"]).ok().json_lines();
    assert_eq!(records.len(), 2);
    for (record, value) in records.iter().zip(["one", "two"]) {
        assert_eq!(record["topic"], "orders");
        assert_eq!(record["partition"].as_u64(), Some(partition));
        assert_eq!(record["key"], "order-7");
        assert_eq!(record["value"], value);
        let headers: Vec<(&str, &str)> = record["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["name"].as_str().unwrap(), h["value"].as_str().unwrap()))
            .collect();
        assert_eq!(headers, [("trace-id", "abc"), ("type", "created")]);
        let ts = record["timestamp_ms"].as_i64().unwrap();
        assert!(ts >= before && ts <= common::now_ms());
    }
    let text =
        broker.sluice(&["consume", "orders", "--partition", &partition.to_string(), "--offset", "1"]).ok().stdout;
    assert_eq!(text.lines().count(), 1, "{text}");
    let line = text.lines().next().unwrap();
    assert!(line.starts_with(&format!("{partition}:1 ")), "{line}");
    assert!(
        line.contains("key=order-7") && line.contains("[trace-id=abc type=created]") && line.ends_with(" two"),
        "{line}"
    );

    assert_eq!(
        broker.sluice(&["consume", "orders", "-o", "json"]).ok().json_lines(),
        records,
        "-o json means --format json"
    );
    let raw = broker.sluice(&["consume", "orders", "--format", "raw", "-n", "1"]).ok().stdout;
    assert_eq!(raw, "one\n");
    assert!(broker.sluice(&["consume", "orders", "--offset", "latest"]).ok().stdout.is_empty());
    assert!(broker.sluice(&["consume", "orders", "--since", "2099-01-01T00:00:00Z"]).ok().stdout.is_empty());
    assert_eq!(broker.sluice(&["consume", "orders", "--since", "1h"]).ok().stdout.lines().count(), 2);
    let out_of_range = broker.sluice(&["consume", "orders", "--partition", &partition.to_string(), "--offset", "9"]);
    assert_eq!(out_of_range.code, 1);
    assert!(out_of_range.stderr.contains("OUT_OF_RANGE"), "{}", out_of_range.stderr);
}

#[test]
fn a_file_is_one_record_and_key_from_splits_lines() {
    let broker = Broker::start();
    broker.sluice(&["topic", "create", "docs"]).ok();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.json");
    let body = "{\n  \"multi\": \"line\"\n}\n";
    std::fs::write(&path, body).unwrap();
    broker.sluice(&["produce", "docs", "--file", path.to_str().unwrap(), "--key", "doc-1"]).ok();
    broker.sluice_with_stdin(&["produce", "docs", "--key-from", ":"], b"user-1:signed up\nno key here\n").ok();
    let records = broker.sluice(&["consume", "docs", "--format", "json"]).ok().json_lines();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["value"], body);
    assert_eq!(records[0]["key"], "doc-1");
    assert_eq!((records[1]["key"].as_str(), records[1]["value"].as_str()), (Some("user-1"), Some("signed up")));
    assert_eq!(records[2]["key"], Value::Null);
    assert_eq!(records[2]["value"], "no key here");
}

#[test]
fn a_hundred_thousand_stdin_lines_arrive_complete_and_in_order_per_key() {
    let broker = Broker::start();
    broker.sluice(&["topic", "create", "events", "-p", "4", "--fsync", "never"]).ok();
    let input: String = (0..100_000).map(|i| format!("user-{}:{i}\n", i % 37)).collect();
    let summary =
        broker.sluice_with_stdin(&["produce", "events", "--key-from", ":", "-o", "json"], input.as_bytes()).ok().json();
    assert_eq!(summary["records"], 100_000);
    let landed: u64 = summary["partitions"].as_array().unwrap().iter().map(|p| p["records"].as_u64().unwrap()).sum();
    assert_eq!(landed, 100_000);

    let records = broker.sluice(&["consume", "events", "--format", "json"]).ok().json_lines();
    assert_eq!(records.len(), 100_000);
    let mut last: HashMap<String, (u64, i64)> = HashMap::new();
    let mut seen = vec![false; 100_000];
    for record in &records {
        let key = record["key"].as_str().unwrap().to_owned();
        let n: i64 = record["value"].as_str().unwrap().parse().unwrap();
        let partition = record["partition"].as_u64().unwrap();
        if let Some((p, previous)) = last.insert(key.clone(), (partition, n)) {
            assert_eq!(p, partition, "{key} stays on one partition");
            assert!(n > previous, "{key}: {n} after {previous}");
        }
        assert!(!std::mem::replace(&mut seen[n as usize], true), "{n} twice");
    }
    assert!(seen.iter().all(|&s| s), "every line arrived");
}

#[test]
fn follow_prints_records_appended_after_it_started() {
    let broker = Broker::start();
    broker.sluice(&["topic", "create", "live", "-p", "2"]).ok();
    broker.sluice(&["produce", "live", "--partition", "0", "first"]).ok();
    let mut child = sluice_command(&broker.addr, &["consume", "live", "--follow", "-n", "3", "--format", "raw"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "first", "following: caught up with what was there");
    broker.sluice(&["produce", "live", "--partition", "1", "second"]).ok();
    broker.sluice(&["produce", "live", "--partition", "0", "third"]).ok();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert_eq!(rest.len(), 2);
    assert!(rest.contains(&"second".to_owned()) && rest.contains(&"third".to_owned()), "{rest:?}");
    assert!(child.wait().unwrap().success(), "stops after --count");
}

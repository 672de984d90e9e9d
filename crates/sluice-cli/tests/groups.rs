//! `sluice consume --group`, `sluice group …` and `sluice dlq …` against a real broker.

mod common;

use common::{Broker, Run};
use serde_json::Value;
use sluice_client::{Client, GroupEvent, pb};

fn values(run: &Run) -> Vec<String> {
    run.stdout.lines().map(str::to_owned).collect()
}

fn committed(broker: &Broker, group: &str) -> Vec<u64> {
    let described = broker.sluice(&["group", "describe", group, "-o", "json"]).ok().json();
    described["partitions"].as_array().unwrap().iter().map(|p| p["committed_offset"].as_u64().unwrap()).collect()
}

#[test]
fn a_group_consumer_acks_what_it_prints_and_resets_preview_before_they_apply() {
    let broker = Broker::start();
    broker.sluice(&["topic", "create", "jobs"]).ok();
    let input: String = (0..10).map(|i| format!("job-{i}\n")).collect();
    broker.sluice_with_stdin(&["produce", "jobs"], input.as_bytes()).ok();

    let first = broker.sluice(&["consume", "jobs", "--group", "workers", "-n", "4", "--format", "raw"]).ok();
    assert_eq!(values(&first), ["job-0", "job-1", "job-2", "job-3"]);
    assert_eq!(committed(&broker, "workers"), [4], "what was printed is acknowledged");
    let listed = broker.sluice(&["group", "list", "-o", "json"]).ok().json();
    assert_eq!(listed[0]["group"], "workers");
    assert_eq!(listed[0]["lag"], 6);
    let text = broker.sluice(&["group", "describe", "workers"]).ok().stdout;
    let row = text.lines().find(|l| l.starts_with("jobs")).unwrap();
    assert_eq!(row.split_whitespace().take(6).collect::<Vec<_>>(), ["jobs", "0", "-", "4", "10", "6"], "{text}");

    let rest = broker.sluice(&["consume", "jobs", "--group", "workers", "--format", "raw"]).ok();
    assert_eq!(values(&rest), (4..10).map(|i| format!("job-{i}")).collect::<Vec<_>>(), "nothing printed twice");
    assert_eq!(committed(&broker, "workers"), [10]);

    let preview =
        broker.sluice(&["group", "reset", "workers", "--topic", "jobs", "--to-offset", "7", "-o", "json"]).ok().json();
    assert_eq!(preview["executed"], false);
    assert_eq!(
        (preview["partitions"][0]["current"].as_u64(), preview["partitions"][0]["target"].as_u64()),
        (Some(10), Some(7))
    );
    assert_eq!(committed(&broker, "workers"), [10], "a dry run changes nothing");
    let text = broker.sluice(&["group", "reset", "workers", "--topic", "jobs", "--to-earliest"]).ok().stdout;
    assert!(text.contains("dry run: nothing changed"), "{text}");

    broker.sluice(&["group", "reset", "workers", "--topic", "jobs", "--to-offset", "7", "--execute"]).ok();
    assert_eq!(committed(&broker, "workers"), [7]);
    let again = broker.sluice(&["consume", "jobs", "--group", "workers", "--format", "raw"]).ok();
    assert_eq!(values(&again), ["job-7", "job-8", "job-9"]);

    let since_time = broker
        .sluice(&["group", "reset", "workers", "--topic", "jobs", "--to-time", "1h", "--execute", "-o", "json"])
        .ok()
        .json();
    assert_eq!(since_time["partitions"][0]["target"], 0, "every record is newer than an hour");

    broker.sluice(&["group", "delete", "workers"]).ok();
    assert_eq!(broker.sluice(&["group", "list", "-o", "json"]).ok().json(), Value::Array(Vec::new()));
    let gone = broker.sluice(&["group", "delete", "workers"]);
    assert_eq!(gone.code, 1);
    assert!(gone.stderr.contains("NOT_FOUND"), "{}", gone.stderr);
}

#[test]
fn a_group_consumer_leaves_only_once_its_partitions_are_caught_up() {
    let broker = Broker::start();
    broker.sluice(&["topic", "create", "clicks", "-p", "4", "--fsync", "never"]).ok();
    let input: String = (0..5000).map(|i| format!("{i}\n")).collect();
    broker.sluice_with_stdin(&["produce", "clicks"], input.as_bytes()).ok();
    // A 1 ms quiet spell happens long before 5,000 records are through; leaving then would
    // print only some of them.
    let run = broker.sluice(&["consume", "clicks", "--group", "fast", "--wait", "1ms", "--format", "raw"]).ok();
    let mut got: Vec<u32> = run.stdout.lines().map(|l| l.parse().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, (0..5000).collect::<Vec<_>>());
}

/// Joins `group` on `topic`, nacks `poison` without retry, acks the rest of `count` records,
/// and leaves.
async fn nack_one(addr: &str, group: &str, topic: &str, poison: u64, count: usize) {
    let client = Client::connect(addr).await.unwrap();
    let join = pb::Join { group: group.into(), topics: vec![topic.into()], ..Default::default() };
    let mut member = client.join_group(join).await.unwrap();
    let mut seen = 0;
    while seen < count {
        let Some(GroupEvent::Records(batch)) = member.next().await.unwrap() else { continue };
        for delivered in &batch.records {
            let offset = delivered.record.as_ref().unwrap().offset;
            seen += 1;
            if offset == poison {
                let nack = pb::Nack {
                    topic: batch.topic.clone(),
                    partition: batch.partition,
                    generation: batch.generation,
                    offsets: vec![offset],
                    reason: "card declined".into(),
                    retryable: Some(false),
                    ..Default::default()
                };
                member.nack(nack).await.unwrap();
            } else {
                member.ack(&batch.topic, batch.partition, batch.generation, &[(offset, offset)]).await.unwrap();
            }
        }
    }
    member.leave().await.unwrap();
}

#[test]
fn dead_letters_are_listed_counted_and_redriven_to_one_group() {
    let broker = Broker::start();
    broker.sluice(&["topic", "create", "payments"]).ok();
    broker.sluice(&["produce", "payments", "--key", "p", "ok-0", "poison", "ok-2"]).ok();
    broker.block_on(nack_one(&broker.addr, "billing", "payments", 1, 3));

    // Dead-lettering is asynchronous (batched every few ms): wait for it, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let listed = loop {
        let run = broker.sluice(&["dlq", "list", "payments.dlq", "--group", "billing", "-o", "json"]);
        if run.code == 0 && run.json()["depth"] == 1 {
            break run.json();
        }
        assert!(std::time::Instant::now() < deadline, "never dead-lettered: {} {}", run.stdout, run.stderr);
        std::thread::yield_now();
    };
    let letter = &listed["dead_letters"][0];
    assert_eq!(letter["source_topic"], "payments");
    assert_eq!(letter["source_offset"], 1);
    assert_eq!(letter["group"], "billing");
    assert_eq!(letter["reason"], "card declined");
    assert_eq!(letter["delivery_count"], 1);
    assert_eq!(letter["value"], "poison");
    let table = broker.sluice(&["dlq", "list", "payments.dlq"]).ok().stdout;
    assert!(
        table.contains("payments/0@1") && table.contains("card declined") && table.contains("1 waiting"),
        "{table}"
    );

    let stats = broker.sluice(&["dlq", "stats", "-o", "json"]).ok().json();
    assert_eq!(
        stats,
        serde_json::json!([{ "topic": "payments.dlq", "group": "billing", "source_topics": ["payments"], "depth": 1 }])
    );
    let groups = broker.sluice(&["group", "list", "-o", "json"]).ok().json();
    assert_eq!(groups[0]["dead_letter_depth"], 1);

    let unconfirmed = broker.sluice(&["dlq", "redrive", "payments.dlq", "--group", "billing", "--all"]);
    assert_eq!(unconfirmed.code, 2, "no terminal to confirm on: {}", unconfirmed.stderr);
    assert!(
        unconfirmed.stdout.contains("1 dead letters of group billing"),
        "the preview comes first: {}",
        unconfirmed.stdout
    );
    let dry = broker
        .sluice(&["dlq", "redrive", "payments.dlq", "--group", "billing", "--all", "--dry-run", "-o", "json"])
        .ok()
        .json();
    assert_eq!((dry["redriven"].as_u64(), dry["selected"].as_array().map(Vec::len)), (Some(0), Some(1)));

    let redriven =
        broker.sluice(&["dlq", "redrive", "payments.dlq", "--group", "billing", "--offsets", "0:0", "--yes"]).ok();
    assert!(redriven.stdout.contains("redriven 1 records to group billing"), "{}", redriven.stdout);
    let again = broker
        .sluice(&["dlq", "redrive", "payments.dlq", "--group", "billing", "--all", "--yes", "-o", "json"])
        .ok()
        .json();
    assert_eq!(again["redriven"], 0, "a second redrive does nothing");
    assert_eq!(broker.sluice(&["dlq", "list", "payments.dlq", "-o", "json"]).ok().json()["depth"], 0);

    let retried = broker.sluice(&["consume", "payments", "--group", "billing", "--format", "json"]).ok().json_lines();
    assert_eq!(retried.len(), 1, "only the redriven record comes back");
    assert_eq!(retried[0]["value"], "poison");
    assert_eq!(retried[0]["offset"], 1);
    let other = broker.sluice(&["consume", "payments", "--group", "email", "--format", "raw"]).ok();
    assert_eq!(values(&other), ["ok-0", "poison", "ok-2"], "another group reads the topic as it is");
}

/// Flips a byte in the records of the second batch of the partition's second segment; returns
/// that batch's first offset.
fn damage_second_batch(data_dir: &std::path::Path, topic: &str) -> u64 {
    let dir = data_dir.join("topics").join(topic).join("0");
    let mut bases: Vec<u64> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    bases.sort();
    let path = dir.join(format!("{:020}.log", bases[1]));
    let mut bytes = std::fs::read(&path).unwrap();
    let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let count = u32::from_le_bytes(bytes[20..24].try_into().unwrap());
    bytes[12 + len + 200] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    bases[1] + u64::from(count)
}

#[test]
fn a_group_stalled_on_damaged_records_is_shown_with_the_way_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    broker
        .sluice(&["topic", "create", "orders", "-p", "1", "--segment-bytes", "16KiB", "--max-message-bytes", "4KiB"])
        .ok();
    let input: String = (0..2000).map(|i| format!("order-{i:05}-{}\n", "x".repeat(100))).collect();
    broker.sluice_with_stdin(&["produce", "orders", "--batch", "10"], input.as_bytes()).ok();
    drop(broker);
    let damaged = damage_second_batch(dir.path(), "orders");

    let broker = Broker::start_in(dir.path(), &[]);
    // The member leaves once it has everything it can read, and says where it stopped.
    let run = broker.sluice(&["consume", "orders", "--group", "billing", "--wait", "100ms", "--format", "raw"]).ok();
    assert_eq!(run.stdout.lines().count() as u64, damaged, "every record before the damage");
    assert!(run.stderr.contains(&format!("orders/0 stopped at offsets {damaged}..")), "{}", run.stderr);
    let described = broker.sluice(&["group", "describe", "billing"]).ok();
    let stalled =
        described.stdout.lines().find(|l| l.starts_with("STALLED")).unwrap_or_else(|| panic!("{}", described.stdout));
    assert!(stalled.contains(&format!("offsets {damaged}..")) && stalled.contains("--to-offset"), "{stalled}");
    let json = broker.sluice(&["group", "describe", "billing", "-o", "json"]).ok().json();
    assert_eq!(json["partitions"][0]["stalled"]["from_offset"], damaged);

    // The command it prints moves the group past the damage.
    let command: Vec<&str> = stalled.split("to go on: sluice ").nth(1).unwrap().split_whitespace().collect();
    broker.sluice(&command).ok();
    let rest = broker.sluice(&["consume", "orders", "--group", "billing", "--wait", "100ms", "--format", "raw"]).ok();
    let after = rest.stdout.lines().next().unwrap().to_owned();
    assert!(after.starts_with("order-"), "{after}");
    assert!(!rest.stderr.contains("stopped at"), "{}", rest.stderr);
}

#[test]
fn a_discarded_dead_letter_leaves_the_depth_and_is_never_redriven() {
    let broker = Broker::start();
    broker.sluice(&["topic", "create", "payments"]).ok();
    broker.sluice(&["produce", "payments", "--key", "p", "ok-0", "poison", "ok-2"]).ok();
    broker.block_on(nack_one(&broker.addr, "billing", "payments", 1, 3));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let run = broker.sluice(&["dlq", "list", "payments.dlq", "-o", "json"]);
        if run.code == 0 && run.json()["depth"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never dead-lettered: {} {}", run.stdout, run.stderr);
        std::thread::yield_now();
    }
    let unconfirmed = broker.sluice(&["dlq", "discard", "payments.dlq", "--group", "billing", "--all"]);
    assert_eq!(unconfirmed.code, 2, "no terminal to confirm on: {}", unconfirmed.stderr);
    assert!(unconfirmed.stdout.contains("1 dead letters of group billing in payments.dlq would be discarded"));
    let discarded = broker.sluice(&["dlq", "discard", "payments.dlq", "--group", "billing", "--all", "--yes"]).ok();
    assert!(discarded.stdout.contains("discarded 1 dead letters of group billing"), "{}", discarded.stdout);
    assert_eq!(broker.sluice(&["dlq", "list", "payments.dlq", "-o", "json"]).ok().json()["depth"], 0);
    let groups = broker.sluice(&["group", "list", "-o", "json"]).ok().json();
    assert_eq!(groups[0]["dead_letter_depth"], 0);
    let redrive =
        broker.sluice(&["dlq", "redrive", "payments.dlq", "--group", "billing", "--all", "--yes", "-o", "json"]);
    assert_eq!(redrive.ok().json()["redriven"], 0, "a discarded dead letter cannot be redriven");
    let nothing =
        broker.sluice(&["consume", "payments", "--group", "billing", "--wait", "100ms", "--format", "raw"]).ok();
    assert!(nothing.stdout.is_empty(), "the group has nothing left: {}", nothing.stdout);
}

#[test]
fn group_create_and_alter_set_a_groups_policy() {
    let broker = Broker::start();
    broker.sluice(&["topic", "create", "emails"]).ok();
    let created = broker
        .sluice(&["group", "create", "mailers", "--delivery", "shared", "--ack-timeout", "2m", "-o", "json"])
        .ok()
        .json();
    assert_eq!(created["config"]["delivery"], "shared");
    assert_eq!(created["config"]["ack_timeout_ms"], 120_000);
    let again = broker.sluice(&["group", "create", "mailers"]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("ALREADY_EXISTS") || again.stderr.contains("already exists"), "{}", again.stderr);

    let altered = broker.sluice(&["group", "alter", "mailers", "--max-attempts", "3", "-o", "json"]).ok().json();
    assert_eq!(altered["config"]["max_delivery_attempts"], 3);
    assert_eq!(altered["config"]["ack_timeout_ms"], 120_000, "fields not named keep their value");
    let text = broker.sluice(&["group", "describe", "mailers"]).ok().stdout;
    assert!(text.contains("delivery:          shared"), "{text}");
    assert!(text.contains("max attempts:      3"), "{text}");

    let bad = broker.sluice(&["group", "alter", "mailers", "--ordering", "strict"]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("strict ordering needs partition-owned delivery"), "{}", bad.stderr);
    let missing = broker.sluice(&["group", "alter", "nobody", "--max-attempts", "3"]);
    assert!(missing.stderr.contains("NOT_FOUND"), "{}", missing.stderr);
}

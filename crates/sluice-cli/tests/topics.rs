//! `sluice topic …` and `sluice status` against a real broker, and the exit codes and one-line
//! errors of a stopped server, unknown names and bad flags.

mod common;

use common::{Broker, run_sluice};

#[test]
fn topics_are_created_described_altered_grown_and_deleted() {
    let broker = Broker::start();
    let created = broker
        .sluice(&[
            "topic",
            "create",
            "orders",
            "-p",
            "3",
            "--retention",
            "7d",
            "--retention-bytes",
            "10GiB",
            "--segment-bytes",
            "64MiB",
            "--max-message-bytes",
            "1MiB",
            "--fsync",
            "interval:100ms",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(created["partitions"], 3);
    let config = &created["config"];
    assert_eq!(config["retention_ms"], 7 * 86_400_000u64);
    assert_eq!(config["retention_bytes"], 10u64 << 30);
    assert_eq!(config["segment_bytes"], 64u64 << 20);
    assert_eq!(config["max_message_bytes"], 1u64 << 20);
    assert_eq!(config["fsync"], "interval:100ms");

    let table = broker.sluice(&["topic", "list"]).ok().stdout;
    assert!(
        table.starts_with("TOPIC") && !table.contains('\x1b'),
        "no colors when stdout is not a terminal: {table:?}"
    );
    let row = table.lines().find(|l| l.starts_with("orders")).expect("orders listed");
    assert_eq!(row.split_whitespace().collect::<Vec<_>>(), ["orders", "3", "7d", "10.0", "GiB", "interval:100ms"]);

    broker.sluice(&["produce", "orders", "--partition", "2", "a", "b"]).ok();
    let described = broker.sluice(&["topic", "describe", "orders", "-o", "json"]).ok().json();
    let partitions = described["partition_details"].as_array().unwrap();
    assert_eq!(partitions.len(), 3);
    assert_eq!(partitions[2]["end_offset"], 2);
    assert_eq!(partitions[2]["records"], 2);
    assert!(partitions[2]["size_bytes"].as_u64().unwrap() > 0);
    assert_eq!(partitions[0]["end_offset"], 0);
    let text = broker.sluice(&["topic", "describe", "orders"]).ok().stdout;
    assert!(text.contains("retention:") && text.contains("7d"), "{text}");

    let altered = broker.sluice(&["topic", "alter", "orders", "--retention", "forever", "-o", "json"]).ok().json();
    assert_eq!(altered["config"]["retention_ms"], -1);
    assert_eq!(altered["config"]["segment_bytes"], 64u64 << 20, "flags not given stay as they were");

    let grown = broker.sluice(&["topic", "add-partitions", "orders", "--to", "5", "-o", "json"]).ok().json();
    assert_eq!(grown["partitions"], 5);

    let again = broker.sluice(&["topic", "create", "orders"]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.starts_with("error: ALREADY_EXISTS: "), "{}", again.stderr);
    assert!(again.stderr.contains("hint: `sluice topic describe <name>`"), "{}", again.stderr);
    assert_eq!(again.stderr.lines().count(), 1, "one line: {}", again.stderr);

    broker.sluice(&["topic", "delete", "orders"]).ok();
    assert_eq!(broker.sluice(&["topic", "list", "-o", "json"]).ok().json(), serde_json::json!([]));
}

#[test]
fn status_shows_version_addresses_topics_and_health() {
    let broker = Broker::start();
    broker.sluice(&["topic", "create", "a"]).ok();
    broker.sluice(&["topic", "create", "b"]).ok();
    let status = broker.sluice(&["status", "-o", "json"]).ok().json();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["listen_address"], broker.addr.as_str());
    assert_eq!(status["topics"], 2);
    assert_eq!(status["health"], "SERVING");
    let text = broker.sluice(&["status"]).ok().stdout;
    assert!(text.lines().any(|l| l.starts_with("health:") && l.ends_with("SERVING")), "{text}");
}

#[test]
fn a_stopped_server_is_exit_1_with_a_hint() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let server = format!("127.0.0.1:{port}");
    let run = run_sluice(&server, &["topic", "list"], b"");
    assert_eq!(run.code, 1);
    assert!(run.stderr.starts_with("error: UNAVAILABLE: cannot connect to"), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("is sluice-server running on {server}?")), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1);
    let flag = run_sluice("127.0.0.1:1", &["--server", &server, "status"], b"");
    assert!(flag.stderr.contains(&server), "--server wins over SLUICE_SERVER: {}", flag.stderr);
}

#[test]
fn unknown_names_are_exit_1_and_bad_flags_exit_2() {
    let broker = Broker::start();
    let unknown = broker.sluice(&["consume", "nope"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("NOT_FOUND") && unknown.stderr.contains("`sluice topic list`"),
        "{}",
        unknown.stderr
    );
    let group = broker.sluice(&["group", "describe", "nobody"]);
    assert_eq!(group.code, 1);
    assert!(group.stderr.contains("`sluice group list`"), "{}", group.stderr);
    for bad in [
        &["topic", "create", "x", "--retention", "soon"][..],
        &["topic", "create", "x", "--fsync", "sometimes"],
        &["produce"],
        &["consume", "t", "--group", "g", "--offset", "5"],
        &["group", "reset", "g", "--topic", "t"],
        &["dlq", "redrive", "t.dlq", "--group", "g", "--offsets", "12"],
        &["no-such-command"],
    ] {
        let run = broker.sluice(bad);
        assert_eq!(run.code, 2, "{bad:?}: {}", run.stderr);
    }
    assert_eq!(broker.sluice(&["topic", "list"]).ok().stdout.lines().count(), 1, "nothing was created");
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let run = run_sluice("127.0.0.1:1", &["completions", shell], b"").ok();
        assert!(run.stdout.contains("sluice") && run.stdout.contains("add-partitions"), "{shell}");
    }
}

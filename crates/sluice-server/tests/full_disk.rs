//! A full disk, for real: the broker's data directory on a small tmpfs. Writes are refused
//! with RESOURCE_EXHAUSTED / DISK_FULL every time (never INTERNAL, never UNAVAILABLE), acks and
//! the shutdown flush still fit in the reserve, and writes resume without a restart once
//! space is freed.
//!
//! Mounting needs root (as CI and the developers' machines run); elsewhere these tests say so
//! and pass without running.

mod common;

use std::path::Path;
use std::process::Command;

use common::member::{JoinOptions, Member};
use common::process::spawn_broker;
use common::*;
use sluice_proto::v1 as pb;

/// A tmpfs of `megabytes` mounted on a fresh temp dir, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(megabytes: u32) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let size = format!("size={megabytes}m");
        let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", &size, "tmpfs"]).arg(dir.path()).output();
        match mounted {
            Ok(out) if out.status.success() => Some(Tmpfs { dir }),
            other => {
                eprintln!("SKIPPED: cannot mount a tmpfs here (needs root): {other:?}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn assert_disk_full(status: &tonic::Status) {
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.metadata().get("sluice-reason").unwrap(), "DISK_FULL", "{status:?}");
    assert!(!status.message().contains("/tmp"), "no broker paths: {}", status.message());
}

/// Produces to `topic` until even a one-record request is refused (256 KiB requests first,
/// then single small records for what is left above the reserve); returns that status.
async fn fill(server: &TestServer, topic: &str) -> tonic::Status {
    let mut producer = server.producer().await;
    let value = "x".repeat(64 << 10);
    for _ in 0..10_000 {
        let records = (0..4).map(|_| record(None, &value)).collect();
        if producer.produce(produce_request(topic, records)).await.is_err() {
            break;
        }
    }
    for _ in 0..10_000 {
        if let Err(status) = produce_one(server, topic, "small").await {
            return status;
        }
    }
    panic!("the disk never filled");
}

fn small_segments() -> Option<pb::TopicConfig> {
    Some(pb::TopicConfig { segment_bytes: Some(4 << 20), ..pb::TopicConfig::default() })
}

async fn produce_one(server: &TestServer, topic: &str, value: &str) -> Result<(), tonic::Status> {
    server.producer().await.produce(produce_request(topic, vec![record(None, value)])).await.map(|_| ())
}

async fn committed(server: &TestServer) -> u64 {
    let request = pb::DescribeGroupRequest { group: "mailer".into() };
    server.admin().await.describe_group(request).await.unwrap().into_inner().partitions[0].committed_offset
}

#[tokio::test]
async fn the_reserve_keeps_acks_and_shutdown_safe_and_writes_resume_when_space_is_freed() -> TestResult {
    let Some(disk) = Tmpfs::mount(48) else { return Ok(()) };
    let env = [("SLUICE_LIMITS_MIN_FREE_BYTES", "8MiB"), ("SLUICE_GROUPS_COMMIT_INTERVAL", "50ms")];
    let broker = spawn_broker(disk.path(), &env);
    let server = &broker.server;
    create_topic(server, "work", 1, None).await;
    create_topic(server, "bulk", 1, small_segments()).await;
    let jobs = (0..20).map(|i| record(None, &format!("job-{i}"))).collect();
    server.producer().await.produce(produce_request("work", jobs)).await?;

    let refused = fill(server, "bulk").await;
    assert_disk_full(&refused);
    for _ in 0..3 {
        assert_disk_full(&produce_one(server, "work", "more").await.unwrap_err());
    }
    let create = pb::CreateTopicRequest { name: "new".into(), partitions: 1, config: None };
    assert_disk_full(&server.admin().await.create_topic(create).await.unwrap_err());
    let (status_line, body) = server.http_get("/readyz").await;
    assert!(status_line.contains("503") && body.contains("disk full"), "{status_line} {body}");
    let described = server.admin().await.describe_topic(pb::DescribeTopicRequest { name: "bulk".into() }).await?;
    assert!(described.into_inner().partitions.iter().all(|p| p.poisoned.is_empty()), "a full disk is not read-only");

    // Acks made while the disk is full are kept, through a graceful restart.
    let mut member = Member::join(server, "mailer", &["work"], "m", JoinOptions::default()).await;
    let mut acked = 0;
    while acked < 20 {
        let records = member.next_records().await;
        member.ack_all(&records).await;
        acked += records.records.len();
    }
    eventually("the acks to be committed", || async { committed(server).await == 20 }).await;
    member.close();
    drop(member);
    let status = broker.terminate();
    assert!(status.success(), "a clean exit on SIGTERM with the disk full: {status:?}");

    let broker = spawn_broker(disk.path(), &env);
    let server = &broker.server;
    assert_eq!(committed(server).await, 20, "no ack was lost");
    // Space comes back: writes are accepted again, with no restart.
    server.admin().await.delete_topic(pb::DeleteTopicRequest { name: "bulk".into() }).await?;
    eventually("writes to be accepted again", || async { produce_one(server, "work", "after").await.is_ok() }).await;
    let (status_line, _) = server.http_get("/readyz").await;
    assert!(status_line.contains("200"), "{status_line}");
    Ok(())
}

#[tokio::test]
async fn a_disk_filled_to_the_last_byte_refuses_writes_the_same_way_and_recovers() -> TestResult {
    let Some(disk) = Tmpfs::mount(24) else { return Ok(()) };
    let env = [("SLUICE_LIMITS_MIN_FREE_BYTES", "0")];
    let broker = spawn_broker(disk.path(), &env);
    let server = &broker.server;
    create_topic(server, "bulk", 1, small_segments()).await;
    create_topic(server, "work", 1, None).await;
    assert_disk_full(&fill(server, "bulk").await);
    for _ in 0..3 {
        assert_disk_full(&fill(server, "bulk").await);
    }
    let described = server.admin().await.describe_topic(pb::DescribeTopicRequest { name: "bulk".into() }).await?;
    assert!(described.into_inner().partitions[0].poisoned.is_empty(), "ENOSPC is not EIO: not read-only");
    server.admin().await.delete_topic(pb::DeleteTopicRequest { name: "bulk".into() }).await?;
    produce_one(server, "work", "after").await?;
    let records = fetch_all(server, "work", 0, 0).await;
    assert_eq!(records.len(), 1);
    assert!(broker.terminate().success());
    Ok(())
}

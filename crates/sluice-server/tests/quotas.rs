//! Per-principal quotas: a produce byte rate held near its limit (another principal is not
//! slowed), and a limit on open streams.

mod common;

use std::time::Instant;

use common::*;
use sluice_proto::v1 as pb;
use tonic::{Code, Request};

const SUPERUSER: &str = "quota-test-superuser-secret-0123456789";
/// The slow principal's produce quota.
const RATE: u64 = 200 << 10;

async fn start(dir: &std::path::Path) -> TestServer {
    std::fs::write(dir.join("su.token"), SUPERUSER).unwrap();
    let file = dir.join("sluice.toml");
    let text = format!(
        "[auth]\nenabled = true\nsuperuser_token_file = \"{}\"\n[quotas.principals.slow]\nproduce_bytes_per_second = \"{RATE}\"\n[quotas.principals.limited]\nmax_streams = 1\n[quotas.principals.oneconn]\nmax_connections = 1\n",
        dir.join("su.token").display()
    );
    std::fs::write(&file, text).unwrap();
    let vars = vec![
        ("SLUICE_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        ("SLUICE_HTTP_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        ("SLUICE_DATA_DIR".to_owned(), dir.join("data").display().to_string()),
    ];
    let config =
        sluice_server::config::load(Some(&file), vars, &sluice_server::config::FlagOverrides::default()).unwrap();
    TestServer::start_with(config).await
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

async fn principal(server: &TestServer, name: &str) -> String {
    let created = server
        .admin()
        .await
        .create_token(authed(pb::CreateTokenRequest { principal: name.into(), superuser: false }, SUPERUSER))
        .await
        .unwrap()
        .into_inner();
    let acl = pb::Acl {
        id: 0,
        effect: pb::AclEffect::Allow as i32,
        principal: name.into(),
        resource: pb::AclResource::Topic as i32,
        pattern: pb::AclPatternType::Any as i32,
        name: String::new(),
        operation: pb::AclOperation::All as i32,
    };
    server.admin().await.add_acl(authed(pb::AddAclRequest { acl: Some(acl) }, SUPERUSER)).await.unwrap();
    created.token
}

/// Produces `requests` requests of about 50 KB; returns bytes per second and the most
/// `throttle_ms` any response reported.
async fn produce(server: &TestServer, token: &str, requests: usize) -> (f64, u32) {
    let value = "x".repeat(50_000);
    let started = Instant::now();
    let mut throttled = 0;
    let mut bytes = 0;
    for _ in 0..requests {
        let request = produce_request("t", vec![record(None, &value)]);
        bytes += prost::Message::encoded_len(&request);
        let response = server.producer().await.produce(authed(request, token)).await.unwrap().into_inner();
        throttled = throttled.max(response.throttle_ms);
    }
    (bytes as f64 / started.elapsed().as_secs_f64(), throttled)
}

#[tokio::test]
async fn a_principal_over_its_produce_rate_is_held_near_it_and_others_are_not() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await;
    server
        .admin()
        .await
        .create_topic(authed(pb::CreateTopicRequest { name: "t".into(), partitions: 1, config: None }, SUPERUSER))
        .await?;
    let (slow, fast) = (principal(&server, "slow").await, principal(&server, "fast").await);
    // About 1 MB: five seconds' worth at the slow principal's quota, less its one-second burst.
    let (slow_rate, slow_throttle) = produce(&server, &slow, 20).await;
    let (fast_rate, fast_throttle) = produce(&server, &fast, 20).await;
    let ratio = slow_rate / RATE as f64;
    assert!(
        (0.5..=1.5).contains(&ratio),
        "slow principal at {slow_rate:.0} B/s against a quota of {RATE} ({ratio:.2}x)"
    );
    assert!(slow_throttle > 0, "held-back responses say so");
    assert_eq!(fast_throttle, 0, "another principal is not held back");
    assert!(fast_rate > 3.0 * slow_rate, "another principal is unaffected: {fast_rate:.0} vs {slow_rate:.0} B/s");
    let (_, metrics) = server.http_get("/metrics").await;
    assert!(
        metrics.contains("sluice_quota_throttle_seconds_total{principal=\"slow\",direction=\"produce\"}"),
        "{metrics}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_principal_at_its_stream_limit_is_refused_another_until_one_closes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await;
    server
        .admin()
        .await
        .create_topic(authed(pb::CreateTopicRequest { name: "t".into(), partitions: 1, config: None }, SUPERUSER))
        .await?;
    let token = principal(&server, "limited").await;
    let subscribe = || authed(pb::SubscribeRequest { topic: "t".into(), partition: 0, ..Default::default() }, &token);
    let first = server.consumer().await.subscribe(subscribe()).await?;
    let refused = server.consumer().await.subscribe(subscribe()).await.map(|_| ()).unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("quotas.max_streams") && refused.message().contains("1"),
        "{}",
        refused.message()
    );
    drop(first);
    eventually("the closed stream's slot is free", || async {
        server.consumer().await.subscribe(subscribe()).await.is_ok()
    })
    .await;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_principal_at_its_connection_limit_is_refused_on_another_connection() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await;
    let token = principal(&server, "oneconn").await;
    let list = || authed(pb::ListTopicsRequest {}, &token);
    let first = server.channel().await;
    let mut on_first = sluice_proto::v1::admin_client::AdminClient::new(first.clone());
    on_first.list_topics(list()).await?;
    on_first.list_topics(list()).await.map_err(|e| format!("the same connection goes on: {e}"))?;
    let refused = server.admin().await.list_topics(list()).await.map(|_| ()).unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("quotas.max_connections"), "{}", refused.message());
    // Other principals are not limited by it.
    server.admin().await.list_topics(authed(pb::ListTopicsRequest {}, SUPERUSER)).await?;
    drop((on_first, first));
    eventually("the closed connection's slot is free", || async {
        server.admin().await.list_topics(list()).await.is_ok()
    })
    .await;
    server.stop().await;
    Ok(())
}

//! Authentication and authorization, attacked from outside: every RPC without credentials,
//! with a revoked token, with a principal lacking the right, and with exactly the right.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use prost::Message;
use sluice_proto::v1 as pb;
use tokio_stream::StreamExt;
use tonic::{Code, Request};

const SUPERUSER_SECRET: &str = "test-superuser-secret-0123456789abcdef";

/// A broker with authentication on and a bootstrap superuser token.
async fn secured(dir: &std::path::Path) -> TestServer {
    let token_file = dir.join("superuser.token");
    std::fs::write(&token_file, format!("{SUPERUSER_SECRET}\n")).unwrap();
    let file = token_file.display().to_string();
    let env = [("SLUICE_AUTH_ENABLED", "true"), ("SLUICE_AUTH_SUPERUSER_TOKEN_FILE", file.as_str())];
    TestServer::start_with(config(&dir.join("data"), &env)).await
}

fn authed<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

async fn create_token(server: &TestServer, principal: &str) -> (String, String) {
    let request =
        authed(pb::CreateTokenRequest { principal: principal.into(), superuser: false }, Some(SUPERUSER_SECRET));
    let created = server.admin().await.create_token(request).await.unwrap().into_inner();
    (created.info.unwrap().id, created.token)
}

fn acl(principal: &str, operation: pb::AclOperation, resource: pb::AclResource, name: &str) -> pb::Acl {
    let pattern = if name.is_empty() { pb::AclPatternType::Any } else { pb::AclPatternType::Literal };
    pb::Acl {
        id: 0,
        effect: pb::AclEffect::Allow as i32,
        principal: principal.into(),
        resource: resource as i32,
        pattern: pattern as i32,
        name: name.into(),
        operation: operation as i32,
    }
}

async fn grant(server: &TestServer, acl: pb::Acl) -> u64 {
    let request = authed(pb::AddAclRequest { acl: Some(acl) }, Some(SUPERUSER_SECRET));
    server.admin().await.add_acl(request).await.unwrap().into_inner().acl.unwrap().id
}

async fn withdraw(server: &TestServer, id: u64) {
    let request = authed(pb::RemoveAclRequest { id }, Some(SUPERUSER_SECRET));
    server.admin().await.remove_acl(request).await.unwrap();
}

/// Every RPC of the `sluice.v1` services, as `Service/Method`.
fn every_rpc() -> BTreeSet<String> {
    let set = prost_types::FileDescriptorSet::decode(sluice_proto::FILE_DESCRIPTOR_SET).unwrap();
    set.file
        .iter()
        .filter(|f| f.package() == "sluice.v1")
        .flat_map(|f| f.service.iter().flat_map(|s| s.method.iter().map(move |m| format!("{}/{}", s.name(), m.name()))))
        .collect()
}

use pb::AclOperation as Op;
use pb::AclResource as Res;

/// The rights an RPC needs here (operation, resource, name), and whether a caller without them
/// gets an empty listing instead of PERMISSION_DENIED.
fn rights(rpc: &str) -> (Vec<(Op, Res, &'static str)>, bool) {
    let needs = |rights: Vec<(Op, Res, &'static str)>| (rights, false);
    match rpc {
        "Admin/CreateTopic" => needs(vec![(Op::Create, Res::Topic, "made")]),
        "Admin/DeleteTopic" => needs(vec![(Op::Delete, Res::Topic, "doomed")]),
        "Admin/ListTopics" => (vec![(Op::Describe, Res::Topic, "t")], true),
        "Admin/DescribeTopic" => needs(vec![(Op::Describe, Res::Topic, "t")]),
        "Admin/AlterTopicConfig" => needs(vec![(Op::Alter, Res::Topic, "t")]),
        "Admin/AddPartitions" => needs(vec![(Op::Alter, Res::Topic, "t")]),
        "Admin/BrokerInfo" => needs(vec![(Op::Describe, Res::Cluster, "")]),
        "Admin/ListGroups" => (vec![(Op::Describe, Res::Group, "g")], true),
        "Admin/DescribeGroup" => needs(vec![(Op::Describe, Res::Group, "g")]),
        "Admin/CreateGroup" => needs(vec![(Op::Create, Res::Group, "made-group")]),
        "Admin/AlterGroupConfig" => needs(vec![(Op::Alter, Res::Group, "g")]),
        "Admin/ResetGroupOffsets" => needs(vec![(Op::GroupAdmin, Res::Group, "g")]),
        "Admin/DeleteGroup" => needs(vec![(Op::GroupAdmin, Res::Group, "doomed-group")]),
        "Admin/ListDeadLetters" => needs(vec![(Op::Consume, Res::Topic, "t.dlq")]),
        "Admin/RedriveDeadLetters" | "Admin/DiscardDeadLetters" => needs(vec![(Op::DeadLetterAdmin, Res::Group, "g")]),
        "Admin/CreateToken" | "Admin/ListTokens" | "Admin/RevokeToken" | "Admin/AddAcl" | "Admin/ListAcls"
        | "Admin/RemoveAcl" => needs(vec![(Op::AclAdmin, Res::Cluster, "")]),
        "Producer/Produce" | "Producer/ProduceStream" => needs(vec![(Op::Produce, Res::Topic, "t")]),
        "Consumer/Fetch" | "Consumer/Subscribe" => needs(vec![(Op::Consume, Res::Topic, "t")]),
        "Consumer/Consume" => needs(vec![(Op::Consume, Res::Group, "g"), (Op::Consume, Res::Topic, "t")]),
        other => panic!("no case for RPC {other}: add it here with the rights it checks"),
    }
}

/// Calls `rpc` with `token`; returns the status code and, for listings, how many entries.
async fn call(server: &TestServer, rpc: &str, token: Option<&str>) -> (Code, usize) {
    let admin = || async { server.admin().await };
    fn code<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
        result.map_or_else(|s| s.code(), |_| Code::Ok)
    }
    let t = token;
    let c = match rpc {
        "Admin/CreateTopic" => code(
            admin()
                .await
                .create_topic(authed(pb::CreateTopicRequest { name: "made".into(), partitions: 1, config: None }, t))
                .await,
        ),
        "Admin/DeleteTopic" => {
            code(admin().await.delete_topic(authed(pb::DeleteTopicRequest { name: "doomed".into() }, t)).await)
        }
        "Admin/ListTopics" => {
            return match admin().await.list_topics(authed(pb::ListTopicsRequest {}, t)).await {
                Ok(r) => (Code::Ok, r.into_inner().topics.len()),
                Err(s) => (s.code(), 0),
            };
        }
        "Admin/DescribeTopic" => {
            code(admin().await.describe_topic(authed(pb::DescribeTopicRequest { name: "t".into() }, t)).await)
        }
        "Admin/AlterTopicConfig" => code(
            admin()
                .await
                .alter_topic_config(authed(
                    pb::AlterTopicConfigRequest { name: "t".into(), config: Some(pb::TopicConfig::default()) },
                    t,
                ))
                .await,
        ),
        "Admin/AddPartitions" => code(
            admin().await.add_partitions(authed(pb::AddPartitionsRequest { name: "t".into(), partitions: 2 }, t)).await,
        ),
        "Admin/BrokerInfo" => code(admin().await.broker_info(authed(pb::BrokerInfoRequest {}, t)).await),
        "Admin/ListGroups" => {
            return match admin().await.list_groups(authed(pb::ListGroupsRequest {}, t)).await {
                Ok(r) => (Code::Ok, r.into_inner().groups.len()),
                Err(s) => (s.code(), 0),
            };
        }
        "Admin/DescribeGroup" => {
            code(admin().await.describe_group(authed(pb::DescribeGroupRequest { group: "g".into() }, t)).await)
        }
        "Admin/CreateGroup" => code(
            admin()
                .await
                .create_group(authed(pb::CreateGroupRequest { group: "made-group".into(), config: None }, t))
                .await,
        ),
        "Admin/AlterGroupConfig" => code(
            admin()
                .await
                .alter_group_config(authed(pb::AlterGroupConfigRequest { group: "g".into(), config: None }, t))
                .await,
        ),
        "Admin/ResetGroupOffsets" => {
            let target = Some(pb::reset_group_offsets_request::Target::Earliest(pb::Earliest {}));
            let request = pb::ResetGroupOffsetsRequest {
                group: "g".into(),
                topic: "t".into(),
                target,
                force: true,
                ..Default::default()
            };
            code(admin().await.reset_group_offsets(authed(request, t)).await)
        }
        "Admin/DeleteGroup" => code(
            admin()
                .await
                .delete_group(authed(pb::DeleteGroupRequest { group: "doomed-group".into(), force: true }, t))
                .await,
        ),
        "Admin/ListDeadLetters" => code(
            admin()
                .await
                .list_dead_letters(authed(
                    pb::ListDeadLettersRequest { topic: "t.dlq".into(), ..Default::default() },
                    t,
                ))
                .await,
        ),
        "Admin/RedriveDeadLetters" => {
            let selection = Some(pb::redrive_dead_letters_request::Selection::All(pb::AllDeadLetters {}));
            let request = pb::RedriveDeadLettersRequest { topic: "t.dlq".into(), group: "g".into(), selection };
            code(admin().await.redrive_dead_letters(authed(request, t)).await)
        }
        "Admin/DiscardDeadLetters" => {
            let selection = Some(pb::DeadLetterSelection {
                selection: Some(pb::dead_letter_selection::Selection::All(pb::AllDeadLetters {})),
            });
            let request = pb::DiscardDeadLettersRequest { topic: "t.dlq".into(), group: "g".into(), selection };
            code(admin().await.discard_dead_letters(authed(request, t)).await)
        }
        "Admin/CreateToken" => code(
            admin()
                .await
                .create_token(authed(pb::CreateTokenRequest { principal: "made".into(), superuser: false }, t))
                .await,
        ),
        "Admin/ListTokens" => code(admin().await.list_tokens(authed(pb::ListTokensRequest {}, t)).await),
        "Admin/RevokeToken" => {
            code(admin().await.revoke_token(authed(pb::RevokeTokenRequest { id: "none".into() }, t)).await)
        }
        "Admin/AddAcl" => code(
            admin()
                .await
                .add_acl(authed(pb::AddAclRequest { acl: Some(acl("x", Op::Describe, Res::Topic, "x")) }, t))
                .await,
        ),
        "Admin/ListAcls" => code(admin().await.list_acls(authed(pb::ListAclsRequest {}, t)).await),
        "Admin/RemoveAcl" => code(admin().await.remove_acl(authed(pb::RemoveAclRequest { id: 9999 }, t)).await),
        "Producer/Produce" => {
            code(server.producer().await.produce(authed(produce_request("t", vec![record(None, "v")]), t)).await)
        }
        "Producer/ProduceStream" => {
            let request = pb::ProduceRequest { request_id: 1, ..produce_request("t", vec![record(None, "v")]) };
            match server.producer().await.produce_stream(authed(tokio_stream::iter(vec![request]), t)).await {
                Err(status) => status.code(),
                Ok(response) => {
                    let first = response.into_inner().next().await.unwrap().unwrap();
                    first.error.map_or(Code::Ok, |e| Code::from_i32(e.code))
                }
            }
        }
        "Consumer/Fetch" => code(
            server
                .consumer()
                .await
                .fetch(authed(pb::FetchRequest { topic: "t".into(), partition: 0, ..Default::default() }, t))
                .await,
        ),
        "Consumer/Subscribe" => {
            let request = pb::SubscribeRequest { topic: "t".into(), partition: 0, ..Default::default() };
            code(server.consumer().await.subscribe(authed(request, t)).await)
        }
        "Consumer/Consume" => {
            let join =
                pb::Join { group: "g".into(), topics: vec!["t".into()], member_name: "m".into(), ..Default::default() };
            let first = pb::ConsumeRequest { request: Some(pb::consume_request::Request::Join(join)) };
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tx.send(first).await.unwrap();
            let result =
                server.consumer().await.consume(authed(tokio_stream::wrappers::ReceiverStream::new(rx), t)).await;
            drop(tx);
            code(result)
        }
        other => panic!("no call for RPC {other}"),
    };
    (c, 0)
}

#[tokio::test]
async fn every_rpc_refuses_missing_revoked_and_insufficient_credentials_and_serves_the_right_ones() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = secured(dir.path()).await;
    let su = Some(SUPERUSER_SECRET);
    server
        .admin()
        .await
        .create_topic(authed(pb::CreateTopicRequest { name: "t".into(), partitions: 1, config: None }, su))
        .await?;
    server
        .admin()
        .await
        .create_topic(authed(pb::CreateTopicRequest { name: "t.dlq".into(), partitions: 1, config: None }, su))
        .await?;
    server.admin().await.create_group(authed(pb::CreateGroupRequest { group: "g".into(), config: None }, su)).await?;
    let (_, nobody) = create_token(&server, "nobody").await;
    let (revoked_id, revoked) = create_token(&server, "worker").await;
    server.admin().await.revoke_token(authed(pb::RevokeTokenRequest { id: revoked_id }, su)).await?;
    let (_, worker) = create_token(&server, "worker").await;

    let rpcs = every_rpc();
    assert!(rpcs.len() >= 27, "{rpcs:?}");
    for rpc in &rpcs {
        let (needed, filtered) = rights(rpc);
        assert_eq!(call(&server, rpc, None).await.0, Code::Unauthenticated, "{rpc} without a token");
        assert_eq!(call(&server, rpc, Some("sluice_0000_bogus")).await.0, Code::Unauthenticated, "{rpc}, bad token");
        assert_eq!(call(&server, rpc, Some(&revoked)).await.0, Code::Unauthenticated, "{rpc}, revoked token");
        let (code, listed) = call(&server, rpc, Some(&nobody)).await;
        if filtered {
            assert_eq!((code, listed), (Code::Ok, 0), "{rpc} lists nothing to a principal without rights");
        } else {
            assert_eq!(code, Code::PermissionDenied, "{rpc} for a principal without rights");
        }
        // All but one of the rights it needs are still not enough.
        let mut granted = Vec::new();
        for (i, &(op, res, name)) in needed.iter().enumerate() {
            if i + 1 < needed.len() {
                granted.push(grant(&server, acl("worker", op, res, name)).await);
            }
        }
        if needed.len() > 1 {
            assert_eq!(
                call(&server, rpc, Some(&worker)).await.0,
                Code::PermissionDenied,
                "{rpc} with only part of its rights"
            );
        }
        let &(op, res, name) = needed.last().unwrap();
        granted.push(grant(&server, acl("worker", op, res, name)).await);
        let (code, listed) = call(&server, rpc, Some(&worker)).await;
        assert!(!matches!(code, Code::Unauthenticated | Code::PermissionDenied), "{rpc} with its rights: {code:?}");
        if filtered {
            assert_eq!(listed, 1, "{rpc} lists what the principal may describe");
        }
        for id in granted {
            withdraw(&server, id).await;
        }
        let superuser = call(&server, rpc, su).await.0;
        assert!(
            !matches!(superuser, Code::Unauthenticated | Code::PermissionDenied),
            "{rpc} as superuser: {superuser:?}"
        );
    }
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_prefix_right_reaches_only_names_with_that_prefix() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = secured(dir.path()).await;
    let su = Some(SUPERUSER_SECRET);
    for name in ["orders.eu", "orders-secret"] {
        server
            .admin()
            .await
            .create_topic(authed(pb::CreateTopicRequest { name: name.into(), partitions: 1, config: None }, su))
            .await?;
    }
    let (_, token) = create_token(&server, "billing").await;
    let prefix =
        pb::Acl { pattern: pb::AclPatternType::Prefix as i32, ..acl("billing", Op::Produce, Res::Topic, "orders.") };
    grant(&server, prefix).await;
    let produce = |topic: &str| authed(produce_request(topic, vec![record(None, "v")]), Some(token.as_str()));
    server.producer().await.produce(produce("orders.eu")).await?;
    for forbidden in ["orders-secret", "orders", "..", "orders./../orders-secret"] {
        let refused = server.producer().await.produce(produce(forbidden)).await.map(|_| ()).unwrap_err();
        // Refused, or (for a name under the prefix) a topic that cannot exist: never another topic.
        assert!(
            matches!(refused.code(), Code::PermissionDenied | Code::InvalidArgument | Code::NotFound),
            "{forbidden}: {refused:?}"
        );
        assert!(!refused.message().contains("orders.eu"), "a refusal names only what was asked: {}", refused.message());
    }
    let secret = authed(pb::DescribeTopicRequest { name: "orders-secret".into() }, su);
    let described = server.admin().await.describe_topic(secret).await?.into_inner();
    assert_eq!(described.partitions[0].end_offset, 0, "nothing reached orders-secret");
    server.stop().await;
    Ok(())
}

/// The stream's status if `item` ends it, `None` for a message.
fn ended<T>(stream: &str, item: Option<Result<T, tonic::Status>>) -> Option<Code> {
    match item {
        Some(Err(status)) => Some(status.code()),
        None => panic!("{stream} ended without a status"),
        Some(Ok(_)) => None,
    }
}

#[tokio::test]
async fn a_revoked_token_ends_an_open_subscribe_and_an_open_consume_session() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = secured(dir.path()).await;
    let su = Some(SUPERUSER_SECRET);
    server
        .admin()
        .await
        .create_topic(authed(pb::CreateTopicRequest { name: "t".into(), partitions: 1, config: None }, su))
        .await?;
    let (id, token) = create_token(&server, "reader").await;
    grant(&server, acl("reader", Op::Consume, Res::Topic, "t")).await;
    grant(&server, acl("reader", Op::Consume, Res::Group, "g")).await;
    let subscribe = pb::SubscribeRequest { topic: "t".into(), partition: 0, ..Default::default() };
    let mut subscription = server.consumer().await.subscribe(authed(subscribe, Some(&token))).await?.into_inner();
    let join = pb::Join { group: "g".into(), topics: vec!["t".into()], member_name: "m".into(), ..Default::default() };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::ConsumeRequest { request: Some(pb::consume_request::Request::Join(join)) }).await?;
    let consume = authed(tokio_stream::wrappers::ReceiverStream::new(rx), Some(&token));
    let mut session = server.consumer().await.consume(consume).await?.into_inner();
    assert!(matches!(session.next().await, Some(Ok(_))), "joined");

    server.admin().await.revoke_token(authed(pb::RevokeTokenRequest { id }, su)).await?;
    let sub_end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(code) = ended("subscribe", subscription.next().await) {
                return code;
            }
        }
    });
    assert_eq!(sub_end.await?, Code::Unauthenticated);
    let consume_end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(code) = ended("consume", session.next().await) {
                return code;
            }
        }
    });
    assert_eq!(consume_end.await?, Code::Unauthenticated);
    drop(tx);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_withdrawn_right_ends_an_open_subscribe() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = secured(dir.path()).await;
    let su = Some(SUPERUSER_SECRET);
    server
        .admin()
        .await
        .create_topic(authed(pb::CreateTopicRequest { name: "t".into(), partitions: 1, config: None }, su))
        .await?;
    let (_, token) = create_token(&server, "reader").await;
    let right = grant(&server, acl("reader", Op::Consume, Res::Topic, "t")).await;
    let subscribe = pb::SubscribeRequest { topic: "t".into(), partition: 0, ..Default::default() };
    let mut subscription = server.consumer().await.subscribe(authed(subscribe, Some(&token))).await?.into_inner();
    withdraw(&server, right).await;
    let status = tokio::time::timeout(Duration::from_secs(10), subscription.next()).await?.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_token_made_offline_secures_a_fresh_broker_with_no_open_window() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-server"))
        .args(["token", "create", "--data-dir", data.to_str().unwrap_or_default(), "--principal", "ops", "--superuser"])
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout)?.trim().to_owned();
    assert!(token.starts_with("sluice_"));
    let server = TestServer::start_with(config(&data, &[("SLUICE_AUTH_ENABLED", "true")])).await;
    let info = server.admin().await.broker_info(authed(pb::BrokerInfoRequest {}, Some(&token))).await;
    assert!(info.is_ok(), "{info:?}");
    let anonymous = server.admin().await.broker_info(pb::BrokerInfoRequest {}).await.map(|_| ()).unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    assert!(anonymous.message().contains("authorization: Bearer"), "says what was expected: {}", anonymous.message());
    let tokens = server.admin().await.list_tokens(authed(pb::ListTokensRequest {}, Some(&token))).await?.into_inner();
    // The secret is everything after the id: URL-safe base64 may itself contain '_'.
    let secret = token.splitn(3, '_').nth(2).unwrap_or_default();
    assert!(!format!("{tokens:?}").contains(secret), "listings never show secrets");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn health_stays_open_and_metrics_may_require_a_token() -> TestResult {
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("su.token");
    std::fs::write(&token_file, SUPERUSER_SECRET)?;
    let file = token_file.display().to_string();
    let env = [
        ("SLUICE_AUTH_ENABLED", "true"),
        ("SLUICE_AUTH_SUPERUSER_TOKEN_FILE", file.as_str()),
        ("SLUICE_AUTH_METRICS_REQUIRE_TOKEN", "true"),
    ];
    let server = TestServer::start_with(config(&dir.path().join("data"), &env)).await;
    assert!(server.http_get("/healthz").await.0.contains("200"));
    assert!(server.http_get("/readyz").await.0.contains("200"));
    let (status, _) = server.http_get("/metrics").await;
    assert!(status.contains("401"), "{status}");
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await?;
    server.stop().await;
    Ok(())
}

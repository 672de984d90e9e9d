//! TLS on both ports with certificates made in the test: tokens over TLS, mutual TLS naming a
//! principal, plaintext refused, and a certificate rotated under an open connection.

mod common;

use std::path::{Path, PathBuf};

use common::certs::Ca;
use common::*;
use sluice_client::{Client, ConnectOptions, TlsOptions, pb};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes a certificate pair atomically (what a rotation tool does), so the broker never reads
/// half a file.
fn install(dir: &Path, cert: &str, key: &str) {
    for (name, text) in [("server.key", key), ("server.crt", cert)] {
        let temp = dir.join(format!("{name}.new"));
        std::fs::write(&temp, text).unwrap();
        std::fs::rename(&temp, dir.join(name)).unwrap();
    }
}

async fn connect(
    server: &TestServer,
    ca: &Ca,
    identity: Option<(String, String)>,
    token: Option<&str>,
) -> sluice_client::Result<Client> {
    let tls = TlsOptions {
        ca_pem: Some(ca.pem.clone().into_bytes()),
        identity_pem: identity.map(|(c, k)| (c.into_bytes(), k.into_bytes())),
        domain: Some("localhost".into()),
    };
    let options = ConnectOptions { token: token.map(str::to_owned), tls: Some(tls) };
    Client::connect_with(&server.grpc.to_string(), options).await
}

fn tls_env(dir: &Path, client_auth: &str) -> Vec<(String, String)> {
    vec![
        ("SLUICE_TLS_CERT_FILE".into(), dir.join("server.crt").display().to_string()),
        ("SLUICE_TLS_KEY_FILE".into(), dir.join("server.key").display().to_string()),
        ("SLUICE_TLS_CLIENT_CA_FILE".into(), dir.join("client-ca.crt").display().to_string()),
        ("SLUICE_TLS_CLIENT_AUTH".into(), client_auth.into()),
    ]
}

fn start_env(dir: &Path, extra: &[(String, String)]) -> sluice_server::ServerConfig {
    let pairs: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    config(&dir.join("data"), &pairs)
}

#[tokio::test]
async fn tokens_over_tls_work_and_plaintext_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("server CA");
    let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]);
    install(dir.path(), &cert, &key);
    write(dir.path(), "client-ca.crt", &ca.pem);
    let secret = "tls-test-superuser-secret-0123456789";
    let token_file = write(dir.path(), "su.token", secret);
    let mut env = tls_env(dir.path(), "none");
    env.push(("SLUICE_AUTH_ENABLED".into(), "true".into()));
    env.push(("SLUICE_AUTH_SUPERUSER_TOKEN_FILE".into(), token_file.display().to_string()));
    let server = TestServer::start_with(start_env(dir.path(), &env)).await;

    let client = connect(&server, &ca, None, Some(secret)).await?;
    client.admin().create_topic(pb::CreateTopicRequest { name: "t".into(), partitions: 1, config: None }).await?;
    let anonymous = connect(&server, &ca, None, None).await?;
    let refused = anonymous.admin().list_topics(pb::ListTopicsRequest {}).await.map(|_| ()).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "TLS is not authentication");
    // A plaintext client cannot speak to the TLS port at all.
    let plaintext = Client::connect(&server.grpc.to_string()).await;
    let failed = match plaintext {
        Err(_) => true,
        Ok(client) => client.admin().list_topics(pb::ListTopicsRequest {}).await.is_err(),
    };
    assert!(failed, "plaintext must fail");
    // A client that does not trust the broker's CA refuses it.
    let stranger = Ca::new("another CA");
    let untrusted = connect(&server, &stranger, None, Some(secret)).await;
    let refused = match untrusted {
        Err(_) => true,
        Ok(client) => client.admin().list_topics(pb::ListTopicsRequest {}).await.is_err(),
    };
    assert!(refused, "the broker's certificate is verified");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_client_certificate_names_a_principal_whose_acls_apply() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let (cert, key) = server_ca.issue(&["localhost"]);
    install(dir.path(), &cert, &key);
    write(dir.path(), "client-ca.crt", &client_ca.pem);
    let secret = "tls-test-superuser-secret-0123456789";
    let token_file = write(dir.path(), "su.token", secret);
    let mut env = tls_env(dir.path(), "required");
    env.push(("SLUICE_AUTH_ENABLED".into(), "true".into()));
    env.push(("SLUICE_AUTH_SUPERUSER_TOKEN_FILE".into(), token_file.display().to_string()));
    let server = TestServer::start_with(start_env(dir.path(), &env)).await;

    let admin_identity = client_ca.issue(&["ops-console"]);
    let admin = connect(&server, &server_ca, Some(admin_identity), Some(secret)).await?;
    admin
        .admin()
        .create_topic(pb::CreateTopicRequest { name: "billing.events".into(), partitions: 1, config: None })
        .await?;
    let right = pb::Acl {
        id: 0,
        effect: pb::AclEffect::Allow as i32,
        principal: "billing".into(),
        resource: pb::AclResource::Topic as i32,
        pattern: pb::AclPatternType::Literal as i32,
        name: "billing.events".into(),
        operation: pb::AclOperation::Describe as i32,
    };
    admin.admin().add_acl(pb::AddAclRequest { acl: Some(right) }).await?;

    let billing = connect(&server, &server_ca, Some(client_ca.issue(&["billing"])), None).await?;
    let described = billing.admin().describe_topic(pb::DescribeTopicRequest { name: "billing.events".into() }).await;
    assert!(described.is_ok(), "the certificate's principal has its right: {described:?}");
    let denied = billing.admin().broker_info(pb::BrokerInfoRequest {}).await.map(|_| ()).unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(denied.message().contains("'billing'"), "{}", denied.message());
    // Required: no client certificate, no connection.
    let without = connect(&server, &server_ca, None, Some(secret)).await;
    let refused = match without {
        Err(_) => true,
        Ok(client) => client.admin().list_topics(pb::ListTopicsRequest {}).await.is_err(),
    };
    assert!(refused, "a client certificate is required");
    // A certificate from another CA is refused.
    let forged = connect(&server, &server_ca, Some(server_ca.issue(&["billing"])), None).await;
    let refused = match forged {
        Err(_) => true,
        Ok(client) => client.admin().list_topics(pb::ListTopicsRequest {}).await.is_err(),
    };
    assert!(refused, "client certificates are verified against the client CA");
    server.stop().await;
    Ok(())
}

/// Two CAs, the old one's certificate installed, and TLS settings with a plaintext HTTP port
/// (for the metrics).
struct Rotation {
    old_ca: Ca,
    new_ca: Ca,
    env: Vec<(String, String)>,
}

impl Rotation {
    fn install(dir: &Path) -> Rotation {
        let old_ca = Ca::new("old CA");
        let (cert, key) = old_ca.issue(&["localhost"]);
        install(dir, &cert, &key);
        write(dir, "client-ca.crt", &old_ca.pem);
        let mut env = tls_env(dir, "none");
        env.push(("SLUICE_TLS_HTTP".into(), "false".into()));
        Rotation { old_ca, new_ca: Ca::new("new CA"), env }
    }
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_connections_while_open_ones_keep_going() -> TestResult {
    let dir = tempfile::tempdir()?;
    let Rotation { old_ca, new_ca, env } = Rotation::install(dir.path());
    let server = TestServer::start_with(start_env(dir.path(), &env)).await;
    let open = connect(&server, &old_ca, None, None).await?;
    open.admin().create_topic(pb::CreateTopicRequest { name: "t".into(), partitions: 1, config: None }).await?;
    assert!(
        connect(&server, &new_ca, None, None).await.is_err() || {
            let c = connect(&server, &new_ca, None, None).await?;
            c.admin().list_topics(pb::ListTopicsRequest {}).await.is_err()
        },
        "before the rotation the new CA's clients fail"
    );

    // A bad file is logged and counted, and the old certificate stays.
    std::fs::write(dir.path().join("server.crt.new"), "not a certificate")?;
    std::fs::rename(dir.path().join("server.crt.new"), dir.path().join("server.crt"))?;
    eventually("the bad certificate's reload failed", || async { reloads(&server, "failed").await == 1 }).await;
    assert_eq!(reloads(&server, "loaded").await, 0);
    let still = connect(&server, &old_ca, None, None).await?;
    still.admin().list_topics(pb::ListTopicsRequest {}).await?;

    let (cert, key) = new_ca.issue(&["localhost"]);
    install(dir.path(), &cert, &key);
    eventually("new connections get the new certificate", || trusted_by(&server, &new_ca)).await;
    // The connection opened before the rotation still works.
    open.producer().produce(produce_request("t", vec![record(None, "after rotation")])).await?;
    assert_eq!(reloads(&server, "loaded").await, 1);
    server.stop().await;
    Ok(())
}

/// Whether a new connection that trusts only `ca` is served.
async fn trusted_by(server: &TestServer, ca: &Ca) -> bool {
    match connect(server, ca, None, None).await {
        Ok(client) => client.admin().list_topics(pb::ListTopicsRequest {}).await.is_ok(),
        Err(_) => false,
    }
}

/// `sluice_tls_certificate_reloads_total{outcome}` from the (plaintext) HTTP port.
async fn reloads(server: &TestServer, outcome: &str) -> u64 {
    let (_, metrics) = server.http_get("/metrics").await;
    let series = format!("sluice_tls_certificate_reloads_total{{outcome=\"{outcome}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(series.as_str())).map_or(0, |v| v.trim().parse().unwrap())
}

/// SIGHUP reloads even files whose modification times did not change (a restore from backup, a
/// copy that keeps times): only the signal can make the broker pick them up.
#[tokio::test]
async fn sighup_reloads_the_certificate_of_the_real_binary() -> TestResult {
    let dir = tempfile::tempdir()?;
    let Rotation { old_ca, new_ca, env } = Rotation::install(dir.path());
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let broker = process::spawn_broker(&dir.path().join("data"), &pairs);
    connect(&broker.server, &old_ca, None, None).await?.admin().list_topics(pb::ListTopicsRequest {}).await?;

    let stamps: Vec<_> = ["server.crt", "server.key"]
        .iter()
        .map(|name| std::fs::metadata(dir.path().join(name)).and_then(|m| m.modified()))
        .collect::<Result<_, _>>()?;
    // Each new file gets its old time before it is renamed into place, so no reload check
    // ever sees a change.
    let (cert, key) = new_ca.issue(&["localhost"]);
    for ((name, text), stamp) in [("server.crt", cert), ("server.key", key)].iter().zip(stamps) {
        let temp = dir.path().join(format!("{name}.new"));
        std::fs::write(&temp, text)?;
        std::fs::File::options().write(true).open(&temp)?.set_modified(stamp)?;
        std::fs::rename(&temp, dir.path().join(name))?;
    }
    let pid = broker.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status()?.success());
    eventually("new connections get the certificate SIGHUP loaded", || trusted_by(&broker.server, &new_ca)).await;
    assert_eq!(reloads(&broker.server, "loaded").await, 1);
    assert!(broker.terminate().success(), "SIGHUP does not stop the broker");
    Ok(())
}

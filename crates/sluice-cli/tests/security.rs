//! `sluice token …`, `sluice acl …` and `--token` against a broker with authentication on.

mod common;

use common::Broker;

#[test]
fn tokens_and_acls_are_managed_from_the_cli_and_a_token_opens_only_what_it_may() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "cli-test-superuser-secret-0123456789";
    let file = dir.path().join("su.token");
    std::fs::write(&file, secret).unwrap();
    let file = file.display().to_string();
    let data = dir.path().join("data");
    let broker =
        Broker::start_in(&data, &[("SLUICE_AUTH_ENABLED", "true"), ("SLUICE_AUTH_SUPERUSER_TOKEN_FILE", &file)]);
    let as_admin = |args: &[&str]| {
        let mut all = vec!["--token", secret];
        all.extend_from_slice(args);
        broker.sluice(&all)
    };
    let anonymous = broker.sluice(&["topic", "list"]);
    assert_eq!(anonymous.code, 1);
    assert!(
        anonymous.stderr.contains("UNAUTHENTICATED") && anonymous.stderr.contains("--token"),
        "{}",
        anonymous.stderr
    );

    as_admin(&["topic", "create", "orders.eu"]).ok();
    as_admin(&["topic", "create", "orders-secret"]).ok();
    let created = as_admin(&["token", "create", "orders-api", "-o", "json"]).ok().json();
    let token = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let listed = as_admin(&["token", "list"]).ok().stdout;
    assert!(listed.contains(&id) && listed.contains("orders-api") && !listed.contains(&token), "{listed}");

    let added = as_admin(&[
        "acl",
        "add",
        "--principal",
        "orders-api",
        "--operation",
        "produce",
        "--resource",
        "topic",
        "--name",
        "orders.*",
    ]);
    assert!(added.ok().stdout.contains("allow orders-api produce on topic orders.*"));
    as_admin(&[
        "acl",
        "add",
        "--principal",
        "orders-api",
        "--operation",
        "describe",
        "--resource",
        "topic",
        "--name",
        "orders.eu",
    ])
    .ok();
    let acls = as_admin(&["acl", "list"]).ok().stdout;
    assert!(acls.contains("orders.*") && acls.contains("describe"), "{acls}");

    // The token, through SLUICE_TOKEN: what the ACLs allow, and nothing else.
    let server = broker.addr.clone();
    let with_token = |args: &[&str]| {
        let output = common::sluice_command(&server, args).env("SLUICE_TOKEN", &token).output().unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, _, stderr) = with_token(&["produce", "orders.eu", "hello"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = with_token(&["produce", "orders-secret", "hello"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("PERMISSION_DENIED") && stderr.contains("may not produce topic 'orders-secret'"),
        "{stderr}"
    );
    let (_, stdout, _) = with_token(&["topic", "list", "-o", "json"]);
    assert!(stdout.contains("orders.eu") && !stdout.contains("orders-secret"), "only what it may describe: {stdout}");

    as_admin(&["token", "revoke", &id]).ok();
    let (code, _, stderr) = with_token(&["produce", "orders.eu", "again"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("UNAUTHENTICATED"), "{stderr}");
}

#[test]
fn a_context_of_the_cli_config_file_supplies_server_and_token() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "cli-context-superuser-secret-0123456789";
    let file = dir.path().join("su.token");
    std::fs::write(&file, secret).unwrap();
    let token_file = file.display().to_string();
    let broker = Broker::start_in(
        &dir.path().join("data"),
        &[("SLUICE_AUTH_ENABLED", "true"), ("SLUICE_AUTH_SUPERUSER_TOKEN_FILE", &token_file)],
    );
    let config = dir.path().join("config.toml");
    let text = format!(
        "current = \"nowhere\"\n[contexts.nowhere]\nserver = \"127.0.0.1:1\"\n[contexts.test]\nserver = \"{}\"\ntoken_file = \"{}\"\n",
        broker.addr, token_file
    );
    std::fs::write(&config, text).unwrap();
    let sluice = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .env_remove("SLUICE_SERVER")
            .env_remove("SLUICE_TOKEN")
            .env("SLUICE_CLI_CONFIG", &config)
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, _, stderr) = sluice(&["topic", "list"]);
    assert_eq!(code, 1, "the current context points nowhere: {stderr}");
    let (code, _, stderr) = sluice(&["--context", "test", "topic", "create", "via-context"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, _) = sluice(&["context", "use", "test"]);
    assert_eq!((code, stdout.trim()), (0, "using context test"));
    let (code, stdout, stderr) = sluice(&["topic", "list"]);
    assert!(code == 0 && stdout.contains("via-context"), "{stdout}{stderr}");
    let (_, listed, _) = sluice(&["context", "list"]);
    assert!(listed.contains("* ") || listed.contains("*"), "{listed}");
    let (code, _, stderr) = sluice(&["--context", "missing", "topic", "list"]);
    assert!(code == 2 && stderr.contains("no context 'missing'") && stderr.contains("nowhere, test"), "{stderr}");
}

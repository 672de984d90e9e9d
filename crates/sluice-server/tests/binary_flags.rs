//! The `sluice-server` binary's command line: --check-config and bad settings.

use std::process::Command;

fn server() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice-server"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("SLUICE_")) {
        command.env_remove(key);
    }
    command
}

#[test]
fn check_config_validates_and_prints_the_effective_settings() {
    let output = server().args(["--check-config", "--fsync", "never"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("listen = \"127.0.0.1:7140\""), "{stdout}");
    assert!(stdout.contains("fsync = \"never\""), "flags are applied: {stdout}");
}

#[test]
fn a_bad_setting_stops_the_server_naming_it() {
    let output = server().args(["--check-config"]).env("SLUICE_TOPIC_DEFAULTS_RETENTION", "a while").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("topic_defaults.retention"), "{stderr}");

    let output =
        server().args(["--listen", "not-an-address", "--data-dir", "/nonexistent/never-created"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("server.listen"));
    assert!(!std::path::Path::new("/nonexistent/never-created").exists(), "nothing touched before validation");
}

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

/// Starts the broker on free ports with `args` and `rust_log`, stops it with SIGTERM once it
/// listens, and returns what it logged.
fn logs_of_a_run(args: &[&str], rust_log: &str) -> String {
    use std::io::{BufRead, BufReader, Read};
    let dir = tempfile::tempdir().unwrap();
    let mut child = server()
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .env("RUST_LOG", rust_log)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("listening"), "{line}");
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut logs = String::new();
    child.stderr.take().unwrap().read_to_string(&mut logs).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{logs}");
    logs
}

#[test]
fn log_level_beats_rust_log_and_logs_to_a_pipe_carry_no_colour_codes() {
    let logs = logs_of_a_run(&["--log-level", "info"], "error");
    assert!(logs.contains("opened after a clean stop"), "--log-level info wins over RUST_LOG=error:\n{logs}");
    assert!(!logs.contains('\u{1b}'), "no ANSI escape codes when stderr is not a terminal:\n{logs:?}");
    let logs = logs_of_a_run(&[], "error");
    assert!(!logs.contains("INFO"), "without the flag RUST_LOG applies:\n{logs}");
}

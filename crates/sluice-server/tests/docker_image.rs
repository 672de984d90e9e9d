//! What docker/Dockerfile promises, checked without a Docker engine: its HEALTHCHECK command
//! line, run by this machine's /bin/sh (dash, as in the image's Debian base) against a live
//! broker, passes, and fails once the broker is gone; the image holds both binaries; its
//! environment is a valid configuration.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TestResult, TestServer};

fn dockerfile() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docker/Dockerfile")).unwrap()
}

/// The command of the HEALTHCHECK instruction, in shell form.
fn healthcheck_command(dockerfile: &str) -> String {
    let line = dockerfile.lines().find(|l| l.starts_with("HEALTHCHECK ")).expect("a HEALTHCHECK instruction");
    let (_, command) = line.split_once(" CMD ").expect("HEALTHCHECK ... CMD <command>");
    assert!(!command.trim_start().starts_with('['), "shell form, so it runs under the image's /bin/sh");
    command.trim().to_owned()
}

/// Runs `command` the way Docker runs a shell-form HEALTHCHECK: `/bin/sh -c`, with the
/// image's binaries on PATH and its SLUICE_HTTP_LISTEN pointing at `http_port`.
fn run_healthcheck(command: &str, http_port: u16) -> std::process::Output {
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_sluice-server")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut shell = Command::new("/bin/sh");
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("SLUICE_")) {
        shell.env_remove(key);
    }
    shell.args(["-c", command]).env("PATH", path).env("SLUICE_HTTP_LISTEN", format!("0.0.0.0:{http_port}"));
    shell.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_images_healthcheck_passes_against_a_live_broker_and_fails_without_one() -> TestResult {
    let command = healthcheck_command(&dockerfile());
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    let port = server.http.port();
    let command_ = command.clone();
    let live = tokio::task::spawn_blocking(move || run_healthcheck(&command_, port)).await?;
    assert!(live.status.success(), "{command}: {live:?}");
    server.stop().await;
    let gone = tokio::task::spawn_blocking(move || run_healthcheck(&command, port)).await?;
    assert!(!gone.status.success(), "the check must fail with no broker: {gone:?}");
    Ok(())
}

#[test]
fn the_image_holds_both_binaries_and_a_valid_environment() {
    let dockerfile = dockerfile();
    let build = dockerfile.lines().find(|l| l.contains("cargo build --release")).expect("a release build");
    assert!(build.contains("--bin sluice-server") && build.contains("--bin sluice "), "{build}");
    for binary in ["sluice-server", "sluice"] {
        let copy = format!("COPY --from=build /src/target/release/{binary} /usr/local/bin/{binary}");
        assert!(dockerfile.contains(&copy), "{copy}");
    }
    let env_start = dockerfile.find("\nENV ").expect("an ENV instruction");
    let vars: Vec<(String, String)> = dockerfile[env_start + 5..]
        .lines()
        .map_while(|l| l.trim().strip_suffix('\\').map(str::trim).or(Some(l.trim())).filter(|l| !l.is_empty()))
        .take_while(|l| l.contains('='))
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    assert!(vars.iter().any(|(k, _)| k == "SLUICE_HTTP_LISTEN"), "{vars:?}");
    let config = sluice_server::config::load(None, vars, &sluice_server::config::FlagOverrides::default());
    assert!(config.is_ok(), "the image's environment is a valid configuration: {config:?}");
}

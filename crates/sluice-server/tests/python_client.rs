//! A Python client generated from the proto files (grpcio-tools) works against the broker.
//!
//! Needs `python3` with `grpcio` and `grpcio-tools` (`.ci/run` installs them). Without them the
//! test says so and passes, unless `SLUICE_REQUIRE_PYTHON_CHECK=1` (set by CI), where it fails.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn python_grpc_available() -> bool {
    Command::new("python3").args(["-c", "import grpc, grpc_tools"]).output().is_ok_and(|out| out.status.success())
}

#[tokio::test]
async fn a_python_grpc_client_produces_and_fetches() -> TestResult {
    if !python_grpc_available() {
        assert!(
            std::env::var("SLUICE_REQUIRE_PYTHON_CHECK").as_deref() != Ok("1"),
            "python3 with grpcio and grpcio-tools is required (pip install grpcio grpcio-tools)"
        );
        eprintln!("skipping: python3 with grpcio and grpcio-tools not found");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/python/cross_language.py");
    let protos = root.join("../../proto");
    let address = server.grpc.to_string();
    let output =
        tokio::task::spawn_blocking(move || Command::new("python3").arg(script).arg(address).arg(protos).output())
            .await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("check: ok"), "{stdout}");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_python_grpc_client_speaks_tls_with_a_token() -> TestResult {
    if !python_grpc_available() {
        assert!(std::env::var("SLUICE_REQUIRE_PYTHON_CHECK").as_deref() != Ok("1"), "python3 with grpcio is required");
        eprintln!("skipping: python3 with grpcio and grpcio-tools not found");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let ca = common::certs::Ca::new("python CA");
    let (cert, key) = ca.issue(&["localhost"]);
    std::fs::write(dir.path().join("server.crt"), cert)?;
    std::fs::write(dir.path().join("server.key"), key)?;
    std::fs::write(dir.path().join("ca.crt"), &ca.pem)?;
    let secret = "python-superuser-secret-0123456789abcdef";
    std::fs::write(dir.path().join("su.token"), secret)?;
    let path = |name: &str| dir.path().join(name).display().to_string();
    let (cert_file, key_file, token_file) = (path("server.crt"), path("server.key"), path("su.token"));
    let env = [
        ("SLUICE_TLS_CERT_FILE", cert_file.as_str()),
        ("SLUICE_TLS_KEY_FILE", key_file.as_str()),
        ("SLUICE_AUTH_ENABLED", "true"),
        ("SLUICE_AUTH_SUPERUSER_TOKEN_FILE", token_file.as_str()),
    ];
    let server = TestServer::start_with(config(&dir.path().join("data"), &env)).await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/python/cross_language.py");
    let protos = root.join("../../proto");
    let (address, ca_file) = (server.grpc.to_string(), path("ca.crt"));
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3").arg(script).arg(address).arg(protos).arg(ca_file).arg(secret).output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("check: ok"), "{stdout}");
    server.stop().await;
    Ok(())
}

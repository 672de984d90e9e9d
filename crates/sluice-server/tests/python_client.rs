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

//! The real `sluice-server` binary as a child process.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

use super::TestServer;

/// A running broker process; killed when dropped, so a failing test leaves none behind.
pub struct Broker {
    pub child: Child,
    pub server: TestServer,
}

/// Starts the binary on free ports (extra `SLUICE_*` settings in `env`) and waits until it listens.
pub fn spawn_broker(data_dir: &Path, env: &[(&str, &str)]) -> Broker {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice-server"))
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(["--log-level", "warn"])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    let address = |prefix: &str| line.split_whitespace().find_map(|w| w.strip_prefix(prefix)).unwrap().parse().unwrap();
    let server = TestServer::external(address("grpc="), address("http="));
    std::thread::spawn(move || for _ in lines {});
    Broker { child, server }
}

impl Broker {
    /// SIGTERM, then the exit status once the broker has shut down.
    pub fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        self.child.wait().unwrap()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

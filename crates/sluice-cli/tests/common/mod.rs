//! A real broker in this test process, and the real `sluice` binary run against it.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use sluice_server::Server;
use sluice_server::config::{FlagOverrides, load};

/// A broker on 127.0.0.1:0 with its own data dir, on a runtime of its own; stopped on drop.
pub struct Broker {
    pub addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The data dir when the broker owns it (`None` with [`Broker::start_in`]).
    _dir: Option<tempfile::TempDir>,
}

/// What one `sluice` run did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with its stderr unless it exited 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "sluice failed: {}", self.stderr);
        self
    }

    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    /// Each stdout line as JSON (`consume --format json`).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

pub fn sluice_command(server: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    // A developer's own contexts (~/.config/sluice) never reach the tests.
    command
        .env("SLUICE_SERVER", server)
        .env("SLUICE_CLI_CONFIG", "/nonexistent/sluice/config.toml")
        .env_remove("NO_COLOR")
        .args(args);
    command
}

/// Runs `sluice` with `args` and `stdin` against `server`.
pub fn run_sluice(server: &str, args: &[&str], stdin: &[u8]) -> Run {
    let mut child = sluice_command(server, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl Broker {
    pub fn start() -> Broker {
        Self::start_with(&[])
    }

    pub fn start_with(env: &[(&str, &str)]) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let mut broker = Self::start_in(dir.path(), env);
        broker._dir = Some(dir);
        broker
    }

    /// A broker on a data dir the test keeps, so it can stop, change the files and start again.
    pub fn start_in(data_dir: &std::path::Path, env: &[(&str, &str)]) -> Broker {
        let mut vars: Vec<(String, String)> = vec![
            ("SLUICE_LISTEN".into(), "127.0.0.1:0".into()),
            ("SLUICE_HTTP_LISTEN".into(), "127.0.0.1:0".into()),
            ("SLUICE_DATA_DIR".into(), data_dir.display().to_string()),
        ];
        vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let config = load(None, vars, &FlagOverrides::default()).unwrap();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let server = Server::bind(config).await.unwrap();
                addr_tx.send(server.grpc_addr().unwrap().to_string()).unwrap();
                server
                    .serve(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        Broker { addr, stop: Some(stop), thread: Some(thread), _dir: None }
    }

    /// `sluice ARGS` against this broker.
    pub fn sluice(&self, args: &[&str]) -> Run {
        run_sluice(&self.addr, args, b"")
    }

    /// `sluice ARGS` with `stdin`.
    pub fn sluice_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Run {
        run_sluice(&self.addr, args, stdin)
    }

    /// Runs client code against this broker on a runtime of its own.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

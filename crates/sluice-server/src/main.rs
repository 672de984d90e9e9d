//! `sluice-server`: the broker daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_server::config::{self, FlagOverrides};
use sluice_server::{Server, ServerConfig, offline, telemetry};

// mimalloc: measured +20-30% on record batches over the system allocator (shared/research/grpc-ceiling.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sluice message broker. Settings: built-in defaults < --config file < SLUICE_* environment < flags.
#[derive(Debug, Parser)]
#[command(name = "sluice-server", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

/// Work on a data directory without serving it (stop the broker first).
#[derive(Debug, Subcommand)]
enum Command {
    /// Check every segment, index, metadata and group file; change nothing. Exits 1 if
    /// anything is damaged.
    Verify {
        /// Data directory to check.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// Rebuild a lost topics/<TOPIC>/topic.meta from the topic's partition directories. The
    /// topic gets the default topic settings (from --config and SLUICE_* when given).
    RecoverTopicMeta {
        /// Data directory holding the topic.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The topic whose metadata is lost.
        #[arg(long)]
        topic: String,
        /// TOML config file whose [topic_defaults] the topic gets.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Create a bearer token on a stopped broker's data directory, to secure a fresh broker
    /// before it first serves (a running broker would not see it, and its next token change
    /// would drop it: use `sluice token create` then). Prints the token, shown only once.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Ask a running broker whether it is ready (GET /readyz); exit 0 if it is, 1 if not. The
    /// address is the configured server.http_listen (--config, SLUICE_HTTP_LISTEN) unless
    /// --http names one.
    Health {
        /// TOML config file to read server.http_listen from.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The broker's HTTP address, e.g. 127.0.0.1:7141.
        #[arg(long, value_name = "ADDR")]
        http: Option<std::net::SocketAddr>,
    },
}

/// `sluice-server token …`.
#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Create a token and print it (shown only once).
    Create {
        /// Data directory of the (stopped) broker.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Who the token authenticates.
        #[arg(long, default_value = "admin")]
        principal: String,
        /// The principal may do everything.
        #[arg(long)]
        superuser: bool,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML config file (see config/sluice.toml for every setting).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:7140].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// HTTP (metrics, health) listen address [default: 127.0.0.1:7141].
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// Data directory [default: ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<String>,
    /// Default fsync policy of new topics: always, never or interval:<duration>.
    #[arg(long, value_name = "POLICY")]
    fsync: Option<String>,
    /// Log format: text or json.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Log filter, e.g. info or sluice_core=debug.
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Validate the configuration, print the effective settings, and exit.
    #[arg(long)]
    check_config: bool,
}

/// SIGINT and SIGTERM, installed before the broker opens: a signal that arrives while it
/// starts (even right after "listening" is printed) begins the ordered shutdown instead of
/// killing the process.
struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
    }

    /// Waits for the first signal; a second one exits at once.
    async fn first(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = self.interrupt.recv() => {}
                _ = self.terminate.recv() => {}
            }
            eprintln!("sluice-server: second signal, exiting immediately");
            std::process::exit(130);
        });
    }
}

async fn run(config: ServerConfig) -> Result<(), sluice_server::ServerError> {
    let signals = ShutdownSignals::install()?;
    let server = Server::bind(config).await?;
    let (grpc, http) = (server.grpc_addr()?, server.http_addr()?);
    tracing::info!(%grpc, %http, "sluice-server listening");
    // A plain line on stdout that scripts and tests can wait for.
    println!("sluice-server listening grpc={grpc} http={http}");
    server.serve(signals.first()).await
}

fn offline(command: Command) -> ExitCode {
    let mut out = std::io::stdout();
    let code = match command {
        Command::Health { config, http } => {
            let addr = match http {
                Some(addr) => addr,
                None => match config::load(config.as_deref(), std::env::vars(), &FlagOverrides::default()) {
                    Ok(config) => config.http_listen,
                    Err(e) => {
                        eprintln!("sluice-server: {e}");
                        return ExitCode::from(offline::EXIT_FAILED);
                    }
                },
            };
            return match sluice_server::health_check::check(sluice_server::health_check::target(addr)) {
                Ok(status) => {
                    println!("ready: {status}");
                    ExitCode::SUCCESS
                }
                Err(why) => {
                    eprintln!("not ready: {why}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Verify { data_dir } => offline::verify(&data_dir, &mut out),
        Command::Token { action: TokenAction::Create { data_dir, principal, superuser } } => {
            offline::create_token(&data_dir, &principal, superuser, &mut out)
        }
        Command::RecoverTopicMeta { data_dir, topic, config } => {
            match config::load(config.as_deref(), std::env::vars(), &FlagOverrides::default()) {
                Ok(config) => offline::recover_topic_meta(&data_dir, &topic, &config.broker.topic_defaults, &mut out),
                Err(e) => {
                    eprintln!("sluice-server: {e}");
                    return ExitCode::from(offline::EXIT_FAILED);
                }
            }
        }
    };
    ExitCode::from(code.unwrap_or(offline::EXIT_FAILED))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(command) = cli.command {
        return offline(command);
    }
    let cli = cli.serve;
    let flags = FlagOverrides {
        listen: cli.listen,
        http_listen: cli.http_listen,
        data_dir: cli.data_dir,
        log_format: cli.log_format,
        log_level: cli.log_level,
        fsync: cli.fsync,
    };
    let config = match config::load(cli.config.as_deref(), std::env::vars(), &flags) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sluice-server: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        println!("configuration is valid; effective settings:\n");
        println!("{}", toml::to_string_pretty(&config.effective).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    telemetry::init(config.log_format, &config.log_level, flags.log_level.is_some());
    tracing::info!(settings = ?config.effective, "starting");
    let runtime = match runtime_builder(config.worker_threads).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sluice-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(cause = %e, "sluice-server failed");
            eprintln!("sluice-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime, with `server.worker_threads` workers (0: one per core).
fn runtime_builder(worker_threads: usize) -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if worker_threads > 0 {
        builder.worker_threads(worker_threads);
    }
    builder
}

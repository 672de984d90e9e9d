//! `sluice`: operate a Sluice broker from the terminal, over its gRPC API only.
//!
//! Exit codes: 0 success, 1 the broker refused or could not be reached, 2 bad usage.
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![warn(clippy::expect_used)]

mod consume;
mod context;
mod dlq;
mod error;
mod group;
mod output;
mod produce;
mod security;
mod status;
mod topic;
mod units;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use sluice_client::{Client, ConnectOptions, TlsOptions};

use crate::error::CliError;
use crate::output::{Output, Printer};

/// Where the CLI connects without --server, SLUICE_SERVER or a context.
const DEFAULT_SERVER: &str = "127.0.0.1:7140";

/// Operate a Sluice broker: topics, produce, consume, consumer groups and dead letters.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    /// Broker gRPC address (default: the context's, else 127.0.0.1:7140).
    #[arg(long, global = true, env = "SLUICE_SERVER")]
    server: Option<String>,
    /// A context of ~/.config/sluice/config.toml (default: its `current`).
    #[arg(long, global = true, env = "SLUICE_CONTEXT")]
    context: Option<String>,
    /// Bearer token for a broker with authentication on (`sluice token create`).
    #[arg(long, global = true, env = "SLUICE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) to verify a TLS broker with; turns TLS on.
    #[arg(long, global = true, env = "SLUICE_TLS_CA", value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with --tls-key.
    #[arg(long, global = true, env = "SLUICE_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, global = true, env = "SLUICE_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// How reading commands print: aligned tables, or JSON for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Append records: from arguments, one per stdin line, or a whole file.
    Produce(produce::ProduceArgs),
    /// Print records from a topic, or consume them as a group member.
    Consume(consume::ConsumeArgs),
    /// List, describe, reset and delete consumer groups.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Inspect and redrive dead-lettered records.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Create, list and revoke bearer tokens.
    #[command(subcommand)]
    Token(security::TokenCommand),
    /// Add, list and remove access-control entries.
    #[command(subcommand)]
    Acl(security::AclCommand),
    /// List and switch the connection contexts of ~/.config/sluice/config.toml.
    #[command(subcommand)]
    Context(context::ContextCommand),
    /// Broker version, uptime, addresses, topics, data size and health.
    Status,
    /// Print a shell completion script (e.g. `sluice completions bash > /etc/bash_completion.d/sluice`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

async fn run(cli: Cli, printer: Printer) -> Result<(), CliError> {
    // Contexts are managed without connecting (and without choosing one).
    if let Command::Context(command) = cli.command {
        return context::run(&printer, command);
    }
    let chosen = context::select(&context::load()?, cli.context.as_deref())?;
    let server = cli.server.clone().or(chosen.server.clone()).unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let token = match cli.token.clone() {
        Some(token) => Some(token),
        None => chosen.token()?,
    };
    let tls_ca = cli.tls_ca.clone().or(chosen.tls_ca.clone());
    let (tls_cert, tls_key) = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => (Some(cert.clone()), Some(key.clone())),
        _ => (chosen.tls_cert.clone(), chosen.tls_key.clone()),
    };
    let read = |path: &std::path::PathBuf| {
        std::fs::read(path).map_err(|source| CliError::Io { context: format!("reading {}", path.display()), source })
    };
    let tls = if tls_ca.is_some() || tls_cert.is_some() {
        let identity = match (&tls_cert, &tls_key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            _ => None,
        };
        Some(TlsOptions { ca_pem: tls_ca.as_ref().map(read).transpose()?, identity_pem: identity, domain: None })
    } else {
        None
    };
    let options = ConnectOptions { token, tls };
    let connect = || Client::connect_with(&server, options.clone());
    match cli.command {
        Command::Topic(command) => topic::run(&connect().await?, &printer, command).await,
        Command::Produce(args) => produce::run(&connect().await?, &printer, args).await,
        Command::Consume(args) => consume::run(&connect().await?, &printer, args).await,
        Command::Group(command) => group::run(&connect().await?, &printer, command).await,
        Command::Dlq(command) => dlq::run(&connect().await?, &printer, command).await,
        Command::Token(command) => security::run_token(&connect().await?, &printer, command).await,
        Command::Acl(command) => security::run_acl(&connect().await?, &printer, command).await,
        Command::Context(command) => context::run(&printer, command),
        Command::Status => status::run(&connect().await?, &printer).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "sluice", &mut std::io::stdout());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    // Usage errors exit with 2, --help and --version with 0 (clap's convention).
    let cli = Cli::parse();
    let printer = Printer::new(cli.output);
    let server = cli.server.clone().unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli, printer)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let line = error.render(&server, output::stderr_color());
            if !line.is_empty() {
                eprintln!("{line}");
            }
            ExitCode::from(error.exit_code())
        }
    }
}

//! Named connection settings in `~/.config/sluice/config.toml` (or `$SLUICE_CLI_CONFIG`), in the
//! style of kubectl contexts and rpk profiles:
//!
//! ```toml
//! current = "prod"
//!
//! [contexts.local]
//! server = "127.0.0.1:7140"
//!
//! [contexts.prod]
//! server = "broker.internal:7140"
//! token_file = "/home/me/.config/sluice/prod.token"   # or: token = "sluice_..."
//! tls_ca = "/etc/sluice/ca.pem"
//! tls_cert = "/etc/sluice/me.pem"                      # with tls_key: mutual TLS
//! tls_key = "/etc/sluice/me.key"
//! ```
//!
//! Flags and environment variables (`--server`, `--token`, `--tls-*`, `SLUICE_*`) win over the
//! context; `--context NAME` (or `SLUICE_CONTEXT`) picks another than `current`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Subcommand;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::CliError;
use crate::output::Printer;

/// One context.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Context {
    pub server: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// The file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ContextFile {
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// Where the file is.
pub fn path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SLUICE_CLI_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("sluice").join("config.toml"))
}

/// Reads the file (none: no contexts).
pub fn load() -> Result<ContextFile, CliError> {
    let Some(path) = path() else { return Ok(ContextFile::default()) };
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| CliError::Usage(format!("{}: {}", path.display(), e.message()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ContextFile::default()),
        Err(source) => Err(CliError::Io { context: format!("reading {}", path.display()), source }),
    }
}

/// The context to use: `name` if given, else the file's current one, else none.
pub fn select(file: &ContextFile, name: Option<&str>) -> Result<Context, CliError> {
    match name.or(file.current.as_deref()) {
        None => Ok(Context::default()),
        Some(name) => file.contexts.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = file.contexts.keys().map(String::as_str).collect();
            CliError::Usage(format!(
                "no context '{name}' (known: {})",
                if known.is_empty() { "none".into() } else { known.join(", ") }
            ))
        }),
    }
}

impl Context {
    /// The token, read from `token_file` if that is how it is given.
    pub fn token(&self) -> Result<Option<String>, CliError> {
        match (&self.token, &self.token_file) {
            (Some(token), _) => Ok(Some(token.clone())),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|t| Some(t.trim().to_owned()))
                .map_err(|source| CliError::Io { context: format!("reading {}", path.display()), source }),
            (None, None) => Ok(None),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// List the contexts of the CLI's config file.
    List,
    /// Make a context the current one.
    Use { name: String },
}

pub fn run(printer: &Printer, command: ContextCommand) -> Result<(), CliError> {
    let mut file = load()?;
    match command {
        ContextCommand::List => {
            if printer.json_mode() {
                let list: Vec<_> = file
                    .contexts
                    .iter()
                    .map(|(name, c)| json!({ "name": name, "server": c.server, "current": file.current.as_deref() == Some(name) }))
                    .collect();
                return printer.json(&serde_json::Value::Array(list));
            }
            let rows: Vec<Vec<String>> = file
                .contexts
                .iter()
                .map(|(name, c)| {
                    let current = if file.current.as_deref() == Some(name) { "*" } else { "" };
                    vec![current.into(), name.clone(), c.server.clone().unwrap_or_else(|| "-".into())]
                })
                .collect();
            printer.table(&["CURRENT", "NAME", "SERVER"], &rows)
        }
        ContextCommand::Use { name } => {
            select(&file, Some(&name))?;
            file.current = Some(name.clone());
            let path = path().ok_or_else(|| CliError::Usage("no home directory for the CLI's config file".into()))?;
            let text = toml::to_string(&file).map_err(|e| CliError::Usage(e.to_string()))?;
            std::fs::write(&path, text)
                .map_err(|source| CliError::Io { context: format!("writing {}", path.display()), source })?;
            printer.line(&format!("using context {name}"))
        }
    }
}

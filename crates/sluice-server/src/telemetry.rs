//! Logging setup: human-readable by default, JSON with `log.format = "json"`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. The filter is `level` when it came from `--log-level`
/// (`from_flag`); otherwise `RUST_LOG` when set, else `level` (from the file, `SLUICE_LOG_LEVEL`
/// or the default). Colours only when stderr is a terminal.
pub fn init(format: LogFormat, level: &str, from_flag: bool) {
    let from_env = if from_flag { None } else { EnvFilter::try_from_default_env().ok() };
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(level));
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Err(e) = result {
        eprintln!("sluice-server: logging already initialised: {e}");
    }
}

//! The server's configuration: built-in defaults < `--config` file < `SLUICE_*` environment <
//! command-line flags. Everything is validated before the data directory is touched, and an
//! invalid setting is reported by its key.
//!
//! Environment variables: `SLUICE_LISTEN`, `SLUICE_HTTP_LISTEN` and `SLUICE_DATA_DIR` for the
//! three most common settings, and `SLUICE_<SECTION>_<KEY>` (upper case) for every key, e.g.
//! `SLUICE_TOPIC_DEFAULTS_FSYNC=never`. `config/sluice.toml` documents every key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_core::group::OffsetReset;
use sluice_core::group::backoff::RetryPolicy;
use sluice_core::{BrokerConfig, FsyncPolicy, GroupDefaults, TopicConfig};

/// A setting that could not be used; names the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown keys.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names the key).
        message: String,
    },
    /// A `SLUICE_*` environment variable that names no setting.
    #[error(
        "unknown environment variable {name}: no setting has that name (see config/sluice.toml; SLUICE_<SECTION>_<KEY>)"
    )]
    UnknownEnv {
        /// The variable.
        name: String,
    },
    /// A value is invalid.
    #[error("invalid value for {key} ({source_name}): {message}")]
    Invalid {
        /// `section.key`.
        key: String,
        /// Where the value came from (file, env var or flag).
        source_name: String,
        /// Why.
        message: String,
    },
}

/// Prefix of the environment variables the server reads.
const ENV_PREFIX: &str = "SLUICE_";

/// `SLUICE_*` variables that belong to other Sluice programs (the CLI's broker address, CI and
/// benchmark knobs): not settings of the server, but not mistakes either.
const IGNORED_ENV: &[&str] = &[
    "SLUICE_SERVER",
    "SLUICE_REQUIRE_PYTHON_CHECK",
    "SLUICE_BENCH_DIR",
    "SLUICE_SUSTAINED_GIB",
    "SLUICE_SUSTAINED_PREALLOCATE",
];

/// `[server]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    pub listen: String,
    pub http_listen: String,
    pub data_dir: String,
    pub shutdown_timeout: String,
    pub worker_threads: u32,
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    pub format: String,
    pub level: String,
}

/// `[topic_defaults]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TopicDefaultsSection {
    pub retention: String,
    pub retention_bytes: String,
    pub segment_bytes: String,
    pub segment_age: String,
    pub max_message_bytes: String,
    pub fsync: String,
}

/// `[limits]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    pub max_request_bytes: String,
    pub max_partitions: u32,
    pub max_fetch_wait: String,
    pub max_fetch_bytes: String,
    pub tail_cache_bytes: String,
    pub idempotence_window: u32,
    pub min_free_bytes: String,
}

/// `[maintenance]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MaintenanceSection {
    pub retention_check_interval: String,
    pub fsync_check_interval: String,
    pub producer_snapshot_interval: String,
}

/// `[groups]`: consumer-group defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GroupsSection {
    pub session_timeout: String,
    pub ack_timeout: String,
    pub max_in_flight_records: u32,
    pub max_in_flight_bytes: String,
    pub reset: String,
    pub commit_interval: String,
    pub max_delivery_attempts: u32,
    pub backoff_initial: String,
    pub backoff_multiplier: f64,
    pub backoff_max: String,
    pub dead_letter_topic: String,
    pub skip_damaged: bool,
    pub max_lease_expiries: u32,
}

impl Default for GroupsSection {
    fn default() -> Self {
        GroupsSection {
            session_timeout: "30s".into(),
            ack_timeout: "30s".into(),
            max_in_flight_records: 1000,
            max_in_flight_bytes: "16MiB".into(),
            reset: "earliest".into(),
            commit_interval: "1s".into(),
            max_delivery_attempts: 5,
            backoff_initial: "1s".into(),
            backoff_multiplier: 2.0,
            backoff_max: "5m".into(),
            dead_letter_topic: "{topic}.dlq".into(),
            skip_damaged: false,
            max_lease_expiries: 3,
        }
    }
}

fn group_defaults(g: &GroupsSection, origin: &str) -> Result<GroupDefaults, ConfigError> {
    let duration = |key: &str, text: &str| match parse_duration(text) {
        Ok(d) if d >= Duration::from_millis(10) => Ok(d),
        Ok(_) => Err(invalid(key, origin, "must be at least 10ms")),
        Err(m) => Err(invalid(key, origin, m)),
    };
    let reset = match g.reset.trim() {
        "earliest" => OffsetReset::Earliest,
        "latest" => OffsetReset::Latest,
        other => return Err(invalid("groups.reset", origin, format!("'{other}' is not earliest or latest"))),
    };
    if g.max_in_flight_records == 0 {
        return Err(invalid("groups.max_in_flight_records", origin, "must be at least 1"));
    }
    let max_in_flight_bytes =
        parse_size(&g.max_in_flight_bytes).map_err(|m| invalid("groups.max_in_flight_bytes", origin, m))?.max(1);
    if g.max_delivery_attempts == 0 {
        return Err(invalid("groups.max_delivery_attempts", origin, "must be at least 1"));
    }
    if !(1.0..=100.0).contains(&g.backoff_multiplier) {
        return Err(invalid("groups.backoff_multiplier", origin, "must be between 1 and 100"));
    }
    let probe = g.dead_letter_topic.replace("{topic}", "t");
    sluice_core::topic_name::validate(&probe).map_err(|e| invalid("groups.dead_letter_topic", origin, e))?;
    let retry = RetryPolicy {
        max_attempts: g.max_delivery_attempts,
        initial: duration("groups.backoff_initial", &g.backoff_initial)?,
        multiplier: g.backoff_multiplier,
        max: duration("groups.backoff_max", &g.backoff_max)?,
        ..RetryPolicy::default()
    };
    Ok(GroupDefaults {
        retry,
        dead_letter_topic: g.dead_letter_topic.clone(),
        session_timeout: duration("groups.session_timeout", &g.session_timeout)?,
        ack_timeout: duration("groups.ack_timeout", &g.ack_timeout)?,
        max_in_flight_records: g.max_in_flight_records,
        max_in_flight_bytes,
        reset,
        commit_interval: duration("groups.commit_interval", &g.commit_interval)?,
        skip_damaged: g.skip_damaged,
        max_lease_expiries: g.max_lease_expiries,
    })
}

/// `[auth]`: who may connect and what they may do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Require a bearer token on every Admin, Producer and Consumer call.
    pub enabled: bool,
    /// Start with authentication off even though `server.listen` is not a loopback address.
    pub allow_anonymous_remote: bool,
    /// A file holding a superuser token (at least 32 characters) for bootstrapping; empty: none.
    pub superuser_token_file: String,
    /// The principal that token authenticates.
    pub superuser_name: String,
    /// `/metrics` also requires a token (with describe on the cluster).
    pub metrics_require_token: bool,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            enabled: false,
            allow_anonymous_remote: false,
            superuser_token_file: String::new(),
            superuser_name: "admin".into(),
            metrics_require_token: false,
        }
    }
}

/// `[tls]`: TLS on both ports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain; empty: no TLS.
    pub cert_file: String,
    /// PEM private key.
    pub key_file: String,
    /// PEM CA certificates that sign client certificates.
    pub client_ca_file: String,
    /// none, optional or required.
    pub client_auth: String,
    /// Serve the HTTP port over TLS too.
    pub http: bool,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            cert_file: String::new(),
            key_file: String::new(),
            client_ca_file: String::new(),
            client_auth: "none".into(),
            http: true,
        }
    }
}

/// One principal's own quotas under `[quotas.principals.<name>]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PrincipalQuotaSection {
    pub produce_bytes_per_second: Option<String>,
    pub fetch_bytes_per_second: Option<String>,
    pub max_streams: Option<u32>,
    pub max_connections: Option<u32>,
}

/// `[quotas]`: per-principal limits (with authentication on).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct QuotasSection {
    pub produce_bytes_per_second: String,
    pub fetch_bytes_per_second: String,
    pub max_streams: u32,
    pub max_connections: u32,
    pub principals: BTreeMap<String, PrincipalQuotaSection>,
}

impl Default for QuotasSection {
    fn default() -> Self {
        QuotasSection {
            produce_bytes_per_second: "0".into(),
            fetch_bytes_per_second: "0".into(),
            max_streams: 0,
            max_connections: 0,
            principals: BTreeMap::new(),
        }
    }
}

/// Authentication settings, validated.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Require tokens.
    pub enabled: bool,
    /// A bootstrap superuser token file, and its principal.
    pub superuser_token_file: Option<(PathBuf, String)>,
    /// `/metrics` requires a token.
    pub metrics_require_token: bool,
}

/// The config file's shape (also the shape of the defaults).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    pub server: ServerSection,
    pub log: LogSection,
    pub topic_defaults: TopicDefaultsSection,
    pub limits: LimitsSection,
    pub maintenance: MaintenanceSection,
    pub groups: GroupsSection,
    pub auth: AuthSection,
    pub tls: TlsSection,
    pub quotas: QuotasSection,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:7140".into(),
            http_listen: "127.0.0.1:7141".into(),
            data_dir: "./data".into(),
            shutdown_timeout: "30s".into(),
            worker_threads: 0,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection { format: "text".into(), level: "info".into() }
    }
}

impl Default for TopicDefaultsSection {
    fn default() -> Self {
        TopicDefaultsSection {
            retention: "7d".into(),
            retention_bytes: "none".into(),
            segment_bytes: "1GiB".into(),
            segment_age: "7d".into(),
            max_message_bytes: "1MiB".into(),
            fsync: "always".into(),
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_request_bytes: "16MiB".into(),
            max_partitions: 4096,
            max_fetch_wait: "30s".into(),
            max_fetch_bytes: "16MiB".into(),
            tail_cache_bytes: "2MiB".into(),
            idempotence_window: sluice_core::producers::DEFAULT_WINDOW as u32,
            min_free_bytes: "64MiB".into(),
        }
    }
}

impl Default for MaintenanceSection {
    fn default() -> Self {
        MaintenanceSection {
            retention_check_interval: "30s".into(),
            fsync_check_interval: "50ms".into(),
            producer_snapshot_interval: "60s".into(),
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// HTTP (metrics, health) listen address.
    pub http_listen: SocketAddr,
    /// How long a graceful shutdown may take before the broker is closed anyway.
    pub shutdown_timeout: Duration,
    /// Async runtime worker threads; 0 means one per core.
    pub worker_threads: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (tracing-subscriber `EnvFilter` syntax).
    pub log_level: String,
    /// The broker core's settings.
    pub broker: BrokerConfig,
    /// Authentication.
    pub auth: AuthConfig,
    /// TLS, if on.
    pub tls: Option<crate::tls::TlsConfig>,
    /// Per-principal quotas.
    pub quotas: crate::quota::QuotaConfig,
    /// The effective settings, as text (logged at startup).
    pub effective: ConfigFile,
}

/// Values given on the command line (each overrides everything else).
#[derive(Debug, Clone, Default)]
pub struct FlagOverrides {
    pub listen: Option<String>,
    pub http_listen: Option<String>,
    pub data_dir: Option<String>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    pub fsync: Option<String>,
}

fn invalid(key: &str, source_name: &str, message: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid { key: key.to_owned(), source_name: source_name.to_owned(), message: message.to_string() }
}

/// Parses a size such as `16MiB`, `1GB` or `4096`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.trim().parse::<bytesize::ByteSize>().map(|b| b.as_u64()).map_err(|e| format!("'{text}' is not a size ({e})"))
}

/// Parses a duration such as `7d`, `250ms` or `30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("'{text}' is not a duration ({e})"))
}

/// Parses `always`, `never`, or `interval:<duration>` (e.g. `interval:100ms`).
pub fn parse_fsync(text: &str) -> Result<FsyncPolicy, String> {
    match text.trim() {
        "always" => Ok(FsyncPolicy::Always),
        "never" => Ok(FsyncPolicy::Never),
        other => match other.strip_prefix("interval:") {
            Some(interval) => parse_duration(interval).map(FsyncPolicy::Interval),
            None => Err(format!("'{text}' is not one of always, never, interval:<duration>")),
        },
    }
}

fn none_or<T>(text: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Option<T>, String> {
    match text.trim() {
        "none" | "forever" | "unlimited" => Ok(None),
        other => parse(other).map(Some),
    }
}

/// Every `(section, key)` of the config, for the `SLUICE_<SECTION>_<KEY>` variables.
fn keys() -> Result<Vec<(String, String)>, ConfigError> {
    let table = toml::Table::try_from(ConfigFile::default())
        .map_err(|e| ConfigError::Parse { path: PathBuf::from("<defaults>"), message: e.to_string() })?;
    let mut keys = Vec::new();
    for (section, value) in table {
        if let toml::Value::Table(entries) = value {
            keys.extend(entries.keys().map(|key| (section.clone(), key.clone())));
        }
    }
    Ok(keys)
}

/// Sets `section.key` to `value` (text from the environment or a flag, named `source_name`),
/// typed like the default it replaces.
fn set(table: &mut toml::Table, section: &str, key: &str, value: &str, source_name: &str) -> Result<(), ConfigError> {
    let Some(toml::Value::Table(entries)) = table.get_mut(section) else { return Ok(()) };
    let full_key = format!("{section}.{key}");
    let typed = match entries.get(key) {
        Some(toml::Value::Integer(_)) => value
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| invalid(&full_key, source_name, format!("'{value}' is not a whole number")))?,
        Some(toml::Value::Float(_)) => value
            .trim()
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| invalid(&full_key, source_name, format!("'{value}' is not a number")))?,
        Some(toml::Value::Boolean(_)) => value
            .trim()
            .parse::<bool>()
            .map(toml::Value::Boolean)
            .map_err(|_| invalid(&full_key, source_name, format!("'{value}' is not true or false")))?,
        _ => toml::Value::String(value.to_owned()),
    };
    entries.insert(key.to_owned(), typed);
    Ok(())
}

/// Loads the configuration: defaults, then `file`, then the environment (`env` lists the
/// variables, normally `std::env::vars()`), then `flags`.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: &FlagOverrides,
) -> Result<ServerConfig, ConfigError> {
    let mut table = toml::Table::try_from(ConfigFile::default())
        .map_err(|e| ConfigError::Parse { path: PathBuf::from("<defaults>"), message: e.to_string() })?;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let parsed: ConfigFile =
            toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
        table = toml::Table::try_from(parsed)
            .map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
    }
    let env: std::collections::BTreeMap<String, String> =
        env.into_iter().filter(|(name, _)| name.starts_with(ENV_PREFIX)).collect();
    let shortcuts =
        [("SLUICE_LISTEN", "listen"), ("SLUICE_HTTP_LISTEN", "http_listen"), ("SLUICE_DATA_DIR", "data_dir")];
    let mut known: std::collections::BTreeSet<String> = shortcuts.iter().map(|(name, _)| (*name).to_owned()).collect();
    for (section, key) in keys()? {
        let name = format!("{ENV_PREFIX}{}_{}", section.to_uppercase(), key.to_uppercase());
        if let Some(value) = env.get(&name) {
            set(&mut table, &section, &key, value, &name)?;
        }
        known.insert(name);
    }
    // A misspelt variable would otherwise be ignored without a word.
    if let Some(unknown) = env.keys().find(|name| !known.contains(*name) && !IGNORED_ENV.contains(&name.as_str())) {
        return Err(ConfigError::UnknownEnv { name: unknown.clone() });
    }
    for (name, key) in shortcuts {
        if let Some(value) = env.get(name) {
            set(&mut table, "server", key, value, name)?;
        }
    }
    let flag_values = [
        ("server", "listen", &flags.listen),
        ("server", "http_listen", &flags.http_listen),
        ("server", "data_dir", &flags.data_dir),
        ("log", "format", &flags.log_format),
        ("log", "level", &flags.log_level),
        ("topic_defaults", "fsync", &flags.fsync),
    ];
    for (section, key, value) in flag_values {
        if let Some(value) = value {
            set(&mut table, section, key, value, &format!("--{}", key.replace('_', "-")))?;
        }
    }
    let merged: ConfigFile =
        table.try_into().map_err(|e: toml::de::Error| invalid("config", "environment or flags", e.message()))?;
    validate(merged)
}

fn validate(file: ConfigFile) -> Result<ServerConfig, ConfigError> {
    let origin = "file, environment or flags";
    let addr = |key: &str, text: &str| -> Result<SocketAddr, ConfigError> {
        text.parse().map_err(|e| invalid(key, origin, format!("'{text}' is not an address like 127.0.0.1:7140 ({e})")))
    };
    let size = |key: &str, text: &str| parse_size(text).map_err(|m| invalid(key, origin, m));
    let duration = |key: &str, text: &str| parse_duration(text).map_err(|m| invalid(key, origin, m));
    let t = &file.topic_defaults;
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let topic_defaults = TopicConfig {
        retention_ms: none_or(&t.retention, parse_duration)
            .map_err(|m| invalid("topic_defaults.retention", origin, m))?
            .map(ms),
        retention_bytes: none_or(&t.retention_bytes, parse_size)
            .map_err(|m| invalid("topic_defaults.retention_bytes", origin, m))?,
        segment_bytes: size("topic_defaults.segment_bytes", &t.segment_bytes)?,
        segment_ms: ms(duration("topic_defaults.segment_age", &t.segment_age)?),
        max_message_bytes: u32::try_from(size("topic_defaults.max_message_bytes", &t.max_message_bytes)?)
            .map_err(|e| invalid("topic_defaults.max_message_bytes", origin, e))?,
        fsync: parse_fsync(&t.fsync).map_err(|m| invalid("topic_defaults.fsync", origin, m))?,
        max_delivery_attempts: None,
        dead_letter_topic: None,
    };
    topic_defaults.validate().map_err(|e| invalid("topic_defaults", origin, e))?;
    let l = &file.limits;
    let m = &file.maintenance;
    let broker = BrokerConfig {
        data_dir: PathBuf::from(&file.server.data_dir),
        topic_defaults,
        max_request_bytes: usize::try_from(size("limits.max_request_bytes", &l.max_request_bytes)?)
            .map_err(|e| invalid("limits.max_request_bytes", origin, e))?,
        max_partitions: l.max_partitions,
        retention_check_interval: duration("maintenance.retention_check_interval", &m.retention_check_interval)?,
        fsync_check_interval: duration("maintenance.fsync_check_interval", &m.fsync_check_interval)?,
        max_fetch_wait: duration("limits.max_fetch_wait", &l.max_fetch_wait)?,
        max_fetch_bytes: usize::try_from(size("limits.max_fetch_bytes", &l.max_fetch_bytes)?)
            .map_err(|e| invalid("limits.max_fetch_bytes", origin, e))?,
        tail_cache_bytes: usize::try_from(size("limits.tail_cache_bytes", &l.tail_cache_bytes)?)
            .map_err(|e| invalid("limits.tail_cache_bytes", origin, e))?,
        producer_snapshot_interval: duration("maintenance.producer_snapshot_interval", &m.producer_snapshot_interval)?,
        idempotence_window: l.idempotence_window as usize,
        min_free_bytes: size("limits.min_free_bytes", &l.min_free_bytes)?,
        groups: group_defaults(&file.groups, origin)?,
    };
    if broker.idempotence_window < sluice_core::producers::MIN_WINDOW {
        let min = sluice_core::producers::MIN_WINDOW;
        return Err(invalid(
            "limits.idempotence_window",
            origin,
            format!("must be at least {min}, the requests one ProduceStream may have in flight"),
        ));
    }
    if broker.max_partitions == 0 {
        return Err(invalid("limits.max_partitions", origin, "must be at least 1"));
    }
    for (key, d) in [
        ("maintenance.retention_check_interval", broker.retention_check_interval),
        ("maintenance.fsync_check_interval", broker.fsync_check_interval),
        ("maintenance.producer_snapshot_interval", broker.producer_snapshot_interval),
    ] {
        if d.is_zero() {
            return Err(invalid(key, origin, "must be longer than 0"));
        }
    }
    if file.server.data_dir.trim().is_empty() {
        return Err(invalid("server.data_dir", origin, "must not be empty"));
    }
    let log_format = match file.log.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => return Err(invalid("log.format", origin, format!("'{other}' is not text or json"))),
    };
    let listen = addr("server.listen", &file.server.listen)?;
    let a = &file.auth;
    // Secure by default: a broker others can reach is not left open by accident.
    if !a.enabled && !a.allow_anonymous_remote && !listen.ip().is_loopback() {
        return Err(invalid(
            "auth.enabled",
            origin,
            format!(
                "server.listen {listen} is not a loopback address and authentication is off: set auth.enabled = true (with a superuser token: auth.superuser_token_file, or `sluice-server token create --superuser`), or auth.allow_anonymous_remote = true to serve anyone who can reach it"
            ),
        ));
    }
    if a.metrics_require_token && !a.enabled {
        return Err(invalid("auth.metrics_require_token", origin, "needs auth.enabled = true"));
    }
    let superuser_token_file = if a.superuser_token_file.trim().is_empty() {
        None
    } else {
        sluice_core::auth::validate_principal(&a.superuser_name)
            .map_err(|e| invalid("auth.superuser_name", origin, e))?;
        Some((PathBuf::from(&a.superuser_token_file), a.superuser_name.clone()))
    };
    let auth = AuthConfig { enabled: a.enabled, superuser_token_file, metrics_require_token: a.metrics_require_token };
    let t = &file.tls;
    let client_auth = match t.client_auth.as_str() {
        "none" => crate::tls::ClientAuth::None,
        "optional" => crate::tls::ClientAuth::Optional,
        "required" => crate::tls::ClientAuth::Required,
        other => {
            return Err(invalid("tls.client_auth", origin, format!("'{other}' is not none, optional or required")));
        }
    };
    let tls = match (t.cert_file.trim().is_empty(), t.key_file.trim().is_empty()) {
        (true, true) => None,
        (false, false) => Some(crate::tls::TlsConfig {
            cert_file: PathBuf::from(&t.cert_file),
            key_file: PathBuf::from(&t.key_file),
            client_ca_file: (!t.client_ca_file.trim().is_empty()).then(|| PathBuf::from(&t.client_ca_file)),
            client_auth,
            http: t.http,
        }),
        _ => return Err(invalid("tls.cert_file", origin, "tls.cert_file and tls.key_file go together")),
    };
    let q = &file.quotas;
    let rate = |key: &str, text: &str| size(key, text);
    let mut principals = BTreeMap::new();
    for (name, own) in &q.principals {
        sluice_core::auth::validate_principal(name).map_err(|e| invalid("quotas.principals", origin, e))?;
        let key = |field: &str| format!("quotas.principals.{name}.{field}");
        let limits = crate::quota::Limits {
            produce_bytes_per_second: own
                .produce_bytes_per_second
                .as_deref()
                .map(|t| rate(&key("produce_bytes_per_second"), t))
                .transpose()?,
            fetch_bytes_per_second: own
                .fetch_bytes_per_second
                .as_deref()
                .map(|t| rate(&key("fetch_bytes_per_second"), t))
                .transpose()?,
            max_streams: own.max_streams,
            max_connections: own.max_connections,
        };
        principals.insert(name.clone(), limits);
    }
    let quotas = crate::quota::QuotaConfig {
        defaults: crate::quota::Limits {
            produce_bytes_per_second: Some(rate("quotas.produce_bytes_per_second", &q.produce_bytes_per_second)?),
            fetch_bytes_per_second: Some(rate("quotas.fetch_bytes_per_second", &q.fetch_bytes_per_second)?),
            max_streams: Some(q.max_streams),
            max_connections: Some(q.max_connections),
        },
        principals,
    };
    if client_auth != crate::tls::ClientAuth::None && tls.as_ref().is_none_or(|t| t.client_ca_file.is_none()) {
        return Err(invalid(
            "tls.client_auth",
            origin,
            "client certificates need tls.cert_file, tls.key_file and tls.client_ca_file",
        ));
    }
    Ok(ServerConfig {
        listen,
        http_listen: addr("server.http_listen", &file.server.http_listen)?,
        shutdown_timeout: duration("server.shutdown_timeout", &file.server.shutdown_timeout)?,
        worker_threads: file.server.worker_threads as usize,
        log_format,
        log_level: file.log.level.clone(),
        broker,
        auth,
        tls,
        quotas,
        effective: file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn built_in_defaults_match_the_documented_addresses() {
        let config = load(None, env(&[]), &FlagOverrides::default()).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:7140");
        assert_eq!(config.http_listen.to_string(), "127.0.0.1:7141");
        assert_eq!(config.broker.data_dir, PathBuf::from("./data"));
        assert_eq!(config.broker.topic_defaults.fsync, FsyncPolicy::Always);
    }

    #[test]
    fn precedence_is_defaults_then_file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(
            &path,
            "[server]\nlisten = \"127.0.0.1:1000\"\nhttp_listen = \"127.0.0.1:1001\"\n[topic_defaults]\nfsync = \"never\"\nretention = \"1h\"\n",
        )
        .unwrap();
        let vars = env(&[
            ("SLUICE_HTTP_LISTEN", "127.0.0.1:2001"),
            ("SLUICE_TOPIC_DEFAULTS_RETENTION", "2h"),
            ("SLUICE_SERVER_WORKER_THREADS", "1"),
        ]);
        let flags = FlagOverrides { listen: Some("127.0.0.1:3000".into()), ..FlagOverrides::default() };
        let config = load(Some(&path), vars, &flags).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:3000", "flag beats file");
        assert_eq!(config.http_listen.to_string(), "127.0.0.1:2001", "env beats file");
        assert_eq!(config.broker.topic_defaults.fsync, FsyncPolicy::Never, "file beats default");
        assert_eq!(config.broker.topic_defaults.retention_ms, Some(2 * 3600 * 1000), "section env var");
        assert_eq!(config.worker_threads, 1, "integer settings from the environment");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("SLUICE_TOPIC_DEFAULTS_FSYNC", "sometimes", "topic_defaults.fsync"),
            ("SLUICE_LISTEN", "nowhere", "server.listen"),
            ("SLUICE_LIMITS_MAX_REQUEST_BYTES", "lots", "limits.max_request_bytes"),
            ("SLUICE_TOPIC_DEFAULTS_RETENTION", "soon", "topic_defaults.retention"),
            ("SLUICE_LOG_FORMAT", "xml", "log.format"),
        ];
        for (var, value, key) in cases {
            let err = load(None, env(&[(var, value)]), &FlagOverrides::default()).unwrap_err().to_string();
            assert!(err.contains(key), "{var}={value}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[server]\nlistne = \"x\"\n").unwrap();
        let err = load(Some(&path), env(&[]), &FlagOverrides::default()).unwrap_err().to_string();
        assert!(err.contains("listne"), "unknown keys are named: {err}");
    }

    #[test]
    fn environment_mistakes_are_named() {
        let err = load(None, env(&[("SLUICE_SERVER_WORKER_THREADS", "abc")]), &FlagOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.worker_threads") && err.contains("SLUICE_SERVER_WORKER_THREADS"), "{err}");
        let err = load(None, env(&[("SLUICE_GROUPS_SKIP_DAMAGED", "maybe")]), &FlagOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("groups.skip_damaged"), "{err}");
        let err = load(None, env(&[("SLUICE_TOPIC_DEFAULT_FSYNC", "never")]), &FlagOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("SLUICE_TOPIC_DEFAULT_FSYNC"), "a misspelt variable is named: {err}");
        let vars = env(&[("SLUICE_SERVER", "127.0.0.1:1"), ("SLUICE_GROUPS_SKIP_DAMAGED", "true")]);
        let config = load(None, vars, &FlagOverrides::default()).unwrap();
        assert!(config.broker.groups.skip_damaged, "booleans from the environment; the CLI's variable is no error");
        let err = load(None, env(&[("SLUICE_LIMITS_IDEMPOTENCE_WINDOW", "8")]), &FlagOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.idempotence_window") && err.contains("32"), "{err}");
    }

    #[test]
    fn the_documented_config_file_holds_exactly_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/sluice.toml");
        let documented = load(Some(&path), env(&[]), &FlagOverrides::default()).unwrap();
        assert_eq!(documented.effective, ConfigFile::default());
        let dev = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/dev.toml");
        load(Some(&dev), env(&[]), &FlagOverrides::default()).unwrap();
    }

    #[test]
    fn a_reachable_broker_without_authentication_does_not_start_unless_that_is_asked_for() {
        let open = env(&[("SLUICE_LISTEN", "0.0.0.0:7140")]);
        let err = load(None, open, &FlagOverrides::default()).unwrap_err().to_string();
        assert!(err.contains("auth.enabled") && err.contains("not a loopback address"), "{err}");
        let asked = env(&[("SLUICE_LISTEN", "0.0.0.0:7140"), ("SLUICE_AUTH_ALLOW_ANONYMOUS_REMOTE", "true")]);
        assert!(load(None, asked, &FlagOverrides::default()).is_ok());
        let secured = env(&[("SLUICE_LISTEN", "0.0.0.0:7140"), ("SLUICE_AUTH_ENABLED", "true")]);
        assert!(load(None, secured, &FlagOverrides::default()).unwrap().auth.enabled);
        assert!(load(None, env(&[]), &FlagOverrides::default()).is_ok(), "the loopback quick start needs no setup");
    }

    #[test]
    fn units_parse_like_people_write_them() {
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse_fsync("interval:100ms").unwrap(), FsyncPolicy::Interval(Duration::from_millis(100)));
    }
}

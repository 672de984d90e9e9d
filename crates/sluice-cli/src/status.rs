//! `sluice status`.

use serde_json::json;
use sluice_client::Client;

use crate::error::CliError;
use crate::output::Printer;
use crate::units;

pub async fn run(client: &Client, printer: &Printer) -> Result<(), CliError> {
    let info = client.broker_info().await?;
    let health = client.health().await?.as_str_name().trim_start_matches("SERVING_STATUS_").to_owned();
    if printer.json_mode() {
        return printer.json(&json!({
            "server": client.server(),
            "version": info.version,
            "uptime_seconds": info.uptime_seconds,
            "listen_address": info.listen_address,
            "http_address": info.http_address,
            "data_dir": info.data_dir,
            "data_bytes": info.data_bytes,
            "topics": info.topics,
            "health": health,
            "tls": info.tls,
            "client_certificates_required": info.client_certificates_required,
            "authentication": info.authentication,
        }));
    }
    printer.pairs(&[
        ("server", client.server().to_owned()),
        ("version", info.version),
        ("uptime", units::format_age(i64::try_from(info.uptime_seconds).unwrap_or(i64::MAX).saturating_mul(1000))),
        ("grpc", info.listen_address),
        ("http", info.http_address),
        ("data dir", info.data_dir),
        ("data size", units::format_size(info.data_bytes)),
        ("topics", info.topics.to_string()),
        ("health", health),
        (
            "tls",
            if info.tls {
                if info.client_certificates_required { "on, client certificates required" } else { "on" }
            } else {
                "off"
            }
            .into(),
        ),
        ("auth", if info.authentication { "on (tokens or client certificates)" } else { "off" }.into()),
    ])
}

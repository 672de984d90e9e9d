//! The Sluice broker daemon: gRPC services, configuration, metrics and health, over
//! `sluice-core`.
//!
//! # What it is not
//! No broker logic lives here: a handler decodes, calls the [`sluice_core::Broker`] once, and
//! encodes. Errors become gRPC statuses in one place, [`status`].
//!
//! # Layout
//! - [`config`]: defaults < file < `SLUICE_*` env < flags; validation naming the bad key.
//! - [`server`]: listeners, service wiring, TCP_NODELAY, ordered shutdown ([`inflight`]).
//! - [`access`]: bearer-token authentication and the authorization check of every RPC.
//! - [`grpc`]: the `sluice.v1` services (admin, producer, consumer).
//! - [`convert`]: protocol <-> core types; [`status`]: core errors -> gRPC statuses.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`; [`metrics`]: what `/metrics` shows.
//! - [`health_check`]: `sluice-server health`, the container HEALTHCHECK.
//! - [`offline`]: `verify` and `recover-topic-meta`, on a data directory not being served.
//! - [`telemetry`]: log setup; [`tls`]: rustls on both ports, rotating certificates, mTLS.
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![warn(clippy::expect_used)]

pub mod access;
pub mod config;
pub mod convert;
pub mod convert_dead_letter;
pub mod convert_group;
mod group_metrics;
pub mod grpc;
pub mod health_check;
pub mod http;
pub mod inflight;
pub mod metrics;
pub mod offline;
pub mod quota;
pub mod server;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod wire_records;

pub use config::ServerConfig;
pub use server::{Server, ServerError};

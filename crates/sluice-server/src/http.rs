//! HTTP endpoints on the metrics address: `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use sluice_core::Broker;

use crate::metrics::Metrics;

#[derive(Clone)]
struct AppState {
    broker: Broker,
    metrics: Arc<Metrics>,
    /// Set when `/metrics` requires a token (with describe on the cluster).
    metrics_access: Option<crate::access::Access>,
}

async fn render_metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    if let Some(access) = &state.metrics_access {
        let header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let allowed = access.authenticate_header(header).and_then(|caller| {
            access.check(&caller, sluice_core::auth::Operation::Describe, sluice_core::auth::ResourceKind::Cluster, "")
        });
        match allowed {
            Ok(()) => {}
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                return (StatusCode::UNAUTHORIZED, format!("{}\n", status.message())).into_response();
            }
            Err(status) => return (StatusCode::FORBIDDEN, format!("{}\n", status.message())).into_response(),
        }
    }
    match state.metrics.render() {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Alive: the process serves HTTP.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: not shutting down, free space above the reserve, and every partition accepts
/// writes (503 otherwise). Partitions
/// with unreadable offsets are listed but leave the broker ready: every other offset is
/// served, and the damage stays listed until retention removes it, long after an operator has
/// dealt with it.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.broker.shutdown_token().is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".to_owned());
    }
    let mut read_only = Vec::new();
    let mut damaged = Vec::new();
    for topic in state.broker.topics() {
        for partition in topic.partitions().iter() {
            let name = format!("{}/{}", topic.name(), partition.id());
            if partition.poisoned().is_some() {
                read_only.push(name.clone());
            }
            damaged.extend(partition.damage().iter().map(|d| format!("{name} {d}")));
        }
    }
    let damage_lines: String = damaged.iter().map(|d| format!("data loss: {d}\n")).collect();
    let space = state.broker.free_space();
    if space.is_low() {
        let text = format!(
            "disk full: {} bytes free, {} kept in reserve; writes are refused until space is freed\n{damage_lines}",
            space.available(),
            space.reserve()
        );
        return (StatusCode::SERVICE_UNAVAILABLE, text);
    }
    if read_only.is_empty() {
        let head = if damaged.is_empty() { "ready\n" } else { "ready (degraded)\n" };
        (StatusCode::OK, format!("{head}{damage_lines}"))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("read-only partitions: {}\n{damage_lines}", read_only.join(", ")))
    }
}

/// The HTTP router; `metrics_access`, when set, guards `/metrics` (health stays open).
pub fn router(broker: Broker, metrics: Arc<Metrics>, metrics_access: Option<crate::access::Access>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { broker, metrics, metrics_access })
}

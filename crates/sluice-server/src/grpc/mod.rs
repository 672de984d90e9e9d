//! Thin gRPC services: decode the request, make one broker call, encode the response.

pub mod admin;
pub mod consumer;
pub mod group;
pub mod producer;
pub mod security;
pub mod subscribe_body;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tonic::{Response, Status};

use crate::inflight::Inflight;
use crate::metrics::Metrics;

/// Serves one unary call: counts it as in flight (so shutdown waits for it), and records its
/// latency and outcome under `method` in the metrics.
pub(crate) async fn unary<T>(
    metrics: &Arc<Metrics>,
    inflight: &Arc<Inflight>,
    method: &'static str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<Response<T>, Status> {
    let _serving = inflight.enter();
    let started = Instant::now();
    let result = call.await;
    observe(metrics, method, started, &result);
    result.map(Response::new)
}

/// Records a call's latency and outcome in the metrics.
pub(crate) fn observe<T>(
    metrics: &Arc<Metrics>,
    method: &'static str,
    started: Instant,
    result: &Result<T, tonic::Status>,
) {
    let code = match result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    metrics.observe_rpc(method, code, started.elapsed());
}

//! Thin gRPC services: decode the request, make one broker call, encode the response.

pub mod admin;
pub mod consumer;
pub mod producer;

use std::sync::Arc;
use std::time::Instant;

use crate::metrics::Metrics;

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

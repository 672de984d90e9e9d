//! Counting requests in progress, so a graceful shutdown waits for requests (not for idle
//! connections, which clients keep open as long as they like).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Requests and streams being served.
#[derive(Debug, Default)]
pub struct Inflight {
    count: AtomicUsize,
    idle: Notify,
    /// The same count, exported as `sluice_requests_in_flight`.
    gauge: prometheus_client::metrics::gauge::Gauge,
}

/// Held while a request or stream is served.
#[derive(Debug)]
pub struct InflightGuard {
    inflight: Arc<Inflight>,
}

impl Inflight {
    /// A counter that also keeps `gauge` up to date.
    pub fn with_gauge(gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        Inflight { gauge, ..Inflight::default() }
    }

    /// Marks a request as started until the guard drops.
    pub fn enter(self: &Arc<Self>) -> InflightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        self.gauge.inc();
        InflightGuard { inflight: Arc::clone(self) }
    }

    /// Requests in progress.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Completes once no request is in progress.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.inflight.gauge.dec();
        if self.inflight.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inflight.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_the_last_guard() {
        let inflight = Arc::new(Inflight::default());
        let a = inflight.enter();
        let b = inflight.enter();
        let waiter = tokio::spawn({
            let inflight = Arc::clone(&inflight);
            async move { inflight.idle().await }
        });
        drop(a);
        assert!(!waiter.is_finished() || inflight.count() == 0);
        drop(b);
        waiter.await.unwrap();
        assert_eq!(inflight.count(), 0);
    }
}

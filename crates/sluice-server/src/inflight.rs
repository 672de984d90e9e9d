//! Counting requests in progress, so a graceful shutdown waits for requests (not for idle
//! connections, which clients keep open as long as they like).

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

/// Requests and streams being served.
#[derive(Debug, Default)]
pub struct Inflight {
    /// The count itself, also exported as `sluice_requests_in_flight` when made
    /// [`Inflight::with_gauge`].
    count: Gauge,
    idle: Notify,
}

/// Held while a request or stream is served.
#[derive(Debug)]
pub struct InflightGuard {
    inflight: Arc<Inflight>,
}

impl Inflight {
    /// A counter kept in `gauge` (a metric registered elsewhere).
    pub fn with_gauge(gauge: Gauge) -> Self {
        Inflight { count: gauge, idle: Notify::new() }
    }

    /// Marks a request as started until the guard drops.
    pub fn enter(self: &Arc<Self>) -> InflightGuard {
        self.count.inc();
        InflightGuard { inflight: Arc::clone(self) }
    }

    /// Requests in progress.
    pub fn count(&self) -> usize {
        usize::try_from(self.count.get()).unwrap_or(0)
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

impl InflightGuard {
    /// `stream` as a response body that keeps this guard until the body ends or is dropped: a
    /// graceful shutdown then waits until the last message and the final status are handed to
    /// the connection, not only queued for it.
    pub fn hold_during<S>(self, stream: S) -> impl tokio_stream::Stream<Item = S::Item> + Send + 'static
    where
        S: tokio_stream::Stream + Unpin + Send + 'static,
        S::Item: Send,
    {
        futures::stream::unfold((stream, self), |(mut stream, guard)| async move {
            let next = tokio_stream::StreamExt::next(&mut stream).await?;
            Some((next, (stream, guard)))
        })
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        // `dec` returns the count before it.
        if self.inflight.count.dec() == 1 {
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

//! Graceful shutdown: calls are counted while they run, so
//! [`Registry::shutdown`] can wait for them, then cancel the rest.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Inner, Registry};

/// What [`Registry::shutdown`] did with the calls in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Shutdown {
    /// Calls that finished within the grace period.
    pub finished: usize,
    /// Calls cancelled when it ended.
    pub cancelled: usize,
}

impl Registry {
    /// Stops accepting calls, lets the calls in flight finish for up to
    /// `grace`, then cancels the rest (dropping a call frees its instance at
    /// once). Stops any [`Registry::watch`]. Plugins stay registered, so
    /// [`Registry::get`] still works for inspection.
    pub async fn shutdown(&self, grace: Duration) -> Shutdown {
        self.inner.closing.store(true, Ordering::Release);
        let running = *self.inner.in_flight.borrow();
        let mut in_flight = self.inner.in_flight.subscribe();
        let drained = tokio::time::timeout(grace, in_flight.wait_for(|count| *count == 0))
            .await
            .is_ok();
        let cancelled = if drained {
            0
        } else {
            let left = *self.inner.in_flight.borrow();
            self.inner.cancel.send_replace(true);
            // Cancelled calls return at their next poll; wait for them so
            // that everything is freed when this returns.
            let _ = in_flight.wait_for(|count| *count == 0).await;
            left
        };
        // The instances kept between calls are still sound: tell the
        // plugins that asked (their `shutdown`), all at once so that this
        // takes at most SHUTDOWN_TIMEOUT, then let them go.
        let plugins: Vec<_> = super::read(&self.inner.plugins)
            .values()
            .map(|registered| registered.plugin.clone())
            .collect();
        let mut retirements = tokio::task::JoinSet::new();
        for plugin in plugins {
            retirements.spawn(async move { plugin.retire_kept_instances().await });
        }
        retirements.join_all().await;
        Shutdown {
            finished: running.saturating_sub(cancelled),
            cancelled,
        }
    }
}

/// Counts a call in flight for as long as it lives. It owns its handle on
/// the registry, so a streaming call's task can hold it.
pub(super) struct CallGuard {
    inner: Arc<Inner>,
}

impl CallGuard {
    pub(super) fn enter(inner: &Arc<Inner>) -> Option<Self> {
        if inner.closing.load(Ordering::Acquire) {
            return None;
        }
        inner.in_flight.send_modify(|count| *count += 1);
        // Shutdown may have begun between the check and the count.
        if inner.closing.load(Ordering::Acquire) {
            inner.in_flight.send_modify(|count| *count -= 1);
            return None;
        }
        Some(CallGuard {
            inner: inner.clone(),
        })
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.inner.in_flight.send_modify(|count| *count -= 1);
    }
}

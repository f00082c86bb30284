//! Stopping blocking host work when the call it serves is gone.
//!
//! Host functions run blocking work (kv transactions, directory listings) on
//! Tokio's blocking threads, which nothing can stop from outside. The work
//! checks an [`Interrupt`] instead: it fires when the future waiting for the
//! work is dropped (its call was cancelled or timed out: see
//! [`CancelOnDrop`]) or at the call's deadline, so no blocking work outlives
//! its call by more than a step.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Tells a blocking operation to stop: its call was cancelled (the future
/// waiting for it was dropped) or reached its deadline. Operations check it
/// between rows (of a kv batch, of a directory listing) and before waiting
/// again for a lock, and give up, undoing what they started.
#[derive(Clone, Debug)]
pub(crate) struct Interrupt {
    cancelled: Arc<AtomicBool>,
    deadline: Option<Instant>,
}

impl Interrupt {
    /// An interrupt that comes when [`Interrupt::cancel`] is called or at
    /// `deadline`.
    pub(crate) fn at(deadline: Instant) -> Self {
        Interrupt {
            cancelled: Arc::new(AtomicBool::new(false)),
            deadline: Some(deadline),
        }
    }

    /// An interrupt that never comes, for operators' tools.
    pub(crate) fn never() -> Self {
        Interrupt {
            cancelled: Arc::new(AtomicBool::new(false)),
            deadline: None,
        }
    }

    /// Asks the operation to stop.
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether the operation should stop.
    pub(crate) fn is_due(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
            || self
                .deadline
                .is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// `Err(Interrupted)` when the operation should stop.
    pub(crate) fn check(&self) -> Result<(), Interrupted> {
        if self.is_due() {
            return Err(Interrupted);
        }
        Ok(())
    }
}

/// What [`Interrupt::check`] returns once the interrupt has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Interrupted;

/// Cancels its interrupt when dropped: when the future waiting for a
/// blocking operation goes away, the operation has no one to answer.
pub(crate) struct CancelOnDrop(pub(crate) Interrupt);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

//! The one thread that advances the engine's epoch, so running guests can be
//! interrupted at their deadline and made to yield to other calls.
//!
//! It ticks only while some call is in flight and sleeps otherwise, so an idle
//! host costs no wake-ups.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::Engine;

/// Owns the ticking thread; dropping it stops and joins the thread.
pub(crate) struct EpochTicker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<TickerState>,
    wake: Condvar,
}

#[derive(Default)]
struct TickerState {
    calls_in_flight: usize,
    stopping: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, TickerState> {
        // The state is two plain fields; a panic elsewhere cannot corrupt it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine, tick: Duration) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let thread = std::thread::Builder::new()
            .name("warden-epoch".into())
            .spawn({
                let shared = shared.clone();
                move || run(&engine, &shared, tick)
            })?;
        Ok(EpochTicker {
            shared,
            thread: Some(thread),
        })
    }

    /// Keeps the epoch advancing until the returned guard is dropped.
    pub(crate) fn keep_ticking(&self) -> TickGuard {
        let mut state = self.shared.lock();
        state.calls_in_flight += 1;
        if state.calls_in_flight == 1 {
            self.shared.wake.notify_one();
        }
        TickGuard {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // The thread only sleeps and increments an atomic; it cannot panic.
            let _ = thread.join();
        }
    }
}

fn run(engine: &Engine, shared: &Shared, tick: Duration) {
    loop {
        {
            let mut state = shared.lock();
            while state.calls_in_flight == 0 && !state.stopping {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.stopping {
                return;
            }
        }
        std::thread::sleep(tick);
        engine.increment_epoch();
    }
}

/// Marks one call in flight; see [`EpochTicker::keep_ticking`].
pub(crate) struct TickGuard {
    shared: Arc<Shared>,
}

impl Drop for TickGuard {
    fn drop(&mut self) {
        self.shared.lock().calls_in_flight -= 1;
    }
}

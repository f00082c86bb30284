//! The one thread that advances the engine's epoch, so running guests can be
//! interrupted at their deadline and made to yield to other calls.
//!
//! It ticks while calls are in flight, keeps ticking for a short grace period
//! after the last one ends (so back-to-back calls never pay for waking it),
//! and then sleeps until the next call, so an idle host costs no wake-ups.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::Engine;

/// Ticks without a call in flight before the thread goes to sleep.
const IDLE_TICKS_BEFORE_SLEEPING: u32 = 100;

/// Owns the ticking thread; dropping it stops and joins the thread.
pub(crate) struct EpochTicker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    calls_in_flight: AtomicUsize,
    sleeping: AtomicBool,
    stopping: AtomicBool,
    /// Held while the thread decides to sleep and while a caller wakes it,
    /// so a wake-up can never fall between the two.
    lock: Mutex<()>,
    wake: Condvar,
}

impl Shared {
    fn wake_up(&self) {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.wake.notify_one();
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
        self.shared.calls_in_flight.fetch_add(1, Ordering::SeqCst);
        if self.shared.sleeping.load(Ordering::SeqCst) {
            self.shared.wake_up();
        }
        TickGuard {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.wake_up();
        if let Some(thread) = self.thread.take() {
            // The thread only sleeps and increments an atomic; it cannot panic.
            let _ = thread.join();
        }
    }
}

fn run(engine: &Engine, shared: &Shared, tick: Duration) {
    let mut idle_ticks = 0;
    while !shared.stopping.load(Ordering::SeqCst) {
        if shared.calls_in_flight.load(Ordering::SeqCst) > 0 {
            idle_ticks = 0;
        } else {
            idle_ticks += 1;
        }
        if idle_ticks > IDLE_TICKS_BEFORE_SLEEPING {
            sleep_until_needed(shared);
            idle_ticks = 0;
            continue;
        }
        std::thread::sleep(tick);
        engine.increment_epoch();
    }
}

/// Sleeps until a call starts or the ticker stops. `sleeping` is set under
/// the lock before `calls_in_flight` is read again, and callers increment
/// `calls_in_flight` before reading `sleeping`: at least one side sees the
/// other, so no call can start unnoticed.
fn sleep_until_needed(shared: &Shared) {
    let mut guard = shared.lock.lock().unwrap_or_else(PoisonError::into_inner);
    shared.sleeping.store(true, Ordering::SeqCst);
    while shared.calls_in_flight.load(Ordering::SeqCst) == 0
        && !shared.stopping.load(Ordering::SeqCst)
    {
        guard = shared
            .wake
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner);
    }
    shared.sleeping.store(false, Ordering::SeqCst);
}

/// Marks one call in flight; see [`EpochTicker::keep_ticking`].
pub(crate) struct TickGuard {
    shared: Arc<Shared>,
}

impl Drop for TickGuard {
    fn drop(&mut self) {
        self.shared.calls_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    use wasmtime::{Config, Instance, Module, Store, Trap};

    fn wait_for(condition: impl Fn() -> bool) {
        let started = Instant::now();
        while !condition() {
            assert!(started.elapsed() < Duration::from_secs(5), "timed out");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Reads the engine's epoch the only way wasmtime allows: a store whose
    /// deadline is one tick ahead, and a function whose entry checks it.
    struct EpochProbe {
        store: Store<()>,
        check: wasmtime::TypedFunc<(), ()>,
    }

    impl EpochProbe {
        fn new(engine: &Engine) -> Self {
            let wasm = wat::parse_str(r#"(module (func (export "check")))"#).unwrap();
            let module = Module::new(engine, wasm).unwrap();
            let mut store = Store::new(engine, ());
            let instance = Instance::new(&mut store, &module, &[]).unwrap();
            let check = instance.get_typed_func(&mut store, "check").unwrap();
            EpochProbe { store, check }
        }

        /// Starts counting from the epoch as it is now.
        fn arm(&mut self) {
            self.store.set_epoch_deadline(1);
        }

        /// Whether the epoch advanced since [`EpochProbe::arm`].
        fn advanced(&mut self) -> bool {
            match self.check.call(&mut self.store, ()) {
                Ok(()) => false,
                Err(err) => {
                    assert_eq!(err.downcast_ref::<Trap>(), Some(&Trap::Interrupt));
                    true
                }
            }
        }
    }

    #[test]
    fn ticks_while_called_then_sleeps_and_wakes_again() {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).unwrap();
        let mut probe = EpochProbe::new(&engine);
        let ticker = EpochTicker::start(engine.clone(), Duration::from_millis(1)).unwrap();
        for _ in 0..2 {
            wait_for(|| ticker.shared.sleeping.load(Ordering::SeqCst));
            // Asleep, it leaves the epoch alone: waiting a hundred ticks'
            // worth sees no change.
            probe.arm();
            std::thread::sleep(Duration::from_millis(100));
            assert!(!probe.advanced(), "the epoch advanced while asleep");

            // A call wakes it, and the epoch advances, tick after tick.
            let guard = ticker.keep_ticking();
            for _ in 0..3 {
                probe.arm();
                let started = Instant::now();
                while !probe.advanced() {
                    assert!(started.elapsed() < Duration::from_secs(5), "no tick");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            drop(guard);
        }
        drop(ticker);
    }
}

//! The `clocks` capability: `wasi:clocks`, real by default.
//!
//! In deterministic mode ([`Grants::deterministic`](crate::Grants::deterministic))
//! the wall clock is fixed at [`DETERMINISTIC_WALL_CLOCK`] and the monotonic
//! clock is virtual: it starts at zero, advances [`DETERMINISTIC_TICK`] each
//! time it is read, and moves only then and when the guest waits on a timer.
//! A plugin that measures, stamps or waits for time then produces the same
//! output on every run:
//!
//! - a timer (`subscribe-duration`, `subscribe-instant`) is due when the
//!   virtual clock reaches its instant; asking whether it is ready counts as
//!   one reading of the clock;
//! - waiting on timers (`block`, `poll`) never waits in real time: the clock
//!   jumps to the earliest instant waited for, and the timers due then are
//!   ready. A timer in the same `poll` as real I/O (a socket, an HTTP
//!   response) is therefore due at once unless the I/O is already ready;
//! - WASI 0.3's waits (`wait-for`, `wait-until`) are timers of the same
//!   virtual time: they never wait in real time, and among concurrent waits
//!   the earliest instant moves the clock first, and one beside real I/O
//!   (a stream from the caller) is due at once unless the I/O is ready
//!   first. A 0.2 `poll` or `block`, which holds the instance while it
//!   waits, orders its timers among themselves only, since no 0.3 wait can
//!   end meanwhile;
//! - a wait for ever (an instant or duration that reaches the end of the
//!   clock's range) is never due: the call's timeout ends it;
//! - file timestamps (`stat`, `stat-at`) read as the fixed wall clock (see
//!   the `fs` capability).
//!
//! What stays real: the call's timeout (wall time, so a guest that waits
//! forever is still stopped), the timestamps the host's file system writes,
//! and whatever arrives over a granted network.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use wasmtime::component::{Accessor, HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksCtxView, WasiClocksView};
use wasmtime_wasi::p2::bindings::clocks;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::{self, Instant};
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};
use wasmtime_wasi::p3::bindings::clocks as clocks_0_3;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

use super::{Capability, InstanceSetup, Risk};
use crate::error::Error;
use crate::grants::Sandbox;
use crate::state::HostState;

/// The wall-clock time a deterministic run sees: 2000-01-01T00:00:00Z.
pub const DETERMINISTIC_WALL_CLOCK: Duration = Duration::from_secs(946_684_800);
/// How far the deterministic monotonic clock advances on each reading.
pub const DETERMINISTIC_TICK: Duration = Duration::from_millis(1);

/// The `clocks` capability.
pub(crate) struct Clocks;

impl Capability for Clocks {
    const NAME: &'static str = "clocks";
    const INTERFACES: &'static [&'static str] = &[
        "wasi:clocks/wall-clock",
        "wasi:clocks/monotonic-clock",
        "wasi:clocks/system-clock",
    ];
    const HOW_TO_GRANT: &'static str = "always granted";
    type Shared = ();
    type State = ClockState;

    fn risk(_: &Sandbox) -> Risk {
        Risk::Low
    }

    fn granted(_: &Sandbox) -> bool {
        true
    }

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        let getter = <HostState as WasiClocksView>::clocks;
        clocks::wall_clock::add_to_linker::<_, WasiClocks>(linker, getter)?;
        monotonic_clock::add_to_linker::<_, MonotonicClock>(linker, monotonic_clock)
    }

    /// The instance's clocks are the ones [`Clocks::instantiate`] put in
    /// its WASI context (fixed and stepping ones when deterministic), so
    /// WASI 0.3's clock functions read the same time as 0.2's, and its waits
    /// follow the same virtual time.
    fn add_wasi_0_3_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        let getter = <HostState as WasiClocksView>::clocks;
        clocks_0_3::types::add_to_linker::<_, WasiClocks>(linker, getter)?;
        clocks_0_3::system_clock::add_to_linker::<_, WasiClocks>(linker, getter)?;
        clocks_0_3::monotonic_clock::add_to_linker::<_, MonotonicClock>(linker, monotonic_clock)
    }

    fn prepare(_: &str, _: &Sandbox) -> Result<(), Error> {
        Ok(())
    }

    /// Sets up the instance's clocks, and keeps what the rest of the host
    /// needs to know about them.
    fn instantiate((): &(), setup: &mut InstanceSetup<'_>) -> ClockState {
        if !setup.sandbox.grants.deterministic {
            return ClockState::default();
        }
        let time = Arc::new(VirtualTime::default());
        setup
            .wasi
            .wall_clock(FixedWallClock)
            .monotonic_clock(SteppingMonotonicClock { time: time.clone() });
        ClockState { time: Some(time) }
    }
}

/// An instance's clocks, as the rest of the host sees them.
#[derive(Default)]
pub(crate) struct ClockState {
    /// The virtual monotonic time of a deterministic instance.
    time: Option<Arc<VirtualTime>>,
}

impl ClockState {
    /// The time file timestamps read as: the fixed wall clock in
    /// deterministic mode, `None` (the file's own) otherwise.
    pub(crate) fn file_time(&self) -> Option<Duration> {
        self.time.as_ref().map(|_| DETERMINISTIC_WALL_CLOCK)
    }
}

struct FixedWallClock;

impl HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        DETERMINISTIC_WALL_CLOCK
    }
}

/// A deterministic instance's monotonic time, in nanoseconds, shared by its
/// clock readings and its timers.
#[derive(Debug, Default)]
struct VirtualTime {
    now: AtomicU64,
    /// The instants WASI 0.2 timers are being waited for (`poll`,
    /// `block`), with how many wait for each: waiting jumps the clock to the
    /// earliest. Such a call holds the instance until it returns, so these
    /// are the timers of one call.
    polled: Mutex<BTreeMap<u64, usize>>,
    /// The same for WASI 0.3 waits, which run beside the guest's other
    /// tasks. Kept apart from the polls: while a poll blocks the instance,
    /// no 0.3 wait can be polled, so a poll that waited for one would wait
    /// for ever.
    awaited: Mutex<BTreeMap<u64, usize>>,
}

/// Where a timer waiting for ever is due (its instant saturated there): the
/// virtual clock never gets there, so such a wait ends only with the call,
/// as it would in real time, and never moves the clock.
const NEVER: u64 = u64::MAX;

/// [`DETERMINISTIC_TICK`] in the monotonic clock's unit, nanoseconds.
const TICK_NANOS: u64 = DETERMINISTIC_TICK.as_nanos() as u64;

impl VirtualTime {
    /// One reading: the time now, after which the clock steps one tick.
    fn read(&self) -> u64 {
        let step = |now: u64| Some(now.saturating_add(TICK_NANOS));
        match self
            .now
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, step)
        {
            Ok(now) | Err(now) => now,
        }
    }

    /// The time now, without reading the clock.
    fn peek(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }

    /// Moves the clock forward to `instant`, never back.
    fn advance_to(&self, instant: u64) {
        self.now.fetch_max(instant, Ordering::Relaxed);
    }

    /// The instants being waited for by timers of `kind`.
    fn waiting(&self, kind: TimerKind) -> MutexGuard<'_, BTreeMap<u64, usize>> {
        let waiting = match kind {
            TimerKind::Polled => &self.polled,
            TimerKind::Awaited => &self.awaited,
        };
        waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct SteppingMonotonicClock {
    time: Arc<VirtualTime>,
}

impl HostMonotonicClock for SteppingMonotonicClock {
    fn resolution(&self) -> u64 {
        TICK_NANOS
    }

    fn now(&self) -> u64 {
        self.time.read()
    }
}

/// A timer of a deterministic instance: due when its virtual time reaches
/// `due`.
struct VirtualTimer {
    time: Arc<VirtualTime>,
    due: u64,
    kind: TimerKind,
}

/// Which waits a timer is ordered among.
#[derive(Clone, Copy)]
enum TimerKind {
    /// A WASI 0.2 pollable, waited for by `poll` or `block`.
    Polled,
    /// A WASI 0.3 `wait-for` or `wait-until`.
    Awaited,
}

impl VirtualTimer {
    /// Ends once the timer is due, moving the clock there if no timer of
    /// its kind is due earlier.
    async fn due(&self) {
        if self.time.read() >= self.due {
            return;
        }
        if self.due == NEVER {
            return std::future::pending().await;
        }
        let _waiting = Waiting::register(&self.time, self.due, self.kind);
        loop {
            // Let every other timer waited for at once register first; a
            // `ready` check (polled once) sees the timer as not yet due.
            tokio::task::yield_now().await;
            if self.time.peek() >= self.due {
                return;
            }
            let earliest = self.time.waiting(self.kind).keys().next().copied();
            if earliest == Some(self.due) {
                self.time.advance_to(self.due);
                return;
            }
        }
    }
}

#[async_trait::async_trait]
impl Pollable for VirtualTimer {
    async fn ready(&mut self) {
        self.due().await;
    }
}

/// A timer's place among those being waited for, given up when the wait
/// ends or is dropped.
struct Waiting<'a> {
    time: &'a VirtualTime,
    due: u64,
    kind: TimerKind,
}

impl<'a> Waiting<'a> {
    fn register(time: &'a VirtualTime, due: u64, kind: TimerKind) -> Self {
        *time.waiting(kind).entry(due).or_default() += 1;
        Waiting { time, due, kind }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut waiting = self.time.waiting(self.kind);
        if let Some(count) = waiting.get_mut(&self.due) {
            *count -= 1;
            if *count == 0 {
                waiting.remove(&self.due);
            }
        }
    }
}

/// The monotonic clock's host functions, of WASI 0.2 and 0.3:
/// wasmtime-wasi's, except that a deterministic instance's timers and waits
/// follow its virtual time.
struct MonotonicClock;

impl HasData for MonotonicClock {
    type Data<'a> = MonotonicClockView<'a>;
}

struct MonotonicClockView<'a> {
    wasi: WasiClocksCtxView<'a>,
    time: Option<&'a Arc<VirtualTime>>,
}

fn monotonic_clock(state: &mut HostState) -> MonotonicClockView<'_> {
    MonotonicClockView {
        wasi: WasiClocksCtxView {
            ctx: state.caps.wasi.ctx().clocks(),
            table: &mut state.table,
        },
        time: state.caps.clocks.time.as_ref(),
    }
}

fn subscribe_virtual(
    table: &mut ResourceTable,
    time: &Arc<VirtualTime>,
    due: u64,
) -> wasmtime::Result<Resource<DynPollable>> {
    let timer = table.push(VirtualTimer {
        time: time.clone(),
        due,
        kind: TimerKind::Polled,
    })?;
    subscribe(table, timer)
}

impl monotonic_clock::Host for MonotonicClockView<'_> {
    fn now(&mut self) -> wasmtime::Result<Instant> {
        self.wasi.now()
    }

    fn resolution(&mut self) -> wasmtime::Result<Instant> {
        self.wasi.resolution()
    }

    fn subscribe_instant(&mut self, when: Instant) -> wasmtime::Result<Resource<DynPollable>> {
        match self.time {
            Some(time) => subscribe_virtual(self.wasi.table, time, when),
            None => self.wasi.subscribe_instant(when),
        }
    }

    fn subscribe_duration(
        &mut self,
        duration: monotonic_clock::Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        match self.time {
            Some(time) => {
                let due = time.peek().saturating_add(duration);
                subscribe_virtual(self.wasi.table, time, due)
            }
            None => self.wasi.subscribe_duration(duration),
        }
    }
}

impl clocks_0_3::monotonic_clock::Host for MonotonicClockView<'_> {
    fn now(&mut self) -> wasmtime::Result<clocks_0_3::monotonic_clock::Mark> {
        clocks_0_3::monotonic_clock::Host::now(&mut self.wasi)
    }

    fn get_resolution(&mut self) -> wasmtime::Result<clocks_0_3::types::Duration> {
        clocks_0_3::monotonic_clock::Host::get_resolution(&mut self.wasi)
    }
}

impl<U> clocks_0_3::monotonic_clock::HostWithStore<U> for MonotonicClock {
    async fn wait_until(
        store: &Accessor<U, Self>,
        when: clocks_0_3::monotonic_clock::Mark,
    ) -> wasmtime::Result<()> {
        let wait = store.with(|mut access| -> wasmtime::Result<Wait> {
            let mut view = access.get();
            Ok(match view.time {
                Some(time) => Wait::Virtual(VirtualTimer {
                    time: time.clone(),
                    due: when,
                    kind: TimerKind::Awaited,
                }),
                None => {
                    let now = clocks_0_3::monotonic_clock::Host::now(&mut view.wasi)?;
                    Wait::Real(Duration::from_nanos(when.saturating_sub(now)))
                }
            })
        })?;
        wait.end().await;
        Ok(())
    }

    async fn wait_for(
        store: &Accessor<U, Self>,
        duration: clocks_0_3::types::Duration,
    ) -> wasmtime::Result<()> {
        let wait = store.with(|mut access| match access.get().time {
            Some(time) => Wait::Virtual(VirtualTimer {
                time: time.clone(),
                due: time.peek().saturating_add(duration),
                kind: TimerKind::Awaited,
            }),
            None => Wait::Real(Duration::from_nanos(duration)),
        });
        wait.end().await;
        Ok(())
    }
}

/// A WASI 0.3 wait: on the virtual time of a deterministic instance, or for
/// this long in real time.
enum Wait {
    Virtual(VirtualTimer),
    Real(Duration),
}

impl Wait {
    async fn end(self) {
        match self {
            Wait::Virtual(timer) => timer.due().await,
            // As wasmtime-wasi does: no wait at all is no sleep, which
            // would round up to the timer wheel's next millisecond.
            Wait::Real(Duration::ZERO) => {}
            Wait::Real(duration) => tokio::time::sleep(duration).await,
        }
    }
}

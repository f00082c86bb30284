//! The `clocks` capability: `wasi:clocks`, real by default.
//!
//! In deterministic mode ([`Grants::deterministic`](crate::Grants::deterministic))
//! the wall clock is fixed at [`DETERMINISTIC_WALL_CLOCK`] and the monotonic
//! clock starts at zero and advances [`DETERMINISTIC_TICK`] each time it is
//! read, so a plugin that measures or stamps time produces the same output on
//! every run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::p2::bindings::clocks;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

use super::{Capability, Risk};
use crate::grants::Grants;
use crate::state::HostState;

/// The wall-clock time a deterministic run sees: 2000-01-01T00:00:00Z.
pub const DETERMINISTIC_WALL_CLOCK: Duration = Duration::from_secs(946_684_800);
/// How far the deterministic monotonic clock advances on each reading.
pub const DETERMINISTIC_TICK: Duration = Duration::from_millis(1);

pub(crate) const CAPABILITY: Capability = Capability {
    name: "clocks",
    interfaces: &["wasi:clocks/wall-clock", "wasi:clocks/monotonic-clock"],
    risk: |_| Risk::Low,
    granted: |_| true,
    how_to_grant: "always granted",
    add_to_linker,
};

fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    clocks::wall_clock::add_to_linker::<_, WasiClocks>(linker, HostState::clocks)?;
    clocks::monotonic_clock::add_to_linker::<_, WasiClocks>(linker, HostState::clocks)
}

pub(crate) fn configure(wasi: &mut WasiCtxBuilder, grants: &Grants) {
    if grants.deterministic {
        wasi.wall_clock(FixedWallClock)
            .monotonic_clock(SteppingMonotonicClock::default());
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

#[derive(Default)]
struct SteppingMonotonicClock {
    readings: AtomicU64,
}

impl HostMonotonicClock for SteppingMonotonicClock {
    fn resolution(&self) -> u64 {
        DETERMINISTIC_TICK.as_nanos() as u64
    }

    fn now(&self) -> u64 {
        let reading = self.readings.fetch_add(1, Ordering::Relaxed);
        reading.saturating_mul(DETERMINISTIC_TICK.as_nanos() as u64)
    }
}

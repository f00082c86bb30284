//! The `random` capability: `wasi:random`, from the operating system's
//! generator by default.
//!
//! In deterministic mode every generator is seeded with
//! [`DETERMINISTIC_SEED`], so the same calls get the same numbers on every
//! run. A single request is capped at [`MAX_RANDOM_BYTES`].

use rand::SeedableRng;
use rand::rngs::StdRng;
use wasmtime::component::Linker;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::bindings::random;
use wasmtime_wasi::random::{WasiRandom, WasiRandomView};

use super::{Capability, Risk};
use crate::grants::Grants;
use crate::state::HostState;

/// The seed of every generator in a deterministic run.
pub const DETERMINISTIC_SEED: u64 = 0x5741_5244_454e; // "WARDEN"

/// Largest buffer one `wasi:random` call may ask the host to fill. Guests
/// that need more call again; a single call cannot make the host allocate
/// wasmtime's default of 64 MiB.
pub const MAX_RANDOM_BYTES: u64 = 1 << 20;

pub(crate) const CAPABILITY: Capability = Capability {
    name: "random",
    interfaces: &[
        "wasi:random/random",
        "wasi:random/insecure",
        "wasi:random/insecure-seed",
    ],
    risk: |_| Risk::Low,
    granted: |_| true,
    how_to_grant: "always granted",
    add_to_linker,
};

fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    random::random::add_to_linker::<_, WasiRandom>(linker, HostState::random)?;
    random::insecure::add_to_linker::<_, WasiRandom>(linker, HostState::random)?;
    random::insecure_seed::add_to_linker::<_, WasiRandom>(linker, HostState::random)
}

pub(crate) fn configure(wasi: &mut WasiCtxBuilder, grants: &Grants) {
    wasi.max_random_size(MAX_RANDOM_BYTES);
    if grants.deterministic {
        wasi.secure_random(StdRng::seed_from_u64(DETERMINISTIC_SEED))
            .insecure_random(StdRng::seed_from_u64(DETERMINISTIC_SEED.wrapping_add(1)))
            .insecure_random_seed(u128::from(DETERMINISTIC_SEED));
    }
}

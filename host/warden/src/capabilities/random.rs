//! The `random` capability: `wasi:random`, from the operating system's
//! generator by default.
//!
//! In deterministic mode every generator is seeded with
//! [`DETERMINISTIC_SEED`], so the same calls get the same numbers on every
//! run. A single request is capped at [`MAX_RANDOM_BYTES`].

use rand::SeedableRng;
use rand::rngs::StdRng;
use wasmtime::component::Linker;
use wasmtime_wasi::p2::bindings::random;
use wasmtime_wasi::random::{WasiRandom, WasiRandomView};

use super::{Capability, InstanceSetup, Risk};
use crate::error::Error;
use crate::grants::Sandbox;
use crate::state::HostState;

/// The seed of every generator in a deterministic run.
pub const DETERMINISTIC_SEED: u64 = 0x5741_5244_454e; // "WARDEN"

/// Largest buffer one `wasi:random` call may ask the host to fill. Guests
/// that need more call again; a single call cannot make the host allocate
/// wasmtime's default of 64 MiB.
pub const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// The `random` capability.
pub(crate) struct Random;

impl Capability for Random {
    const NAME: &'static str = "random";
    const INTERFACES: &'static [&'static str] = &[
        "wasi:random/random",
        "wasi:random/insecure",
        "wasi:random/insecure-seed",
    ];
    const HOW_TO_GRANT: &'static str = "always granted";
    type Shared = ();
    type State = ();

    fn risk(_: &Sandbox) -> Risk {
        Risk::Low
    }

    fn granted(_: &Sandbox) -> bool {
        true
    }

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        random::random::add_to_linker::<_, WasiRandom>(linker, HostState::random)?;
        random::insecure::add_to_linker::<_, WasiRandom>(linker, HostState::random)?;
        random::insecure_seed::add_to_linker::<_, WasiRandom>(linker, HostState::random)
    }

    fn add_wasi_0_3_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        use wasmtime_wasi::p3::bindings::random;
        random::random::add_to_linker::<_, WasiRandom>(linker, HostState::random)?;
        random::insecure::add_to_linker::<_, WasiRandom>(linker, HostState::random)?;
        random::insecure_seed::add_to_linker::<_, WasiRandom>(linker, HostState::random)
    }

    fn prepare(_: &str, _: &Sandbox) -> Result<(), Error> {
        Ok(())
    }

    fn instantiate((): &(), setup: &mut InstanceSetup<'_>) {
        let wasi = &mut setup.wasi;
        wasi.max_random_size(MAX_RANDOM_BYTES);
        if setup.sandbox.grants.deterministic {
            wasi.secure_random(StdRng::seed_from_u64(DETERMINISTIC_SEED))
                .insecure_random(StdRng::seed_from_u64(DETERMINISTIC_SEED.wrapping_add(1)))
                .insecure_random_seed(u128::from(DETERMINISTIC_SEED));
        }
    }
}

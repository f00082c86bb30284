//! The capabilities a plugin can import, each in its own module: a module
//! adds its interfaces to the linker and builds its per-instance state.
//!
//! - [`wasi`]: `fs`, `env`, `stdio`, `clocks`, `random`, `sockets`, through
//!   wasmtime-wasi's WASI 0.2 implementation, configured from the grants;
//! - [`stdio`]: the bounded capture behind the guest's stdout and stderr;
//! - [`logging`]: `log`, through `wasi:logging`.

pub(crate) mod logging;
pub(crate) mod stdio;
pub(crate) mod wasi;

use wasmtime::component::Linker;

use crate::state::HostState;

/// Adds every capability's imports to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    logging::add_to_linker(linker)
}

//! The `env` capability: `wasi:cli/environment`. The plugin sees exactly the
//! variables granted ([`Grants::env`](crate::Grants::env), `--env KEY=VALUE`)
//! and the arguments of a program run with `warden exec`; nothing is
//! inherited from the host process.

use wasmtime::component::Linker;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::p2::bindings::cli;

use super::{Capability, Risk};
use crate::grants::Grants;
use crate::state::HostState;

pub(crate) const CAPABILITY: Capability = Capability {
    name: "env",
    interfaces: &["wasi:cli/environment"],
    risk: |_| Risk::High,
    granted: |sandbox| !sandbox.grants.env.is_empty(),
    how_to_grant: "--env KEY=VALUE",
    add_to_linker,
};

fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    cli::environment::add_to_linker::<_, WasiCli>(linker, <HostState as WasiCliView>::cli)
}

pub(crate) fn configure(wasi: &mut WasiCtxBuilder, grants: &Grants) {
    wasi.envs(&grants.env);
}

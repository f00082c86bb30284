//! The `env` capability: `wasi:cli/environment`. The plugin sees exactly the
//! variables granted ([`Grants::env`](crate::Grants::env), `--env KEY=VALUE`)
//! and the arguments of a program run with `warden exec`; nothing is
//! inherited from the host process.

use wasmtime::component::Linker;
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::p2::bindings::cli;

use super::{Capability, InstanceSetup, Risk};
use crate::error::Error;
use crate::grants::Sandbox;
use crate::state::HostState;

/// The `env` capability.
pub(crate) struct Env;

impl Capability for Env {
    const NAME: &'static str = "env";
    const INTERFACES: &'static [&'static str] = &["wasi:cli/environment"];
    const HOW_TO_GRANT: &'static str = "--env KEY=VALUE, or `env` in a manifest's [grants]";
    type Shared = ();
    type State = ();

    /// Nothing is inherited from the host, so an ungranted environment is
    /// empty and low risk: that is what lets Rust's `std`, which imports
    /// `wasi:cli/environment` in every build, pass `--strict`. Granted
    /// variables are host data the operator chose to give: medium.
    fn risk(sandbox: &Sandbox) -> Risk {
        if sandbox.grants.env.is_empty() {
            Risk::Low
        } else {
            Risk::Medium
        }
    }

    fn granted(sandbox: &Sandbox) -> bool {
        !sandbox.grants.env.is_empty()
    }

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        cli::environment::add_to_linker::<_, WasiCli>(linker, <HostState as WasiCliView>::cli)
    }

    fn add_wasi_0_3_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        use wasmtime_wasi::p3::bindings::cli;
        cli::environment::add_to_linker::<_, WasiCli>(linker, <HostState as WasiCliView>::cli)
    }

    fn prepare(_: &str, _: &Sandbox) -> Result<(), Error> {
        Ok(())
    }

    fn instantiate((): &(), setup: &mut InstanceSetup<'_>) {
        setup.wasi.envs(&setup.sandbox.grants.env);
    }
}

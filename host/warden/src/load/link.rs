//! Stage 5: the component's imports resolved against a linker and
//! pre-instantiated, so that each instance costs no more lookups.

use wasmtime::Module;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime_wasi::p2::bindings::CommandPre;

use crate::bindings::PluginPre as PluginBindingsPre;
use crate::error::Error;
use crate::guest::GuestPre;
use crate::plugin::GUEST_INTERFACE;
use crate::state::HostState;

use super::world_check;

/// Links a plugin against Warden's linker, then checks its guest export
/// against Warden's WIT and binds it.
pub(crate) fn plugin(
    linker: &Linker<HostState>,
    component: &Component,
) -> Result<PluginBindingsPre<HostState>, Error> {
    let instance_pre = linker.instantiate_pre(component).map_err(|err| {
        Error::invalid_plugin(format!(
            "the plugin imports something Warden does not provide: {err:#}"
        ))
    })?;
    world_check::guest_types(component, linker.engine())?;
    PluginBindingsPre::new(instance_pre).map_err(|err| {
        Error::invalid_plugin(format!(
            "the `{GUEST_INTERFACE}` export does not match Warden's WIT: {err:#}"
        ))
    })
}

/// Links a component that exports `wasi:cli/run` against Warden's linker.
pub(crate) fn command(
    linker: &Linker<HostState>,
    component: &Component,
) -> Result<CommandPre<HostState>, Error> {
    let instance_pre = linker.instantiate_pre(component).map_err(|err| {
        Error::invalid_plugin(format!(
            "the program imports something Warden does not provide: {err:#}"
        ))
    })?;
    CommandPre::new(instance_pre).map_err(|err| {
        Error::invalid_plugin(format!(
            "the program's `wasi:cli/run` export is not the one Warden runs: {err:#}"
        ))
    })
}

/// Links a plugin of world 0.2 against the concurrent engine's linker, then
/// checks its exports (`guest`, and `streaming` and `lifecycle` when
/// present) against Warden's WIT and binds them.
pub(crate) fn plugin_v0_2(
    linker: &Linker<HostState>,
    component: &Component,
) -> Result<GuestPre, Error> {
    let instance_pre = linker.instantiate_pre(component).map_err(|err| {
        Error::invalid_plugin(format!(
            "the plugin imports something Warden does not provide: {err:#} (world 0.2 plugins \
             get WASI 0.3's cli, clocks and random interfaces, and WASI 0.2's for the rest)"
        ))
    })?;
    GuestPre::v0_2(instance_pre)
}

/// Links a WASI preview 1 module against the preview 1 linker.
pub(crate) fn preview1(
    linker: &wasmtime::Linker<HostState>,
    module: &Module,
) -> Result<wasmtime::InstancePre<HostState>, Error> {
    linker.instantiate_pre(module).map_err(|err| {
        Error::invalid_plugin(format!(
            "the program imports something WASI preview 1 does not provide: {err:#}"
        ))
    })
}

/// Links a component against an application's world.
pub(crate) fn world(
    linker: &Linker<HostState>,
    component: &Component,
) -> Result<InstancePre<HostState>, Error> {
    linker.instantiate_pre(component).map_err(|err| {
        Error::invalid_plugin(format!(
            "the component imports something this world does not provide: {err:#}"
        ))
    })
}

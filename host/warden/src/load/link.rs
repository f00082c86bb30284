//! Stage 5: the component's imports resolved against a linker and
//! pre-instantiated, so that each instance costs no more lookups.

use wasmtime::Module;
use wasmtime::component::types::{ComponentInstance, ComponentItem};
use wasmtime::component::{Component, InstancePre, Linker, ResourceType};
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
///
/// World 0.2 includes WASI 0.3's filesystem and sockets, which Warden does
/// not provide yet (their grants are enforced in the WASI 0.2 versions only),
/// and some toolchains import every interface of the world whether the
/// plugin uses it or not (componentize-py does). Such imports are linked,
/// for this plugin only, to functions that trap naming the 0.2 interface to
/// use: the plugin loads, and nothing reaches the host through them.
pub(crate) fn plugin_v0_2(
    linker: &Linker<HostState>,
    component: &Component,
) -> Result<GuestPre, Error> {
    let engine = linker.engine();
    let unprovided: Vec<(String, ComponentInstance)> = component
        .component_type()
        .imports(engine)
        .filter_map(|(name, item)| match item.ty {
            ComponentItem::ComponentInstance(instance) if is_unprovided_wasi_0_3(name) => {
                Some((name.to_owned(), instance))
            }
            _ => None,
        })
        .collect();
    let mut refusing;
    let linker = if unprovided.is_empty() {
        linker
    } else {
        refusing = linker.clone();
        for (name, instance) in &unprovided {
            refuse_interface(&mut refusing, name, instance).map_err(Error::Internal)?;
        }
        &refusing
    };
    let instance_pre = linker.instantiate_pre(component).map_err(|err| {
        Error::invalid_plugin(format!(
            "the plugin imports something Warden does not provide: {err:#} (world 0.2 plugins \
             get WASI 0.3's cli, clocks and random interfaces, and WASI 0.2's for the rest)"
        ))
    })?;
    GuestPre::v0_2(instance_pre)
}

/// WASI 0.3 interface families Warden does not provide yet.
const UNPROVIDED_WASI_0_3: [&str; 2] = ["wasi:filesystem/", "wasi:sockets/"];

fn is_unprovided_wasi_0_3(name: &str) -> bool {
    UNPROVIDED_WASI_0_3
        .iter()
        .any(|family| name.starts_with(family))
        && name.contains("@0.3.")
}

/// Links every function of the interface `name` to one that traps, saying
/// why, and its resources to types no host function ever makes.
fn refuse_interface(
    linker: &mut Linker<HostState>,
    name: &str,
    instance: &ComponentInstance,
) -> wasmtime::Result<()> {
    let engine = linker.engine().clone();
    let mut interface = linker.instance(name)?;
    for (export, item) in instance.exports(&engine) {
        match item.ty {
            ComponentItem::ComponentFunc(func) => {
                let refusal = format!(
                    "`{name}#{export}` is WASI 0.3, which Warden does not provide yet; \
                     use its WASI 0.2 version"
                );
                if func.async_() {
                    interface.func_new_concurrent(export, move |_, _, _, _| {
                        let refusal = refusal.clone();
                        Box::pin(async move { Err(wasmtime::Error::msg(refusal)) })
                    })?;
                } else {
                    interface.func_new(export, move |_, _, _, _| {
                        Err(wasmtime::Error::msg(refusal.clone()))
                    })?;
                }
            }
            ComponentItem::Resource(_) => {
                interface.resource(export, ResourceType::host::<Unprovided>(), |_, _| Ok(()))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The host type of an unprovided interface's resources: none is ever made.
struct Unprovided;

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

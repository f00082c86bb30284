//! Loading a plugin, a program or a component of an application's world,
//! one stage per file, in the order they run:
//!
//! 1. [`read`]: the component's digest (from the compile cache's digest
//!    index for a file unchanged since it was hashed), and what kind of
//!    binary it is (a component or a core module), from its header.
//! 2. [`verify`]: the trust policy, before anything is compiled or compiled
//!    code looked up in the compile cache.
//! 3. [`compile`]: what one instance takes from the pools, then compile (or
//!    take from the compile cache) and describe the code ([`ComponentInfo`]).
//! 4. [`world_check`]: the component exports what the world it is loaded as
//!    requires (for a preview 1 module, [`preview1::check_command`]).
//! 5. [`link`]: its imports against the linker, pre-instantiated; then the
//!    types of its exports (a plugin's against Warden's WIT), bound.
//! 6. [`admit`]: `strict`, and what the grants name opened, giving the
//!    [`Loaded`] component every call runs against.
//!
//! Before the first stage the sandbox's limits are checked against what the
//! runtime can honour ([`Capacity`](crate::capacity::Capacity)). Each stage
//! gets what it needs (engine, cache, linker, limits) from the functions
//! below, which are the only ones that read the [`Runtime`]; [`admit`] keeps
//! a clone of it for the calls to come.

mod admit;
mod compile;
mod link;
mod read;
mod verify;
mod world_check;

pub(crate) use admit::{Loaded, loaded_accessors};
pub use compile::ComponentInfo;

use std::sync::Arc;

use crate::capabilities;
use crate::error::Error;
use crate::grants::Sandbox;
use crate::guest::{GuestPre, WorldVersion};
use crate::plugin::Plugin;
use crate::preview1;
use crate::program::{Entry, Program};
use crate::runtime::{EngineUnit, Runtime};
use crate::source::Source;
use crate::trust::{self, SignatureCheck, Subject, TrustPolicy};
use crate::world::{World, WorldPlugin};

use compile::Compiled;
use read::BinaryKind;
use verify::Verified;

/// Loads a plugin of Warden's own world.
pub(crate) async fn plugin(
    runtime: &Runtime,
    source: Source,
    sandbox: Sandbox,
) -> Result<Plugin, Error> {
    let (compiled, version) = repairing(source, sandbox, |source, sandbox| {
        plugin_component(runtime, source, sandbox)
    })
    .await?;
    let pre = match version {
        WorldVersion::V0_2 => link::plugin_v0_2(&compiled.engine.linker, &compiled.code)?,
        _ => {
            world_check::plugin(&compiled.code, runtime.engine())?;
            GuestPre::v0_1(link::plugin(runtime.linker(), &compiled.code)?)
        }
    };
    Ok(Plugin::new(admit::admit(compiled, runtime.clone())?, pre))
}

/// The stages up to compiling for a plugin, on the engine of the world
/// version it targets.
async fn plugin_component(
    runtime: &Runtime,
    source: Source,
    sandbox: Sandbox,
) -> Result<(Compiled, WorldVersion), Error> {
    let verified = read_and_verify_component(runtime, source, sandbox)?;
    let (unit, version) = plugin_engine(runtime, &verified)?;
    Ok((compile::component(runtime, verified, &unit).await?, version))
}

/// Which engine a plugin runs on, and the world version that decided it.
///
/// A compiled artifact for the plain engine in the cache answers without
/// reading the component: only 0.1 plugins (and components that are not
/// plugins at all, which the world check then refuses) are compiled for it.
/// Otherwise the component's export names tell, before it is compiled, so
/// that the concurrent engine is created only for a 0.2 plugin.
fn plugin_engine(
    runtime: &Runtime,
    verified: &Verified,
) -> Result<(Arc<EngineUnit>, WorldVersion), Error> {
    let cache = runtime.compile_cache();
    let plain = runtime.plain_engine();
    if cache.is_some_and(|cache| cache.has_entry(&plain.engine, &verified.sha256)) {
        return Ok((plain.clone(), WorldVersion::V0_1));
    }
    let bytes = read::checked_bytes(&verified.source, cache)?;
    match WorldVersion::of_component_bytes(bytes)? {
        Some(WorldVersion::V0_2) => Ok((runtime.concurrent_engine()?.clone(), WorldVersion::V0_2)),
        _ => Ok((plain.clone(), WorldVersion::V0_1)),
    }
}

/// Loads a program: a `wasi:cli/run` component or a WASI preview 1 command.
pub(crate) async fn program(
    runtime: &Runtime,
    source: Source,
    sandbox: Sandbox,
) -> Result<Program, Error> {
    repairing(source, sandbox, |source, sandbox| {
        program_once(runtime, source, sandbox)
    })
    .await
}

/// [`program`], once.
async fn program_once(
    runtime: &Runtime,
    source: Source,
    sandbox: Sandbox,
) -> Result<Program, Error> {
    let verified = read_and_verify(runtime, source, sandbox)?;
    match verified.kind {
        BinaryKind::Component => {
            let compiled = compile::component(runtime, verified, runtime.plain_engine()).await?;
            world_check::command(&compiled.code, runtime.engine())?;
            let pre = link::command(runtime.linker(), &compiled.code)?;
            Ok(Program::new(
                admit::admit(compiled, runtime.clone())?,
                Entry::Command(pre),
            ))
        }
        BinaryKind::CoreModule => {
            let compiled = compile::preview1(runtime, verified).await?;
            preview1::check_command(&compiled.code)?;
            let pre = link::preview1(runtime.preview1_linker(), &compiled.code)?;
            Ok(Program::new(
                admit::admit(compiled, runtime.clone())?,
                Entry::Preview1(pre),
            ))
        }
    }
}

/// Loads a component of an application's own world.
pub(crate) async fn world(
    runtime: &Runtime,
    source: Source,
    sandbox: Sandbox,
    world: &World,
) -> Result<WorldPlugin, Error> {
    let mut compiled = repairing(source, sandbox, |source, sandbox| async move {
        let verified = read_and_verify_component(runtime, source, sandbox)?;
        compile::component(runtime, verified, runtime.plain_engine()).await
    })
    .await?;
    let defined = capabilities::host_capabilities_of(
        &compiled.info.imports,
        &compiled.sandbox,
        world.capabilities(),
    );
    compiled.info.capabilities.extend(defined);
    let pre = link::world(&world.linker, &compiled.code)?;
    Ok(WorldPlugin::new(
        admit::admit(compiled, runtime.clone())?,
        pre,
    ))
}

/// Runs the stages up to compiling (which fills the compile cache) and says
/// what they learned, without linking; takes plugins and programs alike.
pub(crate) async fn compile_only(
    runtime: &Runtime,
    source: Source,
    sandbox: Sandbox,
) -> Result<ComponentInfo, Error> {
    repairing(source, sandbox, |source, sandbox| async move {
        let verified = read_and_verify(runtime, source, sandbox)?;
        Ok(match verified.kind {
            BinaryKind::Component => {
                let (unit, _) = plugin_engine(runtime, &verified)?;
                compile::component(runtime, verified, &unit).await?.info
            }
            BinaryKind::CoreModule => compile::preview1(runtime, verified).await?.info,
        })
    })
    .await
}

/// Runs the `stages` of a load on `source`, and once more when they failed
/// because its bytes did not match the digest the digest index gave for
/// its file ([`read::checked_bytes`] removed the record and gave the source
/// the bytes' own digest): the trust check then judges, and the compile
/// stage compiles, the bytes actually read.
async fn repairing<T, Stages, Run>(
    source: Source,
    sandbox: Sandbox,
    stages: Stages,
) -> Result<T, Error>
where
    Stages: Fn(Source, Sandbox) -> Run,
    Run: Future<Output = Result<T, Error>>,
{
    let again = (source.clone(), sandbox.clone());
    let repaired_before = source.digest_repaired();
    match stages(source, sandbox).await {
        Err(_) if !repaired_before && again.0.digest_repaired() => stages(again.0, again.1).await,
        done => done,
    }
}

/// The component's SHA-256, as a load on `runtime` sees it (and remembered
/// in `source` for that load).
pub(crate) fn sha256(runtime: &Runtime, source: &Source) -> Result<[u8; 32], Error> {
    Ok(read::digest(source, runtime.compile_cache())?.sha256)
}

/// Finds and checks the component's signatures as a load on `runtime`
/// would (with the outcomes its compile cache remembers), without applying
/// a policy's verdict.
pub(crate) fn inspect_signatures(
    runtime: &Runtime,
    source: &Source,
    policy: &TrustPolicy,
) -> Result<Vec<SignatureCheck>, Error> {
    let cache = runtime.compile_cache();
    let inspect = || -> Result<Vec<SignatureCheck>, Error> {
        let digested = read::digest(source, cache)?;
        let bytes = || read::checked_bytes(source, cache);
        let subject = Subject {
            sha256: Some(&digested.sha256),
            prefix: read::prefix(source, digested)?,
            bytes: &bytes,
            detached: source.detached_signature(),
            outcomes: cache,
        };
        trust::inspect(&subject, policy)?.map_err(|failure| Error::Untrusted {
            failure,
            signatures: Vec::new(),
        })
    };
    // As a load does (see `repairing`): once more on the bytes' own digest
    // when the digest index was wrong about them.
    let repaired_before = source.digest_repaired();
    match inspect() {
        Err(_) if !repaired_before && source.digest_repaired() => inspect(),
        done => done,
    }
}

/// Checks the limits against the runtime, then identifies and verifies the
/// component.
fn read_and_verify(runtime: &Runtime, source: Source, sandbox: Sandbox) -> Result<Verified, Error> {
    runtime.capacity().check(&sandbox.limits)?;
    let cache = runtime.compile_cache();
    let digested = read::digest(&source, cache)?;
    let kind = read::binary_kind(read::prefix(&source, digested)?)?;
    verify::verify(source, kind, sandbox, cache)
}

/// [`read_and_verify`] where a component is expected: a core module is
/// refused, saying what to do with it.
fn read_and_verify_component(
    runtime: &Runtime,
    source: Source,
    sandbox: Sandbox,
) -> Result<Verified, Error> {
    let verified = read_and_verify(runtime, source, sandbox)?;
    if verified.kind == BinaryKind::CoreModule {
        return Err(Error::invalid_plugin(
            "this is a core WebAssembly module, not a component: run a WASI program \
             (`wasm32-wasip1`) with `warden exec`, turn a reactor built against Warden's WIT \
             into a component with `warden componentize`, or build the plugin for `wasm32-wasip2`",
        ));
    }
    Ok(verified)
}

#[cfg(test)]
mod tests;

/// [`read::binary_kind`], for the source's tests: whether the bytes are
/// refused as not WebAssembly.
#[cfg(test)]
pub(crate) fn binary_kind_for_tests(bytes: &[u8]) -> Result<(), Error> {
    read::binary_kind(bytes).map(|_| ())
}

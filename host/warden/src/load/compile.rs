//! Stage 3: compile, or take the compiled code from the compile cache, and
//! describe it. Compiling runs on Tokio's blocking pool; it can take seconds
//! for large components.

use std::sync::Arc;

use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use crate::capabilities::{self, CapabilityUse};
use crate::error::Error;
use crate::footprint::Footprint;
use crate::grants::Sandbox;
use crate::preview1;
use crate::runtime::{EngineUnit, Runtime};
use crate::trust::TrustVerdict;

use super::read;
use super::verify::Verified;

/// Facts about a component, known without running it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ComponentInfo {
    /// Size of the component (or preview 1 module) in bytes.
    pub size: u64,
    /// SHA-256 of the component, as lowercase hex.
    pub sha256: String,
    /// The interfaces (and functions) the component imports, by WIT name,
    /// e.g. `wasi:cli/environment@0.2.12`; for a WASI preview 1 module, the
    /// functions it imports, e.g. `wasi_snapshot_preview1::fd_write`.
    pub imports: Vec<String>,
    /// The interfaces (and functions) the component exports, by WIT name;
    /// the extra `exports` instance componentize-py adds is left out.
    pub exports: Vec<String>,
    /// The capabilities behind the imports, with their risk and whether the
    /// sandbox grants them.
    pub capabilities: Vec<CapabilityUse>,
    /// The component's signatures and what the trust policy made of them.
    pub trust: TrustVerdict,
    /// Whether the compiled code came from the compile cache.
    pub cached: bool,
    /// Whether this is a WASI preview 1 core module (a program) rather than
    /// a component. Modules are compiled on every load, never cached.
    pub preview1: bool,
}

/// Code compiled for an engine but not yet linked or admitted: a component,
/// or (for programs) a WASI preview 1 core module.
pub(crate) struct Compiled<Code = Component> {
    /// The engine the code was compiled for, which its calls run on.
    pub engine: Arc<EngineUnit>,
    pub name: Arc<str>,
    pub sandbox: Sandbox,
    pub info: ComponentInfo,
    pub code: Code,
}

/// An export componentize-py adds beside the world's own (an instance that
/// re-exports them); it is not part of the plugin's interface.
const TOOLCHAIN_EXPORT: &str = "exports";

/// Compiles a component for `unit`'s engine, or takes it from the
/// runtime's compile cache.
pub(crate) async fn component(
    runtime: &Runtime,
    verified: Verified,
    unit: &Arc<EngineUnit>,
) -> Result<Compiled, Error> {
    let engine = &unit.engine;
    let cache = runtime.compile_cache().cloned();
    let Verified {
        source,
        sha256,
        sandbox,
        verdict,
        ..
    } = verified;
    let digested = read::digest(&source, cache.as_ref())?;
    let size = digested.size;
    // Before compiling: a component too big for its share of the pools
    // costs nothing but this parse (or nothing at all, when the digest
    // index recorded it for this version of the file).
    let footprint = match digested.footprint {
        Some(footprint) => footprint,
        None => {
            let footprint = Footprint::of_component(read::checked_bytes(&source, cache.as_ref())?)?;
            if let (Some(cache), Some(version)) = (&cache, source.read_version()) {
                cache.record_digest(version, &sha256, source.prefix(), footprint);
            }
            footprint
        }
    };
    footprint.check(&sandbox.limits)?;
    if let Some(notice) = runtime.compile_notice()
        && !cache
            .as_ref()
            .is_some_and(|cache| cache.has_entry(engine, &sha256))
    {
        notice.notify(&source.name, size);
    }
    let name = source.name.clone();
    let (component, cached) = on_blocking_pool(engine, move |engine| match &cache {
        Some(cache) => cache.get_or_compile(engine, &sha256, || {
            read::checked_bytes(&source, Some(cache))
        }),
        None => Component::new(engine, read::checked_bytes(&source, None)?)
            .map(|component| (component, false))
            .map_err(|err| {
                Error::invalid_plugin(format!(
                    "the component failed to validate or compile: {err:#}"
                ))
            }),
    })
    .await??;
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let info = ComponentInfo {
        size,
        sha256: hex::encode(sha256),
        capabilities: capabilities::capabilities_of(&imports, &sandbox),
        imports,
        exports: ty
            .exports(engine)
            .map(|(name, _)| name.to_owned())
            .filter(|name| name != TOOLCHAIN_EXPORT)
            .collect(),
        trust: verdict,
        cached,
        preview1: false,
    };
    Ok(Compiled {
        engine: unit.clone(),
        name: name.into(),
        sandbox,
        info,
        code: component,
    })
}

/// Compiles a WASI preview 1 core module. Modules skip the compile cache:
/// preview 1 programs are small and compile in milliseconds.
pub(crate) async fn preview1(
    runtime: &Runtime,
    verified: Verified,
) -> Result<Compiled<Module>, Error> {
    let unit = runtime.plain_engine();
    let engine = &unit.engine;
    let cache = runtime.compile_cache().cloned();
    let Verified {
        source,
        sha256,
        sandbox,
        verdict,
        ..
    } = verified;
    let name = source.name.clone();
    let (size, compiled) = on_blocking_pool(engine, move |engine| {
        let bytes = read::checked_bytes(&source, cache.as_ref())?;
        Ok::<_, Error>((bytes.len() as u64, Module::new(engine, bytes)))
    })
    .await??;
    let module = compiled.map_err(|err| {
        Error::invalid_plugin(format!(
            "this core module is not a valid WASI preview 1 command: {err:#}"
        ))
    })?;
    let imports = preview1::imports(&module);
    let info = ComponentInfo {
        size,
        sha256: hex::encode(sha256),
        capabilities: preview1::capabilities_of(&imports, &sandbox),
        imports,
        exports: module
            .exports()
            .map(|export| export.name().to_owned())
            .collect(),
        trust: verdict,
        cached: false,
        preview1: true,
    };
    Ok(Compiled {
        engine: unit.clone(),
        name: name.into(),
        sandbox,
        info,
        code: module,
    })
}

/// Runs `compile` on Tokio's blocking pool and returns what it returned.
async fn on_blocking_pool<T: Send + 'static>(
    engine: &Engine,
    compile: impl FnOnce(&Engine) -> T + Send + 'static,
) -> Result<T, Error> {
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || compile(&engine))
        .await
        .map_err(|err| Error::Internal(wasmtime::Error::msg(err.to_string())))
}

//! What plugins and programs have in common once loaded: the compiled
//! component's facts, its sandbox, and the resources its grants opened.
//!
//! Loading reads top to bottom: check the bytes are a component (or, for a
//! program, a WASI preview 1 module), count what a component's instances take
//! from the pools, compile, describe, then — after the
//! caller has linked the component against its world — admit it: apply
//! `strict` and open what the grants name.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::Component;
use wasmtime::{Module, Store};

use crate::capabilities::{self, CapabilityUse, InstanceOptions, PluginResources, Risk};
use crate::error::Error;
use crate::footprint::Footprint;
use crate::grants::Sandbox;
use crate::metrics::Metrics;
use crate::preview1;
use crate::runtime::Runtime;
use crate::source::Source;
use crate::state::{CallScope, HostState};
use crate::trust::{self, TrustVerdict};

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

/// Code compiled for a runtime but not yet admitted: a component, or (for
/// programs) a WASI preview 1 core module.
pub(crate) struct Compiled<Code = Component> {
    pub runtime: Runtime,
    pub name: Arc<str>,
    pub sandbox: Sandbox,
    pub info: ComponentInfo,
    pub code: Code,
}

/// What a program compiles to.
pub(crate) enum CompiledProgram {
    /// A component exporting `wasi:cli/run`.
    Component(Compiled),
    /// A WASI preview 1 command module, run on wasmtime-wasi's preview 1
    /// implementation.
    Preview1(Compiled<Module>),
}

/// A component admitted into a runtime under its sandbox.
pub(crate) struct Loaded {
    pub runtime: Runtime,
    pub name: Arc<str>,
    pub sandbox: Sandbox,
    pub info: ComponentInfo,
    pub resources: PluginResources,
    pub metrics: Metrics,
    /// Bounds this component's instances when its limits ask for that.
    concurrency: Option<Arc<Semaphore>>,
}

/// The right to hold one instance: a slot of the runtime's, and one of the
/// component's own when it limits its concurrency. Released on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    _component: Option<OwnedSemaphorePermit>,
    _runtime: OwnedSemaphorePermit,
}

/// An export componentize-py adds beside the world's own (an instance that
/// re-exports them); it is not part of the plugin's interface.
const TOOLCHAIN_EXPORT: &str = "exports";

impl Compiled {
    /// Checks the source against the trust policy, then compiles it; it
    /// must be a component. Compilation runs on Tokio's blocking pool; it can
    /// take seconds for large components.
    pub(crate) async fn compile(
        runtime: &Runtime,
        source: Source,
        sandbox: Sandbox,
    ) -> Result<Self, Error> {
        let checked = Checked::check(runtime, source, sandbox)?;
        match checked.kind {
            BinaryKind::Component => checked.compile_component().await,
            BinaryKind::CoreModule => Err(Error::invalid_plugin(
                "this is a core WebAssembly module, not a component; build the plugin for \
                 `wasm32-wasip2` or turn the module into a component with `wasm-tools component new`",
            )),
        }
    }
}

impl CompiledProgram {
    /// Checks the source against the trust policy, then compiles it as a
    /// component or as a preview 1 core module, whichever it is.
    pub(crate) async fn compile(
        runtime: &Runtime,
        source: Source,
        sandbox: Sandbox,
    ) -> Result<Self, Error> {
        let checked = Checked::check(runtime, source, sandbox)?;
        match checked.kind {
            BinaryKind::Component => checked.compile_component().await.map(Self::Component),
            BinaryKind::CoreModule => checked.compile_preview1().await.map(Self::Preview1),
        }
    }

    /// What was learned about the program.
    pub(crate) fn into_info(self) -> ComponentInfo {
        match self {
            CompiledProgram::Component(compiled) => compiled.info,
            CompiledProgram::Preview1(compiled) => compiled.info,
        }
    }
}

/// A source whose bytes passed the checks that come before compiling.
struct Checked {
    runtime: Runtime,
    name: String,
    sandbox: Sandbox,
    bytes: Vec<u8>,
    kind: BinaryKind,
    verdict: TrustVerdict,
}

impl Checked {
    /// Checks the limits against the runtime, the binary's header and the
    /// trust policy.
    fn check(runtime: &Runtime, source: Source, sandbox: Sandbox) -> Result<Self, Error> {
        if sandbox.limits.fuel.is_some() && !runtime.fuel_metering() {
            return Err(Error::InvalidConfig(
                "a fuel limit needs a runtime built with fuel metering (RuntimeBuilder::fuel)"
                    .into(),
            ));
        }
        runtime.check_limits(&sandbox.limits)?;
        let Source {
            name,
            bytes,
            detached_signature,
        } = source;
        let kind = binary_kind(&bytes)?;
        // Nothing is compiled, or fetched from a cache, before the bytes pass.
        let verdict = trust::check(&bytes, detached_signature.as_deref(), &sandbox.trust)?;
        Ok(Checked {
            runtime: runtime.clone(),
            name,
            sandbox,
            bytes,
            kind,
            verdict,
        })
    }

    /// Compiles a component, or takes it from the compile cache.
    async fn compile_component(self) -> Result<Compiled, Error> {
        // Before compiling: a component too big for its share of the pools
        // costs nothing but this parse.
        Footprint::of_component(&self.bytes)?.check(&self.sandbox.limits)?;
        let sha256: [u8; 32] = Sha256::digest(&self.bytes).into();
        let engine = self.runtime.engine().clone();
        let cache = self.runtime.compile_cache().cloned();
        let bytes = self.bytes;
        let (bytes, compiled) = tokio::task::spawn_blocking(move || {
            let compiled = match &cache {
                Some(cache) => cache.get_or_compile(&engine, &sha256, &bytes),
                None => Component::new(&engine, &bytes).map(|component| (component, false)),
            };
            (bytes, compiled)
        })
        .await
        .map_err(|err| Error::Internal(wasmtime::Error::msg(err.to_string())))?;
        let (component, cached) = compiled.map_err(|err| {
            Error::invalid_plugin(format!(
                "the component failed to validate or compile: {err:#}"
            ))
        })?;
        let ty = component.component_type();
        let engine = self.runtime.engine();
        let imports: Vec<String> = ty
            .imports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let info = ComponentInfo {
            size: bytes.len() as u64,
            sha256: hex::encode(sha256),
            capabilities: capabilities::capabilities_of(&imports, &self.sandbox),
            imports,
            exports: ty
                .exports(engine)
                .map(|(name, _)| name.to_owned())
                .filter(|name| name != TOOLCHAIN_EXPORT)
                .collect(),
            trust: self.verdict,
            cached,
            preview1: false,
        };
        Ok(Compiled {
            runtime: self.runtime,
            name: self.name.into(),
            sandbox: self.sandbox,
            info,
            code: component,
        })
    }

    /// Compiles a WASI preview 1 core module. Modules skip the compile
    /// cache: preview 1 programs are small and compile in milliseconds.
    async fn compile_preview1(self) -> Result<Compiled<Module>, Error> {
        let sha256: [u8; 32] = Sha256::digest(&self.bytes).into();
        let engine = self.runtime.engine().clone();
        let bytes = self.bytes;
        let (bytes, compiled) = tokio::task::spawn_blocking(move || {
            let compiled = Module::new(&engine, &bytes);
            (bytes, compiled)
        })
        .await
        .map_err(|err| Error::Internal(wasmtime::Error::msg(err.to_string())))?;
        let module = compiled.map_err(|err| {
            Error::invalid_plugin(format!(
                "this core module is not a valid WASI preview 1 command: {err:#}"
            ))
        })?;
        let imports = preview1::imports(&module);
        let info = ComponentInfo {
            size: bytes.len() as u64,
            sha256: hex::encode(sha256),
            capabilities: preview1::capabilities_of(&imports, &self.sandbox),
            imports,
            exports: module
                .exports()
                .map(|export| export.name().to_owned())
                .collect(),
            trust: self.verdict,
            cached: false,
            preview1: true,
        };
        Ok(Compiled {
            runtime: self.runtime,
            name: self.name.into(),
            sandbox: self.sandbox,
            info,
            code: module,
        })
    }
}

impl<Code> Compiled<Code> {
    /// Applies `strict` and opens what the grants name. Called once the
    /// component has been linked, so that a component of the wrong world is
    /// refused for that first.
    pub(crate) fn admit(self) -> Result<Loaded, Error> {
        if self.sandbox.strict {
            let missing: Vec<CapabilityUse> = self
                .info
                .capabilities
                .iter()
                .filter(|capability| capability.risk == Risk::High && !capability.granted)
                .cloned()
                .collect();
            if !missing.is_empty() {
                return Err(Error::MissingGrants(missing));
            }
        }
        let resources = PluginResources::prepare(&self.name, &self.sandbox)?;
        let concurrency = self
            .sandbox
            .limits
            .concurrency
            .map(|permits| Arc::new(Semaphore::new(permits as usize)));
        Ok(Loaded {
            runtime: self.runtime,
            name: self.name,
            sandbox: self.sandbox,
            info: self.info,
            resources,
            metrics: Metrics::default(),
            concurrency,
        })
    }
}

impl Loaded {
    /// Waits until this component may hold one more instance: first for its
    /// own concurrency limit, then for a slot of the runtime's, so that a
    /// component at its limit never sits on runtime slots.
    pub(crate) async fn slot(&self) -> Slot {
        let component = match &self.concurrency {
            Some(semaphore) => Some(
                semaphore
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("a component never closes its concurrency semaphore"),
            ),
            None => None,
        };
        Slot {
            _component: component,
            _runtime: self.runtime.instance_slot().await,
        }
    }

    /// Creates the store of a new instance, armed for its first call.
    pub(crate) fn start_instance(
        &self,
        options: &InstanceOptions,
    ) -> Result<(Store<HostState>, CallScope), Error> {
        let mut store = HostState::new_store(self, options)?;
        let call = CallScope::begin(&mut store, self)?;
        Ok((store, call))
    }

    /// Refuses input larger than the limit before any guest code runs.
    pub(crate) fn check_input(&self, input: &[u8]) -> Result<(), Error> {
        let limit = self.sandbox.limits.max_input_bytes;
        if input.len() > limit {
            return Err(Error::InputTooLarge {
                size: input.len(),
                limit,
            });
        }
        Ok(())
    }
}

enum BinaryKind {
    Component,
    CoreModule,
}

/// Tells components from core modules by their header, and refuses
/// anything else with a message that says what it is instead.
fn binary_kind(bytes: &[u8]) -> Result<BinaryKind, Error> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
    const COMPONENT_LAYER: [u8; 2] = [0x01, 0x00];
    if bytes.len() < 8 || !bytes.starts_with(MAGIC) {
        return Err(Error::invalid_plugin(
            "not a WebAssembly binary (it does not start with the `\\0asm` magic bytes)",
        ));
    }
    if bytes[4..8] == CORE_MODULE_VERSION {
        return Ok(BinaryKind::CoreModule);
    }
    if bytes[6..8] != COMPONENT_LAYER {
        return Err(Error::invalid_plugin(format!(
            "unknown WebAssembly binary version {:02x?}",
            &bytes[4..8]
        )));
    }
    Ok(BinaryKind::Component)
}

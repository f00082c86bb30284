//! What plugins and programs have in common once loaded: the compiled
//! component's facts, its sandbox, and the resources its grants opened.
//!
//! Loading reads top to bottom: check the bytes are a component (adapting a
//! WASI preview 1 program if asked), count what its instances take from the
//! pools, compile, describe, then — after the
//! caller has linked the component against its world — admit it: apply
//! `strict` and open what the grants name.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::Store;
use wasmtime::component::Component;

use crate::capabilities::{self, CapabilityUse, InstanceOptions, PluginResources, Risk};
use crate::error::Error;
use crate::footprint::Footprint;
use crate::grants::Sandbox;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::source::Source;
use crate::state::{CallScope, HostState};
use crate::trust::{self, TrustVerdict};

/// Facts about a component, known without running it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ComponentInfo {
    /// Size of the component in bytes (after adapting a preview 1 module).
    pub size: u64,
    /// SHA-256 of the component, as lowercase hex.
    pub sha256: String,
    /// The interfaces (and functions) the component imports, by WIT name,
    /// e.g. `wasi:cli/environment@0.2.12`.
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
}

/// A component compiled for a runtime but not yet admitted.
pub(crate) struct Compiled {
    pub runtime: Runtime,
    pub name: Arc<str>,
    pub sandbox: Sandbox,
    pub info: ComponentInfo,
    pub component: Component,
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

/// What kind of binary a caller accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Accept {
    /// Components only.
    Components,
    /// Components, and WASI preview 1 command modules, adapted on load.
    ComponentsAndPreview1Commands,
}

/// An export componentize-py adds beside the world's own (an instance that
/// re-exports them); it is not part of the plugin's interface.
const TOOLCHAIN_EXPORT: &str = "exports";

impl Compiled {
    /// Checks the source against the trust policy, then compiles it.
    /// Compilation runs on Tokio's blocking pool; it can take seconds for
    /// large components.
    pub(crate) async fn compile(
        runtime: &Runtime,
        source: Source,
        sandbox: Sandbox,
        accept: Accept,
    ) -> Result<Self, Error> {
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
        let bytes = match (kind, accept) {
            (BinaryKind::Component, _) => bytes,
            (BinaryKind::CoreModule, Accept::ComponentsAndPreview1Commands) => {
                adapt_preview1_command(&bytes)?
            }
            (BinaryKind::CoreModule, Accept::Components) => {
                return Err(Error::invalid_plugin(
                    "this is a core WebAssembly module, not a component; build the plugin for \
                     `wasm32-wasip2` or turn the module into a component with `wasm-tools component new`",
                ));
            }
        };
        // Before compiling: a component too big for its share of the pools
        // costs nothing but this parse.
        Footprint::of_component(&bytes)?.check(&sandbox.limits)?;
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        let engine = runtime.engine().clone();
        let cache = runtime.compile_cache().cloned();
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
        let engine = runtime.engine();
        let imports: Vec<String> = ty
            .imports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let info = ComponentInfo {
            size: bytes.len() as u64,
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
        };
        Ok(Compiled {
            runtime: runtime.clone(),
            name: name.into(),
            sandbox,
            info,
            component,
        })
    }

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

/// Wraps a WASI preview 1 command module (what `wasm32-wasip1` toolchains
/// produce) into a component with wasmtime's preview 1 command adapter.
fn adapt_preview1_command(module: &[u8]) -> Result<Vec<u8>, Error> {
    use wasi_preview1_component_adapter_provider::{
        WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
    };
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(module)
        .and_then(|encoder| {
            encoder.adapter(
                WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
            )
        })
        .and_then(|mut encoder| encoder.encode())
        .map_err(|err| {
            Error::invalid_plugin(format!(
                "this core module is not a WASI preview 1 command that can be adapted into a component: {err:#}"
            ))
        })
}

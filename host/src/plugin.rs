//! A loaded [`Plugin`]: a compiled component, pre-instantiated against the
//! runtime's linker, ready to run calls.

use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};
use wasmtime::Store;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use crate::bindings;
use crate::error::Error;
use crate::grants::Sandbox;
use crate::instance::Instance;
use crate::report::{Outcome, Report};
use crate::runtime::Runtime;
use crate::signature;
use crate::state::{CallScope, HostState};
use crate::{Metadata, PluginError};

/// The export every plugin must provide.
pub const GUEST_INTERFACE: &str = "warden:plugin/guest@0.1.0";

/// A plugin ready to run. Cheap to clone; clones share the compiled code.
///
/// [`Plugin::execute`] runs each call in a fresh instance (the strongest
/// isolation: nothing survives between calls); [`Plugin::instantiate`] gives
/// a live [`Instance`] that keeps its state across calls.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    runtime: Runtime,
    name: Arc<str>,
    pre: bindings::PluginPre<HostState>,
    sandbox: Sandbox,
    info: PluginInfo,
    metadata: OnceLock<Metadata>,
}

/// Facts about a plugin's component, known without running it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PluginInfo {
    /// Size of the component in bytes.
    pub size: u64,
    /// SHA-256 of the component, as lowercase hex.
    pub sha256: String,
    /// The interfaces (and functions) the component imports, by WIT name,
    /// e.g. `wasi:cli/environment@0.2.12`.
    pub imports: Vec<String>,
    /// The interfaces (and functions) the component exports, by WIT name.
    pub exports: Vec<String>,
}

impl PluginInfo {
    fn new(bytes: &[u8], component: &Component, engine: &wasmtime::Engine) -> Self {
        let ty = component.component_type();
        PluginInfo {
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
            imports: ty
                .imports(engine)
                .map(|(name, _)| name.to_owned())
                .collect(),
            exports: ty
                .exports(engine)
                .map(|(name, _)| name.to_owned())
                .collect(),
        }
    }
}

/// Refuses bytes that are not a component before handing them to the
/// compiler, with a message that says what they are instead.
pub(crate) fn check_component_header(bytes: &[u8]) -> Result<(), Error> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
    const COMPONENT_LAYER: [u8; 2] = [0x01, 0x00];
    if bytes.len() < 8 || !bytes.starts_with(MAGIC) {
        return Err(Error::invalid_plugin(
            "not a WebAssembly binary (it does not start with the `\\0asm` magic bytes)",
        ));
    }
    if bytes[4..8] == CORE_MODULE_VERSION {
        return Err(Error::invalid_plugin(
            "this is a core WebAssembly module, not a component; build the plugin for \
             `wasm32-wasip2` or turn the module into a component with `wasm-tools component new`",
        ));
    }
    if bytes[6..8] != COMPONENT_LAYER {
        return Err(Error::invalid_plugin(format!(
            "unknown WebAssembly binary version {:02x?}",
            &bytes[4..8]
        )));
    }
    Ok(())
}

impl Plugin {
    /// Links a compiled component: checks its exports and imports and
    /// pre-instantiates it.
    pub(crate) fn link(
        runtime: Runtime,
        name: String,
        component: Component,
        bytes: &[u8],
        sandbox: Sandbox,
    ) -> Result<Self, Error> {
        let engine = runtime.engine();
        let info = PluginInfo::new(bytes, &component, engine);
        check_guest_export(&component, engine)?;
        let instance_pre = runtime
            .linker()
            .instantiate_pre(&component)
            .map_err(|err| {
                Error::invalid_plugin(format!(
                    "the plugin imports something Warden does not provide: {err:#}"
                ))
            })?;
        if let Some(mismatch) = signature::guest_mismatch(&component, engine) {
            return Err(Error::invalid_plugin(format!(
                "the `{GUEST_INTERFACE}` export does not match Warden's WIT: {mismatch} \
                 (with `metadata` and `plugin-error` as defined in wit/plugin.wit)"
            )));
        }
        let pre = bindings::PluginPre::new(instance_pre).map_err(|err| {
            Error::invalid_plugin(format!(
                "the `{GUEST_INTERFACE}` export does not match Warden's WIT: {err:#}"
            ))
        })?;
        Ok(Plugin {
            inner: Arc::new(PluginInner {
                runtime,
                name: name.into(),
                pre,
                sandbox,
                info,
                metadata: OnceLock::new(),
            }),
        })
    }

    /// The name the plugin was loaded under.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Facts about the component: size, hash, imports and exports.
    pub fn info(&self) -> &PluginInfo {
        &self.inner.info
    }

    /// The limits and grants every instance of this plugin runs under.
    pub fn sandbox(&self) -> &Sandbox {
        &self.inner.sandbox
    }

    /// What the plugin says about itself, from its `init`.
    ///
    /// The first instance that initialises successfully fills this in; if
    /// none has yet, this creates one to ask.
    pub async fn metadata(&self) -> Result<Metadata, Error> {
        if let Some(metadata) = self.inner.metadata.get() {
            return Ok(metadata.clone());
        }
        let instance = self.instantiate().await.result?;
        Ok(instance.metadata().clone())
    }

    /// Runs one action in a fresh instance: instantiate, `init`, `execute`,
    /// then drop the instance. The timeout and fuel budget cover all three,
    /// and the report includes what `init` logged or printed.
    pub async fn execute(&self, action: &str, input: &[u8]) -> Outcome<Vec<u8>> {
        if let Err(err) = self.check_input(input) {
            return outcome_without_call(err);
        }
        let (mut store, call) = match self.start_fresh_instance() {
            Ok(started) => started,
            Err(err) => return outcome_without_call(err),
        };
        let run = async {
            let guest = self.inner.pre.instantiate_async(&mut store).await?;
            let exports = guest.warden_plugin_guest();
            match exports.call_init(&mut store).await? {
                Ok(metadata) => self.remember(metadata),
                Err(err) => return Ok(Err(err)),
            };
            exports.call_execute(&mut store, action, input).await
        };
        let result = match tokio::time::timeout_at(call.deadline().into(), run).await {
            Ok(returned) => self.output_from(returned, &call, &mut store),
            Err(_elapsed) => Err(call.timed_out()),
        };
        Outcome {
            result,
            report: call.finish(&mut store),
        }
    }

    /// Creates a live instance and runs its `init`. The instance keeps its
    /// state between [`Instance::execute`] calls.
    pub async fn instantiate(&self) -> Outcome<Instance> {
        let (mut store, call) = match self.start_fresh_instance() {
            Ok(started) => started,
            Err(err) => return outcome_without_call(err),
        };
        let run = async {
            let guest = self.inner.pre.instantiate_async(&mut store).await?;
            let init = guest.warden_plugin_guest().call_init(&mut store).await?;
            Ok::<_, wasmtime::Error>((guest, init))
        };
        let result = match tokio::time::timeout_at(call.deadline().into(), run).await {
            Ok(Ok((guest, Ok(metadata)))) => {
                self.remember(metadata.clone());
                Ok((guest, metadata))
            }
            Ok(Ok((_, Err(err)))) => Err(Error::Plugin(err)),
            Ok(Err(err)) => Err(call.failure(&mut store, err)),
            Err(_elapsed) => Err(call.timed_out()),
        };
        let report = call.finish(&mut store);
        Outcome {
            result: result
                .map(|(guest, metadata)| Instance::new(self.clone(), store, guest, metadata)),
            report,
        }
    }

    /// Creates the store of a new instance, armed for its first call.
    fn start_fresh_instance(&self) -> Result<(Store<HostState>, CallScope), Error> {
        let mut store = HostState::new_store(
            self.inner.runtime.engine(),
            &self.inner.name,
            &self.inner.sandbox,
        )?;
        let call = CallScope::begin(&mut store, self)?;
        Ok((store, call))
    }

    pub(crate) fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    pub(crate) fn check_input(&self, input: &[u8]) -> Result<(), Error> {
        let limit = self.inner.sandbox.limits.max_input_bytes;
        if input.len() > limit {
            return Err(Error::InputTooLarge {
                size: input.len(),
                limit,
            });
        }
        Ok(())
    }

    /// Turns what `execute` returned into the call's result, enforcing the
    /// output limit.
    pub(crate) fn output_from(
        &self,
        returned: wasmtime::Result<Result<Vec<u8>, PluginError>>,
        call: &CallScope,
        store: &mut Store<HostState>,
    ) -> Result<Vec<u8>, Error> {
        let output = returned
            .map_err(|err| call.failure(store, err))?
            .map_err(Error::Plugin)?;
        let limit = self.inner.sandbox.limits.max_output_bytes;
        if output.len() > limit {
            return Err(Error::OutputTooLarge {
                size: output.len(),
                limit,
            });
        }
        Ok(output)
    }

    fn remember(&self, metadata: Metadata) {
        // Every instance describes the same plugin; the first answer stands.
        let _ = self.inner.metadata.set(metadata);
    }
}

/// An outcome for a call that failed before any guest code ran.
pub(crate) fn outcome_without_call<T>(err: Error) -> Outcome<T> {
    Outcome {
        result: Err(err),
        report: Report::default(),
    }
}

/// Refuses a component without the `warden:plugin/guest` export, naming what
/// it exports instead.
fn check_guest_export(component: &Component, engine: &wasmtime::Engine) -> Result<(), Error> {
    let ty = component.component_type();
    let mut exports = ty.exports(engine);
    if exports.any(|(name, _)| name == GUEST_INTERFACE) {
        return Ok(());
    }
    let exported: Vec<String> = ty
        .exports(engine)
        .map(|(name, item)| match item.ty {
            ComponentItem::ComponentInstance(_) => name.to_owned(),
            _ => format!("{name} (not an interface)"),
        })
        .collect();
    let hint = if exported
        .iter()
        .any(|name| name.starts_with("wasi:cli/run@"))
    {
        " (it is a wasi:cli command, not a plugin)"
    } else if exported
        .iter()
        .any(|name| name.starts_with("warden:plugin/guest@"))
    {
        " (it targets another version of Warden's WIT)"
    } else {
        ""
    };
    let exported = if exported.is_empty() {
        "nothing".to_owned()
    } else {
        exported.join(", ")
    };
    Err(Error::invalid_plugin(format!(
        "the component does not export `{GUEST_INTERFACE}`{hint}; it exports {exported}"
    )))
}

//! A loaded [`Plugin`]: a compiled component of the `warden:plugin/plugin`
//! world, pre-instantiated against the runtime's linker, ready to run calls.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use wasmtime::Store;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use crate::Metadata;
use crate::bindings;
use crate::capabilities::{CapabilityUse, InstanceOptions};
use crate::deadline::{self, DeadlinePassed};
use crate::error::Error;
use crate::grants::Sandbox;
use crate::instance::Instance;
use crate::loaded::{Compiled, ComponentInfo, Loaded};
use crate::metrics::MetricsSnapshot;
use crate::report::{Outcome, Report};
use crate::signature;
use crate::state::{CallScope, HostState};

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
    loaded: Loaded,
    pre: bindings::PluginPre<HostState>,
    metadata: OnceLock<Metadata>,
    /// Kept instances waiting for their next call (with `calls_per_instance` > 1).
    idle: Mutex<Vec<Instance>>,
}

/// Kept instances a plugin holds between calls at most; each holds an
/// instance slot, so a bound keeps idle plugins from starving busy ones.
const MAX_IDLE_INSTANCES: usize = 8;

impl Plugin {
    /// Links a compiled component as a plugin: checks its exports and
    /// imports, pre-instantiates it, then admits it under its sandbox.
    pub(crate) fn link(compiled: Compiled) -> Result<Self, Error> {
        let runtime = compiled.runtime.clone();
        let engine = runtime.engine();
        check_guest_export(&compiled.code, engine)?;
        let instance_pre = runtime
            .linker()
            .instantiate_pre(&compiled.code)
            .map_err(|err| {
                Error::invalid_plugin(format!(
                    "the plugin imports something Warden does not provide: {err:#}"
                ))
            })?;
        if let Some(mismatch) = signature::guest_mismatch(&compiled.code, engine) {
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
        let loaded = compiled.admit()?;
        Ok(Plugin {
            inner: Arc::new(PluginInner {
                loaded,
                pre,
                metadata: OnceLock::new(),
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The name the plugin was loaded under.
    pub fn name(&self) -> &str {
        &self.inner.loaded.name
    }

    /// Facts about the component: size, hash, imports, exports and the
    /// capabilities they need.
    pub fn info(&self) -> &ComponentInfo {
        &self.inner.loaded.info
    }

    /// The capabilities the plugin imports, with their risk and grant status.
    pub fn capabilities(&self) -> &[CapabilityUse] {
        &self.inner.loaded.info.capabilities
    }

    /// The limits and grants every instance of this plugin runs under.
    pub fn sandbox(&self) -> &Sandbox {
        &self.inner.loaded.sandbox
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

    /// Runs one action.
    ///
    /// By default ([`Sandbox::calls_per_instance`] of 1) the call gets a
    /// fresh instance: instantiate, `init`, `execute`, then drop it. The
    /// timeout and fuel budget cover all three, and the report includes what
    /// `init` logged or printed. With a larger `calls_per_instance` the call
    /// runs in a kept instance when one is idle (its `init` ran earlier).
    ///
    /// When the runtime or the plugin has no free instance slot, the call
    /// waits for one before its timeout starts.
    pub async fn execute(&self, action: &str, input: &[u8]) -> Outcome<Vec<u8>> {
        let outcome = if self.inner.loaded.sandbox.calls_per_instance > 1 {
            self.execute_in_kept_instance(action, input).await
        } else {
            self.execute_in_fresh_instance(action, input).await
        };
        self.inner.loaded.metrics.record(&outcome);
        outcome
    }

    async fn execute_in_fresh_instance(&self, action: &str, input: &[u8]) -> Outcome<Vec<u8>> {
        let loaded = &self.inner.loaded;
        if let Err(err) = loaded.check_input(input) {
            return outcome_without_call(err);
        }
        let _slot = loaded.slot().await;
        let (mut store, call) = match loaded.start_instance(&InstanceOptions::default()) {
            Ok(started) => started,
            Err(err) => return outcome_without_call(err),
        };
        let run = async {
            let guest = self.inner.pre.instantiate_async(&mut store).await?;
            let exports = guest.warden_plugin_guest();
            match exports.call_init(&mut store).await? {
                Ok(metadata) => self.remember(metadata),
                Err(err) => return Ok(Err(Error::InitFailed(err))),
            };
            let returned = exports.call_execute(&mut store, action, input).await?;
            Ok(returned.map_err(Error::Plugin))
        };
        let finished = deadline::until(call.deadline(), std::pin::pin!(run)).await;
        let result = match finished {
            Ok(returned) => self.output_from(returned, &call, &mut store),
            Err(DeadlinePassed) => Err(call.timed_out()),
        };
        call.finish(&mut store, result)
    }

    /// Runs a call in an idle kept instance, or a new one, and keeps the
    /// instance for the next call while it is sound and has calls left.
    async fn execute_in_kept_instance(&self, action: &str, input: &[u8]) -> Outcome<Vec<u8>> {
        let idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut instance = match idle {
            Some(instance) => instance,
            None => {
                let created = self.instantiate().await;
                match created.result {
                    Ok(instance) => instance,
                    Err(err) => {
                        return Outcome {
                            result: Err(err),
                            report: created.report,
                        };
                    }
                }
            }
        };
        let outcome = instance.execute_uncounted(action, input).await;
        let keep = !instance.is_discarded()
            && instance.calls() < self.inner.loaded.sandbox.calls_per_instance;
        if keep {
            let mut idle = self
                .inner
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if idle.len() < MAX_IDLE_INSTANCES {
                idle.push(instance);
            }
        }
        outcome
    }

    /// Creates a live instance and runs its `init`. The instance keeps its
    /// state between [`Instance::execute`] calls, and holds an instance slot
    /// until it is dropped.
    pub async fn instantiate(&self) -> Outcome<Instance> {
        let loaded = &self.inner.loaded;
        let slot = loaded.slot().await;
        let (mut store, call) = match loaded.start_instance(&InstanceOptions::default()) {
            Ok(started) => started,
            Err(err) => return outcome_without_call(err),
        };
        let run = async {
            let guest = self.inner.pre.instantiate_async(&mut store).await?;
            let init = guest.warden_plugin_guest().call_init(&mut store).await?;
            Ok::<_, wasmtime::Error>((guest, init))
        };
        let finished = deadline::until(call.deadline(), std::pin::pin!(run)).await;
        let result = match finished {
            Ok(Ok((guest, Ok(metadata)))) => {
                self.remember(metadata.clone());
                Ok((guest, metadata))
            }
            Ok(Ok((_, Err(err)))) => Err(Error::InitFailed(err)),
            Ok(Err(err)) => Err(call.failure(&mut store, err)),
            Err(DeadlinePassed) => Err(call.timed_out()),
        };
        let Outcome { result, report } = call.finish(&mut store, result);
        Outcome {
            result: result
                .map(|(guest, metadata)| Instance::new(self.clone(), store, guest, metadata, slot)),
            report,
        }
    }

    /// Counters and distributions of this plugin's calls so far.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.loaded.metrics.snapshot()
    }

    pub(crate) fn loaded(&self) -> &Loaded {
        &self.inner.loaded
    }

    /// Turns what `execute` returned into the call's result, enforcing the
    /// output limit.
    pub(crate) fn output_from(
        &self,
        returned: wasmtime::Result<Result<Vec<u8>, Error>>,
        call: &CallScope,
        store: &mut Store<HostState>,
    ) -> Result<Vec<u8>, Error> {
        let output = returned.map_err(|err| call.failure(store, err))??;
        let limit = self.inner.loaded.sandbox.limits.max_output_bytes;
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
    if ty.get_export(engine, GUEST_INTERFACE).is_some() {
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
        " (it is a wasi:cli command, not a plugin; run it with `warden exec`)"
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

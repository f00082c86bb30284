//! A [`Program`]: any `wasi:cli/run` component — or a WASI preview 1 command
//! module, adapted on load — run under the same limits, grants and report as
//! a plugin. This is `warden exec`.

use std::sync::Arc;

use wasmtime::component::types::ComponentItem;
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p2::bindings::CommandPre;

use crate::capabilities::{CapabilityUse, InstanceOptions, Stdio};
use crate::deadline::{self, DeadlinePassed};
use crate::error::Error;
use crate::grants::Sandbox;
use crate::loaded::{Compiled, ComponentInfo, Loaded};
use crate::metrics::MetricsSnapshot;
use crate::plugin::outcome_without_call;
use crate::report::Outcome;
use crate::state::HostState;

/// The export every program must provide.
pub const RUN_INTERFACE: &str = "wasi:cli/run@0.2.12";

/// A program ready to run. Cheap to clone; clones share the compiled code.
#[derive(Clone)]
pub struct Program {
    inner: Arc<ProgramInner>,
}

struct ProgramInner {
    loaded: Loaded,
    pre: CommandPre<HostState>,
}

impl Program {
    pub(crate) fn link(compiled: Compiled) -> Result<Self, Error> {
        let runtime = compiled.runtime.clone();
        check_run_export(&compiled)?;
        let instance_pre = runtime
            .linker()
            .instantiate_pre(&compiled.component)
            .map_err(|err| {
                Error::invalid_plugin(format!(
                    "the program imports something Warden does not provide: {err:#}"
                ))
            })?;
        let pre = CommandPre::new(instance_pre).map_err(|err| {
            Error::invalid_plugin(format!(
                "the program's `wasi:cli/run` export is not the one Warden runs: {err:#}"
            ))
        })?;
        Ok(Program {
            inner: Arc::new(ProgramInner {
                loaded: compiled.admit()?,
                pre,
            }),
        })
    }

    /// The name the program was loaded under.
    pub fn name(&self) -> &str {
        &self.inner.loaded.name
    }

    /// Facts about the component: size, hash, imports, exports and the
    /// capabilities they need.
    pub fn info(&self) -> &ComponentInfo {
        &self.inner.loaded.info
    }

    /// The capabilities the program imports, with their risk and grant status.
    pub fn capabilities(&self) -> &[CapabilityUse] {
        &self.inner.loaded.info.capabilities
    }

    /// The limits and grants every run of this program gets.
    pub fn sandbox(&self) -> &Sandbox {
        &self.inner.loaded.sandbox
    }

    /// Runs the program in a fresh instance with `args` (not counting the
    /// program's own name, which Warden passes first) and returns its exit
    /// code: 0 for success, 1 when `run` returns an error, or the code the
    /// program passed to `exit`.
    ///
    /// With [`Stdio::Capture`] its output lands in the report; with
    /// [`Stdio::Forward`] it goes to this process's stdout and stderr as it
    /// is written. Either way it is bounded by the limits.
    pub async fn run(&self, args: &[String], stdio: Stdio) -> Outcome<i32> {
        let outcome = self.run_uncounted(args, stdio).await;
        self.inner.loaded.metrics.record(&outcome);
        outcome
    }

    /// Counters and distributions of this program's runs so far.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.loaded.metrics.snapshot()
    }

    async fn run_uncounted(&self, args: &[String], stdio: Stdio) -> Outcome<i32> {
        let loaded = &self.inner.loaded;
        let _slot = loaded.slot().await;
        let options = InstanceOptions {
            args: std::iter::once(loaded.name.to_string())
                .chain(args.iter().cloned())
                .collect(),
            stdio,
        };
        let (mut store, call) = match loaded.start_instance(&options) {
            Ok(started) => started,
            Err(err) => return outcome_without_call(err),
        };
        let run = async {
            let command = self.inner.pre.instantiate_async(&mut store).await?;
            command.wasi_cli_run().call_run(&mut store).await
        };
        let finished = deadline::until(call.deadline(), std::pin::pin!(run)).await;
        let result = match finished {
            Ok(Ok(Ok(()))) => Ok(0),
            Ok(Ok(Err(()))) => Ok(1),
            Ok(Err(err)) => match err.downcast_ref::<I32Exit>() {
                Some(I32Exit(code)) => Ok(*code),
                None => Err(call.failure(&mut store, err)),
            },
            Err(DeadlinePassed) => Err(call.timed_out()),
        };
        call.finish(&mut store, result)
    }
}

/// Refuses a component without `wasi:cli/run`, saying what it is instead.
fn check_run_export(compiled: &Compiled) -> Result<(), Error> {
    let engine = compiled.runtime.engine();
    let ty = compiled.component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_)))
        .map(|(name, _)| name.to_owned())
        .collect();
    if exports
        .iter()
        .any(|name| name.starts_with("wasi:cli/run@0.2"))
    {
        return Ok(());
    }
    let hint = if exports
        .iter()
        .any(|name| name.starts_with("warden:plugin/guest@"))
    {
        " (it is a Warden plugin; run it with `warden run`)"
    } else {
        ""
    };
    Err(Error::invalid_plugin(format!(
        "the component does not export `{RUN_INTERFACE}`{hint}; it exports {}",
        if exports.is_empty() {
            "nothing".to_owned()
        } else {
            exports.join(", ")
        }
    )))
}

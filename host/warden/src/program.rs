//! A [`Program`]: any `wasi:cli/run` component — or a WASI preview 1 command
//! module, run on wasmtime-wasi's preview 1 implementation — under the same
//! limits, grants and report as a plugin. This is `warden exec`.

use std::sync::Arc;

use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;
use wasmtime::{InstancePre, Store};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p2::bindings::CommandPre;

use crate::capabilities::{CapabilityUse, InstanceOptions, Stdio};
use crate::deadline::{self, DeadlinePassed};
use crate::error::Error;
use crate::grants::Sandbox;
use crate::loaded::{Compiled, CompiledProgram, ComponentInfo, Loaded};
use crate::metrics::MetricsSnapshot;
use crate::plugin::outcome_without_call;
use crate::preview1;
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
    entry: Entry,
}

/// How a program is started.
enum Entry {
    /// A component: `wasi:cli/run.run`.
    Command(CommandPre<HostState>),
    /// A WASI preview 1 module: its `_start` export.
    Preview1(InstancePre<HostState>),
}

impl Program {
    pub(crate) fn link(compiled: CompiledProgram) -> Result<Self, Error> {
        let (compiled, entry) = match compiled {
            CompiledProgram::Component(compiled) => {
                let entry = link_command(&compiled)?;
                (compiled.admit()?, entry)
            }
            CompiledProgram::Preview1(compiled) => {
                preview1::check_command(&compiled.code)?;
                let instance_pre = compiled
                    .runtime
                    .preview1_linker()
                    .instantiate_pre(&compiled.code)
                    .map_err(|err| {
                        Error::invalid_plugin(format!(
                            "the program imports something WASI preview 1 does not provide: {err:#}"
                        ))
                    })?;
                (compiled.admit()?, Entry::Preview1(instance_pre))
            }
        };
        Ok(Program {
            inner: Arc::new(ProgramInner {
                loaded: compiled,
                entry,
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
    /// program passed to `exit` (`exit-with-code`, or `proc_exit` for a
    /// preview 1 module), exactly.
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
            preview1: matches!(self.inner.entry, Entry::Preview1(_)),
        };
        let (mut store, call) = match loaded.start_instance(&options) {
            Ok(started) => started,
            Err(err) => return outcome_without_call(err),
        };
        let run = self.inner.entry.run(&mut store);
        let finished = deadline::until(call.deadline(), std::pin::pin!(run)).await;
        let result = match finished {
            Ok(Ok(code)) => Ok(code),
            Ok(Err(err)) => match err.downcast_ref::<I32Exit>() {
                Some(I32Exit(code)) => Ok(*code),
                None => Err(call.failure(&mut store, err)),
            },
            Err(DeadlinePassed) => Err(call.timed_out()),
        };
        call.finish(&mut store, result)
    }
}

impl Entry {
    /// Instantiates the program in `store` and runs it to its end. Returns
    /// the exit code of a program that returned (0, or 1 for a component
    /// whose `run` returned an error); one that called `exit` fails with
    /// [`I32Exit`].
    async fn run(&self, store: &mut Store<HostState>) -> wasmtime::Result<i32> {
        match self {
            Entry::Command(pre) => {
                let command = pre.instantiate_async(&mut *store).await?;
                let finished = command.wasi_cli_run().call_run(&mut *store).await?;
                Ok(if finished.is_ok() { 0 } else { 1 })
            }
            Entry::Preview1(pre) => {
                let instance = pre.instantiate_async(&mut *store).await?;
                let start =
                    instance.get_typed_func::<(), ()>(&mut *store, preview1::ENTRY_POINT)?;
                start.call_async(&mut *store, ()).await?;
                Ok(0)
            }
        }
    }
}

/// Links a component that exports `wasi:cli/run`.
fn link_command(compiled: &Compiled) -> Result<Entry, Error> {
    check_run_export(&compiled.code, compiled.runtime.engine())?;
    let instance_pre = compiled
        .runtime
        .linker()
        .instantiate_pre(&compiled.code)
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
    Ok(Entry::Command(pre))
}

/// Refuses a component without `wasi:cli/run`, saying what it is instead.
fn check_run_export(component: &Component, engine: &wasmtime::Engine) -> Result<(), Error> {
    let ty = component.component_type();
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

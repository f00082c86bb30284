//! A [`Program`]: any `wasi:cli/run` component — or a WASI preview 1 command
//! module, run on wasmtime-wasi's preview 1 implementation — under the same
//! limits, grants and report as a plugin. This is `warden exec`.

use std::sync::Arc;

use bytes::Bytes;

use wasmtime::{InstancePre, Store};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p2::bindings::CommandPre;

use crate::call::{self, GuestWork};
use crate::capabilities::{CapabilityUse, InstanceOptions, Stdio};
use crate::error::Error;
use crate::load::{Loaded, loaded_accessors};
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
pub(crate) enum Entry {
    /// A component: `wasi:cli/run.run`.
    Command(CommandPre<HostState>),
    /// A WASI preview 1 module: its `_start` export.
    Preview1(InstancePre<HostState>),
}

impl Program {
    /// A program of a loaded component or module, started by `entry`.
    pub(crate) fn new(loaded: Loaded, entry: Entry) -> Self {
        Program {
            inner: Arc::new(ProgramInner { loaded, entry }),
        }
    }

    loaded_accessors!("program");

    fn loaded(&self) -> &Loaded {
        &self.inner.loaded
    }

    /// The capabilities the program imports, with their risk and grant status.
    pub fn capabilities(&self) -> &[CapabilityUse] {
        &self.loaded().info.capabilities
    }

    /// Runs the program in a fresh instance with `args` (not counting the
    /// program's own name, which Warden passes first) and an empty stdin,
    /// and returns its exit code: 0 for success, 1 when `run` returns an
    /// error, or the code the program passed to `exit` (`exit-with-code`,
    /// or `proc_exit` for a preview 1 module), exactly.
    ///
    /// With [`Stdio::Capture`] its output lands in the report; with
    /// [`Stdio::Forward`] it goes to this process's stdout and stderr as it
    /// is written. Either way it is bounded by the limits
    /// ([`Limits::stdout_bytes`](crate::Limits::stdout_bytes) and
    /// [`Limits::stderr_bytes`](crate::Limits::stderr_bytes)).
    pub async fn run(&self, args: &[String], stdio: Stdio) -> Outcome<i32> {
        self.run_with_stdin(args, Bytes::new(), stdio).await
    }

    /// [`Program::run`], with `stdin` as the program's standard input: it
    /// reads those bytes, then the end of the stream. More bytes than
    /// [`Limits::max_input_bytes`](crate::Limits::max_input_bytes) are
    /// refused with [`Error::InputTooLarge`] before the program starts.
    pub async fn run_with_stdin(
        &self,
        args: &[String],
        stdin: impl Into<Bytes>,
        stdio: Stdio,
    ) -> Outcome<i32> {
        let loaded = &self.inner.loaded;
        let options = InstanceOptions {
            args: std::iter::once(loaded.name.to_string())
                .chain(args.iter().cloned())
                .collect(),
            stdio,
            stdin: stdin.into(),
            preview1: matches!(self.inner.entry, Entry::Preview1(_)),
        };
        let start = Start {
            entry: &self.inner.entry,
            stdin_bytes: options.stdin.len(),
            max_input_bytes: loaded.sandbox.limits.max_input_bytes,
        };
        call::in_new_instance(loaded, &options, start).await
    }
}

impl Entry {
    /// Instantiates the program in `store` and runs it to its end. Returns
    /// the exit code of a program that returned (0, or 1 for a component
    /// whose `run` returned an error); one that called `exit` fails with
    /// [`I32Exit`].
    async fn start(&self, store: &mut Store<HostState>) -> wasmtime::Result<i32> {
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

/// Starting a program: its stdin checked against the input limit, then
/// instantiated and run to its end.
struct Start<'a> {
    entry: &'a Entry,
    stdin_bytes: usize,
    max_input_bytes: usize,
}

/// Running a program is instantiating it and running it to its end; a
/// program that called `exit` succeeded with the code it passed.
impl GuestWork for Start<'_> {
    type Output = i32;

    fn check(&self) -> Result<(), Error> {
        if self.stdin_bytes > self.max_input_bytes {
            return Err(Error::InputTooLarge {
                size: self.stdin_bytes,
                limit: self.max_input_bytes,
            });
        }
        Ok(())
    }

    async fn run(self, store: &mut Store<HostState>) -> wasmtime::Result<Result<i32, Error>> {
        match self.entry.start(store).await {
            Ok(code) => Ok(Ok(code)),
            Err(err) => match err.downcast_ref::<I32Exit>() {
                Some(I32Exit(code)) => Ok(Ok(*code)),
                None => Err(err),
            },
        }
    }
}

//! Loading what `warden run`, `exec` and `inspect` name: the file read with
//! the keys the flags give, a runtime for its sandbox, and a warning on
//! stderr when nothing verified it.

use warden::{Error, Plugin, Program, Runtime, Sandbox, Source};

use crate::args::{SandboxArgs, SandboxedComponent};
use crate::output;

/// Reads and loads the plugin a command names.
pub async fn plugin(
    target: &SandboxedComponent,
    sandbox_args: &SandboxArgs,
) -> Result<Plugin, Error> {
    let (runtime, source, sandbox) = prepare(target, sandbox_args).await?;
    let plugin = runtime.load(source, sandbox).await?;
    output::warn_if_unverified(plugin.info(), plugin.sandbox());
    Ok(plugin)
}

/// Reads and loads the WASI program `warden exec` names.
pub async fn program(
    target: &SandboxedComponent,
    sandbox_args: &SandboxArgs,
) -> Result<Program, Error> {
    let (runtime, source, sandbox) = prepare(target, sandbox_args).await?;
    let program = runtime.load_program(source, sandbox).await?;
    output::warn_if_unverified(program.info(), program.sandbox());
    Ok(program)
}

/// The target's file (read and checked against the keys the flags give),
/// the runtime for its sandbox, and the sandbox for that file.
async fn prepare(
    target: &SandboxedComponent,
    sandbox_args: &SandboxArgs,
) -> Result<(Runtime, Source, Sandbox), Error> {
    let source = sandbox_args
        .trust
        .keys
        .source(&target.path)
        .await?
        .named(target.name.clone());
    let runtime = sandbox_args.runtime(&target.sandbox)?;
    let sandbox = target.sandbox_for(&source);
    Ok((runtime, source, sandbox))
}

//! Loading what `warden run`, `exec` and `inspect` name: the file read with
//! the keys the flags give, a runtime for its sandbox, and a note on stderr
//! when nothing verified it or when loading created its kv store.

use std::path::PathBuf;

use warden::{Error, KvStore, Plugin, Program, Runtime, Sandbox, Source};

use crate::args::{SandboxArgs, SandboxedComponent};
use crate::output;

/// Reads and loads the plugin a command names.
pub async fn plugin(
    target: &SandboxedComponent,
    sandbox_args: &SandboxArgs,
) -> Result<Plugin, Error> {
    let (runtime, source, sandbox) = prepare(target, sandbox_args).await?;
    let new_store = missing_kv_store(&sandbox);
    let plugin = runtime.load(source, sandbox).await?;
    say_if_created(new_store);
    output::warn_if_unverified(plugin.info(), plugin.sandbox());
    Ok(plugin)
}

/// Reads and loads the WASI program `warden exec` names.
pub async fn program(
    target: &SandboxedComponent,
    sandbox_args: &SandboxArgs,
) -> Result<Program, Error> {
    let (runtime, source, sandbox) = prepare(target, sandbox_args).await?;
    let new_store = missing_kv_store(&sandbox);
    let program = runtime.load_program(source, sandbox).await?;
    say_if_created(new_store);
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

/// The granted kv store file, when it does not exist yet: loading creates it.
fn missing_kv_store(sandbox: &Sandbox) -> Option<PathBuf> {
    match &sandbox.grants.kv.as_ref()?.store {
        KvStore::File(path) if !path.exists() => Some(path.clone()),
        _ => None,
    }
}

/// Says on stderr that loading created the kv store `path`: a new, empty
/// store where one was expected is how a mistyped path shows.
fn say_if_created(path: Option<PathBuf>) {
    if let Some(path) = path.filter(|path| path.exists()) {
        eprintln!("warden: created the kv store `{}`", path.display());
    }
}

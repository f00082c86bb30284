//! Loading what `warden run`, `exec` and `inspect` name: the file read with
//! the keys the flags give, a runtime for its sandbox, a note on stderr
//! before a long first compile, a warning on stderr when nothing verified
//! it, and a note when loading created its kv store.

use std::io::IsTerminal;
use std::path::PathBuf;

use warden::units::format_bytes;
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
    let mut builder = sandbox_args.runtime_builder(&target.sandbox);
    // For a person waiting at a terminal; a script's log gains nothing.
    if std::io::stderr().is_terminal() {
        let file = target.path.file_name().map_or_else(
            || target.name.clone(),
            |file| file.to_string_lossy().into_owned(),
        );
        let cached = !sandbox_args.no_cache;
        builder.on_compile(move |_, size| {
            if let Some(note) = compile_note(&file, size, cached) {
                eprintln!("{note}");
            }
        });
    }
    let runtime = builder.build()?;
    let sandbox = target.sandbox_for(&source, &runtime)?;
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

/// Components from this size up get a note before a compile the cache
/// cannot spare. Cranelift compiles very roughly 5 to 20 MiB of WebAssembly
/// a second on one laptop core, so from 4 MiB a first load takes from a
/// noticeable fraction of a second to several seconds; below it a note
/// would only be noise.
const COMPILE_NOTE_BYTES: u64 = 4 << 20;

/// The note for compiling `file` of `size` bytes, or `None` when it is too
/// small to keep anyone waiting.
fn compile_note(file: &str, size: u64, cached: bool) -> Option<String> {
    (size >= COMPILE_NOTE_BYTES).then(|| {
        let size = format_bytes(size);
        if cached {
            format!("warden: compiling {file} ({size}) once; later loads use the cache")
        } else {
            format!("warden: compiling {file} ({size}); with --no-cache every load compiles it")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_large_component_gets_a_compile_note() {
        assert_eq!(
            compile_note("small.wasm", COMPILE_NOTE_BYTES - 1, true),
            None
        );
        assert_eq!(
            compile_note("my-plugin.wasm", 18 << 20, true).as_deref(),
            Some("warden: compiling my-plugin.wasm (18 MiB) once; later loads use the cache")
        );
        assert_eq!(
            compile_note("my-plugin.wasm", 18 << 20, false).as_deref(),
            Some(
                "warden: compiling my-plugin.wasm (18 MiB); with --no-cache every load compiles it"
            )
        );
    }
}

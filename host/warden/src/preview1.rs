//! WASI preview 1 programs: core modules built by `wasm32-wasip1` toolchains,
//! run by `warden exec` on wasmtime-wasi's own preview 1 implementation, as
//! `wasmtime run` runs them.
//!
//! Adapting such a module into a component with the preview 1 command adapter
//! loses behaviour real programs rely on (exit codes other than 0 and 1,
//! arguments with quotes or newlines, `badf` for a descriptor that is not
//! open), so modules are linked against [`wasmtime_wasi::p1`] instead. The
//! store, limits, grants and captured output are the same as a component's:
//! the module's WASI context is built from the same
//! [`WasiCtxBuilder`](wasmtime_wasi::WasiCtxBuilder) configuration (see
//! [`InstanceState`](crate::capabilities::InstanceState)).

use wasmtime::{Engine, ExternType, Linker, Module};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p1;

use crate::capabilities::{CAPABILITIES, CapabilityUse};
use crate::error::Error;
use crate::grants::Sandbox;
use crate::state::HostState;

/// The import module of every WASI preview 1 function.
pub(crate) const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// The function a preview 1 command exports as its `main`.
pub(crate) const ENTRY_POINT: &str = "_start";

/// The largest exit status a program's `proc_exit` passes through: a process
/// exit status holds 0 to 255, as does a component's `exit-with-code`.
/// (wasmtime-wasi itself refuses 126 and up, which shells reserve.)
const MAX_EXIT_STATUS: u32 = 255;

/// The linker every preview 1 program is linked against: all of WASI
/// preview 1, and nothing else.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    p1::add_to_linker_async(&mut linker, HostState::preview1)?;
    linker.allow_shadowing(true);
    linker.func_wrap(WASI_MODULE, "proc_exit", proc_exit)?;
    linker.allow_shadowing(false);
    Ok(linker)
}

/// `proc_exit`: ends the program with `status`, which reaches the caller of
/// [`Program::run`](crate::Program::run) unchanged.
fn proc_exit(status: u32) -> wasmtime::Result<()> {
    if status > MAX_EXIT_STATUS {
        return Err(wasmtime::Error::msg(format!(
            "the program exited with status {status}, outside the 0 to {MAX_EXIT_STATUS} a \
             process exit status can hold"
        )));
    }
    Err(I32Exit(status as i32).into())
}

/// Refuses a module that is not a preview 1 command, saying what it lacks.
pub(crate) fn check_command(module: &Module) -> Result<(), Error> {
    match module.get_export(ENTRY_POINT) {
        Some(ExternType::Func(func)) if func.params().len() == 0 && func.results().len() == 0 => {
            Ok(())
        }
        Some(_) => Err(Error::invalid_plugin(format!(
            "the module's `{ENTRY_POINT}` export is not a function without parameters or results, \
             so it is not a WASI preview 1 command"
        ))),
        None => Err(Error::invalid_plugin(format!(
            "the module does not export `{ENTRY_POINT}`, so it is not a WASI preview 1 command \
             (a reactor or a library cannot be run with `warden exec`)"
        ))),
    }
}

/// A module's imports as `module::name`, the way wasmtime names them.
pub(crate) fn imports(module: &Module) -> Vec<String> {
    module
        .imports()
        .map(|import| format!("{}::{}", import.module(), import.name()))
        .collect()
}

/// Maps a module's imports onto capabilities, in [`CAPABILITIES`] order, as
/// [`capabilities_of`](crate::capabilities::capabilities_of) does for a
/// component: each preview 1 function belongs to the capability whose WASI
/// 0.2 interface provides it.
pub(crate) fn capabilities_of(imports: &[String], sandbox: &Sandbox) -> Vec<CapabilityUse> {
    CAPABILITIES
        .iter()
        .filter_map(|capability| {
            let matching: Vec<String> = imports
                .iter()
                .filter(|import| {
                    import
                        .strip_prefix(WASI_MODULE)
                        .and_then(|rest| rest.strip_prefix("::"))
                        .and_then(capability_of)
                        == Some(capability.name)
                })
                .cloned()
                .collect();
            (!matching.is_empty()).then(|| CapabilityUse {
                name: capability.name,
                risk: (capability.risk)(sandbox),
                granted: (capability.granted)(sandbox),
                imports: matching,
                how_to_grant: capability.how_to_grant,
            })
        })
        .collect()
}

/// The capability a preview 1 function belongs to, or `None` for the ones
/// that carry no authority (exiting, yielding, polling).
fn capability_of(function: &str) -> Option<&'static str> {
    Some(match function {
        // Arguments and variables both come from `wasi:cli/environment`.
        "args_get" | "args_sizes_get" | "environ_get" | "environ_sizes_get" => "env",
        "clock_res_get" | "clock_time_get" => "clocks",
        "random_get" => "random",
        "sock_accept" | "sock_recv" | "sock_send" | "sock_shutdown" => "sockets",
        // Descriptors in general are stdio's; preopens, paths and file
        // metadata reach the filesystem.
        "fd_read"
        | "fd_write"
        | "fd_close"
        | "fd_seek"
        | "fd_tell"
        | "fd_fdstat_get"
        | "fd_fdstat_set_flags"
        | "fd_fdstat_set_rights"
        | "fd_renumber" => "stdio",
        name if name.starts_with("path_") || name.starts_with("fd_") => "fs",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_up_to_255_pass_through_and_larger_ones_are_refused() {
        for status in [0, 1, 33, 126, 255] {
            let exit = proc_exit(status).unwrap_err();
            assert_eq!(
                exit.downcast_ref::<I32Exit>().map(|exit| exit.0),
                Some(status as i32)
            );
        }
        let refused = proc_exit(256).unwrap_err();
        assert!(refused.downcast_ref::<I32Exit>().is_none());
        assert!(refused.to_string().contains("status 256"), "{refused}");
    }

    #[test]
    fn preview1_functions_map_onto_capabilities() {
        let imports: Vec<String> = [
            "args_get",
            "fd_write",
            "fd_prestat_get",
            "path_open",
            "proc_exit",
            "random_get",
        ]
        .iter()
        .map(|function| format!("{WASI_MODULE}::{function}"))
        .collect();
        let uses = capabilities_of(&imports, &Sandbox::default());
        let names: Vec<(&str, usize)> = uses
            .iter()
            .map(|capability| (capability.name, capability.imports.len()))
            .collect();
        assert_eq!(names, [("random", 1), ("stdio", 1), ("fs", 2), ("env", 1)]);
        assert!(
            uses.iter()
                .all(|capability| capability.name != "fs" || !capability.granted),
            "no directory is granted by default"
        );
    }
}

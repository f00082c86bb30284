//! The `fs` capability: `wasi:filesystem`, limited to the directories granted
//! with [`Grants::dirs`](crate::Grants::dirs) (`--dir HOST::GUEST[:ro|:rw]`).
//!
//! Path resolution, `..`, symlinks and permissions are enforced by
//! wasmtime-wasi's capability-based filesystem (cap-std): nothing outside a
//! preopened directory can be named, and a read-only preopen refuses every
//! change (writes, truncation, renames, links, removals).

use wasmtime::component::Linker;
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::{Capability, Risk};
use crate::error::Error;
use crate::grants::{DirAccess, Grants, Sandbox};
use crate::state::HostState;

pub(crate) const CAPABILITY: Capability = Capability {
    name: "fs",
    interfaces: &["wasi:filesystem/types", "wasi:filesystem/preopens"],
    risk,
    granted: |sandbox| !sandbox.grants.dirs.is_empty(),
    how_to_grant: "--dir HOST::GUEST[:ro|:rw]",
    add_to_linker,
};

/// Read-only files are medium risk, writable ones high; a plugin that imports
/// the filesystem without a grant could be either, so it counts as high.
fn risk(sandbox: &Sandbox) -> Risk {
    let dirs = &sandbox.grants.dirs;
    if !dirs.is_empty() && dirs.iter().all(|dir| dir.access == DirAccess::ReadOnly) {
        Risk::Medium
    } else {
        Risk::High
    }
}

fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let getter = <HostState as WasiFilesystemView>::filesystem;
    filesystem::types::add_to_linker::<_, WasiFilesystem>(linker, getter)?;
    filesystem::preopens::add_to_linker::<_, WasiFilesystem>(linker, getter)?;
    // Directory listings within the host-memory budget, stopping with
    // their call.
    super::dir_listing::add_to_linker(linker)
}

/// Refuses directory grants that cannot work, before anything is compiled.
pub(crate) fn check(grants: &Grants) -> Result<(), Error> {
    for preopen in &grants.dirs {
        match std::fs::metadata(&preopen.host) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(Error::InvalidConfig(format!(
                    "cannot grant `{}`: it is not a directory",
                    preopen.host.display()
                )));
            }
            Err(err) => {
                return Err(Error::InvalidConfig(format!(
                    "cannot grant `{}`: {err}",
                    preopen.host.display()
                )));
            }
        }
    }
    Ok(())
}

pub(crate) fn configure(wasi: &mut WasiCtxBuilder, grants: &Grants) -> Result<(), Error> {
    for preopen in &grants.dirs {
        let perms = match preopen.access {
            DirAccess::ReadOnly => FsPerms::ReadOnly,
            DirAccess::ReadWrite => FsPerms::ReadWrite,
        };
        wasi.preopened_dir(&preopen.host, &preopen.guest, perms)
            .map_err(|err| {
                Error::InvalidConfig(format!(
                    "cannot open directory `{}` to grant it as `{}`: {err:#}",
                    preopen.host.display(),
                    preopen.guest
                ))
            })?;
    }
    Ok(())
}

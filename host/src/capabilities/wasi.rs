//! The WASI 0.2 capabilities wasmtime-wasi implements: `fs` (preopened
//! directories), `env`, `stdio`, `clocks`, `random` and `sockets` (denied).

use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use crate::capabilities::stdio::CapturedOutput;
use crate::error::Error;
use crate::grants::{DirAccess, Grants};

/// Largest buffer one `wasi:random` call may ask the host to fill. Guests
/// that need more call again; a single call cannot make the host allocate
/// wasmtime's default of 64 MiB.
const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// Builds the WASI context of one instance from its grants.
pub(crate) fn build_ctx(
    grants: &Grants,
    stdout: &CapturedOutput,
    stderr: &CapturedOutput,
) -> Result<WasiCtx, Error> {
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .max_random_size(MAX_RANDOM_BYTES)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    for (key, value) in &grants.env {
        builder.env(key, value);
    }
    for preopen in &grants.dirs {
        let perms = match preopen.access {
            DirAccess::ReadOnly => FsPerms::ReadOnly,
            DirAccess::ReadWrite => FsPerms::ReadWrite,
        };
        builder
            .preopened_dir(&preopen.host, &preopen.guest, perms)
            .map_err(|err| {
                Error::InvalidConfig(format!(
                    "cannot open directory `{}` to grant it as `{}`: {err:#}",
                    preopen.host.display(),
                    preopen.guest
                ))
            })?;
    }
    Ok(builder.build())
}

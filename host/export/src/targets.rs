//! What each engine an exported app can run on provides to a component, and
//! how an import is matched against it.
//!
//! Each table lists the WASI 0.2 interfaces and the WASI proposals (`wasi:config`,
//! `wasi:keyvalue`, `wasi:logging`, `wasi:blobstore`) the engine links, read off
//! the engine's own source at the release named in [`Target::sources`]. Two
//! kinds of interface are deliberately left out, because neither Warden's
//! world nor the components `warden export-http` composes can import them:
//! WASI 0.3 release candidates and pre-0.2.0 WASI snapshots (Spin's
//! `@0.2.0-rc-2023-*`), and engine-specific APIs (`fermyon:spin/*`,
//! `spin:*`, `wasmcloud:*`). An import missing from a table is therefore an
//! import the exported app would fail to link on that engine. (Interfaces
//! that only declare types, such as `warden:plugin/types`, need no
//! implementation: wasmtime's linker, and so every engine here, accepts them
//! undefined, and `warden export-http` sets them aside before asking a table.)

/// The WASI 0.2 `wasi:cli/imports` world at one patch version: cli, clocks,
/// filesystem, io, random and sockets, followed by any further interfaces.
///
/// Every engine here links the whole of it from `wasmtime-wasi`'s `p2`
/// bindings; only the patch version differs with the engine's wasmtime.
macro_rules! wasi_0_2_cli_imports_and {
    ($version:literal; $($extra:expr),* $(,)?) => {
        &[
            concat!("wasi:cli/environment@", $version),
            concat!("wasi:cli/exit@", $version),
            concat!("wasi:cli/stdin@", $version),
            concat!("wasi:cli/stdout@", $version),
            concat!("wasi:cli/stderr@", $version),
            concat!("wasi:cli/terminal-input@", $version),
            concat!("wasi:cli/terminal-output@", $version),
            concat!("wasi:cli/terminal-stdin@", $version),
            concat!("wasi:cli/terminal-stdout@", $version),
            concat!("wasi:cli/terminal-stderr@", $version),
            concat!("wasi:clocks/monotonic-clock@", $version),
            concat!("wasi:clocks/wall-clock@", $version),
            concat!("wasi:filesystem/types@", $version),
            concat!("wasi:filesystem/preopens@", $version),
            concat!("wasi:io/error@", $version),
            concat!("wasi:io/poll@", $version),
            concat!("wasi:io/streams@", $version),
            concat!("wasi:random/random@", $version),
            concat!("wasi:random/insecure@", $version),
            concat!("wasi:random/insecure-seed@", $version),
            concat!("wasi:sockets/network@", $version),
            concat!("wasi:sockets/instance-network@", $version),
            concat!("wasi:sockets/tcp@", $version),
            concat!("wasi:sockets/tcp-create-socket@", $version),
            concat!("wasi:sockets/udp@", $version),
            concat!("wasi:sockets/udp-create-socket@", $version),
            concat!("wasi:sockets/ip-name-lookup@", $version),
            concat!("wasi:http/types@", $version),
            concat!("wasi:http/outgoing-handler@", $version),
            $($extra,)*
        ]
    };
}

/// `wasmtime serve` 48.0.8 run as `wasmtime serve -Scli -Sconfig -Skeyvalue`.
///
/// Which flag links what (`wasmtime-cli` 48.0.8, `src/commands/serve.rs`,
/// `ServeCommand::add_to_linker`):
/// - always (`-Shttp` cannot be turned off for `serve`): `wasi:http/types` and
///   `wasi:http/outgoing-handler`, plus, without `-Scli`, only the interfaces of
///   the `wasi:http/proxy` world (io, clocks, `random/random`, stdin/stdout/stderr);
/// - `-Scli`: the whole `wasi:cli/imports` world (`RunCommon::add_wasmtime_wasi_to_linker`,
///   i.e. `wasmtime_wasi::p2::add_to_linker_with_options_async`), sockets included
///   (whether a socket may connect is up to `-Sinherit-network`/`-Stcp`/`-Sudp`);
/// - `-Sconfig` (values from `-Sconfig-var=KEY=VALUE`): `wasi:config/store@0.2.0-rc.1`
///   (`wasmtime-wasi-config` 48);
/// - `-Skeyvalue` (an in-memory store seeded by `-Skeyvalue-in-memory-data=KEY=VALUE`):
///   `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft` (`wasmtime-wasi-keyvalue` 48).
///
/// `wasi:logging` is linked by no flag. The WASI 0.2 patch version, 0.2.12, is
/// that of the WIT shipped in `wasmtime-wasi` 48.0.8 (`src/p2/wit/deps`) and
/// `wasmtime-wasi-http` 48.0.8 (`wit/deps`).
const WASMTIME_SERVE: &[&str] = wasi_0_2_cli_imports_and!("0.2.12";
    "wasi:config/store@0.2.0-rc.1",
    "wasi:keyvalue/store@0.2.0-draft",
    "wasi:keyvalue/atomics@0.2.0-draft",
    "wasi:keyvalue/batch@0.2.0-draft",
);

/// Spin 3.6: the `platform` world of `spin:up@3.6.0` (spinframework/spin
/// `wit/world.wit`), which the host implements as a whole
/// (`crates/world/src/lib.rs`, `crates/factor-wasi/src/lib.rs`,
/// `crates/factor-key-value/src/host.rs`, `crates/factor-variables`).
///
/// - `wasi:cli/imports@0.2.6` and `wasi:http/outgoing-handler@0.2.6`, linked
///   from `wasmtime-wasi`'s `p2` bindings (the branch after 3.6, at 3.7.0-pre0,
///   builds on wasmtime 41). Sockets and outgoing HTTP are linked but only
///   reach the hosts in the component's `allowed_outbound_hosts`.
/// - `wasi:keyvalue/imports@0.2.0-draft2` (store, atomics with `cas`, batch): the
///   stores named in the component's `key_value_stores`.
/// - `wasi:config/store@0.2.0-draft-2024-09-27`: the component's `variables`.
/// - No `wasi:logging`, and neither Warden's `wasi:keyvalue@0.2.0-draft` nor
///   `wasi:config@0.2.0-rc.1`: pre-release versions only match exactly, so
///   `warden export-http` composes the bridges in `guests/keyvalue-bridge-draft2`
///   and `guests/config-bridge-2024-09-27`.
const SPIN: &[&str] = wasi_0_2_cli_imports_and!("0.2.6";
    "wasi:config/store@0.2.0-draft-2024-09-27",
    "wasi:keyvalue/store@0.2.0-draft2",
    "wasi:keyvalue/atomics@0.2.0-draft2",
    "wasi:keyvalue/batch@0.2.0-draft2",
);

/// The wasmCloud 1.x host: `wasmcloud-runtime` 0.12.0 (the runtime of
/// `wasmcloud-host` 0.27.0), `Component::new` in `src/component/mod.rs`,
/// which links these as built-ins:
///
/// - `wasmtime_wasi::p2::add_to_linker_async` and
///   `wasmtime_wasi_http::add_only_http_to_linker_async` from wasmtime 38.0.4,
///   whose WIT is WASI 0.2.6;
/// - `wasi:config/runtime@0.2.0-draft` (the older name, WIT in `wit/config-legacy`)
///   and `wasi:config/store@0.2.0-draft`;
/// - `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft` (Warden's versions);
/// - `wasi:logging/logging@0.1.0-draft` and the unversioned `wasi:logging/logging`;
/// - `wasi:blobstore/{blobstore,container,types}@0.2.0-draft`.
///
/// Any other import is not refused at link time: `new_with_linker` forwards it
/// over wRPC to whatever capability provider the deployment links, and a call
/// with no provider fails at run time. Warden treats such imports as missing,
/// since nothing in a plain deployment would answer them.
const WASMCLOUD: &[&str] = wasi_0_2_cli_imports_and!("0.2.6";
    "wasi:config/runtime@0.2.0-draft",
    "wasi:config/store@0.2.0-draft",
    "wasi:keyvalue/store@0.2.0-draft",
    "wasi:keyvalue/atomics@0.2.0-draft",
    "wasi:keyvalue/batch@0.2.0-draft",
    "wasi:logging/logging@0.1.0-draft",
    "wasi:logging/logging",
    "wasi:blobstore/blobstore@0.2.0-draft",
    "wasi:blobstore/container@0.2.0-draft",
    "wasi:blobstore/types@0.2.0-draft",
);

/// An engine an exported app can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Target {
    /// `wasmtime serve` (wasmtime-cli 48.0.8), with `-Scli`, and `-Sconfig` /
    /// `-Skeyvalue` when the plugin uses configuration or the key-value store.
    Wasmtime,
    /// Spin 3.x (read off 3.6), directly or on Kubernetes through SpinKube.
    Spin,
    /// The wasmCloud 1.x host (`wasmcloud-runtime` 0.12.0).
    Wasmcloud,
}

impl Target {
    /// Every target, in the order `--target` lists them.
    pub const ALL: [Target; 3] = [Target::Wasmtime, Target::Spin, Target::Wasmcloud];

    /// The target as `--target` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Target::Wasmtime => "wasmtime",
            Target::Spin => "spin",
            Target::Wasmcloud => "wasmcloud",
        }
    }

    /// Every interface the engine provides to a component, "namespace:package/interface@version".
    ///
    /// Scope: WASI 0.2 and the WASI proposals; see the module documentation for
    /// what is left out and why.
    pub fn provides(self) -> &'static [&'static str] {
        match self {
            Target::Wasmtime => WASMTIME_SERVE,
            Target::Spin => SPIN,
            Target::Wasmcloud => WASMCLOUD,
        }
    }

    /// Where the table comes from: the release and the source files it was read off.
    pub fn sources(self) -> &'static [&'static str] {
        match self {
            Target::Wasmtime => &[
                "wasmtime-cli 48.0.8 (crates.io): src/commands/serve.rs (ServeCommand::add_to_linker), src/common.rs (RunCommon::add_wasmtime_wasi_to_linker)",
                "wasmtime-wasi 48.0.8: src/p2/mod.rs (add_to_linker_with_options_async), src/p2/wit/deps (WASI 0.2.12)",
                "wasmtime-wasi-http 48.0.8: src/p2/mod.rs (add_only_http_to_linker_async), wit/deps/http.wit (wasi:http@0.2.12)",
                "wasmtime-wasi-config 48 (wasi:config@0.2.0-rc.1), wasmtime-wasi-keyvalue 48 (wasi:keyvalue@0.2.0-draft)",
            ],
            Target::Spin => &[
                "spinframework/spin, spin:up@3.6.0: wit/world.wit (world platform)",
                "spinframework/spin: crates/world/src/lib.rs (the host world), crates/factor-wasi/src/lib.rs, crates/factor-key-value/src/host.rs",
                "spin-sdk 7.0.0 (crates.io): wit/deps/wasi-keyvalue-2024-10-17 (wasi:keyvalue@0.2.0-draft2), wit/deps/wasi-runtime-config-2024-09-27",
            ],
            Target::Wasmcloud => &[
                "wasmcloud-runtime 0.12.0 (crates.io; wasmCloud host 1.x, wasmcloud-host 0.27.0): src/component/mod.rs (Component::new, new_with_linker)",
                "wasmcloud-runtime 0.12.0: src/capability.rs, wit/deps/config (store@0.2.0-draft), wit/config-legacy (runtime@0.2.0-draft)",
                "wasmtime-wasi 38.0.4 and wasmtime-wasi-http 38.0.4 (wasmcloud-runtime 0.12.0's dependencies): WIT deps at WASI 0.2.6",
            ],
        }
    }
}

/// Whether a provided interface satisfies an import: same namespace:package/interface, versions
/// compatible the way wasmtime's component linker matches them.
///
/// wasmtime 48 (`wasmtime-environ`'s `component::names::NameMap` and
/// `alternate_lookup_key`) first looks a name up exactly, then by its semver
/// track: `@1.2.3` is on track `@1` (any `1.x.y`), `@0.2.3` on track `@0.2`
/// (any `0.2.y`), and `@0.0.1` on no track. Newer and older versions on a track
/// both match. A version with a pre-release (`-draft`, `-rc.1`, `-draft2`, …) or
/// one that is not valid semver is on no track, so it only matches exactly;
/// build metadata (`+abc`) does not change the track.
pub fn satisfies(provided: &str, import: &str) -> bool {
    if provided == import {
        return true;
    }
    match (semver_track(provided), semver_track(import)) {
        (Some(provided), Some(import)) => provided == import,
        _ => false,
    }
}

/// The name up to the part of its version that compatible versions share
/// (`wasi:cli/stdout@0.2.6` → `wasi:cli/stdout@0.2`), or `None` when the name
/// only ever matches itself.
fn semver_track(name: &str) -> Option<&str> {
    let at = name.find('@')?;
    let version = &name[at + 1..];
    let parsed = StableVersion::parse(version)?;
    // The track keeps the major number when it is nonzero, else major and minor
    // when minor is nonzero; `0.0.x` has no compatible versions at all.
    let kept_numbers = if parsed.major != 0 {
        1
    } else if parsed.minor != 0 {
        2
    } else {
        return None;
    };
    let (dot, _) = version.match_indices('.').nth(kept_numbers - 1)?;
    Some(&name[..at + 1 + dot])
}

/// A semver version without a pre-release: the only kind that has a track.
struct StableVersion {
    major: u64,
    minor: u64,
}

impl StableVersion {
    /// Parses `MAJOR.MINOR.PATCH` with optional `+BUILD`, as the `semver` crate
    /// wasmtime uses does; `None` for a pre-release or anything that is not semver.
    fn parse(version: &str) -> Option<StableVersion> {
        let core = match version.split_once('+') {
            Some((core, build)) if is_dot_separated_identifiers(build) => core,
            Some(_) => return None,
            None => version,
        };
        let mut numbers = core.split('.').map(parse_numeric_identifier);
        let (Some(major), Some(minor), Some(Some(_patch)), None) = (
            numbers.next(),
            numbers.next(),
            numbers.next(),
            numbers.next(),
        ) else {
            return None;
        };
        Some(StableVersion {
            major: major?,
            minor: minor?,
        })
    }
}

/// A semver numeric identifier: decimal digits without a leading zero.
/// (A `-` makes the text a pre-release, which this refuses too.)
fn parse_numeric_identifier(text: &str) -> Option<u64> {
    let digits_only = !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit());
    if !digits_only || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok()
}

/// Build metadata: non-empty `[0-9A-Za-z-]` identifiers separated by dots.
fn is_dot_separated_identifiers(text: &str) -> bool {
    text.split('.').all(|identifier| {
        !identifier.is_empty()
            && identifier
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
    })
}

#[cfg(test)]
mod tests;

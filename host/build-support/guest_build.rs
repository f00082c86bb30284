//! Builds Rust guest components from the `guests/` workspace with cargo.
//! Shared by two build scripts: `host/export/build.rs` builds the components
//! `warden-export` embeds, and `tests/build.rs` builds every guest the tests
//! run.

use std::env;
use std::path::Path;
use std::process::Command;

/// Builds `packages` of the guest workspace at `guests` (the whole
/// workspace when `packages` is empty) in release mode for `target`, into
/// `target_dir`.
pub fn build(guests: &Path, target_dir: &Path, target: &str, packages: &[&str]) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg(target)
        .arg("--manifest-path")
        .arg(guests.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    for package in packages {
        command.arg("--package").arg(package);
    }
    // Settings meant for the host build (flags, clippy's wrapper, a target
    // override) must not leak into the guest build.
    for variable in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        command.env_remove(variable);
    }
    let status = command
        .status()
        .unwrap_or_else(|err| panic!("cannot run cargo to build the guests: {err}"));
    assert!(
        status.success(),
        "building the guests for {target} failed; is the target installed? \
         Run `make setup` (or `rustup target add {target}`)"
    );
}

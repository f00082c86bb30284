//! Builds the guest components in `guests/` for `wasm32-wasip2` and exports
//! their paths as constants (see `src/lib.rs`), so that `cargo test` needs
//! nothing built beforehand.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every guest the tests use: (constant name, target, file name).
const GUESTS: &[(&str, &str, &str)] = &[
    ("HELLO", COMPONENTS, "hello.wasm"),
    ("HOSTILE", COMPONENTS, "hostile.wasm"),
    ("PROBE", COMPONENTS, "probe.wasm"),
    ("COMMAND", COMPONENTS, "command.wasm"),
    ("TEXT_FILTER", COMPONENTS, "text_filter.wasm"),
    ("COMMAND_PREVIEW1", PREVIEW1, "command.wasm"),
];

/// Every guest is a component built for this target...
const COMPONENTS: &str = "wasm32-wasip2";
/// ...and the program is also built as a preview 1 core module, for `warden exec`.
const PREVIEW1: &str = "wasm32-wasip1";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("tests/ sits in the repository root");
    let guests = root.join("guests");
    let target_dir = root.join("target").join("guests");

    println!("cargo:rerun-if-changed={}", guests.display());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    build_guests(&guests, &target_dir, COMPONENTS, None);
    build_guests(&guests, &target_dir, PREVIEW1, Some("command"));

    let mut constants = String::new();
    for (constant, target, file) in GUESTS {
        let path = target_dir.join(target).join("release").join(file);
        assert!(
            path.exists(),
            "building the guests did not produce {}",
            path.display()
        );
        writeln!(
            constants,
            "/// Path of the `{file}` guest built for `{target}`.\npub const {constant}: &str = {:?};",
            path.display().to_string()
        )
        .expect("writing to a String cannot fail");
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("guests.rs");
    std::fs::write(&out, constants).expect("writing guests.rs into OUT_DIR");
}

/// Builds the guest workspace (or one package of it) for `target`.
fn build_guests(guests: &Path, target_dir: &Path, target: &str, package: Option<&str>) {
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
    if let Some(package) = package {
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

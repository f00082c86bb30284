//! Builds the guest components in `guests/` for `wasm32-wasip2` and exports
//! their paths as constants (see `src/lib.rs`), so that `cargo test` needs
//! nothing built beforehand.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every guest the tests use: (constant name, file name).
const GUESTS: &[(&str, &str)] = &[
    ("HELLO", "hello.wasm"),
    ("HOSTILE", "hostile.wasm"),
    ("COMMAND", "command.wasm"),
];

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("tests/ sits in the repository root");
    let guests = root.join("guests");
    let target_dir = root.join("target").join("guests");

    println!("cargo:rerun-if-changed={}", guests.display());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    build_guests(&guests, &target_dir);

    let release = target_dir.join(TARGET).join("release");
    let mut constants = String::new();
    for (constant, file) in GUESTS {
        let path = release.join(file);
        assert!(
            path.exists(),
            "building the guests did not produce {}",
            path.display()
        );
        writeln!(
            constants,
            "/// Path of the `{file}` guest component.\npub const {constant}: &str = {:?};",
            path.display().to_string()
        )
        .expect("writing to a String cannot fail");
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("guests.rs");
    std::fs::write(&out, constants).expect("writing guests.rs into OUT_DIR");
}

fn build_guests(guests: &Path, target_dir: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(guests.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
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
        "building the guests failed; is the {TARGET} target installed? \
         Run `make setup` (or `rustup target add {TARGET}`)"
    );
}

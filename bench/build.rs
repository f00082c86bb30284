//! Builds the baseline guests in `guests/` for `wasm32-unknown-unknown` and
//! exports their paths (the Warden plugins come from `warden-tests`).

use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";
const GUESTS: &[(&str, &str)] = &[
    ("EXTISM_VOWELS", "extism_vowels.wasm"),
    ("RAW_VOWELS", "raw_vowels.wasm"),
    ("FIB", "fib.wasm"),
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let guests = manifest_dir.join("guests");
    let target_dir = manifest_dir
        .parent()
        .expect("bench/ sits in the repository root")
        .join("target")
        .join("bench-guests");
    println!("cargo:rerun-if-changed={}", guests.display());
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../guests/vowels").display()
    );
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(guests.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("running cargo to build the benchmark guests");
    assert!(
        status.success(),
        "building the benchmark guests failed; run `rustup target add {TARGET}`"
    );
    let mut constants = String::new();
    for (constant, file) in GUESTS {
        let path = target_dir.join(TARGET).join("release").join(file);
        writeln!(
            constants,
            "/// Path of `{file}`.\npub const {constant}: &str = {:?};",
            path.display().to_string()
        )
        .expect("writing to a String cannot fail");
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("guests.rs");
    std::fs::write(out, constants).expect("writing guests.rs");
}

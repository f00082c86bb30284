//! Builds the components `warden_export::compose` joins with plugins (the
//! HTTP adapter and the shims, from `guests/` for `wasm32-wasip2`) and
//! writes `export_components.rs`: a slice of (crate name, component bytes).

use std::env;
use std::path::PathBuf;

#[path = "../build-support/guest_build.rs"]
mod guest_build;
#[path = "../build-support/includes.rs"]
mod includes;

/// The guest crates composed with plugins: the HTTP adapter and the shims
/// it may need. Which shim serves which import is read from the components
/// themselves.
const EXPORT_COMPONENTS: &[&str] = &[
    "http-adapter",
    "logging-shim",
    "keyvalue-bridge-draft2",
    "config-bridge-2024-09-27",
    "config-bridge-draft",
];

/// The target the export components are built for.
const GUEST_TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir.join("../..");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let guests = root.join("guests");
    for file in ["Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", guests.join(file).display());
    }
    for name in EXPORT_COMPONENTS {
        println!("cargo:rerun-if-changed={}", guests.join(name).display());
    }
    let target_dir = root.join("target").join("guests");
    guest_build::build(&guests, &target_dir, GUEST_TARGET, EXPORT_COMPONENTS);
    let components: Vec<(&str, PathBuf)> = EXPORT_COMPONENTS
        .iter()
        .map(|name| {
            let path = target_dir
                .join(GUEST_TARGET)
                .join("release")
                .join(format!("{}.wasm", name.replace('-', "_")));
            assert!(
                path.exists(),
                "building the guests did not produce {}",
                path.display()
            );
            (*name, path)
        })
        .collect();
    includes::write_includes(
        &out_dir.join("export_components.rs"),
        "include_bytes",
        components
            .iter()
            .map(|(name, path)| (*name, path.as_path())),
    );
}

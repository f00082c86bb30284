//! For the `warden` command line only: embeds Warden's WIT package and the C
//! bindings wit-bindgen generates from it, which `warden new` writes into
//! new plugin projects, and the components `warden export-http` composes
//! with plugins (built from `guests/` for `wasm32-wasip2`).

#[cfg(feature = "cli")]
use std::env;
#[cfg(feature = "cli")]
use std::fmt::Write as _;
#[cfg(feature = "cli")]
use std::path::{Path, PathBuf};

#[cfg(feature = "cli")]
#[path = "build/c_bindings.rs"]
mod c_bindings;
#[cfg(feature = "cli")]
#[path = "build/guest_build.rs"]
mod guest_build;

/// The guest crates `warden export-http` composes with plugins: the HTTP
/// adapter and the shims it may need. Which shim serves which import is
/// read from the components themselves.
#[cfg(feature = "cli")]
const EXPORT_COMPONENTS: &[&str] = &[
    "http-adapter",
    "logging-shim",
    "keyvalue-bridge-draft2",
    "config-bridge-2024-09-27",
    "config-bridge-draft",
];

/// The target the export components are built for.
#[cfg(feature = "cli")]
const GUEST_TARGET: &str = "wasm32-wasip2";

fn main() {
    #[cfg(feature = "cli")]
    embed_for_the_command_line();
}

#[cfg(feature = "cli")]
fn embed_for_the_command_line() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let wit = manifest_dir.join("../wit");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-changed={}", wit.display());

    let mut files = Vec::new();
    collect(&wit, &wit, &mut files);
    files.sort();
    write_includes(
        &out_dir.join("wit_files.rs"),
        "include_str",
        files
            .iter()
            .map(|(relative, path)| (relative.as_str(), path.as_path())),
    );
    let c_bindings = c_bindings::generate(&wit, &out_dir.join("c-bindings"));
    write_includes(
        &out_dir.join("c_bindings.rs"),
        "include_bytes",
        c_bindings
            .iter()
            .map(|(name, path)| (name.as_ref(), path.as_path())),
    );

    let root = manifest_dir
        .parent()
        .expect("host/ sits in the repository root");
    embed_export_components(root, &out_dir);
}

/// Builds [`EXPORT_COMPONENTS`] and writes `export_components.rs`: a slice
/// of (crate name, component bytes).
#[cfg(feature = "cli")]
fn embed_export_components(root: &Path, out_dir: &Path) {
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
    write_includes(
        &out_dir.join("export_components.rs"),
        "include_bytes",
        components
            .iter()
            .map(|(name, path)| (*name, path.as_path())),
    );
}

/// Writes `file` as a Rust slice expression of `(name, MACRO!(path))`
/// pairs, for `include!` in the CLI.
#[cfg(feature = "cli")]
fn write_includes<'a>(
    file: &Path,
    include_macro: &str,
    entries: impl Iterator<Item = (&'a str, &'a Path)>,
) {
    let mut slice = String::from("&[\n");
    for (name, path) in entries {
        writeln!(
            slice,
            "    ({name:?}, {include_macro}!({:?})),",
            path.display().to_string()
        )
        .expect("writing to a String cannot fail");
    }
    slice.push(']');
    std::fs::write(file, slice).unwrap_or_else(|err| panic!("writing {}: {err}", file.display()));
}

/// Every file under `dir`, with its path relative to `root` (`/`-separated).
#[cfg(feature = "cli")]
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    for entry in std::fs::read_dir(dir).expect("reading the WIT folder") {
        let path = entry.expect("reading the WIT folder").path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let relative = path
                .strip_prefix(root)
                .expect("inside the WIT folder")
                .components()
                .map(|part| part.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            files.push((relative, path));
        }
    }
}

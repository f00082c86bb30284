//! Embeds Warden's WIT package and the C bindings wit-bindgen generates from
//! it, which `warden new` writes into new plugin projects.

use std::env;
use std::path::PathBuf;

#[path = "../build-support/c_bindings.rs"]
mod c_bindings;
#[path = "../build-support/includes.rs"]
mod includes;

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let wit = manifest_dir.join("../../wit");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-changed={}", wit.display());

    let mut files = Vec::new();
    collect(&wit, &wit, &mut files);
    files.sort();
    includes::write_includes(
        &out_dir.join("wit_files.rs"),
        "include_str",
        files
            .iter()
            .map(|(relative, path)| (relative.as_str(), path.as_path())),
    );
    let c_bindings = c_bindings::generate(&wit, &out_dir.join("c-bindings"));
    includes::write_includes(
        &out_dir.join("c_bindings.rs"),
        "include_bytes",
        c_bindings
            .iter()
            .map(|(name, path)| (name.as_ref(), path.as_path())),
    );
}

/// Every file under `dir`, with its path relative to `root` (`/`-separated).
fn collect(root: &std::path::Path, dir: &std::path::Path, files: &mut Vec<(String, PathBuf)>) {
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

//! For the `warden` command line only: embeds Warden's WIT package and the C
//! bindings wit-bindgen generates from it, which `warden new` writes into
//! new plugin projects.

#[cfg(feature = "cli")]
use std::env;
#[cfg(feature = "cli")]
use std::fmt::Write as _;
#[cfg(feature = "cli")]
use std::path::{Path, PathBuf};

#[cfg(feature = "cli")]
#[path = "build/c_bindings.rs"]
mod c_bindings;

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
    let mut wit_files = String::from("&[\n");
    for (relative, path) in &files {
        writeln!(
            wit_files,
            "    ({relative:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .expect("writing to a String cannot fail");
    }
    wit_files.push(']');
    std::fs::write(out_dir.join("wit_files.rs"), wit_files).expect("writing wit_files.rs");

    let mut embedded = String::from("&[\n");
    for (name, path) in c_bindings::generate(&wit, &out_dir.join("c-bindings")) {
        writeln!(
            embedded,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .expect("writing to a String cannot fail");
    }
    embedded.push(']');
    std::fs::write(out_dir.join("c_bindings.rs"), embedded).expect("writing c_bindings.rs");
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

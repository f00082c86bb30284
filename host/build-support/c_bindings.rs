//! The C bindings of Warden's `plugin` world, from wit-bindgen's C
//! generator. Shared by two build scripts: `host/cli/build.rs` embeds them
//! for `warden new --lang c`, and `tests/build.rs` builds the C guest with
//! them.

use std::path::{Path, PathBuf};

/// Generates the bindings of the `plugin` world in the WIT package at `wit`
/// into `dir` (`plugin.h`, `plugin.c`, `plugin_component_type.o`), and
/// returns the files written, by name.
pub fn generate(wit: &Path, dir: &Path) -> Vec<(String, PathBuf)> {
    std::fs::create_dir_all(dir).expect("creating the C bindings folder");
    let mut resolve = wit_bindgen_core::wit_parser::Resolve::default();
    let (package, _) = resolve.push_dir(wit).expect("Warden's WIT package parses");
    let world = resolve
        .select_world(&[package], Some("plugin"))
        .expect("Warden's WIT package has the plugin world");
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)
        .expect("generating the C bindings");
    files
        .iter()
        .map(|(name, contents)| {
            let path = dir.join(name);
            std::fs::write(&path, contents).expect("writing the C bindings");
            (name.to_owned(), path)
        })
        .collect()
}

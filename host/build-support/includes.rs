//! Writes files for `include!`: a Rust slice of `(name, MACRO!(path))`
//! pairs. Shared by the build scripts of `host/cli` (the WIT package and the
//! C bindings) and `host/export` (the components it composes with plugins).

use std::fmt::Write as _;
use std::path::Path;

/// Writes `file` as a Rust slice expression of `(name, MACRO!(path))`
/// pairs, where `MACRO` is `include_macro` (`include_str` or `include_bytes`).
pub fn write_includes<'a>(
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

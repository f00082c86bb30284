//! Plugins run by name from a manifest (`--manifest`), and the manifest the
//! README shows.

use std::path::Path;

use crate::support::{assert_status, json, kv_store, warden, write_file};

/// The repository's manifest, which the README reproduces.
fn manifest() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../warden.toml")
}

#[test]
fn the_manifest_runs_plugins_by_name() {
    let manifest = manifest();
    let manifest = manifest.to_str().unwrap();
    let (value, code) = json(&[
        "run",
        "--manifest",
        manifest,
        "hello",
        "count-vowels",
        "--input",
        "hello world",
    ]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"], "3");
    assert!(
        value["fuel_consumed"].as_u64().unwrap() > 0,
        "the manifest's fuel limit turns metering on"
    );

    let dir = tempfile::tempdir().unwrap();
    let store = kv_store(&dir);
    let (value, code) = json(&[
        "run",
        "--manifest",
        manifest,
        "probe",
        "config-get",
        "--input",
        "colour",
        "--kv-store",
        &store,
    ]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"], "blue");
    let (value, _) = json(&[
        "run",
        "--manifest",
        manifest,
        "probe",
        "env",
        "--input",
        "GREETING",
        "--kv-store",
        &store,
    ]);
    assert_eq!(value["output"], "hello from the manifest");

    let output = warden(&["run", "--manifest", manifest, "nonesuch"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("declares no plugin `nonesuch`") && stderr.contains("hello, probe"),
        "{stderr}"
    );
}

#[test]
fn a_bad_manifest_points_at_the_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        dir.path(),
        "warden.toml",
        b"[plugins.hello]\npath = \"hello.wasm\"\n\n[plugins.hello.limits]\ntimeout = \"soon\"\n",
    );
    let output = warden(&["run", "--manifest", &path, "hello"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("line 5") && stderr.contains("invalid duration `soon`"),
        "{stderr}"
    );
}

#[test]
fn the_readme_shows_the_manifest_the_tests_use() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let manifest = std::fs::read_to_string(manifest()).unwrap();
    assert!(
        readme.contains(&manifest),
        "README.md must contain warden.toml verbatim"
    );
}

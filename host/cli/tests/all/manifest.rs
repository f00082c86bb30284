//! Plugins run by name from a manifest (`--manifest`), and the manifest the
//! README shows; the limits a manifest and the flags both set, read and
//! checked alike.

use std::path::Path;

use crate::support::{Scratch, assert_status, json, kv_store, stderr_of, warden, write_file};

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

/// Limits under which no call could succeed are refused when the manifest
/// is read, at the line and key, not at the first call.
#[test]
fn a_manifest_refuses_limits_that_would_fail_every_call() {
    let shop = Scratch::with_hello();
    for (setting, line, expected) in [
        (
            "[plugins.hello.limits]\nmemory = 64",
            5,
            "64 bytes is below the smallest memory (64 KiB, one WebAssembly page); give at least 64KiB",
        ),
        (
            "[plugins.hello.limits]\ntimeout = \"0s\"",
            5,
            "`0s` is zero; give a duration longer than zero",
        ),
        (
            "[defaults.limits]\nfuel = 0",
            5,
            "a fuel limit of 0 stops every call before it starts",
        ),
        (
            "[plugins.hello.grants]\nhttp_total_timeout = \"0ms\"",
            5,
            "`0ms` is zero",
        ),
        ("[serve]\nidle_timeout = \"0s\"", 5, "`0s` is zero"),
        (
            "[plugins.hello.grants]\nkv = \"kv.sqlite\"",
            5,
            "`kv = \"kv.sqlite\"`: `kv` takes `true` (the default location) or a table: `kv = { path = \"kv.sqlite\" }`",
        ),
    ] {
        let text = format!("[plugins.hello]\npath = \"hello.wasm\"\n\n{setting}\n");
        let manifest = write_file(shop.dir.path(), "warden.toml", text.as_bytes());
        let output = shop.run(&[
            "run",
            "--manifest",
            &manifest,
            "hello",
            "echo",
            "--unsigned",
            "allow",
        ]);
        assert_eq!(output.status.code(), Some(2), "{setting}");
        let stderr = stderr_of(&output);
        assert!(
            stderr.contains(&format!("line {line}")) && stderr.contains(expected),
            "{setting}: {stderr}"
        );
        assert!(!stderr.contains("untagged"), "{stderr}");
    }
}

/// The flags take the manifest's forms and refuse what it refuses: sizes in
/// Kubernetes' units and compound durations work, and each value reaches
/// the limit it names.
#[test]
fn flags_take_kubernetes_sizes_and_compound_durations_and_refuse_what_the_manifest_refuses() {
    let shop = Scratch::with_hello();
    let hello = shop.path("hello.wasm");
    let run = |flags: &[&str]| {
        let mut args = vec![
            "run",
            "--json",
            &*hello,
            "echo",
            "--input",
            "x",
            "--unsigned",
            "allow",
        ];
        args.extend_from_slice(flags);
        shop.run(&args)
    };
    // The hello plugin grows its memory past 1 MiB: `1Mi` is that limit.
    let (value, code) = crate::support::report(&run(&["--memory", "1Mi", "--timeout", "1m30s"]));
    assert_status(&value, code, "memory-limit", 22);
    assert!(
        value["error"].as_str().unwrap().contains("(limit 1 MiB)"),
        "{value}"
    );
    let (value, code) = crate::support::report(&run(&["--memory", "16Mi", "--timeout", "1m30s"]));
    assert_status(&value, code, "ok", 0);

    for (flags, expected) in [
        (
            &["--memory", "64"][..],
            "64 bytes is below the smallest memory (64 KiB, one WebAssembly page)",
        ),
        (
            &["--timeout", "0s"],
            "`0s` is zero; give a duration longer than zero",
        ),
        (
            &["--fuel", "0"],
            "a fuel limit of 0 stops every call before it starts",
        ),
        (&["--timeout", "1m30"], "such as 300ms, 1.5s, 2m or 1m30s"),
        (&["--memory", "lots"], "also written 64Ki, 64Mi, 1Gi"),
        (
            &["--config", "k"],
            "invalid configuration value `k`: expected KEY=VALUE",
        ),
    ] {
        let output = run(flags);
        assert_eq!(output.status.code(), Some(2), "{flags:?}");
        let stderr = stderr_of(&output);
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
    }

    // Above what the runtime gives an instance: the message says how much
    // that is and which setting to lower.
    let (value, code) = crate::support::report(&run(&["--memory", "64GiB"]));
    assert_status(&value, code, "invalid-config", 2);
    let error = value["error"].as_str().unwrap();
    assert!(
        error.contains("the memory limit (64 GiB) is above the most this runtime gives an instance (4 GiB); set --memory (or `memory` under the manifest's [limits]) to 4GiB or less"),
        "{error}"
    );
}

//! The `warden` binary end to end: the JSON contract, exit codes and messages.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use warden_tests::guests;

fn warden(args: &[&str]) -> Output {
    warden_with_stdin(args, b"")
}

fn warden_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting warden");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin)
        .expect("writing stdin");
    child.wait_with_output().expect("running warden")
}

/// Runs warden with `--json` and returns the parsed object and exit code.
fn json(args: &[&str]) -> (Value, i32) {
    let mut all = args.to_vec();
    all.push("--json");
    let output = warden(&all);
    let stdout = String::from_utf8(output.stdout).expect("JSON is UTF-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one JSON line on stdout, got {stdout:?}"
    );
    let value = serde_json::from_str(lines[0]).expect("stdout is JSON");
    (value, output.status.code().expect("exit code"))
}

fn assert_status(value: &Value, code: i32, status: &str, expected_code: i32) {
    assert_eq!(value["status"], status, "{value}");
    assert_eq!(code, expected_code, "{value}");
}

#[test]
fn run_prints_the_output_and_a_one_line_report() {
    let output = warden(&[
        "run",
        guests::HELLO,
        "count-vowels",
        "--input",
        "hello world",
    ]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(output.stdout, b"3");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("warden: ok · in "), "{stderr}");
    assert!(stderr.contains("peak memory"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn run_json_has_the_documented_fields() {
    let (value, code) = json(&[
        "run",
        guests::HELLO,
        "greet",
        "--input",
        "Ada",
        "--fuel",
        "100000000",
    ]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"], "Hello, Ada!");
    assert_eq!(value["output_encoding"], "utf-8");
    assert_eq!(value["error"], Value::Null);
    assert!(value["fuel_consumed"].as_u64().unwrap() > 0);
    assert!(value["peak_memory_bytes"].as_u64().unwrap() > 0);
    assert!(value["duration_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(value["stdout"], "Hello, Ada!\n");
    assert_eq!(value["stderr"], "");
    assert_eq!(
        value["logs"],
        serde_json::json!([{"level": "info", "context": "greet", "message": "greeted Ada"}])
    );
    let keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys[0], "status", "status comes first");
}

#[test]
fn fuel_is_null_when_off() {
    let (value, code) = json(&["run", guests::HELLO, "echo", "--input", "x"]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["fuel_consumed"], Value::Null);
}

#[test]
fn input_comes_from_stdin_or_a_file_and_binary_output_is_base64() {
    let output = warden_with_stdin(
        &["run", guests::HELLO, "count-vowels"],
        b"a e i o u from stdin",
    );
    assert_eq!(output.stdout, b"7");

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.bin");
    std::fs::write(&input, [0xff, 0x00, 0x61]).unwrap();
    let (value, code) = json(&[
        "run",
        guests::HELLO,
        "echo",
        "--input-file",
        input.to_str().unwrap(),
    ]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output_encoding"], "base64");
    assert_eq!(value["output"], "/wBh");
}

#[test]
fn plugin_errors_name_the_variant() {
    let (value, code) = json(&["run", guests::HELLO, "shout"]);
    assert_status(&value, code, "plugin-error", 1);
    assert_eq!(value["plugin_error"]["variant"], "unknown-action");
    assert_eq!(value["plugin_error"]["detail"], "shout");
    assert_eq!(value["output"], Value::Null);
}

#[test]
fn an_infinite_loop_times_out_within_a_small_margin() {
    let started = Instant::now();
    let (value, code) = json(&["run", guests::HOSTILE, "loop", "--timeout", "300ms"]);
    let elapsed = started.elapsed();
    assert_status(&value, code, "timeout", 20);
    assert_eq!(value["error"], "timed out after 300 ms");
    let duration_ms = value["duration_ms"].as_f64().unwrap();
    assert!((300.0..550.0).contains(&duration_ms), "{duration_ms}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[test]
fn sleeping_forever_times_out() {
    let (value, code) = json(&["run", guests::HOSTILE, "sleep", "--timeout", "200ms"]);
    assert_status(&value, code, "timeout", 20);
}

#[test]
fn fuel_exhaustion() {
    let (value, code) = json(&["run", guests::HOSTILE, "loop", "--fuel", "1000000"]);
    assert_status(&value, code, "out-of-fuel", 21);
    assert_eq!(value["fuel_consumed"], 1_000_000);
}

#[test]
fn a_memory_bomb() {
    let (value, code) = json(&["run", guests::HOSTILE, "grow-memory", "--memory", "8MiB"]);
    assert_status(&value, code, "memory-limit", 22);
    assert!(value["peak_memory_bytes"].as_u64().unwrap() <= 8 << 20);
    assert!(
        value["error"].as_str().unwrap().contains("limit 8 MiB"),
        "{value}"
    );
}

#[test]
fn unbounded_recursion() {
    let (value, code) = json(&["run", guests::HOSTILE, "recurse"]);
    assert_status(&value, code, "stack-overflow", 23);
}

#[test]
fn a_panic() {
    let (value, code) = json(&["run", guests::HOSTILE, "panic"]);
    assert_status(&value, code, "trap", 24);
    assert!(
        value["stderr"]
            .as_str()
            .unwrap()
            .contains("panics on purpose")
    );
    let output = warden(&["run", guests::HOSTILE, "panic"]);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("[stderr] "), "{stderr}");
    assert!(
        stderr.contains("warden: trap: wasm `unreachable`"),
        "{stderr}"
    );
    assert!(stderr.contains("wasm backtrace:"), "{stderr}");
}

#[test]
fn huge_output() {
    let (value, code) = json(&[
        "run",
        guests::HOSTILE,
        "output",
        "--input",
        "2000000",
        "--max-output",
        "1MiB",
    ]);
    assert_status(&value, code, "output-too-large", 25);
}

#[test]
fn huge_input() {
    let (value, code) = json(&[
        "run",
        guests::HELLO,
        "echo",
        "--input",
        "0123456789abcdef",
        "--max-input",
        "8",
    ]);
    assert_status(&value, code, "input-too-large", 26);
    let output = warden_with_stdin(
        &[
            "run",
            guests::HELLO,
            "echo",
            "--max-input",
            "1KiB",
            "--json",
        ],
        &[b'x'; 5000],
    );
    let value: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["status"], "input-too-large");
    assert!(
        value["error"].as_str().unwrap().contains("5000 bytes"),
        "{value}"
    );
}

#[test]
fn writing_into_a_read_only_preopen_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file.txt"), "original").unwrap();
    let grant = format!("{}::/data", dir.path().display());
    let (value, code) = json(&[
        "run",
        guests::HOSTILE,
        "write-file",
        "--input",
        "/data/file.txt",
        "--dir",
        &grant,
    ]);
    assert_status(&value, code, "plugin-error", 1);
    assert!(
        value["error"].as_str().unwrap().contains("not permitted"),
        "{value}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("file.txt")).unwrap(),
        "original"
    );

    let grant = format!("{}::/data:rw", dir.path().display());
    let (value, code) = json(&[
        "run",
        guests::HOSTILE,
        "write-file",
        "--input",
        "/data/file.txt",
        "--dir",
        &grant,
    ]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("file.txt")).unwrap(),
        "overwritten"
    );
}

#[test]
fn reading_outside_any_preopen_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let grant = format!("{}::/data", dir.path().display());
    for path in ["/etc/passwd", "/data/../../etc/passwd"] {
        let (value, code) = json(&[
            "run",
            guests::HOSTILE,
            "read-file",
            "--input",
            path,
            "--dir",
            &grant,
        ]);
        assert_status(&value, code, "plugin-error", 1);
        assert_eq!(value["output"], Value::Null);
    }
}

#[test]
fn environment_variables_are_granted_one_by_one() {
    let (value, code) = json(&[
        "run",
        guests::HOSTILE,
        "env",
        "--input",
        "TOKEN",
        "--env",
        "TOKEN=abc",
    ]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"], "abc");
    let (value, code) = json(&["run", guests::HOSTILE, "env", "--input", "PATH"]);
    assert_status(&value, code, "plugin-error", 1);
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn things_that_are_not_plugins_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let random = write_file(dir.path(), "random.wasm", b"\x13\x37 not wasm at all");
    let module = write_file(
        dir.path(),
        "module.wasm",
        &wat::parse_str("(module)").unwrap(),
    );
    for (path, reason) in [
        (random.as_str(), "not a WebAssembly binary"),
        (module.as_str(), "core WebAssembly module"),
        (guests::COMMAND, "wasi:cli command"),
    ] {
        for command in ["run", "inspect"] {
            let (value, code) = json(&[command, path]);
            assert_status(&value, code, "invalid-plugin", 10);
            let error = value["error"].as_str().unwrap();
            assert!(error.contains(reason), "{command} {path}: {error}");
        }
    }
}

#[test]
fn an_unreadable_plugin_is_an_io_error() {
    let (value, code) = json(&["run", "/no/such/plugin.wasm"]);
    assert_status(&value, code, "io-error", 11);
    let dir = tempfile::tempdir().unwrap();
    let (value, code) = json(&["run", dir.path().to_str().unwrap()]);
    assert_status(&value, code, "io-error", 11);
}

#[test]
fn bad_flags_are_usage_errors() {
    for args in [
        &["run", guests::HELLO, "--timeout", "soon"][..],
        &["run", guests::HELLO, "--memory", "-1"],
        &["run", guests::HELLO, "--dir", "no-separator"],
        &["run", guests::HELLO, "--env", "NOEQUALS"],
        &["run"],
        &["frobnicate"],
    ] {
        let output = warden(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains("error"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_missing_directory_grant_is_a_usage_error() {
    let (value, code) = json(&["run", guests::HELLO, "--dir", "/no/such/dir::/data"]);
    assert_status(&value, code, "invalid-config", 2);
    assert!(value["error"].as_str().unwrap().contains("/no/such/dir"));
}

#[test]
fn inspect_shows_metadata_imports_exports_and_hash() {
    let (value, code) = json(&["inspect", guests::HELLO]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["metadata"]["name"], "hello");
    assert_eq!(
        value["metadata"]["actions"],
        serde_json::json!(["count-vowels", "echo", "greet"])
    );
    let bytes = std::fs::read(guests::HELLO).unwrap();
    assert_eq!(value["size"], bytes.len());
    assert_eq!(value["sha256"].as_str().unwrap().len(), 64);
    let imports = value["imports"].as_array().unwrap();
    assert!(imports.contains(&"wasi:logging/logging@0.1.0-draft".into()));
    assert_eq!(
        value["exports"],
        serde_json::json!(["warden:plugin/guest@0.1.0"])
    );

    let output = warden(&["inspect", guests::HELLO]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.starts_with("hello 0.1.0: "), "{stdout}");
    assert!(
        stdout.contains("actions: count-vowels, echo, greet"),
        "{stdout}"
    );
}

#[test]
fn help_documents_the_exit_codes() {
    let output = warden(&["run", "--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8(output.stdout).unwrap();
    for status in ["timeout", "out-of-fuel", "memory-limit", "invalid-plugin"] {
        assert!(help.contains(status), "{status} missing from --help");
    }
}

//! `warden run`: the report and its JSON fields, input, the limits that end
//! a call (each with its status and exit code), what is not a plugin, and
//! `--watch`.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use warden_tests::guests;

use crate::support::{
    Scratch, assert_status, at_home, json, report, stderr_of, wait_bounded, warden,
    warden_with_stdin, write_file,
};

#[test]
fn run_prints_the_output_and_a_one_line_report() {
    let output = warden(&[
        "run",
        guests::HELLO,
        "count-vowels",
        "--input",
        "hello world",
        "--unsigned",
        "allow",
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
fn a_failing_init_has_its_own_status_and_exit_code() {
    let (value, code) = json(&[
        "run",
        guests::HOSTILE,
        "calls",
        "--env",
        "HOSTILE_INIT=fail",
    ]);
    assert_status(&value, code, "init-failed", 12);
    assert_eq!(value["plugin_error"]["variant"], "failed");
    assert_eq!(value["plugin_error"]["detail"], "init refuses on purpose");
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
    let (value, _) = report(&output);
    assert_eq!(value["status"], "input-too-large");
    assert!(
        value["error"].as_str().unwrap().contains("5000 bytes"),
        "{value}"
    );
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

/// `warden run --watch`: runs again when the plugin file changes, reports a
/// broken replacement and keeps the previous version, and stops on SIGINT
/// with the last run's exit code.
#[test]
fn run_watch_reruns_on_changes_and_stops_on_interrupt() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("hello.wasm");
    std::fs::copy(guests::HELLO, &plugin).unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut child = at_home(
        home.path(),
        &[
            "run",
            plugin.to_str().unwrap(),
            "count-vowels",
            "--input",
            "hello world",
            "--unsigned",
            "allow",
            "--watch",
        ],
    )
    .spawn()
    .expect("starting warden");
    // Read both streams on threads, so that a missing line fails the test
    // after a timeout instead of hanging it.
    let lines_of = |stream: Box<dyn std::io::Read + Send>| {
        let (lines, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        receiver
    };
    let stdout_lines = lines_of(Box::new(child.stdout.take().unwrap()));
    let stderr_lines = lines_of(Box::new(child.stderr.take().unwrap()));
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match stderr_lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no stderr line with {needle:?}"),
            }
        }
    };
    let next_output = || {
        stdout_lines
            .recv_timeout(Duration::from_secs(30))
            .expect("an output line")
    };
    assert_eq!(next_output(), "3");
    wait_for("warden: ok");

    // A new version: the same plugin with a custom section appended.
    let mut changed = std::fs::read(guests::HELLO).unwrap();
    changed.extend_from_slice(&[0, 3, 1, b'v', 2]);
    let staged = dir.path().join("staged.wasm");
    std::fs::write(&staged, &changed).unwrap();
    std::fs::rename(&staged, &plugin).unwrap();
    wait_for("hello changed");
    assert_eq!(next_output(), "3");

    std::fs::write(&staged, b"not wasm").unwrap();
    std::fs::rename(&staged, &plugin).unwrap();
    let refused = wait_for("was refused");
    assert!(refused.contains("previous one keeps serving"), "{refused}");

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// After its arguments parse, `warden run --json` answers every failure
/// with its one JSON object, with the status and exit code of the table.
#[test]
fn run_json_reports_failures_before_the_call_as_one_object() {
    let scratch = Scratch::with_hello();
    let manifest = write_file(
        scratch.dir.path(),
        "warden.toml",
        format!("[plugins.hello]\npath = {:?}\n", scratch.path("hello.wasm")).as_bytes(),
    );
    let missing_input = scratch.path("missing-input.txt");
    let missing_manifest = scratch.path("no-such.toml");
    let hello = scratch.path("hello.wasm");
    let cases: [(Vec<&str>, &str, &str); 4] = [
        (
            vec!["--manifest", &manifest, "nobody", "echo"],
            "nobody",
            "declares no plugin `nobody`; it declares: hello",
        ),
        (
            vec!["--manifest", &missing_manifest, "hello"],
            "hello",
            "cannot read manifest",
        ),
        (
            vec![&hello, "echo", "--input-file", &missing_input],
            "hello",
            "cannot read --input-file",
        ),
        (
            vec![&hello, "echo", "--kv-namespace", "wallet"],
            "hello",
            "--kv-namespace needs a kv grant",
        ),
    ];
    for (args, plugin, message) in cases {
        let (value, code) = scratch.run_json(&args);
        assert_status(&value, code, "invalid-config", 2);
        assert_eq!(value["plugin"], plugin, "{value}");
        assert_eq!(value["output"], Value::Null, "{value}");
        let error = value["error"].as_str().unwrap();
        assert!(error.contains(message), "{args:?}: {error}");
        // Without --json, the same words on stderr and nothing on stdout.
        let output = scratch.run(&[&["run"][..], &args].concat());
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        assert!(stderr_of(&output).contains(message), "{args:?}");
    }
}

#[test]
fn an_unknown_action_names_the_actions_the_plugin_has() {
    let scratch = Scratch::with_hello();
    let hello = scratch.path("hello.wasm");
    let expected = "plugin error: the plugin has no action `shout`; \
                    its actions are: count-vowels, echo, greet";
    let (value, code) = scratch.run_json(&[&hello, "shout", "--unsigned", "allow"]);
    assert_status(&value, code, "plugin-error", 1);
    assert_eq!(value["error"], expected);
    assert_eq!(
        value["plugin_error"],
        serde_json::json!({"variant": "unknown-action", "detail": "shout"})
    );
    let output = scratch.run(&["run", &hello, "shout", "--unsigned", "allow"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr_of(&output);
    assert!(
        stderr.starts_with(&format!("warden: {expected} · in ")),
        "{stderr}"
    );
    assert!(!stderr.contains("PluginError"), "no Rust names: {stderr}");
}

#[test]
fn run_without_an_action_lists_the_actions_and_exits_with_the_usage_code() {
    let scratch = Scratch::with_hello();
    let hello = scratch.path("hello.wasm");
    let expected = "no action was given; the plugin's actions are: \
                    count-vowels, echo, greet; name one after the plugin";
    let output = scratch.run(&["run", &hello, "--unsigned", "allow"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = stderr_of(&output);
    assert!(
        stderr.starts_with(&format!("warden: {expected} · in ")),
        "{stderr}"
    );
    let (value, code) = scratch.run_json(&[&hello, "--unsigned", "allow"]);
    assert_status(&value, code, "invalid-config", 2);
    assert_eq!(value["action"], "");
    assert_eq!(value["error"], expected);
    assert_eq!(value["plugin_error"], Value::Null, "{value}");
}

/// Exit code 40: Ctrl-C in `--watch` mode cancels the call in flight once
/// the grace period is over, and the run reports `cancelled`.
#[test]
fn an_interrupted_watch_cancels_the_call_with_exit_code_40() {
    use std::io::{BufRead, BufReader};
    let scratch = Scratch::new();
    let mut child = scratch
        .command(&[
            "run",
            "--json",
            guests::HOSTILE,
            "sleep",
            "--timeout",
            "60s",
            "--watch",
        ])
        .spawn()
        .expect("starting warden");
    // The unsigned guest's warning comes once it is loaded, just before its
    // call starts.
    let stderr = child.stderr.take().unwrap();
    let (first_line, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut stderr = BufReader::new(stderr);
        let mut line = String::new();
        let _ = stderr.read_line(&mut line);
        let _ = first_line.send(line);
        // Drained to the end: warden still writes to it.
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
    });
    let line = receiver
        .recv_timeout(Duration::from_secs(60))
        .expect("a warning line within a minute");
    assert!(line.contains("running an unverified plugin"), "{line}");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = wait_bounded(child, Duration::from_secs(30));
    let (value, code) = report(&output);
    assert_status(&value, code, "cancelled", 40);
}

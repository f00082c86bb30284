//! `warden exec`: WASI programs (components and preview 1 modules) with their
//! arguments, exit codes, grants and limits.

use std::io::Write;
use std::time::Duration;

use warden_tests::guests;

use std::process::Stdio;

use crate::support::{
    Scratch, assert_status, json, report, stderr_of, wait_bounded, warden, warden_at_home,
    warden_with_stdin, write_file,
};

#[test]
fn exec_passes_output_arguments_and_exit_codes_through() {
    let output = warden(&[
        "exec",
        guests::COMMAND,
        "--unsigned",
        "allow",
        "--",
        "args",
        "a",
        "b c",
    ]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(output.stdout, b"a\nb c\n");
    assert!(
        output.stderr.is_empty(),
        "nothing but the program's own output"
    );

    let output = warden(&["exec", guests::COMMAND, "--", "exit", "42"]);
    assert_eq!(output.status.code(), Some(42));
    let output = warden(&[
        "exec",
        guests::COMMAND_PREVIEW1,
        "--",
        "args",
        "from",
        "preview 1",
    ]);
    assert_eq!(output.stdout, b"from\npreview 1\n");
    let output = warden(&["exec", guests::COMMAND_PREVIEW1, "--", "exit", "42"]);
    assert_eq!(
        output.status.code(),
        Some(42),
        "preview 1 exit codes pass through"
    );
}

#[test]
fn exec_grants_environment_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("note.txt"), "granted file").unwrap();
    let root = format!("{}::/", dir.path().display());
    for program in [guests::COMMAND, guests::COMMAND_PREVIEW1] {
        let output = warden(&["exec", program, "--dir", &root, "--", "cat", "/note.txt"]);
        assert_eq!(output.stdout, b"granted file");
        let output = warden(&["exec", program, "--env", "NAME=value", "--", "env", "NAME"]);
        assert_eq!(output.stdout, b"value\n");
        // The program exits 3 when the variable is not set.
        let output = warden(&["exec", program, "--unsigned", "allow", "--", "env", "HOME"]);
        assert_eq!(output.status.code(), Some(3), "nothing is inherited");
        assert_eq!(output.stdout, b"");
        assert_eq!(stderr_of(&output), "HOME is not set\n");
    }
}

#[test]
fn exec_reports_json_and_holds_the_limits() {
    let (value, code) = json(&["exec", guests::COMMAND, "--", "args", "x"]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["exit_code"], 0);
    assert_eq!(value["stdout"], "x\n");
    let (value, code) = json(&["exec", guests::COMMAND, "--", "exit", "3"]);
    assert_status(&value, code, "ok", 3);
    assert_eq!(value["exit_code"], 3);

    for program in [guests::COMMAND, guests::COMMAND_PREVIEW1] {
        let (value, code) = json(&["exec", program, "--timeout", "300ms", "--", "loop"]);
        assert_status(&value, code, "timeout", 20);
        let (value, code) = json(&["exec", program, "--memory", "16MiB", "--", "grow"]);
        assert_status(&value, code, "memory-limit", 22);
        let output = warden(&["exec", program, "--timeout", "300ms", "--", "loop"]);
        assert_eq!(output.status.code(), Some(20));
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            stderr.contains("warden: timed out after 300 ms"),
            "{stderr}"
        );
    }
    let (value, code) = json(&["exec", guests::HELLO]);
    assert_status(&value, code, "invalid-plugin", 10);
    assert!(value["error"].as_str().unwrap().contains("warden run"));
}

#[test]
fn exec_runs_preview1_programs_with_exact_exit_codes_and_arguments() {
    let home = tempfile::tempdir().unwrap();
    for code in [0, 1, 33, 255] {
        let code_arg = code.to_string();
        let args = [
            "exec",
            guests::COMMAND_PREVIEW1,
            "--unsigned",
            "allow",
            "--",
        ];
        let output = warden_at_home(home.path(), &[&args[..], &["exit", &code_arg]].concat());
        assert_eq!(output.status.code(), Some(code), "exit {code}");
        let output = warden_at_home(
            home.path(),
            &[&args[..1], &["--json"], &args[1..], &["exit", &code_arg]].concat(),
        );
        let (value, _) = report(&output);
        assert_eq!(value["status"], "ok");
        assert_eq!(value["exit_code"], code);
    }
    let awkward = [
        "two words",
        "\"quoted\" 'text'",
        "line one\nline two",
        "ünïcode → 🦀",
    ];
    let mut args = vec![
        "exec",
        guests::COMMAND_PREVIEW1,
        "--unsigned",
        "allow",
        "--env",
        "QUOTED=say \"hi\"\nand 'bye'",
        "--",
    ];
    args.push("argv");
    args.extend(awkward);
    let output = warden_at_home(home.path(), &args);
    assert_eq!(output.status.code(), Some(0));
    let expected: String = awkward.iter().map(|arg| format!("{arg}\0")).collect();
    assert_eq!(String::from_utf8(output.stdout).unwrap(), expected);
    let output = warden_at_home(home.path(), &[&args[..7], &["environ"]].concat());
    assert_eq!(output.stdout, b"QUOTED=say \"hi\"\nand 'bye'\0");
}

/// `--max-output` bounds what a program writes to stdout (1 MiB unless it
/// is given); what goes past it is dropped, and stderr says so.
#[test]
fn exec_says_when_it_drops_output_and_takes_max_output_as_the_bound() {
    let scratch = Scratch::new();
    std::fs::create_dir(scratch.path("data")).unwrap();
    let text: Vec<u8> = (0..5000).map(|i| b'a' + (i % 26) as u8).collect();
    write_file(&scratch.dir.path().join("data"), "big.txt", &text);
    let grant = format!("{}::/", scratch.path("data"));
    let cat = |extra: &[&str]| {
        let args = [
            &[
                "exec",
                guests::COMMAND,
                "--unsigned",
                "allow",
                "--dir",
                &grant,
            ][..],
            extra,
            &["--", "cat", "/big.txt"],
        ]
        .concat();
        scratch.run(&args)
    };
    let output = cat(&[]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(output.stdout, text, "under the default 1 MiB, all of it");
    assert_eq!(stderr_of(&output), "");

    let output = cat(&["--max-output", "1KiB"]);
    assert_eq!(output.status.code(), Some(0), "the program's own code");
    assert_eq!(output.stdout, &text[..1024]);
    assert_eq!(
        stderr_of(&output),
        "warden: the program's stdout went past its limit of 1 KiB (--max-output); \
         the last 3.9 KiB were dropped\n"
    );

    let args = [
        "exec",
        "--json",
        guests::COMMAND,
        "--unsigned",
        "allow",
        "--dir",
        &grant,
        "--max-output",
        "1KiB",
        "--",
        "cat",
        "/big.txt",
    ];
    let (value, code) = report(&scratch.run(&args));
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["stdout"].as_str().unwrap().len(), 1024);
    assert_eq!(value["stdout_dropped_bytes"], 5000 - 1024);
}

/// The stderr cap (the manifest's `stderr`): forwarded up to the bound,
/// then dropped, and said so.
#[test]
fn exec_caps_stderr_and_says_so() {
    let scratch = Scratch::new();
    let manifest = write_file(
        scratch.dir.path(),
        "warden.toml",
        format!(
            "[plugins.command]\npath = {:?}\n[plugins.command.limits]\nstderr = 8\n\
             [plugins.command.trust]\nunsigned = \"allow\"\n",
            guests::COMMAND
        )
        .as_bytes(),
    );
    let output = scratch.run(&[
        "exec",
        "--manifest",
        &manifest,
        "command",
        "--",
        "env",
        "HOME",
    ]);
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(
        stderr_of(&output),
        "HOME is \nwarden: the program's stderr went past its limit of 8 B (`stderr`); \
         the last 8 B were dropped\n"
    );
}

/// A preview 1 program that copies its stdin to its stdout.
const CAT_STDIN: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    ;; One buffer at 64 for both directions; iovecs at 0 (read) and 32 (write).
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 1024))
    (block $done
      (loop $copy
        (br_if $done (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)))
        (br_if $done (i32.eqz (i32.load (i32.const 16))))
        (i32.store (i32.const 32) (i32.const 64))
        (i32.store (i32.const 36) (i32.load (i32.const 16)))
        (drop (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 48)))
        (br $copy)))))
"#;

/// Stdin passes through to the program, read to its end before it starts
/// and bounded by `--max-input`.
#[test]
fn exec_passes_stdin_through_within_max_input() {
    let scratch = Scratch::new();
    let program = write_file(
        scratch.dir.path(),
        "cat-stdin.wasm",
        &wat::parse_str(CAT_STDIN).unwrap(),
    );
    let output = warden_with_stdin(
        &["exec", &program, "--unsigned", "allow"],
        b"piped\ninto the program",
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_eq!(output.stdout, b"piped\ninto the program");

    let output = warden_with_stdin(
        &["exec", "--json", &program, "--max-input", "8"],
        b"sixteen bytes...",
    );
    let (value, code) = report(&output);
    assert_status(&value, code, "input-too-large", 26);
    assert_eq!(
        value["error"],
        "input of 16 bytes exceeds the limit of 8 bytes"
    );

    // Nothing piped: the program reads the end of its input at once.
    let output = scratch.run(&["exec", &program, "--unsigned", "allow"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_eq!(output.stdout, b"");
}

/// `--env NAME` passes Warden's own value of NAME, as `wasmtime run` does;
/// nothing else is inherited.
#[test]
fn exec_env_without_a_value_passes_the_hosts_value() {
    let scratch = Scratch::new();
    for program in [guests::COMMAND, guests::COMMAND_PREVIEW1] {
        let mut command = scratch.command(&[
            "exec",
            program,
            "--unsigned",
            "allow",
            "--env",
            "WARDEN_TEST_GREETING",
            "--",
            "environ",
        ]);
        command
            .env("WARDEN_TEST_GREETING", "from the host")
            .env("WARDEN_TEST_OTHER", "not passed")
            .stdin(Stdio::piped());
        let mut child = command.spawn().expect("starting warden");
        child.stdin.take().unwrap().write_all(b"").unwrap();
        let output = wait_bounded(child, Duration::from_secs(60));
        assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
        assert_eq!(output.stdout, b"WARDEN_TEST_GREETING=from the host\0");
    }
}

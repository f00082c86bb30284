//! `warden exec`: WASI programs (components and preview 1 modules) with their
//! arguments, exit codes, grants and limits.

use warden_tests::guests;

use crate::support::{assert_status, json, report, warden, warden_at_home};

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
        let output = warden(&["exec", program, "--", "env", "HOME"]);
        assert_ne!(output.status.code(), Some(0), "nothing is inherited");
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

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

/// Runs warden with `--json` (right after the subcommand, before any `--`)
/// and returns the parsed object and exit code.
fn json(args: &[&str]) -> (Value, i32) {
    let mut all = args.to_vec();
    all.insert(1, "--json");
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

// ---- Capabilities, grants and the manifest ----

fn kv_store(dir: &tempfile::TempDir) -> String {
    dir.path().join("kv.sqlite").to_str().unwrap().to_owned()
}

/// Runs `args` and returns the exit code and stderr, asserting that warden
/// did not panic.
fn refused(args: &[&str]) -> (i32, String) {
    let output = warden(args);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    (output.status.code().expect("exit code"), stderr)
}

#[test]
fn operator_mistakes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let unclosed = write_file(
        dir.path(),
        "unclosed.toml",
        b"[plugins.hello\npath = \"x\"\n",
    );
    let unknown_key = write_file(
        dir.path(),
        "unknown.toml",
        format!(
            "[plugins.hello]\npath = {:?}\ncolour = \"blue\"\n",
            guests::HELLO
        )
        .as_bytes(),
    );
    let directory = write_file(
        dir.path(),
        "directory.toml",
        b"[plugins.hello]\npath = \"/tmp\"\n",
    );
    let file = write_file(dir.path(), "file", b"not a directory");
    let not_a_store = write_file(dir.path(), "garbage.sqlite", b"not a database");
    let under_a_file = format!("{file}/cache");
    let hello = [guests::HELLO, "count-vowels", "--unsigned", "allow"];
    let probe = [
        guests::PROBE,
        "kv-set",
        "--input",
        "a=1",
        "--unsigned",
        "allow",
    ];
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["run", "--manifest", &unclosed, "hello"],
            2,
            "unclosed table",
        ),
        (
            vec!["run", "--manifest", &unknown_key, "hello"],
            2,
            "unknown field `colour`",
        ),
        (
            vec!["run", "--manifest", &directory, "hello"],
            11,
            "Is a directory",
        ),
        (
            vec!["run", "--manifest", "/no/such.toml", "hello"],
            2,
            "cannot read manifest",
        ),
        (vec!["run", "/no/such/plugin.wasm"], 11, "No such file"),
        (
            [&["run"][..], &hello, &["--cache-dir", "/proc/warden-cache"]].concat(),
            2,
            "cannot create the compile cache",
        ),
        (
            [&["run"][..], &hello, &["--cache-dir", &under_a_file]].concat(),
            2,
            "cannot create the compile cache",
        ),
        (
            [
                &["run"][..],
                &probe,
                &["--kv-store", "/proc/warden-kv/kv.sqlite"],
            ]
            .concat(),
            2,
            "cannot create the kv store's directory",
        ),
        (
            [&["run"][..], &probe, &["--kv-store", &not_a_store]].concat(),
            2,
            "file is not a database",
        ),
    ];
    for (args, expected_code, message) in cases {
        let (code, stderr) = refused(&args);
        assert_eq!(code, expected_code, "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    // A file that is not a store is refused, never overwritten.
    assert_eq!(std::fs::read(&not_a_store).unwrap(), b"not a database");
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args([
            "run",
            plugin.to_str().unwrap(),
            "count-vowels",
            "--input",
            "hello world",
        ])
        .args(["--unsigned", "allow", "--watch"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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

/// The quick starts of `docs/guest-guide.md`, run as written: `warden new`,
/// the build, and `warden run`. Lines marked `# set-up` install a toolchain;
/// `make setup` has installed those for the tests, so they are skipped and
/// the installed toolchains are put on the PATH instead.
fn run_quick_start(language: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let guide = std::fs::read_to_string(root.join("docs/guest-guide.md")).unwrap();
    let fence = format!("```sh quickstart-{language}\n");
    let start = guide
        .find(&fence)
        .unwrap_or_else(|| panic!("no {fence:?} in the guide"))
        + fence.len();
    let block = &guide[start..start + guide[start..].find("```").unwrap()];
    let script: Vec<&str> = block
        .lines()
        .filter(|line| !line.trim_end().ends_with("# set-up"))
        .collect();
    let warden_dir = Path::new(env!("CARGO_BIN_EXE_warden")).parent().unwrap();
    let toolchains = root.join("target/toolchains");
    let path = std::env::join_paths(
        [
            warden_dir.to_path_buf(),
            toolchains.join("python/bin"),
            toolchains.join("js/node_modules/.bin"),
        ]
        .into_iter()
        .chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new("sh");
    command
        .args(["-e", "-c", &script.join("\n")])
        .current_dir(dir.path())
        .env("PATH", path);
    // The host build's settings must not leak into the plugin's build.
    for variable in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        command.env_remove(variable);
    }
    let output = command.output().expect("running the quick start");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("Hello, Ada!"),
        "the {language} quick start failed ({:?}):\n{}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        script.join("\n"),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_guides_quick_start_works_for_rust() {
    run_quick_start("rust");
}

#[test]
fn the_guides_quick_start_works_for_python() {
    run_quick_start("python");
}

#[test]
fn the_guides_quick_start_works_for_js() {
    run_quick_start("js");
}

#[test]
fn the_guides_quick_start_works_for_c() {
    run_quick_start("c");
}

#[test]
fn new_refuses_bad_names_and_existing_folders() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().to_str().unwrap();
    for name in ["Bad", "1st", "trailing-", "a/b", ""] {
        let output = warden(&["new", name, "--lang", "rust", "--dir", parent]);
        assert_eq!(output.status.code(), Some(2), "{name:?}");
    }
    let output = warden(&["new", "taken", "--lang", "c", "--dir", parent]);
    assert!(output.status.success());
    let output = warden(&["new", "taken", "--lang", "c", "--dir", parent]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("already exists"));
}

#[test]
fn componentize_refuses_what_is_not_a_reactor() {
    let dir = tempfile::tempdir().unwrap();
    let module = write_file(
        dir.path(),
        "module.wasm",
        &wat::parse_str("(module)").unwrap(),
    );
    let out = dir.path().join("out.wasm");
    let output = warden(&["componentize", &module, "-o", out.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(10));
    assert!(!out.exists());
}

/// The CLI fuzz corpus (`tests/fuzz/`): every argument list ends in an
/// expected exit code, without a panic or a hang.
#[test]
fn the_cli_fuzz_corpus_ends_in_expected_exit_codes() {
    use warden_tests::fuzz::{self, Target};
    let corpus = Target::Cli.corpus();
    assert!(!corpus.is_empty());
    for (path, input) in corpus {
        let scratch = tempfile::tempdir().unwrap();
        if let Err(why) = fuzz::cli(
            Path::new(env!("CARGO_BIN_EXE_warden")),
            scratch.path(),
            &input,
        ) {
            panic!("{}: {why}", path.display());
        }
    }
}

/// `warden run` killed with SIGKILL in the middle of kv writes: the store
/// opens afterwards and holds whole batches only, and takes new writes.
#[test]
fn a_killed_run_leaves_only_whole_kv_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = kv_store(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args([
            "run",
            guests::PROBE,
            "kv-batches",
            "--input",
            "1000000",
            "--kv-store",
            &store,
            // A plugin file's own namespace is derived from its hash; this
            // one is named, so that `warden kv probe` finds it.
            "--kv-namespace",
            "probe",
            "--timeout",
            "10m",
            "--unsigned",
            "allow",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting warden");
    // Kill it once some batches are in; it would run for minutes otherwise.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
        let listed = warden(&["kv", "probe", "list", "--store", &store]);
        if listed.status.success() && listed.stdout.len() > 5 * 100 * 10 {
            break;
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();

    let listed = warden(&["kv", "probe", "list", "--store", &store]);
    assert!(listed.status.success(), "{listed:?}");
    let keys = String::from_utf8(listed.stdout).unwrap();
    let mut per_batch = std::collections::BTreeMap::new();
    for key in keys.lines() {
        let (batch, _) = key.split_once('-').expect("bBATCH-KEY");
        *per_batch.entry(batch.to_owned()).or_insert(0) += 1;
    }
    assert!(!per_batch.is_empty(), "no batch was written");
    assert!(
        per_batch.values().all(|&count| count == 100),
        "a batch was split: {per_batch:?}"
    );
    // Each batch is a number that runs from 0 without gaps.
    let batches: Vec<usize> = per_batch
        .keys()
        .map(|batch| batch[1..].parse().unwrap())
        .collect();
    assert_eq!(batches, (0..batches.len()).collect::<Vec<_>>());

    let (value, code) = json(&[
        "run",
        guests::PROBE,
        "kv-set",
        "--input",
        "after=kill",
        "--kv-store",
        &store,
    ]);
    assert_status(&value, code, "ok", 0);
}

#[test]
fn http_is_allowed_per_origin_and_denied_otherwise() {
    let server = warden_tests::HttpServer::start();
    let url = server.url("/");
    let (value, code) = json(&[
        "run",
        guests::PROBE,
        "http-get",
        "--input",
        &url,
        "--allow-http",
        &server.origin(),
    ]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"], warden_tests::HTTP_GREETING);
    assert_eq!(value["denials"], serde_json::json!([]));

    let (value, code) = json(&["run", guests::PROBE, "http-get", "--input", &url]);
    assert_status(&value, code, "denied", 30);
    assert_eq!(value["denials"][0]["capability"], "http");
    assert!(
        value["denials"][0]["detail"]
            .as_str()
            .unwrap()
            .contains(&url),
        "{value}"
    );
    assert!(
        value["error"]
            .as_str()
            .unwrap()
            .contains("HttpRequestDenied"),
        "{value}"
    );

    let output = warden(&["run", guests::PROBE, "http-get", "--input", &url]);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("[denied] http capability:"), "{stderr}");
    assert!(stderr.contains("warden: denied:"), "{stderr}");
}

/// Processes granted the same Redis server share one store; `warden kv`,
/// which reads SQLite files only, says so instead of guessing.
#[test]
fn kv_on_redis_is_shared_by_processes() {
    let server = warden_tests::RedisServer::start();
    for expected in ["1", "2"] {
        let (value, code) = json(&[
            "run",
            guests::PROBE,
            "kv-incr",
            "--input",
            "visits",
            "--kv-store",
            &server.url,
        ]);
        assert_status(&value, code, "ok", 0);
        assert_eq!(value["output"], expected);
    }

    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let unreachable = format!("redis://127.0.0.1:{closed_port}/0");
    let (code, stderr) = refused(&[
        "run",
        guests::PROBE,
        "kv-incr",
        "--input",
        "visits",
        "--kv-store",
        &unreachable,
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot use the kv store `{unreachable}`")),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let manifest = write_file(
        dir.path(),
        "warden.toml",
        format!(
            "[plugins.probe]\npath = {:?}\n[plugins.probe.grants]\nkv = {{ redis = {:?} }}\n",
            guests::PROBE,
            server.url
        )
        .as_bytes(),
    );
    let (code, stderr) = refused(&["kv", "probe", "list", "--manifest", &manifest]);
    assert_ne!(code, 0);
    assert!(stderr.contains("SQLite files only"), "{stderr}");
    let (code, stderr) = refused(&["kv", "probe", "list", "--store", &server.url]);
    assert_ne!(code, 0);
    assert!(stderr.contains("SQLite files only"), "{stderr}");
}

#[test]
fn kv_persists_across_processes_and_operators_can_look_inside() {
    let dir = tempfile::tempdir().unwrap();
    let store = kv_store(&dir);
    let (value, code) = json(&[
        "run",
        guests::PROBE,
        "kv-set",
        "--input",
        "colour=blue",
        "--kv-store",
        &store,
        // Named, so that `warden kv probe` finds it (a plugin file's own
        // namespace is derived from its hash).
        "--kv-namespace",
        "probe",
    ]);
    assert_status(&value, code, "ok", 0);
    let (value, code) = json(&[
        "run",
        guests::PROBE,
        "kv-get",
        "--input",
        "colour",
        "--kv-store",
        &store,
        "--kv-namespace",
        "probe",
    ]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"], "blue");

    let output = warden(&["kv", "probe", "list", "--store", &store]);
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "colour\n");
    let output = warden(&["kv", "probe", "get", "colour", "--store", &store]);
    assert_eq!(output.stdout, b"blue");
    let output = warden(&["kv", "probe", "buckets", "--store", &store, "--json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&output.stdout).unwrap(),
        serde_json::json!(["default"])
    );
    let output = warden(&["kv", "other-plugin", "list", "--store", &store]);
    assert!(output.stdout.is_empty(), "another namespace is empty");
    assert_eq!(
        warden(&["kv", "probe", "delete", "colour", "--store", &store])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        warden(&["kv", "probe", "get", "colour", "--store", &store])
            .status
            .code(),
        Some(1)
    );
    let missing = warden(&["kv", "probe", "list", "--store", "/no/such/kv.sqlite"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8(missing.stderr)
            .unwrap()
            .contains("no kv store")
    );

    let (value, code) = json(&["run", guests::PROBE, "kv-get", "--input", "colour"]);
    assert_status(&value, code, "denied", 30);
    assert_eq!(value["denials"][0]["capability"], "kv");
}

#[test]
fn kv_increments_from_concurrent_processes_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let store = kv_store(&dir);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                for _ in 0..5 {
                    let (value, code) = json(&[
                        "run",
                        guests::PROBE,
                        "kv-incr",
                        "--input",
                        "hits",
                        "--kv-store",
                        &store,
                        "--kv-namespace",
                        "probe",
                    ]);
                    assert_status(&value, code, "ok", 0);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("no process failed");
    }
    let output = warden(&["kv", "probe", "get", "hits", "--store", &store]);
    assert_eq!(output.stdout, b"20");
}

#[test]
fn config_values_and_environment_are_granted_by_flags() {
    let (value, code) = json(&[
        "run",
        guests::PROBE,
        "config-get",
        "--input",
        "mode",
        "--config",
        "mode=fast",
    ]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"], "fast");
    let (value, code) = json(&["run", guests::PROBE, "config-get", "--input", "mode"]);
    assert_status(&value, code, "denied", 30);
    let (value, code) = json(&["run", guests::PROBE, "env", "--input", "A", "--env", "A=1"]);
    assert_status(&value, code, "ok", 0);
}

#[test]
fn sockets_are_granted_by_address() {
    let server = warden_tests::TcpPong::start();
    let address = server.addr.to_string();
    let (value, code) = json(&[
        "run",
        guests::PROBE,
        "tcp-echo",
        "--input",
        &address,
        "--allow-tcp",
        &address,
    ]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"], "pong");
    // Without a grant no socket is even created.
    let (value, code) = json(&["run", guests::PROBE, "tcp-echo", "--input", &address]);
    assert_status(&value, code, "denied", 30);
    assert_eq!(
        value["denials"][0]["detail"],
        "creating a TCP socket without a --allow-tcp or --allow-tcp-listen grant"
    );
    let elsewhere = format!("127.0.0.1:{}", server.addr.port() + 1);
    let (value, code) = json(&[
        "run",
        guests::PROBE,
        "tcp-echo",
        "--input",
        &address,
        "--allow-tcp",
        &elsewhere,
    ]);
    assert_status(&value, code, "denied", 30);
    assert_eq!(
        value["denials"][0]["detail"],
        format!("TCP connect to {address}")
    );
}

#[test]
fn strict_refuses_and_names_every_missing_grant() {
    let (value, code) = json(&["run", guests::PROBE, "clock", "--strict"]);
    assert_status(&value, code, "denied", 30);
    let error = value["error"].as_str().unwrap();
    for hint in [
        "http",
        "--allow-http ORIGIN",
        "sockets",
        "--allow-tcp",
        "env",
        "--env KEY=VALUE",
    ] {
        assert!(error.contains(hint), "{hint} missing from {error}");
    }
    let (value, code) = json(&[
        "run",
        guests::PROBE,
        "clock",
        "--strict",
        "--allow-http",
        "https://example.com",
        "--allow-tcp",
        "127.0.0.1:1",
        "--env",
        "A=1",
    ]);
    assert_status(&value, code, "ok", 0);
}

#[test]
fn deterministic_runs_print_the_same_output() {
    let run = || {
        json(&[
            "run",
            guests::PROBE,
            "random",
            "--input",
            "8",
            "--deterministic",
        ])
        .0["output"]
            .clone()
    };
    assert_eq!(run(), run());
    let (value, _) = json(&["run", guests::PROBE, "clock", "--deterministic"]);
    assert_eq!(value["output"], "946684800 0 1000000");
}

#[test]
fn inspect_lists_capabilities_and_their_grants() {
    let (value, code) = json(&[
        "inspect",
        guests::PROBE,
        "--allow-http",
        "https://example.com",
    ]);
    assert_status(&value, code, "ok", 0);
    let capabilities = value["capabilities"].as_array().unwrap();
    let http = capabilities.iter().find(|c| c["name"] == "http").unwrap();
    assert_eq!(
        (&http["risk"], &http["granted"]),
        (&"high".into(), &true.into())
    );
    let kv = capabilities.iter().find(|c| c["name"] == "kv").unwrap();
    assert_eq!(
        (&kv["risk"], &kv["granted"]),
        (&"medium".into(), &false.into())
    );

    let output = warden(&["inspect", guests::PROBE]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains("http     high    not granted (--allow-http ORIGIN)"),
        "{stdout}"
    );
}

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

// ---- Programs (`warden exec`) ----

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

/// Runs warden with `args` and a home of its own (`HOME` and the XDG
/// directories inside `home`), so that nothing reads or writes the real one.
fn warden_at_home(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .stdin(Stdio::null())
        .output()
        .expect("running warden")
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
        let value: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
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

/// Text a hostile guest writes to take over a terminal: a colour, a bell, a
/// carriage return that hides what came before, a window title.
const TERMINAL_ATTACK: &str = "\x1b[31mred\x07\rover\x1b]0;title\x07";

#[test]
fn guest_text_is_written_unchanged_when_piped_and_in_json() {
    let home = tempfile::tempdir().unwrap();
    let output = warden_at_home(
        home.path(),
        &[
            "exec",
            guests::COMMAND_PREVIEW1,
            "--unsigned",
            "allow",
            "--",
            "argv",
            TERMINAL_ATTACK,
        ],
    );
    assert_eq!(output.stdout, format!("{TERMINAL_ATTACK}\0").as_bytes());
    let output = warden_at_home(
        home.path(),
        &[
            "run",
            guests::HELLO,
            "echo",
            "--unsigned",
            "allow",
            "--input",
            TERMINAL_ATTACK,
        ],
    );
    assert_eq!(output.stdout, TERMINAL_ATTACK.as_bytes());
    let output = warden_at_home(
        home.path(),
        &[
            "exec",
            "--json",
            guests::COMMAND,
            "--unsigned",
            "allow",
            "--",
            "argv",
            TERMINAL_ATTACK,
        ],
    );
    let value: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(value["stdout"], format!("{TERMINAL_ATTACK}\0"));
}

#[test]
fn guest_text_is_escaped_on_a_terminal() {
    // util-linux `script` runs the command on a pseudo-terminal and copies
    // what the terminal was sent to its stdout.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    for (what, command) in [
        (
            "exec's forwarded stdout",
            r#""$WARDEN" exec "$COMMAND" --unsigned allow -- argv "$ATTACK""#,
        ),
        (
            "run's output",
            r#""$WARDEN" run "$HELLO" echo --unsigned allow --input "$ATTACK""#,
        ),
        (
            "run's report: the guest's stdout and log lines",
            r#""$WARDEN" run "$HELLO" greet --unsigned allow --input "$ATTACK""#,
        ),
    ] {
        let child = Command::new("script")
            .args(["-qec", command, "/dev/null"])
            .env("SHELL", "/bin/sh")
            .env("WARDEN", env!("CARGO_BIN_EXE_warden"))
            .env("COMMAND", guests::COMMAND_PREVIEW1)
            .env("HELLO", guests::HELLO)
            .env("ATTACK", TERMINAL_ATTACK)
            .env("HOME", home.path())
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_DATA_HOME", home.path().join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting script");
        let output = wait_bounded(child, Duration::from_secs(60));
        let shown = String::from_utf8_lossy(&output.stdout);
        assert!(
            !shown.contains('\x1b') && !shown.contains('\x07'),
            "{what}: raw control characters reached the terminal: {shown:?}"
        );
        assert!(
            shown.contains(r"\x1b[31mred\x07\rover\x1b]0;title\x07"),
            "{what}: {shown:?}"
        );
    }
}

/// A right-to-left override around text: a terminal that lays out text
/// bidirectionally shows what follows reversed, Warden's own words included.
const BIDI_ATTACK: &str = "\u{202e}kO\u{202c}";

/// What a pseudo-terminal was sent while `sh -c command` ran on it with
/// `envs` and a private home, or `None` without util-linux `script`.
fn shown_on_a_terminal(command: &str, envs: &[(&str, &Path)], home: &Path) -> Option<String> {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` is not installed");
        return None;
    }
    let child = Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env("WARDEN", env!("CARGO_BIN_EXE_warden"))
        .envs(envs.iter().map(|(name, value)| (name, value.as_os_str())))
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting script");
    let output = wait_bounded(child, Duration::from_secs(60));
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn bidi_overrides_and_load_errors_are_escaped_on_a_terminal() {
    let home = tempfile::tempdir().unwrap();
    // wasmparser quotes an invalid import name in its error, so the load
    // error carries the binary's own bytes.
    let bad = home.path().join("bad.wasm");
    std::fs::write(
        &bad,
        wat::parse_str(r#"(component (import "a\1b[2J" (func)))"#).unwrap(),
    )
    .unwrap();
    let manifest = home.path().join("warden.toml");
    std::fs::write(
        &manifest,
        format!(
            "[plugins.bad]\npath = {:?}\n[plugins.bad.trust]\nunsigned = \"allow\"\n",
            bad.display().to_string()
        ),
    )
    .unwrap();
    let bidi = home.path().join("bidi.txt");
    std::fs::write(&bidi, BIDI_ATTACK).unwrap();
    let envs = [
        ("HELLO", Path::new(guests::HELLO)),
        ("MANIFEST", manifest.as_path()),
        ("BIDI", bidi.as_path()),
    ];
    for (what, command, expected) in [
        (
            "run's output",
            r#""$WARDEN" run "$HELLO" echo --unsigned allow --input-file "$BIDI""#,
            r"\u{202e}kO\u{202c}",
        ),
        (
            "serve's load error",
            r#""$WARDEN" serve --manifest "$MANIFEST" --addr 127.0.0.1:0"#,
            r"import name `a\x1b[2J`",
        ),
    ] {
        let Some(shown) = shown_on_a_terminal(command, &envs, home.path()) else {
            return;
        };
        assert!(
            !shown.contains(['\x1b', '\u{202e}', '\u{202c}']),
            "{what}: raw control characters reached the terminal: {shown:?}"
        );
        assert!(shown.contains(expected), "{what}: {shown:?}");
    }
}

#[test]
fn kv_keys_and_values_a_plugin_wrote_are_escaped_on_a_terminal() {
    let home = tempfile::tempdir().unwrap();
    let store = home.path().join("kv.sqlite");
    let key = "\x1b[2Jkey\u{202e}";
    let input = format!("{key}=\x1b]0;value\x07");
    let output = warden(&[
        "run",
        guests::PROBE,
        "kv-set",
        "--input",
        &input,
        "--unsigned",
        "allow",
        "--kv-namespace",
        "probe",
        "--kv-store",
        store.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{output:?}");
    let key_file = home.path().join("key.txt");
    std::fs::write(&key_file, key).unwrap();
    let envs = [("STORE", store.as_path()), ("KEY_FILE", key_file.as_path())];
    for (what, command, expected) in [
        (
            "kv list",
            r#""$WARDEN" kv probe list --store "$STORE""#,
            r"\x1b[2Jkey\u{202e}",
        ),
        (
            "kv get",
            r#""$WARDEN" kv probe get "$(cat "$KEY_FILE")" --store "$STORE""#,
            r"\x1b]0;value\x07",
        ),
        (
            "kv get of a missing key",
            r#""$WARDEN" kv probe get "$(cat "$KEY_FILE")x" --store "$STORE""#,
            r"no key `\x1b[2Jkey\u{202e}x`",
        ),
    ] {
        let Some(shown) = shown_on_a_terminal(command, &envs, home.path()) else {
            return;
        };
        assert!(
            !shown.contains(['\x1b', '\x07', '\u{202e}']),
            "{what}: raw control characters reached the terminal: {shown:?}"
        );
        assert!(shown.contains(expected), "{what}: {shown:?}");
    }
    // Piped, the value is the plugin's bytes exactly.
    let piped = warden(&[
        "kv",
        "probe",
        "get",
        key,
        "--store",
        store.to_str().unwrap(),
    ]);
    assert_eq!(piped.stdout, b"\x1b]0;value\x07");
}

/// Waits for `child` at most `limit`, killing it if it takes longer.
fn wait_bounded(mut child: std::process::Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().expect("waiting for the child").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("the command did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collecting the output")
}

// ---- Trust: keys, signing, verification and policy ----

/// A scratch directory with a copy of the hello plugin and a trust store path.
struct Workshop {
    dir: tempfile::TempDir,
}

impl Workshop {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(guests::HELLO, dir.path().join("hello.wasm")).unwrap();
        Workshop { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn keygen(&self, name: &str) {
        let output = warden(&["keygen", &self.path(name)]);
        assert_eq!(output.status.code(), Some(0), "{output:?}");
    }
}

#[test]
fn keygen_writes_a_private_key_pair_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let shop = Workshop::new();
    let output = warden(&["keygen", &shop.path("alice")]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("key id:"), "{stdout}");
    let mode = std::fs::metadata(shop.path("alice.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(Path::new(&shop.path("alice.pub")).exists());
    let again = warden(&["keygen", &shop.path("alice")]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        String::from_utf8(again.stderr)
            .unwrap()
            .contains("refusing to overwrite")
    );
}

#[test]
fn sign_trust_verify_run_from_the_command_line() {
    let shop = Workshop::new();
    shop.keygen("alice");
    let store = shop.path("trust.toml");
    let plugin = shop.path("hello.wasm");

    let output = warden(&["verify", &plugin, "--trust-store", &store]);
    assert_eq!(output.status.code(), Some(31), "unsigned does not verify");
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .contains("unsigned")
    );

    assert_eq!(
        warden(&["sign", &plugin, "--key", &shop.path("alice.key")])
            .status
            .code(),
        Some(0)
    );
    let output = warden(&["verify", &plugin, "--trust-store", &store, "--json"]);
    assert_eq!(
        output.status.code(),
        Some(31),
        "signed by a key nobody knows"
    );
    let value: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["signatures"][0]["status"], "unknown-key");

    let output = warden(&["verify", &plugin, "--key", &shop.path("alice.pub")]);
    assert_eq!(output.status.code(), Some(0), "valid with the key given");
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .contains("no signer is trusted")
    );

    let added = warden(&[
        "trust",
        "add",
        &shop.path("alice.pub"),
        "--name",
        "alice",
        "--trust-store",
        &store,
    ]);
    assert_eq!(added.status.code(), Some(0), "{added:?}");
    let output = warden(&["trust", "list", "--trust-store", &store, "--json"]);
    let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listed[0]["name"], "alice");
    let duplicate = warden(&[
        "trust",
        "add",
        &shop.path("alice.pub"),
        "--name",
        "again",
        "--trust-store",
        &store,
    ]);
    assert_eq!(duplicate.status.code(), Some(2));

    let output = warden(&["verify", &plugin, "--trust-store", &store, "--json"]);
    assert_eq!(output.status.code(), Some(0));
    let value: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (&value["verified"], &value["trusted"]),
        (&true.into(), &true.into())
    );
    assert_eq!(value["signatures"][0]["trusted_as"], "alice");

    let (value, code) = json(&[
        "run",
        &plugin,
        "count-vowels",
        "--input",
        "trusted",
        "--unsigned",
        "deny",
        "--signed-by",
        "trusted",
        "--trust-store",
        &store,
    ]);
    assert_status(&value, code, "ok", 0);

    let (value, code) = json(&["inspect", &plugin, "--trust-store", &store]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["trusted"], true);
    assert_eq!(value["signatures"][0]["trusted_as"], "alice");

    assert_eq!(
        warden(&["trust", "remove", "alice", "--trust-store", &store])
            .status
            .code(),
        Some(0)
    );
    let (value, code) = json(&[
        "run",
        &plugin,
        "count-vowels",
        "--unsigned",
        "deny",
        "--signed-by",
        "trusted",
        "--trust-store",
        &store,
    ]);
    assert_status(&value, code, "untrusted", 31);
    assert!(
        value["error"]
            .as_str()
            .unwrap()
            .contains("signed by unknown key"),
        "{value}"
    );
    assert_eq!(
        warden(&["trust", "remove", "alice", "--trust-store", &store])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn the_command_line_warns_about_unsigned_plugins_by_default() {
    let shop = Workshop::new();
    let store = shop.path("trust.toml");
    let output = warden(&[
        "run",
        &shop.path("hello.wasm"),
        "echo",
        "--input",
        "x",
        "--trust-store",
        &store,
    ]);
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("warning: running an unverified plugin (it is unsigned)"),
        "{stderr}"
    );
    let quiet = warden(&[
        "run",
        &shop.path("hello.wasm"),
        "echo",
        "--input",
        "x",
        "--unsigned",
        "allow",
        "--trust-store",
        &store,
    ]);
    assert!(!String::from_utf8(quiet.stderr).unwrap().contains("warning"));
    let (value, code) = json(&[
        "run",
        &shop.path("hello.wasm"),
        "echo",
        "--unsigned",
        "deny",
        "--trust-store",
        &store,
    ]);
    assert_status(&value, code, "untrusted", 31);
    assert!(value["error"].as_str().unwrap().contains("unsigned"));
}

#[test]
fn signing_to_another_file_and_detached_signatures() {
    let shop = Workshop::new();
    shop.keygen("alice");
    let plugin = shop.path("hello.wasm");
    let original = std::fs::read(&plugin).unwrap();
    let signed = shop.path("signed.wasm");
    let output = warden(&[
        "sign",
        &plugin,
        "--key",
        &shop.path("alice.key"),
        "-o",
        &signed,
    ]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        std::fs::read(&plugin).unwrap(),
        original,
        "-o leaves the input alone"
    );
    assert_eq!(
        warden(&["verify", &signed, "--key", &shop.path("alice.pub")])
            .status
            .code(),
        Some(0)
    );

    let output = warden(&[
        "sign",
        &plugin,
        "--key",
        &shop.path("alice.key"),
        "--detached",
    ]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        std::fs::read(&plugin).unwrap(),
        original,
        "a detached signature leaves the plugin alone"
    );
    assert!(Path::new(&format!("{plugin}.sig")).exists());
    assert_eq!(
        warden(&["verify", &plugin, "--key", &shop.path("alice.pub")])
            .status
            .code(),
        Some(0)
    );
    let (value, code) = json(&[
        "run",
        &plugin,
        "echo",
        "--input",
        "detached",
        "--unsigned",
        "deny",
        "--key",
        &shop.path("alice.pub"),
    ]);
    assert_status(&value, code, "ok", 0);
}

#[test]
fn tampering_after_signing_is_caught() {
    let shop = Workshop::new();
    shop.keygen("alice");
    let plugin = shop.path("hello.wasm");
    warden(&["sign", &plugin, "--key", &shop.path("alice.key")]);
    let mut bytes = std::fs::read(&plugin).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&plugin, &bytes).unwrap();
    let output = warden(&["verify", &plugin, "--key", &shop.path("alice.pub")]);
    assert_eq!(output.status.code(), Some(31));
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .contains("bad signature")
    );
    let (value, code) = json(&[
        "run",
        &plugin,
        "echo",
        "--unsigned",
        "allow",
        "--key",
        &shop.path("alice.pub"),
    ]);
    assert_status(&value, code, "untrusted", 31);
    assert!(
        value["error"]
            .as_str()
            .unwrap()
            .contains("changed after signing"),
        "{value}"
    );
}

#[test]
fn bad_key_files_are_reported_clearly() {
    use std::os::unix::fs::PermissionsExt;
    let shop = Workshop::new();
    shop.keygen("alice");
    let key = shop.path("alice.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = warden(&["sign", &shop.path("hello.wasm"), "--key", &key]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("chmod 600")
    );
    let garbage = write_file(shop.dir.path(), "garbage.pub", b"nonsense");
    let output = warden(&["verify", &shop.path("hello.wasm"), "--key", &garbage]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("not an Ed25519 public key")
    );
}

#[test]
fn a_manifest_can_pin_a_plugins_hash() {
    let shop = Workshop::new();
    let bytes = std::fs::read(shop.path("hello.wasm")).unwrap();
    let (inspected, _) = json(&["inspect", &shop.path("hello.wasm"), "--unsigned", "allow"]);
    let sha256 = inspected["sha256"].as_str().unwrap().to_owned();
    assert_eq!(inspected["size"], bytes.len());
    for (pin, status) in [(sha256.as_str(), "ok"), (&"ab".repeat(32), "untrusted")] {
        let manifest = format!(
            "[plugins.hello]\npath = \"hello.wasm\"\n[plugins.hello.trust]\nunsigned = \"allow\"\nsha256 = \"{pin}\"\n"
        );
        let manifest = write_file(shop.dir.path(), "warden.toml", manifest.as_bytes());
        let (value, _) = json(&[
            "run",
            "--manifest",
            &manifest,
            "hello",
            "echo",
            "--input",
            "pinned",
        ]);
        assert_eq!(value["status"], status, "{value}");
        if status == "untrusted" {
            assert!(value["error"].as_str().unwrap().contains("hash mismatch"));
        }
    }
}

/// Runs warden with HOME and the XDG directories inside `home`, so that the
/// trust store, compile cache and cache key it defaults to stay there.
fn warden_in(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_DATA_HOME", home.join("data"))
        .stdin(Stdio::null())
        .output()
        .expect("running warden")
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn key_id(public_key: &str) -> String {
    warden::trust::PublicKey::from_file(public_key)
        .unwrap()
        .key_id()
}

fn file_mode(path: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn set_file_mode(path: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn trusted_names(store: &str) -> Vec<String> {
    warden::trust::TrustStore::open(store)
        .unwrap()
        .keys()
        .map(|(name, _)| name.to_owned())
        .collect()
}

#[test]
fn signed_by_and_unsigned_flags_in_every_combination() {
    let shop = Workshop::new();
    let home = shop.dir.path();
    for name in ["alice", "bob", "mallory"] {
        shop.keygen(name);
    }
    let store = shop.path("trust.toml");
    let added = warden_in(
        home,
        &[
            "trust",
            "add",
            &shop.path("alice.pub"),
            "--name",
            "alice",
            "--trust-store",
            &store,
        ],
    );
    assert_eq!(added.status.code(), Some(0), "{}", stderr_of(&added));
    for (signer, file) in [
        ("mallory", "stranger.wasm"),
        ("bob", "known.wasm"),
        ("alice", "trusted.wasm"),
    ] {
        let key = shop.path(&format!("{signer}.key"));
        let signed = warden_in(
            home,
            &[
                "sign",
                &shop.path("hello.wasm"),
                "--key",
                &key,
                "-o",
                &shop.path(file),
            ],
        );
        assert_eq!(signed.status.code(), Some(0), "{}", stderr_of(&signed));
    }
    let bob_pub = shop.path("bob.pub");
    // Each plugin, and the key its refusal must name (None: it is unsigned).
    let plugins = [
        ("unsigned", shop.path("hello.wasm"), None),
        (
            "stranger-signed",
            shop.path("stranger.wasm"),
            Some(key_id(&shop.path("mallory.pub"))),
        ),
        (
            "known-untrusted-signed",
            shop.path("known.wasm"),
            Some(key_id(&bob_pub)),
        ),
        ("trusted-signed", shop.path("trusted.wasm"), None),
    ];
    for unsigned in [None, Some("allow"), Some("warn"), Some("deny")] {
        for signed_by in [None, Some("any"), Some("trusted")] {
            let only_trusted = signed_by == Some("trusted");
            let contradiction = only_trusted && matches!(unsigned, Some("allow" | "warn"));
            let deny = only_trusted || unsigned == Some("deny");
            for (kind, plugin, named_key) in &plugins {
                let label = format!("--unsigned {unsigned:?} --signed-by {signed_by:?}, {kind}");
                let mut args = vec![
                    "run",
                    "--json",
                    plugin,
                    "count-vowels",
                    "--input",
                    "hello",
                    "--trust-store",
                    &store,
                    "--key",
                    &bob_pub,
                ];
                if let Some(unsigned) = unsigned {
                    args.extend(["--unsigned", unsigned]);
                }
                if let Some(signed_by) = signed_by {
                    args.extend(["--signed-by", signed_by]);
                }
                let output = warden_in(home, &args);
                let code = output.status.code().expect("exit code");
                if contradiction {
                    assert_eq!(code, 2, "{label}");
                    let stderr = stderr_of(&output);
                    assert!(
                        stderr.contains("contradicts --signed-by trusted"),
                        "{label}: {stderr}"
                    );
                    assert!(output.stdout.is_empty(), "{label}: nothing ran");
                    continue;
                }
                let runs = match *kind {
                    "trusted-signed" => true,
                    "known-untrusted-signed" => !only_trusted,
                    _ => !deny,
                };
                let value: Value = serde_json::from_slice(&output.stdout)
                    .unwrap_or_else(|err| panic!("{label}: {err}: {}", stderr_of(&output)));
                if runs {
                    assert_status(&value, code, "ok", 0);
                    assert_eq!(value["output"], "2", "{label}");
                } else {
                    assert_status(&value, code, "untrusted", 31);
                    let error = value["error"].as_str().unwrap();
                    let expected = named_key.as_deref().unwrap_or("unsigned");
                    assert!(error.contains(expected), "{label}: {error}");
                }
            }
        }
    }
}

#[test]
fn nothing_loosens_a_manifests_signed_by_trusted() {
    let shop = Workshop::new();
    let home = shop.dir.path();
    let manifest = |trust: &str| {
        let text = format!(
            "[plugins.hello]\npath = \"hello.wasm\"\n[plugins.hello.trust]\ntrust_store = \"trust.toml\"\n{trust}\n"
        );
        write_file(home, "warden.toml", text.as_bytes())
    };
    let contradicting = manifest("signed_by = \"trusted\"\nunsigned = \"warn\"");
    let output = warden_in(
        home,
        &[
            "run",
            "--manifest",
            &contradicting,
            "hello",
            "echo",
            "--input",
            "x",
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("plugin `hello`: `unsigned = \"warn\"` contradicts"),
        "{stderr}"
    );

    let trusted_only = manifest("signed_by = \"trusted\"");
    let output = warden_in(
        home,
        &[
            "run",
            "--manifest",
            &trusted_only,
            "hello",
            "echo",
            "--input",
            "x",
            "--unsigned",
            "warn",
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("cannot loosen the manifest's `signed_by = \"trusted\"`"),
        "{stderr}"
    );

    let output = warden_in(
        home,
        &[
            "run",
            "--json",
            "--manifest",
            &trusted_only,
            "hello",
            "echo",
            "--input",
            "x",
        ],
    );
    let value: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_status(&value, output.status.code().unwrap(), "untrusted", 31);

    // Saying both explicitly is loosening on purpose.
    let output = warden_in(
        home,
        &[
            "run",
            "--json",
            "--manifest",
            &trusted_only,
            "hello",
            "echo",
            "--input",
            "x",
            "--signed-by",
            "any",
            "--unsigned",
            "allow",
        ],
    );
    let value: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_status(&value, output.status.code().unwrap(), "ok", 0);
}

#[test]
fn concurrent_trust_edits_all_take_effect() {
    const EDITORS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let store = home.join("trust.toml");
    let store = store.to_str().unwrap();
    let key_file = |name: &str| {
        let files = warden::trust::KeyFiles::named(home.join(name));
        let key = files.generate().unwrap();
        (files.public.to_str().unwrap().to_owned(), key)
    };
    let mut initial = warden::trust::TrustStore::default();
    for index in 0..EDITORS {
        let name = format!("old{index}");
        initial.add(&name, key_file(&name).1).unwrap();
    }
    initial.save(store).unwrap();
    let mut editors = Vec::new();
    for index in 0..EDITORS {
        let name = format!("new{index}");
        let (public, _) = key_file(&name);
        for args in [
            vec![
                "trust".to_owned(),
                "add".into(),
                public,
                "--name".into(),
                name,
            ],
            vec!["trust".to_owned(), "remove".into(), format!("old{index}")],
        ] {
            let editor = Command::new(env!("CARGO_BIN_EXE_warden"))
                .args(&args)
                .args(["--trust-store", store])
                .env("HOME", home)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            editors.push((args, editor));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for (args, mut editor) in editors {
        let status = loop {
            if let Some(status) = editor.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = editor.kill();
                panic!("`warden {}` did not finish", args.join(" "));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut editor.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(status.success(), "`warden {}`: {stderr}", args.join(" "));
    }
    let mut expected: Vec<String> = (0..EDITORS).map(|index| format!("new{index}")).collect();
    expected.sort();
    assert_eq!(trusted_names(store), expected);
}

#[test]
fn a_linked_trust_store_is_edited_through_the_link() {
    let shop = Workshop::new();
    let home = shop.dir.path();
    shop.keygen("alice");
    std::fs::create_dir(home.join("dotfiles")).unwrap();
    let link = shop.path("trust.toml");
    let target = shop.path("dotfiles/trust.toml");
    std::os::unix::fs::symlink("dotfiles/trust.toml", &link).unwrap();
    let added = warden_in(
        home,
        &[
            "trust",
            "add",
            &shop.path("alice.pub"),
            "--name",
            "alice",
            "--trust-store",
            &link,
        ],
    );
    assert_eq!(added.status.code(), Some(0), "{}", stderr_of(&added));
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_eq!(trusted_names(&target), ["alice"]);
    let removed = warden_in(home, &["trust", "remove", "alice", "--trust-store", &link]);
    assert_eq!(removed.status.code(), Some(0), "{}", stderr_of(&removed));
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert!(
        trusted_names(&target).is_empty(),
        "the shared target lost the key"
    );
}

#[test]
fn a_damaged_trust_store_fails_only_the_commands_that_need_it() {
    let shop = Workshop::new();
    let home = shop.dir.path();
    shop.keygen("alice");
    let store = shop.path("trust.toml");
    let plugin = shop.path("hello.wasm");

    let output = warden_in(
        home,
        &[
            "trust",
            "add",
            &shop.path("alice.pub"),
            "--name",
            "bob\u{ad}",
            "--trust-store",
            &store,
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("not a usable key name"),
        "{}",
        stderr_of(&output)
    );
    assert!(!Path::new(&store).exists(), "nothing was written");

    // The store an earlier version wrote for that name: not TOML.
    let key: String = warden::trust::PublicKey::from_file(shop.path("alice.pub"))
        .unwrap()
        .to_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    write_file(
        home,
        "trust.toml",
        format!("[keys]\n\"bob\\u{{ad}}\" = \"{key}\"\n").as_bytes(),
    );
    for flags in [
        &[][..],
        &["--unsigned", "allow"],
        &["--unsigned", "warn", "--signed-by", "any"],
    ] {
        let args = [
            &[
                "run",
                &plugin,
                "echo",
                "--input",
                "x",
                "--trust-store",
                &store,
            ][..],
            flags,
        ]
        .concat();
        let output = warden_in(home, &args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{flags:?}: {}",
            stderr_of(&output)
        );
        let stderr = stderr_of(&output);
        assert!(
            stderr.contains("warning: ignoring the trust store"),
            "{stderr}"
        );
        assert!(stderr.contains(&store), "{stderr}");
    }
    let inspected = warden_in(home, &["inspect", &plugin, "--trust-store", &store]);
    assert_eq!(
        inspected.status.code(),
        Some(0),
        "{}",
        stderr_of(&inspected)
    );
    for flags in [&["--unsigned", "deny"][..], &["--signed-by", "trusted"]] {
        let args = [
            &["run", "--json", &plugin, "echo", "--trust-store", &store][..],
            flags,
        ]
        .concat();
        let output = warden_in(home, &args);
        let value: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_status(&value, output.status.code().unwrap(), "invalid-config", 2);
        let error = value["error"].as_str().unwrap();
        assert!(
            error.contains(&store) && error.contains("repair or remove it"),
            "{error}"
        );
    }
    for args in [
        vec!["trust", "list", "--trust-store", &store],
        vec!["trust", "remove", "bob", "--trust-store", &store],
        vec!["verify", &plugin, "--trust-store", &store],
    ] {
        let output = warden_in(home, &args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            stderr_of(&output).contains(&store),
            "{args:?}: {}",
            stderr_of(&output)
        );
    }
}

#[test]
fn trust_kv_and_cache_files_are_private_and_refused_when_others_can_write_them() {
    let shop = Workshop::new();
    let home = shop.dir.path();
    shop.keygen("alice");
    let store = shop.path("trust.toml");
    let plugin = shop.path("hello.wasm");
    let added = warden_in(
        home,
        &[
            "trust",
            "add",
            &shop.path("alice.pub"),
            "--name",
            "alice",
            "--trust-store",
            &store,
        ],
    );
    assert_eq!(added.status.code(), Some(0), "{}", stderr_of(&added));
    assert_eq!(file_mode(&store), 0o600);
    set_file_mode(&store, 0o666);
    for args in [
        vec!["trust", "list", "--trust-store", &store],
        vec![
            "run",
            &plugin,
            "echo",
            "--signed-by",
            "trusted",
            "--trust-store",
            &store,
        ],
    ] {
        let output = warden_in(home, &args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = stderr_of(&output);
        assert!(
            stderr.contains(&format!("chmod go-w {store}")),
            "{args:?}: {stderr}"
        );
    }

    let kv = shop.path("kv.sqlite");
    let probe = [
        guests::PROBE,
        "kv-set",
        "--input",
        "a=1",
        "--unsigned",
        "allow",
        "--kv-store",
        &kv,
    ];
    let output = warden_in(home, &[&["run"][..], &probe].concat());
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_eq!(file_mode(&kv), 0o600);
    set_file_mode(&kv, 0o666);
    let output = warden_in(home, &[&["run"][..], &probe].concat());
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(stderr.contains(&format!("chmod go-w {kv}")), "{stderr}");

    // The default cache and its key were made in the (test's) home.
    let key = shop.path("data/warden/cache.key");
    assert_eq!(file_mode(&key), 0o600);
    assert_eq!(file_mode(&shop.path("cache/warden/compiled")), 0o700);
    let cache = shop.path("shared-cache");
    std::fs::create_dir(&cache).unwrap();
    set_file_mode(&cache, 0o777);
    let output = warden_in(
        home,
        &[
            "run",
            &plugin,
            "echo",
            "--unsigned",
            "allow",
            "--cache-dir",
            &cache,
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(stderr.contains("refusing the compile cache"), "{stderr}");
    assert!(stderr.contains(&format!("chmod go-w {cache}")), "{stderr}");
}

// ---- The compile cache ----

#[test]
fn compile_warms_the_cache_for_later_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cache = cache.to_str().unwrap();
    let first = warden(&["compile", guests::HOSTILE, "--cache-dir", cache, "--json"]);
    assert_eq!(first.status.code(), Some(0));
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(
        (&first["cached"], &first["cache"]),
        (&false.into(), &true.into())
    );
    let second = warden(&["compile", guests::HOSTILE, "--cache-dir", cache, "--json"]);
    let second: Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(second["cached"], true);
    // Preview 1 modules run on wasmtime-wasi's preview 1 implementation and
    // are compiled on every run; `compile` says so rather than claim a cache.
    let output = warden(&["compile", guests::COMMAND_PREVIEW1, "--cache-dir", cache]);
    assert_eq!(output.status.code(), Some(0));
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .contains("a preview 1 module is compiled on every run")
    );
    let output = warden(&["compile", guests::HELLO, "--no-cache"]);
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .contains("the cache is off")
    );
    let (value, code) = json(&["run", guests::HOSTILE, "calls", "--cache-dir", cache]);
    assert_status(&value, code, "ok", 0);
    let output = warden(&["compile", "/no/such.wasm"]);
    assert_eq!(output.status.code(), Some(11));
}

/// Runs `warden --json` in a home of its own (no trust store, cache or kv
/// store of the user running the tests) and returns the report and exit code.
fn json_in_home(home: &Path, args: &[&str]) -> (Value, i32) {
    let mut all = args.to_vec();
    all.insert(1, "--json");
    let output = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(&all)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_DATA_HOME", home.join("data"))
        .stdin(Stdio::null())
        .output()
        .expect("running warden");
    let value = serde_json::from_slice(&output.stdout).expect("stdout is one JSON report");
    (value, output.status.code().expect("exit code"))
}

#[test]
fn run_refuses_a_grant_path_that_a_plugin_turned_into_a_link_out() {
    let home = tempfile::tempdir().unwrap();
    let tree = tempfile::tempdir().unwrap();
    let secret = tree.path().join("secret.txt");
    std::fs::write(&secret, "the host's secret").unwrap();
    std::fs::create_dir_all(tree.path().join("outer/inner")).unwrap();
    let writer = format!("{}::/outer:rw", tree.path().join("outer").display());
    let reader = format!("{}::/inner", tree.path().join("outer/inner").display());
    let read_secret = format!("/inner{}", secret.display());

    // One run of the writer plants `inner -> ../../…/..` (the host's root).
    let (value, code) = json_in_home(
        home.path(),
        &[
            "run",
            guests::HOSTILE,
            "rename",
            "--input",
            "/outer/inner>/outer/moved",
            "--dir",
            &writer,
        ],
    );
    assert_status(&value, code, "ok", 0);
    let plant = format!("{}>/outer/inner", "../".repeat(32));
    let (value, code) = json_in_home(
        home.path(),
        &[
            "run",
            guests::HOSTILE,
            "symlink",
            "--input",
            &plant,
            "--dir",
            &writer,
        ],
    );
    assert_status(&value, code, "ok", 0);

    // The reader's next run refuses the grant instead of reading the host.
    let (value, code) = json_in_home(
        home.path(),
        &[
            "run",
            guests::HOSTILE,
            "read-file",
            "--input",
            &read_secret,
            "--dir",
            &reader,
        ],
    );
    assert_status(&value, code, "invalid-config", 2);
    let error = value["error"].as_str().unwrap();
    assert!(
        error.contains("`inner` is a symbolic link to `../"),
        "{value}"
    );
    assert_eq!(value["output"], Value::Null, "{value}");
}

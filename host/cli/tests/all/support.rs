//! What every module starts `warden` with: the binary with or without a home
//! of its own, and the one reading of a `--json` report (exactly one JSON
//! object on stdout, and the exit code beside it).

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use warden_tests::guests;

/// The probe setting `a=1` in its kv store (the test guests are unsigned).
pub const PROBE_KV_SET: [&str; 6] = [
    guests::PROBE,
    "kv-set",
    "--input",
    "a=1",
    "--unsigned",
    "allow",
];

/// Runs warden with `args` and an empty stdin.
pub fn warden(args: &[&str]) -> Output {
    warden_with_stdin(args, b"")
}

/// Runs warden with `args`, writing `stdin` to its standard input.
pub fn warden_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        // A developer's own default must not change what the tests see.
        .env_remove("WARDEN_UNSIGNED")
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

/// Gives `command` a home of its own (`HOME` and the XDG directories inside
/// `home`), so that the trust store, compile cache, cache key and kv store
/// warden defaults to are not those of the user running the tests; no
/// stdin, and stdout and stderr piped.
pub fn in_home<'a>(command: &'a mut Command, home: &Path) -> &'a mut Command {
    command
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env_remove("WARDEN_UNSIGNED")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
}

/// Warden with `args` in a home of its own (see [`in_home`]).
pub fn at_home(home: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_warden"));
    in_home(command.args(args), home);
    command
}

/// Runs warden with `args` in a home of its own (see [`at_home`]).
pub fn warden_at_home(home: &Path, args: &[&str]) -> Output {
    at_home(home, args).output().expect("running warden")
}

/// The report of a `--json` command and its exit code, asserting that
/// stdout is exactly one line holding one JSON value.
pub fn report(output: &Output) -> (Value, i32) {
    let stdout = std::str::from_utf8(&output.stdout).expect("JSON is UTF-8");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one JSON line on stdout, got {stdout:?}; stderr: {stderr}"
    );
    let value = serde_json::from_str(lines[0])
        .unwrap_or_else(|err| panic!("stdout is not JSON ({err}); stderr: {stderr}"));
    (value, output.status.code().expect("an exit code"))
}

/// `args` with `--json` right after the subcommand (before any `--`).
fn with_json<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.insert(1, "--json");
    all
}

/// Runs warden with `--json` and returns the report and exit code.
pub fn json(args: &[&str]) -> (Value, i32) {
    report(&warden(&with_json(args)))
}

/// Runs warden with `--json` in a home of its own and returns the report and
/// exit code.
pub fn json_at_home(home: &Path, args: &[&str]) -> (Value, i32) {
    report(&warden_at_home(home, &with_json(args)))
}

/// Asserts a report's status and the exit code that goes with it.
pub fn assert_status(value: &Value, code: i32, status: &str, expected_code: i32) {
    assert_eq!(value["status"], status, "{value}");
    assert_eq!(code, expected_code, "{value}");
}

/// Runs `args` and returns the exit code and stderr, asserting that warden
/// did not panic.
pub fn refused(args: &[&str]) -> (i32, String) {
    let output = warden(args);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    (output.status.code().expect("exit code"), stderr)
}

/// The exit code of warden with `args`.
pub fn exit_code(args: &[&str]) -> Option<i32> {
    warden(args).status.code()
}

/// A command's stderr as text.
pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes `bytes` to `dir/name` and returns the file's path.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The path of a kv store file in `dir`.
pub fn kv_store(dir: &tempfile::TempDir) -> String {
    dir.path().join("kv.sqlite").to_str().unwrap().to_owned()
}

/// Waits for `child` at most `limit`, killing it if it takes longer.
pub fn wait_bounded(mut child: Child, limit: Duration) -> Output {
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

/// A scratch directory that is also the home of every `warden` it starts.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    /// An empty scratch directory.
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("a scratch directory"),
        }
    }

    /// A scratch directory with a copy of the hello plugin, `hello.wasm`.
    pub fn with_hello() -> Self {
        let scratch = Scratch::new();
        std::fs::copy(guests::HELLO, scratch.dir.path().join("hello.wasm")).unwrap();
        scratch
    }

    /// The path of `name` inside the scratch directory.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    /// Warden with `args`, at home in the scratch directory.
    pub fn command(&self, args: &[&str]) -> Command {
        at_home(self.dir.path(), args)
    }

    /// Runs warden with `args`, at home in the scratch directory.
    pub fn run(&self, args: &[&str]) -> Output {
        warden_at_home(self.dir.path(), args)
    }

    /// Runs `warden run --json ARGS` and returns the report and exit code.
    pub fn run_json(&self, args: &[&str]) -> (Value, i32) {
        let mut all = vec!["run", "--json"];
        all.extend_from_slice(args);
        report(&self.run(&all))
    }

    /// Trusts the public key `KEY.pub` as `name` in the trust store `store`.
    pub fn trust(&self, key: &str, name: &str, store: &str) {
        let public_key = self.path(&format!("{key}.pub"));
        let added = self.run(&[
            "trust",
            "add",
            &public_key,
            "--name",
            name,
            "--trust-store",
            store,
        ]);
        assert_eq!(added.status.code(), Some(0), "{}", stderr_of(&added));
    }

    /// Writes the key pair `name.key` and `name.pub`.
    pub fn keygen(&self, name: &str) {
        let output = warden(&["keygen", &self.path(name)]);
        assert_eq!(output.status.code(), Some(0), "{output:?}");
    }
}

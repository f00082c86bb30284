//! Guest text on a terminal: written unchanged when piped or in JSON,
//! escaped when a terminal shows it (control characters, bidirectional
//! overrides) in every command that prints it.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use warden_tests::guests;

use crate::support::{in_home, report, wait_bounded, warden, warden_at_home};

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
    let (value, _) = report(&output);
    assert_eq!(value["stdout"], format!("{TERMINAL_ATTACK}\0"));
}

#[test]
fn guest_text_is_escaped_on_a_terminal() {
    let home = tempfile::tempdir().unwrap();
    let envs = [
        ("COMMAND", OsStr::new(guests::COMMAND_PREVIEW1)),
        ("HELLO", OsStr::new(guests::HELLO)),
        ("ATTACK", OsStr::new(TERMINAL_ATTACK)),
    ];
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
        let Some(shown) = shown_on_a_terminal(command, &envs, home.path()) else {
            return;
        };
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
/// `envs` and a private home, or `None` without util-linux `script` (which
/// runs the command on a pseudo-terminal and copies what the terminal was
/// sent to its stdout).
fn shown_on_a_terminal(command: &str, envs: &[(&str, &OsStr)], home: &Path) -> Option<String> {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` is not installed");
        return None;
    }
    let child = in_home(
        Command::new("script")
            .args(["-qec", command, "/dev/null"])
            .env("SHELL", "/bin/sh")
            .env("WARDEN", env!("CARGO_BIN_EXE_warden"))
            .envs(envs.iter().copied()),
        home,
    )
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
        ("HELLO", OsStr::new(guests::HELLO)),
        ("MANIFEST", manifest.as_os_str()),
        ("BIDI", bidi.as_os_str()),
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
    let envs = [
        ("STORE", store.as_os_str()),
        ("KEY_FILE", key_file.as_os_str()),
    ];
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

/// A custom section (id 0) named `name` holding `payload`, as the binary
/// format encodes it.
fn custom_section(name: &str, payload: &[u8]) -> Vec<u8> {
    let mut contents = leb128(name.len());
    contents.extend(name.as_bytes());
    contents.extend(payload);
    let mut section = vec![0];
    section.extend(leb128(contents.len()));
    section.extend(contents);
    section
}

/// `value` as unsigned LEB128.
fn leb128(mut value: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            bytes.push(byte);
            return bytes;
        }
        bytes.push(byte | 0x80);
    }
}

/// A large component's first compile is announced on a terminal, once: the
/// next load uses the cache, and a stderr that is not a terminal gets no
/// note.
#[test]
fn a_long_first_compile_is_announced_on_a_terminal_once() {
    let home = tempfile::tempdir().unwrap();
    let plugin = home.path().join("my-plugin.wasm");
    // The Rust hello made large by a 4 MiB custom section: the note goes by
    // the file's size, and this compiles in a fraction of a second where a
    // really large guest would take half a minute on a loaded machine.
    let mut bytes = std::fs::read(guests::HELLO).unwrap();
    bytes.extend(custom_section("padding", &vec![0; 4 << 20]));
    std::fs::write(&plugin, bytes).unwrap();
    let size = std::fs::metadata(&plugin).unwrap().len();
    assert!(size >= 4 << 20, "the guest must be large: {size} bytes");
    let note = format!(
        "warden: compiling my-plugin.wasm ({}) once; later loads use the cache",
        warden::units::format_bytes(size)
    );
    let run = r#""$WARDEN" run "$PLUGIN" count-vowels --input hello --unsigned allow"#;
    let Some(shown) = shown_on_a_terminal(
        &format!("{run}; {run}"),
        &[("PLUGIN", plugin.as_os_str())],
        home.path(),
    ) else {
        return;
    };
    assert_eq!(shown.matches(&note).count(), 1, "{shown}");
    assert_eq!(shown.matches("warden: ok").count(), 2, "{shown}");

    // Piped, with the cache off so that it compiles again: no note.
    let output = warden_at_home(
        home.path(),
        &[
            "run",
            plugin.to_str().unwrap(),
            "count-vowels",
            "--input",
            "hello",
            "--unsigned",
            "allow",
            "--no-cache",
        ],
    );
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("compiling"), "{stderr}");
}

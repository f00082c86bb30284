//! What the command line refuses, and how: bad flags, operator mistakes with
//! files and stores, the documented exit codes and the CLI fuzz corpus.

use std::path::Path;

use warden_tests::guests;

use crate::support::{PROBE_KV_SET, refused, warden, write_file};

#[test]
fn bad_flags_are_usage_errors() {
    for args in [
        &["run", guests::HELLO, "--timeout", "soon"][..],
        &["run", guests::HELLO, "--memory", "-1"],
        &["run", guests::HELLO, "--dir", "no-separator"],
        &["run", guests::HELLO, "--env", "=NOKEY"],
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
fn help_documents_the_exit_codes() {
    let output = warden(&["run", "--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8(output.stdout).unwrap();
    for status in ["timeout", "out-of-fuel", "memory-limit", "invalid-plugin"] {
        assert!(help.contains(status), "{status} missing from --help");
    }
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
    let probe = PROBE_KV_SET;
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
            // A directory that does not exist is never created for a store.
            "the kv store `/proc/warden-kv/kv.sqlite` is in a directory that does not exist",
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

/// Words the command line has no place for say where they belong: the
/// input of `run` goes in `--input`, the arguments of `exec` after `--`.
#[test]
fn stray_words_are_usage_errors_that_say_where_they_belong() {
    for (args, hint) in [
        (
            &["run", guests::HELLO, "greet", "Ada"][..],
            "unexpected argument `Ada` after the action; the input goes in --input (`--input Ada`)",
        ),
        (
            &["exec", guests::COMMAND, "args", "b"],
            "the program's arguments go after `--`",
        ),
    ] {
        let output = warden(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains(hint), "{args:?}: {stderr}");
    }
    let (code, stderr) = refused(&["exec", guests::COMMAND, "args", "b"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains(&format!("(`warden exec {} -- args b`)", guests::COMMAND)),
        "{stderr}"
    );
}

#[test]
fn config_and_env_flags_name_what_they_expected() {
    let (code, stderr) = refused(&["run", guests::HELLO, "--config", "mode"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("invalid configuration value `mode`: expected KEY=VALUE"),
        "{stderr}"
    );
    let unset = "WARDEN_TEST_NEVER_SET_ANYWHERE";
    let (code, stderr) = refused(&["run", guests::HELLO, "--env", unset]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains(&format!(
            "`{unset}` is not set in Warden's environment, so there is no value to pass; \
             give one with --env {unset}=VALUE"
        )),
        "{stderr}"
    );
}

//! The kv store's default location is the same for `--kv` and a manifest's
//! `kv = true`, and so is the error when no home directory names it.

use std::process::{Command, Output};

use warden_tests::{guests, without_user_environment};

/// Runs warden with neither HOME nor any XDG directory set, in `dir`.
fn warden_without_home(dir: &std::path::Path, args: &[&str]) -> Output {
    without_user_environment(Command::new(env!("CARGO_BIN_EXE_warden")).args(args))
        .current_dir(dir)
        .output()
        .expect("running warden")
}

fn assert_refused_without_home(output: &Output, asked_by: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{asked_by} needs HOME or XDG_DATA_HOME to place the store"
        )),
        "{stderr}"
    );
}

#[test]
fn the_kv_flag_without_home_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = warden_without_home(
        dir.path(),
        &[
            "run",
            guests::HELLO,
            "greet",
            "--input",
            "Ada",
            "--kv",
            "--no-cache",
        ],
    );
    assert_refused_without_home(&output, "--kv");
    assert!(!dir.path().join("warden-kv.sqlite").exists());
}

#[test]
fn the_kv_manifest_key_without_home_is_refused_like_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("warden.toml");
    std::fs::write(
        &manifest,
        format!(
            "[plugins.hello]\npath = {:?}\n[plugins.hello.grants]\nkv = true\n",
            guests::HELLO
        ),
    )
    .unwrap();
    let output = warden_without_home(
        dir.path(),
        &[
            "run",
            "--manifest",
            manifest.to_str().unwrap(),
            "hello",
            "greet",
            "--input",
            "Ada",
            "--no-cache",
        ],
    );
    assert_refused_without_home(&output, "`kv = true`");
    // Before, the store fell back to a file in the working directory.
    assert!(!dir.path().join("warden-kv.sqlite").exists());
}

/// `--kv` without a path uses `$XDG_DATA_HOME/warden/kv.sqlite`: its
/// directory is Warden's own and is created, the store is named on stderr
/// when it is created, and `warden kv` finds it there without `--kv-store`.
#[test]
fn the_kv_flag_creates_the_default_store_and_kv_reads_it() {
    let home = tempfile::tempdir().unwrap();
    let store = home.path().join("data/warden/kv.sqlite");
    let output = crate::support::warden_at_home(
        home.path(),
        &[
            "run",
            guests::PROBE,
            "kv-set",
            "--input",
            "colour=blue",
            "--kv",
            "--kv-namespace",
            "probe",
            "--unsigned",
            "allow",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "warden: created the kv store `{}`\n",
            store.display()
        )),
        "{stderr}"
    );
    assert!(store.is_file());
    let output = crate::support::warden_at_home(home.path(), &["kv", "probe", "get", "colour"]);
    assert_eq!(output.stdout, b"blue", "{output:?}");
}

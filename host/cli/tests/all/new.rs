//! `warden new` and the guide's quick starts built from it, and
//! `warden componentize`.

use std::path::{Path, PathBuf};
use std::process::Command;

use warden_tests::with_home;

use crate::support::{warden, write_file};

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
    let home = tempfile::tempdir().unwrap();
    let mut command = Command::new("sh");
    // Warden's files go to a home of the test's own; the Rust toolchain
    // the quick start builds with stays where the user installed it.
    with_home(&mut command, home.path())
        .env("CARGO_HOME", user_tool_home("CARGO_HOME", ".cargo"))
        .env("RUSTUP_HOME", user_tool_home("RUSTUP_HOME", ".rustup"))
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

/// Where a toolchain installer keeps its files: `variable`, else `under_home`
/// in the user's home.
fn user_tool_home(variable: &str, under_home: &str) -> PathBuf {
    std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").expect("HOME or CARGO_HOME and RUSTUP_HOME"))
                .join(under_home)
        })
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

//! `warden new` and the guide's quick starts built from it, and
//! `warden componentize` (and what `run` says of a module it would need).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use warden_tests::with_home;

use crate::support::{Scratch, stderr_of, warden, write_file};

/// The quick starts of `docs/guest-guide.md`, run as written: `warden new`,
/// the build, and `warden run`. Lines marked `# set-up` install a toolchain;
/// `make setup` has installed those for the tests, so they are skipped and
/// the installed toolchains are put on the PATH instead. Returns the
/// directory the quick start ran in.
fn run_quick_start(language: &str) -> tempfile::TempDir {
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
    let dir = tempfile::tempdir().unwrap();
    let output = run_script(&script.join("\n"), dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("Hello, Ada!"),
        "the {language} quick start failed ({:?}):\n{}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        script.join("\n"),
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

/// Runs `script` with `sh -e` in `dir`, as a user with warden and the
/// toolchains `make setup` installed on the PATH would.
fn run_script(script: &str, dir: &Path) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
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
    let home = tempfile::tempdir().unwrap();
    let mut command = Command::new("sh");
    // Warden's files go to a home of the test's own; the Rust toolchain
    // the quick start builds with stays where the user installed it.
    with_home(&mut command, home.path())
        .env("CARGO_HOME", user_tool_home("CARGO_HOME", ".cargo"))
        .env("RUSTUP_HOME", user_tool_home("RUSTUP_HOME", ".rustup"))
        .args(["-e", "-c", script])
        .current_dir(dir)
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
    command.output().expect("running the script")
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

/// The Rust template passes `--strict`: its standard library imports the
/// environment, which, ungranted, is empty and low risk.
#[test]
fn the_guides_quick_start_works_for_rust_and_passes_strict() {
    let dir = run_quick_start("rust");
    let plugin = dir
        .path()
        .join("my-plugin/target/wasm32-wasip2/release/my_plugin.wasm");
    let plugin = plugin.to_str().unwrap();
    let output = warden(&[
        "run",
        plugin,
        "greet",
        "--input",
        "Ada",
        "--unsigned",
        "allow",
        "--strict",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_eq!(
        String::from_utf8(output.stdout).unwrap().trim_end(),
        "Hello, Ada!"
    );
    let inspect = String::from_utf8(warden(&["inspect", plugin]).stdout).unwrap();
    assert!(
        inspect.contains(
            "env      low     not granted (--env KEY=VALUE, or `env` in a manifest's [grants])"
        ),
        "{inspect}"
    );
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

/// `warden new my-plugin --lang LANGUAGE --world 0.2`, then the build steps
/// it prints (but the toolchain's set-up, which `make setup` has done).
/// The project's `wit/` must be the 0.2 package, and the component at
/// `component` (in the project) must export the 0.2 interfaces.
fn build_world_0_2_project(language: &str, component: &str) {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().to_str().unwrap();
    let output = warden(&[
        "new",
        "my-plugin",
        "--lang",
        language,
        "--world",
        "0.2",
        "--dir",
        parent,
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let steps = stdout
        .split_once("build it with:\n")
        .and_then(|(_, rest)| rest.split_once("\nthen run it:"))
        .map(|(steps, _)| steps)
        .unwrap_or_else(|| panic!("no build steps in:\n{stdout}"));
    let script: Vec<&str> = steps
        .lines()
        .map(str::trim)
        .filter(|line| !SET_UP_STEPS.iter().any(|set_up| line.contains(set_up)))
        .collect();
    let output = run_script(&script.join("\n"), dir.path());
    assert!(
        output.status.success(),
        "building the {language} 0.2 project failed ({:?}):\n{}\nstderr:\n{}",
        output.status,
        script.join("\n"),
        String::from_utf8_lossy(&output.stderr)
    );
    let project = dir.path().join("my-plugin");
    assert!(!project.join("wit/v0.2").exists());
    assert!(project.join("wit/deps/cli-0.3.0/cli.wit").is_file());
    let package = std::fs::read_to_string(project.join("wit/plugin.wit")).unwrap();
    assert!(
        package.contains("package warden:plugin@0.2.0;"),
        "{package}"
    );
    let wasm = std::fs::read(project.join(component)).unwrap();
    for export in ["warden:plugin/guest@0.2.0", "warden:plugin/streaming@0.2.0"] {
        assert!(
            wasm.windows(export.len())
                .any(|window| window == export.as_bytes()),
            "the {language} 0.2 component does not name {export}"
        );
    }
}

/// The build steps `warden new` prints that install a toolchain.
const SET_UP_STEPS: &[&str] = &["rustup target add", "pip install"];

#[test]
fn new_world_0_2_rust_builds() {
    build_world_0_2_project("rust", "target/wasm32-wasip2/release/my_plugin.wasm");
}

#[test]
fn new_world_0_2_python_builds() {
    build_world_0_2_project("python", "my-plugin.wasm");
}

/// JavaScript and C toolchains cannot build WASI 0.3 components yet: the
/// refusal says so before anything is written.
#[test]
fn new_refuses_world_0_2_for_js_and_c() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().to_str().unwrap();
    for (language, expected) in [
        (
            "js",
            "warden: `--world 0.2` is not available for JavaScript yet: componentize-js does not \
             build WASI 0.3 (component-model async) components; use `--lang rust` or \
             `--lang python`, or `--world 0.1`\n",
        ),
        (
            "c",
            "warden: `--world 0.2` is not available for C yet: its toolchain (clang with wasi-libc \
             and the WASI preview 1 adapter) does not build WASI 0.3 (component-model async) \
             components; use `--lang rust` or `--lang python`, or `--world 0.1`\n",
        ),
    ] {
        let output = warden(&[
            "new",
            "my-plugin",
            "--lang",
            language,
            "--world",
            "0.2",
            "--dir",
            parent,
        ]);
        assert_eq!(output.status.code(), Some(2), "{language}");
        assert_eq!(stderr_of(&output), expected);
        assert!(!dir.path().join("my-plugin").exists(), "{language}");
    }
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

#[test]
fn componentize_says_what_a_component_or_a_text_file_is() {
    let shop = Scratch::with_hello();
    let out = shop.path("out.wasm");
    let text = write_file(shop.dir.path(), "main.c", b"int main(void) { return 0; }\n");
    for (input, expected) in [
        (
            shop.path("hello.wasm"),
            "is already a component; run it as it is (`warden run`, `warden exec`)",
        ),
        (
            text,
            "is not a WebAssembly module (it does not start with the `\\0asm` magic bytes)",
        ),
    ] {
        let output = shop.run(&["componentize", &input, "-o", &out]);
        assert_eq!(output.status.code(), Some(10), "{input}");
        let stderr = stderr_of(&output);
        assert!(
            stderr.contains(&format!("`{input}` {expected}")),
            "{stderr}"
        );
        assert!(!stderr.contains("component-type"), "{stderr}");
    }
    assert!(!Path::new(&out).exists());
}

#[test]
fn run_points_a_core_module_at_exec_and_componentize() {
    let shop = Scratch::new();
    let module = write_file(
        shop.dir.path(),
        "module.wasm",
        &wat::parse_str("(module)").unwrap(),
    );
    let output = shop.run(&["run", &module, "greet", "--unsigned", "allow"]);
    assert_eq!(output.status.code(), Some(10));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("this is a core WebAssembly module, not a component: run a WASI program (`wasm32-wasip1`) with `warden exec`, turn a reactor built against Warden's WIT into a component with `warden componentize`"),
        "{stderr}"
    );
    assert!(!stderr.contains("wasm-tools"), "{stderr}");
}

/// The new project cannot see Warden's docs, so its README carries the
/// essentials instead of pointing at a file it does not have.
#[test]
fn the_new_projects_readme_is_a_guide_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().to_str().unwrap();
    let output = warden(&["new", "shop-sign", "--lang", "rust", "--dir", parent]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    // World 0.1 is the default, and its project carries no 0.2 WIT.
    assert!(!dir.path().join("shop-sign/wit/v0.2").exists());
    let readme = std::fs::read_to_string(dir.path().join("shop-sign/README.md")).unwrap();
    assert!(readme.starts_with("# shop-sign\n"), "{readme}");
    assert!(!readme.contains("docs/"), "{readme}");
    assert!(!readme.contains("{{"), "{readme}");
    for section in [
        "cargo build --release --target wasm32-wasip2",
        "warden run target/wasm32-wasip2/release/shop_sign.wasm greet --input Ada --unsigned allow",
        "## Capabilities",
        "`--env NAME=VALUE`",
        "## Limits",
        "## Signing",
        "warden sign target/wasm32-wasip2/release/shop_sign.wasm --key me.key",
        "WARDEN_UNSIGNED=allow",
    ] {
        assert!(readme.contains(section), "no {section:?} in:\n{readme}");
    }
}

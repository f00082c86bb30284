//! Builds the guest components in `guests/` and exports their paths as
//! constants (see `src/lib.rs`), so that `cargo test` needs nothing built
//! beforehand: the Rust guests for `wasm32-wasip2`, and the `hello` guest in
//! Python (for worlds 0.1 and 0.2), JavaScript and C with the toolchains
//! `make setup` installs.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../host/build-support/c_bindings.rs"]
mod c_bindings;
#[path = "../host/build-support/guest_build.rs"]
mod guest_build;

/// Every guest the tests use: (constant name, target, file name).
const GUESTS: &[(&str, &str, &str)] = &[
    ("HELLO", COMPONENTS, "hello.wasm"),
    ("HELLO_V2", COMPONENTS, "hello_v2.wasm"),
    ("HOSTILE", COMPONENTS, "hostile.wasm"),
    ("HOSTILE_V2", COMPONENTS, "hostile_v2.wasm"),
    ("PROBE", COMPONENTS, "probe.wasm"),
    ("COMMAND", COMPONENTS, "command.wasm"),
    ("TEXT_FILTER", COMPONENTS, "text_filter.wasm"),
    ("COMMAND_PREVIEW1", PREVIEW1, "command.wasm"),
];

/// Every guest is a component built for this target...
const COMPONENTS: &str = "wasm32-wasip2";
/// ...and the program is also built as a preview 1 core module, for `warden exec`.
const PREVIEW1: &str = "wasm32-wasip1";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("tests/ sits in the repository root");
    let guests = root.join("guests");
    let target_dir = root.join("target").join("guests");

    println!("cargo:rerun-if-changed={}", guests.display());
    for toolchain in [
        "target/toolchains/python/installed-requirements.txt",
        "target/toolchains/js/installed-package-lock.json",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(toolchain).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    guest_build::build(&guests, &target_dir, COMPONENTS, &[]);
    guest_build::build(&guests, &target_dir, PREVIEW1, &["command"]);
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    for (_, folder) in OTHER_LANGUAGES {
        let output = target_dir.join(folder).join("hello.wasm");
        std::fs::create_dir_all(output.parent().expect("a file in a folder"))
            .expect("creating the guest's output folder");
        // The guests are `warden new`'s templates: fill them in as
        // `warden new hello` does, then build the result.
        let source = out_dir.join(format!("hello-{folder}"));
        std::fs::create_dir_all(&source).expect("creating the source folder");
        let template = guests.join(folder);
        for entry in std::fs::read_dir(&template).expect("reading the template") {
            let path = entry.expect("reading the template").path();
            if path.is_file() {
                let text = std::fs::read_to_string(&path).expect("templates are text");
                let name = path.file_name().expect("a file name");
                std::fs::write(source.join(name), text.replace("{{name}}", "hello"))
                    .expect("writing the filled-in template");
            }
        }
        match *folder {
            "python" => build_python(root, &source, &output, WORLD_0_1),
            "python-v2" => build_python(root, &source, &output, WORLD_0_2),
            "js" => build_js(root, &source, &output),
            "c" => build_c(root, &source, &out_dir, &output),
            other => unreachable!("no build for {other}"),
        }
    }

    let mut constants = String::new();
    for (constant, target, file) in GUESTS {
        let path = target_dir.join(target).join("release").join(file);
        assert!(
            path.exists(),
            "building the guests did not produce {}",
            path.display()
        );
        writeln!(
            constants,
            "/// Path of the `{file}` guest built for `{target}`.\npub const {constant}: &str = {:?};",
            path.display().to_string()
        )
        .expect("writing to a String cannot fail");
    }
    for (constant, folder) in OTHER_LANGUAGES {
        let path = target_dir.join(folder).join("hello.wasm");
        writeln!(
            constants,
            "/// Path of the `hello` guest built from `guests/{folder}`.\npub const {constant}: &str = {:?};",
            path.display().to_string()
        )
        .expect("writing to a String cannot fail");
    }
    let out = out_dir.join("guests.rs");
    std::fs::write(&out, constants).expect("writing guests.rs into OUT_DIR");
}

/// The `hello` guest in the other languages, each built with its own
/// toolchain (installed under `target/toolchains` by `make setup`) from the
/// `warden new` template in `guests/FOLDER` into
/// `target/guests/FOLDER/hello.wasm`: (constant name, folder).
const OTHER_LANGUAGES: &[(&str, &str)] = &[
    ("PYTHON_HELLO", "python"),
    ("PYTHON_HELLO_V2", "python-v2"),
    ("JS_HELLO", "js"),
    ("C_HELLO", "c"),
];

/// A WIT world a guest is built against: (folder under the repository root,
/// world name).
type World = (&'static str, &'static str);
/// The world every 0.1 guest targets.
const WORLD_0_1: World = ("wit", "plugin");
/// The 0.2 world with every optional export, which the 0.2 `hello` implements.
const WORLD_0_2: World = ("wit/v0.2", "streaming-lifecycle-plugin");

/// The clang that builds the C guest (Debian's `clang-19`, with `lld-19`,
/// `wasi-libc` and `libclang-rt-19-dev-wasm32`).
const CLANG: &str = "clang-19";

/// Fails the build with the command that installs a missing toolchain.
fn require_tool(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{what} is not installed at {}; run `make setup`",
        path.display()
    );
}

fn run(command: &mut Command, what: &str) {
    let status = command
        .status()
        .unwrap_or_else(|err| panic!("cannot run {what}: {err}; run `make setup`"));
    assert!(status.success(), "{what} failed");
}

/// componentize-py, from the virtual environment `make setup` creates.
fn build_python(root: &Path, source: &Path, output: &Path, (wit, world): World) {
    let componentize = root.join("target/toolchains/python/bin/componentize-py");
    require_tool(&componentize, "componentize-py");
    run(
        Command::new(componentize)
            .current_dir(source)
            .arg("--wit-path")
            .arg(root.join(wit))
            .args(["--world", world, "componentize", "app", "--output"])
            .arg(output),
        "componentize-py",
    );
}

/// componentize-js, from the npm install `make setup` makes.
fn build_js(root: &Path, source: &Path, output: &Path) {
    let componentize = root.join("target/toolchains/js/node_modules/.bin/componentize-js");
    require_tool(&componentize, "componentize-js");
    run(
        Command::new(componentize)
            .arg(source.join("plugin.js"))
            .arg("--wit")
            .arg(root.join("wit"))
            .args(["--world-name", "plugin", "--out"])
            .arg(output),
        "componentize-js",
    );
}

/// wit-bindgen's C generator for the bindings, clang for a WASI preview 1
/// reactor module, then wit-component with the preview 1 reactor adapter.
fn build_c(root: &Path, source: &Path, out_dir: &Path, output: &Path) {
    let mut sources = Vec::new();
    for (name, path) in c_bindings::generate(&root.join("wit"), &out_dir.join("c-bindings")) {
        if !name.ends_with(".h") {
            sources.push(path);
        }
    }
    let module = out_dir.join("hello-c-core.wasm");
    run(
        Command::new(CLANG)
            .args([
                "--target=wasm32-wasi",
                "-mexec-model=reactor",
                "-O2",
                "-Wall",
                "-Werror",
            ])
            .arg("-I")
            .arg(out_dir.join("c-bindings"))
            .arg(source.join("main.c"))
            .args(&sources)
            .arg("-o")
            .arg(&module),
        CLANG,
    );
    let module = std::fs::read(&module).expect("reading the C guest's module");
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .and_then(|encoder| {
            encoder.adapter(
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
        })
        .and_then(|mut encoder| encoder.encode())
        .expect("turning the C guest into a component");
    std::fs::write(output, component).expect("writing the C guest");
}

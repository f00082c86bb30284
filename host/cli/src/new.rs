//! `warden new`: a plugin project in one command, per language; and
//! `warden componentize`, the last step of the C build.
//!
//! The Python, JavaScript and C sources are the guests Warden's own tests
//! build (`guests/python`, `guests/python-v2`, `guests/js`, `guests/c`), so
//! what `warden new` writes is what the conformance test runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::args::{ComponentizeArgs, Language, NewArgs, PluginWorld};
use crate::exit;

/// Warden's WIT package: (path under `wit/`, contents).
const WIT_FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/wit_files.rs"));
/// Where in `WIT_FILES` the 0.2 package lies, a complete WIT folder of its
/// own: a 0.2 project gets it as its `wit/`, a 0.1 project leaves it out.
const WIT_0_2_FOLDER: &str = "v0.2/";
/// The C bindings of the `plugin` world, from wit-bindgen's C generator.
const C_BINDINGS: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/c_bindings.rs"));

const RUST_LIB: &str = include_str!("templates/rust/lib.rs");
const RUST_LIB_0_2: &str = include_str!("templates/rust-v2/lib.rs");
/// The project's README: how to build and run it, and a short guide, since
/// the new project cannot see Warden's own docs.
const README: &str = include_str!("templates/README.md");
const PYTHON_APP: &str = include_str!("../../../guests/python/app.py");
const PYTHON_APP_0_2: &str = include_str!("../../../guests/python-v2/app.py");
const PYTHON_REQUIREMENTS: &str = include_str!("../../../guests/python/requirements.txt");
const JS_PLUGIN: &str = include_str!("../../../guests/js/plugin.js");
const JS_TOOLCHAIN: &str = include_str!("../../../guests/js/package.json");
const C_MAIN: &str = include_str!("../../../guests/c/main.c");

const RUST_CARGO_TOML: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
wit-bindgen = {{wit-bindgen}}

[profile.release]
opt-level = "s"
lto = true
strip = "debuginfo"

# A project of its own, not a member of an enclosing workspace.
[workspace]
"#;

const C_MAKEFILE: &str = "\
# Builds {{name}}.wasm: clang compiles a WASI preview 1 reactor against the
# bindings in bindings/, then `warden componentize` makes it a component.
CLANG ?= clang-19
WARDEN ?= warden

{{name}}.wasm: main.c bindings/plugin.c bindings/plugin.h bindings/plugin_component_type.o
\t$(CLANG) --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Ibindings \\
\t\tmain.c bindings/plugin.c bindings/plugin_component_type.o -o {{name}}.core.wasm
\t$(WARDEN) componentize {{name}}.core.wasm -o $@

clean:
\trm -f {{name}}.wasm {{name}}.core.wasm

.PHONY: clean
";

const GITIGNORE: &str = "/target\n/node_modules\n/.venv\n__pycache__/\n*.wasm\n";

/// The project's wit-bindgen dependency: world 0.2 needs its async runtime's
/// `spawn_local`, for the task that writes a stream after the call returns.
fn wit_bindgen_dependency(world: PluginWorld) -> &'static str {
    match world {
        PluginWorld::V0_1 => r#""0.63""#,
        PluginWorld::V0_2 => r#"{ version = "0.63", features = ["async-spawn"] }"#,
    }
}

/// What `wit/` holds and what the plugin exports, for the README.
fn contract(world: PluginWorld) -> &'static str {
    match world {
        PluginWorld::V0_1 => {
            "`wit/` holds Warden's WIT package (`warden:plugin/plugin`); the plugin\n\
             exports `init`, which describes it, and `execute`, which runs one action on\n\
             bytes and returns bytes or an error."
        }
        PluginWorld::V0_2 => {
            "`wit/` holds version 0.2 of Warden's WIT package (`warden:plugin@0.2.0`, on\n\
             WASI 0.3); the plugin exports `init`, which describes it, `execute`, which\n\
             runs one action on bytes and returns bytes or an error, and `execute-stream`,\n\
             which runs one action on a stream of input and returns a stream of output\n\
             and a future outcome. All three are async."
        }
    }
}

/// Why a language cannot start a plugin on a world, if it cannot.
fn unsupported(language: Language, world: PluginWorld) -> Option<&'static str> {
    match (language, world) {
        (Language::Js, PluginWorld::V0_2) => Some(
            "`--world 0.2` is not available for JavaScript yet: componentize-js does not \
             build WASI 0.3 (component-model async) components; use `--lang rust` or \
             `--lang python`, or `--world 0.1`",
        ),
        (Language::C, PluginWorld::V0_2) => Some(
            "`--world 0.2` is not available for C yet: its toolchain (clang with wasi-libc \
             and the WASI preview 1 adapter) does not build WASI 0.3 (component-model \
             async) components; use `--lang rust` or `--lang python`, or `--world 0.1`",
        ),
        _ => None,
    }
}

/// How to build a project, for its README and the closing message.
fn build_steps(language: Language, world: PluginWorld) -> &'static str {
    match (language, world) {
        (Language::Rust, _) => {
            "rustup target add wasm32-wasip2\ncargo build --release --target wasm32-wasip2"
        }
        (Language::Python, PluginWorld::V0_1) => {
            "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt\n\
             componentize-py -d wit -w plugin componentize app -o {{name}}.wasm"
        }
        (Language::Python, PluginWorld::V0_2) => {
            "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt\n\
             componentize-py -d wit -w streaming-lifecycle-plugin componentize app -o {{name}}.wasm"
        }
        (Language::Js, _) => "npm install\nnpm run build",
        (Language::C, _) => {
            "sudo apt-get install clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32   # Debian and Ubuntu\n\
             make"
        }
    }
}

/// Where the build puts the component.
fn output_path(language: Language) -> &'static str {
    match language {
        Language::Rust => "target/wasm32-wasip2/release/{{crate}}.wasm",
        _ => "{{name}}.wasm",
    }
}

/// `warden new`: writes a plugin project for the chosen language.
pub fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    if let Some(why) = unsupported(args.lang, args.world) {
        bail!("{why}");
    }
    check_name(&args.name)?;
    let root = args.dir.join(&args.name);
    if root.exists() {
        bail!(
            "`{}` already exists; choose another name or --dir",
            root.display()
        );
    }
    let fill = |text: &str| {
        text.replace("{{name}}", &args.name)
            .replace("{{crate}}", &args.name.replace('-', "_"))
    };
    let mut files: Vec<(PathBuf, Vec<u8>)> = WIT_FILES
        .iter()
        .filter_map(|(path, text)| {
            let path = match args.world {
                PluginWorld::V0_1 if path.starts_with(WIT_0_2_FOLDER) => return None,
                PluginWorld::V0_1 => path,
                PluginWorld::V0_2 => path.strip_prefix(WIT_0_2_FOLDER)?,
            };
            Some((Path::new("wit").join(path), text.as_bytes().to_vec()))
        })
        .collect();
    match args.lang {
        Language::Rust => {
            let cargo_toml =
                RUST_CARGO_TOML.replace("{{wit-bindgen}}", wit_bindgen_dependency(args.world));
            let lib = match args.world {
                PluginWorld::V0_1 => RUST_LIB,
                PluginWorld::V0_2 => RUST_LIB_0_2,
            };
            files.push(("Cargo.toml".into(), fill(&cargo_toml).into_bytes()));
            files.push(("src/lib.rs".into(), fill(lib).into_bytes()));
        }
        Language::Python => {
            let app = match args.world {
                PluginWorld::V0_1 => PYTHON_APP,
                PluginWorld::V0_2 => PYTHON_APP_0_2,
            };
            files.push(("app.py".into(), fill(app).into_bytes()));
            files.push((
                "requirements.txt".into(),
                PYTHON_REQUIREMENTS.as_bytes().to_vec(),
            ));
        }
        Language::Js => {
            files.push(("plugin.js".into(), fill(JS_PLUGIN).into_bytes()));
            files.push(("package.json".into(), js_package(&args.name)?));
        }
        Language::C => {
            files.push(("main.c".into(), fill(C_MAIN).into_bytes()));
            files.push(("Makefile".into(), fill(C_MAKEFILE).into_bytes()));
            for (name, bytes) in C_BINDINGS {
                files.push((Path::new("bindings").join(name), bytes.to_vec()));
            }
        }
    }
    let build = fill(build_steps(args.lang, args.world));
    let output = fill(output_path(args.lang));
    let run = format!("warden run {output} greet --input Ada --unsigned allow");
    let readme = fill(README)
        .replace("{{contract}}", contract(args.world))
        .replace("{{build}}", &build)
        .replace("{{run}}", &run)
        .replace("{{output}}", &output);
    files.push(("README.md".into(), readme.into_bytes()));
    files.push((".gitignore".into(), GITIGNORE.as_bytes().to_vec()));

    for (path, contents) in &files {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create `{}`", parent.display()))?;
        }
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    println!("created `{}`; build it with:\n", root.display());
    println!("  cd {}", root.display());
    for line in build.lines() {
        println!("  {line}");
    }
    println!("\nthen run it:\n\n  {run}");
    Ok(ExitCode::from(exit::OK))
}

/// Plugin names become folder, crate, package and file names.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|first| first.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid {
        bail!(
            "`{name}` is not a plugin name: use lower-case letters, digits and `-`, starting with a letter"
        );
    }
    Ok(())
}

/// The project's package.json: the toolchain Warden's own JavaScript guest
/// is built with, under the plugin's name, with a build script.
fn js_package(name: &str) -> anyhow::Result<Vec<u8>> {
    let mut package: serde_json::Value =
        serde_json::from_str(JS_TOOLCHAIN).context("the embedded package.json")?;
    package["name"] = name.into();
    package["description"] = "A Warden plugin".into();
    package["scripts"] = serde_json::json!({
        "build": format!("componentize-js plugin.js --wit wit --world-name plugin -o {name}.wasm"),
    });
    let mut text = serde_json::to_vec_pretty(&package).context("writing package.json")?;
    text.push(b'\n');
    Ok(text)
}

/// `warden componentize`: turns a preview 1 reactor module into a component
/// with wasmtime's adapter.
pub fn componentize(args: ComponentizeArgs) -> anyhow::Result<ExitCode> {
    use wasi_preview1_component_adapter_provider::{
        WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    };
    let module = std::fs::read(&args.module)
        .with_context(|| format!("cannot read `{}`", args.module.display()))?;
    let refusal = if wasmparser::Parser::is_component(&module) {
        Some("is already a component; run it as it is (`warden run`, `warden exec`)")
    } else if !wasmparser::Parser::is_core_wasm(&module) {
        Some(
            "is not a WebAssembly module (it does not start with the `\\0asm` magic bytes); \
             componentize takes the core module clang writes",
        )
    } else {
        None
    };
    if let Some(refusal) = refusal {
        eprintln!(
            "warden: invalid plugin: `{}` {refusal}",
            args.module.display()
        );
        return Ok(ExitCode::from(exit::INVALID_PLUGIN));
    }
    // Without the component type wit-bindgen embeds, the result would be a
    // component that exports nothing.
    if !matches!(wit_component::metadata::decode(&module), Ok((Some(_), _))) {
        eprintln!(
            "warden: invalid plugin: `{}` is not a core module built against wit-bindgen's bindings \
             (it has no `component-type` section); `warden new --lang c` sets that up",
            args.module.display()
        );
        return Ok(ExitCode::from(exit::INVALID_PLUGIN));
    }
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .and_then(|encoder| {
            encoder.adapter(
                WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
        })
        .and_then(|mut encoder| encoder.encode());
    let component = match component {
        Ok(component) => component,
        Err(err) => {
            eprintln!(
                "warden: invalid plugin: `{}` is not a WASI preview 1 reactor with an embedded component type: {err:#}",
                args.module.display()
            );
            return Ok(ExitCode::from(exit::INVALID_PLUGIN));
        }
    };
    warden::tools::write_file_atomically(&args.output, &component)
        .with_context(|| format!("cannot write `{}`", args.output.display()))?;
    println!(
        "wrote `{}` ({} bytes)",
        args.output.display(),
        component.len()
    );
    Ok(ExitCode::from(exit::OK))
}

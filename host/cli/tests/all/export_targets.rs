//! `warden export-http` apps checked against the worlds the engines publish,
//! vendored unmodified under `tests/fixtures/engine-worlds` (see its README
//! for where each came from): every import of an app must be an import of
//! the target's world (at a version the engine's linker matches, by
//! [`satisfies`]), and its handler an export of it. Warden's own tables of
//! what each engine provides (`host/export/src/targets.rs`) choose the
//! shims; these worlds are what proves the choice right. Spin and wasmCloud
//! cannot be installed here, so this is their only check; `wasmtime serve`
//! also runs the apps (`export_http.rs`), and here its world is the one the
//! `-S` flags of the printed command enable.

use std::path::{Path, PathBuf};

use serde_json::Value;
use warden_export::satisfies;
use warden_tests::guests;
use wit_parser::decoding::DecodedWasm;
use wit_parser::{Resolve, TypeDefKind, WorldItem};

use crate::export_http::{export_for, warden_with_tmp_home};

/// An exported app: the command's JSON report and the imports and exports
/// read off the component itself.
struct Exported {
    report: Value,
    /// Imports the engine must implement.
    imports: Vec<String>,
    exports: Vec<String>,
}

impl Exported {
    fn shims(&self) -> Vec<&str> {
        self.report["shims"]
            .as_array()
            .expect("a list of shims")
            .iter()
            .map(|shim| shim["name"].as_str().expect("a shim name"))
            .collect()
    }

    fn imports(&self, name: &str) -> bool {
        self.imports.iter().any(|import| import == name)
    }

    fn imports_package_at(&self, package: &str, version: &str) -> bool {
        self.imports
            .iter()
            .any(|import| import.starts_with(package) && import.ends_with(&format!("@{version}")))
    }
}

fn export(plugin: &str, target: &str, dir: &Path) -> Exported {
    let (app, report) = export_for(plugin, target, dir);
    let component = Component::read(&std::fs::read(&app).expect("reading the app"));
    assert_eq!(names(&report["imports"]), component.imports, "{report}");
    assert_eq!(
        names(&report["type_only_imports"]),
        component.type_only_imports,
        "{report}"
    );
    assert_eq!(names(&report["exports"]), component.exports, "{report}");
    Exported {
        report,
        imports: component.imports,
        exports: component.exports,
    }
}

/// A JSON list of names, sorted.
fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|name| name.as_str().expect("names").to_owned())
        .collect();
    names.sort_unstable();
    names
}

/// A component's interfaces, by WIT name and sorted.
struct Component {
    /// Imports the engine must implement.
    imports: Vec<String>,
    /// Imports that only declare (non-resource) types, which wasmtime's
    /// linker accepts with nothing defined (`TypeChecker::instance` skips
    /// type exports), and so every engine here links.
    type_only_imports: Vec<String>,
    exports: Vec<String>,
}

impl Component {
    fn read(bytes: &[u8]) -> Self {
        let DecodedWasm::Component(resolve, world) =
            wit_parser::decoding::decode(bytes).expect("the app decodes")
        else {
            panic!("the app is a component, not a WIT package");
        };
        let world = &resolve.worlds[world];
        let (mut type_only_imports, mut imports) = (Vec::new(), Vec::new());
        for (key, item) in &world.imports {
            let name = resolve.name_world_key(key);
            let declares_only_types = match item {
                WorldItem::Interface { id, .. } => {
                    let interface = &resolve.interfaces[*id];
                    interface.functions.is_empty()
                        && interface
                            .types
                            .values()
                            .all(|ty| !matches!(resolve.types[*ty].kind, TypeDefKind::Resource))
                }
                WorldItem::Function(_) | WorldItem::Type { .. } => false,
            };
            if declares_only_types {
                type_only_imports.push(name);
            } else {
                imports.push(name);
            }
        }
        let mut exports: Vec<String> = world
            .exports
            .keys()
            .map(|key| resolve.name_world_key(key))
            .collect();
        imports.sort_unstable();
        type_only_imports.sort_unstable();
        exports.sort_unstable();
        Component {
            imports,
            type_only_imports,
            exports,
        }
    }
}

/// What an engine links for a component and calls on it: the union of some
/// of its published worlds.
#[derive(Default)]
struct EngineWorld {
    /// Where the worlds were read from, for messages.
    sources: Vec<String>,
    imports: Vec<String>,
    exports: Vec<String>,
}

impl EngineWorld {
    /// Adds the world `world` (a name `Resolve::select_world` accepts) of
    /// the WIT package in `fixtures/engine-worlds/DIR`, and its dependencies.
    fn with(mut self, dir: &str, world: &str) -> Self {
        let path: PathBuf = [
            env!("CARGO_MANIFEST_DIR"),
            "tests/fixtures/engine-worlds",
            dir,
        ]
        .iter()
        .collect();
        let mut resolve = Resolve::default();
        let (package, _) = resolve
            .push_dir(&path)
            .unwrap_or_else(|err| panic!("parsing {}: {err:?}", path.display()));
        let id = resolve
            .select_world(&[package], Some(world))
            .unwrap_or_else(|err| panic!("no world {world} in {}: {err:?}", path.display()));
        let world_items = &resolve.worlds[id];
        let interfaces = |items: &wit_parser::IndexMap<_, WorldItem>| -> Vec<String> {
            items
                .iter()
                .filter(|(_, item)| matches!(item, WorldItem::Interface { .. }))
                .map(|(key, _)| resolve.name_world_key(key))
                .collect()
        };
        self.imports.extend(interfaces(&world_items.imports));
        self.exports.extend(interfaces(&world_items.exports));
        self.sources.push(format!("{dir}: {world}"));
        self
    }

    /// `wasmtime serve` 48 run with `flags`: the `wasi:http/proxy` world
    /// always, and the world each `-S` flag links
    /// (`ServeCommand::add_to_linker`).
    fn wasmtime_serve(flags: &[&str]) -> Self {
        let mut world = EngineWorld::default().with("wasmtime/http", "wasi:http/proxy@0.2.12");
        for flag in flags {
            world = match *flag {
                "-Scli" => world.with("wasmtime/cli", "wasi:cli/imports@0.2.12"),
                "-Sconfig" => world.with("wasmtime/config", "wasi:config/imports@0.2.0-rc.1"),
                "-Skeyvalue" => {
                    world.with("wasmtime/keyvalue", "wasi:keyvalue/imports@0.2.0-draft")
                }
                other => panic!("an unexpected flag in the serve command: {other}"),
            };
        }
        world
    }

    /// Spin 3.6: the `platform` world of `spin:up@3.6.0`, which its host
    /// implements, and the handler of `fermyon:spin/http-trigger@2.0.0`,
    /// the world of its HTTP trigger's WASI 0.2 components.
    fn spin() -> Self {
        EngineWorld::default()
            .with("spin", "platform")
            .with("spin", "fermyon:spin/http-trigger@2.0.0")
    }

    /// wasmCloud 1.x (`wasmcloud-runtime` 0.12.0): `wasi:http/proxy`, the
    /// `wasi:cli/imports` its runtime links from `wasmtime-wasi`, and the
    /// `wasmcloud:component/interfaces` world of what else its host provides.
    fn wasmcloud() -> Self {
        EngineWorld::default()
            .with("wasmcloud", "wasi:http/proxy@0.2.2")
            .with("wasmcloud", "wasi:cli/imports@0.2.2")
            .with("wasmcloud", "interfaces")
    }

    /// Every import of `app` is one of the world's, and every export of
    /// `app` one the world expects.
    fn assert_runs(&self, app: &Exported) {
        let missing = |names: &[String], provided: &[String]| -> Vec<String> {
            names
                .iter()
                .filter(|name| !provided.iter().any(|offered| satisfies(offered, name)))
                .cloned()
                .collect()
        };
        let unprovided = missing(&app.imports, &self.imports);
        assert!(
            unprovided.is_empty(),
            "the engine's worlds ({:?}) do not provide {unprovided:?}",
            self.sources
        );
        let unexpected = missing(&app.exports, &self.exports);
        assert!(
            unexpected.is_empty() && !app.exports.is_empty(),
            "the engine's worlds ({:?}) export {:?}, the app {:?}",
            self.sources,
            self.exports,
            app.exports
        );
    }
}

/// The `-S` flags of the command `warden export-http` printed.
fn serve_flags(report: &Value) -> Vec<String> {
    let command = report["serve_command"]
        .as_str()
        .expect("a serve command for --target wasmtime");
    let words: Vec<&str> = command.split(' ').collect();
    assert_eq!(&words[..2], ["wasmtime", "serve"], "{command}");
    words[2..words.len() - 1]
        .iter()
        .map(|flag| (*flag).to_owned())
        .collect()
}

#[test]
fn apps_for_wasmtime_import_only_what_the_printed_serve_command_links() {
    let dir = tempfile::tempdir().unwrap();
    let hello = export(guests::HELLO, "wasmtime", dir.path());
    assert_eq!(serve_flags(&hello.report), ["-Scli"]);
    EngineWorld::wasmtime_serve(&["-Scli"]).assert_runs(&hello);

    let probe = export(guests::PROBE, "wasmtime", dir.path());
    let flags = serve_flags(&probe.report);
    assert_eq!(flags, ["-Scli", "-Sconfig", "-Skeyvalue"]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    EngineWorld::wasmtime_serve(&flags).assert_runs(&probe);
    // Each flag is needed: without it, the probe's imports are not linked.
    for dropped in 0..flags.len() {
        let mut fewer = flags.clone();
        fewer.remove(dropped);
        let world = EngineWorld::wasmtime_serve(&fewer);
        let result = std::panic::catch_unwind(|| world.assert_runs(&probe));
        assert!(result.is_err(), "{fewer:?} would do");
    }
}

#[test]
fn apps_for_spin_import_only_what_spin_provides() {
    let dir = tempfile::tempdir().unwrap();
    let spin = EngineWorld::spin();
    let hello = export(guests::HELLO, "spin", dir.path());
    spin.assert_runs(&hello);
    // Spin has no wasi:logging: the shim writes records to stderr instead.
    assert!(!hello.imports_package_at("wasi:logging/", "0.1.0-draft"));
    assert!(hello.shims().contains(&"logging-shim"), "{}", hello.report);

    let probe = export(guests::PROBE, "spin", dir.path());
    spin.assert_runs(&probe);
    for interface in ["store", "atomics", "batch"] {
        assert!(
            probe.imports(&format!("wasi:keyvalue/{interface}@0.2.0-draft2")),
            "the key-value bridge imports Spin's draft2: {:?}",
            probe.imports
        );
    }
    assert!(probe.imports("wasi:config/store@0.2.0-draft-2024-09-27"));
    assert!(!probe.imports_package_at("wasi:keyvalue/", "0.2.0-draft"));
    assert!(!probe.imports_package_at("wasi:config/", "0.2.0-rc.1"));
    let shims = probe.shims();
    assert!(
        shims.contains(&"keyvalue-bridge-draft2"),
        "{}",
        probe.report
    );
    assert!(
        shims.contains(&"config-bridge-2024-09-27"),
        "{}",
        probe.report
    );
    assert!(!shims.contains(&"config-bridge-draft"), "{}", probe.report);
}

#[test]
fn apps_for_wasmcloud_import_only_what_wasmcloud_provides() {
    let dir = tempfile::tempdir().unwrap();
    let wasmcloud = EngineWorld::wasmcloud();
    let hello = export(guests::HELLO, "wasmcloud", dir.path());
    wasmcloud.assert_runs(&hello);
    // wasmCloud provides wasi:logging itself.
    assert!(hello.imports("wasi:logging/logging@0.1.0-draft"));
    assert!(!hello.shims().contains(&"logging-shim"), "{}", hello.report);

    let probe = export(guests::PROBE, "wasmcloud", dir.path());
    wasmcloud.assert_runs(&probe);
    // Its key-value versions are Warden's; its config is the older draft.
    for interface in ["store", "atomics", "batch"] {
        assert!(probe.imports(&format!("wasi:keyvalue/{interface}@0.2.0-draft")));
    }
    assert!(probe.imports("wasi:config/store@0.2.0-draft"));
    assert!(!probe.imports_package_at("wasi:config/", "0.2.0-rc.1"));
    let shims = probe.shims();
    assert!(shims.contains(&"config-bridge-draft"), "{}", probe.report);
    assert!(
        !shims.contains(&"keyvalue-bridge-draft2"),
        "{}",
        probe.report
    );
}

/// A world check that lets everything through proves nothing: an import
/// the engine lacks is caught, and so is a wrong export.
#[test]
fn the_world_check_refuses_what_an_engine_lacks() {
    let world = EngineWorld::wasmtime_serve(&[]);
    let app = |imports: &[&str], exports: &[&str]| Exported {
        report: Value::Null,
        imports: imports.iter().map(|name| (*name).to_owned()).collect(),
        exports: exports.iter().map(|name| (*name).to_owned()).collect(),
    };
    let handler = "wasi:http/incoming-handler@0.2.12";
    world.assert_runs(&app(&["wasi:io/streams@0.2.3"], &[handler]));
    for (imports, exports) in [
        (&["wasi:cli/environment@0.2.12"][..], &[handler][..]),
        (&["wasi:keyvalue/store@0.2.0-draft"], &[handler]),
        (&[], &["wasi:cli/run@0.2.12"]),
        (&[], &[]),
    ] {
        let candidate = app(imports, exports);
        let result = std::panic::catch_unwind(|| world.assert_runs(&candidate));
        assert!(result.is_err(), "{imports:?} {exports:?} passed");
    }
}

/// A plugin of Warden's world that also imports `test:needs-more/thing@1.0.0`,
/// which no engine here provides. Its functions are never called.
fn plugin_needing_more() -> Vec<u8> {
    let module = wat::parse_str(
        r#"(module
            (import "test:needs-more/thing@1.0.0" "poke" (func))
            (memory (export "memory") 1)
            (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) unreachable)
            (func (export "warden:plugin/guest@0.1.0#init") (result i32) unreachable)
            (func (export "warden:plugin/guest@0.1.0#execute")
                (param i32 i32 i32 i32) (result i32) unreachable))"#,
    )
    .expect("the core module parses");
    warden_tests::wrap_core_module(
        module,
        Some(
            "package test:needs-more@1.0.0;
            interface thing { poke: func(); }
            world needs-more { include warden:plugin/plugin@0.1.0; import thing; }",
        ),
        "needs-more",
    )
}

/// The refusal comes from loading the plugin, before any table is read:
/// Warden's own linker is the first to lack the import. (Every interface of
/// Warden's world is provided by each target or supplied by a shim, as the
/// tests above check, so a plugin Warden accepts always composes.)
#[test]
fn a_plugin_importing_what_no_target_provides_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("needs-more.wasm");
    std::fs::write(&path, plugin_needing_more()).unwrap();
    let output = dir.path().join("app.wasm");
    for target in ["wasmtime", "spin", "wasmcloud"] {
        let result = warden_with_tmp_home(&[
            "export-http",
            path.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
            "--target",
            target,
            "--unsigned",
            "allow",
        ]);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "{target}: {stderr}");
        assert!(
            stderr.contains("test:needs-more/thing@1.0.0"),
            "{target}: the error names the import: {stderr}"
        );
        assert!(!output.exists(), "{target} left an output behind");
    }
}

//! `warden export-http --target spin|wasmcloud`: the runtimes cannot be
//! installed here, so the composed apps are checked against the tables of
//! what each engine provides (`host/export/src/targets.rs`, with their sources):
//! every import of the app must be provided, and the interfaces Warden's
//! world has at other versions must reach the engine through the bridges.

use std::path::Path;

use serde_json::Value;
use warden_export::{Target, satisfies};
use warden_tests::guests;
use wit_parser::decoding::DecodedWasm;
use wit_parser::{TypeDefKind, WorldItem};

use crate::export_http::{export_for, warden_with_tmp_home};

/// An exported app: the command's JSON report and the imports read off the
/// component itself.
struct Exported {
    report: Value,
    /// Imports the engine must implement.
    imports: Vec<String>,
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
    let (imports, type_only) = component_imports(&std::fs::read(&app).expect("reading the app"));
    assert_eq!(names(&report["imports"]), imports, "{report}");
    assert_eq!(names(&report["type_only_imports"]), type_only, "{report}");
    Exported { report, imports }
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

/// The interfaces a component imports, by WIT name and sorted: those the
/// engine must implement, and those that only declare (non-resource) types,
/// which wasmtime's linker accepts with nothing defined (`TypeChecker::instance`
/// skips type exports) and so every engine here links.
fn component_imports(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
    let DecodedWasm::Component(resolve, world) =
        wit_parser::decoding::decode(bytes).expect("the app decodes")
    else {
        panic!("the app is a component, not a WIT package");
    };
    let (mut type_only, mut imports): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    for (key, item) in &resolve.worlds[world].imports {
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
            type_only.push(name);
        } else {
            imports.push(name);
        }
    }
    imports.sort_unstable();
    type_only.sort_unstable();
    (imports, type_only)
}

/// Every import of `app` is in `target`'s table.
fn assert_all_provided(app: &Exported, target: Target) {
    let missing: Vec<&String> = app
        .imports
        .iter()
        .filter(|import| {
            !target
                .provides()
                .iter()
                .any(|provided| satisfies(provided, import))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{target:?} does not provide {missing:?} (table read off {:?})",
        target.sources()
    );
}

#[test]
fn apps_for_spin_import_only_what_spin_provides() {
    let dir = tempfile::tempdir().unwrap();
    let hello = export(guests::HELLO, "spin", dir.path());
    assert_all_provided(&hello, Target::Spin);
    // Spin has no wasi:logging: the shim writes records to stderr instead.
    assert!(!hello.imports_package_at("wasi:logging/", "0.1.0-draft"));
    assert!(hello.shims().contains(&"logging-shim"), "{}", hello.report);

    let probe = export(guests::PROBE, "spin", dir.path());
    assert_all_provided(&probe, Target::Spin);
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
    let hello = export(guests::HELLO, "wasmcloud", dir.path());
    assert_all_provided(&hello, Target::Wasmcloud);
    // wasmCloud provides wasi:logging itself.
    assert!(hello.imports("wasi:logging/logging@0.1.0-draft"));
    assert!(!hello.shims().contains(&"logging-shim"), "{}", hello.report);

    let probe = export(guests::PROBE, "wasmcloud", dir.path());
    assert_all_provided(&probe, Target::Wasmcloud);
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

//! Turns a Warden plugin into an app for engines that serve
//! `wasi:http/incoming-handler` (`wasmtime serve`, Spin, wasmCloud): the
//! library behind `warden export-http`. [`compose`] takes a plugin's bytes
//! (checked to be a Warden plugin, for example by loading it with
//! `warden::Runtime::load`) and a [`Target`], and returns the [`App`].
//!
//! The plugin is composed, in-process with `wac-graph`, with the HTTP
//! adapter (`guests/http-adapter`, which imports the plugin's
//! `warden:plugin/guest` and exports the handler) and with whichever of the
//! embedded shims supply the imports the target engine lacks. Which shim
//! serves which import is read from the shims' own component types; the
//! composed app exports only the handler.

mod targets;

use std::collections::BTreeMap;
use std::error::Error as StdError;

use wac_graph::types::{ItemKind, Package, Type, Types};
use wac_graph::{CompositionGraph, EncodeOptions, NodeId, PackageId};
use warden::{GUEST_INTERFACE, WorldVersion};

pub use targets::{Target, satisfies};

/// The components built from `guests/` by the build script: (crate name,
/// component bytes).
const EMBEDDED: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/export_components.rs"));

/// The embedded component that serves the plugin over HTTP; every other
/// embedded component is a shim.
const ADAPTER: &str = "http-adapter";

/// The interface the composed app exports (any version).
const HANDLER_INTERFACE: &str = "wasi:http/incoming-handler@";

/// Why a plugin could not be composed into an app.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The plugin needs an interface the target lacks and no shim supplies.
    #[error(
        "`{import}` is imported by the {consumer}, but {target} does not provide it and no shim \
         Warden carries supplies it from what {target} provides",
        target = target.name()
    )]
    Unsatisfiable {
        /// The import, by WIT name.
        import: String,
        /// Who imports it: the plugin, the adapter or a shim.
        consumer: String,
        /// The engine the app was composed for.
        target: Target,
    },
    /// The plugin's component type could not be read.
    #[error("the plugin's component type cannot be read: {0}")]
    UnreadablePlugin(String),
    /// Composing or encoding the app failed: a bug in Warden or in its
    /// embedded components.
    #[error("composing the app failed: {0}")]
    Composition(String),
}

/// `err` and its sources, joined by `: `.
fn chain(err: &dyn StdError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A composition step that failed, described as `what` and the error's chain.
fn failed(what: &str, err: &dyn StdError) -> String {
    format!("{what}: {}", chain(err))
}

/// A composed app.
#[derive(Debug)]
pub struct App {
    /// The app component.
    pub bytes: Vec<u8>,
    /// The shims composed in, with the imports each one serves.
    pub shims: BTreeMap<&'static str, Vec<String>>,
    /// What the app imports from the engine, by WIT name.
    pub imports: Vec<String>,
    /// Interfaces the app imports that hold only (non-resource) types, such
    /// as `warden:plugin/types`: they name the types of the plugin's
    /// interface, and an engine links them without implementing anything.
    pub type_only_imports: Vec<String>,
    /// What the app exports: the HTTP handler.
    pub exports: Vec<String>,
}

/// What `wasmtime serve` links without `-Scli`: the `wasi:http/proxy`
/// world's imports (`wasmtime-cli` 48, `ServeCommand::add_to_linker`).
/// Anything else an app imports needs a `-S` flag.
const WASMTIME_SERVE_WITHOUT_FLAGS: &[&str] = &[
    "wasi:http/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/random@",
    "wasi:cli/stdin@",
    "wasi:cli/stdout@",
    "wasi:cli/stderr@",
];

/// The `wasmtime serve` flag that links each other package (see
/// [`Target::provides`] for what each one links).
const WASMTIME_SERVE_FLAGS: &[(&str, &str)] = &[
    ("wasi:config/", "-Sconfig"),
    ("wasi:keyvalue/", "-Skeyvalue"),
];

/// The flag that links the rest of `wasi:cli/imports` (environment, exit,
/// terminals, filesystem, sockets, the other random interfaces).
const WASMTIME_SERVE_CLI_FLAG: &str = "-Scli";

impl App {
    /// The `-S` flags `wasmtime serve` needs to link this app's imports, in
    /// the order `-Scli`, `-Sconfig`, `-Skeyvalue`; each is left out when
    /// nothing the app imports needs it. Meaningful for
    /// [`Target::Wasmtime`]'s apps.
    pub fn wasmtime_serve_flags(&self) -> Vec<&'static str> {
        let package_flag = |import: &str| {
            WASMTIME_SERVE_FLAGS
                .iter()
                .find(|(package, _)| import.starts_with(package))
                .map(|(_, flag)| *flag)
        };
        let mut flags = Vec::new();
        let needs_cli = self.imports.iter().any(|import| {
            package_flag(import).is_none()
                && !WASMTIME_SERVE_WITHOUT_FLAGS
                    .iter()
                    .any(|prefix| import.starts_with(prefix))
        });
        if needs_cli {
            flags.push(WASMTIME_SERVE_CLI_FLAG);
        }
        for (_, flag) in WASMTIME_SERVE_FLAGS {
            if self
                .imports
                .iter()
                .any(|import| package_flag(import) == Some(*flag))
            {
                flags.push(*flag);
            }
        }
        flags
    }
}

/// One component in the composition: its package in the graph and its
/// component type, by WIT name.
struct Part {
    name: &'static str,
    package: PackageId,
    /// Imports that need an implementation (see [`is_type_only`]).
    imports: Vec<String>,
    exports: Vec<String>,
}

/// Whether an import is an interface of types alone, none of them a
/// resource: such an import names types and needs no implementation
/// (wasmtime's linker does not look it up).
fn is_type_only(types: &Types, kind: ItemKind) -> bool {
    match kind {
        ItemKind::Instance(interface) => types[interface]
            .exports
            .values()
            .all(|item| matches!(item, ItemKind::Type(ty) if !matches!(ty, Type::Resource(_)))),
        _ => false,
    }
}

impl Part {
    fn register(
        graph: &mut CompositionGraph,
        name: &'static str,
        bytes: &[u8],
    ) -> Result<Self, String> {
        let package =
            Package::from_bytes(&format!("warden:{name}"), None, bytes, graph.types_mut())
                .map_err(|err| chain(err.as_ref()))?;
        let types = graph.types();
        let world = &types[package.ty()];
        let imports = world
            .imports
            .iter()
            .filter(|(_, kind)| !is_type_only(types, **kind))
            .map(|(name, _)| name.clone())
            .collect();
        let exports = world.exports.keys().cloned().collect();
        let package = graph.register_package(package).map_err(|err| chain(&err))?;
        Ok(Part {
            name,
            package,
            imports,
            exports,
        })
    }

    fn export_satisfying(&self, import: &str) -> Option<&str> {
        self.exports
            .iter()
            .map(String::as_str)
            .find(|export| satisfies(export, import))
    }
}

/// Composes `plugin` (already checked to be a Warden plugin) with the HTTP
/// adapter and the shims `target` needs.
///
/// # Errors
///
/// [`ExportError::Unsatisfiable`] when the plugin (or the adapter) imports
/// something `target` lacks and no shim supplies; the other variants when
/// the plugin's type cannot be read or composing fails.
pub fn compose(plugin: &[u8], target: Target) -> Result<App, ExportError> {
    compose_for(plugin, target, target.provides())
}

/// [`compose`] for an engine that provides `provides` (which tests vary).
fn compose_for(plugin: &[u8], target: Target, provides: &[&str]) -> Result<App, ExportError> {
    let mut graph = CompositionGraph::new();
    let (plugin, adapter, shims) = register_parts(&mut graph, plugin)?;
    let (plugin_instance, adapter_instance, guest_import) =
        plug_plugin_into_adapter(&mut graph, &plugin, &adapter)
            .map_err(ExportError::Composition)?;

    let mut needs: Vec<(NodeId, &Part, &str)> = Vec::new();
    needs.extend(
        plugin
            .imports
            .iter()
            .map(|import| (plugin_instance, &plugin, import.as_str())),
    );
    needs.extend(
        adapter
            .imports
            .iter()
            .filter(|import| **import != guest_import)
            .map(|import| (adapter_instance, &adapter, import.as_str())),
    );
    let used = plug_shims(&mut graph, &shims, needs, target, provides)?;
    encode_app(&graph, used)
}

/// Registers the plugin, then every embedded component (the HTTP adapter
/// and the shims), with `graph`.
fn register_parts(
    graph: &mut CompositionGraph,
    plugin: &[u8],
) -> Result<(Part, Part, Vec<Part>), ExportError> {
    let plugin = Part::register(graph, "plugin", plugin).map_err(ExportError::UnreadablePlugin)?;
    let mut adapter = None;
    let mut shims = Vec::new();
    for &(name, bytes) in EMBEDDED {
        let part = Part::register(graph, name, bytes).map_err(ExportError::Composition)?;
        if name == ADAPTER {
            adapter = Some(part);
        } else {
            shims.push(part);
        }
    }
    let adapter = adapter
        .ok_or_else(|| ExportError::Composition("the HTTP adapter is not embedded".to_owned()))?;
    Ok((plugin, adapter, shims))
}

/// Instantiates the plugin and the adapter, hands the plugin's guest
/// interface to the adapter and exports the adapter's HTTP handler.
/// Returns both instances and the adapter import the plugin now supplies.
fn plug_plugin_into_adapter(
    graph: &mut CompositionGraph,
    plugin: &Part,
    adapter: &Part,
) -> Result<(NodeId, NodeId, String), String> {
    let plugin_instance = graph.instantiate(plugin.package);
    let adapter_instance = graph.instantiate(adapter.package);
    let guest_import = adapter
        .imports
        .iter()
        .find(|import| satisfies(GUEST_INTERFACE, import))
        .ok_or("the HTTP adapter does not import Warden's guest interface")?;
    let guest_export = plugin.export_satisfying(guest_import).ok_or_else(|| {
        // A plugin of world 0.2 has async exports the adapter cannot
        // call: name the version rather than a missing export.
        let v0_2 = WorldVersion::V0_2.guest_interface();
        if plugin.export_satisfying(v0_2).is_some() {
            format!(
                "the plugin targets world 0.2 (it exports `{v0_2}`); \
                     export-http composes world 0.1 plugins (`{guest_import}`) only: \
                     serve a 0.2 plugin with `warden serve`"
            )
        } else {
            format!("the plugin does not export `{guest_import}`")
        }
    })?;
    let guest = graph
        .alias_instance_export(plugin_instance, guest_export)
        .map_err(|err| chain(&err))?;
    graph
        .set_instantiation_argument(adapter_instance, guest_import, guest)
        .map_err(|err| chain(&err))?;
    let handler_export = adapter
        .exports
        .iter()
        .find(|export| export.starts_with(HANDLER_INTERFACE))
        .ok_or("the HTTP adapter does not export a wasi:http handler")?;
    let handler = graph
        .alias_instance_export(adapter_instance, handler_export)
        .map_err(|err| chain(&err))?;
    graph
        .export(handler, handler_export)
        .map_err(|err| chain(&err))?;
    Ok((plugin_instance, adapter_instance, guest_import.clone()))
}

/// Supplies each of `needs` (an instance, its part and one of its imports)
/// that the engine does not provide from the first shim that exports it and
/// whose own imports the engine provides; each shim used is instantiated
/// once. Returns the imports each shim serves.
fn plug_shims(
    graph: &mut CompositionGraph,
    shims: &[Part],
    needs: Vec<(NodeId, &Part, &str)>,
    target: Target,
    provides: &[&str],
) -> Result<BTreeMap<&'static str, Vec<String>>, ExportError> {
    let provided = |import: &str| provides.iter().any(|provided| satisfies(provided, import));
    let mut shim_instances: BTreeMap<&'static str, NodeId> = BTreeMap::new();
    let mut used: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for (consumer, consumer_part, import) in needs {
        if provided(import) {
            continue;
        }
        let chosen = shims.iter().find_map(|shim| {
            let export = shim.export_satisfying(import)?;
            shim.imports
                .iter()
                .all(|shim_import| provided(shim_import))
                .then_some((shim, export))
        });
        let Some((shim, export)) = chosen else {
            return Err(ExportError::Unsatisfiable {
                import: import.to_owned(),
                consumer: if consumer_part.name == "plugin" {
                    "plugin".to_owned()
                } else {
                    format!("embedded `{}` component", consumer_part.name)
                },
                target,
            });
        };
        let instance = *shim_instances
            .entry(shim.name)
            .or_insert_with(|| graph.instantiate(shim.package));
        let plugging = || format!("plugging `{}` into `{import}`", shim.name);
        let supplied = graph
            .alias_instance_export(instance, export)
            .map_err(|err| ExportError::Composition(failed(&plugging(), &err)))?;
        graph
            .set_instantiation_argument(consumer, import, supplied)
            .map_err(|err| ExportError::Composition(failed(&plugging(), &err)))?;
        used.entry(shim.name).or_default().push(import.to_owned());
    }
    Ok(used)
}

/// Encodes the composed app and reads back what it imports and exports.
fn encode_app(
    graph: &CompositionGraph,
    shims: BTreeMap<&'static str, Vec<String>>,
) -> Result<App, ExportError> {
    let bytes = graph
        .encode(EncodeOptions::default())
        .map_err(|err| ExportError::Composition(chain(&err)))?;
    let mut types = Types::default();
    let app = Package::from_bytes("warden:app", None, bytes.as_slice(), &mut types)
        .map_err(|err| ExportError::Composition(chain(err.as_ref())))?;
    let world = &types[app.ty()];
    let (type_only_imports, imports) = world
        .imports
        .iter()
        .partition::<Vec<_>, _>(|(_, kind)| is_type_only(&types, **kind));
    let names = |imports: Vec<(&String, &ItemKind)>| {
        imports.into_iter().map(|(name, _)| name.clone()).collect()
    };
    Ok(App {
        imports: names(imports),
        type_only_imports: names(type_only_imports),
        exports: world.exports.keys().cloned().collect(),
        shims,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app_importing(imports: &[&str]) -> App {
        App {
            bytes: Vec::new(),
            shims: BTreeMap::new(),
            imports: imports.iter().map(|name| (*name).to_owned()).collect(),
            type_only_imports: Vec::new(),
            exports: vec!["wasi:http/incoming-handler@0.2.12".to_owned()],
        }
    }

    #[test]
    fn wasmtime_serve_flags_are_those_the_imports_need() {
        // The proxy world alone needs no flag.
        let proxy = app_importing(&["wasi:io/streams@0.2.12", "wasi:cli/stdout@0.2.12"]);
        assert!(proxy.wasmtime_serve_flags().is_empty());
        let cli = app_importing(&["wasi:io/streams@0.2.12", "wasi:cli/environment@0.2.12"]);
        assert_eq!(cli.wasmtime_serve_flags(), ["-Scli"]);
        let stores = app_importing(&[
            "wasi:keyvalue/store@0.2.0-draft",
            "wasi:config/store@0.2.0-rc.1",
            "wasi:random/insecure@0.2.12",
        ]);
        assert_eq!(
            stores.wasmtime_serve_flags(),
            ["-Scli", "-Sconfig", "-Skeyvalue"]
        );
    }

    #[test]
    fn a_shim_whose_own_imports_are_missing_is_not_used() {
        let hello = warden_tests::guest_bytes(warden_tests::guests::HELLO);
        let app = compose(&hello, Target::Wasmtime).unwrap();
        assert!(app.shims.contains_key("logging-shim"), "{:?}", app.shims);
        // The logging shim writes to stderr: an engine without stderr can
        // take neither the shim nor the plugin's logging import.
        let without_stderr: Vec<&str> = Target::Wasmtime
            .provides()
            .iter()
            .copied()
            .filter(|interface| !interface.starts_with("wasi:cli/stderr@"))
            .collect();
        let err = compose_for(&hello, Target::Wasmtime, &without_stderr).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(&err, ExportError::Unsatisfiable { import, .. } if import.starts_with("wasi:")),
            "{message}"
        );
        assert!(
            message.contains("wasmtime does not provide it"),
            "{message}"
        );
    }

    #[test]
    fn what_is_not_a_component_is_refused() {
        let err = compose(b"\0asm\x01\0\0\0", Target::Wasmtime).unwrap_err();
        assert!(matches!(err, ExportError::UnreadablePlugin(_)), "{err}");
    }
}

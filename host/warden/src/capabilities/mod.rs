//! The capabilities a plugin can import, one module each.
//!
//! A capability names the WIT interfaces it answers for, says how risky it is
//! under a plugin's grants, adds its host functions to the linker, and builds
//! its share of each instance's state. Every capability is always linked; one
//! that is not granted answers with a typed denial at call time (or is simply
//! empty, like an environment with no variables), and the host records the
//! denials it sees in the call's report. Adding a capability means adding a
//! module here and listing it in [`CAPABILITIES`] and [`InstanceState`].
//!
//! | capability | interfaces | risk |
//! |---|---|---|
//! | `log` | `wasi:logging` | low |
//! | `config` | `wasi:config` | low |
//! | `clocks` | `wasi:clocks` | low |
//! | `random` | `wasi:random` | low |
//! | `stdio` | `wasi:cli/std*`, `wasi:cli/terminal-*` | low |
//! | `kv` | `wasi:keyvalue` | medium |
//! | `fs` | `wasi:filesystem` | medium read-only, high read-write |
//! | `http` | `wasi:http` | high |
//! | `sockets` | `wasi:sockets` | high |
//! | `env` | `wasi:cli/environment` | high |

pub(crate) mod clocks;
pub(crate) mod config;
mod dir_listing;
pub(crate) mod env;
pub(crate) mod fs;
pub(crate) mod http;
pub(crate) mod interrupt;
pub(crate) mod kv;
pub(crate) mod logging;
pub(crate) mod random;
pub(crate) mod sockets;
pub(crate) mod stdio;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiView};

use crate::error::Error;
use crate::grants::Sandbox;
use crate::host_memory::{HostMemory, MAX_RECORD_TEXT_BYTES, RECORD_WORDS_BYTES, truncate_text};
use crate::state::HostState;

/// How much authority a capability hands to a plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Risk {
    /// Cannot affect anything outside the plugin's own call: logs, clocks, random numbers.
    Low,
    /// Reads host data or keeps state of its own: a key-value namespace, read-only files.
    Medium,
    /// Reaches the network, the host's files or its environment.
    High,
}

impl Risk {
    /// `low`, `medium` or `high`.
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
        }
    }
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One capability: what it is called, which interfaces it answers for, how
/// risky it is, whether a sandbox grants it, and how it is linked.
pub(crate) struct Capability {
    pub name: &'static str,
    /// Interface names without their version, e.g. `wasi:http/outgoing-handler`.
    pub interfaces: &'static [&'static str],
    /// The risk under the given grants; for a capability that is not
    /// granted, the most it could be.
    pub risk: fn(&Sandbox) -> Risk,
    pub granted: fn(&Sandbox) -> bool,
    /// The flag (or manifest key) that grants it, for error messages.
    pub how_to_grant: &'static str,
    pub add_to_linker: fn(&mut Linker<HostState>) -> wasmtime::Result<()>,
}

/// Every capability Warden provides.
pub(crate) const CAPABILITIES: [&Capability; 10] = [
    &logging::CAPABILITY,
    &config::CAPABILITY,
    &clocks::CAPABILITY,
    &random::CAPABILITY,
    &stdio::CAPABILITY,
    &kv::CAPABILITY,
    &fs::CAPABILITY,
    &http::CAPABILITY,
    &sockets::CAPABILITY,
    &env::CAPABILITY,
];

/// Adds every capability's imports to `linker`, and the plumbing that carries
/// no authority of its own: streams, pollables, errors and `exit`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::{cli, io};
    type Io = HasSelf<ResourceTable>;
    io::error::add_to_linker::<_, Io>(linker, |state| &mut state.table)?;
    io::poll::add_to_linker::<_, Io>(linker, |state| &mut state.table)?;
    io::streams::add_to_linker::<_, Io>(linker, |state| &mut state.table)?;
    cli::exit::add_to_linker::<_, WasiCli>(linker, <HostState as WasiCliView>::cli)?;
    for capability in CAPABILITIES {
        (capability.add_to_linker)(linker)?;
    }
    Ok(())
}

/// A capability that a plugin imports, as `warden inspect` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CapabilityUse {
    /// The capability's name, e.g. `http`.
    pub name: &'static str,
    /// Its risk under the plugin's grants (the most it could be when not granted).
    pub risk: Risk,
    /// Whether the plugin's grants allow it.
    pub granted: bool,
    /// The plugin's imports that belong to it, by WIT name.
    pub imports: Vec<String>,
    /// The flag or manifest key that grants it.
    pub how_to_grant: &'static str,
}

/// Maps a component's imports onto capabilities, in [`CAPABILITIES`] order.
pub(crate) fn capabilities_of(imports: &[String], sandbox: &Sandbox) -> Vec<CapabilityUse> {
    CAPABILITIES
        .iter()
        .filter_map(|capability| {
            let imports = imports_of(capability.interfaces, imports)?;
            Some(CapabilityUse {
                name: capability.name,
                risk: (capability.risk)(sandbox),
                granted: (capability.granted)(sandbox),
                imports,
                how_to_grant: capability.how_to_grant,
            })
        })
        .collect()
}

/// A capability the embedding application defines: the WIT interfaces it
/// imports into plugins of its own world (see [`World`](crate::World)).
/// Granted by name in [`Grants::host`](crate::Grants::host); `inspect`,
/// [`Sandbox::strict`] and the call-time check
/// ([`HostState::require`](crate::HostState::require)) treat it like a
/// built-in capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostCapability {
    /// The capability's name, e.g. `dictionary`.
    pub name: &'static str,
    /// The interfaces it answers for, without versions, e.g.
    /// `example:filters/dictionary`.
    pub interfaces: &'static [&'static str],
    /// How much authority it hands to a plugin.
    pub risk: Risk,
    /// How an operator grants it, for error messages.
    pub how_to_grant: &'static str,
}

/// Maps a component's imports onto the application's capabilities, in the
/// order given.
pub(crate) fn host_capabilities_of(
    imports: &[String],
    sandbox: &Sandbox,
    defined: &[HostCapability],
) -> Vec<CapabilityUse> {
    defined
        .iter()
        .filter_map(|capability| {
            let imports = imports_of(capability.interfaces, imports)?;
            Some(CapabilityUse {
                name: capability.name,
                risk: capability.risk,
                granted: sandbox.grants.host.contains(capability.name),
                imports,
                how_to_grant: capability.how_to_grant,
            })
        })
        .collect()
}

/// The imports that belong to a capability answering for `interfaces`, or
/// `None` when the component imports none of them.
fn imports_of(interfaces: &[&str], imports: &[String]) -> Option<Vec<String>> {
    let matching: Vec<String> = imports
        .iter()
        .filter(|import| interfaces.contains(&unversioned(import)))
        .cloned()
        .collect();
    (!matching.is_empty()).then_some(matching)
}

/// `wasi:http/types@0.2.12` → `wasi:http/types`.
fn unversioned(name: &str) -> &str {
    name.split_once('@').map_or(name, |(name, _version)| name)
}

/// A request the host refused because a capability was not granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The capability, e.g. `http`.
    pub capability: &'static str,
    /// What was refused, e.g. the URL or the address.
    pub detail: String,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} capability: {}", self.capability, self.detail)
    }
}

/// Denials seen during the current call. Shared with callbacks that run
/// outside the store (socket address checks, HTTP hooks).
#[derive(Clone, Debug)]
pub(crate) struct DenialLog {
    denials: Arc<Mutex<Vec<Denial>>>,
    host_memory: HostMemory,
}

/// Denials kept per call; a guest retrying in a loop should not grow the
/// report without bound.
const MAX_DENIALS: usize = 100;

impl DenialLog {
    pub(crate) fn new(host_memory: &HostMemory) -> Self {
        DenialLog {
            denials: Arc::default(),
            host_memory: host_memory.clone(),
        }
    }

    /// Records a denial. The detail usually quotes the guest (a key, a URI),
    /// which the caller cuts with
    /// [`truncate_record_text`](crate::truncate_record_text); whatever a
    /// caller did, the detail is cut to that size plus room for the host's
    /// own words. It is charged to the instance's host-memory budget, and a
    /// denial that does not fit is logged but not kept.
    pub(crate) fn record(&self, capability: &'static str, detail: impl Into<String>) {
        let detail = detail.into();
        let detail =
            truncate_text(&detail, MAX_RECORD_TEXT_BYTES + RECORD_WORDS_BYTES).into_owned();
        tracing::debug!(target: "warden::denied", capability, %detail, "capability denied");
        let mut denials = self.denials.lock().unwrap_or_else(PoisonError::into_inner);
        if denials.len() < MAX_DENIALS && self.host_memory.try_hold_record(detail.len()) {
            denials.push(Denial { capability, detail });
        }
    }

    pub(crate) fn take(&self) -> Vec<Denial> {
        let denials =
            std::mem::take(&mut *self.denials.lock().unwrap_or_else(PoisonError::into_inner));
        self.host_memory
            .release_records(denials.iter().map(|denial| denial.detail.len()).sum());
        denials
    }
}

/// What happens to a program's stdout and stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stdio {
    /// Captured into the call's report, bounded.
    #[default]
    Capture,
    /// Written through to the host process's own stdout and stderr, bounded.
    /// On a host stream that is a terminal, control characters other than
    /// newline and tab are shown escaped ([`crate::terminal`]).
    Forward,
}

/// Per-instance settings that are not part of the sandbox.
#[derive(Clone, Debug, Default)]
pub(crate) struct InstanceOptions {
    /// Command-line arguments, for programs run with `wasi:cli/run`.
    pub args: Vec<String>,
    pub stdio: Stdio,
    /// Whether the instance is a WASI preview 1 core module, which needs a
    /// preview 1 context ([`WasiContext::Preview1`]).
    pub preview1: bool,
}

/// An instance's WASI context, configured by the same grants either way.
pub(crate) enum WasiContext {
    /// A component's: its resources live in the store's own table, shared
    /// with the other capabilities.
    Component(WasiCtx),
    /// A preview 1 module's: wasmtime-wasi's preview 1 state, which keeps its
    /// descriptors in a table of its own (bounded like the store's).
    Preview1(WasiP1Ctx),
}

impl WasiContext {
    /// The WASI context inside, whichever kind of instance holds it.
    pub(crate) fn ctx(&mut self) -> &mut WasiCtx {
        match self {
            WasiContext::Component(ctx) => ctx,
            WasiContext::Preview1(preview1) => preview1.ctx().ctx,
        }
    }
}

/// What the capabilities prepare once per plugin, at load, and share with
/// all of its instances.
#[derive(Debug)]
pub(crate) struct PluginResources {
    config: Arc<BTreeMap<String, String>>,
    http: Arc<http::HttpGrant>,
    sockets: Arc<sockets::SocketPolicy>,
    kv: Option<kv::SharedStore>,
    /// Host-defined capabilities the sandbox grants, by name.
    pub(crate) host_grants: Arc<BTreeSet<String>>,
    /// The granted directories, opened once: instances never look their
    /// paths up again.
    dirs: fs::GrantedDirs,
}

impl PluginResources {
    /// Checks the grants and opens what they name (granted directories are
    /// opened under the rules of the `fs` module, the kv store is opened or
    /// created).
    pub(crate) fn prepare(plugin_name: &str, sandbox: &Sandbox) -> Result<Self, Error> {
        let grants = &sandbox.grants;
        let dirs = fs::GrantedDirs::open(grants)?;
        Ok(PluginResources {
            config: Arc::new(grants.config.clone()),
            http: Arc::new(grants.http.clone()),
            sockets: Arc::new(sockets::SocketPolicy::new(grants)),
            kv: grants
                .kv
                .as_ref()
                .map(|grant| kv::SharedStore::open(grant, plugin_name))
                .transpose()?,
            host_grants: Arc::new(grants.host.clone()),
            dirs,
        })
    }
}

/// Every capability's state for one instance.
pub(crate) struct InstanceState {
    pub wasi: WasiContext,
    pub http: http::HttpState,
    pub kv: kv::KvState,
    pub config: config::ConfigState,
    pub sockets: sockets::SocketState,
    pub clock: clocks::ClockState,
    pub logs: logging::LogCapture,
    pub stdout: stdio::CapturedOutput,
    pub stderr: stdio::CapturedOutput,
    pub denials: DenialLog,
}

impl InstanceState {
    pub(crate) fn new(
        plugin_name: &Arc<str>,
        sandbox: &Sandbox,
        resources: &PluginResources,
        options: &InstanceOptions,
        host_memory: &HostMemory,
    ) -> Result<Self, Error> {
        let limits = &sandbox.limits;
        let grants = &sandbox.grants;
        let denials = DenialLog::new(host_memory);
        let (stdout, stderr) = stdio::streams(limits, options.stdio);
        let mut wasi = WasiCtxBuilder::new();
        wasi.args(&options.args);
        stdio::configure(&mut wasi, &stdout, &stderr);
        env::configure(&mut wasi, grants);
        let clock = clocks::configure(&mut wasi, grants);
        random::configure(&mut wasi, grants);
        let sockets = sockets::configure(&mut wasi, &resources.sockets, &denials, limits.sockets);
        let wasi = if options.preview1 {
            let mut preview1 = wasi.build_p1();
            let view = preview1.ctx();
            view.table.set_max_capacity(limits.host_resources);
            // A preview 1 context turns its preopens into descriptors at the
            // first call, so the directories are in place before that.
            resources.dirs.install(view.ctx);
            WasiContext::Preview1(preview1)
        } else {
            let mut wasi = wasi.build();
            resources.dirs.install(&mut wasi);
            WasiContext::Component(wasi)
        };
        Ok(InstanceState {
            wasi,
            http: http::HttpState::new(&resources.http, &denials, sockets.connection_slots()),
            kv: kv::KvState::new(resources.kv.as_ref(), &denials),
            config: config::ConfigState::new(&resources.config, &denials),
            sockets,
            clock,
            logs: logging::LogCapture::new(plugin_name.clone(), limits, host_memory),
            stdout,
            stderr,
            denials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_interface_of_the_world_is_a_capability_or_plumbing() {
        let world = [
            "wasi:cli/environment@0.2.12",
            "wasi:cli/exit@0.2.12",
            "wasi:cli/stdin@0.2.12",
            "wasi:cli/stdout@0.2.12",
            "wasi:cli/stderr@0.2.12",
            "wasi:cli/terminal-input@0.2.12",
            "wasi:cli/terminal-output@0.2.12",
            "wasi:cli/terminal-stdin@0.2.12",
            "wasi:cli/terminal-stdout@0.2.12",
            "wasi:cli/terminal-stderr@0.2.12",
            "wasi:io/error@0.2.12",
            "wasi:io/poll@0.2.12",
            "wasi:io/streams@0.2.12",
            "wasi:clocks/monotonic-clock@0.2.12",
            "wasi:clocks/wall-clock@0.2.12",
            "wasi:filesystem/types@0.2.12",
            "wasi:filesystem/preopens@0.2.12",
            "wasi:sockets/network@0.2.12",
            "wasi:sockets/instance-network@0.2.12",
            "wasi:sockets/udp@0.2.12",
            "wasi:sockets/udp-create-socket@0.2.12",
            "wasi:sockets/tcp@0.2.12",
            "wasi:sockets/tcp-create-socket@0.2.12",
            "wasi:sockets/ip-name-lookup@0.2.12",
            "wasi:random/random@0.2.12",
            "wasi:random/insecure@0.2.12",
            "wasi:random/insecure-seed@0.2.12",
            "wasi:logging/logging@0.1.0-draft",
            "wasi:http/types@0.2.12",
            "wasi:http/outgoing-handler@0.2.12",
            "wasi:config/store@0.2.0-rc.1",
            "wasi:keyvalue/store@0.2.0-draft",
            "wasi:keyvalue/atomics@0.2.0-draft",
            "wasi:keyvalue/batch@0.2.0-draft",
            "warden:plugin/types@0.1.0",
        ];
        // Stream plumbing, exiting and Warden's own types carry no authority.
        let plumbing = [
            "wasi:io/error",
            "wasi:io/poll",
            "wasi:io/streams",
            "wasi:cli/exit",
            "warden:plugin/types",
        ];
        let imports: Vec<String> = world.iter().map(|name| name.to_string()).collect();
        let uses = capabilities_of(&imports, &Sandbox::default());
        for import in &imports {
            let claimed = uses.iter().filter(|u| u.imports.contains(import)).count();
            let is_plumbing = usize::from(plumbing.contains(&unversioned(import)));
            assert_eq!(
                claimed + is_plumbing,
                1,
                "{import} must belong to exactly one place"
            );
        }
        assert_eq!(uses.len(), CAPABILITIES.len());
    }

    #[test]
    fn nothing_risky_is_granted_by_default() {
        let sandbox = Sandbox::default();
        for capability in CAPABILITIES {
            let risk = (capability.risk)(&sandbox);
            let granted = (capability.granted)(&sandbox);
            assert!(
                risk == Risk::Low || !granted,
                "{} is {risk} risk and granted by default",
                capability.name
            );
        }
    }
}

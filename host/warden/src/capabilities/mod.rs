//! The capabilities a plugin can import, one module each.
//!
//! A capability names the WIT interfaces it answers for, says how risky it is
//! under a plugin's grants, adds its host functions to the linker, prepares
//! what its grant names once per plugin, builds its share of each instance's
//! state, and adds what it collected to the call's report: the [`Capability`]
//! trait. Every capability is always linked; one that is not granted answers
//! with a typed denial at call time (or is simply empty, like an environment
//! with no variables), and the host records the denials it sees in the call's
//! report.
//!
//! The list at the end of this file registers them, in the order `inspect`
//! shows them: the capability table ([`CAPABILITIES`]: each one's name,
//! interfaces and risk, from its [`Capability`] constants), the fields of
//! [`Grants`], the per-plugin [`PluginResources`] and the per-instance
//! [`InstanceState`] are all derived from it. Adding a capability means:
//!
//! 1. its WIT interfaces in `wit/` (`bindings.rs` generates their host
//!    traits; a resource the host implements is named in its `with`);
//! 2. a module here with a type implementing [`Capability`], whose host
//!    functions reach its per-instance state as `state.caps.NAME`;
//! 3. one entry in the list below, with the fields its grant adds to
//!    [`Grants`];
//! 4. if an operator grants it, its settings in the sandbox spec
//!    ([`GrantOptions`](crate::GrantOptions), `manifest/options.rs`): one
//!    field is both the manifest's key and the command line's flag, and
//!    [`GrantOptions::apply`](crate::GrantOptions::apply) turns it into the
//!    grant.
//!
//! The test at the end checks the list against the imports of `world
//! plugin` in `wit/`: every import belongs to exactly one capability (or to
//! the plumbing that carries no authority), and every capability is
//! imported.

pub(crate) mod clocks;
pub(crate) mod config;
mod denials;
mod dir_listing;
pub(crate) mod env;
pub(crate) mod fs;
pub(crate) mod http;
mod imports;
mod instance;
pub(crate) mod interrupt;
pub(crate) mod kv;
pub(crate) mod log;
pub(crate) mod random;
pub(crate) mod sockets;
pub(crate) mod stdio;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

pub use self::denials::Denial;
pub(crate) use self::denials::DenialLog;
pub use self::imports::{CapabilityUse, HostCapability};
pub(crate) use self::imports::{capabilities_of, host_capabilities_of};
pub use self::instance::Stdio;
pub(crate) use self::instance::{InstanceOptions, InstanceSetup, WasiContext};
use crate::error::Error;
use crate::grants::{Preopen, Sandbox};
use crate::host_memory::HostMemory;
use crate::report::Report;
use crate::state::HostState;

/// How much authority a capability hands to a plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Risk {
    /// Cannot affect anything outside the plugin's own call: logs, clocks,
    /// random numbers, an environment with nothing granted in it (empty).
    Low,
    /// Reads host data or keeps state of its own: a key-value namespace,
    /// read-only files, granted environment variables.
    Medium,
    /// Reaches the network or writes the host's files.
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

/// One capability Warden provides, at each of its scopes: what it is
/// (constants), how it is linked (once per runtime), what it prepares from
/// the grants (once per plugin, at load), what each instance holds, and what
/// it adds to a call's report.
pub(crate) trait Capability {
    /// Its name, as `inspect`, denials and errors show it, e.g. `http`.
    const NAME: &'static str;
    /// The interfaces it answers for, without their version, e.g.
    /// `wasi:http/outgoing-handler`.
    const INTERFACES: &'static [&'static str];
    /// The flag and the manifest key that grant it, for `inspect` and for
    /// error messages (a denial's, `--strict`'s).
    const HOW_TO_GRANT: &'static str;

    /// What it prepares once per plugin and shares with all of its
    /// instances (opened directories, an open store, a parsed policy).
    type Shared: fmt::Debug + Send + Sync;
    /// What each instance holds.
    type State: Send;

    /// Its risk under `sandbox`'s grants; for a capability that is not
    /// granted, the most it could be.
    fn risk(sandbox: &Sandbox) -> Risk;

    /// Whether `sandbox` grants it.
    fn granted(sandbox: &Sandbox) -> bool;

    /// Adds its host functions to `linker`.
    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()>;

    /// Adds its WASI 0.3 host functions, for plugins of world 0.2, to the
    /// linker of the engine with component-model concurrency; they must
    /// grant exactly what its WASI 0.2 functions grant. Default: none (the
    /// capability has no WASI 0.3 interface, or Warden does not provide it
    /// yet and `load::link::plugin_v0_2` links its functions to ones that
    /// trap).
    fn add_wasi_0_3_to_linker(_linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        Ok(())
    }

    /// Checks its grant and opens what the grant names, when the plugin
    /// loads.
    fn prepare(plugin_name: &str, sandbox: &Sandbox) -> Result<Self::Shared, Error>;

    /// Builds its state for a new instance, configuring the instance's WASI
    /// context in `setup` as it needs.
    fn instantiate(shared: &Self::Shared, setup: &mut InstanceSetup<'_>) -> Self::State;

    /// Puts what it must into the instance's WASI context once that is built.
    fn install(_shared: &Self::Shared, _wasi: &mut WasiCtx) {}

    /// Moves what it collected during a call into the call's report.
    fn report(_state: &mut Self::State, _report: &mut Report) {}
}

/// A capability's constants and functions, for code that walks all of them
/// (`inspect`, the linker).
pub(crate) struct CapabilityInfo {
    pub name: &'static str,
    pub interfaces: &'static [&'static str],
    pub risk: fn(&Sandbox) -> Risk,
    pub granted: fn(&Sandbox) -> bool,
    pub how_to_grant: &'static str,
    pub add_to_linker: fn(&mut Linker<HostState>) -> wasmtime::Result<()>,
    pub add_wasi_0_3_to_linker: fn(&mut Linker<HostState>) -> wasmtime::Result<()>,
}

impl CapabilityInfo {
    const fn of<C: Capability>() -> Self {
        CapabilityInfo {
            name: C::NAME,
            interfaces: C::INTERFACES,
            risk: C::risk,
            granted: C::granted,
            how_to_grant: C::HOW_TO_GRANT,
            add_to_linker: C::add_to_linker,
            add_wasi_0_3_to_linker: C::add_wasi_0_3_to_linker,
        }
    }
}

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

/// Declares the registered capabilities: `field: Type { grant fields };`
/// for each, in the order `inspect` lists them. `field` names the
/// capability's part of [`PluginResources`] and [`InstanceState`]; the grant
/// fields (with their documentation) become fields of [`Grants`].
/// Adds the WASI 0.3 interfaces of every capability that has them, and
/// exiting, to a linker that already has everything [`add_to_linker`] adds.
pub(crate) fn add_wasi_0_3_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p3::bindings::cli;
    cli::exit::add_to_linker::<_, WasiCli>(linker, <HostState as WasiCliView>::cli)?;
    for capability in CAPABILITIES {
        (capability.add_wasi_0_3_to_linker)(linker)?;
    }
    Ok(())
}

macro_rules! capabilities {
    ($(
        $field:ident: $capability:ty { $($(#[$grant_doc:meta])* $grant:ident: $grant_type:ty,)* };
    )*) => {
        /// Every capability Warden provides, in the order `inspect` lists them.
        pub(crate) const CAPABILITIES: &[CapabilityInfo] =
            &[$(CapabilityInfo::of::<$capability>()),*];

        /// Capabilities granted to a plugin. The default grants nothing beyond the
        /// low-risk capabilities every plugin has (logging, clocks, random numbers,
        /// captured stdout and stderr).
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct Grants {
            $($($(#[$grant_doc])* pub $grant: $grant_type,)*)*
            /// Fixed wall clock, stepping monotonic clock (which timers follow, so
            /// sleeping takes no real time), file timestamps at the fixed wall clock
            /// and seeded random numbers, so that runs are reproducible. Default:
            /// off (real clocks and random).
            pub deterministic: bool,
            /// Capabilities the embedding application defines for its own WIT
            /// imports ([`HostCapability`](crate::HostCapability)), granted by name.
            /// Default: none.
            pub host: BTreeSet<String>,
        }

        /// What the capabilities prepare once per plugin, at load, and share
        /// with all of its instances.
        #[derive(Debug)]
        pub(crate) struct PluginResources {
            $(pub(crate) $field: <$capability as Capability>::Shared,)*
            /// Host-defined capabilities the sandbox grants, by name.
            pub(crate) host_grants: Arc<BTreeSet<String>>,
        }

        impl PluginResources {
            /// Checks the grants and opens what they name, capability by
            /// capability.
            pub(crate) fn prepare(plugin_name: &str, sandbox: &Sandbox) -> Result<Self, Error> {
                Ok(PluginResources {
                    $($field: <$capability as Capability>::prepare(plugin_name, sandbox)?,)*
                    host_grants: Arc::new(sandbox.grants.host.clone()),
                })
            }
        }

        /// Every capability's state for one instance, with the WASI context
        /// they configure together and the denials they record.
        pub(crate) struct InstanceState {
            pub wasi: WasiContext,
            pub denials: DenialLog,
            $(pub $field: <$capability as Capability>::State,)*
        }

        impl InstanceState {
            pub(crate) fn new(
                plugin_name: &Arc<str>,
                sandbox: &Sandbox,
                resources: &PluginResources,
                options: &InstanceOptions,
                host_memory: &HostMemory,
            ) -> Self {
                let denials = DenialLog::new(host_memory);
                let mut wasi = WasiCtxBuilder::new();
                wasi.args(&options.args);
                let mut setup = InstanceSetup {
                    plugin_name,
                    sandbox,
                    options,
                    host_memory,
                    denials: &denials,
                    sockets: sockets::ConnectionSlots::new(sandbox.limits.sockets),
                    wasi,
                };
                $(let $field = <$capability as Capability>::instantiate(&resources.$field, &mut setup);)*
                let wasi = WasiContext::build(setup.wasi, options, sandbox.limits.host_resources, |wasi| {
                    $(<$capability as Capability>::install(&resources.$field, wasi);)*
                });
                InstanceState { wasi, denials, $($field,)* }
            }

            /// Moves what the capabilities collected during a call into its
            /// report; the denials are taken last, after every capability
            /// had its say.
            pub(crate) fn report(&mut self, report: &mut Report) {
                $(<$capability as Capability>::report(&mut self.$field, report);)*
                report.denials = self.denials.take();
            }
        }
    };
}

capabilities! {
    log: log::Log {};
    config: config::Config {
        /// Values the plugin reads through `wasi:config/store` (`config`).
        /// Default: none.
        config: BTreeMap<String, String>,
    };
    clocks: clocks::Clocks {};
    random: random::Random {};
    stdio: stdio::StandardStreams {};
    kv: kv::Kv {
        /// The key-value store (`kv`). Default: none.
        kv: Option<kv::KvGrant>,
    };
    fs: fs::Filesystem {
        /// Host directories the plugin can see (`fs`). Default: none. Each is
        /// opened once, when the plugin loads, and never looked up again while
        /// it is loaded; a symbolic link on its host path is followed only when
        /// it leads beneath the directory holding the link.
        dirs: Vec<Preopen>,
    };
    http: http::Http {
        /// Outgoing HTTP (`http`). Default: no origin allowed.
        http: http::HttpGrant,
    };
    sockets: sockets::Sockets {
        /// TCP addresses the plugin may connect to (`sockets`). Default: none.
        /// Binding, listening and accepting need [`Grants::tcp_listen`].
        tcp: Vec<sockets::SocketPattern>,
        /// UDP addresses the plugin may send to or bind (`sockets`). Default: none.
        udp: Vec<sockets::SocketPattern>,
        /// Local TCP addresses the plugin may bind and listen on, accepting
        /// connections from any peer (`sockets`). Separate from
        /// [`Grants::tcp`], so that a plugin allowed to connect somewhere
        /// cannot also open a server. Default: none.
        tcp_listen: Vec<sockets::SocketPattern>,
    };
    env: env::Env {
        /// Environment variables the plugin sees, in order (`env`). Default:
        /// none; the host's environment is never inherited.
        env: Vec<(String, String)>,
    };
}

#[cfg(test)]
mod tests {
    use super::imports::unversioned;
    use super::*;

    /// The interfaces `world plugin` imports, read from `wit/`, with
    /// their versions.
    /// The imports of `world plugin` in the WIT package at `dir` (under the
    /// repository's `wit/`).
    fn world_imports(dir: &str) -> Vec<String> {
        let mut resolve = wit_parser::Resolve::default();
        let wit = format!("{}/../../wit{dir}", env!("CARGO_MANIFEST_DIR"));
        let (package, _) = resolve.push_dir(&wit).expect("the WIT parses");
        let world = resolve
            .select_world(&[package], Some("plugin"))
            .expect("wit/ defines world plugin");
        resolve.worlds[world]
            .imports
            .keys()
            .map(|key| resolve.name_world_key(key))
            .collect()
    }

    #[test]
    fn every_interface_of_both_worlds_is_a_capability_or_plumbing() {
        for dir in ["", "/v0.2"] {
            every_import_is_a_capability_or_plumbing(&world_imports(dir));
        }
    }

    fn every_import_is_a_capability_or_plumbing(imports: &[String]) {
        // Stream plumbing, exiting and Warden's own types carry no authority.
        let plumbing = [
            "wasi:io/error",
            "wasi:io/poll",
            "wasi:io/streams",
            "wasi:cli/exit",
            "wasi:cli/types",
            "wasi:clocks/types",
            "warden:plugin/types",
        ];
        let uses = capabilities_of(imports, &Sandbox::default());
        for import in imports {
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

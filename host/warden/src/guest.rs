//! The two versions of Warden's plugin world, behind one interface: which
//! version a component targets, its exports pre-instantiated, and calls of
//! `init`, `execute` and `shutdown` on an instance of either.
//!
//! A 0.1 plugin runs on the runtime's plain engine and is called
//! synchronously on a fiber, as it always was. A 0.2 plugin runs on the
//! engine with component-model concurrency: each call runs the store's
//! event loop ([`Store::run_concurrent`]) until the guest's task returns.

use std::fmt;

use wasmtime::Store;
use wasmtime::component::{Component, InstancePre};

use crate::PluginError;
use crate::bindings::v0_2::exports::warden::plugin::{guest, lifecycle, streaming};
use crate::bindings::{Plugin as PluginBindings, PluginPre as PluginBindingsPre};
use crate::error::Error;
use crate::metadata::Metadata;
use crate::state::HostState;

/// A version of the `warden:plugin` world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum WorldVersion {
    /// `warden:plugin@0.1.0`: synchronous `init` and `execute` on WASI 0.2.
    V0_1,
    /// `warden:plugin@0.2.0`: async entry points on WASI 0.3, optional
    /// `streaming` and `lifecycle` exports.
    V0_2,
}

impl WorldVersion {
    /// Every version this host runs, oldest first.
    pub const ALL: [WorldVersion; 2] = [WorldVersion::V0_1, WorldVersion::V0_2];

    /// The package version, e.g. `0.2.0`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorldVersion::V0_1 => "0.1.0",
            WorldVersion::V0_2 => "0.2.0",
        }
    }

    /// The `guest` interface a plugin of this version exports.
    pub fn guest_interface(self) -> &'static str {
        match self {
            WorldVersion::V0_1 => "warden:plugin/guest@0.1.0",
            WorldVersion::V0_2 => "warden:plugin/guest@0.2.0",
        }
    }

    /// Which version a component targets, from the name of its `guest`
    /// export: `None` for a component without one (not a plugin), an
    /// [`Error::InvalidPlugin`] naming the supported versions for one of a
    /// version this host does not know.
    pub(crate) fn of_exports<'a>(
        mut exports: impl Iterator<Item = &'a str>,
    ) -> Result<Option<WorldVersion>, Error> {
        let Some(guest) = exports.find(|name| name.starts_with(GUEST_PREFIX)) else {
            return Ok(None);
        };
        match Self::ALL
            .into_iter()
            .find(|version| version.guest_interface() == guest)
        {
            Some(version) => Ok(Some(version)),
            None => Err(Error::invalid_plugin(format!(
                "the component exports `{guest}`, a version of Warden's plugin world this host \
                 does not run; it runs {}",
                supported_versions()
            ))),
        }
    }

    /// Which version a component's bytes target, read from its top-level
    /// export section without compiling it. Bytes that do not parse give
    /// `None`: compiling them then says what is wrong, as for any component.
    pub(crate) fn of_component_bytes(bytes: &[u8]) -> Result<Option<WorldVersion>, Error> {
        match top_level_exports(bytes) {
            Ok(exports) => Self::of_exports(exports.iter().map(String::as_str)),
            Err(_) => Ok(None),
        }
    }
}

impl fmt::Display for WorldVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The start of every version's `guest` export name.
const GUEST_PREFIX: &str = "warden:plugin/guest@";

/// `warden:plugin@0.1.0 and warden:plugin@0.2.0`, for error messages.
fn supported_versions() -> String {
    WorldVersion::ALL
        .iter()
        .map(|version| format!("warden:plugin@{version}"))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// The names a component exports at its top level.
fn top_level_exports(bytes: &[u8]) -> Result<Vec<String>, wasmparser::BinaryReaderError> {
    use wasmparser::{Parser, Payload};
    let mut names = Vec::new();
    // `parse_all` walks nested modules and components too, each between its
    // section and its own `End`; only depth 0 is the component itself.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) if depth == 0 => break,
            Payload::End(_) => depth -= 1,
            Payload::ComponentExportSection(exports) if depth == 0 => {
                for export in exports {
                    names.push(export?.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

/// A plugin's exports, resolved against its component once at load.
pub(crate) enum GuestPre {
    V0_1(PluginBindingsPre<HostState>),
    V0_2(AsyncGuestPre),
}

/// A 0.2 plugin's exports: `guest`, and the optional interfaces it has.
pub(crate) struct AsyncGuestPre {
    pre: InstancePre<HostState>,
    guest: guest::GuestIndices,
    streaming: Option<streaming::GuestIndices>,
    lifecycle: Option<lifecycle::GuestIndices>,
}

impl GuestPre {
    /// The exports of a 0.1 plugin linked as `pre`.
    pub(crate) fn v0_1(pre: PluginBindingsPre<HostState>) -> Self {
        GuestPre::V0_1(pre)
    }

    /// The exports of a 0.2 plugin linked as `pre`, type-checked against
    /// Warden's WIT.
    pub(crate) fn v0_2(pre: InstancePre<HostState>) -> Result<Self, Error> {
        let mismatch = |interface: &str, err: wasmtime::Error| {
            Error::invalid_plugin(format!(
                "the `{interface}` export does not match Warden's WIT (wit/v0.2/plugin.wit): {err:#}"
            ))
        };
        let guest = guest::GuestIndices::new(&pre)
            .map_err(|err| mismatch("warden:plugin/guest@0.2.0", err))?;
        let streaming = optional_export(&pre, STREAMING_INTERFACE)
            .then(|| streaming::GuestIndices::new(&pre))
            .transpose()
            .map_err(|err| mismatch(STREAMING_INTERFACE, err))?;
        let lifecycle = optional_export(&pre, LIFECYCLE_INTERFACE)
            .then(|| lifecycle::GuestIndices::new(&pre))
            .transpose()
            .map_err(|err| mismatch(LIFECYCLE_INTERFACE, err))?;
        Ok(GuestPre::V0_2(AsyncGuestPre {
            pre,
            guest,
            streaming,
            lifecycle,
        }))
    }

    /// The world version the plugin targets.
    pub(crate) fn version(&self) -> WorldVersion {
        match self {
            GuestPre::V0_1(_) => WorldVersion::V0_1,
            GuestPre::V0_2(_) => WorldVersion::V0_2,
        }
    }

    /// Whether the plugin exports `streaming`.
    pub(crate) fn streams(&self) -> bool {
        matches!(self, GuestPre::V0_2(pre) if pre.streaming.is_some())
    }

    /// Whether the plugin exports `lifecycle`.
    pub(crate) fn has_lifecycle(&self) -> bool {
        matches!(self, GuestPre::V0_2(pre) if pre.lifecycle.is_some())
    }

    /// Creates an instance in `store` and finds its exports.
    pub(crate) async fn instantiate(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Guest> {
        match self {
            GuestPre::V0_1(pre) => Ok(Guest::V0_1(pre.instantiate_async(store).await?)),
            GuestPre::V0_2(pre) => {
                let instance = pre.pre.instantiate_async(&mut *store).await?;
                Ok(Guest::V0_2(AsyncGuest {
                    guest: pre.guest.load(&mut *store, &instance)?,
                    streaming: pre
                        .streaming
                        .as_ref()
                        .map(|indices| indices.load(&mut *store, &instance))
                        .transpose()?,
                    lifecycle: pre
                        .lifecycle
                        .as_ref()
                        .map(|indices| indices.load(&mut *store, &instance))
                        .transpose()?,
                }))
            }
        }
    }
}

/// The optional 0.2 interfaces, as exported.
pub(crate) const STREAMING_INTERFACE: &str = "warden:plugin/streaming@0.2.0";
pub(crate) const LIFECYCLE_INTERFACE: &str = "warden:plugin/lifecycle@0.2.0";

fn optional_export(pre: &InstancePre<HostState>, name: &str) -> bool {
    let component: &Component = pre.component();
    component
        .component_type()
        .get_export(pre.engine(), name)
        .is_some()
}

/// One instance's exports.
pub(crate) enum Guest {
    V0_1(PluginBindings),
    V0_2(AsyncGuest),
}

/// A 0.2 instance's exports.
pub(crate) struct AsyncGuest {
    guest: guest::Guest,
    pub(crate) streaming: Option<streaming::Guest>,
    lifecycle: Option<lifecycle::Guest>,
}

impl Guest {
    /// Calls `init`.
    pub(crate) async fn init(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Result<Metadata, PluginError>> {
        match self {
            Guest::V0_1(guest) => Ok(guest
                .warden_plugin_guest()
                .call_init(store)
                .await?
                .map(Metadata::from)),
            Guest::V0_2(guest) => {
                let exports = &guest.guest;
                let returned = store
                    .run_concurrent(async |accessor| exports.call_init(accessor).await)
                    .await??;
                Ok(returned.map(Metadata::from).map_err(PluginError::from))
            }
        }
    }

    /// Calls `execute`.
    pub(crate) async fn execute(
        &self,
        store: &mut Store<HostState>,
        action: &str,
        input: &[u8],
    ) -> wasmtime::Result<Result<Vec<u8>, PluginError>> {
        match self {
            Guest::V0_1(guest) => {
                guest
                    .warden_plugin_guest()
                    .call_execute(store, action, input)
                    .await
            }
            Guest::V0_2(guest) => {
                let exports = &guest.guest;
                let (action, input) = (action.to_owned(), input.to_vec());
                let returned = store
                    .run_concurrent(async |accessor| {
                        exports.call_execute(accessor, action, input).await
                    })
                    .await??;
                Ok(returned.map_err(PluginError::from))
            }
        }
    }

    /// Calls `shutdown` if the plugin exports `lifecycle`.
    pub(crate) async fn shutdown(&self, store: &mut Store<HostState>) -> wasmtime::Result<()> {
        let Guest::V0_2(AsyncGuest {
            lifecycle: Some(lifecycle),
            ..
        }) = self
        else {
            return Ok(());
        };
        store
            .run_concurrent(async |accessor| lifecycle.call_shutdown(accessor).await)
            .await?
    }
}

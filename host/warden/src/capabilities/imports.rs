//! Which capabilities a plugin's imports belong to, as `inspect`, strict
//! loading and the load report show them.

use super::{CAPABILITIES, Risk};
use crate::grants::Sandbox;

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
pub(super) fn unversioned(name: &str) -> &str {
    name.split_once('@').map_or(name, |(name, _version)| name)
}

//! `warden.toml`: plugins declared with their limits, grants and
//! configuration, for operators (`warden run --manifest`) and for hosts
//! that embed Warden ([`Manifest::from_file`]).
//!
//! ```toml
//! [defaults.limits]          # applies to every plugin unless it says otherwise
//! timeout = "5s"
//!
//! [plugins.hello]
//! path = "hello.wasm"        # relative to this file
//! strict = false             # refuse ungranted high-risk imports at load
//! deterministic = false      # fixed clocks, seeded random
//! calls_per_instance = 1     # >1 keeps an instance (and its state) for that many calls
//!
//! [plugins.hello.limits]
//! timeout = "1s"
//! memory = "32MiB"
//! fuel = 10000000
//! concurrency = 8            # instances of this plugin at once
//! memories = 2               # linear memories per instance (checked at load)
//! tables = 4                 # tables per instance (checked at load)
//! sockets = 100              # open sockets per instance, HTTP connections included
//!
//! [plugins.hello.grants]
//! dirs = ["data::/data:ro"]
//! env = { GREETING = "hi" }
//! allow_http = ["https://api.example.com"]
//! allow_tcp = ["127.0.0.1:6379"]    # connect only
//! allow_tcp_listen = ["127.0.0.1:8081"]  # bind, listen and accept
//! kv = { path = "kv.sqlite" }   # or `kv = true` for the default location,
//!                                # or `redis = "redis://127.0.0.1:6379/0"`
//!
//! [plugins.hello.config]
//! greeting = "hi"
//!
//! [plugins.hello.trust]      # also allowed under [defaults.trust]
//! signed_by = "trusted"      # any (the default) or trusted: only plugins
//!                            # signed by a trusted key run
//! unsigned = "deny"          # allow, warn (the default) or deny; deny under
//!                            # signed_by = "trusted", which allow and warn contradict
//! trust_store = "trust.toml" # default: the user's trust store
//! keys = ["alice.pub"]       # keys checked but not trusted
//! sha256 = "9f86d0…"         # pin the plugin file (not under defaults)
//!
//! [serve]                    # `warden serve` only; its flags win
//! header_read_timeout = "10s"  # to send a request head, from its first byte
//! idle_timeout = "60s"         # a connection with no request in progress
//! write_timeout = "30s"        # a response that the client stops reading
//! max_connections = 512        # open at once; more wait in the listen backlog
//! max_body_memory = "1GiB"     # request bodies held at once, all connections
//! ```
//!
//! Unknown keys are errors, and every error names the file, line and key.

mod de;
mod kv;
mod options;
mod serve;
#[cfg(test)]
mod tests;
mod trust;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use self::options::{GrantOptions, InvalidSetting, LimitOptions};
use self::serve::RawServe;
pub use self::serve::ServeSettings;
use self::trust::RawTrust;
use crate::error::Error;
use crate::grants::{Grants, Sandbox};
use crate::limits::Limits;

/// A parsed `warden.toml`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Manifest {
    /// Where the manifest was read from; relative paths in it are resolved
    /// against its directory.
    pub path: PathBuf,
    /// The plugins it declares, by name.
    pub plugins: BTreeMap<String, PluginEntry>,
    /// The `[serve]` table: connection bounds for `warden serve`.
    pub serve: ServeSettings,
}

/// One plugin declared in a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PluginEntry {
    /// The name the plugin is declared under.
    pub name: String,
    /// The component file.
    pub path: PathBuf,
    /// Its limits, grants and strictness.
    pub sandbox: Sandbox,
    /// The trust store file its trust policy's keys were read from, if any,
    /// so that a host can notice when the store changes (a key revoked) and
    /// read the manifest again.
    pub trust_store: Option<PathBuf>,
    /// Whether the manifest decides what happens to this plugin when it is
    /// unsigned (`unsigned`, or `signed_by = "trusted"`, in its own or the
    /// defaults' `[trust]`). When it does not, the policy holds the default,
    /// `warn`, and a host may put its own default in its place: `warden`
    /// does for `WARDEN_UNSIGNED`.
    pub states_unsigned: bool,
}

impl Manifest {
    /// Reads and parses a manifest file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|err| {
            Error::InvalidConfig(format!("cannot read manifest `{}`: {err}", path.display()))
        })?;
        Self::parse(&text, path)
    }

    /// Parses manifest text as if read from `path` (which places relative
    /// paths and names the file in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        let raw: RawManifest = toml::from_str(text).map_err(|err| {
            Error::InvalidConfig(format!("in manifest `{}`: {err}", path.display()))
        })?;
        if let Some(contradiction) = raw.defaults.trust.contradiction() {
            return Err(Error::InvalidConfig(format!(
                "in manifest `{}`: [defaults.trust]: {contradiction}",
                path.display()
            )));
        }
        if raw.defaults.trust.sha256.is_some() {
            return Err(Error::InvalidConfig(format!(
                "in manifest `{}`: `sha256` pins one plugin's file; set it under [plugins.NAME.trust], not [defaults.trust]",
                path.display()
            )));
        }
        let base = path.parent().unwrap_or(Path::new(""));
        let plugins = raw
            .plugins
            .into_iter()
            .map(|(name, plugin)| {
                let entry = plugin
                    .into_entry(&name, &raw.defaults, base)
                    .map_err(|err| {
                        Error::InvalidConfig(format!("in manifest `{}`: {err}", path.display()))
                    })?;
                Ok((name, entry))
            })
            .collect::<Result<_, Error>>()?;
        Ok(Manifest {
            path: path.to_owned(),
            plugins,
            serve: raw.serve.into_settings(),
        })
    }

    /// The plugin declared under `name`.
    pub fn plugin(&self, name: &str) -> Result<&PluginEntry, Error> {
        self.plugins.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.plugins.keys().map(String::as_str).collect();
            Error::InvalidConfig(format!(
                "manifest `{}` declares no plugin `{name}`; it declares: {}",
                self.path.display(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ))
        })
    }

    /// Whether any plugin sets a fuel limit, so the runtime must meter fuel.
    pub fn needs_fuel(&self) -> bool {
        self.plugins
            .values()
            .any(|plugin| plugin.sandbox.limits.fuel.is_some())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    plugins: BTreeMap<String, RawPlugin>,
    #[serde(default)]
    serve: RawServe,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    #[serde(default)]
    limits: LimitOptions,
    #[serde(default)]
    trust: RawTrust,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    path: PathBuf,
    #[serde(default)]
    strict: bool,
    calls_per_instance: Option<u32>,
    #[serde(default)]
    deterministic: bool,
    #[serde(default)]
    limits: LimitOptions,
    #[serde(default)]
    grants: GrantOptions,
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    trust: RawTrust,
}

impl RawPlugin {
    fn into_entry(
        self,
        name: &str,
        defaults: &RawDefaults,
        base: &Path,
    ) -> Result<PluginEntry, String> {
        let mut limits = Limits::default();
        self.limits.or(&defaults.limits).apply(&mut limits);
        let trust = self.trust.or(&defaults.trust);
        if let Some(contradiction) = trust.contradiction() {
            return Err(format!("plugin `{name}`: {contradiction}"));
        }
        let trust_store = trust.store_path(base);
        let states_unsigned = trust.states_unsigned();
        let trust = trust
            .into_policy(base)
            .map_err(|err| format!("plugin `{name}`: {err}"))?;
        // The plugin-level keys that are grants on the command line.
        let mut options = self.grants;
        options.config = self.config.into_iter().collect();
        options.deterministic = self.deterministic;
        let mut grants = Grants::default();
        options
            .apply(&mut grants, base)
            .map_err(|err| format!("plugin `{name}`: {err}"))?;
        Ok(PluginEntry {
            name: name.to_owned(),
            path: base.join(self.path),
            sandbox: Sandbox {
                limits,
                grants,
                strict: self.strict,
                calls_per_instance: self.calls_per_instance.unwrap_or(1),
                trust,
            },
            trust_store,
            states_unsigned,
        })
    }
}

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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::capabilities::http::{HttpGrant, OriginPattern};
use crate::capabilities::kv::{KvGrant, KvQuotas, KvStore};
use crate::capabilities::sockets::SocketPattern;
use crate::error::Error;
use crate::grants::{Grants, Preopen, Sandbox};
use crate::limits::Limits;
use crate::trust::{PublicKey, SignerPolicy, TrustPolicy, TrustStore, UnsignedPolicy};
use crate::units;

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

/// The `[serve]` table: connection bounds for `warden serve`, each unset
/// unless the manifest sets it. `warden serve`'s flags take precedence;
/// what neither sets takes the default named on each field. Read when the
/// server starts; a reload does not change them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeSettings {
    /// `header_read_timeout`: how long a client has to send a whole request
    /// head, counted from its first byte; then the connection is closed.
    /// Default: [`ServeSettings::DEFAULT_HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Option<Duration>,
    /// `idle_timeout`: how long a connection may stay open with no request
    /// in progress (before its first request, or between keep-alive
    /// requests). Default: [`ServeSettings::DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: Option<Duration>,
    /// `write_timeout`: how long writing a response may make no progress
    /// (a client that stops reading) before the connection is dropped and
    /// the response freed. Default: [`ServeSettings::DEFAULT_WRITE_TIMEOUT`].
    pub write_timeout: Option<Duration>,
    /// `max_connections`: connections open at once. Further connections are
    /// not accepted until one closes: they wait in the kernel's listen
    /// backlog. Default: [`ServeSettings::DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: Option<u32>,
    /// `max_body_memory`: bytes of request bodies the server holds at once,
    /// over all connections, from their arrival until their call ends. A
    /// body that would go past it is answered `503 saturated` at once.
    /// Default: [`ServeSettings::DEFAULT_MAX_BODY_MEMORY`].
    pub max_body_memory: Option<u64>,
}

impl ServeSettings {
    /// Default `header_read_timeout`: ten seconds, ample for any client on
    /// a working network, short enough that half-sent heads do not pile up.
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default `idle_timeout`: one minute, longer than the keep-alive pools
    /// of common HTTP clients and load balancers hold idle connections.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// Default `write_timeout`: thirty seconds without progress, which only
    /// a client that stopped reading takes.
    pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default `max_connections`: 512, well under the common limit of 1,024
    /// open files, which plugins' files and sockets share.
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 512;
    /// Default `max_body_memory`: 1 GiB, as many bodies of the default
    /// input limit (16 MiB) as calls run at once by default (64), instead of
    /// one such body per open connection (8 GiB at 512 connections).
    pub const DEFAULT_MAX_BODY_MEMORY: u64 = 1 << 30;
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

/// `[serve]`: connection bounds for `warden serve`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServe {
    #[serde(default, deserialize_with = "duration")]
    header_read_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    write_timeout: Option<Duration>,
    max_connections: Option<u32>,
    #[serde(default, deserialize_with = "size")]
    max_body_memory: Option<u64>,
}

impl RawServe {
    fn into_settings(self) -> ServeSettings {
        ServeSettings {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            write_timeout: self.write_timeout,
            max_connections: self.max_connections,
            max_body_memory: self.max_body_memory,
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    trust: RawTrust,
}

/// `[trust]`: signatures a plugin must carry.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrust {
    #[serde(default, deserialize_with = "parsed")]
    unsigned: Option<UnsignedPolicy>,
    #[serde(default, deserialize_with = "parsed")]
    signed_by: Option<SignerPolicy>,
    trust_store: Option<PathBuf>,
    #[serde(default)]
    keys: Vec<PathBuf>,
    sha256: Option<String>,
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
    limits: RawLimits,
    #[serde(default)]
    grants: RawGrants,
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    trust: RawTrust,
}

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default, deserialize_with = "duration")]
    timeout: Option<Duration>,
    fuel: Option<u64>,
    #[serde(default, deserialize_with = "size")]
    memory: Option<u64>,
    table_elements: Option<u64>,
    instances: Option<u32>,
    #[serde(default, deserialize_with = "size")]
    max_input: Option<u64>,
    #[serde(default, deserialize_with = "size")]
    max_output: Option<u64>,
    #[serde(default, deserialize_with = "size")]
    stdout: Option<u64>,
    #[serde(default, deserialize_with = "size")]
    stderr: Option<u64>,
    log_records: Option<usize>,
    #[serde(default, deserialize_with = "size")]
    log_bytes: Option<u64>,
    host_resources: Option<usize>,
    concurrency: Option<u32>,
    memories: Option<u32>,
    tables: Option<u32>,
    sockets: Option<usize>,
    #[serde(default, deserialize_with = "size")]
    host_memory: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrants {
    #[serde(default, deserialize_with = "parsed_list")]
    dirs: Vec<Preopen>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "parsed_list")]
    allow_http: Vec<OriginPattern>,
    #[serde(default, deserialize_with = "size")]
    http_max_response: Option<u64>,
    #[serde(default, deserialize_with = "duration")]
    http_connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    http_total_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "parsed_list")]
    allow_tcp: Vec<SocketPattern>,
    #[serde(default, deserialize_with = "parsed_list")]
    allow_udp: Vec<SocketPattern>,
    #[serde(default, deserialize_with = "parsed_list")]
    allow_tcp_listen: Vec<SocketPattern>,
    kv: Option<RawKv>,
    /// Host-defined capabilities granted by name.
    #[serde(default)]
    host: BTreeSet<String>,
}

/// `kv = true` (the default location) or a table naming at most one of a
/// file (`path`) or a Redis server (`redis`).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawKv {
    Enabled(bool),
    Store(RawKvStore),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKvStore {
    path: Option<PathBuf>,
    redis: Option<String>,
    namespace: Option<String>,
    #[serde(default, deserialize_with = "size")]
    max_key: Option<u64>,
    #[serde(default, deserialize_with = "size")]
    max_value: Option<u64>,
    #[serde(default, deserialize_with = "size")]
    max_total: Option<u64>,
    max_keys: Option<u64>,
    max_batch_keys: Option<usize>,
    #[serde(default, deserialize_with = "size")]
    max_batch_bytes: Option<u64>,
}

impl RawPlugin {
    fn into_entry(
        self,
        name: &str,
        defaults: &RawDefaults,
        base: &Path,
    ) -> Result<PluginEntry, String> {
        let limits = self.limits.or(&defaults.limits).into_limits();
        let trust = self.trust.or(&defaults.trust);
        if let Some(contradiction) = trust.contradiction() {
            return Err(format!("plugin `{name}`: {contradiction}"));
        }
        let trust_store = trust.store_path(base);
        let trust = trust
            .into_policy(base)
            .map_err(|err| format!("plugin `{name}`: {err}"))?;
        let grants = self
            .grants
            .into_grants(self.config, self.deterministic, base)
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
        })
    }
}

impl RawTrust {
    /// Why these settings contradict each other, if they do: `signed_by =
    /// "trusted"` refuses every unsigned plugin, so `unsigned = "allow"` or
    /// `"warn"` beside it cannot mean what it says.
    fn contradiction(&self) -> Option<String> {
        match (self.signed_by, self.unsigned) {
            (
                Some(SignerPolicy::Trusted),
                Some(unsigned @ (UnsignedPolicy::Allow | UnsignedPolicy::Warn)),
            ) => Some(format!(
                "`unsigned = \"{}\"` contradicts `signed_by = \"trusted\"`, which runs only \
                 plugins signed by a trusted key (unsigned ones are always refused); remove \
                 `unsigned`, or set `signed_by = \"any\"`",
                unsigned.as_str()
            )),
            _ => None,
        }
    }

    /// This plugin's trust settings, with `defaults` filling in what they
    /// leave out (except the pin, which is the plugin's own). A plugin's own
    /// `signed_by = "trusted"` implies `unsigned = "deny"` over the
    /// defaults' `unsigned`, as a more specific setting should; and the
    /// `unsigned = "deny"` that the defaults' `signed_by = "trusted"`
    /// implies is inherited like one they state, so a plugin that only says
    /// `signed_by = "any"` still needs a valid signature (as `--signed-by
    /// any` does on the command line) unless it says `unsigned` too.
    fn or(self, defaults: &RawTrust) -> RawTrust {
        let defaults_unsigned = match (defaults.unsigned, defaults.signed_by) {
            (Some(unsigned), _) => Some(unsigned),
            (None, Some(SignerPolicy::Trusted)) => Some(UnsignedPolicy::Deny),
            (None, _) => None,
        };
        let unsigned = match (self.unsigned, self.signed_by) {
            (Some(unsigned), _) => Some(unsigned),
            (None, Some(SignerPolicy::Trusted)) => Some(UnsignedPolicy::Deny),
            (None, _) => defaults_unsigned,
        };
        RawTrust {
            unsigned,
            signed_by: self.signed_by.or(defaults.signed_by),
            trust_store: self.trust_store.or_else(|| defaults.trust_store.clone()),
            keys: if self.keys.is_empty() {
                defaults.keys.clone()
            } else {
                self.keys
            },
            sha256: self.sha256,
        }
    }

    /// The trust store file: the one named, else the user's.
    fn store_path(&self, base: &Path) -> Option<PathBuf> {
        self.trust_store
            .as_ref()
            .map(|path| base.join(path))
            .or_else(TrustStore::default_path)
    }

    /// The policy, reading the trust store and key files it names. A
    /// manifest that says nothing warns about unsigned plugins, as the
    /// command line does; `signed_by = "trusted"` denies them. A trust
    /// store that cannot be used fails only the plugins whose policy
    /// depends on it, when they load (see [`TrustStore::open_or_damaged`]).
    fn into_policy(self, base: &Path) -> Result<TrustPolicy, String> {
        let trusted = self
            .store_path(base)
            .map(TrustStore::open_or_damaged)
            .unwrap_or_default();
        let known_keys = self
            .keys
            .iter()
            .map(|path| PublicKey::from_file(base.join(path)).map_err(|err| err.to_string()))
            .collect::<Result<_, _>>()?;
        let mut policy = TrustPolicy::development();
        policy.signed_by = self.signed_by.unwrap_or_default();
        policy.unsigned = match policy.signed_by {
            SignerPolicy::Trusted => UnsignedPolicy::Deny,
            SignerPolicy::Any => self.unsigned.unwrap_or(UnsignedPolicy::Warn),
        };
        policy.trusted = Arc::new(trusted);
        policy.known_keys = known_keys;
        policy.sha256 = self.sha256;
        Ok(policy)
    }
}

impl RawLimits {
    /// These limits, with `defaults` filling in what they leave out.
    fn or(self, defaults: &RawLimits) -> RawLimits {
        RawLimits {
            timeout: self.timeout.or(defaults.timeout),
            fuel: self.fuel.or(defaults.fuel),
            memory: self.memory.or(defaults.memory),
            table_elements: self.table_elements.or(defaults.table_elements),
            instances: self.instances.or(defaults.instances),
            max_input: self.max_input.or(defaults.max_input),
            max_output: self.max_output.or(defaults.max_output),
            stdout: self.stdout.or(defaults.stdout),
            stderr: self.stderr.or(defaults.stderr),
            log_records: self.log_records.or(defaults.log_records),
            log_bytes: self.log_bytes.or(defaults.log_bytes),
            host_resources: self.host_resources.or(defaults.host_resources),
            concurrency: self.concurrency.or(defaults.concurrency),
            memories: self.memories.or(defaults.memories),
            tables: self.tables.or(defaults.tables),
            sockets: self.sockets.or(defaults.sockets),
            host_memory: self.host_memory.or(defaults.host_memory),
        }
    }

    fn into_limits(self) -> Limits {
        let mut limits = Limits::default();
        let saturating = |bytes: u64| usize::try_from(bytes).unwrap_or(usize::MAX);
        limits.fuel = self.fuel;
        if let Some(timeout) = self.timeout {
            limits.timeout = timeout;
        }
        if let Some(memory) = self.memory {
            limits.memory_bytes = memory;
        }
        if let Some(elements) = self.table_elements {
            limits.table_elements = elements;
        }
        if let Some(instances) = self.instances {
            limits.instances = instances;
        }
        if let Some(bytes) = self.max_input {
            limits.max_input_bytes = saturating(bytes);
        }
        if let Some(bytes) = self.max_output {
            limits.max_output_bytes = saturating(bytes);
        }
        if let Some(bytes) = self.stdout {
            limits.stdout_bytes = saturating(bytes);
        }
        if let Some(bytes) = self.stderr {
            limits.stderr_bytes = saturating(bytes);
        }
        if let Some(records) = self.log_records {
            limits.log_records = records;
        }
        if let Some(bytes) = self.log_bytes {
            limits.log_bytes = saturating(bytes);
        }
        if let Some(resources) = self.host_resources {
            limits.host_resources = resources;
        }
        limits.concurrency = self.concurrency;
        if let Some(memories) = self.memories {
            limits.memories = memories;
        }
        if let Some(tables) = self.tables {
            limits.tables = tables;
        }
        if let Some(sockets) = self.sockets {
            limits.sockets = sockets;
        }
        if let Some(bytes) = self.host_memory {
            limits.host_memory_bytes = bytes;
        }
        limits
    }
}

impl RawGrants {
    fn into_grants(
        self,
        config: BTreeMap<String, String>,
        deterministic: bool,
        base: &Path,
    ) -> Result<Grants, String> {
        let mut http = HttpGrant {
            allow: self.allow_http,
            ..HttpGrant::default()
        };
        if let Some(bytes) = self.http_max_response {
            http.max_response_bytes = bytes;
        }
        if let Some(timeout) = self.http_connect_timeout {
            http.connect_timeout = timeout;
        }
        if let Some(timeout) = self.http_total_timeout {
            http.total_timeout = timeout;
        }
        let kv = match self.kv {
            None | Some(RawKv::Enabled(false)) => None,
            Some(RawKv::Enabled(true)) => Some(KvGrant::at(default_kv_path())),
            Some(RawKv::Store(store)) => Some(store.into_grant(base)?),
        };
        Ok(Grants {
            dirs: self
                .dirs
                .into_iter()
                .map(|dir| Preopen {
                    host: base.join(dir.host),
                    ..dir
                })
                .collect(),
            env: self.env.into_iter().collect(),
            config,
            http,
            tcp: self.allow_tcp,
            udp: self.allow_udp,
            kv,
            deterministic,
            host: self.host,
            tcp_listen: self.allow_tcp_listen,
        })
    }
}

impl RawKvStore {
    fn into_grant(self, base: &Path) -> Result<KvGrant, String> {
        let defaults = KvQuotas::default();
        let saturating = |bytes: u64| usize::try_from(bytes).unwrap_or(usize::MAX);
        let store = match (self.path, self.redis) {
            (Some(_), Some(_)) => {
                return Err(
                    "kv: set `path` (a SQLite file) or `redis` (a server URL), not both".into(),
                );
            }
            (None, Some(url)) => match url.parse() {
                Ok(store @ KvStore::Redis(_)) => store,
                _ => {
                    return Err(format!(
                        "kv: `redis = \"{url}\"` is not a redis:// or rediss:// URL"
                    ));
                }
            },
            (Some(path), None) => KvStore::File(base.join(path)),
            (None, None) => KvStore::File(default_kv_path()),
        };
        Ok(KvGrant {
            store,
            namespace: self.namespace,
            quotas: KvQuotas {
                max_key_bytes: self.max_key.map_or(defaults.max_key_bytes, saturating),
                max_value_bytes: self.max_value.map_or(defaults.max_value_bytes, saturating),
                max_total_bytes: self.max_total.unwrap_or(defaults.max_total_bytes),
                max_keys: self.max_keys.unwrap_or(defaults.max_keys),
                max_batch_keys: self.max_batch_keys.unwrap_or(defaults.max_batch_keys),
                max_batch_bytes: self
                    .max_batch_bytes
                    .map_or(defaults.max_batch_bytes, saturating),
            },
        })
    }
}

/// The default kv location, or a relative file when the environment names
/// no home directory (the store then lives beside the working directory).
pub(crate) fn default_kv_path() -> PathBuf {
    KvGrant::default_path().unwrap_or_else(|| PathBuf::from("warden-kv.sqlite"))
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    units::parse_duration(&text)
        .map(Some)
        .map_err(de::Error::custom)
}

fn size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Bytes(bytes) => Ok(Some(bytes)),
        Size::Text(text) => units::parse_size(&text)
            .map(Some)
            .map_err(de::Error::custom),
    }
}

fn parsed<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    String::deserialize(deserializer)?
        .parse()
        .map(Some)
        .map_err(de::Error::custom)
}

fn parsed_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|text| text.parse().map_err(de::Error::custom))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, Error> {
        Manifest::parse(text, Path::new("/srv/app/warden.toml"))
    }

    #[test]
    fn a_complete_manifest() {
        let manifest = parse(
            r#"
            [defaults.limits]
            timeout = "2s"
            memory = "32MiB"

            [plugins.hello]
            path = "plugins/hello.wasm"
            strict = true
            deterministic = true

            [plugins.hello.limits]
            memory = "16MiB"
            fuel = 1000
            memories = 1
            tables = 2
            sockets = 10

            [plugins.hello.grants]
            dirs = ["data::/data:rw"]
            env = { GREETING = "hi" }
            allow_http = ["https://*.example.com"]
            allow_tcp = ["127.0.0.1:6379"]
            allow_tcp_listen = ["127.0.0.1:8081"]
            kv = { path = "state/kv.sqlite", max_keys = 10, max_value = "1KiB" }

            [plugins.hello.config]
            greeting = "hello"

            [plugins.other]
            path = "/opt/other.wasm"
            "#,
        )
        .unwrap();
        let hello = manifest.plugin("hello").unwrap();
        assert_eq!(hello.path, Path::new("/srv/app/plugins/hello.wasm"));
        let sandbox = &hello.sandbox;
        assert!(sandbox.strict);
        assert_eq!(
            sandbox.limits.timeout,
            Duration::from_secs(2),
            "from the defaults"
        );
        assert_eq!(sandbox.limits.memory_bytes, 16 << 20, "the plugin's own");
        assert_eq!(sandbox.limits.fuel, Some(1000));
        assert_eq!(
            (
                sandbox.limits.memories,
                sandbox.limits.tables,
                sandbox.limits.sockets
            ),
            (1, 2, 10)
        );
        let grants = &sandbox.grants;
        assert!(grants.deterministic);
        assert_eq!(grants.dirs, [Preopen::read_write("/srv/app/data", "/data")]);
        assert_eq!(grants.env, [("GREETING".to_owned(), "hi".to_owned())]);
        assert_eq!(grants.http.allow.len(), 1);
        assert_eq!(grants.tcp.len(), 1);
        assert_eq!(grants.tcp_listen, ["127.0.0.1:8081".parse().unwrap()]);
        let kv = grants.kv.as_ref().unwrap();
        assert_eq!(kv.store, KvStore::File("/srv/app/state/kv.sqlite".into()));
        assert_eq!(kv.quotas.max_keys, 10);
        assert_eq!(kv.quotas.max_value_bytes, 1024);
        assert_eq!(grants.config["greeting"], "hello");
        assert!(manifest.needs_fuel());

        let other = manifest.plugin("other").unwrap();
        assert_eq!(other.path, Path::new("/opt/other.wasm"));
        assert_eq!(other.sandbox.limits.memory_bytes, 32 << 20);
        assert_eq!(other.sandbox.grants, Grants::default());
        assert_eq!(other.sandbox.trust.unsigned, UnsignedPolicy::Warn);
    }

    #[test]
    fn host_memory_and_kv_batch_bounds_are_manifest_keys() {
        let manifest = parse(
            r#"
            [defaults.limits]
            host_memory = "8MiB"

            [plugins.bulk]
            path = "bulk.wasm"
            [plugins.bulk.grants]
            kv = { max_batch_keys = 50, max_batch_bytes = "1MiB" }

            [plugins.other]
            path = "other.wasm"
            [plugins.other.limits]
            host_memory = 1024
            "#,
        )
        .unwrap();
        let bulk = &manifest.plugin("bulk").unwrap().sandbox;
        assert_eq!(bulk.limits.host_memory_bytes, 8 << 20, "from the defaults");
        let quotas = &bulk.grants.kv.as_ref().unwrap().quotas;
        assert_eq!(
            (quotas.max_batch_keys, quotas.max_batch_bytes),
            (50, 1 << 20)
        );
        let other = &manifest.plugin("other").unwrap().sandbox;
        assert_eq!(other.limits.host_memory_bytes, 1024);
    }

    #[test]
    fn errors_point_at_the_line_and_key() {
        for (text, expected) in [
            (
                "[plugins.a]\npath = \"a.wasm\"\n[plugins.a.limits]\ntimout = \"1s\"\n",
                "line 4",
            ),
            (
                "[plugins.a]\npath = \"a.wasm\"\n[plugins.a.limits]\ntimout = \"1s\"\n",
                "unknown field `timout`",
            ),
            (
                "[plugins.a]\npath = \"a.wasm\"\n\n[plugins.a.limits]\nmemory = \"lots\"\n",
                "line 5",
            ),
            (
                "[plugins.a]\npath = \"a.wasm\"\n\n[plugins.a.limits]\nmemory = \"lots\"\n",
                "invalid size `lots`",
            ),
            ("[plugins.a]\n[plugins.a.grants]\n", "missing field `path`"),
            (
                "[plugins.a]\npath = \"a.wasm\"\n[plugins.a.grants]\nallow_http = [\"ftp://x\"]\n",
                "invalid HTTP origin",
            ),
            (
                "[plugins.a]\npath = \"a.wasm\"\n[plugins.a.grants]\ndirs = [\"nocolons\"]\n",
                "line 4",
            ),
            ("[plugins.a\n", "line 1"),
            (
                "[plugins.a]\npath = \"a.wasm\"\n[plugins.a.trust]\nunsigned = \"maybe\"\n",
                "line 4",
            ),
            (
                "[plugins.a]\npath = \"a.wasm\"\n[plugins.a.trust]\nkeys = [\"/no/such.pub\"]\n",
                "cannot read public key",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "expected {expected:?} in: {err}");
            assert!(err.contains("/srv/app/warden.toml"), "{err}");
        }
    }

    #[test]
    fn signed_by_trusted_implies_deny_and_contradicting_unsigned_is_refused() {
        // Each case: [defaults.trust], [plugins.a.trust], and the plugin's
        // resulting `unsigned` (or the error's words).
        let cases: [(&str, &str, Result<UnsignedPolicy, &str>); 8] = [
            ("", r#"signed_by = "trusted""#, Ok(UnsignedPolicy::Deny)),
            (
                "",
                "signed_by = \"trusted\"\nunsigned = \"deny\"",
                Ok(UnsignedPolicy::Deny),
            ),
            (
                r#"unsigned = "warn""#,
                r#"signed_by = "trusted""#,
                Ok(UnsignedPolicy::Deny),
            ),
            (r#"signed_by = "trusted""#, "", Ok(UnsignedPolicy::Deny)),
            ("", r#"signed_by = "any""#, Ok(UnsignedPolicy::Warn)),
            (
                "",
                "signed_by = \"trusted\"\nunsigned = \"warn\"",
                Err("plugin `a`: `unsigned = \"warn\"` contradicts `signed_by = \"trusted\"`"),
            ),
            (
                r#"signed_by = "trusted""#,
                r#"unsigned = "allow""#,
                Err("plugin `a`: `unsigned = \"allow\"` contradicts"),
            ),
            (
                "signed_by = \"trusted\"\nunsigned = \"allow\"",
                "",
                Err("[defaults.trust]: `unsigned = \"allow\"` contradicts"),
            ),
        ];
        for (defaults, own, expected) in cases {
            let text = format!(
                "[defaults.trust]\ntrust_store = \"none.toml\"\n{defaults}\n\
                 [plugins.a]\npath = \"a.wasm\"\n[plugins.a.trust]\n{own}\n"
            );
            let result = parse(&text).map(|manifest| manifest.plugins["a"].sandbox.trust.clone());
            match (result, expected) {
                (Ok(policy), Ok(unsigned)) => assert_eq!(policy.unsigned, unsigned, "{text}"),
                (Err(err), Err(words)) => {
                    assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
                    assert!(err.to_string().contains(words), "{text}: {err}");
                }
                (result, expected) => panic!("{text}: expected {expected:?}, got {result:?}"),
            }
        }
    }

    #[test]
    fn a_plugin_that_only_says_signed_by_any_keeps_the_defaults_implied_deny() {
        let policy = |own: &str| {
            let text = format!(
                "[defaults.trust]\ntrust_store = \"none.toml\"\nsigned_by = \"trusted\"\n\
                 [plugins.a]\npath = \"a.wasm\"\n[plugins.a.trust]\n{own}\n"
            );
            let trust = parse(&text).unwrap().plugins["a"].sandbox.trust.clone();
            (trust.signed_by, trust.unsigned)
        };
        // Any known key's valid signature, as `--signed-by any` over such a
        // manifest gives: not the development tier.
        assert_eq!(
            policy(r#"signed_by = "any""#),
            (SignerPolicy::Any, UnsignedPolicy::Deny)
        );
        // Loosening further takes saying so.
        assert_eq!(
            policy("signed_by = \"any\"\nunsigned = \"warn\""),
            (SignerPolicy::Any, UnsignedPolicy::Warn)
        );
    }

    #[test]
    fn kv_names_a_file_or_a_redis_server() {
        let grant = |kv: &str| {
            let manifest = parse(&format!(
                "[plugins.a]\npath = \"a.wasm\"\n[plugins.a.grants]\nkv = {kv}\n"
            ))?;
            Ok::<_, Error>(manifest.plugins["a"].sandbox.grants.kv.clone().unwrap())
        };
        let redis = grant(r#"{ redis = "redis://127.0.0.1:6379/0", max_keys = 5 }"#).unwrap();
        assert_eq!(
            redis.store,
            KvStore::Redis("redis://127.0.0.1:6379/0".into())
        );
        assert_eq!(redis.quotas.max_keys, 5);
        let file = grant(r#"{ path = "kv.sqlite" }"#).unwrap();
        assert_eq!(file.store, KvStore::File("/srv/app/kv.sqlite".into()));

        for (kv, expected) in [
            (
                r#"{ path = "kv.sqlite", redis = "redis://127.0.0.1" }"#,
                "not both",
            ),
            (
                r#"{ redis = "127.0.0.1:6379" }"#,
                "not a redis:// or rediss:// URL",
            ),
        ] {
            let err = grant(kv).unwrap_err().to_string();
            assert!(err.contains(expected), "expected {expected:?} in: {err}");
            assert!(
                err.contains("/srv/app/warden.toml") && err.contains("plugin `a`"),
                "{err}"
            );
        }
    }

    #[test]
    fn asking_for_an_undeclared_plugin_lists_the_declared_ones() {
        let manifest =
            parse("[plugins.a]\npath = \"a.wasm\"\n[plugins.b]\npath = \"b.wasm\"\n").unwrap();
        let err = manifest.plugin("c").unwrap_err().to_string();
        assert!(
            err.contains("no plugin `c`") && err.contains("a, b"),
            "{err}"
        );
    }

    #[test]
    fn serve_settings_are_read_and_unknown_ones_refused() {
        let manifest = parse(
            "[serve]\nheader_read_timeout = \"2s\"\nidle_timeout = \"1m\"\n\
             write_timeout = \"5s\"\nmax_connections = 64\nmax_body_memory = \"64MiB\"\n",
        )
        .unwrap();
        assert_eq!(
            manifest.serve.header_read_timeout,
            Some(Duration::from_secs(2))
        );
        assert_eq!(manifest.serve.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(manifest.serve.write_timeout, Some(Duration::from_secs(5)));
        assert_eq!(manifest.serve.max_connections, Some(64));
        assert_eq!(manifest.serve.max_body_memory, Some(64 << 20));
        assert_eq!(parse("").unwrap().serve, ServeSettings::default());
        let err = parse("[serve]\nidle = \"1s\"\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `idle`"), "{err}");
    }
}

//! The sandbox spec: the limits and grants an operator sets, declared once
//! for both places they are written. A manifest's `[limits]` and `[grants]`
//! tables deserialize into [`LimitOptions`] and [`GrantOptions`] (serde), and
//! with the `clap` feature the same types are the command line's flags
//! (`--timeout`, `--dir`, …), in the style of wasmtime's `cli-flags`. Each
//! field's documentation is its flag's help. Applying them to a
//! [`Sandbox`](crate::Sandbox)'s [`Limits`] and [`Grants`] is one function each, so the
//! manifest and the flags cannot mean different things.
//!
//! A few settings exist only in the manifest (per-stream capture bounds,
//! HTTP timeouts, kv quotas, host-defined capabilities): they are skipped by
//! the command line. A few are plugin-level keys of the manifest
//! (`config`, `deterministic`), which the manifest moves into
//! [`GrantOptions`] before applying it.

// The fields' documentation is the flags' help, written for a terminal:
// bare URLs and `[default: …]` are meant as plain text.
#![allow(rustdoc::bare_urls, rustdoc::broken_intra_doc_links)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::de::{fuel, key_value_table, memory, parsed_list, positive_duration, size};
use super::kv::KvTable;
use crate::capabilities::http::OriginPattern;
use crate::capabilities::kv::{KvGrant, KvStore};
use crate::capabilities::sockets::SocketPattern;
use crate::grants::{Grants, Preopen};
use crate::limits::Limits;
use crate::units::{self, ParseError};

/// A setting the sandbox cannot take, e.g. a kv namespace without a kv
/// grant. The message names the setting and what to do instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSetting(pub(super) String);

/// Limits an operator sets: each one given replaces the default (or, on the
/// command line, the manifest's value).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[non_exhaustive]
pub struct LimitOptions {
    /// Wall-clock time per call, e.g. 300ms, 5s or 1m30s; more than zero
    /// [default: 5s].
    #[serde(default, deserialize_with = "positive_duration")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "DURATION", value_parser = units::parse_positive_duration))]
    pub timeout: Option<Duration>,
    /// Fuel per call (turns on fuel metering), more than zero; unlimited
    /// when omitted.
    #[serde(default, deserialize_with = "fuel")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", value_parser = parse_fuel))]
    pub fuel: Option<u64>,
    /// Linear memory per instance, at least 64KiB (one WebAssembly page),
    /// e.g. 64MiB, 64Mi, 64M or 67108864 [default: 64MiB].
    #[serde(default, deserialize_with = "memory")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "SIZE", value_parser = parse_memory))]
    pub memory: Option<u64>,
    /// Largest input accepted [default: 16MiB].
    #[serde(default, deserialize_with = "size")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "SIZE", value_parser = units::parse_size))]
    pub max_input: Option<u64>,
    /// Largest output accepted from the plugin [default: 16MiB].
    #[serde(default, deserialize_with = "size")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "SIZE", value_parser = units::parse_size))]
    pub max_output: Option<u64>,
    /// Host memory an instance may make the host hold outside its linear
    /// memory (HTTP header maps and requests it builds, directory listings,
    /// log and denial records), e.g. 64MiB [default: 64MiB].
    #[serde(default, deserialize_with = "size")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "SIZE", value_parser = units::parse_size))]
    pub host_memory: Option<u64>,
    /// Largest input a streaming call takes (`warden run` of a streaming
    /// plugin, fed from stdin or --input-file); --max-input bounds whole
    /// inputs instead [default: 4GiB].
    #[serde(default, deserialize_with = "size")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "SIZE", value_parser = units::parse_size))]
    pub max_stream_input: Option<u64>,
    /// Largest output a streaming call gives [default: 4GiB].
    #[serde(default, deserialize_with = "size")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "SIZE", value_parser = units::parse_size))]
    pub max_stream_output: Option<u64>,
    /// How long a streaming call may go with neither its input nor its
    /// output moving, e.g. 500ms or 30s; more than zero [default: 10s].
    #[serde(default, deserialize_with = "positive_duration")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "DURATION", value_parser = units::parse_positive_duration))]
    pub stream_idle_timeout: Option<Duration>,
    /// [`Limits::table_elements`] (manifest only).
    #[cfg_attr(feature = "clap", arg(skip))]
    pub table_elements: Option<u64>,
    /// [`Limits::instances`] (manifest only).
    #[cfg_attr(feature = "clap", arg(skip))]
    pub instances: Option<u32>,
    /// [`Limits::stdout_bytes`] (manifest only).
    #[serde(default, deserialize_with = "size")]
    #[cfg_attr(feature = "clap", arg(skip))]
    pub stdout: Option<u64>,
    /// [`Limits::stderr_bytes`] (manifest only).
    #[serde(default, deserialize_with = "size")]
    #[cfg_attr(feature = "clap", arg(skip))]
    pub stderr: Option<u64>,
    /// [`Limits::log_records`] (manifest only).
    #[cfg_attr(feature = "clap", arg(skip))]
    pub log_records: Option<usize>,
    /// [`Limits::log_bytes`] (manifest only).
    #[serde(default, deserialize_with = "size")]
    #[cfg_attr(feature = "clap", arg(skip))]
    pub log_bytes: Option<u64>,
    /// [`Limits::host_resources`] (manifest only).
    #[cfg_attr(feature = "clap", arg(skip))]
    pub host_resources: Option<usize>,
    /// [`Limits::concurrency`] (manifest only).
    #[cfg_attr(feature = "clap", arg(skip))]
    pub concurrency: Option<u32>,
    /// [`Limits::memories`] (manifest only).
    #[cfg_attr(feature = "clap", arg(skip))]
    pub memories: Option<u32>,
    /// [`Limits::tables`] (manifest only).
    #[cfg_attr(feature = "clap", arg(skip))]
    pub tables: Option<u32>,
    /// [`Limits::sockets`] (manifest only).
    #[cfg_attr(feature = "clap", arg(skip))]
    pub sockets: Option<usize>,
}

impl LimitOptions {
    /// These options, with `defaults` filling in what they leave out.
    pub fn or(self, defaults: &LimitOptions) -> LimitOptions {
        LimitOptions {
            timeout: self.timeout.or(defaults.timeout),
            fuel: self.fuel.or(defaults.fuel),
            memory: self.memory.or(defaults.memory),
            max_input: self.max_input.or(defaults.max_input),
            max_output: self.max_output.or(defaults.max_output),
            host_memory: self.host_memory.or(defaults.host_memory),
            max_stream_input: self.max_stream_input.or(defaults.max_stream_input),
            max_stream_output: self.max_stream_output.or(defaults.max_stream_output),
            stream_idle_timeout: self.stream_idle_timeout.or(defaults.stream_idle_timeout),
            table_elements: self.table_elements.or(defaults.table_elements),
            instances: self.instances.or(defaults.instances),
            stdout: self.stdout.or(defaults.stdout),
            stderr: self.stderr.or(defaults.stderr),
            log_records: self.log_records.or(defaults.log_records),
            log_bytes: self.log_bytes.or(defaults.log_bytes),
            host_resources: self.host_resources.or(defaults.host_resources),
            concurrency: self.concurrency.or(defaults.concurrency),
            memories: self.memories.or(defaults.memories),
            tables: self.tables.or(defaults.tables),
            sockets: self.sockets.or(defaults.sockets),
        }
    }

    /// Sets every limit these options give in `limits`. Byte counts beyond
    /// what the machine can address are taken as "as much as it can".
    pub fn apply(&self, limits: &mut Limits) {
        fn set<T: Copy>(limit: &mut T, option: Option<T>) {
            if let Some(value) = option {
                *limit = value;
            }
        }
        let bytes =
            |option: Option<u64>| option.map(|bytes| usize::try_from(bytes).unwrap_or(usize::MAX));
        set(&mut limits.timeout, self.timeout);
        if self.fuel.is_some() {
            limits.fuel = self.fuel;
        }
        set(&mut limits.memory_bytes, self.memory);
        set(&mut limits.max_input_bytes, bytes(self.max_input));
        set(&mut limits.max_output_bytes, bytes(self.max_output));
        set(&mut limits.host_memory_bytes, self.host_memory);
        set(&mut limits.max_stream_input_bytes, self.max_stream_input);
        set(&mut limits.max_stream_output_bytes, self.max_stream_output);
        set(&mut limits.stream_idle_timeout, self.stream_idle_timeout);
        set(&mut limits.table_elements, self.table_elements);
        set(&mut limits.instances, self.instances);
        set(&mut limits.stdout_bytes, bytes(self.stdout));
        set(&mut limits.stderr_bytes, bytes(self.stderr));
        set(&mut limits.log_records, self.log_records);
        set(&mut limits.log_bytes, bytes(self.log_bytes));
        set(&mut limits.host_resources, self.host_resources);
        if self.concurrency.is_some() {
            limits.concurrency = self.concurrency;
        }
        set(&mut limits.memories, self.memories);
        set(&mut limits.tables, self.tables);
        set(&mut limits.sockets, self.sockets);
    }
}

/// Grants an operator gives: each one adds to what the plugin already has
/// (on the command line, to the manifest's grants); a kv store given
/// replaces the one before.
///
/// In a manifest, these are the keys of a plugin's `[grants]` table, except
/// `config` (the plugin's own `[config]` table), `deterministic` (a key of
/// the plugin itself), and `kv`, which the table writes as `kv = true` or
/// `kv = { path = … }` instead of `kv`, `kv_store` and `kv_namespace`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[non_exhaustive]
pub struct GrantOptions {
    /// Grant a host directory as HOST::GUEST, read-only unless suffixed with
    /// :rw (e.g. ./data::/data:rw). Repeatable.
    #[serde(default, deserialize_with = "parsed_list")]
    #[cfg_attr(
        feature = "clap",
        arg(long = "dir", value_name = "HOST::GUEST[:ro|:rw]")
    )]
    pub dirs: Vec<Preopen>,
    /// Set an environment variable in the plugin: KEY=VALUE, or on the
    /// command line KEY alone to pass Warden's own value of it (refused when
    /// Warden has none; a manifest's `env` table always gives the value).
    /// Repeatable; nothing else is inherited from Warden's environment.
    #[serde(default, deserialize_with = "key_value_table")]
    #[cfg_attr(feature = "clap", arg(long = "env", value_name = "KEY[=VALUE]", value_parser = parse_env_grant))]
    pub env: Vec<(String, String)>,
    /// Allow HTTP requests to an origin, e.g. https://api.example.com,
    /// https://*.example.com or http://127.0.0.1:8080. Repeatable.
    #[serde(default, deserialize_with = "parsed_list")]
    #[cfg_attr(feature = "clap", arg(long = "allow-http", value_name = "ORIGIN"))]
    pub allow_http: Vec<OriginPattern>,
    /// Give the plugin a configuration value (wasi:config). Repeatable.
    #[serde(skip)]
    #[cfg_attr(feature = "clap", arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config_value))]
    pub config: Vec<(String, String)>,
    /// Grant the key-value store at its default location
    /// ($XDG_DATA_HOME/warden/kv.sqlite).
    #[serde(skip)]
    #[cfg_attr(feature = "clap", arg(long))]
    pub kv: bool,
    /// Grant the key-value store in this SQLite file (created if missing, in
    /// a directory that must exist), or on the Redis server at this
    /// redis:// URL (e.g. redis://127.0.0.1:6379/0), which replicas on
    /// several machines can share.
    #[serde(skip)]
    #[cfg_attr(feature = "clap", arg(long, value_name = "PATH|URL"))]
    pub kv_store: Option<KvStore>,
    /// Allow TCP connections to HOST:PORT, e.g. 127.0.0.1:6379 or
    /// db.internal:5432 (listening needs --allow-tcp-listen). Repeatable.
    #[serde(default, deserialize_with = "parsed_list")]
    #[cfg_attr(feature = "clap", arg(long = "allow-tcp", value_name = "HOST:PORT"))]
    pub allow_tcp: Vec<SocketPattern>,
    /// Allow UDP datagrams to (or binds on) HOST:PORT. Repeatable.
    #[serde(default, deserialize_with = "parsed_list")]
    #[cfg_attr(feature = "clap", arg(long = "allow-udp", value_name = "HOST:PORT"))]
    pub allow_udp: Vec<SocketPattern>,
    /// Allow binding and listening for TCP connections on ADDR (HOST:PORT,
    /// e.g. 127.0.0.1:8081), and accepting them from any peer. Repeatable.
    #[serde(default, deserialize_with = "parsed_list")]
    #[cfg_attr(feature = "clap", arg(long = "allow-tcp-listen", value_name = "ADDR"))]
    pub allow_tcp_listen: Vec<SocketPattern>,
    /// Fixed wall clock, stepping monotonic clock (timers and file times
    /// follow them) and seeded random numbers, for reproducible runs.
    #[serde(skip)]
    #[cfg_attr(feature = "clap", arg(long))]
    pub deterministic: bool,
    /// The kv namespace the plugin's keys live in [default: the manifest's
    /// plugin name; for a plugin file, NAME@key:KEYID when a key Warden knows
    /// signed it, else NAME@sha256:HASH (the first 16 hex digits)].
    #[serde(skip)]
    #[cfg_attr(feature = "clap", arg(long, value_name = "NAME"))]
    pub kv_namespace: Option<String>,
    /// [`HttpGrant::max_response_bytes`](crate::HttpGrant::max_response_bytes)
    /// (manifest only).
    #[serde(default, deserialize_with = "size")]
    #[cfg_attr(feature = "clap", arg(skip))]
    pub http_max_response: Option<u64>,
    /// [`HttpGrant::connect_timeout`](crate::HttpGrant::connect_timeout)
    /// (manifest only).
    #[serde(default, deserialize_with = "positive_duration")]
    #[cfg_attr(feature = "clap", arg(skip))]
    pub http_connect_timeout: Option<Duration>,
    /// [`HttpGrant::total_timeout`](crate::HttpGrant::total_timeout)
    /// (manifest only).
    #[serde(default, deserialize_with = "positive_duration")]
    #[cfg_attr(feature = "clap", arg(skip))]
    pub http_total_timeout: Option<Duration>,
    /// The manifest's `kv` key: `true` for the default location (as
    /// [`GrantOptions::kv`]), or a table naming at most one of a file
    /// (`path`, relative to the manifest) or a Redis server (`redis`), with a
    /// namespace and quotas.
    #[serde(default, rename = "kv")]
    #[cfg_attr(feature = "clap", arg(skip))]
    pub(crate) kv_table: Option<KvTable>,
    /// Host-defined capabilities granted by name (manifest only).
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(skip))]
    pub host: BTreeSet<String>,
}

impl GrantOptions {
    /// Adds these grants to `grants`. Relative paths in a manifest's
    /// settings (directories, a kv file) are resolved against `base`, its
    /// directory; the command line's are used as given.
    pub fn apply(&self, grants: &mut Grants, base: &Path) -> Result<(), InvalidSetting> {
        grants.dirs.extend(self.dirs.iter().map(|dir| Preopen {
            host: base.join(&dir.host),
            ..dir.clone()
        }));
        grants.env.extend(self.env.iter().cloned());
        grants.config.extend(self.config.iter().cloned());
        let http = &mut grants.http;
        http.allow.extend(self.allow_http.iter().cloned());
        if let Some(bytes) = self.http_max_response {
            http.max_response_bytes = bytes;
        }
        if let Some(timeout) = self.http_connect_timeout {
            http.connect_timeout = timeout;
        }
        if let Some(timeout) = self.http_total_timeout {
            http.total_timeout = timeout;
        }
        grants.tcp.extend(self.allow_tcp.iter().cloned());
        grants.udp.extend(self.allow_udp.iter().cloned());
        grants
            .tcp_listen
            .extend(self.allow_tcp_listen.iter().cloned());
        grants.host.extend(self.host.iter().cloned());
        grants.deterministic |= self.deterministic;
        self.apply_kv(grants, base)
    }

    fn apply_kv(&self, grants: &mut Grants, base: &Path) -> Result<(), InvalidSetting> {
        match &self.kv_table {
            None | Some(KvTable::Enabled(false)) => {}
            Some(KvTable::Enabled(true)) => {
                grants.kv = Some(KvGrant::at(default_kv_path("`kv = true`", KV_PATH_KEY)?));
            }
            Some(KvTable::Store(table)) => grants.kv = Some(table.grant(base)?),
        }
        if let Some(store) = &self.kv_store {
            grants.kv = Some(KvGrant::new(store.clone()));
        } else if self.kv {
            grants.kv = Some(KvGrant::at(default_kv_path("--kv", "--kv-store PATH")?));
        }
        if let Some(namespace) = &self.kv_namespace {
            let kv = grants.kv.as_mut().ok_or_else(|| {
                InvalidSetting(
                    "--kv-namespace needs a kv grant: add --kv or --kv-store PATH|URL".into(),
                )
            })?;
            kv.namespace = Some(namespace.clone());
        }
        Ok(())
    }
}

/// The kv store's default location, for the setting `asked_by` (`--kv`, or
/// a manifest's `kv` without a path): the same place for both, and the same
/// error when the environment names no home directory, saying what to write
/// `instead`.
pub(super) fn default_kv_path(asked_by: &str, instead: &str) -> Result<PathBuf, InvalidSetting> {
    KvGrant::default_path().ok_or_else(|| {
        InvalidSetting(format!(
            "{asked_by} needs HOME or XDG_DATA_HOME to place the store; use {instead}"
        ))
    })
}

/// How a manifest names the kv store's file, for errors.
pub(super) const KV_PATH_KEY: &str = "`kv = { path = \"kv.sqlite\" }`";

/// The smallest memory limit: one WebAssembly page. Below it no plugin
/// with a linear memory can even be instantiated.
const MIN_MEMORY_BYTES: u64 = 64 << 10;

/// Parses a memory limit (`--memory`, `memory`), refusing one below
/// [`MIN_MEMORY_BYTES`] at once rather than at the plugin's first call.
#[cfg(feature = "clap")]
fn parse_memory(text: &str) -> Result<u64, ParseError> {
    check_memory(units::parse_size(text)?)
}

/// Refuses a memory limit below [`MIN_MEMORY_BYTES`], naming it.
pub(super) fn check_memory(bytes: u64) -> Result<u64, ParseError> {
    if bytes < MIN_MEMORY_BYTES {
        return Err(ParseError::new(format!(
            "{bytes} bytes is below the smallest memory ({}, one WebAssembly page); \
             give at least 64KiB, e.g. 64MiB (a size without a unit is in bytes)",
            units::format_bytes(MIN_MEMORY_BYTES)
        )));
    }
    Ok(bytes)
}

/// Parses a fuel limit (`--fuel`), refusing zero.
#[cfg(feature = "clap")]
fn parse_fuel(text: &str) -> Result<u64, ParseError> {
    let fuel = text.trim().parse().map_err(|_| {
        ParseError::new(format!(
            "invalid fuel `{text}`: expected a whole number of units, e.g. 10000000"
        ))
    })?;
    check_fuel(fuel)
}

/// Refuses a fuel limit of zero, which would stop every call at once.
pub(super) fn check_fuel(fuel: u64) -> Result<u64, ParseError> {
    if fuel == 0 {
        return Err(ParseError::new(
            "a fuel limit of 0 stops every call before it starts; give more than zero, \
             or leave fuel out for no limit",
        ));
    }
    Ok(fuel)
}

/// Splits `KEY=VALUE` at the first `=`; `None` without one (or without a key).
#[cfg(feature = "clap")]
fn split_key_value(text: &str) -> Option<(String, String)> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Some((key.to_owned(), value.to_owned())),
        _ => None,
    }
}

/// Parses `--env`: `KEY=VALUE`, or `KEY` alone for Warden's own value of
/// it, as `wasmtime run --env` takes them.
#[cfg(feature = "clap")]
fn parse_env_grant(text: &str) -> Result<(String, String), ParseError> {
    if let Some(pair) = split_key_value(text) {
        return Ok(pair);
    }
    if text.is_empty() || text.contains('=') {
        return Err(ParseError::new(format!(
            "invalid environment variable `{text}`: expected KEY=VALUE, or KEY for Warden's own value"
        )));
    }
    match std::env::var(text) {
        Ok(value) => Ok((text.to_owned(), value)),
        Err(std::env::VarError::NotPresent) => Err(ParseError::new(format!(
            "`{text}` is not set in Warden's environment, so there is no value to pass; \
             give one with --env {text}=VALUE"
        ))),
        Err(std::env::VarError::NotUnicode(_)) => Err(ParseError::new(format!(
            "`{text}` in Warden's environment is not UTF-8; give its value with --env {text}=VALUE"
        ))),
    }
}

/// Parses `--config KEY=VALUE`.
#[cfg(feature = "clap")]
fn parse_config_value(text: &str) -> Result<(String, String), ParseError> {
    split_key_value(text).ok_or_else(|| {
        ParseError::new(format!(
            "invalid configuration value `{text}`: expected KEY=VALUE"
        ))
    })
}

#[cfg(all(test, feature = "clap"))]
mod tests {
    use super::{parse_config_value, parse_env_grant, parse_fuel, parse_memory};

    #[test]
    fn env_vars_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_env_grant("GREETING=hi=there"),
            Ok(("GREETING".to_owned(), "hi=there".to_owned()))
        );
        assert_eq!(
            parse_config_value("mode=a=b"),
            Ok(("mode".to_owned(), "a=b".to_owned()))
        );
        let err = parse_config_value("NO_VALUE").unwrap_err().to_string();
        assert!(
            err.contains("invalid configuration value `NO_VALUE`"),
            "{err}"
        );
        let err = parse_env_grant("=x").unwrap_err().to_string();
        assert!(err.contains("expected KEY=VALUE"), "{err}");
    }

    #[test]
    fn config_values_are_not_called_environment_variables() {
        let error = parse_config_value("k").unwrap_err().to_string();
        assert_eq!(error, "invalid configuration value `k`: expected KEY=VALUE");
    }

    #[test]
    fn memory_below_one_page_and_zero_fuel_are_refused() {
        assert_eq!(parse_memory("64Ki"), Ok(64 << 10));
        let error = parse_memory("64").unwrap_err().to_string();
        assert!(
            error.starts_with(
                "64 bytes is below the smallest memory (64 KiB, one WebAssembly page)"
            ),
            "{error}"
        );
        assert!(parse_memory("lots").is_err());
        assert_eq!(parse_fuel("1"), Ok(1));
        let error = parse_fuel("0").unwrap_err().to_string();
        assert!(error.contains("a fuel limit of 0"), "{error}");
        assert!(parse_fuel("-1").is_err());
    }
}

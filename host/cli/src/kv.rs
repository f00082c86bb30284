//! `warden kv`: an operator's look inside a plugin's key-value namespace.
//!
//! Bucket names, keys and values are the plugin's own text: on a terminal
//! they are shown escaped ([`warden::terminal`]); piped, and in `--json`,
//! they are written unchanged.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;
use warden::tools::KvInspector;
use warden::{KvGrant, KvStore, Manifest};

use crate::args::{KvArgs, KvCommand};
use crate::output;

/// `warden kv`: lists buckets or keys, or reads, sets or deletes one key.
pub fn kv(args: KvArgs) -> anyhow::Result<ExitCode> {
    let (path, namespace) = store_and_namespace(&args)?;
    let store = match &args.command {
        KvCommand::Set { .. } => open_or_create(&path, &namespace)?,
        _ => KvInspector::open(&path, &namespace)?,
    };
    match &args.command {
        KvCommand::Buckets => {
            let buckets = store.buckets()?;
            if args.json {
                output::print_json(&json!(buckets))?;
            } else {
                for bucket in buckets {
                    output::print_guest_text(&format!("{bucket}\n"));
                }
            }
        }
        KvCommand::List => {
            let keys = store.keys(&args.bucket)?;
            if args.json {
                output::print_json(&json!(keys))?;
            } else {
                for key in keys {
                    output::print_guest_text(&format!("{key}\n"));
                }
            }
        }
        KvCommand::Get { key } => {
            let Some(value) = store.get(&args.bucket, key)? else {
                output::print_guest_line(&format!(
                    "warden: no key `{key}` in bucket `{}` of `{namespace}`",
                    args.bucket
                ));
                return Ok(ExitCode::FAILURE);
            };
            if args.json {
                let (value, encoding) = output::encode_bytes(&value);
                output::print_json(&json!({ "key": key, "value": value, "encoding": encoding }))?;
            } else {
                let mut stdout = std::io::stdout().lock();
                let terminal = stdout.is_terminal();
                stdout
                    .write_all(&output::shown(&value, terminal))
                    .context("writing the value")?;
            }
        }
        KvCommand::Set { key, value } => {
            let value = match value {
                Some(text) => text.clone().into_bytes(),
                None => read_stdin()?,
            };
            store.set(&args.bucket, key, value)?;
        }
        KvCommand::Delete { key } => {
            if !store.delete(&args.bucket, key)? {
                output::print_guest_line(&format!(
                    "warden: no key `{key}` in bucket `{}` of `{namespace}`",
                    args.bucket
                ));
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The store file and namespace: from the flags, else the manifest's
/// declaration of the plugin, else the default location and the plugin's name.
fn store_and_namespace(args: &KvArgs) -> anyhow::Result<(std::path::PathBuf, String)> {
    let declared = match &args.manifest {
        Some(manifest) => Manifest::from_file(manifest)?
            .plugin(&args.plugin)?
            .sandbox
            .grants
            .kv
            .clone(),
        None => None,
    };
    let path = match (&args.kv_store, &declared) {
        (Some(path), _) if names_redis(path) => {
            anyhow::bail!("`warden kv` reads SQLite files only, not Redis servers");
        }
        (Some(path), _) => path.clone(),
        (None, Some(grant)) => match &grant.store {
            KvStore::File(path) => path.clone(),
            redis => anyhow::bail!(
                "`warden kv` reads SQLite files only; plugin `{}` keeps its keys on the Redis server {redis}",
                args.plugin
            ),
        },
        (None, None) => KvGrant::default_path()
            .context("no --kv-store given and no default location (HOME is not set)")?,
    };
    let namespace = args
        .namespace
        .clone()
        .or_else(|| declared.and_then(|grant| grant.namespace))
        .unwrap_or_else(|| args.plugin.clone());
    Ok((path, namespace))
}

/// Whether `--kv-store` was given a Redis URL, which `warden kv` cannot read.
fn names_redis(path: &std::path::Path) -> bool {
    matches!(path.to_string_lossy().parse(), Ok(KvStore::Redis(_)))
}

/// Opens the store for `warden kv set`, creating it if missing and saying
/// so: a new store where one was expected is how a mistyped path shows.
fn open_or_create(path: &std::path::Path, namespace: &str) -> anyhow::Result<KvInspector> {
    let existed = path.exists();
    let store = KvInspector::open_or_create(path, namespace)?;
    if !existed {
        eprintln!("warden: created the kv store `{}`", path.display());
    }
    Ok(store)
}

/// A value for `warden kv set` from stdin, bounded by the largest value the
/// default quotas let a plugin store (anything larger would be refused).
fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let limit = warden::KvQuotas::default().max_value_bytes as u64;
    let mut value = Vec::new();
    std::io::stdin()
        .lock()
        .take(limit + 1)
        .read_to_end(&mut value)
        .context("reading the value from stdin")?;
    if value.len() as u64 > limit {
        anyhow::bail!(
            "the value on stdin is larger than a kv value may be ({})",
            warden::units::format_bytes(limit)
        );
    }
    Ok(value)
}

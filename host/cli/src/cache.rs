//! `warden cache list|clean`: what the compile cache holds, and freeing it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde_json::json;
use sha2::{Digest, Sha256};
use warden::tools::CacheEntry;
use warden::units::format_bytes;

use crate::args::{CacheCleanArgs, CacheCommand, CacheListArgs};
use crate::output;

/// `warden cache`: lists or cleans the compile cache.
pub fn cache(command: CacheCommand) -> anyhow::Result<ExitCode> {
    match command {
        CacheCommand::List(args) => list(&args),
        CacheCommand::Clean(args) => clean(&args),
    }
}

fn list(args: &CacheListArgs) -> anyhow::Result<ExitCode> {
    let dir = cache_dir(args)?;
    let entries = entries(&dir, args)?;
    let total: u64 = entries.iter().map(|entry| entry.size).sum();
    let now = SystemTime::now();
    if args.json {
        output::print_json(&json!({
            "dir": dir.display().to_string(),
            "entries": entries.iter().map(|entry| entry_json(entry, now)).collect::<Vec<_>>(),
            "total_size": total,
        }))
        .context("writing the list")?;
        return Ok(ExitCode::SUCCESS);
    }
    for entry in &entries {
        println!(
            "{}  {:>10}  {}",
            entry.component_sha256,
            format_bytes(entry.size),
            age(entry, now)
        );
    }
    println!(
        "{} {}, {} in {}",
        entries.len(),
        plural(entries.len(), "entry", "entries"),
        format_bytes(total),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn clean(args: &CacheCleanArgs) -> anyhow::Result<ExitCode> {
    let dir = cache_dir(&args.list)?;
    let component = match &args.plugin {
        Some(path) => Some(sha256_of_file(path)?),
        None => None,
    };
    let now = SystemTime::now();
    let chosen = entries(&dir, &args.list)?.into_iter().filter(|entry| {
        component
            .as_ref()
            .is_none_or(|sha256| entry.component_sha256 == *sha256)
            && args
                .older_than
                .is_none_or(|bound| age_of(entry, now) > bound)
    });
    let mut removed = Vec::new();
    for entry in chosen {
        entry.remove()?;
        removed.push(entry);
    }
    // The digest index and remembered signature checks only spare loads a
    // hash; cleaning is when they stop growing.
    CacheEntry::remove_records(&dir)?;
    let freed: u64 = removed.iter().map(|entry| entry.size).sum();
    if args.list.json {
        output::print_json(&json!({
            "dir": dir.display().to_string(),
            "removed": removed.iter().map(|entry| entry_json(entry, now)).collect::<Vec<_>>(),
            "freed": freed,
        }))
        .context("writing the report")?;
    } else {
        println!(
            "removed {} {} ({}) from {}",
            removed.len(),
            plural(removed.len(), "entry", "entries"),
            format_bytes(freed),
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The cache directory the flags name, else the default one.
fn cache_dir(args: &CacheListArgs) -> anyhow::Result<PathBuf> {
    match &args.cache_dir {
        Some(dir) => Ok(dir.clone()),
        None => CacheEntry::default_dir().context(
            "no --cache-dir given and no default location (neither XDG_CACHE_HOME nor HOME is set)",
        ),
    }
}

/// The entries of `dir`. The default directory not existing yet means
/// nothing was compiled into it; a directory given with --cache-dir not
/// existing is more likely a typo, and an error.
fn entries(dir: &Path, args: &CacheListArgs) -> anyhow::Result<Vec<CacheEntry>> {
    match CacheEntry::list(dir) {
        Ok(entries) => Ok(entries),
        Err(warden::Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound && args.cache_dir.is_none() =>
        {
            Ok(Vec::new())
        }
        Err(warden::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!("there is no compile cache at `{}`", dir.display())
        }
        Err(err) => Err(err.into()),
    }
}

fn sha256_of_file(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

fn entry_json(entry: &CacheEntry, now: SystemTime) -> serde_json::Value {
    json!({
        "file": entry.path.display().to_string(),
        "component_sha256": entry.component_sha256,
        "size": entry.size,
        "age_seconds": age_of(entry, now).as_secs(),
    })
}

/// How long ago the entry was compiled; zero for a clock set back since.
fn age_of(entry: &CacheEntry, now: SystemTime) -> Duration {
    now.duration_since(entry.modified).unwrap_or_default()
}

/// The age in the largest whole unit, e.g. `3 days ago`.
fn age(entry: &CacheEntry, now: SystemTime) -> String {
    let seconds = age_of(entry, now).as_secs();
    let (count, unit) = match seconds {
        0..60 => (seconds, "second"),
        60..3_600 => (seconds / 60, "minute"),
        3_600..86_400 => (seconds / 3_600, "hour"),
        _ => (seconds / 86_400, "day"),
    };
    format!("{count} {unit}{} ago", if count == 1 { "" } else { "s" })
}

fn plural<'a>(count: usize, one: &'a str, many: &'a str) -> &'a str {
    if count == 1 { one } else { many }
}

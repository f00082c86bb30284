//! The compile cache: compiled components on disk, so that only the first
//! load of a plugin pays for Cranelift (seconds, for a Python or JavaScript
//! component) and later loads deserialize it (milliseconds).
//!
//! An entry is named after the component's SHA-256 and the engine's
//! compatibility hash. Deserializing compiled code is `unsafe` in wasmtime:
//! an artifact is native code that runs as it is. So an entry is used only
//! when it provably is one this host wrote for exactly these component bytes
//! and this engine: its header (a magic number and format version, the
//! engine hash, the component's SHA-256 and the artifact's length) and its
//! artifact are sealed with HMAC-SHA256 under a 32-byte key that lives
//! outside the cache directory (by default `$XDG_DATA_HOME/warden/cache.key`,
//! else `~/.local/share/warden/cache.key`, created readable by its owner
//! only). An entry that is truncated, damaged, copied from another
//! component, edited in place or sealed with another key is never
//! deserialized: it is recompiled and replaced, and a `tracing` warning
//! says so once (the replacement is sound).
//!
//! Threat model: whoever can write the cache directory can delete or damage
//! entries, which costs a recompilation, but cannot make Warden run code
//! that it did not compile from the exact bytes that passed the trust
//! policy, unless they can also read the key. So the directory must belong
//! to the user running Warden (or root) and not be writable by group or
//! others, and the key must belong to that user and be readable by nobody
//! else; either is refused otherwise, with an error naming the path and the
//! fix. Someone who can read the key or replace Warden's binary already is
//! that user.
//!
//! Nothing is looked up before the trust policy has passed the component's
//! bytes, so an artifact compiled from bytes that failed verification is
//! never run.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::Error;
use crate::fsutil::{self, UserDir};

mod inventory;
mod location;

pub use inventory::CacheEntry;
pub(crate) use location::CacheLocation;

/// Identifies Warden's cache entries.
const MAGIC: &[u8; 8] = b"WARDENC\x01";
/// The header's layout version; a different one is a foreign entry.
/// Version 1 had an unkeyed checksum where version 2 has the MAC.
const FORMAT_VERSION: u32 = 2;
/// magic + version + engine hash + component SHA-256 + artifact length: the
/// part of the header the MAC covers (with the artifact).
const SEALED_HEADER_LEN: usize = 8 + 4 + 8 + 32 + 8;
/// Bytes of an HMAC-SHA256 tag.
const MAC_LEN: usize = 32;
/// The sealed header followed by the MAC over it and the artifact.
const HEADER_LEN: usize = SEALED_HEADER_LEN + MAC_LEN;
/// Bytes of the cache key: SHA-256's output size, the most HMAC-SHA256's
/// security can use.
pub(crate) const KEY_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Where compiled components are kept, and the key that seals them.
#[derive(Clone, Debug)]
pub(crate) struct CompileCache {
    dir: PathBuf,
    key: CacheKey,
}

/// The secret that seals this host's cache entries, as HMAC state already
/// keyed with it (the key schedule runs once, when the key is loaded).
#[derive(Clone)]
struct CacheKey(HmacSha256);

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CacheKey(..)")
    }
}

/// Why a compile cache could not be opened.
#[derive(Debug)]
pub(crate) enum OpenFailure {
    /// The directory or key could not be created or read: compiling
    /// without a cache only costs time.
    Unavailable(Error),
    /// The directory or key is exposed to other users: it is never used,
    /// and never skipped silently either.
    Unsafe(Error),
}

impl OpenFailure {
    /// The error to report.
    pub(crate) fn into_error(self) -> Error {
        match self {
            OpenFailure::Unavailable(err) | OpenFailure::Unsafe(err) => err,
        }
    }
}

/// Why a cache entry was not used.
#[derive(Debug, PartialEq, Eq)]
enum Rejection {
    Missing,
    Unreadable(String),
    Truncated,
    Foreign,
    OtherEngine,
    Swapped,
    Tampered,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Missing => f.write_str("there is no entry"),
            Rejection::Unreadable(err) => write!(f, "it cannot be read ({err})"),
            Rejection::Truncated => f.write_str("it is truncated"),
            Rejection::Foreign => f.write_str("it is not a Warden cache entry of this version"),
            Rejection::OtherEngine => f.write_str("it was compiled for another engine"),
            Rejection::Swapped => f.write_str("it was compiled from another component"),
            Rejection::Tampered => f.write_str(
                "its seal does not match: it was damaged, edited, or written with another key",
            ),
        }
    }
}

impl CompileCache {
    /// A cache in `dir`, created (readable by its owner only) if missing,
    /// whose entries are sealed with the key in `key_path`, created if
    /// missing. Refuses a directory or key that other users could have
    /// written, and a key inside the directory.
    pub(crate) fn open(dir: PathBuf, key_path: &Path) -> Result<Self, OpenFailure> {
        let unavailable = |what: &str, path: &Path, err: std::io::Error| {
            OpenFailure::Unavailable(Error::InvalidConfig(format!(
                "cannot create the compile cache{what} `{}`: {err}",
                path.display()
            )))
        };
        fsutil::create_private_dir(&dir).map_err(|err| unavailable("", &dir, err))?;
        let metadata = std::fs::metadata(&dir).map_err(|err| unavailable("", &dir, err))?;
        fsutil::check_not_writable_by_others(&dir, &metadata).map_err(|problem| {
            OpenFailure::Unsafe(Error::InvalidConfig(format!(
                "refusing the compile cache: {problem}"
            )))
        })?;
        let key_dir = match key_path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        fsutil::create_private_dir(key_dir)
            .map_err(|err| unavailable(" key's directory", key_dir, err))?;
        let inside = match (dir.canonicalize(), key_dir.canonicalize()) {
            (Ok(dir), Ok(key_dir)) => key_dir.starts_with(dir),
            _ => false,
        };
        if inside {
            return Err(OpenFailure::Unsafe(Error::InvalidConfig(format!(
                "the compile cache key `{}` is inside the cache directory `{}`: whoever can write \
                 entries could read the key and seal forged ones; keep the key elsewhere \
                 (the default is the user's data directory)",
                key_path.display(),
                dir.display()
            ))));
        }
        let key = CacheKey::load_or_create(key_path)?;
        Ok(CompileCache { dir, key })
    }

    /// `$XDG_CACHE_HOME/warden/compiled`, else `$HOME/.cache/warden/compiled`.
    pub(crate) fn default_dir() -> Option<PathBuf> {
        UserDir::Cache.warden_path("compiled")
    }

    /// `$XDG_DATA_HOME/warden/cache.key`, else
    /// `$HOME/.local/share/warden/cache.key`: the user's data directory,
    /// which is not the cache directory.
    pub(crate) fn default_key_path() -> Option<PathBuf> {
        UserDir::Data.warden_path("cache.key")
    }

    /// The compiled component for `bytes` (whose SHA-256 is `sha256`): from
    /// the cache when a sound entry exists, else compiled and stored.
    /// Returns the component and whether it came from the cache.
    pub(crate) fn get_or_compile(
        &self,
        engine: &Engine,
        sha256: &[u8; 32],
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, bool)> {
        let engine_hash = engine_hash(engine);
        let path = self.entry_path(sha256, engine_hash);
        match self.read_entry(&path, engine_hash, sha256) {
            Ok(artifact) => {
                // SAFETY: the artifact's MAC, under a key only this host's
                // user can read, proves that `store` below wrote it from
                // `Component::serialize` of an engine with this
                // compatibility hash, for a component with this SHA-256.
                // It is deserialized from the bytes that were checked, so
                // nothing can change it in between.
                #[allow(unsafe_code)]
                let loaded = unsafe { Component::deserialize(engine, &artifact) };
                match loaded {
                    Ok(component) => return Ok((component, true)),
                    Err(err) => tracing::warn!(
                        target: "warden::cache",
                        path = %path.display(),
                        "recompiling: wasmtime refused a cache entry: {err:#}"
                    ),
                }
            }
            Err(Rejection::Missing) => {}
            Err(rejection) => tracing::warn!(
                target: "warden::cache",
                path = %path.display(),
                "recompiling instead of using a cache entry: {rejection}"
            ),
        }
        let component = Component::new(engine, bytes)?;
        if let Err(err) = self.store(&path, engine_hash, sha256, &component) {
            // A cache that cannot be written only costs the next load time.
            tracing::warn!(target: "warden::cache", path = %path.display(), "not caching: {err}");
        }
        Ok((component, false))
    }

    /// Whether an entry for `sha256` exists for `engine`, without reading
    /// it: [`get_or_compile`](Self::get_or_compile) decides whether it is
    /// sound.
    pub(crate) fn has_entry(&self, engine: &Engine, sha256: &[u8; 32]) -> bool {
        self.entry_path(sha256, engine_hash(engine)).is_file()
    }

    fn entry_path(&self, sha256: &[u8; 32], engine_hash: u64) -> PathBuf {
        self.dir
            .join(format!("{}-{engine_hash:016x}.cwasm", hex::encode(sha256)))
    }

    fn store(
        &self,
        path: &Path,
        engine_hash: u64,
        sha256: &[u8; 32],
        component: &Component,
    ) -> Result<(), Error> {
        let artifact = component.serialize().map_err(|err| {
            Error::io(
                "serializing a compiled component",
                std::io::Error::other(err.to_string()),
            )
        })?;
        let mut entry = Vec::with_capacity(HEADER_LEN + artifact.len());
        entry.extend_from_slice(MAGIC);
        entry.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        entry.extend_from_slice(&engine_hash.to_le_bytes());
        entry.extend_from_slice(sha256);
        entry.extend_from_slice(&(artifact.len() as u64).to_le_bytes());
        let mac = self.key.mac(&entry, &artifact).finalize().into_bytes();
        entry.extend_from_slice(&mac);
        entry.extend_from_slice(&artifact);
        fsutil::write_private_file_atomically(path, &entry)
    }

    /// Reads an entry and checks its header and seal; returns the artifact.
    fn read_entry(
        &self,
        path: &Path,
        engine_hash: u64,
        sha256: &[u8; 32],
    ) -> Result<Vec<u8>, Rejection> {
        let mut entry = match std::fs::read(path) {
            Ok(entry) => entry,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(Rejection::Missing);
            }
            Err(err) => return Err(Rejection::Unreadable(err.to_string())),
        };
        if entry.len() < HEADER_LEN {
            return Err(Rejection::Truncated);
        }
        let (header, artifact) = entry.split_at(HEADER_LEN);
        let (sealed, mac) = header.split_at(SEALED_HEADER_LEN);
        let field = |range: std::ops::Range<usize>| &sealed[range];
        // The cheap field checks only name the most likely cause; the MAC
        // below is what makes an entry trustworthy.
        if field(0..8) != MAGIC || field(8..12) != FORMAT_VERSION.to_le_bytes() {
            return Err(Rejection::Foreign);
        }
        if field(12..20) != engine_hash.to_le_bytes() {
            return Err(Rejection::OtherEngine);
        }
        if field(20..52) != sha256 {
            return Err(Rejection::Swapped);
        }
        let length = u64::from_le_bytes(field(52..60).try_into().map_err(|_| Rejection::Foreign)?);
        if length != artifact.len() as u64 {
            return Err(Rejection::Truncated);
        }
        self.key
            .mac(sealed, artifact)
            .verify_slice(mac)
            .map_err(|_| Rejection::Tampered)?;
        entry.drain(..HEADER_LEN);
        Ok(entry)
    }
}

impl CacheKey {
    /// Reads the key at `path`, or creates it (32 random bytes, readable by
    /// its owner only) if there is none. Several processes creating it at
    /// once agree on one key: it is written aside and linked into place,
    /// which fails for all but the first.
    fn load_or_create(path: &Path) -> Result<Self, OpenFailure> {
        match Self::load(path) {
            Err(OpenFailure::Unavailable(Error::Io { source, .. }))
                if source.kind() == std::io::ErrorKind::NotFound => {}
            loaded => return loaded,
        }
        let mut key = [0; KEY_LEN];
        getrandom::fill(&mut key).map_err(|err| {
            OpenFailure::Unavailable(Error::io(
                "generating the compile cache key",
                std::io::Error::other(err.to_string()),
            ))
        })?;
        fsutil::create_private_file_exclusively(path, &key).map_err(OpenFailure::Unavailable)?;
        // Whether this process's key or a concurrent one's won, the file
        // now holds the key every process uses.
        Self::load(path)
    }

    fn load(path: &Path) -> Result<Self, OpenFailure> {
        let unavailable = |err| {
            OpenFailure::Unavailable(Error::io(format!("cannot read `{}`", path.display()), err))
        };
        // The checks look at the file that was opened, not at the path again.
        let (mut file, metadata) = fsutil::open_without_blocking(path).map_err(unavailable)?;
        fsutil::check_secret(path, &metadata).map_err(|problem| {
            OpenFailure::Unsafe(Error::InvalidConfig(format!(
                "refusing the compile cache key: {problem}"
            )))
        })?;
        let mut key = [0; KEY_LEN];
        // The size is checked before reading, so a huge file is never read.
        let keyed = (metadata.is_file()
            && metadata.len() == KEY_LEN as u64
            && file.read_exact(&mut key).is_ok())
        .then(|| HmacSha256::new_from_slice(&key).ok())
        .flatten();
        let Some(keyed) = keyed else {
            return Err(OpenFailure::Unsafe(Error::InvalidConfig(format!(
                "`{}` is not a compile cache key (it must hold exactly {KEY_LEN} bytes); remove it \
                 and Warden makes a new one (cached plugins are then compiled once more)",
                path.display()
            ))));
        };
        Ok(CacheKey(keyed))
    }

    /// The MAC state over an entry's sealed header and artifact.
    fn mac(&self, sealed_header: &[u8], artifact: &[u8]) -> HmacSha256 {
        let mut mac = self.0.clone();
        mac.update(sealed_header);
        mac.update(artifact);
        mac
    }
}

/// The engine's compatibility hash, folded to 64 bits.
fn engine_hash(engine: &Engine) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests;

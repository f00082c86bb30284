//! The compile cache: compiled components on disk, so that only the first
//! load of a plugin pays for Cranelift (seconds, for a Python or JavaScript
//! component) and later loads deserialize it (milliseconds).
//!
//! An entry is named after the component's SHA-256 and the engine's
//! compatibility hash. Deserializing compiled code is `unsafe` in wasmtime —
//! a damaged artifact could do anything — so every entry carries a header
//! that is checked before wasmtime sees a byte: a magic number and format
//! version, the engine hash, the component's SHA-256, the artifact's length
//! and an XXH3-128 checksum of it. A corrupted, truncated, foreign or swapped
//! entry fails the check, is reported through `tracing`, and is recompiled
//! and replaced. The checksum guards against damage, not against an attacker
//! who can write to the cache directory (who could equally replace Warden
//! itself); the directory is created readable by its owner only.
//!
//! Nothing is looked up before the trust policy has passed the component's
//! bytes, so an artifact compiled from bytes that failed verification is
//! never run.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::Error;

/// Identifies Warden's cache entries.
const MAGIC: &[u8; 8] = b"WARDENC\x01";
/// The header's layout version; a different one is a foreign entry.
const FORMAT_VERSION: u32 = 1;
/// magic + version + engine hash + component SHA-256 + length + checksum.
const HEADER_LEN: usize = 8 + 4 + 8 + 32 + 8 + 16;

/// Where compiled components are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CompileCache {
    dir: PathBuf,
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
    Corrupted,
}

impl CompileCache {
    /// A cache in `dir`, created (readable by its owner only) if missing.
    pub(crate) fn open(dir: PathBuf) -> Result<Self, Error> {
        create_private_dir(&dir).map_err(|err| {
            Error::InvalidConfig(format!(
                "cannot create the compile cache `{}`: {err}",
                dir.display()
            ))
        })?;
        Ok(CompileCache { dir })
    }

    /// `$XDG_CACHE_HOME/warden/compiled`, else `$HOME/.cache/warden/compiled`.
    pub(crate) fn default_dir() -> Option<PathBuf> {
        let cache_home = std::env::var_os("XDG_CACHE_HOME")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|dir| !dir.is_empty())
                    .map(|home| Path::new(&home).join(".cache"))
            })?;
        Some(cache_home.join("warden").join("compiled"))
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
        match read_entry(&path, engine_hash, sha256) {
            Ok(artifact) => {
                // SAFETY: the artifact was written by `store` below from
                // `Component::serialize` of an engine with this compatibility
                // hash, for a component with this SHA-256, and its length and
                // checksum match, so it is exactly those bytes.
                #[allow(unsafe_code)]
                let loaded = unsafe { Component::deserialize(engine, &artifact) };
                match loaded {
                    Ok(component) => return Ok((component, true)),
                    Err(err) => tracing::warn!(
                        target: "warden::cache",
                        path = %path.display(),
                        "discarding a cache entry wasmtime refused: {err:#}"
                    ),
                }
            }
            Err(Rejection::Missing) => {}
            Err(rejection) => tracing::warn!(
                target: "warden::cache",
                path = %path.display(),
                "discarding a cache entry: {rejection:?}"
            ),
        }
        let component = Component::new(engine, bytes)?;
        if let Err(err) = self.store(&path, engine_hash, sha256, &component) {
            // A cache that cannot be written only costs the next load time.
            tracing::warn!(target: "warden::cache", path = %path.display(), "not caching: {err}");
        }
        Ok((component, false))
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
        entry.extend_from_slice(&xxhash_rust::xxh3::xxh3_128(&artifact).to_le_bytes());
        entry.extend_from_slice(&artifact);
        crate::fsutil::write_private_file_atomically(path, &entry)
    }
}

/// Reads an entry and checks its header; returns the artifact.
fn read_entry(path: &Path, engine_hash: u64, sha256: &[u8; 32]) -> Result<Vec<u8>, Rejection> {
    let mut entry = match std::fs::read(path) {
        Ok(entry) => entry,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(Rejection::Missing),
        Err(err) => return Err(Rejection::Unreadable(err.to_string())),
    };
    if entry.len() < HEADER_LEN {
        return Err(Rejection::Truncated);
    }
    let (header, artifact) = entry.split_at(HEADER_LEN);
    let field = |range: std::ops::Range<usize>| &header[range];
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
    if field(60..76) != xxhash_rust::xxh3::xxh3_128(artifact).to_le_bytes() {
        return Err(Rejection::Corrupted);
    }
    entry.drain(..HEADER_LEN);
    Ok(entry)
}

/// The engine's compatibility hash, folded to 64 bits.
fn engine_hash(engine: &Engine) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.finish()
}

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small component: compiles in milliseconds.
    const COMPONENT: &str = r#"(component (core module (func (export "f"))))"#;

    fn setup() -> (tempfile::TempDir, CompileCache, Engine, Vec<u8>, [u8; 32]) {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(dir.path().join("compiled")).unwrap();
        let engine = Engine::default();
        let bytes = wat::parse_str(COMPONENT).unwrap();
        let sha256: [u8; 32] =
            sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes)).into();
        (dir, cache, engine, bytes, sha256)
    }

    fn entry(cache: &CompileCache, engine: &Engine, sha256: &[u8; 32]) -> PathBuf {
        cache.entry_path(sha256, engine_hash(engine))
    }

    #[test]
    fn the_second_load_comes_from_the_cache() {
        let (_dir, cache, engine, bytes, sha256) = setup();
        let (_, cached) = cache.get_or_compile(&engine, &sha256, &bytes).unwrap();
        assert!(!cached);
        let (_, cached) = cache.get_or_compile(&engine, &sha256, &bytes).unwrap();
        assert!(cached);
    }

    #[test]
    fn the_directory_and_entries_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, cache, engine, bytes, sha256) = setup();
        cache.get_or_compile(&engine, &sha256, &bytes).unwrap();
        let dir_mode = std::fs::metadata(&cache.dir).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let file_mode = std::fs::metadata(entry(&cache, &engine, &sha256))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(file_mode & 0o777, 0o600);
    }

    #[test]
    fn damaged_entries_are_detected_and_replaced() {
        type Damage = fn(&mut Vec<u8>);
        let damages: [(Rejection, Damage); 5] = [
            (Rejection::Truncated, |entry| {
                entry.truncate(entry.len() / 2)
            }),
            (Rejection::Truncated, |entry| entry.truncate(10)),
            (Rejection::Corrupted, |entry| {
                let last = entry.len() - 1;
                entry[last] ^= 0xff;
            }),
            (Rejection::Foreign, |entry| {
                entry[0..8].copy_from_slice(b"NOTWARDN")
            }),
            (Rejection::OtherEngine, |entry| entry[12] ^= 0x01),
        ];
        for (expected, damage) in damages {
            let (_dir, cache, engine, bytes, sha256) = setup();
            cache.get_or_compile(&engine, &sha256, &bytes).unwrap();
            let path = entry(&cache, &engine, &sha256);
            let mut damaged = std::fs::read(&path).unwrap();
            damage(&mut damaged);
            std::fs::write(&path, &damaged).unwrap();
            assert_eq!(
                read_entry(&path, engine_hash(&engine), &sha256).unwrap_err(),
                expected
            );
            let (_, cached) = cache.get_or_compile(&engine, &sha256, &bytes).unwrap();
            assert!(!cached, "{expected:?}: recompiled, not loaded");
            let (_, cached) = cache.get_or_compile(&engine, &sha256, &bytes).unwrap();
            assert!(
                cached,
                "{expected:?}: the entry was replaced by a sound one"
            );
        }
    }

    #[test]
    fn an_entry_swapped_in_from_another_component_is_refused() {
        let (_dir, cache, engine, bytes, sha256) = setup();
        let other = wat::parse_str(r#"(component (core module (func (export "g"))))"#).unwrap();
        let other_sha: [u8; 32] =
            sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&other)).into();
        cache.get_or_compile(&engine, &other_sha, &other).unwrap();
        std::fs::copy(
            entry(&cache, &engine, &other_sha),
            entry(&cache, &engine, &sha256),
        )
        .unwrap();
        assert_eq!(
            read_entry(
                &entry(&cache, &engine, &sha256),
                engine_hash(&engine),
                &sha256
            )
            .unwrap_err(),
            Rejection::Swapped
        );
        let (_, cached) = cache.get_or_compile(&engine, &sha256, &bytes).unwrap();
        assert!(!cached);
    }
}

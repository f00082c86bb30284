//! The compile cache: compiled components on disk, so that only the first
//! load of a plugin pays for Cranelift (seconds, for a Python or JavaScript
//! component) and later loads map it (a millisecond or two, whatever its
//! size).
//!
//! An entry is two files named after the component's SHA-256 and the
//! engine's compatibility hash: `SHA256-ENGINE.cwasm`, the artifact exactly
//! as `Component::serialize` wrote it, which wasmtime maps into memory
//! rather than copying, and `SHA256-ENGINE.seal`, its seal. Deserializing
//! compiled code is `unsafe` in wasmtime: an artifact is native code that
//! runs as it is. So an entry is used only when it provably is one this
//! host wrote for exactly these component bytes and this engine: its
//! header (a magic number and format version, the engine hash, the
//! component's SHA-256 and the artifact's length) and its artifact are
//! sealed with HMAC-SHA256 under a 32-byte key that lives outside the cache
//! directory (by default `$XDG_DATA_HOME/warden/cache.key`, else
//! `~/.local/share/warden/cache.key`, created readable by its owner only).
//! An entry that is truncated, damaged, copied from another component,
//! edited in place or sealed with another key is never deserialized: it is
//! recompiled and replaced, and a `tracing` warning says so once (the
//! replacement is sound).
//!
//! Checking the MAC of tens of megabytes on every load would cost more than
//! mapping them, so it is checked in full once: then the artifact file's
//! identity (device, inode, size, modification and change times, from
//! `fstat` of the file opened) is added to its seal under its own MAC, and
//! a later load whose open file has that identity skips the full check.
//! Identities are recorded and believed only on the local file systems
//! whose change times the kernel alone sets
//! ([`fsutil::keeps_change_times`], on Linux and Android): there any write
//! into the file moves its change time to the present, which only root can
//! set back (by stepping the clock, or writing the disk beneath the file
//! system), so an edited artifact goes back to the full check and is
//! refused. Elsewhere (FAT, FUSE, SMB, 9p, NFS, loop-mounted images with
//! authored times, other systems) every load checks the full MAC. An
//! identity whose change time is within `RACY_WINDOW` of the moment the
//! checked read began is not recorded: a write in the same timestamp tick
//! could otherwise go unseen (such a file is checked in full again next
//! time). The trade: damage that leaves the change time alone (bit rot
//! under the file system) is no longer caught by the MAC; wasmtime still
//! checks the artifact's structure and its engine hash. The checked file
//! is the one deserialized: on Linux and Android wasmtime maps it through
//! `/proc/self/fd/N` of the opened file, and its identity is checked again
//! once it is mapped; elsewhere (or without `/proc`) it is deserialized
//! from the bytes whose MAC was checked, read from that descriptor.
//!
//! The same key seals two kinds of small facts beside the entries, each
//! tagged with its kind so that no sealed record passes for another:
//!
//! - the digest index (`digests.rs`, `digests/DEV-INO`): the SHA-256 (with
//!   the size, the pool footprint and the SHA-256 of its first 64 KiB) of a
//!   component file with a given identity, recorded after hashing it, under
//!   the same file-system and racy-time rules, so that loading an unchanged
//!   file neither reads nor hashes it; a record that the bytes read later
//!   contradict is removed, and the load judges those bytes;
//! - verification outcomes (`verified.rs`, `verified/HASH`): whether a
//!   public key's signature over a component (with a given detached
//!   signature, or its embedded one) verified; a pure function of those
//!   inputs, so it holds under any trust store, whose policy is applied
//!   afresh on every load. Only outcomes for keys the signature names, and
//!   valid ones for anonymous signatures, are recorded.
//!
//! Both only spare work, and `warden cache clean` removes them
//! ([`CacheEntry::remove_records`]) with seals left without their code.
//!
//! Threat model: whoever can write the cache directory can delete or damage
//! entries and records, which costs a recompilation or a hash, but cannot
//! make Warden run code that it did not compile from the exact bytes that
//! passed the trust policy, nor make it take a file for another, unless
//! they can also read the key. So the directory must belong to the user
//! running Warden (or root) and not be writable by group or others, and the
//! key must belong to that user and be readable by nobody else; either is
//! refused otherwise, with an error naming the path and the fix. Someone
//! who can read the key or replace Warden's binary already is that user. A
//! mapped artifact is read from its file as it runs: a write into the file
//! while a process has it mapped could reach that process's code, but
//! writing it takes the cache owner's rights (entries are created readable
//! and writable by their owner only, in a directory only the owner may
//! write), and that user can change the process anyway.
//!
//! Compiled code is not looked up before the trust policy has passed the
//! component, so an artifact compiled from bytes that failed verification
//! is never run. The digest index and the verification outcomes are read
//! before: they are what the trust policy is applied to, and a record is
//! only believed when its seal holds.

use std::fmt;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::Error;
use crate::fsutil::{self, FileIdentity, UserDir};

mod digests;
mod inventory;
mod location;
pub(crate) mod verified;

pub use inventory::CacheEntry;
pub(crate) use location::CacheLocation;

/// Identifies Warden's cache entries' seals.
const MAGIC: &[u8; 8] = b"WARDENC\x01";
/// The seal's layout version; a different one is a foreign entry.
/// Version 1 had an unkeyed checksum where version 2 has the MAC; version 3
/// keeps the artifact alone in its own file, so that it can be mapped, and
/// may record the artifact file's identity.
const FORMAT_VERSION: u32 = 3;
/// magic + version + engine hash + component SHA-256 + artifact length: the
/// part of the seal the MAC covers (with the artifact).
const SEALED_HEADER_LEN: usize = 8 + 4 + 8 + 32 + 8;
/// Bytes of an HMAC-SHA256 tag.
const MAC_LEN: usize = 32;
/// The sealed header followed by the MAC over it and the artifact.
const SEAL_LEN: usize = SEALED_HEADER_LEN + MAC_LEN;
/// A seal that also vouches for the artifact file's identity.
const SEAL_WITH_IDENTITY_LEN: usize = SEAL_LEN + FileIdentity::LEN + MAC_LEN;
/// Tags the MAC over a seal and an artifact identity, so that it cannot be
/// taken for any other sealed record.
const IDENTITY_TAG: &[u8; 8] = b"WARDENI\x01";
/// The extension of an entry's seal file (beside `NAME.cwasm`).
const SEAL_EXTENSION: &str = "seal";
/// How long after its last change a file's identity may vouch for its
/// contents. File systems keep times at granularities from a nanosecond to
/// two seconds (FAT); a write within the same tick as an identity was taken
/// would leave the identity as it was.
const RACY_WINDOW: Duration = Duration::from_secs(2);
/// Bytes of the cache key: SHA-256's output size, the most HMAC-SHA256's
/// security can use.
pub(crate) const KEY_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Where compiled components are kept, and the key that seals them.
#[derive(Clone, Debug)]
pub(crate) struct CompileCache {
    dir: PathBuf,
    key: CacheKey,
    /// [`RACY_WINDOW`]; tests shorten it to see identities recorded.
    racy_window: Duration,
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
    Changed,
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
            Rejection::Changed => f.write_str("it was written to while it was being loaded"),
        }
    }
}

/// An entry's seal file, read and parsed (not yet checked against the
/// artifact).
struct Seal {
    /// The sealed header and the MAC over it and the artifact.
    sealed: [u8; SEAL_LEN],
    /// The artifact file's identity, when the seal vouches for one under a
    /// MAC that holds.
    identity: Option<FileIdentity>,
}

/// An artifact file whose seal holds, open.
struct CheckedArtifact {
    file: File,
    identity: FileIdentity,
    /// The artifact's bytes, when they were read to check their MAC (not
    /// when the file's identity vouched for them).
    artifact: Option<Vec<u8>>,
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
        Ok(CompileCache {
            dir,
            key,
            racy_window: RACY_WINDOW,
        })
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

    /// The compiled component whose SHA-256 is `sha256`: from the cache when
    /// a sound entry exists, else compiled from what `bytes` returns (called
    /// only then) and stored. Returns the component and whether it came
    /// from the cache.
    pub(crate) fn get_or_compile<'b>(
        &self,
        engine: &Engine,
        sha256: &[u8; 32],
        bytes: impl FnOnce() -> Result<&'b [u8], Error>,
    ) -> Result<(Component, bool), Error> {
        let engine_hash = engine_hash(engine);
        match self.load(engine, engine_hash, sha256) {
            Ok(component) => return Ok((component, true)),
            Err(Rejection::Missing) => {}
            Err(rejection) => tracing::warn!(
                target: "warden::cache",
                path = %self.entry_path(sha256, engine_hash).display(),
                "recompiling instead of using a cache entry: {rejection}"
            ),
        }
        let component = Component::new(engine, bytes()?).map_err(|err| {
            Error::invalid_plugin(format!(
                "the component failed to validate or compile: {err:#}"
            ))
        })?;
        if let Err(err) = self.store(engine_hash, sha256, &component) {
            // A cache that cannot be written only costs the next load time.
            tracing::warn!(
                target: "warden::cache",
                path = %self.entry_path(sha256, engine_hash).display(),
                "not caching: {err}"
            );
        }
        Ok((component, false))
    }

    /// Whether an entry for `sha256` exists for `engine`, without reading
    /// it: [`get_or_compile`](Self::get_or_compile) decides whether it is
    /// sound.
    pub(crate) fn has_entry(&self, engine: &Engine, sha256: &[u8; 32]) -> bool {
        let path = self.entry_path(sha256, engine_hash(engine));
        path.is_file() && path.with_extension(SEAL_EXTENSION).is_file()
    }

    /// The artifact file of the entry for `sha256` and `engine_hash`; its
    /// seal is the same path with the [`SEAL_EXTENSION`].
    fn entry_path(&self, sha256: &[u8; 32], engine_hash: u64) -> PathBuf {
        self.dir
            .join(format!("{}-{engine_hash:016x}.cwasm", hex::encode(sha256)))
    }

    /// Seals `record` with the cache key and writes it at `path`, in the
    /// cache's subdirectory `dir` (created if missing). Records only save
    /// later loads work, so one that cannot be written is a warning naming
    /// `what` it would have recorded.
    fn write_sealed_record(&self, dir: &str, path: &Path, mut record: Vec<u8>, what: &str) {
        let mac = self.key.tag(&[&record]);
        record.extend_from_slice(&mac);
        let written = fsutil::create_private_dir(&self.dir.join(dir))
            .map_err(|err| Error::io(format!("creating `{}`", self.dir.join(dir).display()), err))
            .and_then(|()| fsutil::write_private_file_atomically(path, &record));
        if let Err(err) = written {
            tracing::warn!(
                target: "warden::cache",
                path = %path.display(),
                "not recording {what}: {err}"
            );
        }
    }

    /// Maps the entry's artifact after checking it; wasmtime is handed the
    /// file that was checked.
    fn load(
        &self,
        engine: &Engine,
        engine_hash: u64,
        sha256: &[u8; 32],
    ) -> Result<Component, Rejection> {
        let path = self.entry_path(sha256, engine_hash);
        let checked = self.check_entry(&path, engine_hash, sha256)?;
        let loaded = match mapping_path(&checked.file) {
            // SAFETY: the artifact's MAC, under a key only this host's user
            // can read, proves that `store` below wrote it from
            // `Component::serialize` of an engine with this compatibility
            // hash, for a component with this SHA-256: checked in full over
            // the file, or earlier in full and since then vouched for by
            // the file's identity, which any write changes on the file
            // systems where identities are trusted (see the module's
            // documentation). `mapped` names the very file that was checked
            // (its open descriptor), and its identity is checked again
            // below, once it is mapped.
            #[allow(unsafe_code)]
            Some(mapped) => unsafe { Component::deserialize_file(engine, &mapped) },
            None => {
                let artifact = match checked.artifact {
                    Some(artifact) => artifact,
                    None => read_artifact(&checked.file, checked.identity.size())?,
                };
                // SAFETY: as above; these are the bytes whose MAC was
                // checked, or (vouched for by the identity) read from the
                // descriptor that was checked.
                #[allow(unsafe_code)]
                unsafe {
                    Component::deserialize(engine, &artifact)
                }
            }
        };
        let component =
            loaded.map_err(|err| Rejection::Unreadable(format!("wasmtime refused it: {err:#}")))?;
        match checked.file.metadata() {
            Ok(metadata) if FileIdentity::of(&metadata) == checked.identity => Ok(component),
            _ => Err(Rejection::Changed),
        }
    }

    fn store(
        &self,
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
        let mut seal = Vec::with_capacity(SEAL_LEN);
        seal.extend_from_slice(MAGIC);
        seal.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        seal.extend_from_slice(&engine_hash.to_le_bytes());
        seal.extend_from_slice(sha256);
        seal.extend_from_slice(&(artifact.len() as u64).to_le_bytes());
        let mac = self.key.mac(&seal, &artifact).finalize().into_bytes();
        seal.extend_from_slice(&mac);
        let path = self.entry_path(sha256, engine_hash);
        // The artifact first: a seal never vouches for a file not yet
        // written, and a reader that meets a new seal beside an old
        // artifact (or the reverse) finds the MAC broken and recompiles.
        fsutil::write_private_file_atomically(&path, &artifact)?;
        fsutil::write_private_file_atomically(&path.with_extension(SEAL_EXTENSION), &seal)
    }

    /// Reads an entry's seal, opens its artifact and checks it: in full
    /// (then records the file's identity in the seal, when it is settled),
    /// or by the identity its seal vouches for.
    fn check_entry(
        &self,
        path: &Path,
        engine_hash: u64,
        sha256: &[u8; 32],
    ) -> Result<CheckedArtifact, Rejection> {
        let seal_path = path.with_extension(SEAL_EXTENSION);
        let seal = self.read_seal(&seal_path)?;
        let (header, _) = seal.sealed.split_at(SEALED_HEADER_LEN);
        let field = |range: std::ops::Range<usize>| &header[range];
        // The cheap field checks only name the most likely cause; the MAC
        // is what makes an entry trustworthy.
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
        let (file, metadata) = fsutil::open_without_blocking(path).map_err(|err| {
            if err.kind() == std::io::ErrorKind::NotFound {
                Rejection::Missing
            } else {
                Rejection::Unreadable(err.to_string())
            }
        })?;
        if !metadata.is_file() {
            return Err(Rejection::Unreadable("it is not a regular file".to_owned()));
        }
        let identity = FileIdentity::of(&metadata);
        if identity.size() != length {
            return Err(Rejection::Truncated);
        }
        let times_kept = fsutil::keeps_change_times(&file);
        if times_kept && seal.identity == Some(identity) {
            return Ok(CheckedArtifact {
                file,
                identity,
                artifact: None,
            });
        }
        // Taken before the read: the racy-time rule is judged against it.
        let read_started = SystemTime::now();
        let mut artifact = Vec::new();
        artifact
            .try_reserve_exact(usize::try_from(length).map_err(|_| Rejection::Truncated)?)
            .map_err(|_| Rejection::Unreadable("not enough memory to check it".to_owned()))?;
        (&file)
            .take(length.saturating_add(1))
            .read_to_end(&mut artifact)
            .map_err(|err| Rejection::Unreadable(err.to_string()))?;
        if artifact.len() as u64 != length {
            return Err(Rejection::Truncated);
        }
        let (sealed_header, mac) = seal.sealed.split_at(SEALED_HEADER_LEN);
        self.key
            .mac(sealed_header, &artifact)
            .verify_slice(mac)
            .map_err(|_| Rejection::Tampered)?;
        match file.metadata() {
            Ok(after) if FileIdentity::of(&after) == identity => {}
            _ => return Err(Rejection::Changed),
        }
        if times_kept && identity.is_settled(read_started, self.racy_window) {
            let mut vouched = seal.sealed.to_vec();
            vouched.extend_from_slice(&identity.to_bytes());
            vouched.extend_from_slice(&self.key.tag(&[IDENTITY_TAG, &vouched]));
            if let Err(err) = fsutil::write_private_file_atomically(&seal_path, &vouched) {
                // Only costs the next load another full check.
                tracing::warn!(
                    target: "warden::cache",
                    path = %seal_path.display(),
                    "not recording the artifact's identity: {err}"
                );
            }
        }
        Ok(CheckedArtifact {
            file,
            identity,
            artifact: Some(artifact),
        })
    }

    /// Reads and parses a seal file; an identity whose MAC fails is
    /// ignored (the artifact is then checked in full).
    fn read_seal(&self, path: &Path) -> Result<Seal, Rejection> {
        let bytes = read_small_file(path, SEAL_WITH_IDENTITY_LEN).map_err(|err| {
            if err.kind() == std::io::ErrorKind::NotFound {
                Rejection::Missing
            } else {
                Rejection::Unreadable(err.to_string())
            }
        })?;
        if bytes.len() < SEAL_LEN {
            return Err(Rejection::Truncated);
        }
        let (sealed, rest) = bytes.split_at(SEAL_LEN);
        let sealed: [u8; SEAL_LEN] = sealed.try_into().map_err(|_| Rejection::Truncated)?;
        let identity = (rest.len() == FileIdentity::LEN + MAC_LEN)
            .then(|| rest.split_at(FileIdentity::LEN))
            .filter(|(identity, mac)| self.key.verify(&[IDENTITY_TAG, &sealed, identity], mac))
            .and_then(|(identity, _)| FileIdentity::from_bytes(identity));
        Ok(Seal { sealed, identity })
    }
}

/// The path that names `file` itself: on Linux and Android its
/// descriptor's entry in `/proc/self/fd`, which opens that very inode even
/// if the entry's path has been replaced since. `None` elsewhere, or
/// without `/proc`: the artifact is then deserialized from bytes read from
/// `file`.
fn mapping_path(file: &File) -> Option<PathBuf> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::fd::AsRawFd;
        let by_descriptor = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        by_descriptor.exists().then_some(by_descriptor)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = file;
        None
    }
}

/// The whole of `file` (an artifact vouched for by its identity, on a
/// system without `/proc/self/fd`), read from its start.
fn read_artifact(file: &File, length: u64) -> Result<Vec<u8>, Rejection> {
    use std::os::unix::fs::FileExt;
    let length = usize::try_from(length).map_err(|_| Rejection::Truncated)?;
    let mut artifact = Vec::new();
    artifact
        .try_reserve_exact(length)
        .map_err(|_| Rejection::Unreadable("not enough memory to read it".to_owned()))?;
    artifact.resize(length, 0);
    file.read_exact_at(&mut artifact, 0)
        .map_err(|err| Rejection::Unreadable(err.to_string()))?;
    Ok(artifact)
}

/// Reads a file of at most `max` bytes without waiting on a planted pipe;
/// a longer file or one that is not a regular file is
/// [`std::io::ErrorKind::InvalidData`].
fn read_small_file(path: &Path, max: usize) -> std::io::Result<Vec<u8>> {
    let (file, metadata) = fsutil::open_without_blocking(path)?;
    if !metadata.is_file() || metadata.len() > max as u64 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a cache record",
        ));
    }
    let mut bytes = Vec::with_capacity(max);
    file.take(max as u64 + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
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

    /// The MAC over `parts`, one after the other. Every record sealed this
    /// way starts with a tag of its kind, so no record passes for another.
    fn tag(&self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the MAC over `parts` (compared in constant time).
    fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(tag).is_ok()
    }
}

/// The engine's compatibility hash, folded to 64 bits.
fn engine_hash(engine: &Engine) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
pub(crate) mod tests;

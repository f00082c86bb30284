//! The digest index: for a component file of a given identity, its SHA-256
//! and what a load needs besides (its size and pool footprint), sealed
//! with the cache key, so that loading a file that has not changed since it
//! was hashed neither reads nor hashes it.
//!
//! A record is `digests/DEV-INO` (one per file: a new version of the file
//! replaces its record). It is believed only when its MAC holds, the
//! identity it names is the one the file was opened with, and the SHA-256
//! of the file's first [`PREFIX_LEN`] bytes it holds is that of the prefix
//! read when the file was opened (which binds an embedded signature
//! section, read from that prefix, to the digest); a forged or stale record
//! is ignored and the file hashed again. Only settled identities are
//! recorded ([`FileIdentity::is_settled`]), and only on file systems where
//! identities vouch for contents ([`fsutil::keeps_change_times`], which
//! the source checks). A record that bytes read later contradict is
//! removed ([`CompileCache::forget_digest`]).

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::{CompileCache, FORMAT_VERSION, MAC_LEN, read_small_file};
use crate::footprint::Footprint;
use crate::fsutil::FileIdentity;
#[cfg(doc)]
use crate::source::PREFIX_LEN;
use crate::source::{Digested, ReadVersion};

/// Tags a digest record, so that no other sealed record passes for one.
/// Version 2 holds the prefix's SHA-256.
const DIGEST_TAG: &[u8; 8] = b"WARDEND\x02";
/// The cache's subdirectory of digest records.
pub(super) const DIGESTS_DIR: &str = "digests";
/// Bytes of a footprint in a record: three little-endian `u32`s.
const FOOTPRINT_LEN: usize = 3 * 4;
/// tag + version + identity + SHA-256 + prefix SHA-256 + footprint, then
/// the MAC over them.
const RECORD_LEN: usize = 8 + 4 + FileIdentity::LEN + 32 + 32 + FOOTPRINT_LEN + MAC_LEN;

impl CompileCache {
    /// What the index recorded for the file with `identity` whose first
    /// bytes are `prefix`, if a sound record for exactly that identity and
    /// prefix exists.
    pub(crate) fn digest_of(&self, identity: &FileIdentity, prefix: &[u8]) -> Option<Digested> {
        let path = self.digest_path(identity);
        let record = read_small_file(&path, RECORD_LEN).ok()?;
        if record.len() != RECORD_LEN {
            return None;
        }
        let (body, mac) = record.split_at(RECORD_LEN - MAC_LEN);
        if !self.key.verify(&[body], mac) {
            tracing::warn!(
                target: "warden::cache",
                path = %path.display(),
                "ignoring a digest record whose seal does not match"
            );
            return None;
        }
        let (tag, rest) = body.split_at(8);
        let (version, rest) = rest.split_at(4);
        let (recorded, rest) = rest.split_at(FileIdentity::LEN);
        let (sha256, rest) = rest.split_at(32);
        let (prefix_sha256, footprint) = rest.split_at(32);
        if tag != DIGEST_TAG
            || version != FORMAT_VERSION.to_le_bytes()
            || FileIdentity::from_bytes(recorded)? != *identity
        {
            return None;
        }
        if prefix_sha256 != Sha256::digest(prefix).as_slice() {
            tracing::warn!(
                target: "warden::cache",
                path = %path.display(),
                "ignoring a digest record: the file's first bytes changed though its identity \
                 did not"
            );
            return None;
        }
        Some(Digested::indexed(
            sha256.try_into().ok()?,
            identity.size(),
            Some(footprint_from_bytes(footprint)?),
        ))
    }

    /// Records the SHA-256, first bytes (`prefix`) and footprint of the
    /// file version `read` (whose bytes they were computed from), unless
    /// its identity was not settled when the read began. A record that
    /// cannot be written only costs the next load a hash.
    pub(crate) fn record_digest(
        &self,
        read: ReadVersion,
        sha256: &[u8; 32],
        prefix: &[u8],
        footprint: Footprint,
    ) {
        let identity = read.identity;
        if !identity.is_settled(read.started, self.racy_window) {
            return;
        }
        let mut record = Vec::with_capacity(RECORD_LEN);
        record.extend_from_slice(DIGEST_TAG);
        record.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        record.extend_from_slice(&identity.to_bytes());
        record.extend_from_slice(sha256);
        record.extend_from_slice(&Sha256::digest(prefix));
        for count in [
            footprint.core_instances,
            footprint.memories,
            footprint.tables,
        ] {
            record.extend_from_slice(&count.to_le_bytes());
        }
        let path = self.digest_path(&identity);
        self.write_sealed_record(DIGESTS_DIR, &path, record, "a component's digest");
    }

    /// Removes the record for the file with `identity`: bytes read from it
    /// did not match the digest it gave. A record that cannot be removed
    /// is still contradicted, and replaced, by the next read.
    pub(crate) fn forget_digest(&self, identity: &FileIdentity) {
        let path = self.digest_path(identity);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => tracing::warn!(
                target: "warden::cache",
                path = %path.display(),
                "cannot remove a wrong digest record: {err}"
            ),
        }
    }

    /// [`CompileCache::digest_path`], for tests outside the cache.
    #[cfg(test)]
    pub(crate) fn digest_path_for_tests(&self, identity: &FileIdentity) -> PathBuf {
        self.digest_path(identity)
    }

    pub(super) fn digest_path(&self, identity: &FileIdentity) -> PathBuf {
        self.dir.join(DIGESTS_DIR).join(identity.file_key())
    }
}

fn footprint_from_bytes(bytes: &[u8]) -> Option<Footprint> {
    let count = |index: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            bytes.get(index * 4..index * 4 + 4)?.try_into().ok()?,
        ))
    };
    Some(Footprint {
        core_instances: count(0)?,
        memories: count(1)?,
        tables: count(2)?,
    })
}

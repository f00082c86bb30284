//! Verification outcomes: whether a public key's signature over a
//! component verified, sealed with the cache key, so that loading a signed
//! component whose signatures were verified before costs no hashing.
//!
//! An outcome is a pure function of what it names (the component's
//! SHA-256, the SHA-256 of the detached signature or that the embedded one
//! was used, the public key with its key id, and the checker's version,
//! [`CHECKER`]), so it holds whatever the
//! trust store says later: the trust policy is applied afresh to the
//! outcomes on every load. A record is `verified/HASH`, named after the
//! SHA-256 of those inputs; it is believed only when its MAC holds and it
//! names exactly those inputs.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::{CompileCache, FORMAT_VERSION, MAC_LEN, read_small_file};

/// Tags a verification record, so that no other sealed record passes for one.
const VERIFIED_TAG: &[u8; 8] = b"WARDENV\x01";
/// The signature checker whose outcomes a record holds: the `wasmsign2`
/// version Warden is built with (a test checks it against `Cargo.lock`),
/// so that an upgrade, which may check differently, never reuses them.
pub(crate) const CHECKER: &str = "wasmsign2 0.2.8";
/// The cache's subdirectory of verification records.
pub(super) const VERIFIED_DIR: &str = "verified";
/// The largest record read: a public key and its id are well under this.
const MAX_RECORD_LEN: usize = 4096;
/// Outcome byte of a signature that verified.
const VALID: u8 = 1;
/// Outcome byte of a signature that did not verify with the key.
const INVALID: u8 = 0;

/// What one signature check depended on.
pub(crate) struct Verification<'a> {
    /// The component's SHA-256 (which covers an embedded signature).
    pub component_sha256: &'a [u8; 32],
    /// The SHA-256 of the detached signature checked, or `None` for the
    /// component's embedded one.
    pub detached_sha256: Option<[u8; 32]>,
    /// The public key, in wasmsign2's raw format.
    pub public_key: &'a [u8],
    /// The key id it was checked under (wasmsign2 matches it against the
    /// signature's).
    pub key_id: &'a str,
}

impl Verification<'_> {
    /// The record's body without the outcome: tag, version and inputs,
    /// each variable part preceded by its length.
    fn inputs(&self) -> Vec<u8> {
        let mut inputs = Vec::with_capacity(128);
        inputs.extend_from_slice(VERIFIED_TAG);
        inputs.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        inputs.extend_from_slice(&(CHECKER.len() as u32).to_le_bytes());
        inputs.extend_from_slice(CHECKER.as_bytes());
        inputs.extend_from_slice(self.component_sha256);
        match self.detached_sha256 {
            Some(sha256) => {
                inputs.push(1);
                inputs.extend_from_slice(&sha256);
            }
            None => inputs.push(0),
        }
        for part in [self.public_key, self.key_id.as_bytes()] {
            inputs.extend_from_slice(&(part.len() as u32).to_le_bytes());
            inputs.extend_from_slice(part);
        }
        inputs
    }
}

impl CompileCache {
    /// Whether the signature `verification` names verified, if a sound
    /// record of it exists.
    pub(crate) fn verified(&self, verification: &Verification<'_>) -> Option<bool> {
        let inputs = verification.inputs();
        let path = self.verified_path(&inputs);
        let record = read_small_file(&path, MAX_RECORD_LEN).ok()?;
        let (body, mac) = record.split_at_checked(record.len().checked_sub(MAC_LEN)?)?;
        if !self.key.verify(&[body], mac) {
            tracing::warn!(
                target: "warden::cache",
                path = %path.display(),
                "ignoring a verification record whose seal does not match"
            );
            return None;
        }
        let (recorded, outcome) = body.split_at_checked(inputs.len())?;
        if recorded != inputs.as_slice() {
            return None;
        }
        match outcome {
            [VALID] => Some(true),
            [INVALID] => Some(false),
            _ => None,
        }
    }

    /// Records whether the signature `verification` names verified. A
    /// record that cannot be written only costs the next load a check.
    pub(crate) fn record_verified(&self, verification: &Verification<'_>, valid: bool) {
        let mut record = verification.inputs();
        let path = self.verified_path(&record);
        record.push(if valid { VALID } else { INVALID });
        self.write_sealed_record(VERIFIED_DIR, &path, record, "a signature check");
    }

    fn verified_path(&self, inputs: &[u8]) -> PathBuf {
        self.dir
            .join(VERIFIED_DIR)
            .join(hex::encode(Sha256::digest(inputs)))
    }
}

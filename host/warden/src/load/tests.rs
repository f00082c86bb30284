//! The first stages as an attacker meets them: what the digest index and
//! the remembered signature checks let a load skip, and what they never
//! let through.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::read::{self, BinaryKind};
use super::verify::{self, Verified};
use crate::cache::CompileCache;
use crate::cache::tests::{edit_in_place, settle, settling_cache};
use crate::error::Error;
use crate::grants::Sandbox;
use crate::source::{Source, signature_path};
use crate::trust::{KeyFiles, PublicKey, SecretKey, TrustFailure, TrustPolicy, TrustStore, sign};

/// Two components of the same size.
const COMPONENT: &str = r#"(component (core module (func (export "f"))))"#;
const OTHER_COMPONENT: &str = r#"(component (core module (func (export "g"))))"#;

fn bytes_of(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).unwrap()
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Identifies and verifies the file at `path` as a load does, and records
/// its digest as the compile stage does after a read.
async fn load(
    path: &Path,
    cache: &CompileCache,
    sandbox: Sandbox,
) -> (Source, Result<Verified, Error>) {
    let source = Source::read(path).await.unwrap();
    let verified = verify::verify(source.clone(), BinaryKind::Component, sandbox, Some(cache));
    if let Some(identity) = source.read_identity() {
        let sha256 = read::digest(&source, Some(cache)).unwrap().sha256;
        cache.record_digest(identity, &sha256, Default::default());
    }
    (source, verified)
}

fn pinned(sha256: String) -> Sandbox {
    let mut sandbox = Sandbox::default();
    sandbox.trust.sha256 = Some(sha256);
    sandbox
}

fn failure(verified: Result<Verified, Error>) -> TrustFailure {
    match verified {
        Err(Error::Untrusted { failure, .. }) => failure,
        Err(other) => panic!("expected a refusal, got {other:?}"),
        Ok(_) => panic!("expected a refusal, it passed"),
    }
}

#[tokio::test]
async fn an_unchanged_file_is_neither_read_nor_hashed_and_an_edited_one_is() {
    let dir = tempfile::tempdir().unwrap();
    let cache = settling_cache(dir.path());
    let path = dir.path().join("plugin.wasm");
    let original = bytes_of(COMPONENT);
    std::fs::write(&path, &original).unwrap();
    settle();

    let (first, verified) = load(&path, &cache, pinned(hex_sha256(&original))).await;
    verified.unwrap();
    assert!(first.was_read(), "hashed the first time");

    let (second, verified) = load(&path, &cache, pinned(hex_sha256(&original))).await;
    assert_eq!(
        verified.unwrap().sha256,
        <[u8; 32]>::from(Sha256::digest(&original))
    );
    assert!(!second.was_read(), "the digest index knew this version");

    // Edited in place into another component of the same size, its
    // modification time put back: only the change time tells.
    let other = bytes_of(OTHER_COMPONENT);
    let offset = original
        .iter()
        .zip(&other)
        .position(|(a, b)| a != b)
        .unwrap();
    edit_in_place(&path, offset as u64, other[offset], true);
    assert_eq!(std::fs::read(&path).unwrap(), other);
    let (third, verified) = load(&path, &cache, pinned(hex_sha256(&original))).await;
    assert!(third.was_read(), "the edited file is hashed again");
    match failure(verified) {
        TrustFailure::HashMismatch { actual, .. } => {
            assert_eq!(actual, hex_sha256(&other), "the new bytes are judged")
        }
        other => panic!("expected a hash mismatch, got {other:?}"),
    }
    let (_, verified) = load(&path, &cache, pinned(hex_sha256(&other))).await;
    verified.unwrap();
}

#[tokio::test]
async fn a_signed_component_meets_the_current_trust_store_on_every_load() {
    let dir = tempfile::tempdir().unwrap();
    let cache = settling_cache(dir.path());
    let alice_files = KeyFiles::named(dir.path().join("alice"));
    let alice: PublicKey = alice_files.generate().unwrap();
    let alice_secret = SecretKey::from_file(&alice_files.secret).unwrap();
    let path = dir.path().join("plugin.wasm");
    let signed = sign(&bytes_of(COMPONENT), &alice_secret, false).unwrap();
    std::fs::write(&path, &signed).unwrap();
    settle();
    let mut store = TrustStore::default();
    store.add("alice", alice.clone()).unwrap();
    let trusting = || Sandbox {
        trust: TrustPolicy::trusted_only(store.clone()),
        ..Sandbox::default()
    };

    let (first, verified) = load(&path, &cache, trusting()).await;
    assert!(verified.unwrap().verdict.trusted);
    assert!(first.was_read());
    let (second, verified) = load(&path, &cache, trusting()).await;
    assert!(verified.unwrap().verdict.trusted);
    assert!(!second.was_read(), "the signature check was remembered");

    // Alice's key removed from the trust store: the remembered check is
    // still a valid signature, but no longer by a trusted key.
    let untrusting = Sandbox {
        trust: TrustPolicy::trusted_only(TrustStore::default()),
        ..Sandbox::default()
    };
    let (_, verified) = load(&path, &cache, untrusting).await;
    assert!(matches!(failure(verified), TrustFailure::UnknownSigner(_)));

    // A detached signature, then another one in its place that names
    // Alice's key but signs another component: checked afresh, refused.
    let detached_path = dir.path().join("detached.wasm");
    let unsigned = bytes_of(COMPONENT);
    std::fs::write(&detached_path, &unsigned).unwrap();
    let signature = sign(&unsigned, &alice_secret, true).unwrap();
    std::fs::write(signature_path(&detached_path), &signature).unwrap();
    settle();
    let (_, verified) = load(&detached_path, &cache, trusting()).await;
    assert!(verified.unwrap().verdict.trusted);
    let (again, verified) = load(&detached_path, &cache, trusting()).await;
    assert!(verified.unwrap().verdict.trusted);
    assert!(!again.was_read());
    let other_signature = sign(&bytes_of(OTHER_COMPONENT), &alice_secret, true).unwrap();
    std::fs::write(signature_path(&detached_path), &other_signature).unwrap();
    let (_, verified) = load(&detached_path, &cache, trusting()).await;
    assert!(matches!(failure(verified), TrustFailure::BadSignature(_)));
}

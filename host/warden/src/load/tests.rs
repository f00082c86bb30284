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
    if let Some(version) = source.read_version() {
        let sha256 = read::digest(&source, Some(cache)).unwrap().sha256;
        cache.record_digest(version, &sha256, source.prefix(), Default::default());
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

/// A file system that does not keep change times (or a stepped clock) can
/// leave a file's identity as it was while its bytes change: the digest
/// index's record then names the old bytes. The record also holds the
/// SHA-256 of the file's first bytes, which are read on every open, so a
/// changed prefix (where an embedded signature section is) is caught even
/// with the identity kept.
#[tokio::test]
async fn a_record_whose_prefix_differs_from_the_file_is_not_believed() {
    let dir = tempfile::tempdir().unwrap();
    let cache = settling_cache(dir.path());
    let path = dir.path().join("plugin.wasm");
    let original = bytes_of(COMPONENT);
    std::fs::write(&path, &original).unwrap();
    settle();
    let (_, verified) = load(&path, &cache, Sandbox::default()).await;
    verified.unwrap();
    let source = Source::read(&path).await.unwrap();
    let identity = source.opened_identity().expect("an identity that vouches");
    assert!(cache.digest_of(&identity, source.prefix()).is_some());
    // The same identity, other first bytes: what `touch -r` on such a file
    // system leaves after replacing the component with another one.
    let other = bytes_of(OTHER_COMPONENT);
    assert!(cache.digest_of(&identity, &other).is_none());
}

/// A record that is wrong about its file (written while the file system
/// lied about change times, say) is found out by the first load that reads
/// the bytes, removed, and that load judges (and a pinned hash checks) the
/// bytes it read instead of failing, or refusing the file, forever.
#[tokio::test]
async fn a_wrong_digest_record_is_removed_and_the_bytes_read_are_judged() {
    let dir = tempfile::tempdir().unwrap();
    let cache = settling_cache(dir.path());
    let path = dir.path().join("plugin.wasm");
    let actual = bytes_of(COMPONENT);
    std::fs::write(&path, &actual).unwrap();
    settle();
    let claimed: [u8; 32] = Sha256::digest(bytes_of(OTHER_COMPONENT)).into();
    let wrong_record = |source: &Source| {
        let identity = source.opened_identity().unwrap();
        let version = crate::cache::tests::read_now(identity);
        cache.record_digest(version, &claimed, source.prefix(), Default::default());
        cache.digest_path_for_tests(&identity)
    };

    // Pinned to the file's real hash: the index's claim is refused at
    // first, then the refusal is checked against the bytes.
    let source = Source::read(&path).await.unwrap();
    let record = wrong_record(&source);
    assert!(record.exists());
    let verified = super::repairing(
        source.clone(),
        pinned(hex_sha256(&actual)),
        |source, sandbox| async {
            verify::verify(source, BinaryKind::Component, sandbox, Some(&cache))
        },
    )
    .await
    .unwrap();
    assert_eq!(verified.sha256, <[u8; 32]>::from(Sha256::digest(&actual)));
    assert!(!record.exists(), "the wrong record is removed");

    // Not pinned: the trust check passes on the index's word; the bytes,
    // read to compile, contradict it; the load runs again on theirs.
    let source = Source::read(&path).await.unwrap();
    let record = wrong_record(&source);
    let compiled = super::repairing(
        source.clone(),
        Sandbox::default(),
        |source, sandbox| async {
            let verified = verify::verify(source, BinaryKind::Component, sandbox, Some(&cache))?;
            read::checked_bytes(&verified.source, Some(&cache))?;
            Ok::<_, Error>(verified.sha256)
        },
    )
    .await
    .unwrap();
    assert_eq!(compiled, <[u8; 32]>::from(Sha256::digest(&actual)));
    assert!(!record.exists());
    assert!(source.was_read());
}

/// The racy-time rule is judged at the time the bytes were read, not when
/// the digest is recorded: bytes read within the window of the file's last
/// change are never recorded, however long the load took afterwards.
#[tokio::test]
async fn a_digest_is_judged_settled_at_the_time_its_bytes_were_read() {
    let dir = tempfile::tempdir().unwrap();
    let cache = settling_cache(dir.path());
    let path = dir.path().join("plugin.wasm");
    let bytes = bytes_of(COMPONENT);
    std::fs::write(&path, &bytes).unwrap();
    let source = Source::read(&path).await.unwrap();
    source.bytes().unwrap();
    let version = source.read_version().unwrap();
    // Long after the window, the load records what it read back then.
    settle();
    let sha256: [u8; 32] = Sha256::digest(&bytes).into();
    cache.record_digest(version, &sha256, source.prefix(), Default::default());
    assert!(cache.digest_of(&version.identity, &bytes).is_none());
    // Read once settled, the same file is recorded.
    let settled = Source::read(&path).await.unwrap();
    settled.bytes().unwrap();
    let version = settled.read_version().unwrap();
    cache.record_digest(version, &sha256, settled.prefix(), Default::default());
    assert!(cache.digest_of(&version.identity, &bytes).is_some());
}

/// A file replaced or edited after it was opened is not read as if it
/// were the version that was opened: its bytes are an error, and so is
/// inspecting its signatures (an I/O error, not a bad signature).
#[tokio::test]
async fn a_file_changed_since_it_was_opened_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin.wasm");
    std::fs::write(&path, bytes_of(COMPONENT)).unwrap();
    let source = Source::read(&path).await.unwrap();
    // A timestamp tick later, so that the edit moves the change time.
    settle();
    edit_in_place(&path, 8, 0xff, true);
    let err = source.bytes().unwrap_err();
    assert!(
        matches!(&err, Error::Io { .. }) && err.to_string().contains("changed since it was opened"),
        "{err}"
    );
    let err = crate::trust::inspect_signatures(&source, &TrustPolicy::default()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(source.read_version().is_none());
}

/// Outcomes are recorded under the checker's version; the constant must
/// move with the `wasmsign2` the build locks.
#[test]
fn the_recorded_checker_is_the_locked_wasmsign2() {
    let lock =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock")).unwrap();
    let (_, after) = lock
        .split_once("name = \"wasmsign2\"\nversion = \"")
        .unwrap();
    let version = &after[..after.find('"').unwrap()];
    assert_eq!(
        crate::cache::verified::CHECKER,
        format!("wasmsign2 {version}")
    );
}

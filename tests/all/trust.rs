//! Signed plugins: signing, the trust store, the three policy tiers, and
//! every way a signature can fail.

use std::sync::Arc;

use warden::trust::{
    self, KeyFiles, PublicKey, SecretKey, SignatureStatus, SignerPolicy, TrustFailure, TrustStore,
    UnsignedPolicy,
};
use warden::{Error, ErrorKind, Plugin, Sandbox, Source, TrustPolicy};
use warden_tests::{guest_bytes, guests};

use crate::runtime;

/// A key pair written to a temporary directory.
struct Signer {
    _dir: tempfile::TempDir,
    secret: SecretKey,
    public: PublicKey,
}

impl Signer {
    fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let files = KeyFiles::named(dir.path().join(name));
        let public = files.generate().unwrap();
        let secret = SecretKey::from_file(&files.secret).unwrap();
        assert_eq!(secret.public_key(), public);
        assert_eq!(PublicKey::from_file(&files.public).unwrap(), public);
        Signer {
            _dir: dir,
            secret,
            public,
        }
    }

    fn sign(&self, bytes: &[u8]) -> Vec<u8> {
        trust::sign(bytes, &self.secret, false).unwrap()
    }
}

fn store(trusted: &[(&str, &Signer)]) -> TrustStore {
    let mut store = TrustStore::default();
    for (name, signer) in trusted {
        store.add(name, signer.public.clone()).unwrap();
    }
    store
}

fn policy(unsigned: UnsignedPolicy, signed_by: SignerPolicy, store: TrustStore) -> Sandbox {
    let mut sandbox = Sandbox::default();
    sandbox.trust = TrustPolicy::development();
    sandbox.trust.unsigned = unsigned;
    sandbox.trust.signed_by = signed_by;
    sandbox.trust.trusted = Arc::new(store);
    sandbox
}

/// The strictest tier: only `store`'s keys count.
fn only_trusted(store: TrustStore) -> Sandbox {
    let mut sandbox = Sandbox::default();
    sandbox.trust = TrustPolicy::trusted_only(store);
    sandbox
}

async fn load(source: Source, sandbox: Sandbox) -> Result<Plugin, Error> {
    runtime().load(source, sandbox).await
}

/// A runtime whose compile cache and cache key live in `dir`, not in the
/// user's home.
fn isolated_runtime(dir: &tempfile::TempDir) -> warden::Runtime {
    warden::Runtime::builder()
        .compile_cache(dir.path().join("cache"))
        .compile_cache_key(dir.path().join("data/cache.key"))
        .build()
        .unwrap()
}

fn failure(result: Result<Plugin, Error>) -> TrustFailure {
    match result {
        Err(Error::Untrusted { failure, .. }) => failure,
        Err(other) => panic!("expected a trust failure, got {other:?}"),
        Ok(_) => panic!("expected a trust failure, but the plugin loaded"),
    }
}

fn hello() -> Vec<u8> {
    guest_bytes(guests::HELLO)
}

#[tokio::test]
async fn a_plugin_signed_by_a_trusted_key_loads_and_runs() {
    let alice = Signer::new("alice");
    let signed = alice.sign(&hello());
    let sandbox = only_trusted(store(&[("alice", &alice)]));
    let plugin = load(Source::new("hello", signed), sandbox).await.unwrap();
    let verdict = &plugin.info().trust;
    assert!(verdict.trusted && !verdict.unverified);
    assert_eq!(verdict.signatures.len(), 1);
    assert_eq!(verdict.signatures[0].status, SignatureStatus::Valid);
    assert_eq!(verdict.signatures[0].trusted_as.as_deref(), Some("alice"));
    assert_eq!(
        verdict.signatures[0].key_id.as_deref(),
        Some(alice.public.key_id().as_str())
    );
    let output = plugin
        .execute("count-vowels", b"signed")
        .await
        .result
        .unwrap();
    assert_eq!(output, b"2");
}

/// A world 0.2 plugin goes through the same trust check as a 0.1 one: signed
/// by a trusted key it loads, runs and streams; unsigned it is refused
/// under a policy that denies unsigned plugins, before it is compiled.
#[tokio::test]
async fn a_0_2_plugin_is_checked_like_any_other() {
    let alice = Signer::new("alice");
    let unsigned = guest_bytes(guests::HELLO_V2);
    let signed = alice.sign(&unsigned);
    let plugin = load(
        Source::new("hello", signed),
        only_trusted(store(&[("alice", &alice)])),
    )
    .await
    .unwrap();
    assert_eq!(plugin.world_version(), warden::WorldVersion::V0_2);
    let verdict = &plugin.info().trust;
    assert!(verdict.trusted && !verdict.unverified);
    assert_eq!(verdict.signatures[0].trusted_as.as_deref(), Some("alice"));
    let output = plugin.execute("count-vowels", b"signed").await.result;
    assert_eq!(output.unwrap(), b"2");
    let (mut output, outcome) = plugin.execute_stream("upper", &b"signed"[..]);
    let mut upper = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut output, &mut upper)
        .await
        .unwrap();
    outcome.await.result.unwrap();
    assert_eq!(upper, b"SIGNED");

    let refused = load(
        Source::new("hello", unsigned.clone()),
        only_trusted(store(&[("alice", &alice)])),
    )
    .await;
    assert_eq!(failure(refused), TrustFailure::Unsigned);
    let refused = load(
        Source::new("hello", unsigned),
        policy(
            UnsignedPolicy::Deny,
            SignerPolicy::Any,
            TrustStore::default(),
        ),
    )
    .await;
    assert_eq!(failure(refused), TrustFailure::Unsigned);
}

#[tokio::test]
async fn the_three_tiers() {
    let alice = Signer::new("alice");
    let mallory = Signer::new("mallory");
    let unsigned = hello();
    let by_alice = alice.sign(&unsigned);
    let by_mallory = mallory.sign(&unsigned);
    let trusted = || store(&[("alice", &alice)]);

    // Development: anything loads, unsigned or signed by a stranger.
    for bytes in [&unsigned, &by_alice, &by_mallory] {
        let sandbox = policy(UnsignedPolicy::Allow, SignerPolicy::Any, trusted());
        load(Source::new("hello", bytes.clone()), sandbox)
            .await
            .unwrap();
    }

    // Any valid signature by a key Warden knows, trusted or not.
    let mut any = policy(UnsignedPolicy::Deny, SignerPolicy::Any, trusted());
    any.trust.known_keys.push(mallory.public.clone());
    load(Source::new("hello", by_alice.clone()), any.clone())
        .await
        .unwrap();
    let plugin = load(Source::new("hello", by_mallory.clone()), any.clone())
        .await
        .unwrap();
    assert!(!plugin.info().trust.trusted);
    assert_eq!(
        failure(load(Source::new("hello", unsigned.clone()), any).await),
        TrustFailure::Unsigned
    );

    // Trusted keys only: a known but untrusted signer is named and refused.
    let mut only_trusted = policy(UnsignedPolicy::Deny, SignerPolicy::Trusted, trusted());
    only_trusted.trust.known_keys.push(mallory.public.clone());
    load(Source::new("hello", by_alice), only_trusted.clone())
        .await
        .unwrap();
    let refused = failure(load(Source::new("hello", by_mallory.clone()), only_trusted).await);
    assert_eq!(
        refused,
        TrustFailure::UntrustedSigner(vec![mallory.public.key_id()])
    );
    assert!(refused.to_string().contains(&mallory.public.key_id()));

    // A stranger Warden has no key for is named by its key id.
    let strict = policy(UnsignedPolicy::Deny, SignerPolicy::Trusted, trusted());
    let refused = failure(load(Source::new("hello", by_mallory), strict).await);
    assert_eq!(
        refused,
        TrustFailure::UnknownSigner(vec![mallory.public.key_id()])
    );
}

#[tokio::test]
async fn unsigned_plugins_follow_the_unsigned_policy() {
    for (unsigned, loads) in [
        (UnsignedPolicy::Allow, true),
        (UnsignedPolicy::Warn, true),
        (UnsignedPolicy::Deny, false),
    ] {
        let sandbox = policy(unsigned, SignerPolicy::Any, TrustStore::default());
        let result = load(Source::new("hello", hello()), sandbox).await;
        assert_eq!(result.is_ok(), loads, "{unsigned:?}");
        if let Ok(plugin) = result {
            assert!(plugin.info().trust.unverified);
            assert!(plugin.info().trust.signatures.is_empty());
        } else {
            assert_eq!(failure(result), TrustFailure::Unsigned);
        }
    }
}

#[tokio::test]
async fn a_tampered_byte_anywhere_is_refused() {
    let alice = Signer::new("alice");
    let signed = alice.sign(&hello());
    let signature_end = 8 + section_len(&signed[8..]);
    // Every byte of the signature section, and a spread of bytes through
    // code, data and custom sections to the very last one.
    let mut positions: Vec<usize> = (8..signature_end).collect();
    let step = (signed.len() - signature_end) / 48;
    positions.extend((signature_end..signed.len()).step_by(step.max(1)));
    positions.push(signed.len() - 1);
    for position in positions {
        let mut tampered = signed.clone();
        tampered[position] ^= 0x01;
        let sandbox = only_trusted(store(&[("alice", &alice)]));
        let err = load(Source::new("hello", tampered), sandbox)
            .await
            .err()
            .unwrap_or_else(|| panic!("a flipped byte at {position} was accepted"));
        assert_eq!(err.kind(), ErrorKind::Untrusted, "byte {position}: {err}");
    }
}

#[tokio::test]
async fn a_bad_signature_is_refused_even_in_development() {
    let alice = Signer::new("alice");
    let mut signed = alice.sign(&hello());
    let last = signed.len() - 1;
    signed[last] ^= 0x01;
    let sandbox = policy(
        UnsignedPolicy::Allow,
        SignerPolicy::Any,
        store(&[("alice", &alice)]),
    );
    match failure(load(Source::new("hello", signed), sandbox).await) {
        TrustFailure::BadSignature(detail) => {
            assert!(detail.contains("changed after signing"), "{detail}");
            assert!(detail.contains(&alice.public.key_id()), "{detail}");
        }
        other => panic!("expected a bad signature, got {other:?}"),
    }
}

#[tokio::test]
async fn stripping_the_signature_leaves_an_unsigned_plugin() {
    let alice = Signer::new("alice");
    let original = hello();
    let signed = alice.sign(&original);
    let stripped = strip_signature(&signed);
    assert_eq!(stripped, original);
    let sandbox = only_trusted(store(&[("alice", &alice)]));
    let refused = failure(load(Source::new("hello", stripped), sandbox).await);
    assert_eq!(refused, TrustFailure::Unsigned);
}

#[tokio::test]
async fn signatures_accumulate_and_any_trusted_one_counts() {
    let alice = Signer::new("alice");
    let bob = Signer::new("bob");
    let twice = bob.sign(&alice.sign(&hello()));
    let sandbox = only_trusted(store(&[("bob", &bob)]));
    let plugin = load(Source::new("hello", twice.clone()), sandbox)
        .await
        .unwrap();
    let signatures = &plugin.info().trust.signatures;
    assert_eq!(signatures.len(), 2);
    assert!(
        signatures
            .iter()
            .any(|s| s.trusted_as.as_deref() == Some("bob"))
    );
    assert!(
        signatures
            .iter()
            .any(|s| s.status == SignatureStatus::UnknownKey)
    );

    let err = trust::sign(&twice, &alice.secret, false).unwrap_err();
    assert!(
        err.to_string().contains("already signed by this key"),
        "{err}"
    );
}

#[tokio::test]
async fn detached_signatures_work_like_embedded_ones() {
    let alice = Signer::new("alice");
    let original = hello();
    let signature = trust::sign(&original, &alice.secret, true).unwrap();
    let trusted = || only_trusted(store(&[("alice", &alice)]));
    let source = Source::new("hello", original.clone()).with_detached_signature(signature.clone());
    let plugin = load(source, trusted()).await.unwrap();
    assert!(plugin.info().trust.trusted);
    let refused = failure(load(Source::new("hello", original.clone()), trusted()).await);
    assert_eq!(refused, TrustFailure::Unsigned);

    let mut tampered = original;
    tampered[100] ^= 0x01;
    let source = Source::new("hello", tampered).with_detached_signature(signature);
    assert!(matches!(
        failure(load(source, trusted()).await),
        TrustFailure::BadSignature(_)
    ));
}

#[tokio::test]
async fn a_pinned_hash_must_match() {
    let bytes = hello();
    let development = policy(
        UnsignedPolicy::Allow,
        SignerPolicy::Any,
        TrustStore::default(),
    );
    let plugin = load(Source::new("hello", bytes.clone()), development.clone())
        .await
        .unwrap();
    let actual = plugin.info().sha256.clone();
    let mut pinned = development;
    pinned.trust.sha256 = Some(actual.to_uppercase());
    load(Source::new("hello", bytes.clone()), pinned.clone())
        .await
        .unwrap();
    pinned.trust.sha256 = Some("0".repeat(64));
    match failure(load(Source::new("hello", bytes), pinned).await) {
        TrustFailure::HashMismatch {
            expected,
            actual: found,
        } => {
            assert_eq!(expected, "0".repeat(64));
            assert_eq!(found, actual);
        }
        other => panic!("expected a hash mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn programs_are_checked_too() {
    let alice = Signer::new("alice");
    let sandbox = || only_trusted(store(&[("alice", &alice)]));
    let unsigned = guest_bytes(guests::COMMAND_PREVIEW1);
    let err = runtime()
        .load_program(Source::new("command", unsigned.clone()), sandbox())
        .await
        .err()
        .expect("refused");
    assert_eq!(err.kind(), ErrorKind::Untrusted);
    let signed = alice.sign(&unsigned);
    runtime()
        .load_program(Source::new("command", signed), sandbox())
        .await
        .expect("a signed preview 1 module is checked before it is adapted");
}

#[test]
fn key_files_are_private_refuse_overwrites_and_reject_garbage() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let files = KeyFiles::named(dir.path().join("carol"));
    files.generate().unwrap();
    let mode = std::fs::metadata(&files.secret)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let err = files.generate().unwrap_err();
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");

    std::fs::set_permissions(&files.secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = SecretKey::from_file(&files.secret).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");

    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, b"not a key").unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = SecretKey::from_file(&garbage).unwrap_err();
    assert!(
        err.to_string().contains("not an Ed25519 secret key"),
        "{err}"
    );
    let err = PublicKey::from_file(&garbage).unwrap_err();
    assert!(
        err.to_string().contains("not an Ed25519 public key"),
        "{err}"
    );
}

#[test]
fn the_trust_store_round_trips_and_refuses_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/trust.toml");
    let alice = Signer::new("alice");
    let bob = Signer::new("bob");
    let mut trusted = TrustStore::open(&path).unwrap();
    assert!(trusted.is_empty(), "a missing store is empty");
    trusted.add("alice", alice.public.clone()).unwrap();
    trusted.add("bob smith", bob.public.clone()).unwrap();
    assert!(trusted.add("alice", bob.public.clone()).is_err());
    let err = trusted.add("alias", alice.public.clone()).unwrap_err();
    assert!(
        err.to_string().contains("already trusted as `alice`"),
        "{err}"
    );
    let err = trusted.save(&path).unwrap_err();
    assert!(
        err.to_string().contains("there is no directory") && err.to_string().contains("nested"),
        "a mistyped directory is named, not created: {err}"
    );
    assert!(!path.parent().unwrap().exists());
    std::fs::create_dir(path.parent().unwrap()).unwrap();
    trusted.save(&path).unwrap();

    let mut reopened = TrustStore::open(&path).unwrap();
    assert_eq!(reopened, trusted);
    assert_eq!(reopened.name_of(&bob.public), Some("bob smith"));
    reopened.remove("alice").unwrap();
    assert!(reopened.remove("alice").is_err());

    std::fs::write(&path, "[keys]\nbroken = \"zz\"\n").unwrap();
    let err = TrustStore::open(&path).unwrap_err();
    assert!(err.to_string().contains("key `broken` is not hex"), "{err}");
}

/// The length of the first section of a component body, header included.
fn section_len(body: &[u8]) -> usize {
    let (size, leb_len) = leb128(&body[1..]);
    1 + leb_len + size
}

fn leb128(bytes: &[u8]) -> (usize, usize) {
    let mut value = 0usize;
    for (index, byte) in bytes.iter().enumerate() {
        value |= usize::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return (value, index + 1);
        }
    }
    panic!("unterminated LEB128");
}

/// Removes the leading `signature` custom section.
fn strip_signature(signed: &[u8]) -> Vec<u8> {
    let end = 8 + section_len(&signed[8..]);
    [&signed[..8], &signed[end..]].concat()
}

/// What loading one kind of plugin under a policy must come to.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Loads, signed by a trusted key.
    Trusted,
    /// Loads, verified by a known key that is not trusted.
    Verified,
    /// Loads without a verified signature.
    Unverified,
    /// Refused with this failure.
    Refused(TrustFailure),
}

#[tokio::test]
async fn signed_by_trusted_admits_only_trusted_signers_whatever_unsigned_says() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = isolated_runtime(&dir);
    let alice = Signer::new("alice");
    let bob = Signer::new("bob");
    let mallory = Signer::new("mallory");
    let unsigned = hello();
    let plugins = [
        ("unsigned", unsigned.clone()),
        // Mallory's key is nowhere: a stranger.
        ("stranger-signed", mallory.sign(&unsigned)),
        // Bob's key is given as a known key, but not trusted.
        ("known-untrusted-signed", bob.sign(&unsigned)),
        ("trusted-signed", alice.sign(&unsigned)),
    ];
    let refused = Verdict::Refused;
    let only_trusted = [
        refused(TrustFailure::Unsigned),
        refused(TrustFailure::UnknownSigner(vec![mallory.public.key_id()])),
        refused(TrustFailure::UntrustedSigner(vec![bob.public.key_id()])),
        Verdict::Trusted,
    ];
    let any_signer = [
        refused(TrustFailure::Unsigned),
        refused(TrustFailure::UnknownSigner(vec![mallory.public.key_id()])),
        Verdict::Verified,
        Verdict::Trusted,
    ];
    let anything = [
        Verdict::Unverified,
        Verdict::Unverified,
        Verdict::Verified,
        Verdict::Trusted,
    ];
    let table = [
        (SignerPolicy::Trusted, UnsignedPolicy::Allow, &only_trusted),
        (SignerPolicy::Trusted, UnsignedPolicy::Warn, &only_trusted),
        (SignerPolicy::Trusted, UnsignedPolicy::Deny, &only_trusted),
        (SignerPolicy::Any, UnsignedPolicy::Deny, &any_signer),
        (SignerPolicy::Any, UnsignedPolicy::Warn, &anything),
        (SignerPolicy::Any, UnsignedPolicy::Allow, &anything),
    ];
    for (signed_by, unsigned, expected) in table {
        for ((kind, bytes), expected) in plugins.iter().zip(expected.iter()) {
            let mut sandbox = policy(unsigned, signed_by, store(&[("alice", &alice)]));
            sandbox.trust.known_keys.push(bob.public.clone());
            let verdict = match runtime
                .load(Source::new("hello", bytes.clone()), sandbox)
                .await
            {
                Ok(plugin) => {
                    let trust = &plugin.info().trust;
                    let output = plugin.execute("count-vowels", b"hello").await.result;
                    assert_eq!(output.unwrap(), b"2", "{kind}: a loaded plugin runs");
                    match (trust.trusted, trust.unverified) {
                        (true, false) => Verdict::Trusted,
                        (false, false) => Verdict::Verified,
                        (false, true) => Verdict::Unverified,
                        (true, true) => panic!("{kind}: trusted yet unverified"),
                    }
                }
                Err(err) => {
                    let message = err.to_string();
                    let Error::Untrusted { failure, .. } = err else {
                        panic!("{kind}: expected a trust failure, got {message}");
                    };
                    if let TrustFailure::UnknownSigner(keys) | TrustFailure::UntrustedSigner(keys) =
                        &failure
                    {
                        for key in keys {
                            assert!(message.contains(key.as_str()), "{kind}: {message}");
                        }
                    }
                    Verdict::Refused(failure)
                }
            };
            assert_eq!(
                &verdict, expected,
                "signed_by {signed_by:?}, unsigned {unsigned:?}, {kind}"
            );
        }
    }
}

#[tokio::test]
async fn a_damaged_trust_store_fails_only_the_policies_that_depend_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = isolated_runtime(&dir);
    let path = dir.path().join("trust.toml");
    // What earlier versions wrote for a key named `bob\u{ad}`.
    std::fs::write(&path, "[keys]\n\"bob\\u{ad}\" = \"00\"\n").unwrap();
    let damaged = || TrustStore::open_or_damaged(&path);
    assert!(damaged().damage().is_some());
    for (unsigned, signed_by) in [
        (UnsignedPolicy::Allow, SignerPolicy::Any),
        (UnsignedPolicy::Warn, SignerPolicy::Any),
    ] {
        let plugin = runtime
            .load(
                Source::new("hello", hello()),
                policy(unsigned, signed_by, damaged()),
            )
            .await
            .expect("the development tier does not depend on the store");
        assert!(plugin.info().trust.unverified);
    }
    for (unsigned, signed_by) in [
        (UnsignedPolicy::Deny, SignerPolicy::Any),
        (UnsignedPolicy::Allow, SignerPolicy::Trusted),
        (UnsignedPolicy::Deny, SignerPolicy::Trusted),
    ] {
        let err = runtime
            .load(
                Source::new("hello", hello()),
                policy(unsigned, signed_by, damaged()),
            )
            .await
            .err()
            .expect("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
        let message = err.to_string();
        assert!(message.contains(path.to_str().unwrap()), "{message}");
        assert!(message.contains("repair or remove it"), "{message}");
    }
}

/// The compile cache's entry for a component, found by its hash: the file
/// of its compiled code (its seal is beside it, [`seal_of`]).
fn cache_entry(cache: &std::path::Path, sha256: &str) -> std::path::PathBuf {
    std::fs::read_dir(cache)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            path.extension()
                .is_some_and(|extension| extension == "cwasm")
                && path
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with(sha256)
        })
        .unwrap_or_else(|| panic!("no cache entry for {sha256}"))
}

/// The seal beside a cache entry's compiled code.
fn seal_of(entry: &std::path::Path) -> std::path::PathBuf {
    entry.with_extension("seal")
}

/// A seal for `artifact` claiming it was compiled from the component
/// `sha256`: `version` 1 with an unkeyed XXH3-128 checksum (how entries
/// were sealed before the cache had a key), or a later version sealed with
/// HMAC-SHA256 under `key`, a key the attacker made up.
fn forge_seal(version: u32, engine: &[u8], sha256: &[u8], artifact: &[u8], key: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut seal = b"WARDENC\x01".to_vec();
    seal.extend_from_slice(&version.to_le_bytes());
    seal.extend_from_slice(engine);
    seal.extend_from_slice(sha256);
    seal.extend_from_slice(&(artifact.len() as u64).to_le_bytes());
    if version == 1 {
        seal.extend_from_slice(&xxhash_rust::xxh3::xxh3_128(artifact).to_le_bytes());
    } else {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(&seal);
        mac.update(artifact);
        seal.extend_from_slice(&mac.finalize().into_bytes());
    }
    seal
}

#[tokio::test]
async fn a_forged_cache_entry_never_runs_as_a_signed_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let runtime = isolated_runtime(&dir);
    let alice = Signer::new("alice");
    let signed = alice.sign(&hello());
    let trusted = || only_trusted(store(&[("alice", &alice)]));
    let load_signed = || runtime.load(Source::new("hello", signed.clone()), trusted());
    let victim = load_signed().await.unwrap();
    let victim_sha = victim.info().sha256.clone();
    drop(victim);

    // The attacker writes the cache directory: they compile their own
    // plugin into it (any plugin loads under the development tier) and
    // pass its native code off as the signed plugin's.
    let hostile = runtime
        .load(
            Source::new("hostile", guest_bytes(guests::HOSTILE)),
            policy(
                UnsignedPolicy::Allow,
                SignerPolicy::Any,
                TrustStore::default(),
            ),
        )
        .await
        .unwrap();
    let hostile_entry = cache_entry(&cache, &hostile.info().sha256);
    let artifact = std::fs::read(&hostile_entry).unwrap();
    let hostile_seal = std::fs::read(seal_of(&hostile_entry)).unwrap();
    drop(hostile);
    let version = u32::from_le_bytes(hostile_seal[8..12].try_into().unwrap());
    let engine = &hostile_seal[12..20];
    let victim_hash = hex_decode(&victim_sha);
    let forgeries = [
        ("copied as is", hostile_seal.clone()),
        (
            "re-sealed with an unkeyed checksum",
            forge_seal(1, engine, &victim_hash, &artifact, &[]),
        ),
        (
            "sealed with the attacker's own key",
            forge_seal(version, engine, &victim_hash, &artifact, &[7; 32]),
        ),
    ];
    let victim_entry = cache_entry(&cache, &victim_sha);
    for (forgery, seal) in forgeries {
        std::fs::write(&victim_entry, &artifact).unwrap();
        std::fs::write(seal_of(&victim_entry), seal).unwrap();
        let plugin = load_signed().await.unwrap();
        assert!(!plugin.info().cached, "{forgery}: recompiled, not loaded");
        let output = plugin.execute("count-vowels", b"hello world").await;
        assert_eq!(
            output.result.unwrap(),
            b"3",
            "{forgery}: the signed code runs"
        );
        drop(plugin);
        let plugin = load_signed().await.unwrap();
        assert!(plugin.info().cached, "{forgery}: replaced by a sound entry");
        drop(plugin);
        assert_eq!(runtime.instances_in_use(), 0);
    }
}

/// Every file in the compile cache directory and its subdirectories, with
/// its contents.
fn cache_contents(
    cache: &std::path::Path,
) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut contents = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(cache).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            contents.extend(cache_contents(&path));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            contents.insert(path, bytes);
        }
    }
    contents
}

#[tokio::test]
async fn a_refused_plugin_is_never_looked_up_in_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let runtime = isolated_runtime(&dir);
    let alice = Signer::new("alice");
    let mallory = Signer::new("mallory");
    let anything = || {
        policy(
            UnsignedPolicy::Allow,
            SignerPolicy::Any,
            TrustStore::default(),
        )
    };
    let cases = [
        (
            "unsigned under unsigned = deny",
            hello(),
            policy(
                UnsignedPolicy::Deny,
                SignerPolicy::Any,
                TrustStore::default(),
            ),
            TrustFailure::Unsigned,
        ),
        (
            "signed by a stranger under signed_by = trusted",
            mallory.sign(&hello()),
            only_trusted(store(&[("alice", &alice)])),
            TrustFailure::UnknownSigner(vec![mallory.public.key_id()]),
        ),
    ];
    for (case, bytes, refusing, expected) in cases {
        let source = || Source::new("hello", bytes.clone());
        let plugin = runtime.load(source(), anything()).await.unwrap();
        let entry = cache_entry(&cache, &plugin.info().sha256);
        drop(plugin);
        // A lookup of this entry would find it damaged, recompile the
        // plugin and replace the entry, so any lookup leaves a trace.
        let planted = b"WARDENC\x01 not a sound entry".to_vec();
        std::fs::write(&entry, &planted).unwrap();
        let before = cache_contents(&cache);

        let result = runtime.load(source(), refusing).await;
        assert_eq!(failure(result), expected, "{case}");
        assert_eq!(
            cache_contents(&cache),
            before,
            "{case}: the cache was neither read nor written"
        );

        // The control: a policy that admits the plugin does look the entry
        // up, and so finds and replaces the planted one.
        let plugin = runtime.load(source(), anything()).await.unwrap();
        assert!(!plugin.info().cached, "{case}: the planted entry was read");
        assert_ne!(std::fs::read(&entry).unwrap(), planted, "{case}: replaced");
    }
}

fn hex_decode(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(&text[index..index + 2], 16).unwrap())
        .collect()
}

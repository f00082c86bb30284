use std::os::unix::fs::PermissionsExt;

use super::*;

/// A small component: compiles in milliseconds.
const COMPONENT: &str = r#"(component (core module (func (export "f"))))"#;
/// Another one, whose entry an attacker tries to pass off as the first's.
const OTHER_COMPONENT: &str = r#"(component (core module (func (export "g"))))"#;

struct Setup {
    dir: tempfile::TempDir,
    cache: CompileCache,
    engine: Engine,
    bytes: Vec<u8>,
    sha256: [u8; 32],
}

fn sha256_of(bytes: &[u8]) -> [u8; 32] {
    sha2::Digest::finalize(<Sha256 as sha2::Digest>::new_with_prefix(bytes)).into()
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir, "compiled", "data/cache.key");
    let bytes = wat::parse_str(COMPONENT).unwrap();
    let sha256 = sha256_of(&bytes);
    Setup {
        dir,
        cache,
        engine: Engine::default(),
        bytes,
        sha256,
    }
}

fn open(dir: &tempfile::TempDir, cache: &str, key: &str) -> CompileCache {
    CompileCache::open(dir.path().join(cache), &dir.path().join(key)).unwrap()
}

fn open_err(dir: PathBuf, key: &Path) -> (bool, String) {
    match CompileCache::open(dir, key) {
        Ok(_) => panic!("the cache was opened"),
        Err(OpenFailure::Unsafe(err)) => (true, err.to_string()),
        Err(OpenFailure::Unavailable(err)) => (false, err.to_string()),
    }
}

/// Which file of an entry a test damages.
#[derive(Clone, Copy, Debug)]
enum Part {
    Artifact,
    Seal,
}

fn rejection_of(cache: &CompileCache, engine: &Engine, sha256: &[u8; 32]) -> Rejection {
    let path = cache.entry_path(sha256, engine_hash(engine));
    match cache.check_entry(&path, engine_hash(engine), sha256) {
        Ok(_) => panic!("the entry was accepted"),
        Err(rejection) => rejection,
    }
}

fn compile(cache: &CompileCache, engine: &Engine, sha256: &[u8; 32], bytes: &[u8]) -> bool {
    let (_, cached) = cache.get_or_compile(engine, sha256, || Ok(bytes)).unwrap();
    cached
}

impl Setup {
    fn entry(&self) -> PathBuf {
        self.cache
            .entry_path(&self.sha256, engine_hash(&self.engine))
    }

    fn seal(&self) -> PathBuf {
        self.entry().with_extension(SEAL_EXTENSION)
    }

    fn part(&self, part: Part) -> PathBuf {
        match part {
            Part::Artifact => self.entry(),
            Part::Seal => self.seal(),
        }
    }

    fn rejection(&self) -> Rejection {
        rejection_of(&self.cache, &self.engine, &self.sha256)
    }

    fn cached(&self) -> bool {
        compile(&self.cache, &self.engine, &self.sha256, &self.bytes)
    }

    /// Asserts the entry is refused for `expected`, recompiled, and
    /// then replaced by a sound one.
    fn assert_refused_then_replaced(&self, expected: Rejection) {
        assert_eq!(self.rejection(), expected);
        assert!(!self.cached(), "{expected:?}: recompiled, not loaded");
        assert!(self.cached(), "{expected:?}: replaced by a sound entry");
    }
}

#[test]
fn the_second_load_comes_from_the_cache() {
    let setup = setup();
    assert!(!setup.cached());
    assert!(setup.cached());
}

#[test]
fn the_directory_entries_and_key_are_private() {
    let setup = setup();
    setup.cached();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&setup.cache.dir), 0o700);
    assert_eq!(mode(&setup.entry()), 0o600);
    assert_eq!(mode(&setup.seal()), 0o600);
    let key = setup.dir.path().join("data/cache.key");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(std::fs::read(&key).unwrap().len(), KEY_LEN);
    assert_eq!(mode(key.parent().unwrap()), 0o700);
}

#[test]
fn damaged_entries_are_detected_and_replaced() {
    type Damage = fn(&mut Vec<u8>);
    let damages: [(Rejection, Part, Damage); 6] = [
        (Rejection::Truncated, Part::Artifact, |entry| {
            entry.truncate(entry.len() / 2)
        }),
        (Rejection::Truncated, Part::Seal, |entry| entry.truncate(10)),
        (Rejection::Tampered, Part::Artifact, |entry| {
            let last = entry.len() - 1;
            entry[last] ^= 0xff;
        }),
        (Rejection::Tampered, Part::Seal, |entry| {
            entry[SEAL_LEN - 1] ^= 0x01
        }),
        (Rejection::Foreign, Part::Seal, |entry| {
            entry[0..8].copy_from_slice(b"NOTWARDN")
        }),
        (Rejection::OtherEngine, Part::Seal, |entry| {
            entry[12] ^= 0x01
        }),
    ];
    for (expected, part, damage) in damages {
        let setup = setup();
        setup.cached();
        let mut damaged = std::fs::read(setup.part(part)).unwrap();
        damage(&mut damaged);
        std::fs::write(setup.part(part), &damaged).unwrap();
        setup.assert_refused_then_replaced(expected);
    }
}

#[test]
fn an_entry_copied_from_another_component_is_refused() {
    let setup = setup();
    let other = wat::parse_str(OTHER_COMPONENT).unwrap();
    let other_sha = sha256_of(&other);
    compile(&setup.cache, &setup.engine, &other_sha, &other);
    let other_entry = setup
        .cache
        .entry_path(&other_sha, engine_hash(&setup.engine));
    let other_seal = other_entry.with_extension(SEAL_EXTENSION);
    std::fs::copy(&other_entry, setup.entry()).unwrap();
    std::fs::copy(&other_seal, setup.seal()).unwrap();
    setup.assert_refused_then_replaced(Rejection::Swapped);

    // Claiming the victim's hash in the copied header breaks the seal.
    let mut claimed = std::fs::read(&other_seal).unwrap();
    claimed[20..52].copy_from_slice(&setup.sha256);
    std::fs::copy(&other_entry, setup.entry()).unwrap();
    std::fs::write(setup.seal(), &claimed).unwrap();
    setup.assert_refused_then_replaced(Rejection::Tampered);
}

#[test]
fn an_entry_edited_in_place_is_refused() {
    let setup = setup();
    setup.cached();
    let mut edited = std::fs::read(setup.entry()).unwrap();
    // Patch a byte of the native code, as an attacker planting a
    // payload would, keeping the length and seal as they were.
    let middle = edited.len() / 2;
    edited[middle] = edited[middle].wrapping_add(1);
    std::fs::write(setup.entry(), &edited).unwrap();
    setup.assert_refused_then_replaced(Rejection::Tampered);
}

#[test]
fn an_entry_sealed_with_another_key_is_refused() {
    let setup = setup();
    // The same cache directory, opened with a different key: what an
    // attacker who writes the directory but cannot read the key
    // produces at best.
    let forger = open(&setup.dir, "compiled", "elsewhere/cache.key");
    compile(&forger, &setup.engine, &setup.sha256, &setup.bytes);
    setup.assert_refused_then_replaced(Rejection::Tampered);
    // And the reverse: the forger's key does not open the real entry.
    assert_eq!(
        rejection_of(&forger, &setup.engine, &setup.sha256),
        Rejection::Tampered
    );
}

#[test]
fn a_directory_others_can_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let key = dir.path().join("data/cache.key");
    std::fs::create_dir(&cache).unwrap();
    for mode in [0o777, 0o770, 0o702] {
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(mode)).unwrap();
        let (is_unsafe, message) = open_err(cache.clone(), &key);
        assert!(is_unsafe, "{mode:o}: {message}");
        assert!(message.contains(&cache.display().to_string()), "{message}");
        assert!(message.contains("chmod go-w"), "{message}");
    }
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
    CompileCache::open(cache, &key).expect("readable by others is fine: entries are sealed");
}

#[test]
fn a_directory_or_key_owned_by_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let key = dir.path().join("data/cache.key");
    CompileCache::open(cache.clone(), &key).unwrap();
    const STRANGER: u32 = 4_000_000;
    if std::os::unix::fs::chown(&cache, Some(STRANGER), None).is_err() {
        eprintln!("skipped: changing a file's owner needs root");
        return;
    }
    let (is_unsafe, message) = open_err(cache.clone(), &key);
    assert!(is_unsafe, "{message}");
    assert!(message.contains("belongs to user id 4000000"), "{message}");
    std::os::unix::fs::chown(&cache, Some(rustix::process::geteuid().as_raw()), None).unwrap();
    std::os::unix::fs::chown(&key, Some(STRANGER), None).unwrap();
    let (is_unsafe, message) = open_err(cache, &key);
    assert!(is_unsafe, "{message}");
    assert!(message.contains(&key.display().to_string()), "{message}");
}

#[test]
fn a_key_others_can_read_or_of_the_wrong_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let key = dir.path().join("data/cache.key");
    CompileCache::open(cache.clone(), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (is_unsafe, message) = open_err(cache.clone(), &key);
    assert!(is_unsafe && message.contains("chmod 600"), "{message}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&key, b"short").unwrap();
    let (is_unsafe, message) = open_err(cache, &key);
    assert!(
        is_unsafe && message.contains("exactly 32 bytes"),
        "{message}"
    );
}

#[test]
fn a_named_pipe_planted_as_the_key_is_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let key = dir.path().join("data/cache.key");
    std::fs::create_dir(key.parent().unwrap()).unwrap();
    fsutil::tests::make_fifo(&key);
    let (is_unsafe, message) =
        fsutil::tests::within_bound(key.clone(), move |key| open_err(cache, &key));
    assert!(is_unsafe, "{message}");
    assert!(message.contains(&key.display().to_string()), "{message}");
    assert!(message.contains("is not a compile cache key"), "{message}");
}

#[test]
fn a_key_inside_the_cache_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let (is_unsafe, message) = open_err(cache.clone(), &cache.join("keys/cache.key"));
    assert!(is_unsafe, "{message}");
    assert!(message.contains("inside the cache directory"), "{message}");
}

#[test]
fn processes_creating_the_key_at_once_agree_on_one() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("data/cache.key");
    // Each opener's tag over the same bytes: equal tags, equal keys.
    let tag =
        |key: &CacheKey| -> [u8; 32] { key.mac(b"header", b"code").finalize().into_bytes().into() };
    let tags: Vec<[u8; 32]> = std::thread::scope(|scope| {
        let openers: Vec<_> = (0..8)
            .map(|index| {
                let cache = dir.path().join(format!("compiled-{index}"));
                let key = &key;
                scope.spawn(move || tag(&CompileCache::open(cache, key).unwrap().key))
            })
            .collect();
        openers
            .into_iter()
            .map(|opener| opener.join().unwrap())
            .collect()
    });
    assert!(tags.iter().all(|tag| *tag == tags[0]));
    let on_disk = CacheKey(HmacSha256::new_from_slice(&std::fs::read(&key).unwrap()).unwrap());
    assert_eq!(tag(&on_disk), tags[0]);
}

/// A racy window for tests: short, but longer than the tick of the coarse
/// clock that stamps files' times (a few milliseconds).
const TEST_RACY_WINDOW: Duration = Duration::from_millis(100);

/// Waits until what was written so far is settled under [`TEST_RACY_WINDOW`].
pub(crate) fn settle() {
    std::thread::sleep(TEST_RACY_WINDOW * 2);
}

/// A cache in `dir` whose racy window is [`TEST_RACY_WINDOW`].
pub(crate) fn settling_cache(dir: &Path) -> CompileCache {
    let mut cache = CompileCache::open(dir.join("compiled"), &dir.join("data/cache.key")).unwrap();
    cache.racy_window = TEST_RACY_WINDOW;
    cache
}

/// Writes `byte` over the one at `offset` of `path`, in place, and with
/// `restore_mtime` sets the modification time back to what it was: all an
/// attacker without root can hide.
pub(crate) fn edit_in_place(path: &Path, offset: u64, byte: u8, restore_mtime: bool) {
    use std::os::unix::fs::FileExt;
    let before = std::fs::metadata(path).unwrap().modified().unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&[byte], offset).unwrap();
    if restore_mtime {
        file.set_times(std::fs::FileTimes::new().set_modified(before))
            .unwrap();
    }
    drop(file);
    if restore_mtime {
        assert_eq!(std::fs::metadata(path).unwrap().modified().unwrap(), before);
    }
}

/// `identity` as if its file's bytes were read just now.
pub(crate) fn read_now(identity: FileIdentity) -> crate::source::ReadVersion {
    crate::source::ReadVersion {
        identity,
        started: SystemTime::now(),
    }
}

fn seal_len(setup: &Setup) -> usize {
    std::fs::read(setup.seal()).unwrap().len()
}

fn settled_setup() -> Setup {
    let mut setup = setup();
    setup.cache.racy_window = TEST_RACY_WINDOW;
    setup
}

#[test]
fn a_settled_artifact_is_then_vouched_for_by_its_identity() {
    let setup = settled_setup();
    assert!(!setup.cached());
    assert_eq!(seal_len(&setup), SEAL_LEN);
    settle();
    assert!(setup.cached(), "checked in full");
    assert_eq!(seal_len(&setup), SEAL_WITH_IDENTITY_LEN);
    let path = setup.entry();
    let checked = setup
        .cache
        .read_seal(&setup.seal())
        .unwrap()
        .identity
        .expect("the identity is recorded");
    let (file, metadata) = fsutil::open_without_blocking(&path).unwrap();
    drop(file);
    assert_eq!(checked, FileIdentity::of(&metadata));
    assert!(setup.cached(), "vouched for by its identity");
}

#[test]
fn an_artifact_edited_in_place_after_sealing_is_never_run() {
    for restore_mtime in [false, true] {
        let setup = settled_setup();
        setup.cached();
        settle();
        setup.cached();
        assert_eq!(seal_len(&setup), SEAL_WITH_IDENTITY_LEN);
        let artifact = std::fs::read(setup.entry()).unwrap();
        let middle = artifact.len() / 2;
        edit_in_place(
            &setup.entry(),
            middle as u64,
            artifact[middle].wrapping_add(1),
            restore_mtime,
        );
        // The change time moved, so the full check runs, and refuses it.
        setup.assert_refused_then_replaced(Rejection::Tampered);
    }
}

#[test]
fn a_forged_identity_in_a_seal_is_ignored() {
    let setup = settled_setup();
    setup.cached();
    settle();
    setup.cached();
    let artifact = std::fs::read(setup.entry()).unwrap();
    let middle = artifact.len() / 2;
    edit_in_place(&setup.entry(), middle as u64, artifact[middle] ^ 0xff, true);
    // The attacker vouches for the edited file's identity, without the key.
    let identity = FileIdentity::of(&std::fs::metadata(setup.entry()).unwrap());
    let forger = CacheKey(HmacSha256::new_from_slice(&[7; KEY_LEN]).unwrap());
    let mut seal = std::fs::read(setup.seal()).unwrap();
    seal.truncate(SEAL_LEN);
    seal.extend_from_slice(&identity.to_bytes());
    let mac = forger.tag(&[IDENTITY_TAG, &seal]);
    seal.extend_from_slice(&mac);
    std::fs::write(setup.seal(), &seal).unwrap();
    assert_eq!(setup.cache.read_seal(&setup.seal()).unwrap().identity, None);
    setup.assert_refused_then_replaced(Rejection::Tampered);
}

#[test]
fn a_racy_identity_is_not_recorded() {
    // The default window: everything written just now is racy.
    let setup = setup();
    assert!(!setup.cached());
    assert!(setup.cached());
    assert_eq!(
        seal_len(&setup),
        SEAL_LEN,
        "an artifact changed within the racy window is checked in full again next time"
    );
    let component = setup.dir.path().join("plugin.wasm");
    std::fs::write(&component, &setup.bytes).unwrap();
    let identity = FileIdentity::of(&std::fs::metadata(&component).unwrap());
    setup.cache.record_digest(
        read_now(identity),
        &setup.sha256,
        &setup.bytes,
        Default::default(),
    );
    assert!(setup.cache.digest_of(&identity, &setup.bytes).is_none());

    // Once settled, both are recorded.
    let mut settled = setup.cache.clone();
    settled.racy_window = TEST_RACY_WINDOW;
    settle();
    compile(&settled, &setup.engine, &setup.sha256, &setup.bytes);
    assert_eq!(seal_len(&setup), SEAL_WITH_IDENTITY_LEN);
    settled.record_digest(
        read_now(identity),
        &setup.sha256,
        &setup.bytes,
        Default::default(),
    );
    assert_eq!(
        settled
            .digest_of(&identity, &setup.bytes)
            .map(|digested| digested.sha256),
        Some(setup.sha256)
    );
}

#[test]
fn a_forged_digest_record_is_ignored() {
    let setup = settled_setup();
    let component = setup.dir.path().join("plugin.wasm");
    std::fs::write(&component, &setup.bytes).unwrap();
    settle();
    let identity = FileIdentity::of(&std::fs::metadata(&component).unwrap());
    setup.cache.record_digest(
        read_now(identity),
        &setup.sha256,
        &setup.bytes,
        Default::default(),
    );
    let record = setup.cache.digest_path(&identity);
    let sound = std::fs::read(&record).unwrap();
    assert!(setup.cache.digest_of(&identity, &setup.bytes).is_some());

    // Claiming another component's hash for the file breaks the seal.
    let other = sha256_of(&wat::parse_str(OTHER_COMPONENT).unwrap());
    let mut claimed = sound.clone();
    let sha_at = 8 + 4 + FileIdentity::LEN;
    claimed[sha_at..sha_at + 32].copy_from_slice(&other);
    std::fs::write(&record, &claimed).unwrap();
    assert!(setup.cache.digest_of(&identity, &setup.bytes).is_none());

    // So does sealing it with another key.
    let mut forger = open(&setup.dir, "compiled", "elsewhere/cache.key");
    forger.racy_window = TEST_RACY_WINDOW;
    forger.record_digest(read_now(identity), &other, &setup.bytes, Default::default());
    assert!(forger.digest_of(&identity, &setup.bytes).is_some());
    assert!(setup.cache.digest_of(&identity, &setup.bytes).is_none());

    // And a sound record of another identity (an older version) is stale.
    std::fs::write(&record, &sound).unwrap();
    assert!(setup.cache.digest_of(&identity, &setup.bytes).is_some());
    edit_in_place(&component, 0, b'\0', true);
    let edited = FileIdentity::of(&std::fs::metadata(&component).unwrap());
    assert_ne!(edited, identity);
    assert!(setup.cache.digest_of(&edited, &setup.bytes).is_none());
}

#[test]
fn a_forged_verification_record_is_ignored() {
    let setup = settled_setup();
    let verification = verified::Verification {
        component_sha256: &setup.sha256,
        detached_sha256: None,
        public_key: b"key",
        key_id: "id",
    };
    setup.cache.record_verified(&verification, false);
    assert_eq!(setup.cache.verified(&verification), Some(false));
    let forger = open(&setup.dir, "compiled", "elsewhere/cache.key");
    forger.record_verified(&verification, true);
    assert_eq!(forger.verified(&verification), Some(true));
    assert_eq!(setup.cache.verified(&verification), None, "never trusted");
    // Another detached signature is another check.
    setup.cache.record_verified(&verification, false);
    let detached = verified::Verification {
        detached_sha256: Some([1; 32]),
        ..verification
    };
    assert_eq!(setup.cache.verified(&detached), None);
}

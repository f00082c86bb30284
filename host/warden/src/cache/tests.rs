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

impl Setup {
    fn entry(&self) -> PathBuf {
        self.cache
            .entry_path(&self.sha256, engine_hash(&self.engine))
    }

    fn rejection(&self) -> Rejection {
        self.cache
            .read_entry(&self.entry(), engine_hash(&self.engine), &self.sha256)
            .unwrap_err()
    }

    fn cached(&self) -> bool {
        let (_, cached) = self
            .cache
            .get_or_compile(&self.engine, &self.sha256, &self.bytes)
            .unwrap();
        cached
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
    let key = setup.dir.path().join("data/cache.key");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(std::fs::read(&key).unwrap().len(), KEY_LEN);
    assert_eq!(mode(key.parent().unwrap()), 0o700);
}

#[test]
fn damaged_entries_are_detected_and_replaced() {
    type Damage = fn(&mut Vec<u8>);
    let damages: [(Rejection, Damage); 6] = [
        (Rejection::Truncated, |entry| {
            entry.truncate(entry.len() / 2)
        }),
        (Rejection::Truncated, |entry| entry.truncate(10)),
        (Rejection::Tampered, |entry| {
            let last = entry.len() - 1;
            entry[last] ^= 0xff;
        }),
        (Rejection::Tampered, |entry| entry[HEADER_LEN - 1] ^= 0x01),
        (Rejection::Foreign, |entry| {
            entry[0..8].copy_from_slice(b"NOTWARDN")
        }),
        (Rejection::OtherEngine, |entry| entry[12] ^= 0x01),
    ];
    for (expected, damage) in damages {
        let setup = setup();
        setup.cached();
        let mut damaged = std::fs::read(setup.entry()).unwrap();
        damage(&mut damaged);
        std::fs::write(setup.entry(), &damaged).unwrap();
        setup.assert_refused_then_replaced(expected);
    }
}

#[test]
fn an_entry_copied_from_another_component_is_refused() {
    let setup = setup();
    let other = wat::parse_str(OTHER_COMPONENT).unwrap();
    let other_sha = sha256_of(&other);
    setup
        .cache
        .get_or_compile(&setup.engine, &other_sha, &other)
        .unwrap();
    let other_entry = setup
        .cache
        .entry_path(&other_sha, engine_hash(&setup.engine));
    std::fs::copy(&other_entry, setup.entry()).unwrap();
    setup.assert_refused_then_replaced(Rejection::Swapped);

    // Claiming the victim's hash in the copied header breaks the seal.
    let mut claimed = std::fs::read(&other_entry).unwrap();
    claimed[20..52].copy_from_slice(&setup.sha256);
    std::fs::write(setup.entry(), &claimed).unwrap();
    setup.assert_refused_then_replaced(Rejection::Tampered);
}

#[test]
fn an_entry_edited_in_place_is_refused() {
    let setup = setup();
    setup.cached();
    let mut edited = std::fs::read(setup.entry()).unwrap();
    // Patch a byte of the native code, as an attacker planting a
    // payload would, keeping the length and header as they were.
    let middle = HEADER_LEN + (edited.len() - HEADER_LEN) / 2;
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
    forger
        .get_or_compile(&setup.engine, &setup.sha256, &setup.bytes)
        .unwrap();
    setup.assert_refused_then_replaced(Rejection::Tampered);
    // And the reverse: the forger's key does not open the real entry.
    assert_eq!(
        forger
            .read_entry(&setup.entry(), engine_hash(&setup.engine), &setup.sha256)
            .unwrap_err(),
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

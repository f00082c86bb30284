use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::trust::KeyFiles;

fn key(dir: &Path, name: &str) -> PublicKey {
    KeyFiles::named(dir.join(name)).generate().unwrap()
}

#[test]
fn names_that_toml_must_escape_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trust.toml");
    let names = [
        "plain",
        "bob\u{ad}",
        "quote\"d",
        "back\\slash",
        "tab\there",
        "nul\u{0}",
        "del\u{7f}",
        "c1\u{85}",
        "ünïcode",
        "",
    ];
    let mut store = TrustStore::default();
    for (index, name) in names.iter().enumerate() {
        // Names written by hand or by older versions, not through `add`.
        store
            .keys
            .insert((*name).to_owned(), key(dir.path(), &index.to_string()));
    }
    store.save(&path).unwrap();
    assert_eq!(TrustStore::open(&path).unwrap(), store);
}

#[test]
fn only_plain_printable_names_can_be_added() {
    let dir = tempfile::tempdir().unwrap();
    let key = key(dir.path(), "k");
    let mut store = TrustStore::default();
    for good in ["alice", "bob smith", "ci@example.com", "release-key_2.0+x"] {
        assert!(TrustStore::is_valid_key_name(good), "{good}");
    }
    let too_long = "a".repeat(MAX_KEY_NAME_LEN + 1);
    for bad in [
        "",
        " alice",
        "alice ",
        "bob\u{ad}",
        "b\u{43e}b",
        "tab\there",
        "new\nline",
        "quote\"",
        "slash/",
        too_long.as_str(),
    ] {
        let err = store.add(bad, key.clone()).unwrap_err();
        assert!(err.to_string().contains("not a usable key name"), "{err}");
    }
    assert!(store.is_empty());
}

#[test]
fn a_new_store_is_private_and_one_others_can_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config/trust.toml");
    TrustStore::edit(&path, |store| store.add("alice", key(dir.path(), "alice"))).unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    for writable in [0o666, 0o620, 0o602] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(writable)).unwrap();
        let err = TrustStore::open(&path).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("chmod go-w"), "{message}");
        assert_eq!(
            TrustStore::open_or_damaged(&path).damage(),
            Some(message.as_str())
        );
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(TrustStore::open(&path).unwrap().keys().count(), 1);
}

#[test]
fn a_named_pipe_planted_as_the_store_is_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trust.toml");
    fsutil::tests::make_fifo(&path);
    let err = fsutil::tests::within_bound(path.clone(), TrustStore::open).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("not a regular file"), "{message}");
    let edited = fsutil::tests::within_bound(path, |path| TrustStore::edit(&path, |_| Ok(())));
    assert_eq!(
        edited.unwrap_err().to_string(),
        message,
        "edits refuse it too"
    );
}

#[test]
fn a_damaged_store_names_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trust.toml");
    // What earlier versions wrote for the name `bob\u{ad}`.
    std::fs::write(&path, "[keys]\n\"bob\\u{ad}\" = \"00\"\n").unwrap();
    let err = TrustStore::open(&path).unwrap_err();
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("repair or remove it"), "{message}");
    let damaged = TrustStore::open_or_damaged(&path);
    assert!(damaged.is_empty());
    assert_eq!(damaged.damage(), Some(message.as_str()));
    let err = TrustStore::edit(&path, |_| Ok(())).unwrap_err();
    assert_eq!(err.to_string(), message, "edits refuse it too");
}

#[test]
fn a_linked_store_is_edited_through_the_link() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("shared")).unwrap();
    let target = dir.path().join("shared/trust.toml");
    let link = dir.path().join("trust.toml");
    std::os::unix::fs::symlink("shared/trust.toml", &link).unwrap();
    TrustStore::edit(&link, |store| store.add("alice", key(dir.path(), "alice"))).unwrap();
    TrustStore::edit(&link, |store| store.add("bob", key(dir.path(), "bob"))).unwrap();
    TrustStore::edit(&link, |store| store.remove("alice").map(drop)).unwrap();
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    let names = |path: &Path| -> Vec<String> {
        TrustStore::open(path)
            .unwrap()
            .keys()
            .map(|(name, _)| name.to_owned())
            .collect()
    };
    assert_eq!(names(&target), ["bob"]);
    assert_eq!(names(&link), ["bob"]);
    assert!(dir.path().join("shared/trust.toml.lock").exists());
}

#[test]
fn a_failed_change_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trust.toml");
    let err = TrustStore::edit(&path, |store| store.remove("nobody")).unwrap_err();
    assert!(err.to_string().contains("no trusted key is named"), "{err}");
    assert!(!path.exists());
}

#[test]
fn a_lock_file_that_is_a_link_or_that_others_can_open_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trust.toml");
    let lock = dir.path().join("trust.toml.lock");
    let refused = |words: &str| {
        let err = TrustStore::edit(&path, |store| store.add("alice", key(dir.path(), "alice")))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&lock.display().to_string()), "{message}");
        assert!(message.contains(words), "{message}");
        assert!(!path.exists(), "nothing was written: {message}");
    };

    // A link planted by someone who can write the store's directory,
    // pointing where they want a file of the user's created.
    let planted = dir.path().join("planted");
    std::os::unix::fs::symlink(&planted, &lock).unwrap();
    refused("is a symbolic link");
    assert!(!planted.exists(), "no file was created through the link");
    std::fs::remove_file(&lock).unwrap();

    // A lock file anyone can open, so anyone can hold the lock.
    std::fs::write(&lock, b"").unwrap();
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o666)).unwrap();
    refused("chmod 600");
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o600)).unwrap();

    const STRANGER: u32 = 4_000_000;
    if std::os::unix::fs::chown(&lock, Some(STRANGER), None).is_ok() {
        refused("belongs to user id 4000000");
        std::fs::remove_file(&lock).unwrap();
    } else {
        eprintln!("skipped the owner check: changing a file's owner needs root");
    }

    TrustStore::edit(&path, |store| store.add("alice", key(dir.path(), "alice"))).unwrap();
    assert_eq!(TrustStore::open(&path).unwrap().keys().count(), 1);
}

#[test]
fn an_editor_waits_for_the_lock_and_gives_up_after_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trust.toml");
    let held = EditLock::acquire(&path, EDIT_LOCK_WAIT).unwrap();
    let wait = Duration::from_millis(300);
    let started = Instant::now();
    let err = EditLock::acquire(&path, wait)
        .err()
        .expect("the lock is held");
    let waited = started.elapsed();
    assert!(
        waited >= wait && waited < wait + Duration::from_secs(5),
        "{waited:?}"
    );
    assert!(err.to_string().contains("another process"), "{err}");
    drop(held);
    TrustStore::edit(&path, |_| Ok(())).unwrap();
}

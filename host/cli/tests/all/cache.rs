//! `warden cache list|clean`: what the compile cache holds, and freeing it
//! without touching anything that is not one of its entries.

use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};
use warden_tests::guests;

use crate::support::{report, warden_at_home};

/// Compiles `plugin` into the cache at `dir`.
fn compile(home: &Path, dir: &str, plugin: &str) {
    let output = warden_at_home(
        home,
        &["compile", plugin, "--cache-dir", dir, "--unsigned", "allow"],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

/// `warden cache list --json` of the cache at `dir`.
fn listed(home: &Path, dir: &str) -> Value {
    let output = warden_at_home(home, &["cache", "list", "--cache-dir", dir, "--json"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    report(&output).0
}

/// The component hashes of a list of entries, sorted.
fn hashes(entries: &Value) -> Vec<String> {
    let mut hashes: Vec<String> = entries
        .as_array()
        .expect("a list of entries")
        .iter()
        .map(|entry| entry["component_sha256"].as_str().unwrap().to_owned())
        .collect();
    hashes.sort_unstable();
    hashes
}

fn sha256_of(path: &str) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn list_shows_each_compiled_component_with_its_size_and_the_total() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("compiled");
    let dir = dir.to_str().unwrap();
    compile(home.path(), dir, guests::HELLO);
    compile(home.path(), dir, guests::PROBE);

    let list = listed(home.path(), dir);
    let mut expected = vec![sha256_of(guests::HELLO), sha256_of(guests::PROBE)];
    expected.sort_unstable();
    assert_eq!(hashes(&list["entries"]), expected, "{list}");
    let mut total = 0;
    for entry in list["entries"].as_array().unwrap() {
        let file = entry["file"].as_str().unwrap();
        let size = std::fs::metadata(file).unwrap().len();
        assert_eq!(entry["size"], size, "{entry}");
        assert!(entry["age_seconds"].as_u64().unwrap() < 3600, "{entry}");
        total += size;
    }
    assert_eq!(list["total_size"], total, "{list}");
    assert_eq!(list["dir"], dir);

    let output = warden_at_home(home.path(), &["cache", "list", "--cache-dir", dir]);
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[2].starts_with("2 entries, "), "{text}");
    assert!(lines[2].ends_with(&format!(" in {dir}")), "{text}");
    for hash in &expected {
        assert!(
            lines[..2]
                .iter()
                .any(|line| line.starts_with(hash.as_str())),
            "{text}"
        );
    }
}

#[test]
fn clean_removes_only_the_chosen_entries_and_nothing_else() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("compiled");
    let dir_text = dir.to_str().unwrap();
    compile(home.path(), dir_text, guests::HELLO);
    compile(home.path(), dir_text, guests::PROBE);
    // Not entries: a file of the user's, and a link named like an entry
    // pointing outside the cache.
    std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
    let outside = home.path().join("precious.cwasm");
    std::fs::write(&outside, b"keep").unwrap();
    let link_name = format!("{}-{}.cwasm", "e".repeat(64), "0".repeat(16));
    std::os::unix::fs::symlink(&outside, dir.join(&link_name)).unwrap();
    // Records beside the entries, which only spare loads a hash or a
    // signature check: a digest record and a remembered check.
    let records = [
        dir.join("digests").join("803-1a2b"),
        dir.join("verified").join("e".repeat(64)),
    ];
    for record in &records {
        std::fs::create_dir_all(record.parent().unwrap()).unwrap();
        std::fs::write(record, b"record").unwrap();
    }

    // Nothing was compiled an hour ago.
    let clean = |args: &[&str]| {
        let mut all = vec!["cache", "clean", "--cache-dir", dir_text, "--json"];
        all.extend_from_slice(args);
        let output = warden_at_home(home.path(), &all);
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        report(&output).0
    };
    let old = clean(&["--older-than", "1h"]);
    assert_eq!(old["removed"], serde_json::json!([]), "{old}");
    assert_eq!(old["freed"], 0);

    let hello = clean(&["--plugin", guests::HELLO]);
    assert_eq!(hashes(&hello["removed"]), [sha256_of(guests::HELLO)]);
    assert_eq!(
        hashes(&listed(home.path(), dir_text)["entries"]),
        [sha256_of(guests::PROBE)]
    );

    let rest = clean(&[]);
    assert_eq!(hashes(&rest["removed"]), [sha256_of(guests::PROBE)]);
    assert_eq!(
        listed(home.path(), dir_text)["entries"],
        serde_json::json!([])
    );
    assert_eq!(std::fs::read(dir.join("notes.txt")).unwrap(), b"mine");
    assert!(dir.join(&link_name).is_symlink(), "the link was removed");
    assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
    for record in &records {
        assert!(!record.exists(), "{} stays", record.display());
    }

    // A cleaned plugin is compiled again on its next load.
    let output = warden_at_home(
        home.path(),
        &[
            "compile",
            guests::HELLO,
            "--cache-dir",
            dir_text,
            "--unsigned",
            "allow",
        ],
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("compiled into the compile cache"), "{text}");
}

/// The default cache not existing yet is an empty cache; a `--cache-dir`
/// that does not exist is a mistyped path, and an error.
#[test]
fn a_missing_default_cache_is_empty_and_a_missing_cache_dir_an_error() {
    let home = tempfile::tempdir().unwrap();
    let default = home.path().join("cache/warden/compiled");
    let output = warden_at_home(home.path(), &["cache", "list"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("0 entries, 0 B in {}\n", default.display())
    );
    let output = warden_at_home(home.path(), &["cache", "clean"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(!default.exists(), "cleaning created the cache");

    let typo = home.path().join("compield");
    for command in ["list", "clean"] {
        let output = warden_at_home(
            home.path(),
            &["cache", command, "--cache-dir", typo.to_str().unwrap()],
        );
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            format!(
                "warden: there is no compile cache at `{}`\n",
                typo.display()
            )
        );
    }
}

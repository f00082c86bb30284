//! What the compile cache holds, for an operator who looks at it or frees
//! its space (`warden cache list` and `warden cache clean`).
//!
//! Only the directory's own entries are seen: regular files named the way
//! the compile cache names them (`SHA256-ENGINEHASH.cwasm`, each with its
//! seal beside it, `SHA256-ENGINEHASH.seal`). Cleaning also removes the
//! records the cache keeps beside them ([`CacheEntry::remove_records`]:
//! `digests/DEV-INO`, `verified/SHA256` and seals left without their
//! entry). Symbolic links, other sub-directories and any other file are
//! left alone, so a cache directory given by mistake (or a link planted in
//! one) never loses anything that is not Warden's.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::Error;

/// Hex digits of an entry name's component SHA-256.
const SHA256_HEX_LEN: usize = 64;
/// Hex digits of an entry name's engine hash.
const ENGINE_HASH_HEX_LEN: usize = 16;
/// The extension of an entry's file name.
const ENTRY_EXTENSION: &str = ".cwasm";

/// One compiled component in the compile cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    /// The entry's file.
    pub path: PathBuf,
    /// The SHA-256 of the component it was compiled from, in lower-case hex.
    pub component_sha256: String,
    /// Bytes of its compiled code on disk.
    pub size: u64,
    /// When it was last written, i.e. compiled.
    pub modified: SystemTime,
}

impl CacheEntry {
    /// Every entry in the compile cache directory `dir`, oldest first.
    /// A directory that does not exist is an [`Error::Io`] whose source is
    /// [`std::io::ErrorKind::NotFound`].
    pub fn list(dir: &Path) -> Result<Vec<CacheEntry>, Error> {
        let context = || format!("cannot read the compile cache `{}`", dir.display());
        let mut entries = Vec::new();
        for item in std::fs::read_dir(dir).map_err(|err| Error::io(context(), err))? {
            let item = item.map_err(|err| Error::io(context(), err))?;
            let name = item.file_name();
            let Some(component_sha256) = name.to_str().and_then(component_of_entry_name) else {
                continue;
            };
            // `DirEntry::metadata` does not follow symbolic links: a link
            // is not a regular file, so it is skipped.
            let Ok(metadata) = item.metadata() else {
                // Removed by another process since it was listed.
                continue;
            };
            if !metadata.is_file() {
                continue;
            }
            entries.push(CacheEntry {
                path: item.path(),
                component_sha256: component_sha256.to_owned(),
                size: metadata.len(),
                modified: metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        entries.sort_by(|a, b| a.modified.cmp(&b.modified).then(a.path.cmp(&b.path)));
        Ok(entries)
    }

    /// Removes the entry's file and its seal. One already removed (by
    /// another `clean`, or a load replacing it) counts as removed; the next
    /// load of its component compiles it again.
    pub fn remove(&self) -> Result<(), Error> {
        for path in [
            self.path.clone(),
            self.path.with_extension(super::SEAL_EXTENSION),
        ] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(Error::io(
                        format!("cannot remove `{}`", path.display()),
                        err,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Removes the compile cache's records beside its entries: the digest
    /// index (`digests/`), the remembered signature checks (`verified/`)
    /// and seals whose compiled code is gone. They only spare later loads
    /// a hash or a signature check, so removing them loses nothing; without
    /// this they would only grow. Only regular files named the way the
    /// cache names them are removed (never what a symbolic link points
    /// at); a directory that does not exist has nothing to remove. Returns
    /// how many files were removed.
    pub fn remove_records(dir: &Path) -> Result<usize, Error> {
        let mut removed = 0;
        for (subdir, is_record) in [
            (
                super::digests::DIGESTS_DIR,
                is_digest_record_name as fn(&str) -> bool,
            ),
            (super::verified::VERIFIED_DIR, is_verified_record_name),
        ] {
            let subdir = dir.join(subdir);
            // Not followed if it is a link: only a real directory is ours.
            match std::fs::symlink_metadata(&subdir) {
                Ok(metadata) if metadata.is_dir() => {}
                _ => continue,
            }
            removed += remove_files_named(&subdir, is_record)?;
            // Left in place if another process just wrote a record into it.
            let _ = std::fs::remove_dir(&subdir);
        }
        removed += remove_files_named(dir, |name| {
            name.strip_suffix(SEAL_SUFFIX).is_some_and(|stem| {
                let entry = format!("{stem}{ENTRY_EXTENSION}");
                component_of_entry_name(&entry).is_some()
                    && std::fs::symlink_metadata(dir.join(&entry)).is_err()
            })
        })?;
        Ok(removed)
    }

    /// The per-user compile cache directory that a runtime uses by default:
    /// `$XDG_CACHE_HOME/warden/compiled`, else `$HOME/.cache/warden/compiled`.
    /// `None` when neither variable is set.
    pub fn default_dir() -> Option<PathBuf> {
        super::CompileCache::default_dir()
    }
}

/// The suffix of an entry's seal's file name.
const SEAL_SUFFIX: &str = ".seal";

/// Removes the regular files of `dir` whose names `chosen` picks; one
/// already gone counts as removed by someone else. A missing `dir` has none.
fn remove_files_named(dir: &Path, chosen: impl Fn(&str) -> bool) -> Result<usize, Error> {
    let context = || format!("cannot read the compile cache `{}`", dir.display());
    let items = match std::fs::read_dir(dir) {
        Ok(items) => items,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(Error::io(context(), err)),
    };
    let mut removed = 0;
    for item in items {
        let item = item.map_err(|err| Error::io(context(), err))?;
        let name = item.file_name();
        if !name.to_str().is_some_and(&chosen) {
            continue;
        }
        // `DirEntry::metadata` does not follow symbolic links.
        if !item.metadata().is_ok_and(|metadata| metadata.is_file()) {
            continue;
        }
        match std::fs::remove_file(item.path()) {
            Ok(()) => removed += 1,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(Error::io(
                    format!("cannot remove `{}`", item.path().display()),
                    err,
                ));
            }
        }
    }
    Ok(removed)
}

/// Whether `name` is a digest record's, `DEV-INO` in lower-case hex.
fn is_digest_record_name(name: &str) -> bool {
    name.split_once('-').is_some_and(|(dev, ino)| {
        [dev, ino].iter().all(|part| {
            !part.is_empty()
                && part.len() <= 16
                && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
    })
}

/// Whether `name` is a verification record's: a SHA-256 in lower-case hex.
fn is_verified_record_name(name: &str) -> bool {
    name.len() == SHA256_HEX_LEN && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The component SHA-256 in an entry's file name,
/// `SHA256-ENGINEHASH.cwasm`; `None` for any other name.
fn component_of_entry_name(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(ENTRY_EXTENSION)?;
    let (sha256, engine_hash) = stem.split_once('-')?;
    let lower_hex = |text: &str, len: usize| {
        text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    (lower_hex(sha256, SHA256_HEX_LEN) && lower_hex(engine_hash, ENGINE_HASH_HEX_LEN))
        .then_some(sha256)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry_name(sha: char) -> String {
        format!("{}-{}.cwasm", sha.to_string().repeat(64), "0".repeat(16))
    }

    #[test]
    fn only_regular_files_named_like_entries_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(entry_name('a')), b"entry").unwrap();
        // Not entries: another name, upper-case hex, a directory with an
        // entry's name, and a link with one pointing outside the cache.
        std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        std::fs::write(dir.path().join(entry_name('A')), b"x").unwrap();
        std::fs::create_dir(dir.path().join(entry_name('b'))).unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("precious");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(entry_name('c'))).unwrap();

        let entries = CacheEntry::list(dir.path()).unwrap();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries[0].component_sha256, "a".repeat(64));
        assert_eq!(entries[0].size, 5);
        assert_eq!(entries[0].path, dir.path().join(entry_name('a')));
    }

    #[test]
    fn removing_an_entry_already_gone_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(entry_name('d')), b"entry").unwrap();
        let seal = dir.path().join(entry_name('d')).with_extension("seal");
        std::fs::write(&seal, b"seal").unwrap();
        let entry = CacheEntry::list(dir.path()).unwrap().remove(0);
        entry.remove().unwrap();
        assert!(!entry.path.exists());
        assert!(!seal.exists(), "the seal goes with its entry");
        entry.remove().unwrap();
    }

    #[test]
    fn removing_records_clears_the_index_checks_and_orphaned_seals_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path();
        for subdir in ["digests", "verified"] {
            std::fs::create_dir(cache.join(subdir)).unwrap();
        }
        std::fs::write(cache.join("digests/803-1a2b"), b"record").unwrap();
        std::fs::write(cache.join("verified").join("e".repeat(64)), b"record").unwrap();
        // An entry with its seal stays; a seal without its entry goes.
        std::fs::write(cache.join(entry_name('a')), b"entry").unwrap();
        let kept_seal = cache.join(entry_name('a')).with_extension("seal");
        std::fs::write(&kept_seal, b"seal").unwrap();
        let orphan = cache.join(entry_name('b')).with_extension("seal");
        std::fs::write(&orphan, b"seal").unwrap();
        // Not Warden's: left alone, as is what a planted link points at.
        std::fs::write(cache.join("digests/notes.txt"), b"mine").unwrap();
        let outside = tempfile::tempdir().unwrap();
        let precious = outside.path().join("precious");
        std::fs::write(&precious, b"keep").unwrap();
        std::os::unix::fs::symlink(&precious, cache.join("digests/803-ffff")).unwrap();

        assert_eq!(CacheEntry::remove_records(cache).unwrap(), 3);
        assert!(
            !cache.join("verified").exists(),
            "an emptied directory goes"
        );
        assert!(!orphan.exists());
        assert!(kept_seal.exists() && cache.join(entry_name('a')).exists());
        assert!(cache.join("digests/notes.txt").exists());
        assert!(cache.join("digests/803-ffff").symlink_metadata().is_ok());
        assert_eq!(std::fs::read(&precious).unwrap(), b"keep");
        // Nothing left to remove, and a directory without records is fine.
        assert_eq!(CacheEntry::remove_records(cache).unwrap(), 0);
        assert_eq!(
            CacheEntry::remove_records(&cache.join("missing")).unwrap(),
            0
        );
    }

    #[test]
    fn a_missing_directory_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = CacheEntry::list(&dir.path().join("missing")).unwrap_err();
        let Error::Io { source, .. } = err else {
            panic!("expected an I/O error, got {err:?}");
        };
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    }
}

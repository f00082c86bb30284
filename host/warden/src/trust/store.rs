//! The trust store: named public keys whose signatures `signed-by trusted`
//! accepts, kept in a small TOML file.
//!
//! ```toml
//! [keys]
//! alice = "01c7…"   # the key in wasmsign2's raw format, as hex
//! ```
//!
//! The file decides which code runs, so Warden treats it like a secret
//! key's file: it is created readable and writable by its owner only, and a
//! store that belongs to another user (root excepted) or that group or
//! others can write is refused. Edits ([`TrustStore::edit`], which `warden
//! trust add|remove` use) are serialised by an advisory lock on a file
//! beside the store (`trust.toml.lock`): an edit waits at most
//! [`EDIT_LOCK_WAIT`] for it, re-reads the store under it and replaces the
//! file atomically. The lock file must be the user's own regular file that
//! nobody else can open: one that is a symbolic link (which would make Warden
//! create a file wherever it points) or that another user could open and hold
//! is refused, naming the fix. A store that is a symbolic link is edited through the
//! link: the file it finally points to is replaced, and the link stays.

use std::collections::BTreeMap;
use std::fs::{File, Metadata, OpenOptions, TryLockError};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::keys::PublicKey;
use crate::error::Error;
use crate::fsutil::{self, UserDir};

/// How long an edit waits for another editor's lock before giving up. An
/// edit holds it for milliseconds, so only a stuck editor makes it trip.
pub const EDIT_LOCK_WAIT: Duration = Duration::from_secs(10);

/// How often a waiting edit tries the lock again.
const EDIT_LOCK_RETRY: Duration = Duration::from_millis(5);

/// The longest name a key can be trusted under: names are for people to
/// read in listings and errors.
pub const MAX_KEY_NAME_LEN: usize = 64;

/// Links followed to find the file a store path names (Linux's own limit).
const MAX_LINKS: usize = 40;

/// Named public keys that Warden trusts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustStore {
    keys: BTreeMap<String, PublicKey>,
    /// Why the file could not be used, for a store from
    /// [`TrustStore::open_or_damaged`].
    damage: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    #[serde(default)]
    keys: BTreeMap<String, String>,
}

impl TrustStore {
    /// Where the trust store lives unless told otherwise:
    /// `$XDG_CONFIG_HOME/warden/trust.toml`, else `$HOME/.config/warden/trust.toml`.
    pub fn default_path() -> Option<PathBuf> {
        UserDir::Config.warden_path("trust.toml")
    }

    /// Reads a trust store; a missing file is an empty store. A file that
    /// cannot be read or parsed, or that another user could have written,
    /// is an [`Error::InvalidConfig`] naming it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let cannot_use = |problem: String| {
            Error::InvalidConfig(format!(
                "cannot use trust store `{}`: {problem}; repair or remove it",
                path.display()
            ))
        };
        // The checks look at the file that was opened, not at the path again.
        let (mut file, metadata) = match fsutil::open_without_blocking(path) {
            Ok(opened) => opened,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(err) => return Err(cannot_use(err.to_string())),
        };
        fsutil::check_not_writable_by_others(path, &metadata).map_err(|problem| {
            Error::InvalidConfig(format!("refusing the trust store: {problem}"))
        })?;
        if !metadata.is_file() {
            return Err(cannot_use("it is not a regular file".to_owned()));
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text)
            .map_err(|err| cannot_use(err.to_string()))?;
        let raw: RawStore = toml::from_str(&text).map_err(|err| cannot_use(err.to_string()))?;
        let mut keys = BTreeMap::new();
        for (name, encoded) in raw.keys {
            let bytes = hex::decode(&encoded)
                .map_err(|err| cannot_use(format!("key `{name}` is not hex: {err}")))?;
            let key = PublicKey::from_bytes(&bytes)
                .map_err(|err| cannot_use(format!("key `{name}`: {err}")))?;
            keys.insert(name, key);
        }
        Ok(TrustStore { keys, damage: None })
    }

    /// Like [`open`](Self::open), but a store that cannot be used becomes an
    /// empty store that remembers why ([`damage`](Self::damage)). A policy
    /// that depends on the store (`signed_by = trusted` or `unsigned = deny`)
    /// then refuses every plugin with that error, naming the file; one that
    /// does not (the development tier, where the store only names signers)
    /// loads plugins with a warning, as if no key were trusted. So a damaged
    /// store never breaks a command that did not ask for it.
    pub fn open_or_damaged(path: impl AsRef<Path>) -> Self {
        Self::open(path).unwrap_or_else(|err| TrustStore {
            keys: BTreeMap::new(),
            damage: Some(err.to_string()),
        })
    }

    /// Why this store's file could not be used, for a store from
    /// [`open_or_damaged`](Self::open_or_damaged).
    pub fn damage(&self) -> Option<&str> {
        self.damage.as_deref()
    }

    /// Changes the store at `path` safely when several processes edit it:
    /// takes the store's edit lock (waiting at most [`EDIT_LOCK_WAIT`]),
    /// reads the store, applies `change`, and replaces the file atomically
    /// (through a symbolic link, if the path is one). Nothing is written
    /// when `change` fails. Returns what `change` returns.
    pub fn edit<T>(
        path: impl AsRef<Path>,
        change: impl FnOnce(&mut TrustStore) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let file = final_target(path.as_ref())?;
        let _lock = EditLock::acquire(&file, EDIT_LOCK_WAIT)?;
        let mut store = Self::open(&file)?;
        let result = change(&mut store)?;
        store.write(&file)?;
        Ok(result)
    }

    /// Writes the store, replacing the file atomically (through a symbolic
    /// link, if the path is one); a new file is readable by its owner only.
    /// The directory must exist: a mistyped one is an [`Error::Io`] naming
    /// it, not a new directory. Use [`edit`](Self::edit) when other
    /// processes may edit it too.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        self.write(&final_target(path.as_ref())?)
    }

    fn write(&self, file: &Path) -> Result<(), Error> {
        let mut text = String::from(
            "# Warden's trust store: keys whose signatures `--signed-by trusted` accepts.\n\
             # Manage it with `warden trust add|list|remove`.\n\n[keys]\n",
        );
        for (name, key) in &self.keys {
            text.push_str(&format!(
                "{} = \"{}\"\n",
                toml_key(name),
                hex::encode(key.to_bytes())
            ));
        }
        fsutil::write_private_file_atomically(file, text.as_bytes())
    }

    /// Trusts `key` under `name`. A name or key can be trusted only once;
    /// names follow [`is_valid_key_name`](Self::is_valid_key_name).
    pub fn add(&mut self, name: &str, key: PublicKey) -> Result<(), Error> {
        if !Self::is_valid_key_name(name) {
            return Err(Error::InvalidConfig(format!(
                "{name:?} is not a usable key name: use 1 to {MAX_KEY_NAME_LEN} ASCII letters, \
                 digits, spaces and `._-@+`, not starting or ending with a space"
            )));
        }
        if self.keys.contains_key(name) {
            return Err(Error::InvalidConfig(format!(
                "a key named `{name}` is already trusted; remove it first"
            )));
        }
        if let Some(existing) = self.name_of(&key) {
            return Err(Error::InvalidConfig(format!(
                "this key ({}) is already trusted as `{existing}`",
                key.key_id()
            )));
        }
        self.keys.insert(name.to_owned(), key);
        Ok(())
    }

    /// Whether `name` may name a trusted key: 1 to [`MAX_KEY_NAME_LEN`]
    /// ASCII letters, digits, spaces and `._-@+`, not starting or ending
    /// with a space. Names are shown to people deciding whom to trust, so
    /// none may hide characters or look like another (no control, invisible
    /// or look-alike characters).
    pub fn is_valid_key_name(name: &str) -> bool {
        let allowed = |c: char| c.is_ascii_alphanumeric() || " ._-@+".contains(c);
        (1..=MAX_KEY_NAME_LEN).contains(&name.len())
            && name.chars().all(allowed)
            && !name.starts_with(' ')
            && !name.ends_with(' ')
    }

    /// Stops trusting the key named `name`, returning it.
    pub fn remove(&mut self, name: &str) -> Result<PublicKey, Error> {
        self.keys
            .remove(name)
            .ok_or_else(|| Error::InvalidConfig(format!("no trusted key is named `{name}`")))
    }

    /// The trusted keys, by name.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &PublicKey)> {
        self.keys.iter().map(|(name, key)| (name.as_str(), key))
    }

    /// The name a key is trusted under, if it is.
    pub fn name_of(&self, key: &PublicKey) -> Option<&str> {
        self.keys
            .iter()
            .find(|(_, trusted)| *trusted == key)
            .map(|(name, _)| name.as_str())
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The exclusive right to edit one store, held until dropped.
struct EditLock {
    _file: File,
}

impl EditLock {
    /// Locks `STORE.lock` beside the store (created, owner-only, and never
    /// removed: removing a lock file lets two editors lock different files),
    /// waiting at most `wait` for another editor to finish. A lock file that
    /// is a symbolic link, or that another user owns or could open, is an
    /// [`Error::InvalidConfig`] naming it.
    fn acquire(store: &Path, wait: Duration) -> Result<Self, Error> {
        let mut name = store.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let failed = |err| Error::io(format!("cannot lock `{}`", path.display()), err);
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            fsutil::create_private_dir(parent).map_err(failed)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            // Never through a link: that could create a file anywhere.
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(|err| {
                if err.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                    Error::InvalidConfig(format!(
                        "refusing the trust store's lock file `{}`: it is a symbolic link; \
                         remove it (Warden creates the lock file itself)",
                        path.display()
                    ))
                } else {
                    failed(err)
                }
            })?;
        // The checks look at the file that was opened, not at the path again.
        let metadata = file.metadata().map_err(failed)?;
        check_lock_file(&path, &metadata).map_err(|problem| {
            Error::InvalidConfig(format!("refusing the trust store's lock file: {problem}"))
        })?;
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(EditLock { _file: file }),
                Err(TryLockError::Error(err)) => return Err(failed(err)),
                Err(TryLockError::WouldBlock) if started.elapsed() < wait => {
                    std::thread::sleep(EDIT_LOCK_RETRY);
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(failed(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "another process has been editing the trust store for {}; \
                             if no `warden trust` command is running, try again",
                            crate::units::format_duration(wait)
                        ),
                    )));
                }
            }
        }
    }
}

/// Checks that a lock file is the user's own regular file and that nobody
/// else may open it (whoever can open it can hold the lock and stall every
/// edit). The problem, naming `path` and the fix, otherwise.
fn check_lock_file(path: &Path, metadata: &Metadata) -> Result<(), String> {
    let me = rustix::process::geteuid().as_raw();
    if !metadata.is_file() {
        return Err(format!(
            "`{}` is not a regular file; remove it (Warden creates the lock file itself)",
            path.display()
        ));
    }
    if metadata.uid() != me {
        return Err(format!(
            "`{}` belongs to user id {}, not to you (user id {me}), so its owner can hold \
             the lock; remove it (Warden creates the lock file itself)",
            path.display(),
            metadata.uid()
        ));
    }
    let mode = metadata.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "group or other users can open `{}` (mode {mode:04o}) and so hold the lock; run \
             `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// The file `path` names after following symbolic links (relative ones
/// from the link's directory), whether or not that file exists yet.
fn final_target(path: &Path) -> Result<PathBuf, Error> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        let is_link = std::fs::symlink_metadata(&current)
            .map(|metadata| metadata.file_type().is_symlink())
            .unwrap_or(false);
        if !is_link {
            return Ok(current);
        }
        let target = std::fs::read_link(&current)
            .map_err(|err| Error::io(format!("cannot read link `{}`", current.display()), err))?;
        current = match current.parent() {
            Some(parent) => parent.join(target),
            None => target,
        };
    }
    Err(Error::InvalidConfig(format!(
        "trust store `{}` goes through more than {MAX_LINKS} symbolic links",
        path.display()
    )))
}

/// A TOML key: bare when it can be, a basic string otherwise.
fn toml_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare {
        return name.to_owned();
    }
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            // TOML forbids control characters in strings; every one is
            // below U+10000, so four hex digits spell it.
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests;

//! Ed25519 key pairs and key files, in wasmsign2's formats so that keys and
//! signatures interoperate with the `wasmsign2` tool.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// A public key that checks signatures.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey(wasmsign2::PublicKey);

/// A secret key that signs plugins. Its file must be readable by its owner only.
#[derive(Clone)]
pub struct SecretKey(wasmsign2::SecretKey);

impl PublicKey {
    /// Parses a public key: wasmsign2's raw format (as `warden keygen`
    /// writes), PEM or DER.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        wasmsign2::PublicKey::from_any(bytes)
            .map(|key| PublicKey(key.attach_default_key_id()))
            .map_err(|err| Error::InvalidConfig(format!("not an Ed25519 public key: {err}")))
    }

    /// Reads a public key file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|err| {
            Error::InvalidConfig(format!(
                "cannot read public key `{}`: {err}",
                path.display()
            ))
        })?;
        Self::from_bytes(&bytes).map_err(|err| {
            Error::InvalidConfig(format!("`{}`: {}", path.display(), config_message(err)))
        })
    }

    /// The key in wasmsign2's raw format (an algorithm byte and 32 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes()
    }

    /// The key's identifier as signatures carry it: wasmsign2's default key
    /// id (an HMAC of the key), in hex.
    pub fn key_id(&self) -> String {
        self.0.key_id().map(hex::encode).unwrap_or_default()
    }

    pub(crate) fn inner(&self) -> &wasmsign2::PublicKey {
        &self.0
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl SecretKey {
    /// Reads a secret key file, refusing one that other users could read.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let unreadable = |err: std::io::Error| {
            Error::InvalidConfig(format!(
                "cannot read secret key `{}`: {err}",
                path.display()
            ))
        };
        let metadata = std::fs::metadata(path).map_err(unreadable)?;
        if !metadata.is_file() {
            return Err(Error::InvalidConfig(format!(
                "secret key `{}` is not a file",
                path.display()
            )));
        }
        let bytes = std::fs::read(path).map_err(unreadable)?;
        // A public key given by mistake (`--key alice.pub`) is named as such,
        // rather than advising `chmod` on a file meant to be shared.
        if wasmsign2::SecretKey::from_any(&bytes).is_err()
            && wasmsign2::PublicKey::from_any(&bytes).is_ok()
        {
            return Err(Error::InvalidConfig(format!(
                "`{}` is a public key; sign with its secret key (`{}` if it came from \
                 `warden keygen`)",
                path.display(),
                path.with_extension("key").display()
            )));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(Error::InvalidConfig(format!(
                    "secret key `{}` is accessible by other users (mode {mode:o}); run `chmod 600 {}`",
                    path.display(),
                    path.display()
                )));
            }
        }
        wasmsign2::SecretKey::from_any(&bytes)
            .map(SecretKey)
            .map_err(|err| {
                Error::InvalidConfig(format!(
                    "`{}` is not an Ed25519 secret key: {err}",
                    path.display()
                ))
            })
    }

    /// The public half of this key.
    pub fn public_key(&self) -> PublicKey {
        let public = wasmsign2::PublicKey {
            pk: self.0.sk.public_key(),
            key_id: None,
        };
        PublicKey(public.attach_default_key_id())
    }

    pub(crate) fn inner(&self) -> &wasmsign2::SecretKey {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(for {})", self.public_key().key_id())
    }
}

/// The two files `warden keygen NAME` writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFiles {
    /// `NAME.key`, readable by its owner only.
    pub secret: PathBuf,
    /// `NAME.pub`.
    pub public: PathBuf,
}

impl KeyFiles {
    /// The files for a key pair named `name` (a path without extension).
    pub fn named(name: impl AsRef<Path>) -> Self {
        let name = name.as_ref();
        let with_extension = |extension: &str| {
            let mut path = name.as_os_str().to_owned();
            path.push(".");
            path.push(extension);
            PathBuf::from(path)
        };
        KeyFiles {
            secret: with_extension("key"),
            public: with_extension("pub"),
        }
    }

    /// Generates a key pair and writes it, refusing to overwrite either file.
    pub fn generate(&self) -> Result<PublicKey, Error> {
        for path in [&self.secret, &self.public] {
            if path.exists() {
                return Err(Error::InvalidConfig(format!(
                    "`{}` already exists; refusing to overwrite a key",
                    path.display()
                )));
            }
        }
        let pair = wasmsign2::KeyPair::generate();
        write_new(&self.secret, &pair.sk.to_bytes(), 0o600)?;
        if let Err(err) = write_new(&self.public, &pair.pk.to_bytes(), 0o644) {
            // Leave no half-made key pair behind.
            let _ = std::fs::remove_file(&self.secret);
            return Err(err);
        }
        Ok(PublicKey(pair.pk.attach_default_key_id()))
    }
}

/// Creates `path` (which must not exist) with `mode` and writes `bytes`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    options
        .open(path)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()))
        .map_err(|err| Error::io(format!("cannot write `{}`", path.display()), err))
}

fn config_message(err: Error) -> String {
    match err {
        Error::InvalidConfig(message) => message,
        other => other.to_string(),
    }
}

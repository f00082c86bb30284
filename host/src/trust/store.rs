//! The trust store: named public keys whose signatures `signed-by trusted`
//! accepts, kept in a small TOML file.
//!
//! ```toml
//! [keys]
//! alice = "01c7…"   # the key in wasmsign2's raw format, as hex
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::keys::PublicKey;
use crate::error::Error;

/// Named public keys that Warden trusts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustStore {
    keys: BTreeMap<String, PublicKey>,
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
        let config_home = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|dir| !dir.is_empty())
                    .map(|home| Path::new(&home).join(".config"))
            })?;
        Some(config_home.join("warden").join("trust.toml"))
    }

    /// Reads a trust store; a missing file is an empty store.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(err) => {
                return Err(Error::InvalidConfig(format!(
                    "cannot read trust store `{}`: {err}",
                    path.display()
                )));
            }
        };
        let invalid = |message: String| {
            Error::InvalidConfig(format!("in trust store `{}`: {message}", path.display()))
        };
        let raw: RawStore = toml::from_str(&text).map_err(|err| invalid(err.to_string()))?;
        let mut keys = BTreeMap::new();
        for (name, encoded) in raw.keys {
            let bytes = hex::decode(&encoded)
                .map_err(|err| invalid(format!("key `{name}` is not hex: {err}")))?;
            let key = PublicKey::from_bytes(&bytes)
                .map_err(|err| invalid(format!("key `{name}`: {err}")))?;
            keys.insert(name, key);
        }
        Ok(TrustStore { keys })
    }

    /// Writes the store, replacing the file atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
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
        crate::fsutil::write_file_atomically(path, text.as_bytes())
    }

    /// Trusts `key` under `name`. A name or key can be trusted only once.
    pub fn add(&mut self, name: &str, key: PublicKey) -> Result<(), Error> {
        if name.is_empty() || name.chars().any(|c| c.is_control()) {
            return Err(Error::InvalidConfig(format!(
                "`{name}` is not a usable key name"
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

/// A TOML key: bare when it can be, quoted otherwise.
fn toml_key(name: &str) -> String {
    let bare = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare {
        name.to_owned()
    } else {
        format!("{:?}", name)
    }
}

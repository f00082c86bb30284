//! The manifest's `[trust]` tables: the signatures a plugin must carry.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::de::parsed;
use crate::trust::{PublicKey, SignerPolicy, TrustPolicy, TrustStore, UnsignedPolicy};

/// `[trust]`: signatures a plugin must carry.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrust {
    #[serde(default, deserialize_with = "parsed")]
    unsigned: Option<UnsignedPolicy>,
    #[serde(default, deserialize_with = "parsed")]
    signed_by: Option<SignerPolicy>,
    trust_store: Option<PathBuf>,
    #[serde(default)]
    keys: Vec<PathBuf>,
    pub(super) sha256: Option<String>,
}

impl RawTrust {
    /// Why these settings contradict each other, if they do: `signed_by =
    /// "trusted"` refuses every unsigned plugin, so `unsigned = "allow"` or
    /// `"warn"` beside it cannot mean what it says.
    pub(super) fn contradiction(&self) -> Option<String> {
        match (self.signed_by, self.unsigned) {
            (
                Some(SignerPolicy::Trusted),
                Some(unsigned @ (UnsignedPolicy::Allow | UnsignedPolicy::Warn)),
            ) => Some(format!(
                "`unsigned = \"{}\"` contradicts `signed_by = \"trusted\"`, which runs only \
                 plugins signed by a trusted key (unsigned ones are always refused); remove \
                 `unsigned`, or set `signed_by = \"any\"`",
                unsigned.as_str()
            )),
            _ => None,
        }
    }

    /// This plugin's trust settings, with `defaults` filling in what they
    /// leave out (except the pin, which is the plugin's own). A plugin's own
    /// `signed_by = "trusted"` implies `unsigned = "deny"` over the
    /// defaults' `unsigned`, as a more specific setting should; and the
    /// `unsigned = "deny"` that the defaults' `signed_by = "trusted"`
    /// implies is inherited like one they state, so a plugin that only says
    /// `signed_by = "any"` still needs a valid signature (as `--signed-by
    /// any` does on the command line) unless it says `unsigned` too.
    pub(super) fn or(self, defaults: &RawTrust) -> RawTrust {
        let defaults_unsigned = match (defaults.unsigned, defaults.signed_by) {
            (Some(unsigned), _) => Some(unsigned),
            (None, Some(SignerPolicy::Trusted)) => Some(UnsignedPolicy::Deny),
            (None, _) => None,
        };
        let unsigned = match (self.unsigned, self.signed_by) {
            (Some(unsigned), _) => Some(unsigned),
            (None, Some(SignerPolicy::Trusted)) => Some(UnsignedPolicy::Deny),
            (None, _) => defaults_unsigned,
        };
        RawTrust {
            unsigned,
            signed_by: self.signed_by.or(defaults.signed_by),
            trust_store: self.trust_store.or_else(|| defaults.trust_store.clone()),
            keys: if self.keys.is_empty() {
                defaults.keys.clone()
            } else {
                self.keys
            },
            sha256: self.sha256,
        }
    }

    /// Whether these settings decide what happens to an unsigned plugin.
    pub(super) fn states_unsigned(&self) -> bool {
        self.unsigned.is_some() || self.signed_by == Some(SignerPolicy::Trusted)
    }

    /// The trust store file: the one named, else the user's.
    pub(super) fn store_path(&self, base: &Path) -> Option<PathBuf> {
        self.trust_store
            .as_ref()
            .map(|path| base.join(path))
            .or_else(TrustStore::default_path)
    }

    /// The policy, reading the trust store and key files it names. A
    /// manifest that says nothing warns about unsigned plugins, as the
    /// command line does; `signed_by = "trusted"` denies them. A trust
    /// store that cannot be used fails only the plugins whose policy
    /// depends on it, when they load (see [`TrustStore::open_or_damaged`]).
    pub(super) fn into_policy(self, base: &Path) -> Result<TrustPolicy, String> {
        let trusted = self
            .store_path(base)
            .map(TrustStore::open_or_damaged)
            .unwrap_or_default();
        let known_keys = self
            .keys
            .iter()
            .map(|path| PublicKey::from_file(base.join(path)).map_err(|err| err.to_string()))
            .collect::<Result<_, _>>()?;
        let mut policy = TrustPolicy::development();
        policy.signed_by = self.signed_by.unwrap_or_default();
        policy.unsigned = match policy.signed_by {
            SignerPolicy::Trusted => UnsignedPolicy::Deny,
            SignerPolicy::Any => self.unsigned.unwrap_or(UnsignedPolicy::Warn),
        };
        policy.trusted = Arc::new(trusted);
        policy.known_keys = known_keys;
        policy.sha256 = self.sha256;
        Ok(policy)
    }
}

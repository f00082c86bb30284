//! The manifest's `kv` key: `kv = true`, or a table naming the store, the
//! namespace and the quotas.

use std::path::{Path, PathBuf};

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::de::size;
use super::options::{InvalidSetting, KV_PATH_KEY, default_kv_path};
use crate::capabilities::kv::{KvGrant, KvQuotas, KvStore};

/// A manifest's `kv` value: `kv = true` (the default location) or a table.
#[derive(Clone, Debug)]
pub(crate) enum KvTable {
    /// `kv = true` or `kv = false`.
    Enabled(bool),
    /// `kv = { path = "kv.sqlite", max_keys = 1000 }` and the like.
    Store(KvStoreTable),
}

/// What the manifest's `kv` key takes, for errors.
const KV_FORMS: &str = "`kv` takes `true` (the default location) or a table: \
     `kv = { path = \"kv.sqlite\" }` or `kv = { redis = \"redis://HOST:PORT/DB\" }`";

// By hand rather than `#[serde(untagged)]`, whose error ("did not match any
// variant of untagged enum") says nothing a person can act on.
impl<'de> Deserialize<'de> for KvTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KvVisitor;

        impl<'de> Visitor<'de> for KvVisitor {
            type Value = KvTable;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(KV_FORMS)
            }

            fn visit_bool<E: de::Error>(self, enabled: bool) -> Result<KvTable, E> {
                Ok(KvTable::Enabled(enabled))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<KvTable, E> {
                Err(E::custom(format!("`kv = \"{text}\"`: {KV_FORMS}")))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<KvTable, A::Error> {
                KvStoreTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(KvTable::Store)
            }
        }

        deserializer.deserialize_any(KvVisitor)
    }
}

/// A manifest's `kv` table: where the store is, the namespace, the quotas.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KvStoreTable {
    /// A SQLite file, relative to the manifest.
    path: Option<PathBuf>,
    /// A Redis server's `redis://` or `rediss://` URL.
    redis: Option<String>,
    /// [`KvGrant::namespace`].
    namespace: Option<String>,
    /// [`KvQuotas::max_key_bytes`].
    #[serde(default, deserialize_with = "size")]
    max_key: Option<u64>,
    /// [`KvQuotas::max_value_bytes`].
    #[serde(default, deserialize_with = "size")]
    max_value: Option<u64>,
    /// [`KvQuotas::max_total_bytes`].
    #[serde(default, deserialize_with = "size")]
    max_total: Option<u64>,
    /// [`KvQuotas::max_keys`].
    max_keys: Option<u64>,
    /// [`KvQuotas::max_batch_keys`].
    max_batch_keys: Option<usize>,
    /// [`KvQuotas::max_batch_bytes`].
    #[serde(default, deserialize_with = "size")]
    max_batch_bytes: Option<u64>,
}

impl KvStoreTable {
    pub(super) fn grant(&self, base: &Path) -> Result<KvGrant, InvalidSetting> {
        let defaults = KvQuotas::default();
        let saturating = |bytes: u64| usize::try_from(bytes).unwrap_or(usize::MAX);
        let store = match (&self.path, &self.redis) {
            (Some(_), Some(_)) => {
                return Err(InvalidSetting(
                    "kv: set `path` (a SQLite file) or `redis` (a server URL), not both".into(),
                ));
            }
            (None, Some(url)) => match url.parse() {
                Ok(store @ KvStore::Redis(_)) => store,
                _ => {
                    return Err(InvalidSetting(format!(
                        "kv: `redis = \"{url}\"` is not a redis:// or rediss:// URL"
                    )));
                }
            },
            (Some(path), None) => KvStore::File(base.join(path)),
            (None, None) => KvStore::File(default_kv_path("`kv` without `path`", KV_PATH_KEY)?),
        };
        Ok(KvGrant {
            store,
            namespace: self.namespace.clone(),
            quotas: KvQuotas {
                max_key_bytes: self.max_key.map_or(defaults.max_key_bytes, saturating),
                max_value_bytes: self.max_value.map_or(defaults.max_value_bytes, saturating),
                max_total_bytes: self.max_total.unwrap_or(defaults.max_total_bytes),
                max_keys: self.max_keys.unwrap_or(defaults.max_keys),
                max_batch_keys: self.max_batch_keys.unwrap_or(defaults.max_batch_keys),
                max_batch_bytes: self
                    .max_batch_bytes
                    .map_or(defaults.max_batch_bytes, saturating),
            },
        })
    }
}

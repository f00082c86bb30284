//! What every kv backend provides, and the rules they share: quota checks,
//! usage accounting, the counter format and the page size of `list-keys`.
//! Keeping them here means a SQLite file and a Redis server refuse the same
//! writes with the same messages.

use super::KvQuotas;
use crate::capabilities::interrupt::{Interrupt, Interrupted};

/// Keys returned by one `list-keys` page.
pub(crate) const LIST_PAGE: usize = 1000;

/// A key and its value.
pub(crate) type Entry = (String, Vec<u8>);

/// Where a key lives: a plugin's namespace and one of its buckets.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Place<'a> {
    pub namespace: &'a str,
    pub bucket: &'a str,
}

/// What an operation that writes, or reads in a batch, works within: where
/// its keys live, the namespace's quotas, and the interrupt of the call it
/// serves.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scope<'a> {
    pub place: Place<'a>,
    pub quotas: &'a KvQuotas,
    pub interrupt: &'a Interrupt,
}

/// Why a key-value operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("kv quota exceeded: {0}")]
    Quota(String),
    #[error("kv value of `{key}` is not a decimal counter")]
    NotACounter { key: String },
    #[error("kv counter `{key}` would overflow")]
    Overflow { key: String },
    #[error("kv store busy: other writers kept changing the namespace for {seconds}s")]
    Contended { seconds: u64 },
    #[error("kv batch too large: {0}")]
    BatchTooLarge(String),
    #[error(
        "kv operation stopped: its call was cancelled or ran out of time, and nothing was changed"
    )]
    Interrupted,
    #[error("kv store error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("kv store error: {0}")]
    Redis(#[from] redis::RedisError),
    /// The store's file could have been written by another user.
    #[error("refusing the kv store: {0}")]
    Exposed(String),
}

impl From<Interrupted> for StoreError {
    fn from(_: Interrupted) -> Self {
        StoreError::Interrupted
    }
}

/// A place that stores plugins' keys. Every operation is atomic: it happens
/// whole or not at all, even with other processes writing the same store.
/// The methods block; callers run them off the async threads.
pub(crate) trait Backend: std::fmt::Debug + Send + Sync {
    /// The value of a key, if it exists.
    fn get(&self, place: Place<'_>, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Whether a key exists.
    fn exists(&self, place: Place<'_>, key: &str) -> Result<bool, StoreError> {
        Ok(self.get(place, key)?.is_some())
    }

    /// The values of several keys, read at one moment; refused when they
    /// add up to more than [`KvQuotas::max_batch_bytes`].
    fn get_many(&self, scope: Scope<'_>, keys: &[String])
    -> Result<Vec<Option<Entry>>, StoreError>;

    /// Writes every pair, all or nothing, within the namespace's quotas. When
    /// a key is given twice the last value wins. An interrupt stops it with
    /// nothing written.
    fn set_many(&self, scope: Scope<'_>, pairs: &[Entry]) -> Result<(), StoreError>;

    /// Deletes every key that exists, all or nothing; missing keys are not
    /// an error, and no quota applies. An interrupt stops it with nothing
    /// deleted.
    fn delete_many(&self, scope: Scope<'_>, keys: &[String]) -> Result<(), StoreError>;

    /// Adds `delta` to the decimal counter at `key` (absent counts as 0) and
    /// returns the new value.
    fn increment(&self, scope: Scope<'_>, key: &str, delta: u64) -> Result<u64, StoreError>;

    /// One page of at most [`LIST_PAGE`] keys in byte order, starting
    /// `offset` keys in, and the offset of the next page if there is one.
    fn list_keys(
        &self,
        place: Place<'_>,
        offset: u64,
    ) -> Result<(Vec<String>, Option<u64>), StoreError>;
}

/// Turns a page read with one key more than [`LIST_PAGE`] into the page and
/// the next page's offset.
pub(crate) fn into_page(mut keys: Vec<String>, offset: u64) -> (Vec<String>, Option<u64>) {
    let next = (keys.len() > LIST_PAGE).then(|| {
        keys.truncate(LIST_PAGE);
        offset.saturating_add(LIST_PAGE as u64)
    });
    (keys, next)
}

/// What an entry counts against the total-bytes quota: its bucket's name
/// (stored with every entry), its key and its value.
pub(crate) fn entry_size(place: Place<'_>, key: &str, value_len: usize) -> u64 {
    (place.bucket.len() + key.len() + value_len) as u64
}

/// The counter after adding `delta` to `current` (the stored value, if any),
/// and its stored form: the decimal digits of a `u64`.
pub(crate) fn incremented(
    key: &str,
    current: Option<&[u8]>,
    delta: u64,
) -> Result<(u64, Vec<u8>), StoreError> {
    let current = match current {
        None => 0,
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or_else(|| StoreError::NotACounter { key: key.into() })?,
    };
    let next = current
        .checked_add(delta)
        .ok_or_else(|| StoreError::Overflow { key: key.into() })?;
    Ok((next, next.to_string().into_bytes()))
}

/// A namespace's key count and byte total.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Usage {
    pub keys: u64,
    pub bytes: u64,
}

impl Usage {
    /// Accounts for an entry of size `new` replacing one of size `old`;
    /// `None` means no entry (a new key, or a deletion).
    pub(crate) fn replace(&mut self, old: Option<u64>, new: Option<u64>) {
        if let Some(old) = old {
            self.keys = self.keys.saturating_sub(1);
            self.bytes = self.bytes.saturating_sub(old);
        }
        if let Some(new) = new {
            self.keys = self.keys.saturating_add(1);
            self.bytes = self.bytes.saturating_add(new);
        }
    }

    /// Refuses usage beyond the namespace's quotas.
    pub(crate) fn check(&self, quotas: &KvQuotas) -> Result<(), StoreError> {
        if self.keys > quotas.max_keys {
            return Err(StoreError::Quota(format!(
                "the namespace would hold {} keys (at most {})",
                self.keys, quotas.max_keys
            )));
        }
        if self.bytes > quotas.max_total_bytes {
            return Err(StoreError::Quota(format!(
                "the namespace would hold {} bytes (at most {})",
                self.bytes, quotas.max_total_bytes
            )));
        }
        Ok(())
    }
}

impl KvQuotas {
    /// Refuses a key or value larger than the quotas allow.
    pub(crate) fn check_entry(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        if key.len() > self.max_key_bytes {
            return Err(StoreError::Quota(format!(
                "a key of {} bytes is longer than {} bytes",
                key.len(),
                self.max_key_bytes
            )));
        }
        if value.len() > self.max_value_bytes {
            return Err(StoreError::Quota(format!(
                "a value of {} bytes is larger than {} bytes",
                value.len(),
                self.max_value_bytes
            )));
        }
        Ok(())
    }

    /// Refuses a batch of pairs if any key or value is larger than the quotas
    /// allow.
    pub(crate) fn check_entries(&self, pairs: &[Entry]) -> Result<(), StoreError> {
        pairs
            .iter()
            .try_for_each(|(key, value)| self.check_entry(key, value))
    }

    /// Refuses a batch call naming more than [`KvQuotas::max_batch_keys`]
    /// keys or carrying more than [`KvQuotas::max_batch_bytes`] bytes.
    pub(crate) fn check_batch(&self, keys: usize, bytes: usize) -> Result<(), StoreError> {
        if keys > self.max_batch_keys {
            return Err(StoreError::BatchTooLarge(format!(
                "{keys} keys in one call, at most {}; split it into smaller batches",
                self.max_batch_keys
            )));
        }
        self.check_batch_bytes(bytes)
    }

    /// Refuses a batch whose keys and values add up to more than
    /// [`KvQuotas::max_batch_bytes`].
    pub(crate) fn check_batch_bytes(&self, bytes: usize) -> Result<(), StoreError> {
        if bytes > self.max_batch_bytes {
            return Err(StoreError::BatchTooLarge(format!(
                "more than {} bytes of keys and values in one call; split it into smaller batches",
                self.max_batch_bytes
            )));
        }
        Ok(())
    }
}

//! `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft`, the versions in
//! Warden's world, on top of `@0.2.0-draft2`, the versions Spin 3.x provides
//! (the stores named in a component's `key_value_stores`).
//! `warden export-http --target spin` composes it in front of plugins that
//! use the key-value store.
//!
//! Each exported bucket wraps the engine's bucket of the same name, and the
//! error cases map one to one (`no-such-store`, `access-denied`, `other`).
//! Where the drafts differ, the bridge translates instead of guessing:
//! - `list-keys` pages with a `u64` cursor in draft and a `string` cursor in
//!   draft2. The bridge keeps each string cursor the engine hands out in its
//!   bucket and gives the plugin that cursor's index; an index the bucket
//!   never handed out is an `other` error. (Spin 3.x returns every key in one
//!   page, so in practice no cursor is handed out.)
//! - `increment` takes and returns a `u64` in draft and an `s64` in draft2. A
//!   delta above `i64::MAX` is refused before the engine is called; a result
//!   below zero (the stored number was negative, which only another client
//!   can have written) is reported as an `other` error, after the increment
//!   took effect.
//! - `get-many` answers one `option<tuple<key, value>>` per requested key, in
//!   order, in draft, and `tuple<key, option<value>>` pairs in draft2. The
//!   bridge matches the engine's pairs to the requested keys by key, so the
//!   answer keeps draft's shape whatever order or subset the engine returns.
//! - draft2's compare-and-swap (`cas`, `swap`) has no draft counterpart and
//!   is not used.

wit_bindgen::generate!({
    path: ["../../wit", "wit/keyvalue-0.2.0-draft2"],
    inline: "
        package warden:keyvalue-bridge-draft2;

        world keyvalue-bridge {
            import wasi:keyvalue/store@0.2.0-draft2;
            import wasi:keyvalue/atomics@0.2.0-draft2;
            import wasi:keyvalue/batch@0.2.0-draft2;
            export wasi:keyvalue/store@0.2.0-draft;
            export wasi:keyvalue/atomics@0.2.0-draft;
            export wasi:keyvalue/batch@0.2.0-draft;
        }
    ",
    world: "warden:keyvalue-bridge-draft2/keyvalue-bridge",
    generate_all,
});

use std::cell::RefCell;
use std::collections::BTreeMap;

use exports::wasi::keyvalue0_2_0_draft::store::{BucketBorrow, Error, KeyResponse};
use exports::wasi::keyvalue0_2_0_draft::{atomics, batch, store};
use wasi::keyvalue0_2_0_draft2::{
    atomics as spin_atomics, batch as spin_batch, store as spin_store,
};

struct Bridge;

/// An exported bucket: the engine's bucket and the `list-keys` cursors it
/// has handed out, by the index the plugin knows them by.
struct Bucket {
    inner: spin_store::Bucket,
    cursors: RefCell<Vec<String>>,
}

impl Bucket {
    /// The index the plugin gets for the engine's cursor; a cursor handed out
    /// before keeps its index, so paging again does not grow the list.
    fn remember_cursor(&self, cursor: String) -> u64 {
        let mut cursors = self.cursors.borrow_mut();
        let index = match cursors.iter().position(|known| *known == cursor) {
            Some(index) => index,
            None => {
                cursors.push(cursor);
                cursors.len() - 1
            }
        };
        // A `usize` index always fits a `u64` on wasm32.
        index as u64
    }

    /// The engine's cursor behind an index this bucket handed out.
    fn recall_cursor(&self, index: u64) -> Result<String, Error> {
        usize::try_from(index)
            .ok()
            .and_then(|index| self.cursors.borrow().get(index).cloned())
            .ok_or_else(|| {
                Error::Other(format!(
                    "unknown list-keys cursor {index}: a cursor must come from an earlier \
                     list-keys on the same bucket"
                ))
            })
    }
}

impl store::Guest for Bridge {
    type Bucket = Bucket;

    fn open(identifier: String) -> Result<store::Bucket, Error> {
        let inner = spin_store::open(&identifier).map_err(from_spin)?;
        Ok(store::Bucket::new(Bucket {
            inner,
            cursors: RefCell::new(Vec::new()),
        }))
    }
}

impl store::GuestBucket for Bucket {
    fn get(&self, key: String) -> Result<Option<Vec<u8>>, Error> {
        self.inner.get(&key).map_err(from_spin)
    }

    fn set(&self, key: String, value: Vec<u8>) -> Result<(), Error> {
        self.inner.set(&key, &value).map_err(from_spin)
    }

    fn delete(&self, key: String) -> Result<(), Error> {
        self.inner.delete(&key).map_err(from_spin)
    }

    fn exists(&self, key: String) -> Result<bool, Error> {
        self.inner.exists(&key).map_err(from_spin)
    }

    fn list_keys(&self, cursor: Option<u64>) -> Result<KeyResponse, Error> {
        let cursor = cursor.map(|index| self.recall_cursor(index)).transpose()?;
        let response = self.inner.list_keys(cursor.as_deref()).map_err(from_spin)?;
        Ok(KeyResponse {
            keys: response.keys,
            cursor: response.cursor.map(|next| self.remember_cursor(next)),
        })
    }
}

impl atomics::Guest for Bridge {
    fn increment(bucket: BucketBorrow<'_>, key: String, delta: u64) -> Result<u64, Error> {
        let delta = i64::try_from(delta).map_err(|_| {
            Error::Other(format!(
                "increment by {delta} is out of range: the engine's wasi:keyvalue@0.2.0-draft2 \
                 counts in signed 64 bits (at most {})",
                i64::MAX
            ))
        })?;
        let bucket = bucket.get::<Bucket>();
        let value = spin_atomics::increment(&bucket.inner, &key, delta).map_err(from_spin)?;
        u64::try_from(value).map_err(|_| {
            Error::Other(format!(
                "`{key}` is now {value}: the increment was applied, but a negative count \
                 cannot be returned as wasi:keyvalue@0.2.0-draft's unsigned 64-bit value"
            ))
        })
    }
}

impl batch::Guest for Bridge {
    fn get_many(
        bucket: BucketBorrow<'_>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, Error> {
        let bucket = bucket.get::<Bucket>();
        let found: BTreeMap<String, Vec<u8>> = spin_batch::get_many(&bucket.inner, &keys)
            .map_err(from_spin)?
            .into_iter()
            .filter_map(|(key, value)| Some((key, value?)))
            .collect();
        Ok(keys
            .into_iter()
            .map(|key| {
                let value = found.get(&key)?.clone();
                Some((key, value))
            })
            .collect())
    }

    fn set_many(bucket: BucketBorrow<'_>, key_values: Vec<(String, Vec<u8>)>) -> Result<(), Error> {
        let bucket = bucket.get::<Bucket>();
        spin_batch::set_many(&bucket.inner, &key_values).map_err(from_spin)
    }

    fn delete_many(bucket: BucketBorrow<'_>, keys: Vec<String>) -> Result<(), Error> {
        let bucket = bucket.get::<Bucket>();
        spin_batch::delete_many(&bucket.inner, &keys).map_err(from_spin)
    }
}

/// The same three cases in both drafts, carried over with their messages.
fn from_spin(error: spin_store::Error) -> Error {
    match error {
        spin_store::Error::NoSuchStore => Error::NoSuchStore,
        spin_store::Error::AccessDenied => Error::AccessDenied,
        spin_store::Error::Other(message) => Error::Other(message),
    }
}

export!(Bridge);

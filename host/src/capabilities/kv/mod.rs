//! The `kv` capability: `wasi:keyvalue` (`store`, `atomics`, `batch`),
//! backed by a SQLite file ([`KvGrant`], `--kv-store [PATH]`).
//!
//! Each plugin gets its own namespace in the file (its name unless the grant
//! says otherwise), so one plugin can never read or write another's keys.
//! Within it any bucket name opens, and `default` is the conventional one.
//! Every operation is one transaction: a batch is all or nothing, an
//! increment is exact even with other processes incrementing the same key,
//! and a plugin that traps or is killed mid-call leaves only whole
//! transactions behind. Quotas bound key size, value size, total bytes and
//! the number of keys per namespace.
//!
//! A plugin without the grant gets `access-denied` from `open`, recorded as a
//! denial.

mod database;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use self::database::{Database, DbError, Place};
use super::{Capability, DenialLog, Risk};
use crate::bindings::wasi::keyvalue::store::{Error as KvError, KeyResponse};
use crate::bindings::wasi::keyvalue::{atomics, batch, store};
use crate::error::Error;
use crate::state::HostState;

pub(crate) const CAPABILITY: Capability = Capability {
    name: "kv",
    interfaces: &[
        "wasi:keyvalue/store",
        "wasi:keyvalue/atomics",
        "wasi:keyvalue/batch",
    ],
    risk: |_| Risk::Medium,
    granted: |sandbox| sandbox.grants.kv.is_some(),
    how_to_grant: "--kv-store [PATH]",
    add_to_linker,
};

fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    fn view(state: &mut HostState) -> KvView<'_> {
        KvView {
            table: &mut state.table,
            state: &state.caps.kv,
        }
    }
    store::add_to_linker::<_, KvAccess>(linker, view)?;
    atomics::add_to_linker::<_, KvAccess>(linker, view)?;
    batch::add_to_linker::<_, KvAccess>(linker, view)
}

/// Persistent key-value storage granted to a plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KvGrant {
    /// The SQLite file; created, with its directory, if missing.
    pub path: PathBuf,
    /// The namespace the plugin's keys live in. Default: the plugin's name.
    pub namespace: Option<String>,
    /// Bounds on what the namespace may hold.
    pub quotas: KvQuotas,
}

impl KvGrant {
    /// A grant of the store at `path` with default quotas.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        KvGrant {
            path: path.into(),
            namespace: None,
            quotas: KvQuotas::default(),
        }
    }

    /// The store used when no path is given: `$XDG_DATA_HOME/warden/kv.sqlite`,
    /// else `$HOME/.local/share/warden/kv.sqlite`. `None` when neither
    /// variable is set.
    pub fn default_path() -> Option<PathBuf> {
        let data_home = std::env::var_os("XDG_DATA_HOME")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|dir| !dir.is_empty())
                    .map(|home| Path::new(&home).join(".local/share"))
            })?;
        Some(data_home.join("warden").join("kv.sqlite"))
    }
}

/// Bounds on one namespace of the key-value store.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KvQuotas {
    /// Longest key, in bytes. Default: 1 KiB.
    pub max_key_bytes: usize,
    /// Largest value, in bytes. Default: 1 MiB.
    pub max_value_bytes: usize,
    /// Keys plus values across the namespace, in bytes. Default: 64 MiB.
    pub max_total_bytes: u64,
    /// Keys across the namespace. Default: 100,000.
    pub max_keys: u64,
}

impl Default for KvQuotas {
    fn default() -> Self {
        KvQuotas {
            max_key_bytes: 1 << 10,
            max_value_bytes: 1 << 20,
            max_total_bytes: 64 << 20,
            max_keys: 100_000,
        }
    }
}

/// Longest bucket name a plugin may open.
const MAX_BUCKET_NAME_BYTES: usize = 256;

/// A plugin's handle on the store: the database, its namespace and quotas.
/// Opened once per plugin and shared by its instances.
#[derive(Clone, Debug)]
pub(crate) struct SharedStore {
    database: Arc<Database>,
    namespace: Arc<str>,
    quotas: Arc<KvQuotas>,
}

impl SharedStore {
    pub(crate) fn open(grant: &KvGrant, plugin_name: &str) -> Result<Self, Error> {
        let path = &grant.path;
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            create_private_dir(parent).map_err(|err| {
                Error::InvalidConfig(format!(
                    "cannot create the kv store's directory `{}`: {err}",
                    parent.display()
                ))
            })?;
        }
        let database = Database::open(path).map_err(|err| {
            Error::InvalidConfig(format!(
                "cannot open the kv store `{}`: {err}",
                path.display()
            ))
        })?;
        Ok(SharedStore {
            database: Arc::new(database),
            namespace: grant.namespace.as_deref().unwrap_or(plugin_name).into(),
            quotas: Arc::new(grant.quotas.clone()),
        })
    }

    /// Runs one database operation off the async threads.
    async fn run<T: Send + 'static>(
        &self,
        bucket: String,
        operation: impl FnOnce(&Database, Place<'_>, &KvQuotas) -> Result<T, DbError> + Send + 'static,
    ) -> wasmtime::Result<Result<T, KvError>> {
        let store = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let place = Place {
                namespace: &store.namespace,
                bucket: &bucket,
            };
            operation(&store.database, place, &store.quotas)
        })
        .await?;
        Ok(result.map_err(|err| KvError::Other(err.to_string())))
    }
}

/// Creates a directory (and its parents) readable by its owner only, since
/// it holds plugins' data.
fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// A bucket the guest opened: a name within the plugin's namespace.
#[derive(Debug)]
pub struct Bucket {
    name: String,
}

/// The kv state of one instance.
#[derive(Debug)]
pub(crate) struct KvState {
    store: Option<SharedStore>,
    denials: DenialLog,
}

impl KvState {
    pub(crate) fn new(store: Option<&SharedStore>, denials: &DenialLog) -> Self {
        KvState {
            store: store.cloned(),
            denials: denials.clone(),
        }
    }
}

/// What the kv host functions borrow from the store's state.
struct KvView<'a> {
    table: &'a mut ResourceTable,
    state: &'a KvState,
}

struct KvAccess;

impl HasData for KvAccess {
    type Data<'a> = KvView<'a>;
}

impl KvView<'_> {
    /// The store and bucket name behind a guest's bucket handle.
    fn bucket(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<(SharedStore, String)> {
        let name = self.table.get(bucket)?.name.clone();
        let store = self
            .state
            .store
            .clone()
            .ok_or_else(|| wasmtime::format_err!("a kv bucket exists without a store"))?;
        Ok((store, name))
    }
}

impl store::Host for KvView<'_> {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<Bucket>, KvError>> {
        if self.state.store.is_none() {
            self.state
                .denials
                .record("kv", format!("opening bucket `{identifier}`"));
            return Ok(Err(KvError::AccessDenied));
        }
        if identifier.is_empty() || identifier.len() > MAX_BUCKET_NAME_BYTES {
            return Ok(Err(KvError::NoSuchStore));
        }
        Ok(Ok(self.table.push(Bucket { name: identifier })?))
    }
}

impl store::HostBucket for KvView<'_> {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, KvError>> {
        let (store, name) = self.bucket(&bucket)?;
        store
            .run(name, move |db, place, _| db.get(place, &key))
            .await
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), KvError>> {
        let (store, name) = self.bucket(&bucket)?;
        store
            .run(name, move |db, place, quotas| {
                db.set_many(place, &[(key, value)], quotas)
            })
            .await
    }

    async fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), KvError>> {
        let (store, name) = self.bucket(&bucket)?;
        store
            .run(name, move |db, place, _| db.delete_many(place, &[key]))
            .await
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, KvError>> {
        let (store, name) = self.bucket(&bucket)?;
        store
            .run(name, move |db, place, _| db.exists(place, &key))
            .await
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<KeyResponse, KvError>> {
        let (store, name) = self.bucket(&bucket)?;
        let page = store
            .run(name, move |db, place, _| {
                db.list_keys(place, cursor.unwrap_or(0))
            })
            .await?;
        Ok(page.map(|(keys, cursor)| KeyResponse { keys, cursor }))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for KvView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> wasmtime::Result<Result<u64, KvError>> {
        let (store, name) = self.bucket(&bucket)?;
        store
            .run(name, move |db, place, quotas| {
                db.increment(place, &key, delta, quotas)
            })
            .await
    }
}

impl batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<(String, Vec<u8>)>>, KvError>> {
        let (store, name) = self.bucket(&bucket)?;
        store
            .run(name, move |db, place, _| db.get_many(place, &keys))
            .await
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), KvError>> {
        let (store, name) = self.bucket(&bucket)?;
        store
            .run(name, move |db, place, quotas| {
                db.set_many(place, &key_values, quotas)
            })
            .await
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), KvError>> {
        let (store, name) = self.bucket(&bucket)?;
        store
            .run(name, move |db, place, _| db.delete_many(place, &keys))
            .await
    }
}

/// An operator's view of a kv store file, for `warden kv`: read, list and
/// delete the keys of one namespace without running any plugin.
#[derive(Debug)]
pub struct KvInspector {
    database: Database,
    namespace: String,
}

impl KvInspector {
    /// Opens the store at `path` (which must exist) for `namespace`.
    pub fn open(path: &Path, namespace: &str) -> Result<Self, Error> {
        if !path.is_file() {
            return Err(Error::InvalidConfig(format!(
                "there is no kv store at `{}`",
                path.display()
            )));
        }
        let database = Database::open(path).map_err(|err| {
            Error::InvalidConfig(format!(
                "cannot open the kv store `{}`: {err}",
                path.display()
            ))
        })?;
        Ok(KvInspector {
            database,
            namespace: namespace.to_owned(),
        })
    }

    fn place<'a>(&'a self, bucket: &'a str) -> Place<'a> {
        Place {
            namespace: &self.namespace,
            bucket,
        }
    }

    /// The buckets of the namespace that hold keys.
    pub fn buckets(&self) -> Result<Vec<String>, Error> {
        self.database
            .buckets(&self.namespace)
            .map_err(inspection_error)
    }

    /// Every key of a bucket, in order.
    pub fn keys(&self, bucket: &str) -> Result<Vec<String>, Error> {
        let mut keys = Vec::new();
        let mut cursor = Some(0);
        while let Some(offset) = cursor {
            let (page, next) = self
                .database
                .list_keys(self.place(bucket), offset)
                .map_err(inspection_error)?;
            keys.extend(page);
            cursor = next;
        }
        Ok(keys)
    }

    /// The value of a key, if it exists.
    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.database
            .get(self.place(bucket), key)
            .map_err(inspection_error)
    }

    /// Deletes a key; returns whether it existed.
    pub fn delete(&self, bucket: &str, key: &str) -> Result<bool, Error> {
        let place = self.place(bucket);
        let existed = self.database.exists(place, key).map_err(inspection_error)?;
        self.database
            .delete_many(place, &[key.to_owned()])
            .map_err(inspection_error)?;
        Ok(existed)
    }
}

fn inspection_error(err: DbError) -> Error {
    Error::Io {
        context: "reading the kv store".into(),
        source: std::io::Error::other(err.to_string()),
    }
}

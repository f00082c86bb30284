//! The `kv` capability: `wasi:keyvalue` (`store`, `atomics`, `batch`),
//! backed by a SQLite file or a Redis server ([`KvGrant`], [`KvStore`],
//! `--kv-store PATH|URL`). A file serves the processes of one machine; a
//! Redis server lets replicas on several machines share plugin state.
//!
//! Each plugin gets its own namespace in the store (its name unless the
//! grant says otherwise), so one plugin can never read or write another's
//! keys. Within it any bucket name opens, and `default` is the conventional
//! one. Every operation is one transaction: a batch is all or nothing, an
//! increment is exact even with other processes incrementing the same key,
//! and a plugin that traps or is killed mid-call leaves only whole
//! transactions behind. Quotas bound key size, value size, total bytes
//! (bucket names included) and the number of keys per namespace, and the keys
//! and bytes of one batch call. The blocking work of an operation stops, and
//! rolls back, when its call is cancelled or reaches its deadline, so a
//! timed-out call never holds the store's write lock for long. Both backends
//! behave the same, down to the error messages, the counter format (decimal
//! text) and the pages of `list-keys` (1000 keys, in byte order).
//!
//! A plugin without the grant gets `access-denied` from `open`, recorded as a
//! denial.
//!
//! This file is over 400 lines on purpose: the store, atomics and batch host
//! functions share one view, one error mapping and the grant they check.

mod backend;
mod database;
mod redis_store;

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use self::backend::{Backend, Place, Scope, StoreError};
use self::database::Database;
use self::redis_store::RedisStore;
use super::interrupt::{CancelOnDrop, Interrupt};
use super::{Capability, DenialLog, InstanceSetup, Risk};
use crate::bindings::wasi::keyvalue::store::{Error as KvError, KeyResponse};
use crate::bindings::wasi::keyvalue::{atomics, batch, store};
use crate::error::Error;
use crate::fsutil::{self, UserDir};
use crate::grants::Sandbox;
use crate::host_memory::truncate_record_text;
use crate::state::HostState;

/// The `kv` capability.
pub(crate) struct Kv;

impl Capability for Kv {
    const NAME: &'static str = "kv";
    const INTERFACES: &'static [&'static str] = &[
        "wasi:keyvalue/store",
        "wasi:keyvalue/atomics",
        "wasi:keyvalue/batch",
    ];
    const HOW_TO_GRANT: &'static str =
        "--kv or --kv-store PATH|URL, or `kv` in a manifest's [grants]";
    /// The store, opened once per plugin when it is granted.
    type Shared = Option<SharedStore>;
    type State = KvState;

    fn risk(_: &Sandbox) -> Risk {
        Risk::Medium
    }

    fn granted(sandbox: &Sandbox) -> bool {
        sandbox.grants.kv.is_some()
    }

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        fn view(state: &mut HostState) -> KvView<'_> {
            KvView {
                deadline: state.call_deadline(),
                table: &mut state.table,
                state: &state.caps.kv,
            }
        }
        store::add_to_linker::<_, KvAccess>(linker, view)?;
        atomics::add_to_linker::<_, KvAccess>(linker, view)?;
        batch::add_to_linker::<_, KvAccess>(linker, view)
    }

    fn prepare(plugin_name: &str, sandbox: &Sandbox) -> Result<Option<SharedStore>, Error> {
        let grant = sandbox.grants.kv.as_ref();
        grant
            .map(|grant| SharedStore::open(grant, plugin_name))
            .transpose()
    }

    fn instantiate(store: &Option<SharedStore>, setup: &mut InstanceSetup<'_>) -> KvState {
        KvState {
            store: store.clone(),
            denials: setup.denials.clone(),
        }
    }
}

/// Persistent key-value storage granted to a plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KvGrant {
    /// Where the keys are kept.
    pub store: KvStore,
    /// The namespace the plugin's keys live in. Default: the plugin's name.
    pub namespace: Option<String>,
    /// Bounds on what the namespace may hold.
    pub quotas: KvQuotas,
}

impl KvGrant {
    /// A grant of `store` with the default namespace and quotas.
    pub fn new(store: KvStore) -> Self {
        KvGrant {
            store,
            namespace: None,
            quotas: KvQuotas::default(),
        }
    }

    /// A grant of the SQLite file at `path` with default quotas.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        KvGrant::new(KvStore::File(path.into()))
    }

    /// A grant of the Redis server at `url` (see [`KvStore::Redis`]) with
    /// default quotas.
    pub fn redis(url: impl Into<String>) -> Self {
        KvGrant::new(KvStore::Redis(url.into()))
    }

    /// The store used when no path is given: `$XDG_DATA_HOME/warden/kv.sqlite`,
    /// else `$HOME/.local/share/warden/kv.sqlite`. `None` when neither
    /// variable is set.
    pub fn default_path() -> Option<PathBuf> {
        UserDir::Data.warden_path("kv.sqlite")
    }
}

/// Where a kv store keeps its data.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvStore {
    /// A SQLite file, created if missing (readable by its owner only). Its
    /// directory must exist, except for [`KvGrant::default_path`]'s, which
    /// is created. Processes on one machine can share it.
    File(PathBuf),
    /// A Redis server, as `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`
    /// (port 6379 and database 0 by default); processes on any machine that
    /// reaches it can share it. Checked with a `PING` when a plugin loads.
    /// This build has no TLS, so `rediss://` URLs are refused at load.
    Redis(String),
}

impl KvStore {
    /// Whether `text` is a Redis URL rather than a file path.
    fn is_redis_url(text: &str) -> bool {
        text.starts_with("redis://") || text.starts_with("rediss://")
    }
}

/// Reads a store as written on the command line: a `redis://` or
/// `rediss://` URL names a Redis server, anything else a file.
impl FromStr for KvStore {
    type Err = Infallible;

    fn from_str(text: &str) -> Result<Self, Infallible> {
        Ok(if KvStore::is_redis_url(text) {
            KvStore::Redis(text.to_owned())
        } else {
            KvStore::File(PathBuf::from(text))
        })
    }
}

/// The file's path, or the server's URL without its password.
impl fmt::Display for KvStore {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvStore::File(path) => write!(formatter, "{}", path.display()),
            KvStore::Redis(url) => formatter.write_str(&without_password(url)),
        }
    }
}

/// Like [`Display`](fmt::Display): a password never reaches a log.
impl fmt::Debug for KvStore {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvStore::File(path) => formatter.debug_tuple("File").field(path).finish(),
            KvStore::Redis(url) => formatter
                .debug_tuple("Redis")
                .field(&without_password(url))
                .finish(),
        }
    }
}

/// A URL with its user information (which holds the password) replaced by
/// `***`.
fn without_password(url: &str) -> Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Cow::Borrowed(url);
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => Cow::Owned(format!("{scheme}://***{}", &rest[at..])),
        None => Cow::Borrowed(url),
    }
}

/// Bounds on one namespace of the key-value store, and on one batch call.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KvQuotas {
    /// Longest key, in bytes. Default: 1 KiB.
    pub max_key_bytes: usize,
    /// Largest value, in bytes. Default: 1 MiB.
    pub max_value_bytes: usize,
    /// Bucket names, keys and values across the namespace, in bytes (each
    /// entry counts its bucket's name, which is stored with it). Default:
    /// 64 MiB.
    pub max_total_bytes: u64,
    /// Keys across the namespace. Default: 100,000.
    pub max_keys: u64,
    /// Keys one `wasi:keyvalue/batch` call may name (`get-many`,
    /// `set-many`, `delete-many`); a larger batch is refused before it
    /// reaches the store. Default: [`KvQuotas::DEFAULT_MAX_BATCH_KEYS`].
    pub max_batch_keys: usize,
    /// Bytes of keys and values one batch call may carry (`set-many`) or
    /// return (`get-many`). Default: [`KvQuotas::DEFAULT_MAX_BATCH_BYTES`].
    pub max_batch_bytes: usize,
}

impl KvQuotas {
    /// Default for [`KvQuotas::max_batch_keys`]: 10,000. A batch is one
    /// transaction holding the store's write lock, so its length bounds how
    /// long every other writer of the store waits.
    pub const DEFAULT_MAX_BATCH_KEYS: usize = 10_000;
    /// Default for [`KvQuotas::max_batch_bytes`]: 16 MiB, the default
    /// input and output limit of a call, so that a batch never holds more
    /// host memory than a call's own data.
    pub const DEFAULT_MAX_BATCH_BYTES: usize = 16 << 20;
}

impl Default for KvQuotas {
    fn default() -> Self {
        KvQuotas {
            max_key_bytes: 1 << 10,
            max_value_bytes: 1 << 20,
            max_total_bytes: 64 << 20,
            max_keys: 100_000,
            max_batch_keys: Self::DEFAULT_MAX_BATCH_KEYS,
            max_batch_bytes: Self::DEFAULT_MAX_BATCH_BYTES,
        }
    }
}

/// Longest bucket name a plugin may open.
const MAX_BUCKET_NAME_BYTES: usize = 256;

/// A plugin's handle on the store: the backend, its namespace and quotas.
/// Opened once per plugin and shared by its instances.
#[derive(Clone, Debug)]
pub(crate) struct SharedStore {
    backend: Arc<dyn Backend>,
    namespace: Arc<str>,
    quotas: Arc<KvQuotas>,
}

impl SharedStore {
    /// Opens (or for a file, creates) the granted store; a Redis server must
    /// answer now, so that a wrong URL fails the load, not the first call.
    fn open(grant: &KvGrant, plugin_name: &str) -> Result<Self, Error> {
        let backend: Arc<dyn Backend> = match &grant.store {
            KvStore::File(path) => Arc::new(open_file(path)?),
            KvStore::Redis(url) => Arc::new(RedisStore::connect(url).map_err(|err| {
                Error::InvalidConfig(format!("cannot use the kv store `{}`: {err}", grant.store))
            })?),
        };
        Ok(SharedStore {
            backend,
            namespace: grant.namespace.as_deref().unwrap_or(plugin_name).into(),
            quotas: Arc::new(grant.quotas.clone()),
        })
    }

    /// Runs one store operation off the async threads. The operation is
    /// interrupted when this future is dropped (its call was cancelled or
    /// timed out) or at `deadline`, the call's own, so that no blocking work
    /// outlives its call by more than a row.
    async fn run<T: Send + 'static>(
        &self,
        bucket: String,
        deadline: Instant,
        operation: impl FnOnce(&dyn Backend, Scope<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> wasmtime::Result<Result<T, KvError>> {
        let store = self.clone();
        let interrupt = CancelOnDrop(Interrupt::at(deadline));
        let blocking_interrupt = interrupt.0.clone();
        let result = tokio::task::spawn_blocking(move || {
            let scope = Scope {
                place: Place {
                    namespace: &store.namespace,
                    bucket: &bucket,
                },
                quotas: &store.quotas,
                interrupt: &blocking_interrupt,
            };
            operation(store.backend.as_ref(), scope)
        })
        .await?;
        Ok(result.map_err(|err| KvError::Other(err.to_string())))
    }

    /// [`SharedStore::run`] for a batch call of `keys` keys and `bytes` bytes
    /// of keys and values, refused before any of it reaches the store when it
    /// goes beyond the quotas' batch bounds.
    async fn run_batch<T: Send + 'static>(
        &self,
        bucket: String,
        deadline: Instant,
        keys: usize,
        bytes: usize,
        operation: impl FnOnce(&dyn Backend, Scope<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> wasmtime::Result<Result<T, KvError>> {
        if let Err(err) = self.quotas.check_batch(keys, bytes) {
            return Ok(Err(KvError::Other(err.to_string())));
        }
        self.run(bucket, deadline, operation).await
    }
}

/// Opens (creating if needed) a SQLite store. Only the default location's
/// directory is created when missing: any other path names a directory the
/// user chose, and a typo in it must not silently start an empty store.
fn open_file(path: &Path) -> Result<Database, Error> {
    ensure_store_directory(path)?;
    Database::open(path).map_err(|err| {
        Error::InvalidConfig(format!(
            "cannot open the kv store `{}`: {err}",
            path.display()
        ))
    })
}

/// Checks that the directory of the store file `path` exists, creating it
/// (owner-only, since it holds plugins' data) when `path` is
/// [`KvGrant::default_path`].
fn ensure_store_directory(path: &Path) -> Result<(), Error> {
    let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    else {
        return Ok(());
    };
    if parent.is_dir() {
        return Ok(());
    }
    if KvGrant::default_path().as_deref() == Some(path) {
        return fsutil::create_private_dir(parent).map_err(|err| {
            Error::InvalidConfig(format!(
                "cannot create the kv store's directory `{}`: {err}",
                parent.display()
            ))
        });
    }
    if parent.exists() {
        return Err(Error::InvalidConfig(format!(
            "cannot use the kv store `{}`: `{}` is not a directory",
            path.display(),
            parent.display()
        )));
    }
    Err(Error::InvalidConfig(format!(
        "the kv store `{}` is in a directory that does not exist, `{}`: check the path, or \
         create the directory first (`mkdir -p {}`)",
        path.display(),
        parent.display(),
        parent.display()
    )))
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

/// What the kv host functions borrow from the store's state.
struct KvView<'a> {
    /// When the current call must end; its kv work stops then too.
    deadline: Instant,
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
            self.state.denials.record(
                "kv",
                format!("opening bucket `{}`", truncate_record_text(&identifier)),
            );
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
            .run(name, self.deadline, move |db, scope| {
                db.get(scope.place, &key)
            })
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
            .run(name, self.deadline, move |db, scope| {
                db.set_many(scope, &[(key, value)])
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
            .run(name, self.deadline, move |db, scope| {
                db.delete_many(scope, &[key])
            })
            .await
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, KvError>> {
        let (store, name) = self.bucket(&bucket)?;
        store
            .run(name, self.deadline, move |db, scope| {
                db.exists(scope.place, &key)
            })
            .await
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<KeyResponse, KvError>> {
        let (store, name) = self.bucket(&bucket)?;
        let page = store
            .run(name, self.deadline, move |db, scope| {
                db.list_keys(scope.place, cursor.unwrap_or(0))
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
            .run(name, self.deadline, move |db, scope| {
                db.increment(scope, &key, delta)
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
        let bytes = keys.iter().map(String::len).sum();
        store
            .run_batch(name, self.deadline, keys.len(), bytes, move |db, scope| {
                db.get_many(scope, &keys)
            })
            .await
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), KvError>> {
        let (store, name) = self.bucket(&bucket)?;
        let bytes = key_values
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum();
        store
            .run_batch(
                name,
                self.deadline,
                key_values.len(),
                bytes,
                move |db, scope| db.set_many(scope, &key_values),
            )
            .await
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), KvError>> {
        let (store, name) = self.bucket(&bucket)?;
        let bytes = keys.iter().map(String::len).sum();
        store
            .run_batch(name, self.deadline, keys.len(), bytes, move |db, scope| {
                db.delete_many(scope, &keys)
            })
            .await
    }
}

/// An operator's view of a kv store file, for `warden kv`: read, list and
/// delete the keys of one namespace without running any plugin. SQLite files
/// only; inspect a Redis store with Redis's own tools.
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
        Self::open_or_create(path, namespace)
    }

    /// Opens the store at `path` for `namespace`, creating the file if it is
    /// missing, under the rule a plugin's grant follows: its directory must
    /// exist unless it is [`KvGrant::default_path`].
    pub fn open_or_create(path: &Path, namespace: &str) -> Result<Self, Error> {
        let database = open_file(path)?;
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

    /// Sets a key's value. The default [`KvQuotas`] bound it, as they bound
    /// a plugin's writes when its grant names none.
    pub fn set(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<(), Error> {
        // An operator's write has no call to be interrupted with.
        let scope = Scope {
            place: self.place(bucket),
            quotas: &KvQuotas::default(),
            interrupt: &Interrupt::never(),
        };
        self.database
            .set_many(scope, &[(key.to_owned(), value)])
            .map_err(|err| store_error(format!("cannot set `{key}` in the kv store"), err))
    }

    /// Deletes a key; returns whether it existed.
    pub fn delete(&self, bucket: &str, key: &str) -> Result<bool, Error> {
        let place = self.place(bucket);
        let existed = self.database.exists(place, key).map_err(inspection_error)?;
        // Deleting checks no quota, and an operator's deletion has no call
        // to be interrupted with.
        let scope = Scope {
            place,
            quotas: &KvQuotas::default(),
            interrupt: &Interrupt::never(),
        };
        self.database
            .delete_many(scope, &[key.to_owned()])
            .map_err(|err| store_error(format!("cannot delete `{key}` from the kv store"), err))?;
        Ok(existed)
    }
}

fn inspection_error(err: StoreError) -> Error {
    store_error("reading the kv store".to_owned(), err)
}

/// The store's error as an [`Error::Io`] saying what was being done.
fn store_error(context: String, err: StoreError) -> Error {
    Error::Io {
        context,
        source: std::io::Error::other(err.to_string()),
    }
}

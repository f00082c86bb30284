//! A [`Registry`]: plugins by name, loaded from files, a manifest or bytes,
//! with hot reload and graceful shutdown.
//!
//! Calls hold their own handle on the plugin they started with, so swapping
//! a plugin never disturbs a call in flight: it finishes on the old version,
//! and the next call gets the new one.
//!
//! Reloading follows the files, and trusts nothing about them: a plugin file
//! is opened without blocking and must be a regular file of at most
//! [`Registry::MAX_PLUGIN_FILE_BYTES`], read on a thread of its own that a
//! shutdown abandons; each changed plugin reloads on its own, so one that
//! fails or hangs never holds back another. Every verification, at load and
//! on reload, uses the trust policy as the manifest and its trust store say
//! now: the trust store files are watched like the manifest, and a detached
//! `.wasm.sig` like its plugin.
//!
//! A plugin whose running version no longer passes its current trust policy
//! (its signer was removed from the trust store, say) is **withdrawn**: it
//! stops serving at once ([`Registry::execute`] fails with
//! [`Error::Untrusted`]), stays watched, and serves again when a version
//! that passes is deployed. A version that merely fails to reload (a
//! half-copied file, a signature file that went missing) leaves the running
//! version serving, since that one was verified as it was.

mod files;
pub(crate) use files::read_regular_file;
mod reload;
mod shutdown;

pub use reload::{ManifestLoad, Reload, Watch};
pub use shutdown::Shutdown;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::io::AsyncRead;
use tokio::sync::watch;

use self::files::{Watched, read_plugin_file};
use self::shutdown::CallGuard;
use crate::error::Error;
use crate::grants::Sandbox;
use crate::plugin::Plugin;
use crate::report::{Outcome, Report};
use crate::runtime::Runtime;
use crate::source::Source;
use crate::streaming::{self, OutputStream, StreamOutcome};

/// Plugins by name, sharing one [`Runtime`]. Cheap to clone; clones share
/// the plugins.
///
/// Loading is read → verify → compile (or load from the compile cache) →
/// link → pre-instantiate, each step failing with its own [`Error`].
/// Plugins loaded from files (directly or through a manifest) can be
/// reloaded when their files change: [`Registry::check_for_changes`] once,
/// or [`Registry::watch`] in the background.
///
/// ```no_run
/// # async fn example() -> Result<(), warden::Error> {
/// use warden::{Manifest, Registry, Runtime};
///
/// let registry = Registry::new(Runtime::new()?);
/// let report = registry.load_manifest("warden.toml").await?;
/// for (name, err) in &report.failed {
///     eprintln!("{name} did not load: {err}");
/// }
/// let outcome = registry.execute("hello", "count-vowels", b"hello world").await;
/// assert_eq!(outcome.result?, b"3");
/// registry.shutdown(std::time::Duration::from_secs(5)).await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Registry {
    runtime: Runtime,
    inner: Arc<Inner>,
}

struct Inner {
    plugins: RwLock<BTreeMap<String, Registered>>,
    /// The manifest the plugins came from, if any, and the trust stores it
    /// names, for reloads.
    manifest: RwLock<Option<Watched>>,
    /// Set while the manifest (or a trust store it names) cannot be read:
    /// plugins from it are not reloaded then, since their trust policy is
    /// unknown.
    manifest_unreadable: AtomicBool,
    /// Set once shutdown begins: new calls are refused.
    closing: AtomicBool,
    /// Calls in flight; shutdown waits for this to reach zero.
    in_flight: watch::Sender<usize>,
    /// Flipped when shutdown's grace period ends: calls still running stop.
    cancel: watch::Sender<bool>,
    generations: AtomicU64,
}

#[derive(Clone)]
struct Registered {
    plugin: Plugin,
    /// Where the plugin came from, when it can be read again.
    file: Option<Watched>,
    /// Bumped on every (re)load, so callers can tell versions apart.
    generation: u64,
    /// The sandbox a new version of the file loads under: the plugin's
    /// own, or what the manifest says now if that failed to load.
    sandbox: Sandbox,
    /// The bytes and signature the running version was verified with, kept
    /// for plugins loaded from files so that a change of trust policy can
    /// check the running version again.
    verified: Option<Arc<Source>>,
    /// Declared by the registry's manifest (so reloads wait while it cannot
    /// be read).
    from_manifest: bool,
    /// Set when the running version no longer passes the trust policy: it
    /// is not served.
    withdrawn: Option<Arc<Error>>,
}

/// One plugin in a [`Registry::list`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RegisteredPlugin {
    /// The name it is registered under.
    pub name: String,
    /// The file it was loaded from, if it came from one.
    pub path: Option<PathBuf>,
    /// SHA-256 of the component, as hex.
    pub sha256: String,
    /// Increases with every load or reload of any plugin in the registry.
    pub generation: u64,
}

impl Registry {
    /// The largest plugin file the registry reads: 256 MiB, far above real
    /// plugins (a Python or JavaScript component is under 20 MiB), so that
    /// a path pointed at something huge is refused instead of read into
    /// memory.
    pub const MAX_PLUGIN_FILE_BYTES: u64 = 256 << 20;

    /// The largest detached signature file the registry reads: 1 MiB, room
    /// for thousands of signatures of a few hundred bytes each.
    pub const MAX_SIGNATURE_FILE_BYTES: u64 = 1 << 20;

    /// The largest manifest the registry reads: 16 MiB of TOML.
    pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

    /// How long reading one file (a plugin, its signature, the manifest)
    /// may take: 30 seconds, which only a file system that stopped
    /// answering needs. The read is then abandoned and the load fails.
    pub const FILE_READ_TIMEOUT: Duration = Duration::from_secs(30);

    /// An empty registry whose plugins run on `runtime`.
    pub fn new(runtime: Runtime) -> Self {
        Registry {
            runtime,
            inner: Arc::new(Inner {
                plugins: RwLock::new(BTreeMap::new()),
                manifest: RwLock::new(None),
                manifest_unreadable: AtomicBool::new(false),
                closing: AtomicBool::new(false),
                in_flight: watch::Sender::new(0),
                cancel: watch::Sender::new(false),
                generations: AtomicU64::new(0),
            }),
        }
    }

    /// The runtime the plugins run on.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Loads a plugin from bytes under `name`, replacing any plugin of that
    /// name once the new one has loaded. Such a plugin is never reloaded.
    pub async fn insert(
        &self,
        name: &str,
        source: Source,
        sandbox: Sandbox,
    ) -> Result<Plugin, Error> {
        let plugin = self.runtime.load(source.named(name), sandbox).await?;
        self.register(name, plugin.clone(), None, None, false);
        Ok(plugin)
    }

    /// Loads the plugin at `path` (with its detached signature, if one sits
    /// beside it) under `name`, replacing any plugin of that name once the
    /// new one has loaded. The file and its signature are watched for
    /// reloads.
    ///
    /// The file must be a regular file of at most
    /// [`Registry::MAX_PLUGIN_FILE_BYTES`]; anything else (a FIFO, a device,
    /// a directory) fails with [`Error::Io`] without being read.
    pub async fn load_file(
        &self,
        name: &str,
        path: impl AsRef<Path>,
        sandbox: Sandbox,
    ) -> Result<Plugin, Error> {
        self.load_watched(name, path.as_ref(), sandbox, false).await
    }

    async fn load_watched(
        &self,
        name: &str,
        path: &Path,
        sandbox: Sandbox,
        from_manifest: bool,
    ) -> Result<Plugin, Error> {
        // Stamp before reading, so a change during the read is seen later.
        let watched = Watched::plugin(path);
        let source = read_plugin_file(path).await?.named(name);
        let verified = Arc::new(source.clone());
        let plugin = self.runtime.load(source, sandbox).await?;
        self.register(
            name,
            plugin.clone(),
            Some(watched),
            Some(verified),
            from_manifest,
        );
        Ok(plugin)
    }

    fn register(
        &self,
        name: &str,
        plugin: Plugin,
        file: Option<Watched>,
        verified: Option<Arc<Source>>,
        from_manifest: bool,
    ) {
        let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let sandbox = plugin.sandbox().clone();
        let replaced = write(&self.inner.plugins).insert(
            name.to_owned(),
            Registered {
                plugin,
                file,
                generation,
                sandbox,
                verified,
                from_manifest,
                withdrawn: None,
            },
        );
        if let Some(replaced) = replaced {
            retire_in_background(replaced.plugin);
        }
    }

    /// The plugin registered under `name`, unless it was withdrawn. The
    /// handle keeps that version alive even if the registry replaces or
    /// unloads it.
    pub fn get(&self, name: &str) -> Option<Plugin> {
        read(&self.inner.plugins)
            .get(name)
            .filter(|registered| registered.withdrawn.is_none())
            .map(|registered| registered.plugin.clone())
    }

    /// Why the plugin registered under `name` is withdrawn (see the module
    /// documentation), or `None` if it is serving or not registered.
    pub fn withdrawn(&self, name: &str) -> Option<Error> {
        read(&self.inner.plugins)
            .get(name)?
            .withdrawn
            .as_deref()
            .map(copy_refusal)
    }

    /// Every plugin serving (registered and not withdrawn), by name.
    pub fn list(&self) -> Vec<RegisteredPlugin> {
        read(&self.inner.plugins)
            .iter()
            .filter(|(_, registered)| registered.withdrawn.is_none())
            .map(|(name, registered)| RegisteredPlugin {
                name: name.clone(),
                path: registered.file.as_ref().map(|file| file.path.clone()),
                sha256: registered.plugin.info().sha256.clone(),
                generation: registered.generation,
            })
            .collect()
    }

    /// Removes a plugin; calls already running on it finish. Returns it, or
    /// `None` if no plugin had that name.
    ///
    /// Its kept instances are retired in the background (see
    /// [`Plugin::retire_kept_instances`]), as are those of a version the
    /// registry replaces.
    pub fn unload(&self, name: &str) -> Option<Plugin> {
        let plugin = write(&self.inner.plugins)
            .remove(name)
            .map(|registered| registered.plugin)?;
        retire_in_background(plugin.clone());
        Some(plugin)
    }

    /// Runs `action` on the plugin registered as `name`, in a fresh
    /// instance (see [`Plugin::execute`]).
    ///
    /// Fails with [`Error::UnknownPlugin`] for a name that is not
    /// registered, with [`Error::Untrusted`] for a plugin withdrawn because
    /// it no longer passes its trust policy, and with [`Error::Cancelled`]
    /// once [`Registry::shutdown`] has begun or when its grace period ends
    /// before the call does.
    pub async fn execute(&self, name: &str, action: &str, input: &[u8]) -> Outcome<Vec<u8>> {
        let Some(_call) = CallGuard::enter(&self.inner) else {
            return refused(closed());
        };
        let plugin = match self.serving(name) {
            Ok(plugin) => plugin,
            Err(err) => return refused(err),
        };
        let mut cancel = self.inner.cancel.subscribe();
        tokio::select! {
            outcome = plugin.execute(action, input) => outcome,
            _ = cancel.wait_for(|cancelled| *cancelled) => refused(cancelled()),
        }
    }

    /// Runs `action` on the plugin registered as `name` while `input`
    /// streams in (see [`Plugin::execute_stream`]).
    ///
    /// The stream is a call like those of [`Registry::execute`], and fails
    /// the same ways: once [`Registry::shutdown`] has begun, new streams are
    /// refused with [`Error::Cancelled`]; a stream already running is waited
    /// for, and ended with that error (its output cut short) when the grace
    /// period ends first. Must be called within a Tokio runtime, which runs
    /// the call.
    pub fn execute_stream<R>(
        &self,
        name: &str,
        action: &str,
        input: R,
    ) -> (OutputStream, StreamOutcome)
    where
        R: AsyncRead + Send + 'static,
    {
        let Some(call) = CallGuard::enter(&self.inner) else {
            return streaming::refused(closed());
        };
        let plugin = match self.serving(name) {
            Ok(plugin) => plugin,
            Err(err) => return streaming::refused(err),
        };
        let mut cancel = self.inner.cancel.subscribe();
        // The guard lives in the stop future, which lives as long as the
        // call: the stream counts as in flight until it ends.
        let stop = async move {
            let _call = call;
            let _ = cancel.wait_for(|cancelled| *cancelled).await;
            cancelled()
        };
        streaming::start_until(&plugin, action, input, stop)
    }

    /// The plugin serving as `name`, or why there is none.
    fn serving(&self, name: &str) -> Result<Plugin, Error> {
        if let Some(plugin) = self.get(name) {
            return Ok(plugin);
        }
        if let Some(refusal) = self.withdrawn(name) {
            return Err(refusal);
        }
        Err(Error::UnknownPlugin {
            name: name.to_owned(),
            known: read(&self.inner.plugins).keys().cloned().collect(),
        })
    }
}

/// Why a call is refused once shutdown has begun.
fn closed() -> Error {
    Error::Cancelled {
        reason: "the registry is shutting down".into(),
    }
}

/// Why a call ends when shutdown's grace period is over.
fn cancelled() -> Error {
    Error::Cancelled {
        reason: "the registry shut down before the call finished".into(),
    }
}

/// A copy of a trust check's refusal (errors are not `Clone`).
fn copy_refusal(refusal: &Error) -> Error {
    match refusal {
        Error::Untrusted {
            failure,
            signatures,
        } => Error::Untrusted {
            failure: failure.clone(),
            signatures: signatures.clone(),
        },
        other => Error::InvalidConfig(other.to_string()),
    }
}

fn refused(error: Error) -> Outcome<Vec<u8>> {
    Outcome {
        result: Err(error),
        report: Report::default(),
    }
}

/// Retires a plugin's kept instances on the current Tokio runtime: their
/// `shutdown` calls are async, and unloading is not. Outside a runtime
/// there is nothing to run them on, and the instances are simply dropped
/// with the plugin.
fn retire_in_background(plugin: Plugin) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move { plugin.retire_kept_instances().await });
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

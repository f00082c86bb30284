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

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::error::Error;
use crate::grants::Sandbox;
use crate::manifest::Manifest;
use crate::plugin::Plugin;
use crate::report::{Outcome, Report};
use crate::runtime::Runtime;
use crate::source::{Source, signature_path};
use crate::trust;

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

/// A file, the files that go with it (a plugin's detached signature, a
/// manifest's trust stores), and what they looked like when last read.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Watched {
    path: PathBuf,
    stamp: Option<FileStamp>,
    companions: Vec<(PathBuf, Option<FileStamp>)>,
}

/// Enough of a file's metadata to notice a change: an edit in place changes
/// the time or size, a replacement by rename changes the inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        let metadata = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            modified: metadata.modified().ok(),
            len: metadata.len(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&metadata),
        })
    }
}

impl Watched {
    /// A plugin file and its detached signature.
    fn plugin(path: &Path) -> Self {
        Watched::with(path, [signature_path(path)])
    }

    /// `path`, and `companions` whose changes count as changes of it.
    fn with(path: &Path, companions: impl IntoIterator<Item = PathBuf>) -> Self {
        Watched {
            path: path.to_owned(),
            stamp: FileStamp::of(path),
            companions: companions
                .into_iter()
                .map(|companion| {
                    let stamp = FileStamp::of(&companion);
                    (companion, stamp)
                })
                .collect(),
        }
    }

    /// The same files, stamped as they are now.
    fn restamped(&self) -> Self {
        Watched::with(&self.path, self.companion_paths())
    }

    fn companion_paths(&self) -> Vec<PathBuf> {
        self.companions
            .iter()
            .map(|(path, _)| path.clone())
            .collect()
    }

    fn changed(&self) -> bool {
        FileStamp::of(&self.path) != self.stamp
            || self
                .companions
                .iter()
                .any(|(path, stamp)| FileStamp::of(path) != *stamp)
    }
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

/// What [`Registry::load_manifest`] loaded and what it could not.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ManifestLoad {
    /// Plugins now serving, by name.
    pub loaded: Vec<String>,
    /// Plugins that failed to load, with why. A plugin that was already
    /// registered keeps serving its previous version.
    pub failed: Vec<(String, Error)>,
    /// Plugins removed because the manifest no longer declares them.
    pub removed: Vec<String>,
    /// Plugins withdrawn because the version serving no longer passes the
    /// trust policy the manifest and its trust store now give (its signer
    /// was revoked, say), with why. They serve again once a version that
    /// passes is deployed.
    pub withdrawn: Vec<(String, Error)>,
}

/// A change [`Registry::check_for_changes`] acted on.
#[derive(Debug)]
#[non_exhaustive]
pub enum Reload {
    /// The plugin's file changed and the new version now serves.
    Replaced {
        /// The plugin's name.
        name: String,
        /// SHA-256 of the version it replaced.
        from: String,
        /// SHA-256 of the version now serving.
        to: String,
    },
    /// The plugin's file changed but the new version did not load; the old
    /// one keeps serving.
    Failed {
        /// The plugin's name.
        name: String,
        /// Why the new version was refused.
        error: Error,
    },
    /// The manifest changed and was read again.
    Manifest(ManifestLoad),
    /// The manifest (or a trust store it names) changed but cannot be used;
    /// every plugin keeps serving as it was, and the plugins it declares
    /// are not reloaded until it can be read again.
    ManifestFailed(Error),
}

/// What [`Registry::shutdown`] did with the calls in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Shutdown {
    /// Calls that finished within the grace period.
    pub finished: usize,
    /// Calls cancelled when it ended.
    pub cancelled: usize,
}

/// Reload events from [`Registry::watch`]. Watching stops when this is
/// dropped.
pub struct Watch {
    events: mpsc::UnboundedReceiver<Reload>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// The next reload, or `None` once the registry shut down.
    pub async fn next(&mut self) -> Option<Reload> {
        self.events.recv().await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
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

    /// Loads every plugin a manifest declares, and remembers the manifest so
    /// that [`Registry::check_for_changes`] reads it again when it, or a
    /// trust store it names, changes. Plugins that fail to load are
    /// reported, not fatal; plugins loaded from an earlier version of the
    /// manifest that it no longer declares are removed.
    ///
    /// Fails only when the manifest itself cannot be read or parsed.
    pub async fn load_manifest(&self, path: impl AsRef<Path>) -> Result<ManifestLoad, Error> {
        let path = path.as_ref();
        let known = read(&self.inner.manifest)
            .as_ref()
            .map(Watched::companion_paths)
            .unwrap_or_default();
        let (watched, manifest) = read_manifest(path, known).await?;
        *write(&self.inner.manifest) = Some(watched);
        self.inner
            .manifest_unreadable
            .store(false, Ordering::Release);
        Ok(self.apply_manifest(&manifest).await)
    }

    async fn apply_manifest(&self, manifest: &Manifest) -> ManifestLoad {
        let mut report = ManifestLoad::default();
        for (name, entry) in &manifest.plugins {
            let current = read(&self.inner.plugins).get(name).cloned();
            // Unchanged file and sandbox (trust store included): keep the
            // loaded plugin.
            if let Some(current) = &current
                && current.withdrawn.is_none()
                && current.plugin.sandbox() == &entry.sandbox
                && current
                    .file
                    .as_ref()
                    .is_some_and(|file| file.path == entry.path && !file.changed())
            {
                report.loaded.push(name.clone());
                continue;
            }
            match self
                .load_watched(name, &entry.path, entry.sandbox.clone(), true)
                .await
            {
                Ok(_) => report.loaded.push(name.clone()),
                Err(err) => {
                    if let Some(current) = current
                        && let Some(refusal) = self.adopt_sandbox(name, &current, &entry.sandbox)
                    {
                        report.withdrawn.push((name.clone(), refusal));
                    }
                    report.failed.push((name.clone(), err));
                }
            }
        }
        let stale: Vec<String> = read(&self.inner.plugins)
            .keys()
            .filter(|name| !manifest.plugins.contains_key(*name))
            .cloned()
            .collect();
        for name in stale {
            self.unload(&name);
            report.removed.push(name);
        }
        report
    }

    /// After a new version under `sandbox` failed to load: makes `sandbox`
    /// the one the next version of the file loads under, and checks the
    /// running version against its trust policy. Returns the refusal when
    /// the running version no longer passes and has been withdrawn.
    fn adopt_sandbox(&self, name: &str, current: &Registered, sandbox: &Sandbox) -> Option<Error> {
        let refusal = current.verified.as_ref().and_then(|source| {
            trust::check(source.bytes(), source.detached_signature(), &sandbox.trust).err()
        });
        let mut plugins = write(&self.inner.plugins);
        let registered = plugins
            .get_mut(name)
            .filter(|registered| registered.generation == current.generation)?;
        registered.sandbox = sandbox.clone();
        if registered.withdrawn.is_some() {
            return None;
        }
        let refusal = refusal?;
        registered.withdrawn = Some(Arc::new(copy_refusal(&refusal)));
        Some(refusal)
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
        write(&self.inner.plugins).insert(
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
    pub fn unload(&self, name: &str) -> Option<Plugin> {
        write(&self.inner.plugins)
            .remove(name)
            .map(|registered| registered.plugin)
    }

    /// Reloads every plugin whose file (or detached signature) changed, and
    /// the manifest if it or a trust store it names changed. A version that
    /// fails to load or verify leaves the previous one serving and is
    /// reported as [`Reload::Failed`]; a running version that no longer
    /// passes the current trust policy is withdrawn (see
    /// [`ManifestLoad::withdrawn`]).
    ///
    /// Changed plugins reload concurrently, each on its own; the result
    /// lists what happened once all are done.
    pub async fn check_for_changes(&self) -> Vec<Reload> {
        let mut reloads = Vec::new();
        self.reload_changed(|reload| {
            reloads.push(reload);
            true
        })
        .await;
        reloads
    }

    /// [`Registry::check_for_changes`], handing each reload to `report` as
    /// soon as it is done; stops early when `report` returns `false`.
    async fn reload_changed(&self, mut report: impl FnMut(Reload) -> bool) {
        let manifest = read(&self.inner.manifest).clone();
        if let Some(manifest) = manifest.filter(Watched::changed) {
            let reload = match read_manifest(&manifest.path, manifest.companion_paths()).await {
                Ok((stamp, parsed)) => {
                    *write(&self.inner.manifest) = Some(stamp);
                    self.inner
                        .manifest_unreadable
                        .store(false, Ordering::Release);
                    Reload::Manifest(self.apply_manifest(&parsed).await)
                }
                Err(error) => {
                    // Remember the broken version, so it is reported once.
                    *write(&self.inner.manifest) = Some(manifest.restamped());
                    self.inner
                        .manifest_unreadable
                        .store(true, Ordering::Release);
                    Reload::ManifestFailed(error)
                }
            };
            if !report(reload) {
                return;
            }
        }
        // While the manifest cannot be read, the trust policy of its plugins
        // is unknown: their new versions wait until it can be.
        let manifest_unreadable = self.inner.manifest_unreadable.load(Ordering::Acquire);
        let changed: Vec<(String, Registered, Watched)> = read(&self.inner.plugins)
            .iter()
            .filter(|(_, registered)| !(manifest_unreadable && registered.from_manifest))
            .filter_map(|(name, registered)| {
                let file = registered.file.as_ref()?;
                file.changed()
                    .then(|| (name.clone(), registered.clone(), file.clone()))
            })
            .collect();
        // Each reload is its own task: one that fails or waits on its file
        // delays no other, and dropping the set (the watch stopped) ends
        // them all.
        let mut reloads = JoinSet::new();
        for (name, old, file) in changed {
            let registry = self.clone();
            reloads.spawn(async move { registry.reload_file(name, old, file).await });
        }
        while let Some(reload) = reloads.join_next().await {
            if let Ok(reload) = reload
                && !report(reload)
            {
                return;
            }
        }
    }

    /// Loads a new version of `old`'s file, under the sandbox it is meant
    /// to load under now.
    async fn reload_file(&self, name: String, old: Registered, file: Watched) -> Reload {
        let from = old.plugin.info().sha256.clone();
        let loaded = self
            .load_watched(&name, &file.path, old.sandbox.clone(), old.from_manifest)
            .await;
        match loaded {
            Ok(new) => {
                let to = new.info().sha256.clone();
                Reload::Replaced { name, from, to }
            }
            Err(error) => {
                // Keep the old version, stamped as seen, so the broken file
                // is reported once rather than on every check.
                let mut plugins = write(&self.inner.plugins);
                if let Some(current) = plugins.get_mut(&name)
                    && current.generation == old.generation
                {
                    current.file = Some(file.restamped());
                }
                drop(plugins);
                Reload::Failed { name, error }
            }
        }
    }

    /// Checks for changes every `interval` in a background task and reports
    /// each reload as it happens. Polling the files' metadata works on every
    /// platform and file system, including network ones and editors that
    /// replace files by renaming.
    ///
    /// Must be called within a Tokio runtime.
    pub fn watch(&self, interval: Duration) -> Watch {
        let (sender, events) = mpsc::unbounded_channel();
        let registry = self.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !registry.inner.closing.load(Ordering::Acquire) {
                ticks.tick().await;
                let mut open = true;
                registry
                    .reload_changed(|reload| {
                        open = sender.send(reload).is_ok();
                        open
                    })
                    .await;
                if !open {
                    return;
                }
            }
        });
        Watch { events, task }
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
            return refused(Error::Cancelled {
                reason: "the registry is shutting down".into(),
            });
        };
        let Some(plugin) = self.get(name) else {
            if let Some(refusal) = self.withdrawn(name) {
                return refused(refusal);
            }
            return refused(Error::UnknownPlugin {
                name: name.to_owned(),
                known: read(&self.inner.plugins).keys().cloned().collect(),
            });
        };
        let mut cancel = self.inner.cancel.subscribe();
        tokio::select! {
            outcome = plugin.execute(action, input) => outcome,
            _ = cancel.wait_for(|cancelled| *cancelled) => refused(Error::Cancelled {
                reason: "the registry shut down before the call finished".into(),
            }),
        }
    }

    /// Stops accepting calls, lets the calls in flight finish for up to
    /// `grace`, then cancels the rest (dropping a call frees its instance at
    /// once). Stops any [`Registry::watch`]. Plugins stay registered, so
    /// [`Registry::get`] still works for inspection.
    pub async fn shutdown(&self, grace: Duration) -> Shutdown {
        self.inner.closing.store(true, Ordering::Release);
        let running = *self.inner.in_flight.borrow();
        let mut in_flight = self.inner.in_flight.subscribe();
        let drained = tokio::time::timeout(grace, in_flight.wait_for(|count| *count == 0))
            .await
            .is_ok();
        let cancelled = if drained {
            0
        } else {
            let left = *self.inner.in_flight.borrow();
            self.inner.cancel.send_replace(true);
            // Cancelled calls return at their next poll; wait for them so
            // that everything is freed when this returns.
            let _ = in_flight.wait_for(|count| *count == 0).await;
            left
        };
        Shutdown {
            finished: running.saturating_sub(cancelled),
            cancelled,
        }
    }
}

/// Counts a call in flight for as long as it lives.
struct CallGuard<'a> {
    inner: &'a Inner,
}

impl<'a> CallGuard<'a> {
    fn enter(inner: &'a Inner) -> Option<Self> {
        if inner.closing.load(Ordering::Acquire) {
            return None;
        }
        inner.in_flight.send_modify(|count| *count += 1);
        // Shutdown may have begun between the check and the count.
        if inner.closing.load(Ordering::Acquire) {
            inner.in_flight.send_modify(|count| *count -= 1);
            return None;
        }
        Some(CallGuard { inner })
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.inner.in_flight.send_modify(|count| *count -= 1);
    }
}

/// Reads and parses the manifest on a thread of its own (it names trust
/// stores and key files, read as it is parsed), stamped with the trust
/// stores it names so that their changes count as its own. The stores in
/// `known` (those the previous version named) are stamped before they are
/// read, so that an edit landing during the read is seen by the next check.
async fn read_manifest(path: &Path, known: Vec<PathBuf>) -> Result<(Watched, Manifest), Error> {
    let path = path.to_owned();
    let reading = path.clone();
    off_thread(&reading, move || {
        // Stamp before reading, so a change during the read is seen later.
        let stamped = Watched::with(&path, known);
        let bytes = read_regular_file(&path, "manifest", Registry::MAX_MANIFEST_BYTES)?;
        let text = String::from_utf8(bytes).map_err(|_| {
            Error::InvalidConfig(format!("manifest `{}` is not UTF-8 text", path.display()))
        })?;
        let manifest = Manifest::parse(&text, &path)?;
        let mut stores: Vec<PathBuf> = manifest
            .plugins
            .values()
            .filter_map(|entry| entry.trust_store.clone())
            .collect();
        stores.sort();
        stores.dedup();
        let companions = stores
            .into_iter()
            .map(|store| {
                let stamp = match stamped.companions.iter().find(|(known, _)| *known == store) {
                    Some((_, before)) => *before,
                    None => FileStamp::of(&store),
                };
                (store, stamp)
            })
            .collect();
        let watched = Watched {
            companions,
            ..stamped
        };
        Ok((watched, manifest))
    })
    .await
}

/// Reads a plugin file and its detached signature, if there is one, on a
/// thread of its own.
async fn read_plugin_file(path: &Path) -> Result<Source, Error> {
    let path = path.to_owned();
    let reading = path.clone();
    off_thread(&reading, move || {
        let bytes = read_regular_file(&path, "plugin", Registry::MAX_PLUGIN_FILE_BYTES)?;
        let signature_path = signature_path(&path);
        let mut source = Source::new(String::new(), bytes);
        match read_regular_file(
            &signature_path,
            "signature",
            Registry::MAX_SIGNATURE_FILE_BYTES,
        ) {
            Ok(signature) => source = source.with_detached_signature(signature),
            Err(Error::Io { source: err, .. }) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        Ok(source)
    })
    .await
}

/// Runs `read` (which reads `path`) on a thread of its own and waits for it
/// up to [`Registry::FILE_READ_TIMEOUT`]. A read that outlives the wait, or
/// the task waiting for it, is abandoned: the thread ends with the read or
/// the process, and holds up neither the runtime nor a shutdown.
async fn off_thread<T: Send + 'static>(
    path: &Path,
    read: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let (done, result) = oneshot::channel();
    std::thread::Builder::new()
        .name("warden-read".into())
        .spawn(move || {
            let _ = done.send(read());
        })
        .map_err(|err| Error::io(format!("cannot start reading `{}`", path.display()), err))?;
    match tokio::time::timeout(Registry::FILE_READ_TIMEOUT, result).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(Error::io(
            format!("reading `{}` failed", path.display()),
            std::io::Error::other("the reading thread ended without a result"),
        )),
        Err(_) => Err(Error::io(
            format!("cannot read `{}`", path.display()),
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no answer within {}; is it on a file system that stopped answering?",
                    crate::units::format_duration(Registry::FILE_READ_TIMEOUT)
                ),
            ),
        )),
    }
}

/// Reads `path` (a `what` file, for messages) if it is a regular file of at
/// most `max` bytes. It is opened without blocking, so a FIFO or a device
/// is refused instead of waited on.
fn read_regular_file(path: &Path, what: &str, max: u64) -> Result<Vec<u8>, Error> {
    let context = || format!("cannot read {what} `{}`", path.display());
    let (file, metadata) =
        crate::fsutil::open_without_blocking(path).map_err(|err| Error::io(context(), err))?;
    if !metadata.is_file() {
        return Err(Error::io(
            context(),
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "it is {}, not a regular file",
                    describe_file_type(metadata.file_type())
                ),
            ),
        ));
    }
    let too_large = |size: u64| {
        Error::io(
            context(),
            std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!(
                    "it is {size} bytes, more than the {} a {what} file may be",
                    crate::units::format_bytes(max)
                ),
            ),
        )
    };
    if metadata.len() > max {
        return Err(too_large(metadata.len()));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    // The file may grow while it is read: read one byte past the limit to
    // tell.
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| Error::io(context(), err))?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// What a file that is not a regular file is, in words.
fn describe_file_type(file_type: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO";
        }
        if file_type.is_socket() {
            return "a socket";
        }
        if file_type.is_block_device() || file_type.is_char_device() {
            return "a device";
        }
    }
    if file_type.is_dir() {
        "a directory"
    } else {
        "not a regular file"
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

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

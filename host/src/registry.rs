//! A [`Registry`]: plugins by name, loaded from files, a manifest or bytes,
//! with hot reload and graceful shutdown.
//!
//! Calls hold their own handle on the plugin they started with, so swapping
//! a plugin never disturbs a call in flight: it finishes on the old version,
//! and the next call gets the new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};

use crate::error::Error;
use crate::grants::Sandbox;
use crate::manifest::Manifest;
use crate::plugin::Plugin;
use crate::report::{Outcome, Report};
use crate::runtime::Runtime;
use crate::source::Source;

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
    /// The manifest the plugins came from, if any, for reloads.
    manifest: RwLock<Option<Watched>>,
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
}

/// A file and what it looked like when last read.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Watched {
    path: PathBuf,
    stamp: Option<FileStamp>,
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
    fn new(path: &Path) -> Self {
        Watched {
            path: path.to_owned(),
            stamp: FileStamp::of(path),
        }
    }

    fn changed(&self) -> bool {
        FileStamp::of(&self.path) != self.stamp
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
    /// The manifest changed but cannot be used; every plugin keeps serving
    /// as it was.
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
    /// An empty registry whose plugins run on `runtime`.
    pub fn new(runtime: Runtime) -> Self {
        Registry {
            runtime,
            inner: Arc::new(Inner {
                plugins: RwLock::new(BTreeMap::new()),
                manifest: RwLock::new(None),
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
        self.register(name, plugin.clone(), None);
        Ok(plugin)
    }

    /// Loads the plugin at `path` (with its detached signature, if one sits
    /// beside it) under `name`, replacing any plugin of that name once the
    /// new one has loaded. The file is watched for reloads.
    pub async fn load_file(
        &self,
        name: &str,
        path: impl AsRef<Path>,
        sandbox: Sandbox,
    ) -> Result<Plugin, Error> {
        let path = path.as_ref();
        // Stamp before reading, so a change during the read is seen later.
        let watched = Watched::new(path);
        let source = Source::read(path).await?.named(name);
        let plugin = self.runtime.load(source, sandbox).await?;
        self.register(name, plugin.clone(), Some(watched));
        Ok(plugin)
    }

    /// Loads every plugin a manifest declares, and remembers the manifest so
    /// that [`Registry::check_for_changes`] reads it again when it changes.
    /// Plugins that fail to load are reported, not fatal; plugins loaded
    /// from an earlier version of the manifest that it no longer declares
    /// are removed.
    ///
    /// Fails only when the manifest itself cannot be read or parsed.
    pub async fn load_manifest(&self, path: impl AsRef<Path>) -> Result<ManifestLoad, Error> {
        let path = path.as_ref();
        let watched = Watched::new(path);
        let manifest = Manifest::from_file(path)?;
        *write(&self.inner.manifest) = Some(watched);
        Ok(self.apply_manifest(&manifest).await)
    }

    async fn apply_manifest(&self, manifest: &Manifest) -> ManifestLoad {
        let mut report = ManifestLoad::default();
        for (name, entry) in &manifest.plugins {
            let current = read(&self.inner.plugins).get(name).cloned();
            // Unchanged file and sandbox: keep the loaded plugin.
            if let Some(current) = &current
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
                .load_file(name, &entry.path, entry.sandbox.clone())
                .await
            {
                Ok(_) => report.loaded.push(name.clone()),
                Err(err) => report.failed.push((name.clone(), err)),
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

    fn register(&self, name: &str, plugin: Plugin, file: Option<Watched>) {
        let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed) + 1;
        write(&self.inner.plugins).insert(
            name.to_owned(),
            Registered {
                plugin,
                file,
                generation,
            },
        );
    }

    /// The plugin registered under `name`. The handle keeps that version
    /// alive even if the registry replaces or unloads it.
    pub fn get(&self, name: &str) -> Option<Plugin> {
        read(&self.inner.plugins)
            .get(name)
            .map(|registered| registered.plugin.clone())
    }

    /// Every registered plugin, by name.
    pub fn list(&self) -> Vec<RegisteredPlugin> {
        read(&self.inner.plugins)
            .iter()
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

    /// Reloads every plugin whose file changed, and the manifest if it
    /// changed. A version that fails to load or verify leaves the previous
    /// one serving and is reported as [`Reload::Failed`].
    pub async fn check_for_changes(&self) -> Vec<Reload> {
        let mut reloads = Vec::new();
        let manifest = read(&self.inner.manifest).clone();
        if let Some(manifest) = manifest.filter(Watched::changed) {
            let stamp = Watched::new(&manifest.path);
            match Manifest::from_file(&manifest.path) {
                Ok(parsed) => {
                    *write(&self.inner.manifest) = Some(stamp);
                    reloads.push(Reload::Manifest(self.apply_manifest(&parsed).await));
                }
                Err(error) => {
                    // Remember the broken version, so it is reported once.
                    *write(&self.inner.manifest) = Some(stamp);
                    reloads.push(Reload::ManifestFailed(error));
                }
            }
        }
        let changed: Vec<(String, Registered, Watched)> = read(&self.inner.plugins)
            .iter()
            .filter_map(|(name, registered)| {
                let file = registered.file.as_ref()?;
                file.changed()
                    .then(|| (name.clone(), registered.clone(), file.clone()))
            })
            .collect();
        for (name, old, file) in changed {
            let from = old.plugin.info().sha256.clone();
            match self
                .load_file(&name, &file.path, old.plugin.sandbox().clone())
                .await
            {
                Ok(new) => {
                    let to = new.info().sha256.clone();
                    reloads.push(Reload::Replaced { name, from, to });
                }
                Err(error) => {
                    // Keep the old version, stamped as seen, so the broken
                    // file is reported once rather than on every check.
                    let mut plugins = write(&self.inner.plugins);
                    if let Some(current) = plugins.get_mut(&name)
                        && current.generation == old.generation
                    {
                        current.file = Some(Watched::new(&file.path));
                    }
                    drop(plugins);
                    reloads.push(Reload::Failed { name, error });
                }
            }
        }
        reloads
    }

    /// Checks for changes every `interval` in a background task and reports
    /// each reload. Polling the files' metadata works on every platform and
    /// file system, including network ones and editors that replace files
    /// by renaming.
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
                for reload in registry.check_for_changes().await {
                    if sender.send(reload).is_err() {
                        return;
                    }
                }
            }
        });
        Watch { events, task }
    }

    /// Runs `action` on the plugin registered as `name`, in a fresh
    /// instance (see [`Plugin::execute`]).
    ///
    /// Fails with [`Error::UnknownPlugin`] for a name that is not
    /// registered, and with [`Error::Cancelled`] once [`Registry::shutdown`]
    /// has begun or when its grace period ends before the call does.
    pub async fn execute(&self, name: &str, action: &str, input: &[u8]) -> Outcome<Vec<u8>> {
        let Some(_call) = CallGuard::enter(&self.inner) else {
            return refused(Error::Cancelled {
                reason: "the registry is shutting down".into(),
            });
        };
        let Some(plugin) = self.get(name) else {
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

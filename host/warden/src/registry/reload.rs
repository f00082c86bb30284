//! Loading a manifest and following changes to it and to the plugin files:
//! [`Registry::load_manifest`], [`Registry::check_for_changes`] and
//! [`Registry::watch`].

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::files::{Watched, read_manifest};
use super::{Registered, Registry, copy_refusal, read, write};
use crate::error::Error;
use crate::grants::Sandbox;
use crate::manifest::Manifest;
use crate::trust;

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
            let bytes = || source.bytes();
            let subject =
                trust::Subject::in_memory(&bytes, source.prefix(), source.detached_signature());
            trust::check(&subject, &sandbox.trust).err()
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
}

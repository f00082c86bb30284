//! The `fs` capability: `wasi:filesystem`, limited to the directories granted
//! with [`Grants::dirs`](crate::Grants::dirs) (`--dir HOST::GUEST[:ro|:rw]`).
//!
//! In deterministic mode every timestamp `stat` and `stat-at` report is the
//! fixed wall clock (see the `clocks` capability).
//!
//! Inside a granted directory, path resolution, `..`, symlinks and
//! permissions are enforced by wasmtime-wasi's capability-based filesystem
//! (cap-std): nothing outside a preopened directory can be named, and a
//! read-only preopen refuses every change (writes, truncation, renames,
//! links, removals).
//!
//! # Grant paths
//!
//! A grant's host path is resolved **once**, when the plugin loads (and
//! again when it is reloaded), into an open directory; every instance is
//! handed that same directory ([`GrantedDirs`]). Nothing a plugin does to
//! the path afterwards (renaming the directory, replacing it with a link)
//! changes what the next instance sees: the path is never looked up again.
//!
//! Resolving the path follows these rules, so that a link planted by a
//! plugin with a writable grant cannot redirect another grant out of the
//! directory the link was planted in:
//!
//! - `.` is dropped and `name/..` cancels out as written (`a/../b` is `b`),
//!   never through a link; a relative path's leading `..` climb from the
//!   working directory.
//! - Each name is opened in the directory before it without following a
//!   symbolic link.
//! - A symbolic link met on the way is followed only when its destination
//!   is the directory that holds the link or lies beneath it; links in the
//!   destination obey the same rule, and at most [`MAX_SYMLINKS`] are
//!   followed. Whoever can create a link in a directory can already reach
//!   everything beneath it, so such a link leads nowhere its author could
//!   not go. A link that leads out (`outer/inner -> ../..`,
//!   `/srv/app/data -> /mnt/data`) is refused with [`Error::InvalidConfig`]:
//!   grant its destination by its own path instead.
//!
//! This file is over 400 lines on purpose: opening a grant path without
//! following links out of it is one algorithm, kept whole with its tests.

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use rustix::fs::{CWD, Mode, OFlags, Stat};
use rustix::io::Errno;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{
    WasiFilesystem, WasiFilesystemCtx, WasiFilesystemCtxView, WasiFilesystemView,
};
use wasmtime_wasi::p2::FsResult;
use wasmtime_wasi::p2::bindings::filesystem;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Datetime, Descriptor, DescriptorStat, ErrorCode, Host as _, HostDescriptor as _, PathFlags,
};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use super::{Capability, InstanceSetup, Risk};
use crate::error::Error;
use crate::grants::{DirAccess, Grants, Sandbox};
use crate::state::HostState;

/// The `fs` capability.
pub(crate) struct Filesystem;

impl Capability for Filesystem {
    const NAME: &'static str = "fs";
    const INTERFACES: &'static [&'static str] =
        &["wasi:filesystem/types", "wasi:filesystem/preopens"];
    const HOW_TO_GRANT: &'static str =
        "--dir HOST::GUEST[:ro|:rw], or `dirs` in a manifest's [grants]";
    /// The granted directories, opened once: instances never look their
    /// paths up again.
    type Shared = GrantedDirs;
    type State = ();

    /// Read-only files are medium risk, writable ones high; a plugin that
    /// imports the filesystem without a grant could be either, so it counts
    /// as high.
    fn risk(sandbox: &Sandbox) -> Risk {
        let dirs = &sandbox.grants.dirs;
        if !dirs.is_empty() && dirs.iter().all(|dir| dir.access == DirAccess::ReadOnly) {
            Risk::Medium
        } else {
            Risk::High
        }
    }

    fn granted(sandbox: &Sandbox) -> bool {
        !sandbox.grants.dirs.is_empty()
    }

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        let getter = <HostState as WasiFilesystemView>::filesystem;
        filesystem::types::add_to_linker::<_, WasiFilesystem>(linker, getter)?;
        filesystem::preopens::add_to_linker::<_, WasiFilesystem>(linker, getter)?;
        // Replace `stat` and `stat-at` with versions whose timestamps follow a
        // deterministic instance's clock, and directory listings with ones
        // within the host-memory budget that stop with their call.
        linker.allow_shadowing(true);
        let result =
            add_stat_functions(linker).and_then(|()| super::dir_listing::add_to_linker(linker));
        linker.allow_shadowing(false);
        result
    }

    fn prepare(_: &str, sandbox: &Sandbox) -> Result<GrantedDirs, Error> {
        GrantedDirs::open(&sandbox.grants)
    }

    fn instantiate(_: &GrantedDirs, _: &mut InstanceSetup<'_>) {}

    fn install(dirs: &GrantedDirs, wasi: &mut WasiCtx) {
        dirs.install(wasi);
    }
}

/// Symbolic links followed while resolving one grant path, at most: Linux's
/// own limit (`MAXSYMLINKS`), so that a loop of links ends in an error.
pub(crate) const MAX_SYMLINKS: usize = 40;

/// Directories climbed, at most, when checking that a link's destination
/// lies beneath the link's directory: deeper than any path the kernel can
/// name (`PATH_MAX` is 4096 bytes), so the check always ends.
const MAX_CLIMB: usize = 4096;

/// The `wasi:filesystem/types` instance wasmtime-wasi 48 defines; guests
/// built against earlier 0.2 versions are linked to it by semver.
pub(super) const TYPES: &str = "wasi:filesystem/types@0.2.12";

fn add_stat_functions(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut types = linker.instance(TYPES)?;
    types.func_wrap_async(
        "[method]descriptor.stat",
        |mut store, (fd,): (Resource<Descriptor>,)| {
            Box::new(async move {
                let state = store.data_mut();
                let file_time = state.caps.clocks.file_time();
                let mut view = state.filesystem();
                let stat = view.stat(fd).await;
                Ok((with_file_time(&mut view, stat, file_time)?,))
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.stat-at",
        |mut store, (fd, flags, path): (Resource<Descriptor>, PathFlags, String)| {
            Box::new(async move {
                let state = store.data_mut();
                let file_time = state.caps.clocks.file_time();
                let mut view = state.filesystem();
                let stat = view.stat_at(fd, flags, path).await;
                Ok((with_file_time(&mut view, stat, file_time)?,))
            })
        },
    )
}

/// Turns wasmtime-wasi's answer to `stat` into the guest's, with every
/// timestamp the file has set to `file_time` when there is one.
fn with_file_time(
    view: &mut WasiFilesystemCtxView<'_>,
    stat: FsResult<DescriptorStat>,
    file_time: Option<Duration>,
) -> wasmtime::Result<Result<DescriptorStat, ErrorCode>> {
    let mut stat = match stat {
        Ok(stat) => stat,
        Err(err) => return Ok(Err(view.convert_error_code(err)?)),
    };
    if let Some(time) = file_time {
        let time = Datetime {
            seconds: time.as_secs(),
            nanoseconds: time.subsec_nanos(),
        };
        for timestamp in [
            &mut stat.data_access_timestamp,
            &mut stat.data_modification_timestamp,
            &mut stat.status_change_timestamp,
        ] {
            if timestamp.is_some() {
                *timestamp = Some(time);
            }
        }
    }
    Ok(Ok(stat))
}

/// The directories a plugin's grants name, opened once when it loads and
/// shared by all of its instances.
///
/// It is wasmtime-wasi's filesystem context with every grant preopened;
/// each instance gets a clone, and a clone shares the same open directories
/// (each is one handle behind an `Arc`).
#[derive(Clone, Default)]
pub(crate) struct GrantedDirs {
    preopens: WasiFilesystemCtx,
    count: usize,
}

impl fmt::Debug for GrantedDirs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantedDirs")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl GrantedDirs {
    /// Opens every granted directory under the rules of the module
    /// documentation. Fails with [`Error::InvalidConfig`] naming the grant
    /// when one is missing, not a directory, or reached through a link
    /// that leads out of its own directory.
    pub(crate) fn open(grants: &Grants) -> Result<Self, Error> {
        let mut wasi = WasiCtxBuilder::new();
        for preopen in &grants.dirs {
            let dir = GrantPath::new(&preopen.host).open()?;
            let perms = match preopen.access {
                DirAccess::ReadOnly => FsPerms::ReadOnly,
                DirAccess::ReadWrite => FsPerms::ReadWrite,
            };
            // wasmtime-wasi 48 can only preopen a directory by path. The
            // path given is the one of the descriptor just opened, which the
            // kernel resolves to that open directory itself, not by looking
            // up a name a plugin could have changed since.
            let held = descriptor_path(&dir);
            wasi.preopened_dir(&held, &preopen.guest, perms)
                .map_err(|err| {
                    let descriptors = held.parent().unwrap_or(&held);
                    // Without it (/proc not mounted, as in some chroots and
                    // containers) the grant fails: the path is never opened
                    // instead, since that would bring back the race.
                    let why = if descriptors.is_dir() {
                        format!("{err:#}")
                    } else {
                        format!(
                            "`{}` does not exist, and Warden hands every granted directory \
                             to plugins through it; mount /proc (`mount -t proc proc /proc`)",
                            descriptors.display()
                        )
                    };
                    Error::InvalidConfig(format!(
                        "cannot open directory `{}` through `{}` to grant it as `{}`: {why}",
                        preopen.host.display(),
                        held.display(),
                        preopen.guest
                    ))
                })?;
        }
        let mut wasi = wasi.build();
        Ok(GrantedDirs {
            preopens: std::mem::take(wasi.filesystem()),
            count: grants.dirs.len(),
        })
    }

    /// Hands an instance the plugin's open directories.
    pub(crate) fn install(&self, wasi: &mut WasiCtx) {
        *wasi.filesystem() = self.preopens.clone();
    }
}

/// The path under which the kernel opens the very file `fd` refers to.
fn descriptor_path(fd: &OwnedFd) -> PathBuf {
    let directory = if cfg!(target_os = "linux") {
        "/proc/self/fd"
    } else {
        "/dev/fd"
    };
    Path::new(directory).join(fd.as_raw_fd().to_string())
}

/// Flags for opening a directory only to look things up in it: no read
/// permission is needed to pass through a directory, as with a path.
fn lookup_flags() -> OFlags {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let path_only = OFlags::PATH;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let path_only = OFlags::RDONLY;
    path_only | OFlags::DIRECTORY | OFlags::CLOEXEC
}

/// One step of a path: into a named entry, or up to the parent.
enum Step {
    Into(OsString),
    Up,
}

/// Resolves one grant's host path (see the module documentation).
struct GrantPath<'a> {
    grant: &'a Path,
    links_followed: usize,
}

impl<'a> GrantPath<'a> {
    fn new(grant: &'a Path) -> Self {
        GrantPath {
            grant,
            links_followed: 0,
        }
    }

    /// Opens the directory the grant names.
    fn open(mut self) -> Result<OwnedFd, Error> {
        let start = if self.grant.is_absolute() { "/" } else { "." };
        let start = rustix::fs::openat(CWD, start, lookup_flags(), Mode::empty())
            .map_err(|err| self.failed(err))?;
        self.walk(start, as_written(self.grant))
    }

    fn walk(&mut self, mut dir: OwnedFd, steps: Vec<Step>) -> Result<OwnedFd, Error> {
        for step in steps {
            dir = match step {
                Step::Up => rustix::fs::openat(&dir, "..", lookup_flags(), Mode::empty())
                    .map_err(|err| self.failed(err))?,
                Step::Into(name) => self.enter(dir, &name)?,
            };
        }
        Ok(dir)
    }

    /// Opens the directory `name` in `dir`, following it if it is a link
    /// whose destination lies within `dir`.
    fn enter(&mut self, dir: OwnedFd, name: &OsStr) -> Result<OwnedFd, Error> {
        let flags = lookup_flags() | OFlags::NOFOLLOW;
        match rustix::fs::openat(&dir, name, flags, Mode::empty()) {
            Ok(entered) => Ok(entered),
            // A link opened without following it fails as "not a directory"
            // (Linux, with `O_DIRECTORY`), "too many levels of links" or
            // "too many links" (BSDs): find out whether it was one.
            Err(Errno::NOTDIR | Errno::LOOP | Errno::MLINK) => {
                match rustix::fs::readlinkat(&dir, name, vec![]) {
                    Ok(target) => self.follow(dir, name, target),
                    Err(Errno::INVAL) => {
                        Err(self.refused(format!("`{}` is not a directory", name.display())))
                    }
                    Err(err) => Err(self.failed(err)),
                }
            }
            Err(err) => Err(self.failed(err)),
        }
    }

    /// Follows the link `name` in `dir` to `target`, if it leads to `dir`
    /// or beneath it.
    fn follow(&mut self, dir: OwnedFd, name: &OsStr, target: CString) -> Result<OwnedFd, Error> {
        self.links_followed += 1;
        if self.links_followed > MAX_SYMLINKS {
            return Err(self.refused(format!(
                "it goes through more than {MAX_SYMLINKS} symbolic links"
            )));
        }
        let target = Path::new(OsStr::from_bytes(target.as_bytes()));
        let start = if target.is_absolute() {
            rustix::fs::openat(CWD, "/", lookup_flags(), Mode::empty())
        } else {
            rustix::fs::openat(&dir, ".", lookup_flags(), Mode::empty())
        }
        .map_err(|err| self.failed(err))?;
        // The destination's own `..` are taken as the kernel takes them: the
        // check below looks at where they led.
        let destination = self.walk(start, as_found(target))?;
        if is_within(&destination, &dir).map_err(|err| self.failed(err))? {
            Ok(destination)
        } else {
            Err(self.refused(format!(
                "`{}` is a symbolic link to `{}`, which leads out of the directory \
                 holding the link; grant the directory it leads to by its own path instead",
                name.display(),
                target.display()
            )))
        }
    }

    fn refused(&self, why: String) -> Error {
        Error::InvalidConfig(format!("cannot grant `{}`: {why}", self.grant.display()))
    }

    fn failed(&self, err: Errno) -> Error {
        self.refused(std::io::Error::from(err).to_string())
    }
}

/// The steps of an operator's path as written: `.` dropped, `name/..`
/// cancelled out, `..` above the root staying at the root.
fn as_written(path: &Path) -> Vec<Step> {
    let mut steps = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => steps.push(Step::Into(name.to_owned())),
            Component::ParentDir => match steps.last() {
                Some(Step::Into(_)) => {
                    steps.pop();
                }
                _ if path.is_absolute() => {}
                _ => steps.push(Step::Up),
            },
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    steps
}

/// The steps of a link's destination as the kernel follows them.
fn as_found(path: &Path) -> Vec<Step> {
    path.components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(Step::Into(name.to_owned())),
            Component::ParentDir => Some(Step::Up),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Whether `inner` is `outer` or a directory beneath it, found by climbing
/// from `inner` through `..` until `outer` or the root.
fn is_within(inner: &OwnedFd, outer: &OwnedFd) -> Result<bool, Errno> {
    let outer = rustix::fs::fstat(outer)?;
    let mut current = rustix::fs::openat(inner, ".", lookup_flags(), Mode::empty())?;
    let mut current_stat = rustix::fs::fstat(&current)?;
    for _ in 0..MAX_CLIMB {
        if same_file(&current_stat, &outer) {
            return Ok(true);
        }
        let parent = rustix::fs::openat(&current, "..", lookup_flags(), Mode::empty())?;
        let parent_stat = rustix::fs::fstat(&parent)?;
        if same_file(&parent_stat, &current_stat) {
            // The root is its own parent.
            return Ok(false);
        }
        (current, current_stat) = (parent, parent_stat);
    }
    Ok(false)
}

/// Whether two `stat` results describe the same file (device and inode).
fn same_file(a: &Stat, b: &Stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(path: &str) -> Vec<String> {
        as_written(Path::new(path))
            .into_iter()
            .map(|step| match step {
                Step::Into(name) => name.to_string_lossy().into_owned(),
                Step::Up => "..".to_owned(),
            })
            .collect()
    }

    #[test]
    fn dot_dot_cancels_out_as_written() {
        assert_eq!(written("/srv/a/../b/./c"), ["srv", "b", "c"]);
        assert_eq!(written("/../srv"), ["srv"]);
        assert_eq!(written("../../data/x/.."), ["..", "..", "data"]);
        assert_eq!(written("a/../../b"), ["..", "b"]);
    }

    #[test]
    fn links_within_their_directory_are_followed_and_others_refused() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path();
        std::fs::create_dir_all(base.join("outer/real/deeper")).unwrap();
        std::os::unix::fs::symlink("real/deeper", base.join("outer/down")).unwrap();
        std::os::unix::fs::symlink(".", base.join("outer/itself")).unwrap();
        std::os::unix::fs::symlink("../..", base.join("outer/real/up")).unwrap();
        std::os::unix::fs::symlink(base, base.join("outer/absolute")).unwrap();
        std::os::unix::fs::symlink("loop", base.join("outer/loop")).unwrap();

        let open = |path: &str| GrantPath::new(&base.join(path)).open();
        let same = |a: &OwnedFd, b: &str| {
            let b = open(b).unwrap();
            same_file(
                &rustix::fs::fstat(a).unwrap(),
                &rustix::fs::fstat(&b).unwrap(),
            )
        };
        assert!(same(&open("outer/down").unwrap(), "outer/real/deeper"));
        assert!(same(&open("outer/itself").unwrap(), "outer"));
        // `itself/..` is cancelled as written, not taken through the link.
        assert!(same(&open("outer/itself/../real").unwrap(), "outer/real"));
        for (path, why) in [
            ("outer/real/up", "`up` is a symbolic link to `../..`"),
            ("outer/absolute", "leads out of the directory"),
            ("outer/loop", "more than 40 symbolic links"),
            ("outer/missing", "No such file or directory"),
        ] {
            let err = open(path).unwrap_err().to_string();
            assert!(err.contains(why), "{path}: {err}");
        }
    }
}

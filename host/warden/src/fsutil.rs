//! File-system helpers shared by the parts of Warden that write files.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tempfile::NamedTempFile;

use crate::error::Error;

/// The base directories of the XDG specification that Warden keeps files in.
#[derive(Clone, Copy, Debug)]
pub(crate) enum UserDir {
    /// `$XDG_CACHE_HOME`, else `$HOME/.cache`.
    Cache,
    /// `$XDG_CONFIG_HOME`, else `$HOME/.config`.
    Config,
    /// `$XDG_DATA_HOME`, else `$HOME/.local/share`.
    Data,
}

impl UserDir {
    /// `name` in Warden's folder of this base directory, e.g.
    /// `$XDG_DATA_HOME/warden/kv.sqlite`. `None` when neither the XDG
    /// variable nor `HOME` is set (an empty value counts as unset).
    pub(crate) fn warden_path(self, name: &str) -> Option<PathBuf> {
        let (variable, under_home) = match self {
            UserDir::Cache => ("XDG_CACHE_HOME", ".cache"),
            UserDir::Config => ("XDG_CONFIG_HOME", ".config"),
            UserDir::Data => ("XDG_DATA_HOME", ".local/share"),
        };
        let set = |variable: &str| std::env::var_os(variable).filter(|value| !value.is_empty());
        let base = set(variable)
            .map(PathBuf::from)
            .or_else(|| set("HOME").map(|home| Path::new(&home).join(under_home)))?;
        Some(base.join("warden").join(name))
    }
}

/// Replaces `path` with `bytes` atomically: readers see the old file or the
/// new one, never a mix, even if the process dies half-way. A replaced
/// file keeps its permissions; a new one is readable by everyone and
/// writable by its owner. The directory must exist: a mistyped one is an
/// [`Error::Io`] of kind [`std::io::ErrorKind::NotFound`] naming it, rather
/// than a new directory nobody meant to make.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_atomically(path, bytes, 0o644)
}

/// Like [`write_file_atomically`], but a new file is readable by its owner only.
pub(crate) fn write_private_file_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_atomically(path, bytes, 0o600)
}

fn write_atomically(path: &Path, bytes: &[u8], new_file_mode: u32) -> Result<(), Error> {
    let context = || format!("cannot write `{}`", path.display());
    let directory = directory_of(path);
    if !directory.is_dir() {
        let missing = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "there is no directory `{}`; check the path, or create the directory first",
                directory.display()
            ),
        );
        return Err(Error::io(context(), missing));
    }
    let temporary =
        synced_temporary_file(directory, bytes).map_err(|err| Error::io(context(), err))?;
    let permissions = match std::fs::metadata(path) {
        Ok(metadata) => metadata.permissions(),
        Err(_) => new_file_permissions(new_file_mode),
    };
    std::fs::set_permissions(temporary.path(), permissions)
        .map_err(|err| Error::io(context(), err))?;
    temporary
        .persist(path)
        .map(|_| ())
        .map_err(|err| Error::io(context(), err.error))
}

/// The directory a file at `path` goes in: its parent, or `.` for a bare name.
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// A new file in `directory`, readable by its owner only (as `NamedTempFile`
/// creates it), holding `bytes` and synced to disk, for its caller to move
/// into place.
fn synced_temporary_file(directory: &Path, bytes: &[u8]) -> std::io::Result<NamedTempFile> {
    let mut temporary = NamedTempFile::new_in(directory)?;
    temporary.write_all(bytes)?;
    temporary.as_file().sync_all()?;
    Ok(temporary)
}

fn new_file_permissions(mode: u32) -> std::fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(mode)
}

/// Creates a directory (and its missing parents) readable by its owner only.
pub(crate) fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Creates `path` holding `bytes`, readable by its owner only, unless a file
/// already has that name (then returns `false` and leaves it alone). The
/// bytes are written aside and hard-linked into place, which fails when the
/// name is taken, so readers never see a partial file and of several
/// processes creating it at once exactly one succeeds.
pub(crate) fn create_private_file_exclusively(path: &Path, bytes: &[u8]) -> Result<bool, Error> {
    let context = || format!("cannot create `{}`", path.display());
    let temporary = synced_temporary_file(directory_of(path), bytes)
        .map_err(|err| Error::io(context(), err))?;
    match std::fs::hard_link(temporary.path(), path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(err) => Err(Error::io(context(), err)),
    }
}

/// Opens `path` for reading without waiting on it: a named pipe that nothing
/// writes (planted where a trust store or key should be, say) would
/// otherwise block the open, and Warden with it, forever. Returns the file
/// and its metadata, read from the open file, for the caller to check
/// before it reads (a pipe or device is not [`Metadata::is_file`]).
pub(crate) fn open_without_blocking(path: &Path) -> std::io::Result<(File, Metadata)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let metadata = file.metadata()?;
    Ok((file, metadata))
}

/// File systems (by `fstatfs` type) whose files' change times only the
/// local kernel sets, to the present, on every change: ext2/3/4 (one
/// magic), XFS, Btrfs, tmpfs, F2FS and ZFS. On these an unchanged identity
/// means unchanged contents (see [`FileIdentity`]); elsewhere (FAT has no
/// change time; FUSE, sshfs, SMB, 9p and NFS take times from a server or a
/// process; a loop-mounted image's times are whatever its author wrote)
/// identities vouch for nothing.
#[cfg(any(target_os = "linux", target_os = "android"))]
const KEEPS_CHANGE_TIMES: [u32; 6] = [
    libc::EXT4_SUPER_MAGIC as u32,
    libc::XFS_SUPER_MAGIC as u32,
    libc::BTRFS_SUPER_MAGIC as u32,
    libc::TMPFS_MAGIC as u32,
    libc::F2FS_SUPER_MAGIC as u32,
    ZFS_SUPER_MAGIC,
];

/// OpenZFS's `fstatfs` type (`ZFS_SUPER_MAGIC`), which `libc` does not name.
#[cfg(any(target_os = "linux", target_os = "android"))]
const ZFS_SUPER_MAGIC: u32 = 0x2fc1_2fc1;

/// Whether `file` lives on a file system whose change times only the
/// kernel sets ([`KEEPS_CHANGE_TIMES`]), so that its identity may vouch for
/// its contents. Always `false` off Linux and Android, and when `fstatfs`
/// fails: the file is then read and hashed, which is only slower.
pub(crate) fn keeps_change_times(file: &File) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        rustix::fs::fstatfs(file).is_ok_and(|stat| is_kept_kind(stat.f_type as u32))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = file;
        false
    }
}

/// Whether a file system of `fstatfs` type `kind` is one of
/// [`KEEPS_CHANGE_TIMES`].
#[cfg(any(target_os = "linux", target_os = "android"))]
fn is_kept_kind(kind: u32) -> bool {
    KEEPS_CHANGE_TIMES.contains(&kind)
}

/// What tells one version of a file from another without reading it: its
/// device and inode, size, and modification and change times to the
/// nanosecond (as `fstat` gives them). On the file systems of
/// [`keeps_change_times`], any write into a file moves its change time to
/// the present and only root can set a change time back (by changing the
/// clock, or writing the disk under the file system), so an unchanged
/// identity means unchanged contents, except for a write in the same
/// timestamp tick as the identity was taken: see
/// [`FileIdentity::is_settled`]. Elsewhere change times can be authored
/// (`touch -r` on some network and FUSE file systems, FAT has none), so an
/// identity is only trusted where [`keeps_change_times`] says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

impl FileIdentity {
    /// Bytes of [`FileIdentity::to_bytes`].
    pub(crate) const LEN: usize = 7 * 8;

    /// The identity of the file `metadata` describes (read from an open file
    /// with `fstat`, so that it is the file that is read).
    pub(crate) fn of(metadata: &Metadata) -> Self {
        FileIdentity {
            dev: metadata.dev(),
            ino: metadata.ino(),
            size: metadata.size(),
            mtime: metadata.mtime(),
            mtime_nsec: metadata.mtime_nsec(),
            ctime: metadata.ctime(),
            ctime_nsec: metadata.ctime_nsec(),
        }
    }

    /// The file's size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// A name for files about this one: `DEV-INO`, which no other file has
    /// while it exists.
    pub(crate) fn file_key(&self) -> String {
        format!("{:x}-{:x}", self.dev, self.ino)
    }

    /// Whether the file's last change is at least `window` before
    /// `read_started`, when the read of the contents this identity is to
    /// vouch for began. A write in the same timestamp tick as an identity
    /// was taken could leave the change time where it was (git's "racy"
    /// index entries); a write before the read is in the bytes read, and
    /// one after it, a tick later, moves the change time. So only a settled
    /// identity may vouch for the contents later.
    pub(crate) fn is_settled(&self, read_started: SystemTime, window: Duration) -> bool {
        let Ok(since_epoch) = read_started.duration_since(SystemTime::UNIX_EPOCH) else {
            return false;
        };
        let changed = i128::from(self.ctime) * 1_000_000_000 + i128::from(self.ctime_nsec);
        let started = since_epoch.as_nanos() as i128;
        changed + window.as_nanos() as i128 <= started
    }

    /// The identity as fixed-size little-endian bytes, for sealed records.
    pub(crate) fn to_bytes(self) -> [u8; Self::LEN] {
        let mut bytes = [0; Self::LEN];
        let fields = [
            self.dev,
            self.ino,
            self.size,
            self.mtime as u64,
            self.mtime_nsec as u64,
            self.ctime as u64,
            self.ctime_nsec as u64,
        ];
        for (chunk, field) in bytes.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&field.to_le_bytes());
        }
        bytes
    }

    /// The identity [`FileIdentity::to_bytes`] wrote; `None` for another length.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::LEN {
            return None;
        }
        let mut fields = bytes
            .chunks_exact(8)
            .map(|chunk| u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])));
        let mut next = || fields.next().unwrap_or(0);
        Some(FileIdentity {
            dev: next(),
            ino: next(),
            size: next(),
            mtime: next() as i64,
            mtime_nsec: next() as i64,
            ctime: next() as i64,
            ctime_nsec: next() as i64,
        })
    }
}

/// Checks that only the user running Warden can change a file or directory
/// Warden trusts: it belongs to that user or to root, and neither its group
/// nor other users may write it. The problem, naming `path` and the fix,
/// otherwise.
pub(crate) fn check_not_writable_by_others(path: &Path, metadata: &Metadata) -> Result<(), String> {
    let Access { owner, me, mode } = Access::of(metadata);
    let path = path.display();
    if owner != me && owner != 0 {
        return Err(format!(
            "`{path}` belongs to user id {owner}, not to you (user id {me}) or root, so its owner \
             can change it; remove it, or `chown` it to yourself"
        ));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "group or other users can write `{path}` (mode {mode:04o}); run `chmod go-w {path}`"
        ));
    }
    Ok(())
}

/// Checks that a file holding a secret belongs to the user running Warden
/// and that nobody else may read or write it. The problem, naming `path`
/// and the fix, otherwise.
pub(crate) fn check_secret(path: &Path, metadata: &Metadata) -> Result<(), String> {
    let Access { owner, me, mode } = Access::of(metadata);
    let path = path.display();
    if owner != me {
        return Err(format!(
            "`{path}` belongs to user id {owner}, not to you (user id {me}), so its owner knows \
             the secret; remove it and Warden makes a new one"
        ));
    }
    if mode & 0o077 != 0 {
        return Err(format!(
            "group or other users can read or write `{path}` (mode {mode:04o}); run \
             `chmod 600 {path}`"
        ));
    }
    Ok(())
}

/// Who may change or read a file, as the checks above see it.
struct Access {
    /// The user id owning the file.
    owner: u32,
    /// The effective user id of this process.
    me: u32,
    /// The permission bits of the file's mode.
    mode: u32,
}

impl Access {
    fn of(metadata: &Metadata) -> Self {
        Access {
            owner: metadata.uid(),
            me: rustix::process::geteuid().as_raw(),
            mode: metadata.mode() & 0o777,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn only_local_file_systems_that_keep_change_times_are_trusted() {
        // ext2/3/4, XFS, Btrfs, tmpfs, F2FS, ZFS.
        for kind in [
            0xef53,
            0x5846_5342,
            0x9123_683e,
            0x0102_1994,
            0xf2f5_2010,
            0x2fc1_2fc1,
        ] {
            assert!(super::is_kept_kind(kind), "{kind:#x}");
        }
        // vfat (MSDOS), FUSE (sshfs and others), SMB2/CIFS, 9p, NFS,
        // overlayfs, and ISO 9660 (a loop-mounted image).
        for kind in [
            0x4d44,
            0x6573_5546,
            0xfe53_4d42,
            0xff53_4d42,
            0x0102_1997,
            0x6969,
            0x794c_7630,
            0x9660,
        ] {
            assert!(!super::is_kept_kind(kind), "{kind:#x}");
        }
        // This machine's temporary directory is one of them when it is;
        // either way the answer is the allowlist's.
        let file = tempfile::tempfile().unwrap();
        let kind = rustix::fs::fstatfs(&file).unwrap().f_type as u32;
        assert_eq!(super::keeps_change_times(&file), super::is_kept_kind(kind));
    }

    /// Makes a named pipe at `path`, readable and writable by its owner.
    pub(crate) fn make_fifo(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    /// Runs `open` on `path` in a thread and returns its result, failing the
    /// test if it has not returned within a generous bound (a hang).
    pub(crate) fn within_bound<T: Send + 'static>(
        path: PathBuf,
        open: impl FnOnce(PathBuf) -> T + Send + 'static,
    ) -> T {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(open(path));
        });
        receiver
            .recv_timeout(Duration::from_secs(10))
            .expect("opening a named pipe hung")
    }
}

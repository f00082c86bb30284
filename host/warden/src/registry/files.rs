//! Reading a registry's files (plugins, their detached signatures, the
//! manifest) off the async runtime and within size and time bounds, and
//! noticing when they change.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tokio::sync::oneshot;

use super::Registry;
use crate::error::Error;
use crate::manifest::Manifest;
use crate::source::{Source, signature_path};

/// A file, the files that go with it (a plugin's detached signature, a
/// manifest's trust stores), and what they looked like when last read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Watched {
    pub(super) path: PathBuf,
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
    pub(super) fn plugin(path: &Path) -> Self {
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
    pub(super) fn restamped(&self) -> Self {
        Watched::with(&self.path, self.companion_paths())
    }

    pub(super) fn companion_paths(&self) -> Vec<PathBuf> {
        self.companions
            .iter()
            .map(|(path, _)| path.clone())
            .collect()
    }

    pub(super) fn changed(&self) -> bool {
        FileStamp::of(&self.path) != self.stamp
            || self
                .companions
                .iter()
                .any(|(path, stamp)| FileStamp::of(path) != *stamp)
    }
}

/// Reads and parses the manifest on a thread of its own (it names trust
/// stores and key files, read as it is parsed), stamped with the trust
/// stores it names so that their changes count as its own. The stores in
/// `known` (those the previous version named) are stamped before they are
/// read, so that an edit landing during the read is seen by the next check.
pub(super) async fn read_manifest(
    path: &Path,
    known: Vec<PathBuf>,
) -> Result<(Watched, Manifest), Error> {
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
pub(super) async fn read_plugin_file(path: &Path) -> Result<Source, Error> {
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
pub(crate) fn read_regular_file(path: &Path, what: &str, max: u64) -> Result<Vec<u8>, Error> {
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

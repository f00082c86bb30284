//! Where a plugin's bytes come from: a [`Source`].
//!
//! A source read from a file keeps the open file and its identity
//! ([`FileIdentity`]) and reads the bytes only when something needs them:
//! a load whose compile cache already knows this version of the file (its
//! digest index, and the compiled code) never reads or hashes them.

use std::fs::File;
use std::io::{Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use crate::error::Error;
use crate::footprint::Footprint;
use crate::fsutil::{self, FileIdentity};
use crate::registry::Registry;

/// Bytes read from the start of a component file when it is opened: its
/// header and, when it is signed, a signature section of many signatures,
/// so that telling its kind and its signers' key ids needs no full read.
pub(crate) const PREFIX_LEN: usize = 64 * 1024;

/// The largest component file read: the registry's cap
/// ([`Registry::MAX_PLUGIN_FILE_BYTES`]), so that a path pointed at a huge
/// (or sparse) file is refused instead of read into memory.
const MAX_FILE_BYTES: u64 = Registry::MAX_PLUGIN_FILE_BYTES;

/// A component's bytes, the name it is loaded under, and its detached
/// signature if it has one.
///
/// ```
/// let source = warden::Source::new("hello", vec![0, 97, 115, 109]);
/// assert_eq!(source.name(), "hello");
/// ```
#[derive(Clone, Debug)]
pub struct Source {
    pub(crate) name: String,
    shared: Arc<Shared>,
    pub(crate) detached_signature: Option<Vec<u8>>,
}

/// What clones of a source share: the contents, and their digest once
/// something computed it (a load, or
/// [`Runtime::component_sha256`](crate::Runtime::component_sha256)).
#[derive(Debug)]
struct Shared {
    content: Content,
    digested: OnceLock<Digested>,
    /// The digest of the bytes read, set when they did not match a digest
    /// taken from the digest index: it then replaces that one.
    repaired: OnceLock<Digested>,
}

#[derive(Debug)]
enum Content {
    Memory(Vec<u8>),
    File(FileContent),
}

/// A regular file, open, read lazily.
#[derive(Debug)]
struct FileContent {
    path: PathBuf,
    file: File,
    /// The first [`PREFIX_LEN`] bytes (fewer for a smaller file), as read
    /// when the file was opened.
    prefix: Vec<u8>,
    /// The file's identity when it was opened; `None` when it changed
    /// while the prefix was read (then nothing is known without reading).
    opened: Option<FileIdentity>,
    /// Whether the file lives on a file system whose change times only the
    /// kernel sets ([`fsutil::keeps_change_times`]): only then may its
    /// identity vouch for its contents.
    times_kept: bool,
    read: OnceLock<Result<ReadBytes, ReadFailure>>,
}

/// The whole file, read once, and of the identity it was opened with (a
/// file that changed is a [`ReadFailure`]).
#[derive(Debug)]
struct ReadBytes {
    bytes: Vec<u8>,
    /// When the read began: the racy-time rule
    /// ([`FileIdentity::is_settled`]) is judged against it, since a write
    /// before it is in the bytes and a write after it moves the change time.
    started: SystemTime,
}

/// The version of a file some bytes were read from, and when the read
/// began, for the digest index.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadVersion {
    /// The file's identity, unchanged through the read.
    pub identity: FileIdentity,
    /// When the read began.
    pub started: SystemTime,
}

/// A failed read, kept so that every caller gets the same error.
#[derive(Debug)]
struct ReadFailure {
    kind: std::io::ErrorKind,
    message: String,
}

/// What a load knows of a source's contents without (necessarily) holding
/// its bytes.
#[derive(Debug)]
pub(crate) struct Digested {
    /// The component's SHA-256.
    pub sha256: [u8; 32],
    /// Its size in bytes.
    pub size: u64,
    /// What one instance takes from the pools, when the digest index
    /// recorded it.
    pub footprint: Option<Footprint>,
    /// Whether this came from the digest index (for the identity the file
    /// was opened with) rather than from hashing the bytes: bytes read
    /// later must then be checked against the digest.
    pub indexed: bool,
    /// Set once bytes read after an indexed digest were found to match it.
    pub(crate) bytes_match: OnceLock<bool>,
}

impl Digested {
    /// A digest known without reading the bytes (from the digest index).
    pub(crate) fn indexed(sha256: [u8; 32], size: u64, footprint: Option<Footprint>) -> Self {
        Digested {
            sha256,
            size,
            footprint,
            indexed: true,
            bytes_match: OnceLock::new(),
        }
    }

    /// The digest of bytes that were read and hashed.
    pub(crate) fn hashed(sha256: [u8; 32], size: u64) -> Self {
        Digested {
            sha256,
            size,
            footprint: None,
            indexed: false,
            bytes_match: OnceLock::new(),
        }
    }
}

impl Source {
    /// Bytes already in memory, loaded under `name`.
    pub fn new(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        Source::with_content(name.into(), Content::Memory(bytes), None)
    }

    fn with_content(name: String, content: Content, detached_signature: Option<Vec<u8>>) -> Self {
        Source {
            name,
            shared: Arc::new(Shared {
                content,
                digested: OnceLock::new(),
                repaired: OnceLock::new(),
            }),
            detached_signature,
        }
    }

    /// Opens a component file. It is named after the file's stem, and the
    /// detached signature beside it ([`signature_path`]) is read when it
    /// exists.
    ///
    /// The component's bytes are read when something needs them
    /// ([`Source::bytes`], or a load that its compile cache cannot serve
    /// from what it recorded about this version of the file), from the file
    /// opened here; a file that is not a regular file (a pipe, say) is read
    /// at once. Neither file is waited on when it is opened, so a named
    /// pipe that nothing writes reads as empty instead of hanging the load.
    ///
    /// A component file larger than [`Registry::MAX_PLUGIN_FILE_BYTES`], or
    /// a signature file larger than [`Registry::MAX_SIGNATURE_FILE_BYTES`]
    /// or that is not a regular file, is an [`Error::Io`] naming it.
    pub async fn read(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_owned();
        let opening = path.clone();
        let (content, detached_signature) = tokio::task::spawn_blocking(move || {
            let content = FileContent::open(opening.clone())
                .map_err(|err| Error::io(format!("cannot read `{}`", opening.display()), err))?;
            let signature = match crate::registry::read_regular_file(
                &signature_path(&opening),
                "signature",
                Registry::MAX_SIGNATURE_FILE_BYTES,
            ) {
                Ok(signature) => Some(signature),
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    None
                }
                Err(err) => return Err(err),
            };
            Ok((content, signature))
        })
        .await
        .map_err(|err| Error::Internal(wasmtime::Error::msg(err.to_string())))??;
        Ok(Source::with_content(
            Source::name_of(&path),
            content,
            detached_signature,
        ))
    }

    /// The name a component file is loaded under when no one names it:
    /// the file's stem (`hello` for `plugins/hello.wasm`), or `plugin` for
    /// a path without one.
    pub fn name_of(path: &Path) -> String {
        path.file_stem().map_or_else(
            || "plugin".to_owned(),
            |stem| stem.to_string_lossy().into_owned(),
        )
    }

    /// The same source under another name (the name keys the plugin's
    /// key-value namespace and its logs).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The same source with a detached signature for the trust check.
    pub fn with_detached_signature(mut self, signature: Vec<u8>) -> Self {
        self.detached_signature = Some(signature);
        self
    }

    /// The name it is loaded under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The component's bytes, read from its file on the first call (by
    /// this source or a clone of it). A file that can no longer be read, or
    /// that changed since it was opened (then load it again), is an
    /// [`Error::Io`] naming it; every call returns the same outcome.
    pub fn bytes(&self) -> Result<&[u8], Error> {
        match &self.shared.content {
            Content::Memory(bytes) => Ok(bytes),
            Content::File(file) => file.read().map(|read| read.bytes.as_slice()),
        }
    }

    /// The detached signature, if any.
    pub fn detached_signature(&self) -> Option<&[u8]> {
        self.detached_signature.as_deref()
    }

    /// The start of the component (all of it when it is in memory): once
    /// the bytes are read, their first [`PREFIX_LEN`] bytes; before that,
    /// the file's as they were when it was opened.
    pub(crate) fn prefix(&self) -> &[u8] {
        match &self.shared.content {
            Content::Memory(bytes) => bytes,
            Content::File(file) => match file.read.get() {
                Some(Ok(read)) => &read.bytes[..read.bytes.len().min(PREFIX_LEN)],
                _ => &file.prefix,
            },
        }
    }

    /// The identity the file had when it was opened, if it is a file that
    /// did not change while its prefix was read, on a file system where an
    /// identity may vouch for contents ([`fsutil::keeps_change_times`]).
    pub(crate) fn opened_identity(&self) -> Option<FileIdentity> {
        match &self.shared.content {
            Content::Memory(_) => None,
            Content::File(file) => file.opened.filter(|_| file.times_kept),
        }
    }

    /// The version of the file the bytes read belong to (the identity it
    /// was opened with and kept through the read), when that identity may
    /// vouch for contents. `None` before the bytes are read, and for a
    /// source in memory.
    pub(crate) fn read_version(&self) -> Option<ReadVersion> {
        match &self.shared.content {
            Content::Memory(_) => None,
            Content::File(file) => match (file.read.get(), self.opened_identity()) {
                (Some(Ok(read)), Some(identity)) => Some(ReadVersion {
                    identity,
                    started: read.started,
                }),
                _ => None,
            },
        }
    }

    /// Whether the file's bytes have been read (tests prove a load did not).
    #[cfg(test)]
    pub(crate) fn was_read(&self) -> bool {
        matches!(&self.shared.content, Content::File(file) if file.read.get().is_some())
    }

    /// What is known of the contents' digest, if anything computed it yet:
    /// the digest of the bytes read, when they did not match the one the
    /// digest index gave ([`Source::repair_digest`]).
    pub(crate) fn digested(&self) -> Option<&Digested> {
        self.shared
            .repaired
            .get()
            .or_else(|| self.shared.digested.get())
    }

    /// Replaces a digest from the digest index that the bytes read did not
    /// match with `digested`, theirs, for this source and its clones.
    pub(crate) fn repair_digest(&self, digested: Digested) {
        let _ = self.shared.repaired.set(digested);
    }

    /// Whether a digest from the digest index was replaced by the bytes'
    /// own ([`Source::repair_digest`]): what was judged with the first is
    /// judged again with the second.
    pub(crate) fn digest_repaired(&self) -> bool {
        self.shared.repaired.get().is_some()
    }

    /// Remembers `digested` for this source and its clones; keeps what an
    /// earlier caller remembered, if one did.
    pub(crate) fn remember_digest(&self, digested: Digested) -> &Digested {
        self.shared.digested.get_or_init(|| digested)
    }
}

/// Sources are equal when their names and detached signatures are, and
/// their contents are the same bytes in memory, or were opened from the
/// same path: both clones of one opened source, or two openings that saw
/// the same file identity (device, inode, size, modification and change
/// times) at the time. Two openings are compared by that identity alone,
/// not by bytes: a write that keeps the identity (possible where the file
/// system lets change times be set) is not seen, and neither source's
/// bytes are read to compare them. A source in memory never equals one read from
/// a file.
impl PartialEq for Source {
    fn eq(&self, other: &Self) -> bool {
        let same_content = match (&self.shared.content, &other.shared.content) {
            (Content::Memory(a), Content::Memory(b)) => a == b,
            (Content::File(a), Content::File(b)) => {
                Arc::ptr_eq(&self.shared, &other.shared)
                    || (a.path == b.path && a.opened.is_some() && a.opened == b.opened)
            }
            _ => false,
        };
        self.name == other.name
            && self.detached_signature == other.detached_signature
            && same_content
    }
}

impl Eq for Source {}

impl FileContent {
    /// Opens `path` without waiting on it and reads its prefix, between two
    /// `fstat`s that must agree for the identity to count. A file that is
    /// not a regular file is read whole, up to [`MAX_FILE_BYTES`].
    fn open(path: PathBuf) -> std::io::Result<Content> {
        let (file, before) = fsutil::open_without_blocking(&path)?;
        if !before.is_file() {
            // A pipe with a writer is read as it comes (no longer
            // non-blocking); one without reads as empty.
            rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::empty())?;
            let mut bytes = Vec::new();
            file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
            if bytes.len() as u64 > MAX_FILE_BYTES {
                return Err(too_large(bytes.len() as u64));
            }
            return Ok(Content::Memory(bytes));
        }
        if before.len() > MAX_FILE_BYTES {
            return Err(too_large(before.len()));
        }
        let wanted = usize::try_from(before.len()).map_or(PREFIX_LEN, |len| len.min(PREFIX_LEN));
        let mut prefix = vec![0; wanted];
        let mut filled = 0;
        while filled < wanted {
            match file.read_at(&mut prefix[filled..], filled as u64)? {
                0 => break,
                read => filled += read,
            }
        }
        prefix.truncate(filled);
        let after = file.metadata()?;
        let identity = FileIdentity::of(&before);
        let opened = (identity == FileIdentity::of(&after) && filled == wanted).then_some(identity);
        let times_kept = fsutil::keeps_change_times(&file);
        Ok(Content::File(FileContent {
            path,
            file,
            prefix,
            opened,
            times_kept,
            read: OnceLock::new(),
        }))
    }

    /// Reads the whole file (once), then checks its identity again: bytes
    /// of a file that changed since it was opened are refused, so that
    /// everything known of a source (its prefix, its identity, its bytes)
    /// is of one version of the file.
    fn read(&self) -> Result<&ReadBytes, Error> {
        let read = self.read.get_or_init(|| {
            let read_all = || -> std::io::Result<ReadBytes> {
                let changed =
                    || std::io::Error::other("it changed since it was opened; load it again");
                let opened = self.opened.ok_or_else(changed)?;
                let started = SystemTime::now();
                let mut file = &self.file;
                file.rewind()?;
                let size = opened.size();
                if size > MAX_FILE_BYTES {
                    return Err(too_large(size));
                }
                let mut bytes = Vec::new();
                // One byte more than expected, to see a file that grew.
                bytes
                    .try_reserve_exact(usize::try_from(size + 1).map_err(|_| too_large(size))?)
                    .map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::OutOfMemory,
                            format!("there is not enough memory to read its {size} bytes"),
                        )
                    })?;
                file.take(size + 1).read_to_end(&mut bytes)?;
                let after = FileIdentity::of(&file.metadata()?);
                if after != opened || bytes.len() as u64 != size {
                    return Err(changed());
                }
                Ok(ReadBytes { bytes, started })
            };
            read_all().map_err(|err| ReadFailure {
                kind: err.kind(),
                message: err.to_string(),
            })
        });
        read.as_ref().map_err(|failure| {
            Error::io(
                format!("cannot read `{}`", self.path.display()),
                std::io::Error::new(failure.kind, failure.message.clone()),
            )
        })
    }
}

/// The error for a component file over [`MAX_FILE_BYTES`].
fn too_large(size: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::FileTooLarge,
        format!(
            "it is {size} bytes, more than the {} a plugin file may be",
            crate::units::format_bytes(MAX_FILE_BYTES)
        ),
    )
}

/// Where a component's detached signature lives: `PLUGIN.wasm.sig`.
pub fn signature_path(component: &Path) -> PathBuf {
    let mut path = component.as_os_str().to_owned();
    path.push(".sig");
    path.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::tests::{make_fifo, within_bound};

    fn read_now(path: PathBuf) -> Result<Source, Error> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(Source::read(path))
    }

    /// A sparse file claims a terabyte and costs nothing on disk: reading
    /// it would reserve that much memory and abort the process.
    #[test]
    fn a_huge_sparse_file_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin.wasm");
        File::create(&path).unwrap().set_len(1 << 40).unwrap();
        let err = read_now(path).unwrap_err();
        let Error::Io { source, .. } = &err else {
            panic!("expected an I/O error, got {err:?}");
        };
        assert_eq!(source.kind(), std::io::ErrorKind::FileTooLarge, "{err}");
    }

    /// A named pipe planted where a plugin or its signature should be, with
    /// nothing writing it, would block the open forever.
    #[test]
    fn a_named_pipe_planted_as_the_plugin_or_its_signature_does_not_hang() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("piped.wasm");
        make_fifo(&plugin);
        let source = within_bound(plugin, read_now).unwrap();
        let err = crate::load::binary_kind_for_tests(source.bytes().unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("not a WebAssembly binary"),
            "{err}"
        );

        let signed = dir.path().join("signed.wasm");
        std::fs::write(&signed, b"\0asm\x0d\0\x01\0").unwrap();
        make_fifo(&signature_path(&signed));
        let err = within_bound(signed, read_now).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
    }
}

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

use crate::error::Error;
use crate::footprint::Footprint;
use crate::fsutil::FileIdentity;

/// Bytes read from the start of a component file when it is opened: its
/// header and, when it is signed, a signature section of many signatures,
/// so that telling its kind and its signers' key ids needs no full read.
const PREFIX_LEN: usize = 64 * 1024;

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
    /// The first [`PREFIX_LEN`] bytes (fewer for a smaller file).
    prefix: Vec<u8>,
    /// The file's identity when it was opened; `None` when it changed
    /// while the prefix was read (then nothing is known without reading).
    opened: Option<FileIdentity>,
    read: OnceLock<Result<ReadBytes, ReadFailure>>,
}

#[derive(Debug)]
struct ReadBytes {
    bytes: Vec<u8>,
    /// Whether the file kept the identity it was opened with through the
    /// read: only then do the bytes belong to that identity.
    unchanged: bool,
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
    /// at once.
    pub async fn read(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_owned();
        let opening = path.clone();
        let content = tokio::task::spawn_blocking(move || FileContent::open(opening))
            .await
            .map_err(|err| Error::Internal(wasmtime::Error::msg(err.to_string())))?
            .map_err(|err| Error::io(format!("cannot read `{}`", path.display()), err))?;
        let signature_path = signature_path(&path);
        let detached_signature = match tokio::fs::read(&signature_path).await {
            Ok(signature) => Some(signature),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(err) => {
                return Err(Error::io(
                    format!("cannot read `{}`", signature_path.display()),
                    err,
                ));
            }
        };
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
    /// this source or a clone of it). A file that can no longer be read is
    /// an [`Error::Io`] naming it.
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

    /// The start of the component (all of it when it is in memory), as it
    /// was when the file was opened.
    pub(crate) fn prefix(&self) -> &[u8] {
        match &self.shared.content {
            Content::Memory(bytes) => bytes,
            Content::File(file) => &file.prefix,
        }
    }

    /// The identity the file had when it was opened, if it is a file and it
    /// did not change while its prefix was read.
    pub(crate) fn opened_identity(&self) -> Option<FileIdentity> {
        match &self.shared.content {
            Content::Memory(_) => None,
            Content::File(file) => file.opened,
        }
    }

    /// The identity the bytes read belong to: the one the file was opened
    /// with, when it kept it through the read. `None` before the bytes are
    /// read, and for a source in memory.
    pub(crate) fn read_identity(&self) -> Option<FileIdentity> {
        match &self.shared.content {
            Content::Memory(_) => None,
            Content::File(file) => match file.read.get() {
                Some(Ok(read)) if read.unchanged => file.opened,
                _ => None,
            },
        }
    }

    /// Whether the file's bytes have been read (tests prove a load did not).
    #[cfg(test)]
    pub(crate) fn was_read(&self) -> bool {
        matches!(&self.shared.content, Content::File(file) if file.read.get().is_some())
    }

    /// What is known of the contents' digest, if anything computed it yet.
    pub(crate) fn digested(&self) -> Option<&Digested> {
        self.shared.digested.get()
    }

    /// Remembers `digested` for this source and its clones; keeps what an
    /// earlier caller remembered, if one did.
    pub(crate) fn remember_digest(&self, digested: Digested) -> &Digested {
        self.shared.digested.get_or_init(|| digested)
    }
}

/// Sources are equal when their names, detached signatures and contents
/// are: the same bytes in memory, or the same version of the same file.
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
    /// Opens `path` and reads its prefix, between two `fstat`s that must
    /// agree for the identity to count. A file that is not a regular file
    /// is read whole.
    fn open(path: PathBuf) -> std::io::Result<Content> {
        let mut file = File::open(&path)?;
        let before = file.metadata()?;
        if !before.is_file() {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            return Ok(Content::Memory(bytes));
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
        Ok(Content::File(FileContent {
            path,
            file,
            prefix,
            opened,
            read: OnceLock::new(),
        }))
    }

    /// Reads the whole file (once), then checks its identity again.
    fn read(&self) -> Result<&ReadBytes, Error> {
        let read = self.read.get_or_init(|| {
            let read_all = || -> std::io::Result<ReadBytes> {
                let mut file = &self.file;
                file.rewind()?;
                let expected = self.opened.map_or(0, |identity| identity.size());
                let mut bytes =
                    Vec::with_capacity(usize::try_from(expected).unwrap_or(0).saturating_add(1));
                file.read_to_end(&mut bytes)?;
                let after = FileIdentity::of(&file.metadata()?);
                let unchanged = self.opened == Some(after) && bytes.len() as u64 == after.size();
                Ok(ReadBytes { bytes, unchanged })
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

/// Where a component's detached signature lives: `PLUGIN.wasm.sig`.
pub fn signature_path(component: &Path) -> PathBuf {
    let mut path = component.as_os_str().to_owned();
    path.push(".sig");
    path.into()
}

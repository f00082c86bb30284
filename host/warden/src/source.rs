//! Where a plugin's bytes come from: a [`Source`].

use std::path::{Path, PathBuf};

use crate::error::Error;

/// A component's bytes, the name it is loaded under, and its detached
/// signature if it has one.
///
/// ```
/// let source = warden::Source::new("hello", vec![0, 97, 115, 109]);
/// assert_eq!(source.name(), "hello");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub(crate) name: String,
    pub(crate) bytes: Vec<u8>,
    pub(crate) detached_signature: Option<Vec<u8>>,
}

impl Source {
    /// Bytes already in memory, loaded under `name`.
    pub fn new(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        Source {
            name: name.into(),
            bytes,
            detached_signature: None,
        }
    }

    /// Reads a component file. It is named after the file's stem, and the
    /// detached signature beside it ([`signature_path`]) is picked up when
    /// it exists.
    pub async fn read(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|err| Error::io(format!("cannot read `{}`", path.display()), err))?;
        let signature_path = signature_path(path);
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
        let name = Source::name_of(path);
        Ok(Source {
            name,
            bytes,
            detached_signature,
        })
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

    /// The component's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The detached signature, if any.
    pub fn detached_signature(&self) -> Option<&[u8]> {
        self.detached_signature.as_deref()
    }
}

/// Where a component's detached signature lives: `PLUGIN.wasm.sig`.
pub fn signature_path(component: &Path) -> PathBuf {
    let mut path = component.as_os_str().to_owned();
    path.push(".sig");
    path.into()
}

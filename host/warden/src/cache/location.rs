//! Where the compile cache lives, and the policy for opening it there.

use std::path::PathBuf;

use super::{CompileCache, OpenFailure};
use crate::error::Error;

/// Where the compile cache lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CacheLocation {
    /// The per-user default; a cache that cannot be created there is skipped.
    Default,
    /// A directory the embedder chose; a cache that cannot be opened there
    /// is an error.
    Dir(PathBuf),
    /// No cache: every load compiles.
    Disabled,
}

impl CacheLocation {
    /// Opens the compile cache here, sealed with the key at `key` (by
    /// default [`CompileCache::default_key_path`]). A cache that cannot be
    /// created at the default location is skipped with a warning; one
    /// exposed to other users is refused wherever it is.
    pub(crate) fn open(&self, key: Option<PathBuf>) -> Result<Option<CompileCache>, Error> {
        let key = key.or_else(CompileCache::default_key_path);
        match self {
            CacheLocation::Disabled => Ok(None),
            CacheLocation::Dir(dir) => {
                let key = key.ok_or_else(|| {
                    Error::InvalidConfig(format!(
                        "the compile cache `{}` needs a key file outside it, and neither \
                         XDG_DATA_HOME nor HOME is set to place one; set one, or give the key's \
                         path (RuntimeBuilder::compile_cache_key, --cache-key)",
                        dir.display()
                    ))
                })?;
                CompileCache::open(dir.clone(), &key)
                    .map(Some)
                    .map_err(OpenFailure::into_error)
            }
            CacheLocation::Default => {
                let (Some(dir), Some(key)) = (CompileCache::default_dir(), key) else {
                    return Ok(None);
                };
                match CompileCache::open(dir, &key) {
                    Ok(cache) => Ok(Some(cache)),
                    Err(OpenFailure::Unavailable(err)) => {
                        tracing::warn!(target: "warden::cache", "compiling without a cache: {err}");
                        Ok(None)
                    }
                    Err(OpenFailure::Unsafe(err)) => Err(err),
                }
            }
        }
    }
}

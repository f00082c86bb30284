//! File-system helpers shared by the parts of Warden that write files.

use std::io::Write;
use std::path::Path;

use crate::error::Error;

/// Replaces `path` with `bytes` atomically: readers see the old file or the
/// new one, never a mix, even if the process dies half-way. The replaced
/// file's permissions are kept.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let context = || format!("cannot write `{}`", path.display());
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(directory).map_err(|err| Error::io(context(), err))?;
    let mut temporary =
        tempfile::NamedTempFile::new_in(directory).map_err(|err| Error::io(context(), err))?;
    temporary
        .write_all(bytes)
        .and_then(|()| temporary.as_file().sync_all())
        .map_err(|err| Error::io(context(), err))?;
    // Keep the original file's permissions (a plugin stays executable-free,
    // a config file stays private) when replacing it.
    if let Ok(metadata) = std::fs::metadata(path) {
        std::fs::set_permissions(temporary.path(), metadata.permissions())
            .map_err(|err| Error::io(context(), err))?;
    }
    temporary
        .persist(path)
        .map(|_| ())
        .map_err(|err| Error::io(context(), err.error))
}

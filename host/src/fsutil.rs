//! File-system helpers shared by the parts of Warden that write files.

use std::io::Write;
use std::path::Path;

use crate::error::Error;

/// Replaces `path` with `bytes` atomically: readers see the old file or the
/// new one, never a mix, even if the process dies half-way. A replaced
/// file keeps its permissions; a new one is readable by everyone and
/// writable by its owner.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_atomically(path, bytes, 0o644)
}

/// Like [`write_file_atomically`], but a new file is readable by its owner only.
pub(crate) fn write_private_file_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_atomically(path, bytes, 0o600)
}

fn write_atomically(path: &Path, bytes: &[u8], new_file_mode: u32) -> Result<(), Error> {
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

fn new_file_permissions(mode: u32) -> std::fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(mode)
}

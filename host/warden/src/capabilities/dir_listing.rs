//! `read-directory` for the `fs` capability, done by Warden rather than
//! wasmtime-wasi, whose listing is built whole on a blocking thread that
//! runs on after its call and is held in a type nobody can measure.
//!
//! Here a listing is read on a blocking thread that stops at the call's
//! [`Interrupt`] (the call cancelled, timed out or past its deadline), and
//! stops as soon as it outgrows the room left in the instance's host-memory
//! budget: the guest then gets `insufficient-memory` and the refusal is
//! recorded, so a guest that fails because of it fails with `memory-limit`
//! (host memory). A finished listing is charged to the budget until the
//! guest drops its `directory-entry-stream`.
//!
//! The resource `directory-entry-stream` and its two functions shadow
//! wasmtime-wasi's definitions, which must therefore be linked first.

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::p2::bindings::filesystem::types::{DescriptorType, DirectoryEntry, ErrorCode};

use super::interrupt::{CancelOnDrop, Interrupt};
use crate::state::HostState;

/// A directory's entries handed to a guest as a `directory-entry-stream`.
pub(crate) struct DirectoryListing {
    entries: std::vec::IntoIter<DirectoryEntry>,
    /// What the listing is charged to the host-memory budget.
    bytes: usize,
}

/// Replaces wasmtime-wasi's `read-directory` and `directory-entry-stream`
/// (the caller allows shadowing).
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut types = linker.instance(super::fs::TYPES)?;
    types.resource(
        "directory-entry-stream",
        ResourceType::host::<DirectoryListing>(),
        |mut store, rep| {
            let state = store.data_mut();
            let listing = state
                .table
                .delete(Resource::<DirectoryListing>::new_own(rep))?;
            state.host_memory().release_listing(listing.bytes);
            Ok(())
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.read-directory",
        |store, (descriptor,): (Resource<Descriptor>,)| {
            Box::new(async move { Ok((read_directory(store, descriptor).await?,)) })
        },
    )?;
    types.func_wrap_async(
        "[method]directory-entry-stream.read-directory-entry",
        |mut store, (listing,): (Resource<DirectoryListing>,)| {
            Box::new(async move {
                let listing = store.data_mut().table.get_mut(&listing)?;
                Ok((Ok::<_, ErrorCode>(listing.entries.next()),))
            })
        },
    )
}

/// Why a listing stopped before its end.
enum Stopped {
    Io(std::io::Error),
    NotUtf8,
    /// Past the room left in the budget, at this many bytes.
    OverBudget(usize),
    Interrupted,
}

async fn read_directory(
    mut store: StoreContextMut<'_, HostState>,
    descriptor: Resource<Descriptor>,
) -> wasmtime::Result<Result<Resource<DirectoryListing>, ErrorCode>> {
    let state = store.data_mut();
    let dir = match state.table.get(&descriptor)? {
        Descriptor::Dir(dir) => dir.dir.clone(),
        Descriptor::File(_) => return Ok(Err(ErrorCode::NotDirectory)),
    };
    let room = usize::try_from(state.host_memory().room()).unwrap_or(usize::MAX);
    let interrupt = CancelOnDrop(Interrupt::at(state.call_deadline()));
    let blocking_interrupt = interrupt.0.clone();
    let listed = tokio::task::spawn_blocking(move || list(&dir, room, &blocking_interrupt)).await?;
    let state = store.data_mut();
    let (entries, bytes) = match listed {
        Ok(listed) => listed,
        Err(Stopped::Io(err)) => return Ok(Err(ErrorCode::from(&err))),
        Err(Stopped::NotUtf8) => return Ok(Err(ErrorCode::IllegalByteSequence)),
        Err(Stopped::OverBudget(bytes)) => {
            state.refuse_host_memory(state.host_memory().refusal(bytes as u64));
            return Ok(Err(ErrorCode::InsufficientMemory));
        }
        // The call is gone, or at its deadline: no one reads the answer.
        Err(Stopped::Interrupted) => return Ok(Err(ErrorCode::Interrupted)),
    };
    if let Err(refusal) = state.host_memory().hold_listing(bytes) {
        state.refuse_host_memory(refusal);
        return Ok(Err(ErrorCode::InsufficientMemory));
    }
    let listing = DirectoryListing {
        entries: entries.into_iter(),
        bytes,
    };
    match state.table.push(listing) {
        Ok(listing) => Ok(Ok(listing)),
        Err(err) => {
            state.host_memory().release_listing(bytes);
            Err(err.into())
        }
    }
}

/// Lists `dir`, stopping past `room` bytes or at the interrupt.
fn list(
    dir: &std::fs::File,
    room: usize,
    interrupt: &Interrupt,
) -> Result<(Vec<DirectoryEntry>, usize), Stopped> {
    let mut entries = Vec::new();
    let mut bytes = 0;
    for entry in cap_primitives::fs::read_base_dir(dir).map_err(Stopped::Io)? {
        if interrupt.is_due() {
            return Err(Stopped::Interrupted);
        }
        let entry = entry.map_err(Stopped::Io)?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| Stopped::NotUtf8)?;
        bytes += name.len() + size_of::<DirectoryEntry>();
        if bytes > room {
            return Err(Stopped::OverBudget(bytes));
        }
        let type_ = descriptor_type(&entry.file_type().map_err(Stopped::Io)?);
        entries.push(DirectoryEntry { type_, name });
    }
    // What the budget counts is what is kept, without the spare capacity.
    entries.shrink_to_fit();
    Ok((entries, bytes))
}

fn descriptor_type(file_type: &cap_primitives::fs::FileType) -> DescriptorType {
    use cap_primitives::fs::FileTypeExt;
    if file_type.is_dir() {
        DescriptorType::Directory
    } else if file_type.is_symlink() {
        DescriptorType::SymbolicLink
    } else if file_type.is_file() {
        DescriptorType::RegularFile
    } else if file_type.is_block_device() {
        DescriptorType::BlockDevice
    } else if file_type.is_char_device() {
        DescriptorType::CharacterDevice
    } else if file_type.is_fifo() {
        DescriptorType::Fifo
    } else if file_type.is_socket() {
        DescriptorType::Socket
    } else {
        DescriptorType::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directory(names: &[&str]) -> (tempfile::TempDir, std::fs::File) {
        let dir = tempfile::tempdir().unwrap();
        for name in names {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let file = std::fs::File::open(dir.path()).unwrap();
        (dir, file)
    }

    #[test]
    fn a_listing_holds_every_entry_and_counts_its_bytes() {
        let (_dir, file) = directory(&["a", "bb"]);
        let Ok((entries, bytes)) = list(&file, usize::MAX, &Interrupt::never()) else {
            panic!("the listing failed");
        };
        let mut names: Vec<_> = entries.iter().map(|entry| entry.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["a", "bb"]);
        assert_eq!(bytes, 3 + 2 * size_of::<DirectoryEntry>());
    }

    #[test]
    fn a_listing_stops_past_its_room_or_at_its_interrupt() {
        let (_dir, file) = directory(&["a", "b", "c"]);
        let room = 2 * (1 + size_of::<DirectoryEntry>());
        assert!(matches!(
            list(&file, room, &Interrupt::never()),
            Err(Stopped::OverBudget(bytes)) if bytes > room
        ));
        let interrupt = Interrupt::never();
        interrupt.cancel();
        assert!(matches!(
            list(&file, usize::MAX, &interrupt),
            Err(Stopped::Interrupted)
        ));
    }
}

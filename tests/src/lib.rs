//! Shared support for Warden's integration tests: the paths of the guest
//! components (built by `build.rs`) and small helpers.

/// Paths of the guest components built from `guests/`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// Reads a guest component's bytes.
///
/// # Panics
///
/// If the file is missing, which means the build script did not run.
pub fn guest_bytes(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|err| panic!("cannot read guest {path}: {err}"))
}

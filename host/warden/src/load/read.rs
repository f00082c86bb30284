//! Stage 1: what a source holds: its digest (from the compile cache's
//! digest index when its file has not changed since it was last hashed,
//! else by hashing it), and what kind of binary it is, told from its header
//! before anything else looks at it.

use sha2::{Digest, Sha256};

use crate::cache::CompileCache;
use crate::error::Error;
use crate::source::{Digested, Source};

/// What a WebAssembly binary is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinaryKind {
    Component,
    CoreModule,
}

/// Tells components from core modules by their header, and refuses
/// anything else with a message that says what it is instead.
pub(crate) fn binary_kind(bytes: &[u8]) -> Result<BinaryKind, Error> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
    const COMPONENT_LAYER: [u8; 2] = [0x01, 0x00];
    if bytes.len() < 8 || !bytes.starts_with(MAGIC) {
        return Err(Error::invalid_plugin(
            "not a WebAssembly binary (it does not start with the `\\0asm` magic bytes)",
        ));
    }
    if bytes[4..8] == CORE_MODULE_VERSION {
        return Ok(BinaryKind::CoreModule);
    }
    if bytes[6..8] != COMPONENT_LAYER {
        return Err(Error::invalid_plugin(format!(
            "unknown WebAssembly binary version {:02x?}",
            &bytes[4..8]
        )));
    }
    Ok(BinaryKind::Component)
}

/// The source's digest: remembered from an earlier call (by this source or
/// a clone of it), recorded in the digest index for the identity its file
/// was opened with, or computed from its bytes.
pub(crate) fn digest<'s>(
    source: &'s Source,
    cache: Option<&CompileCache>,
) -> Result<&'s Digested, Error> {
    if let Some(digested) = source.digested() {
        return Ok(digested);
    }
    let indexed = source
        .opened_identity()
        .zip(cache)
        .and_then(|(identity, cache)| cache.digest_of(&identity, source.prefix()));
    let digested = match indexed {
        Some(indexed) => indexed,
        None => {
            let bytes = source.bytes()?;
            Digested::hashed(Sha256::digest(bytes).into(), bytes.len() as u64)
        }
    };
    Ok(source.remember_digest(digested))
}

/// The start of the component, of the same version of the file as its
/// digest: the prefix read when it was opened when the digest came from the
/// index (which holds for that identity), else the bytes that were hashed.
pub(crate) fn prefix<'s>(source: &'s Source, digested: &Digested) -> Result<&'s [u8], Error> {
    if digested.indexed {
        Ok(source.prefix())
    } else {
        source.bytes()
    }
}

/// The component's bytes, checked against its digest when that came from
/// the digest index: code compiled (or a signature checked) must be for the
/// bytes the digest names. Bytes that do not match it (the index's record
/// was wrong: the file changed in a way its identity did not show) are an
/// error, after the record is removed from `cache` and the source's digest
/// replaced by theirs ([`Source::repair_digest`]): the caller runs what it
/// judged with the wrong digest again ([`super::repairing`]).
pub(crate) fn checked_bytes<'s>(
    source: &'s Source,
    cache: Option<&CompileCache>,
) -> Result<&'s [u8], Error> {
    let bytes = source.bytes()?;
    let Some(digested) = source.digested().filter(|digested| digested.indexed) else {
        return Ok(bytes);
    };
    let matches = *digested
        .bytes_match
        .get_or_init(|| <[u8; 32]>::from(Sha256::digest(bytes)) == digested.sha256);
    if matches {
        return Ok(bytes);
    }
    let sha256: [u8; 32] = Sha256::digest(bytes).into();
    if let (Some(cache), Some(identity)) = (cache, source.opened_identity()) {
        tracing::warn!(
            target: "warden::cache",
            component = source.name(),
            "the digest index was wrong about this file; hashing it"
        );
        cache.forget_digest(&identity);
    }
    source.repair_digest(Digested::hashed(sha256, bytes.len() as u64));
    Err(Error::io(
        format!("cannot load `{}`", source.name()),
        std::io::Error::other("its digest index record was wrong; load it again"),
    ))
}

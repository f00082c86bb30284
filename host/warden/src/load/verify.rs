//! Stage 2: the trust policy. Nothing is compiled, or fetched from the
//! compile cache, before the bytes pass it.

use crate::error::Error;
use crate::grants::Sandbox;
use crate::source::Source;
use crate::trust::{self, TrustVerdict};

use super::read::BinaryKind;

/// A source whose bytes passed the checks that come before compiling.
pub(crate) struct Verified {
    pub name: String,
    pub sandbox: Sandbox,
    pub bytes: Vec<u8>,
    pub kind: BinaryKind,
    pub verdict: TrustVerdict,
}

/// Checks the source's bytes, and its detached signature if it has one,
/// against the sandbox's trust policy.
pub(crate) fn verify(
    source: Source,
    kind: BinaryKind,
    sandbox: Sandbox,
) -> Result<Verified, Error> {
    let Source {
        name,
        bytes,
        detached_signature,
    } = source;
    let verdict = trust::check(&bytes, detached_signature.as_deref(), &sandbox.trust)?;
    Ok(Verified {
        name,
        sandbox,
        bytes,
        kind,
        verdict,
    })
}

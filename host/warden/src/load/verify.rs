//! Stage 2: the trust policy. Nothing is compiled, or fetched from the
//! compile cache, before the component passes it.

use crate::cache::CompileCache;
use crate::error::Error;
use crate::grants::Sandbox;
use crate::source::Source;
use crate::trust::{self, Subject, TrustVerdict};

use super::read::{self, BinaryKind};

/// A source that passed the checks that come before compiling. Its digest
/// is remembered in `source` ([`read::digest`]).
pub(crate) struct Verified {
    pub source: Source,
    pub sha256: [u8; 32],
    pub sandbox: Sandbox,
    pub kind: BinaryKind,
    pub verdict: TrustVerdict,
}

/// Checks the source, and its detached signature if it has one, against
/// the sandbox's trust policy; signature checks are remembered in `cache`.
pub(crate) fn verify(
    source: Source,
    kind: BinaryKind,
    sandbox: Sandbox,
    cache: Option<&CompileCache>,
) -> Result<Verified, Error> {
    let digested = read::digest(&source, cache)?;
    let sha256 = digested.sha256;
    let bytes = || read::checked_bytes(&source, cache);
    let subject = Subject {
        sha256: Some(&digested.sha256),
        prefix: read::prefix(&source, digested)?,
        bytes: &bytes,
        detached: source.detached_signature(),
        outcomes: cache,
    };
    let verdict = match trust::check(&subject, &sandbox.trust) {
        Ok(verdict) => verdict,
        // A refusal of what the digest index said the file is must be a
        // refusal of the file: a wrong record is found (and the load run
        // again) rather than refusing the file forever.
        Err(refusal) if digested.indexed => {
            if let Err(wrong) = read::checked_bytes(&source, cache)
                && source.digest_repaired()
            {
                return Err(wrong);
            }
            return Err(refusal);
        }
        Err(refusal) => return Err(refusal),
    };
    Ok(Verified {
        source,
        sha256,
        sandbox,
        kind,
        verdict,
    })
}

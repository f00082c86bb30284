//! Finding and checking the signatures on a plugin, and signing one.

use std::io::Cursor;

use sha2::{Digest, Sha256};

use super::keys::{PublicKey, SecretKey};
use super::{Subject, TrustFailure, TrustPolicy};
use crate::cache::verified::Verification;
use crate::error::Error;
use crate::source::Source;

/// One signature found on a plugin, and what checking it showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureCheck {
    /// The signing key's id (wasmsign2's default key id, hex), or `None`
    /// for an anonymous signature that no known key verified.
    pub key_id: Option<String>,
    /// The name the key is trusted under, if it is.
    pub trusted_as: Option<String>,
    /// What checking found.
    pub status: SignatureStatus,
}

/// The result of checking one signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureStatus {
    /// The key is known and the signature covers the plugin exactly.
    Valid,
    /// The key is known but the signature does not match the plugin: it was
    /// changed after signing, or the signature was damaged.
    Invalid,
    /// No known key has this id, so the signature cannot be checked.
    UnknownKey,
}

impl SignatureStatus {
    /// `valid`, `invalid` or `unknown-key`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureStatus::Valid => "valid",
            SignatureStatus::Invalid => "invalid",
            SignatureStatus::UnknownKey => "unknown-key",
        }
    }
}

/// Finds and checks every signature of a source, without applying the
/// policy's verdict (what `warden verify` shows). The component's bytes are
/// read first, so that the signatures found and the bytes checked are of
/// one version of its file. A signature that is present but malformed is
/// [`Error::Untrusted`] with [`TrustFailure::BadSignature`]; a file that
/// cannot be read (or changed since it was opened) is [`Error::Io`].
pub fn inspect_signatures(
    source: &Source,
    policy: &TrustPolicy,
) -> Result<Vec<SignatureCheck>, Error> {
    let read = source.bytes()?;
    let bytes = || Ok(read);
    let subject = Subject::in_memory(&bytes, read, source.detached_signature());
    inspect(&subject, policy)?.map_err(|failure| Error::Untrusted {
        failure,
        signatures: Vec::new(),
    })
}

/// Finds and checks every signature; the inner `Err` when a signature
/// section is present but malformed, the outer one when the component's
/// bytes were needed and could not be read.
pub(crate) fn inspect(
    subject: &Subject<'_>,
    policy: &TrustPolicy,
) -> Result<Result<Vec<SignatureCheck>, TrustFailure>, Error> {
    let detached = subject.detached;
    if detached.is_none() && !starts_with_signature_section(subject.prefix) {
        return Ok(Ok(Vec::new()));
    }
    // With a detached signature wasmsign2 reads only that; an embedded one
    // is the first section, read from the prefix when it holds all of it.
    let head: &[u8] = match (detached, signature_section_end(subject.prefix)) {
        (Some(_), _) => &[],
        (None, Some(end)) if end <= subject.prefix.len() => &subject.prefix[..end],
        (None, _) => (subject.bytes)()?,
    };
    let info = match wasmsign2::signature_info_from_reader(&mut Cursor::new(head), detached) {
        Ok(info) => info,
        Err(wasmsign2::WSError::NoSignatures) => return Ok(Ok(Vec::new())),
        Err(err) => {
            return Ok(Err(TrustFailure::BadSignature(format!(
                "the signature {} is malformed ({err})",
                if detached.is_some() {
                    "file"
                } else {
                    "section"
                }
            ))));
        }
    };
    let named: Vec<String> = info.key_ids().iter().map(hex::encode).collect();
    let anonymous = info.signature_count() - named.len();
    let known = policy
        .trusted
        .keys()
        .map(|(name, key)| (key, Some(name.to_owned())))
        .chain(policy.known_keys.iter().map(|key| (key, None)));
    let mut checks: Vec<SignatureCheck> = Vec::new();
    let mut anonymous_attributed = 0;
    for (key, trusted_as) in known {
        let key_id = key.key_id();
        let claims = named.contains(&key_id);
        let already_checked = checks
            .iter()
            .any(|check| check.key_id.as_deref() == Some(&key_id));
        if already_checked || (!claims && anonymous == 0) {
            continue;
        }
        let status = match verifies(subject, key, &key_id, claims)? {
            true => SignatureStatus::Valid,
            // An anonymous signature this key did not make is not this key's.
            false if !claims => continue,
            false => SignatureStatus::Invalid,
        };
        if !claims {
            anonymous_attributed += 1;
        }
        checks.push(SignatureCheck {
            key_id: Some(key_id),
            trusted_as,
            status,
        });
    }
    for key_id in named {
        if !checks
            .iter()
            .any(|check| check.key_id.as_deref() == Some(&key_id))
        {
            checks.push(SignatureCheck {
                key_id: Some(key_id),
                trusted_as: None,
                status: SignatureStatus::UnknownKey,
            });
        }
    }
    for _ in anonymous_attributed..anonymous {
        checks.push(SignatureCheck {
            key_id: None,
            trusted_as: None,
            status: SignatureStatus::UnknownKey,
        });
    }
    Ok(Ok(checks))
}

/// Whether `key`'s signature over the subject verifies: the remembered
/// outcome of the same check when there is one, else checked over the
/// component's bytes and remembered, unless it failed for a key the
/// signature does not name (`claims`): every known key is tried on an
/// anonymous signature, and remembering each one's failure would add a
/// record per known key and component.
fn verifies(
    subject: &Subject<'_>,
    key: &PublicKey,
    key_id: &str,
    claims: bool,
) -> Result<bool, Error> {
    let public_key = key.to_bytes();
    let remembered = subject
        .outcomes
        .zip(subject.sha256)
        .map(|(outcomes, component_sha256)| {
            let verification = Verification {
                component_sha256,
                detached_sha256: subject
                    .detached
                    .map(|signature| Sha256::digest(signature).into()),
                public_key: &public_key,
                key_id,
            };
            (outcomes, verification)
        });
    if let Some((outcomes, verification)) = &remembered
        && let Some(valid) = outcomes.verified(verification)
    {
        return Ok(valid);
    }
    let valid = key
        .inner()
        .verify(&mut Cursor::new((subject.bytes)()?), subject.detached)
        .is_ok();
    if let Some((outcomes, verification)) = &remembered
        && (valid || claims)
    {
        outcomes.record_verified(verification, valid);
    }
    Ok(valid)
}

/// Where an embedded signature section (which
/// [`starts_with_signature_section`] found) ends, from its size field.
fn signature_section_end(bytes: &[u8]) -> Option<usize> {
    const SECTION_START: usize = 9;
    let (size, size_len) = read_leb128_u32(bytes.get(SECTION_START..)?)?;
    SECTION_START
        .checked_add(size_len)?
        .checked_add(usize::try_from(size).ok()?)
}

/// An unsigned LEB128 number of at most 32 bits, and how many bytes it took.
/// A fifth byte may only hold the top four bits (as the WebAssembly spec
/// says): anything above them would be dropped by the shift.
fn read_leb128_u32(bytes: &[u8]) -> Option<(u32, usize)> {
    /// The bits of a fifth byte that fit in 32 bits (7 × 4 = 28 below).
    const LAST_BYTE_BITS: u8 = 0x0f;
    let mut value: u32 = 0;
    for (index, byte) in bytes.iter().take(5).enumerate() {
        if index == 4 && byte & !LAST_BYTE_BITS != 0 {
            return None;
        }
        value |= u32::from(byte & 0x7f).checked_shl(7 * index as u32)?;
        if byte & 0x80 == 0 {
            return Some((value, index + 1));
        }
    }
    None
}

/// Whether the first section after the 8-byte header is a custom section
/// named `signature`, where the tool conventions put embedded signatures.
/// Anything else is an unsigned binary, malformed or not: the compiler
/// reports what is wrong with it, not the signature check.
fn starts_with_signature_section(bytes: &[u8]) -> bool {
    const NAME: &[u8] = b"signature";
    let Some(body) = bytes.get(8..) else {
        return false;
    };
    let Some((&0, rest)) = body.split_first() else {
        return false;
    };
    let Some(rest) = skip_leb128(rest) else {
        return false;
    };
    rest.first() == Some(&(NAME.len() as u8)) && rest.get(1..=NAME.len()) == Some(NAME)
}

fn skip_leb128(bytes: &[u8]) -> Option<&[u8]> {
    let end = bytes.iter().take(5).position(|byte| byte & 0x80 == 0)?;
    Some(&bytes[end + 1..])
}

/// Signs a plugin with `key`, adding to any signatures it already has.
/// Returns the signed plugin, or with `detached` the unchanged plugin's
/// detached signature.
pub fn sign(bytes: &[u8], key: &SecretKey, detached: bool) -> Result<Vec<u8>, Error> {
    let invalid = |err: wasmsign2::WSError| match err {
        wasmsign2::WSError::DuplicateSignature => Error::InvalidConfig(format!(
            "the plugin is already signed by this key ({})",
            key.public_key().key_id()
        )),
        other => Error::invalid_plugin(format!("cannot sign this file: {other}")),
    };
    let module = wasmsign2::Module::deserialize(&mut Cursor::new(bytes)).map_err(invalid)?;
    let key_id = key.public_key().inner().key_id().cloned();
    let (signed, signature) = key
        .inner()
        .sign_multi(module, key_id.as_ref(), detached, false)
        .map_err(invalid)?;
    if detached {
        return Ok(signature);
    }
    let mut out = Vec::with_capacity(bytes.len() + 256);
    signed.serialize(&mut out).map_err(invalid)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::read_leb128_u32;

    #[test]
    fn a_fifth_leb128_byte_above_32_bits_is_refused() {
        assert_eq!(read_leb128_u32(&[0x05]), Some((5, 1)));
        assert_eq!(
            read_leb128_u32(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Some((u32::MAX, 5))
        );
        // 0x1f and 0x7f set bits past 32, which the shift would drop: a
        // section size read as something other than what the bytes say.
        for last in [0x10, 0x1f, 0x7f] {
            assert_eq!(read_leb128_u32(&[0x80, 0x80, 0x80, 0x80, last]), None);
        }
        assert_eq!(read_leb128_u32(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]), None);
    }
}

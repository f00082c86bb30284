//! Finding and checking the signatures on a plugin, and signing one.

use std::io::Cursor;

use super::keys::SecretKey;
use super::{TrustFailure, TrustPolicy};
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
/// policy's verdict (what `warden verify` shows). `Err` when a signature is
/// present but malformed.
pub fn inspect_signatures(
    source: &Source,
    policy: &TrustPolicy,
) -> Result<Vec<SignatureCheck>, TrustFailure> {
    inspect(source.bytes(), source.detached_signature(), policy)
}

/// Finds and checks every signature; `Err` when a signature section is
/// present but malformed.
pub(super) fn inspect(
    bytes: &[u8],
    detached: Option<&[u8]>,
    policy: &TrustPolicy,
) -> Result<Vec<SignatureCheck>, TrustFailure> {
    if detached.is_none() && !starts_with_signature_section(bytes) {
        return Ok(Vec::new());
    }
    let info = match wasmsign2::signature_info_from_reader(&mut Cursor::new(bytes), detached) {
        Ok(info) => info,
        Err(wasmsign2::WSError::NoSignatures) => return Ok(Vec::new()),
        Err(err) => {
            return Err(TrustFailure::BadSignature(format!(
                "the signature {} is malformed ({err})",
                if detached.is_some() {
                    "file"
                } else {
                    "section"
                }
            )));
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
        let status = match key.inner().verify(&mut Cursor::new(bytes), detached) {
            Ok(()) => SignatureStatus::Valid,
            // An anonymous signature this key did not make is not this key's.
            Err(_) if !claims => continue,
            Err(_) => SignatureStatus::Invalid,
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
    Ok(checks)
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

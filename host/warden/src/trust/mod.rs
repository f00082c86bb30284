//! Signed plugins: Ed25519 signatures in the WebAssembly tool-conventions
//! format (as the `wasmsign2` crate implements it, for components too),
//! embedded in the component as a `signature` custom section or kept in a
//! detached file, and checked against a [`TrustPolicy`] before a single byte
//! is compiled.
//!
//! Three tiers of policy:
//!
//! | tier | `signed_by` | `unsigned` | accepts |
//! |---|---|---|---|
//! | development | `any` | `allow` or `warn` | anything, unless a signature is bad |
//! | any valid signature | `any` | `deny` | a valid signature by a key Warden knows (trusted, or given as a known key) |
//! | trusted keys only | `trusted` | `deny`, implied | a valid signature by a key in the trust store |
//!
//! `signed_by = trusted` means exactly that only plugins signed by a trusted
//! key run: a plugin that is unsigned, signed only by keys Warden does not
//! know, or signed only by known keys that are not trusted is refused with
//! [`Error::Untrusted`], naming the keys, whatever `unsigned` says. Knowing
//! less about a signer never makes its plugin more acceptable. The command
//! line and the manifest refuse `unsigned = allow|warn` beside it as a
//! contradiction; the library treats `unsigned` as `deny` under it.
//!
//! A signature that fails to verify against the key it names means the
//! plugin changed after signing: it is refused under every tier. A plugin
//! can also be pinned to the SHA-256 of its file.
//!
//! A trust store that cannot be used (see [`TrustStore::open_or_damaged`])
//! refuses every plugin whose policy depends on it (`signed_by = trusted`
//! or `unsigned = deny`), with [`Error::InvalidConfig`] naming the file;
//! under the development tier it only names signers, so its keys count as
//! unknown and a warning says why.

mod keys;
mod store;

use std::fmt;
use std::io::Cursor;
use std::str::FromStr;
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use self::keys::{KeyFiles, PublicKey, SecretKey};
pub use self::store::{EDIT_LOCK_WAIT, MAX_KEY_NAME_LEN, TrustStore};
use crate::error::Error;
use crate::source::Source;
pub use crate::source::signature_path;
use crate::units::ParseError;

/// What to do with a plugin that carries no verifiable signature.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnsignedPolicy {
    /// Load it. The library's default: a host that wants signatures says so.
    #[default]
    Allow,
    /// Load it, and say so (a `tracing` warning, and `warden` prints one).
    /// The command line's default.
    Warn,
    /// Refuse it.
    Deny,
}

impl UnsignedPolicy {
    /// `allow`, `warn` or `deny`, as flags and manifests spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            UnsignedPolicy::Allow => "allow",
            UnsignedPolicy::Warn => "warn",
            UnsignedPolicy::Deny => "deny",
        }
    }
}

/// Whose signatures count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SignerPolicy {
    /// A valid signature by any key Warden knows: a trusted key or one of
    /// [`TrustPolicy::known_keys`]. The default.
    #[default]
    Any,
    /// Only a valid signature by a key in the trust store; everything else
    /// is refused, whatever [`TrustPolicy::unsigned`] says.
    Trusted,
}

/// How a plugin's signatures are judged before it is compiled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrustPolicy {
    /// Plugins without a verifiable signature. Default: allowed. Has no say
    /// when `signed_by` is [`SignerPolicy::Trusted`]: such plugins are refused.
    pub unsigned: UnsignedPolicy,
    /// Whose signatures count. Default: any key Warden knows.
    pub signed_by: SignerPolicy,
    /// The keys trusted by name. Default: none.
    pub trusted: Arc<TrustStore>,
    /// Keys whose signatures are checked but not trusted. Default: none.
    pub known_keys: Vec<PublicKey>,
    /// The SHA-256 (hex) the plugin file must have. Default: not pinned.
    pub sha256: Option<String>,
}

impl TrustPolicy {
    /// Whether only verified plugins load under this policy
    /// (`signed_by = trusted`, or `unsigned = deny`). Such a policy depends
    /// on the trust store, whose keys verify them; under the development
    /// tier the store only names signers.
    pub fn requires_verification(&self) -> bool {
        self.signed_by == SignerPolicy::Trusted || self.unsigned == UnsignedPolicy::Deny
    }

    /// Unsigned plugins load; signatures that are present are still checked.
    pub fn development() -> Self {
        TrustPolicy::default()
    }

    /// Only plugins signed by a key in `trusted` load.
    pub fn trusted_only(trusted: TrustStore) -> Self {
        TrustPolicy {
            unsigned: UnsignedPolicy::Deny,
            signed_by: SignerPolicy::Trusted,
            trusted: Arc::new(trusted),
            ..TrustPolicy::default()
        }
    }
}

impl FromStr for UnsignedPolicy {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        match text {
            "allow" => Ok(UnsignedPolicy::Allow),
            "warn" => Ok(UnsignedPolicy::Warn),
            "deny" => Ok(UnsignedPolicy::Deny),
            _ => Err(ParseError::new(format!(
                "invalid unsigned policy `{text}`: expected allow, warn or deny"
            ))),
        }
    }
}

impl FromStr for SignerPolicy {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        match text {
            "any" => Ok(SignerPolicy::Any),
            "trusted" => Ok(SignerPolicy::Trusted),
            _ => Err(ParseError::new(format!(
                "invalid signer policy `{text}`: expected any or trusted"
            ))),
        }
    }
}

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

/// What the trust check decided about a plugin that it let through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustVerdict {
    /// Every signature found, checked.
    pub signatures: Vec<SignatureCheck>,
    /// Whether a trusted key signed the plugin.
    pub trusted: bool,
    /// Whether the plugin was let through without a verified signature.
    pub unverified: bool,
}

/// Why the trust policy refused a plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustFailure {
    /// No signature, and unsigned plugins are denied.
    Unsigned,
    /// A signature is malformed or does not match the plugin.
    BadSignature(String),
    /// Signed only by keys Warden does not know (their ids are listed).
    UnknownSigner(Vec<String>),
    /// Signed validly, but not by a trusted key (the signers' ids are listed).
    UntrustedSigner(Vec<String>),
    /// The file's SHA-256 differs from the pinned one.
    HashMismatch {
        /// The pinned hash.
        expected: String,
        /// The file's hash.
        actual: String,
    },
}

impl fmt::Display for TrustFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrustFailure::Unsigned => write!(
                f,
                "the plugin is unsigned and unsigned plugins are denied (sign it with `warden sign`)"
            ),
            TrustFailure::BadSignature(detail) => write!(f, "bad signature: {detail}"),
            TrustFailure::UnknownSigner(ids) => write!(
                f,
                "signed by unknown key {} (add it with `warden trust add` or pass it with --key)",
                ids.join(", ")
            ),
            TrustFailure::UntrustedSigner(ids) => write!(
                f,
                "signed by key {}, which is not in the trust store (trust it with `warden trust add`)",
                ids.join(", ")
            ),
            TrustFailure::HashMismatch { expected, actual } => write!(
                f,
                "hash mismatch: the plugin's SHA-256 is {actual}, but {expected} is pinned"
            ),
        }
    }
}

/// Checks `bytes` (and an optional detached signature) against `policy`.
pub(crate) fn check(
    bytes: &[u8],
    detached: Option<&[u8]>,
    policy: &TrustPolicy,
) -> Result<TrustVerdict, Error> {
    let refuse = |failure: TrustFailure, signatures: Vec<SignatureCheck>| Error::Untrusted {
        failure,
        signatures,
    };
    if let Some(damage) = policy.trusted.damage() {
        if policy.requires_verification() {
            return Err(Error::InvalidConfig(damage.to_owned()));
        }
        tracing::warn!(target: "warden::trust", "ignoring the trust store: {damage}");
    }
    if let Some(expected) = &policy.sha256 {
        let actual = hex::encode(Sha256::digest(bytes));
        if !actual.eq_ignore_ascii_case(expected.trim()) {
            let failure = TrustFailure::HashMismatch {
                expected: expected.clone(),
                actual,
            };
            return Err(refuse(failure, Vec::new()));
        }
    }
    let signatures = match inspect(bytes, detached, policy) {
        Ok(signatures) => signatures,
        Err(failure) => return Err(refuse(failure, Vec::new())),
    };
    if signatures
        .iter()
        .any(|check| check.status == SignatureStatus::Invalid)
    {
        let keys: Vec<String> = signatures
            .iter()
            .filter(|check| check.status == SignatureStatus::Invalid)
            .map(describe_key)
            .collect();
        let failure = TrustFailure::BadSignature(format!(
            "the signature by {} does not match the plugin (it was changed after signing)",
            keys.join(", ")
        ));
        return Err(refuse(failure, signatures));
    }
    let valid = |check: &&SignatureCheck| check.status == SignatureStatus::Valid;
    let trusted = signatures
        .iter()
        .filter(valid)
        .any(|check| check.trusted_as.is_some());
    let verified = match policy.signed_by {
        SignerPolicy::Trusted => trusted,
        SignerPolicy::Any => signatures.iter().any(|check| valid(&check)),
    };
    if verified {
        return Ok(TrustVerdict {
            signatures,
            trusted,
            unverified: false,
        });
    }
    let failure = if signatures.iter().any(|check| valid(&check)) {
        TrustFailure::UntrustedSigner(signatures.iter().filter(valid).map(describe_key).collect())
    } else if signatures.is_empty() {
        TrustFailure::Unsigned
    } else {
        TrustFailure::UnknownSigner(signatures.iter().map(describe_key).collect())
    };
    // Unverified plugins are refused under `unsigned = deny`, and under
    // `signed_by = trusted` whatever `unsigned` says: a stranger's signature
    // must never be worth more than a known but untrusted key's.
    if policy.requires_verification() {
        return Err(refuse(failure, signatures));
    }
    if policy.unsigned == UnsignedPolicy::Warn {
        tracing::warn!(target: "warden::trust", "loading an unverified plugin: {failure}");
    }
    Ok(TrustVerdict {
        signatures,
        trusted: false,
        unverified: true,
    })
}

fn describe_key(check: &SignatureCheck) -> String {
    match (&check.key_id, &check.trusted_as) {
        (Some(id), Some(name)) => format!("{id} ({name})"),
        (Some(id), None) => id.clone(),
        (None, _) => "an anonymous key".to_owned(),
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
fn inspect(
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

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
mod signatures;
mod store;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use self::keys::{KeyFiles, PublicKey, SecretKey};
pub(crate) use self::signatures::inspect;
pub use self::signatures::{SignatureCheck, SignatureStatus, inspect_signatures, sign};
pub use self::store::{EDIT_LOCK_WAIT, MAX_KEY_NAME_LEN, TrustStore};
use crate::cache::CompileCache;
use crate::error::Error;
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

/// What the trust policy judges: a component known by its digest when a
/// load has it, whose bytes are read only when a check needs them.
pub(crate) struct Subject<'a> {
    /// The component's SHA-256, when it is known without hashing.
    pub sha256: Option<&'a [u8; 32]>,
    /// The start of the component, where an embedded signature section is.
    pub prefix: &'a [u8],
    /// The whole component (read on the first call).
    pub bytes: &'a dyn Fn() -> Result<&'a [u8], Error>,
    /// The detached signature, if there is one.
    pub detached: Option<&'a [u8]>,
    /// Where signature checks are remembered (with `sha256`), if anywhere.
    pub outcomes: Option<&'a CompileCache>,
}

impl<'a> Subject<'a> {
    /// A component in memory, with no remembered checks.
    pub(crate) fn in_memory(
        bytes: &'a dyn Fn() -> Result<&'a [u8], Error>,
        prefix: &'a [u8],
        detached: Option<&'a [u8]>,
    ) -> Self {
        Subject {
            sha256: None,
            prefix,
            bytes,
            detached,
            outcomes: None,
        }
    }
}

/// Checks a component (and its detached signature, if any) against `policy`.
pub(crate) fn check(subject: &Subject<'_>, policy: &TrustPolicy) -> Result<TrustVerdict, Error> {
    if let Some(damage) = policy.trusted.damage() {
        if policy.requires_verification() {
            return Err(Error::InvalidConfig(damage.to_owned()));
        }
        tracing::warn!(target: "warden::trust", "ignoring the trust store: {damage}");
    }
    if let Some(expected) = &policy.sha256 {
        let actual: [u8; 32] = match subject.sha256 {
            Some(sha256) => *sha256,
            None => Sha256::digest((subject.bytes)()?).into(),
        };
        check_pinned_hash(&actual, expected).map_err(|failure| refuse(failure, Vec::new()))?;
    }
    let signatures = inspect(subject, policy)?.map_err(|failure| refuse(failure, Vec::new()))?;
    if let Some(failure) = mismatched_signatures(&signatures) {
        return Err(refuse(failure, signatures));
    }
    apply_signer_policy(signatures, policy)
}

fn refuse(failure: TrustFailure, signatures: Vec<SignatureCheck>) -> Error {
    Error::Untrusted {
        failure,
        signatures,
    }
}

/// Fails when the file's SHA-256, `actual`, is not the `expected` one.
fn check_pinned_hash(actual: &[u8; 32], expected: &str) -> Result<(), TrustFailure> {
    let actual = hex::encode(actual);
    if actual.eq_ignore_ascii_case(expected.trim()) {
        return Ok(());
    }
    Err(TrustFailure::HashMismatch {
        expected: expected.to_owned(),
        actual,
    })
}

/// The refusal for signatures that do not match the plugin, if there are
/// any: the plugin changed after signing, which no tier accepts.
fn mismatched_signatures(signatures: &[SignatureCheck]) -> Option<TrustFailure> {
    let keys: Vec<String> = signatures
        .iter()
        .filter(|check| check.status == SignatureStatus::Invalid)
        .map(describe_key)
        .collect();
    if keys.is_empty() {
        return None;
    }
    Some(TrustFailure::BadSignature(format!(
        "the signature by {} does not match the plugin (it was changed after signing)",
        keys.join(", ")
    )))
}

/// Lets the plugin through or refuses it by who signed it (`signatures`,
/// none of them mismatched) and what `policy` asks of signers.
fn apply_signer_policy(
    signatures: Vec<SignatureCheck>,
    policy: &TrustPolicy,
) -> Result<TrustVerdict, Error> {
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

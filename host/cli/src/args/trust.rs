//! Signatures and trust: the commands that make keys, sign and verify, and
//! the flags of the trust policy (which signatures a plugin must carry,
//! where keys and signatures come from).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use warden::Source;
use warden::trust::{PublicKey, SignerPolicy, TrustPolicy, TrustStore, UnsignedPolicy};

/// The trust policy's flags, for commands that load a plugin to run or
/// deploy it.
#[derive(Debug, Args)]
#[command(next_help_heading = "Signatures")]
pub struct TrustArgs {
    /// What to do with a plugin without a verifiable signature
    /// [default: the manifest's for a plugin it declares, else
    /// $WARDEN_UNSIGNED, else warn; deny under --signed-by trusted, which
    /// allow and warn contradict].
    #[arg(long, value_name = "allow|warn|deny")]
    pub unsigned: Option<UnsignedPolicy>,
    /// Whose signatures count: any key Warden knows, or trusted keys only
    /// (then nothing else runs: unsigned plugins and plugins signed by
    /// unknown or untrusted keys are refused) [default: any, or the
    /// manifest's for a plugin it declares].
    #[arg(long, value_name = "any|trusted")]
    pub signed_by: Option<SignerPolicy>,
    #[command(flatten)]
    pub keys: KeyArgs,
}

/// The environment variable that sets the unsigned policy once for a
/// machine (`WARDEN_UNSIGNED=allow` on a development machine), below the
/// flag and the manifest.
pub const UNSIGNED_VARIABLE: &str = "WARDEN_UNSIGNED";

/// The unsigned policy [`UNSIGNED_VARIABLE`] sets, if it is set; a value
/// that is not a policy is an error naming the variable.
pub fn unsigned_from_environment() -> anyhow::Result<Option<UnsignedPolicy>> {
    match std::env::var(UNSIGNED_VARIABLE) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => value
            .parse()
            .map(Some)
            .map_err(|err| anyhow::anyhow!("{UNSIGNED_VARIABLE}={value}: {err}")),
        Err(std::env::VarError::NotUnicode(_)) => {
            anyhow::bail!("{UNSIGNED_VARIABLE} is not valid UTF-8: expected allow, warn or deny")
        }
    }
}

/// Puts the environment's unsigned policy, if any, in `trust`, which holds
/// a default the manifest did not override. Under `signed_by = trusted`
/// unsigned plugins are refused whatever the environment says.
pub fn apply_unsigned_from_environment(trust: &mut TrustPolicy) -> anyhow::Result<()> {
    if let Some(unsigned) = unsigned_from_environment()?
        && trust.signed_by == SignerPolicy::Any
    {
        trust.unsigned = unsigned;
    }
    Ok(())
}

impl TrustArgs {
    /// Why the flags contradict each other, if they do: `--signed-by
    /// trusted` refuses every unsigned plugin, so `--unsigned allow|warn`
    /// beside it cannot mean what it says.
    pub fn contradiction(&self) -> Option<String> {
        match (self.signed_by, self.unsigned) {
            (
                Some(SignerPolicy::Trusted),
                Some(unsigned @ (UnsignedPolicy::Allow | UnsignedPolicy::Warn)),
            ) => Some(format!(
                "--unsigned {} contradicts --signed-by trusted, which runs only plugins signed \
                 by a trusted key (unsigned ones are always refused); drop --unsigned, or use \
                 --signed-by any",
                unsigned.as_str()
            )),
            _ => None,
        }
    }

    /// Applies the flags to `trust`: the policies given, and the trust
    /// store and keys they name. `--signed-by trusted` (from the flags or
    /// the manifest) implies `--unsigned deny`; an `--unsigned allow|warn`
    /// that would loosen a manifest's `signed_by = "trusted"` is refused.
    pub fn apply(&self, trust: &mut TrustPolicy) -> anyhow::Result<()> {
        if let Some(signed_by) = self.signed_by {
            trust.signed_by = signed_by;
        }
        if let Some(unsigned) = self.unsigned {
            trust.unsigned = unsigned;
        }
        if trust.signed_by == SignerPolicy::Trusted {
            if let Some(unsigned @ (UnsignedPolicy::Allow | UnsignedPolicy::Warn)) = self.unsigned {
                anyhow::bail!(
                    "--unsigned {} cannot loosen the manifest's `signed_by = \"trusted\"`, which \
                     runs only plugins signed by a trusted key; add --signed-by any, or drop --unsigned",
                    unsigned.as_str()
                );
            }
            trust.unsigned = UnsignedPolicy::Deny;
        }
        if self.keys.trust_store.is_some() {
            trust.trusted = Arc::new(self.keys.trust_store_for_loading());
        }
        trust.known_keys.extend(self.keys.known_keys()?);
        Ok(())
    }
}

/// Where signatures and keys come from, for commands that check them.
#[derive(Debug, Args)]
#[command(next_help_heading = "Signatures")]
pub struct KeyArgs {
    /// The trust store [default: $XDG_CONFIG_HOME/warden/trust.toml, else
    /// ~/.config/warden/trust.toml]. `verify` refuses one given here that
    /// does not exist.
    #[arg(long, value_name = "PATH")]
    pub trust_store: Option<PathBuf>,
    /// A public key whose signatures are checked but not trusted. Repeatable.
    #[arg(long = "key", value_name = "NAME.pub")]
    pub keys: Vec<PathBuf>,
    /// A detached signature [default: PLUGIN.wasm.sig when it exists].
    #[arg(long, value_name = "PATH")]
    pub signature: Option<PathBuf>,
}

impl KeyArgs {
    /// The trust policy the command line starts from for a plugin file
    /// outside any manifest: $WARDEN_UNSIGNED's unsigned policy, else warn
    /// about unverified plugins (the library leaves that choice to its
    /// caller), and trust the trust store's keys.
    pub fn command_line_trust(&self) -> anyhow::Result<TrustPolicy> {
        let mut trust = TrustPolicy::default();
        trust.unsigned = UnsignedPolicy::Warn;
        apply_unsigned_from_environment(&mut trust)?;
        trust.trusted = Arc::new(self.trust_store_for_loading());
        Ok(trust)
    }

    /// The trust store's path: --trust-store, else the default location.
    fn trust_store_path(&self) -> Option<PathBuf> {
        self.trust_store.clone().or_else(TrustStore::default_path)
    }

    /// The trust store, for a command that reports on trust: one that
    /// cannot be used, or a --trust-store that does not exist (a typo would
    /// otherwise read as a store that trusts no one), is an error naming it.
    pub fn trust_store(&self) -> anyhow::Result<TrustStore> {
        if let Some(path) = &self.trust_store {
            require_existing_store(path)?;
        }
        Ok(match self.trust_store_path() {
            Some(path) => TrustStore::open(path)?,
            None => TrustStore::default(),
        })
    }

    /// The trust store, for loading a plugin: one that cannot be used is
    /// kept as damaged, so that only a policy that depends on it fails
    /// (see [`TrustStore::open_or_damaged`]).
    fn trust_store_for_loading(&self) -> TrustStore {
        self.trust_store_path()
            .map(TrustStore::open_or_damaged)
            .unwrap_or_default()
    }

    pub fn known_keys(&self) -> anyhow::Result<Vec<PublicKey>> {
        Ok(self
            .keys
            .iter()
            .map(PublicKey::from_file)
            .collect::<Result<_, _>>()?)
    }

    /// Reads the component with its detached signature: --signature, else
    /// the one beside it.
    pub async fn source(&self, path: &Path) -> Result<Source, warden::Error> {
        let source = Source::read(path).await?;
        match &self.signature {
            None => Ok(source),
            Some(signature) => {
                let bytes = std::fs::read(signature).map_err(|err| warden::Error::Io {
                    context: format!("cannot read `{}`", signature.display()),
                    source: err,
                })?;
                Ok(source.with_detached_signature(bytes))
            }
        }
    }
}

/// Refuses a trust store named on the command line that does not exist:
/// only the default location may be missing (then no key is trusted).
pub fn require_existing_store(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        anyhow::bail!(
            "trust store `{}` does not exist; check the path, or create the store with \
             `warden trust add NAME.pub --trust-store {}`",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The key pair's name (a path without extension); refuses to overwrite.
    pub name: PathBuf,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The plugin to sign.
    pub plugin: PathBuf,
    /// The secret key (NAME.key).
    #[arg(long, value_name = "NAME.key")]
    pub key: PathBuf,
    /// Write the signed plugin (or, with --detached, the signature) here.
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Write a detached signature (PLUGIN.wasm.sig unless -o is given)
    /// instead of embedding it.
    #[arg(long)]
    pub detached: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The plugin to check.
    pub plugin: PathBuf,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Trust a public key under a name. Adding a key already trusted under
    /// the same name changes nothing and succeeds.
    Add {
        /// The public key file (NAME.pub).
        key: PathBuf,
        /// The name to trust it under [default: the key file's name without
        /// its extension, e.g. `alice` for alice.pub].
        #[arg(long)]
        name: Option<String>,
        /// The trust store [default: $XDG_CONFIG_HOME/warden/trust.toml].
        #[arg(long, value_name = "PATH")]
        trust_store: Option<PathBuf>,
    },
    /// List the trusted keys (or say that there are none).
    List {
        /// The trust store, which must exist [default:
        /// $XDG_CONFIG_HOME/warden/trust.toml].
        #[arg(long, value_name = "PATH")]
        trust_store: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop trusting a key.
    Remove {
        /// The name the key is trusted under.
        name: String,
        /// The trust store [default: $XDG_CONFIG_HOME/warden/trust.toml].
        #[arg(long, value_name = "PATH")]
        trust_store: Option<PathBuf>,
    },
}

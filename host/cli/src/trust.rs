//! `warden keygen`, `sign`, `verify` and `trust`: signing plugins and
//! deciding whose signatures count.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};
use warden::Source;
use warden::trust::signature_path;
use warden::trust::{
    self, KeyFiles, PublicKey, SecretKey, SignatureStatus, TrustPolicy, TrustStore,
};

use crate::args::{KeygenArgs, SignArgs, TrustCommand, VerifyArgs};
use crate::exit;
use crate::output;

/// `warden keygen`: writes a new key pair, never over an existing one.
pub fn keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let files = KeyFiles::named(&args.name);
    let key = files.generate()?;
    println!("secret key: {} (keep it private)", files.secret.display());
    println!("public key: {}", files.public.display());
    println!("key id:     {}", key.key_id());
    Ok(ExitCode::SUCCESS)
}

/// `warden sign`: signs a plugin, in place, to another file or detached.
pub fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let key = SecretKey::from_file(&args.key)?;
    let bytes = std::fs::read(&args.plugin)
        .with_context(|| format!("cannot read `{}`", args.plugin.display()))?;
    let signed = trust::sign(&bytes, &key, args.detached)?;
    let output = match (&args.output, args.detached) {
        (Some(output), _) => output.clone(),
        (None, true) => signature_path(&args.plugin),
        (None, false) => args.plugin.clone(),
    };
    warden::tools::write_file_atomically(&output, &signed)?;
    let what = if args.detached {
        "signature"
    } else {
        "signed plugin"
    };
    println!(
        "signed `{}` with key {}; {what} written to `{}`",
        args.plugin.display(),
        key.public_key().key_id(),
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `warden verify`: checks a plugin's signatures against the given keys and
/// the trust store.
pub async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let source: Source = args.keys.source(&args.plugin).await?;
    // Anything that is not wasm would otherwise read as merely "unsigned".
    let bytes = source.bytes()?;
    let is_wasm =
        wasmparser::Parser::is_component(bytes) || wasmparser::Parser::is_core_wasm(bytes);
    let mut policy = TrustPolicy::development();
    policy.trusted = std::sync::Arc::new(args.keys.trust_store()?);
    policy.known_keys = args.keys.known_keys()?;
    let result = trust::inspect_signatures(&source, &policy);
    let (signatures, malformed) = match result {
        Ok(signatures) => (signatures, None),
        Err(warden::Error::Untrusted { failure, .. }) => (Vec::new(), Some(failure.to_string())),
        Err(err) => return Err(err.into()),
    };
    let valid = signatures
        .iter()
        .any(|s| s.status == SignatureStatus::Valid);
    let invalid = signatures
        .iter()
        .any(|s| s.status == SignatureStatus::Invalid);
    let verified = valid && !invalid && malformed.is_none();
    let trusted = verified
        && signatures
            .iter()
            .any(|s| s.status == SignatureStatus::Valid && s.trusted_as.is_some());
    let summary = match (&malformed, signatures.is_empty(), verified, invalid) {
        _ if !is_wasm => {
            "not a WebAssembly file (it does not start with the `\\0asm` magic bytes)".to_owned()
        }
        (Some(malformed), _, _, _) => malformed.clone(),
        (None, true, _, _) => "unsigned".to_owned(),
        (None, false, true, _) if trusted => "valid, signed by a trusted key".to_owned(),
        (None, false, true, _) => "valid, but no signer is trusted".to_owned(),
        (None, false, false, true) => "bad signature: the plugin changed after signing".to_owned(),
        (None, false, false, false) => "unverified: no known key signed it".to_owned(),
    };
    if args.json {
        let value: Value = json!({
            "plugin": args.plugin.display().to_string(),
            "verified": verified,
            "trusted": trusted,
            "summary": summary,
            "signatures": output::signatures_json(&signatures),
        });
        output::print_json(&value)?;
    } else {
        for signature in &signatures {
            println!("{}", output::describe_signature(signature));
        }
        println!("{}: {summary}", args.plugin.display());
    }
    Ok(ExitCode::from(if !is_wasm {
        exit::INVALID_PLUGIN
    } else if verified {
        exit::OK
    } else {
        exit::UNTRUSTED
    }))
}

/// `warden trust`: adds, removes or lists the trust store's keys.
pub fn trust(command: TrustCommand) -> anyhow::Result<ExitCode> {
    match command {
        TrustCommand::Add {
            key: key_path,
            name,
            trust_store,
        } => {
            let path = store_path(trust_store)?;
            let name = match name {
                Some(name) => name,
                None => name_from_file(&key_path)?,
            };
            let key = PublicKey::from_file(&key_path)?;
            let key_id = key.key_id();
            // Adding what is already there is a no-op, so that set-up
            // scripts can be run again.
            let already = TrustStore::edit(&path, |store| {
                if store.name_of(&key) == Some(name.as_str()) {
                    return Ok(true);
                }
                store.add(&name, key).map(|()| false)
            })?;
            let what = if already {
                "already trusting"
            } else {
                "trusting"
            };
            println!("{what} key {key_id} as `{name}` in `{}`", path.display());
        }
        TrustCommand::List { trust_store, json } => {
            let explicit = trust_store.is_some();
            let path = store_path(trust_store)?;
            if explicit {
                crate::args::require_existing_store(&path)?;
            }
            let store = TrustStore::open(&path)?;
            if store.is_empty() && !json {
                println!(
                    "no trusted keys in `{}`; add one with `warden trust add NAME.pub`",
                    path.display()
                );
            } else if json {
                let keys: Vec<Value> = store
                    .keys()
                    .map(|(name, key)| json!({ "name": name, "key_id": key.key_id() }))
                    .collect();
                output::print_json(&Value::from(keys))?;
            } else {
                for (name, key) in store.keys() {
                    println!("{}\t{}", name.escape_debug(), key.key_id());
                }
            }
        }
        TrustCommand::Remove { name, trust_store } => {
            let path = store_path(trust_store)?;
            let key = TrustStore::edit(&path, |store| store.remove(&name))?;
            println!("no longer trusting `{name}` ({})", key.key_id());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The name `trust add` gives a key when no --name is given: its file's
/// stem (`alice` for `alice.pub`).
fn name_from_file(key: &Path) -> anyhow::Result<String> {
    key.file_stem()
        .and_then(|stem| stem.to_str())
        .filter(|stem| TrustStore::is_valid_key_name(stem))
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "cannot name the key after `{}`; give a name with --name",
                key.display()
            )
        })
}

/// Refuses a trust store named on the command line whose directory does
/// not exist: a mistyped path is named, not made. (The default location's
/// directory is Warden's own, made on first use.)
fn refuse_missing_directory(store: &Path) -> anyhow::Result<()> {
    match store.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => anyhow::bail!(
            "there is no directory `{}` for trust store `{}`; check the path, or create the \
             directory first",
            dir.display(),
            store.display()
        ),
        _ => Ok(()),
    }
}

/// The store `trust` edits or lists: `--trust-store`, in a directory that
/// exists, else the default location.
fn store_path(explicit: Option<std::path::PathBuf>) -> anyhow::Result<std::path::PathBuf> {
    if let Some(path) = explicit {
        refuse_missing_directory(&path)?;
        return Ok(path);
    }
    TrustStore::default_path()
        .context("no --trust-store given and no default location (HOME is not set)")
}

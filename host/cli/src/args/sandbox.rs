//! The flags every command that runs guest code shares: where the
//! component comes from, its limits and grants (the library's sandbox spec),
//! its trust policy and the compile cache.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use warden::trust::{SignatureStatus, TrustPolicy};
use warden::{GrantOptions, LimitOptions, Manifest, Runtime, Sandbox, Source};

use super::TrustArgs;
use super::trust::apply_unsigned_from_environment;

/// The flags every command that runs guest code shares: a manifest, the
/// limits and grants, the trust policy and the compile cache.
#[derive(Debug, Args)]
#[command(next_help_heading = "Limits and grants")]
pub struct SandboxArgs {
    /// Take the plugin's path, limits and grants from this warden.toml; the
    /// flags below add to (and for limits, override) what it declares.
    #[arg(long, value_name = "PATH")]
    pub manifest: Option<PathBuf>,
    #[command(flatten)]
    pub limits: LimitOptions,
    #[command(flatten)]
    pub grants: GrantOptions,
    /// Refuse to load a plugin that imports a high-risk capability it is not
    /// granted (instead of denying it at call time).
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Where compiled components are cached [default:
    /// $XDG_CACHE_HOME/warden/compiled, else ~/.cache/warden/compiled].
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with = "no_cache",
        help_heading = "Compile cache"
    )]
    pub cache_dir: Option<PathBuf>,
    /// Compile without the cache.
    #[arg(long, help_heading = "Compile cache")]
    pub no_cache: bool,
    /// The key that seals cache entries: created (owner-only) if missing,
    /// never inside the cache directory [default:
    /// $XDG_DATA_HOME/warden/cache.key, else ~/.local/share/warden/cache.key].
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with = "no_cache",
        help_heading = "Compile cache"
    )]
    pub cache_key: Option<PathBuf>,
}

/// The component a command runs, as the command line names it (a file, or
/// a manifest's plugin), with the sandbox it runs in.
pub struct SandboxedComponent {
    /// The name it is loaded under (its manifest name, or the file's stem).
    pub name: String,
    /// The component's file.
    pub path: PathBuf,
    /// What it runs under, before [`SandboxedComponent::sandbox_for`]
    /// derives its kv namespace.
    pub sandbox: Sandbox,
    /// Whether its kv namespace is derived from the component when it is
    /// read (a file granted kv, outside any manifest, without
    /// --kv-namespace).
    derives_kv_namespace: bool,
}

impl SandboxedComponent {
    /// The sandbox to load `source` (this component's file) in on
    /// `runtime`: with the kv namespace derived from the component when no
    /// one named it. Fails when the component must be read for that and
    /// cannot be.
    pub fn sandbox_for(
        &self,
        source: &Source,
        runtime: &Runtime,
    ) -> Result<Sandbox, warden::Error> {
        let mut sandbox = self.sandbox.clone();
        if self.derives_kv_namespace
            && let Some(kv) = &mut sandbox.grants.kv
        {
            kv.namespace = Some(derived_kv_namespace(
                &self.name,
                source,
                &sandbox.trust,
                runtime,
            )?);
        }
        Ok(sandbox)
    }
}

/// The kv namespace of a plugin file that neither a manifest nor
/// --kv-namespace names one for. The file's name alone is the plugin
/// author's choice, so another component shipped under the same name would
/// read its keys; the namespace adds who stands behind the component:
///
/// - `NAME@key:KEYID` when a key Warden knows (the trust store's, or a
///   --key) validly signed it, the smallest such key id: a new version
///   signed by the same key keeps its data, and no one without that key can
///   share it;
/// - else `NAME@sha256:HASH`, the first 16 hex digits of the component's
///   SHA-256: a different component never shares it by accident, and a new
///   unsigned version starts empty (name the namespace with --kv-namespace
///   to keep its data).
///
/// The signatures and the hash are what a load on `runtime` finds: from its
/// compile cache when the file has not changed since they were last
/// checked, and computed once otherwise (the load of `source` reuses the
/// hash).
pub fn derived_kv_namespace(
    name: &str,
    source: &Source,
    trust: &TrustPolicy,
    runtime: &Runtime,
) -> Result<String, warden::Error> {
    let signer = runtime
        .inspect_signatures(source, trust)
        .unwrap_or_default()
        .into_iter()
        .filter(|check| check.status == SignatureStatus::Valid)
        .filter_map(|check| check.key_id)
        .min();
    Ok(match signer {
        Some(key_id) => format!("{name}@key:{key_id}"),
        None => {
            let digest = runtime.component_sha256(source)?;
            format!("{name}@sha256:{}", &digest[..16])
        }
    })
}

impl SandboxArgs {
    /// Resolves the component argument (a path, or a manifest name) and
    /// builds its sandbox: the manifest's, then the flags.
    pub fn resolve(&self, component: &str) -> anyhow::Result<SandboxedComponent> {
        let (name, path, mut sandbox) = match &self.manifest {
            Some(manifest) => {
                let manifest = Manifest::from_file(manifest)?;
                let entry = manifest.plugin(component)?;
                let mut sandbox = entry.sandbox.clone();
                if !entry.states_unsigned {
                    apply_unsigned_from_environment(&mut sandbox.trust)?;
                }
                (entry.name.clone(), entry.path.clone(), sandbox)
            }
            None => {
                let path = PathBuf::from(component);
                let name = Source::name_of(&path);
                let mut sandbox = Sandbox::default();
                sandbox.trust = self.trust.keys.command_line_trust()?;
                (name, path, sandbox)
            }
        };
        self.apply(&mut sandbox)
            .with_context(|| format!("preparing the sandbox of `{name}`"))?;
        let derives_kv_namespace = self.manifest.is_none()
            && self.grants.kv_namespace.is_none()
            && sandbox.grants.kv.is_some();
        Ok(SandboxedComponent {
            name,
            path,
            sandbox,
            derives_kv_namespace,
        })
    }

    /// The flags over `sandbox`: limits given replace its own, grants add
    /// to its own.
    fn apply(&self, sandbox: &mut Sandbox) -> anyhow::Result<()> {
        self.limits.apply(&mut sandbox.limits);
        // The command line's paths are used as given.
        self.grants
            .apply(&mut sandbox.grants, std::path::Path::new(""))?;
        sandbox.strict |= self.strict;
        self.trust.apply(&mut sandbox.trust)
    }

    /// A runtime for `sandbox`: metering fuel when it sets a fuel limit,
    /// with the cache the flags ask for.
    pub fn runtime(&self, sandbox: &Sandbox) -> Result<Runtime, warden::Error> {
        self.runtime_builder(sandbox).build()
    }

    /// The builder of [`SandboxArgs::runtime`], for a caller to add to.
    pub fn runtime_builder(&self, sandbox: &Sandbox) -> warden::RuntimeBuilder {
        let mut builder = Runtime::builder();
        builder.fuel(sandbox.limits.fuel.is_some());
        if let Some(dir) = &self.cache_dir {
            builder.compile_cache(dir);
        }
        if let Some(key) = &self.cache_key {
            builder.compile_cache_key(key);
        }
        if self.no_cache {
            builder.no_compile_cache();
        }
        builder
    }
}

//! Command-line arguments.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sha2::{Digest, Sha256};
use warden::trust::{
    PublicKey, SignatureStatus, SignerPolicy, TrustPolicy, TrustStore, UnsignedPolicy,
};
use warden::{
    KvGrant, KvStore, Limits, Manifest, OriginPattern, Preopen, Sandbox, SocketPattern, Source,
};

/// Run untrusted WebAssembly plugins under real limits and explicit grants.
#[derive(Debug, Parser)]
#[command(name = "warden", version, about, after_help = crate::exit::EXIT_CODES_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses a command line, refusing flags that contradict each other with
    /// clap's usage error (exit code 2).
    pub fn try_parse_checked_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args)?;
        match cli.command.trust_args().and_then(TrustArgs::contradiction) {
            Some(message) => Err(<Cli as clap::CommandFactory>::command()
                .error(clap::error::ErrorKind::ArgumentConflict, message)),
            None => Ok(cli),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one action of a plugin in a fresh, sandboxed instance.
    ///
    /// The output goes to stdout and a one-line report to stderr; with
    /// --json, one JSON object goes to stdout instead.
    #[command(after_help = crate::exit::EXIT_CODES_HELP)]
    Run(RunArgs),
    /// Run a WASI program (a `wasi:cli/run` component, or a `wasm32-wasip1`
    /// module) under the same limits and grants as a plugin.
    ///
    /// Without --json the program's stdout and stderr pass through (bounded)
    /// and Warden exits with the program's exit code; failures of the
    /// sandbox (limits, traps) use Warden's own exit codes.
    #[command(after_help = crate::exit::EXIT_CODES_HELP)]
    Exec(ExecArgs),
    /// Show what a plugin is: its metadata, capabilities, imports, exports,
    /// size and hash.
    #[command(after_help = crate::exit::EXIT_CODES_HELP)]
    Inspect(InspectArgs),
    /// Look inside a plugin's key-value namespace (SQLite stores only; use
    /// Redis's own tools for a Redis store).
    Kv(KvArgs),
    /// Generate an Ed25519 key pair: NAME.key (owner-only) and NAME.pub.
    Keygen(KeygenArgs),
    /// Sign a plugin (in place unless -o is given); signatures accumulate.
    Sign(SignArgs),
    /// Check a plugin's signatures: who signed it, and whether the key is
    /// trusted. Exits 0 only when a known key's signature is valid and no
    /// signature is bad.
    Verify(VerifyArgs),
    /// Manage the trust store: the keys whose signatures `--signed-by
    /// trusted` accepts.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Compile a plugin or program into the compile cache ahead of time, so
    /// that its first run does not pay for compilation.
    #[command(after_help = crate::exit::EXIT_CODES_HELP)]
    Compile(CompileArgs),
    /// Start a new plugin project: Warden's WIT, a working plugin with the
    /// three example actions, and its build command, in NAME/.
    New(NewArgs),
    /// Turn a WASI preview 1 reactor module with an embedded component type
    /// (what wit-bindgen's C generator and clang produce) into a component,
    /// with wasmtime's preview 1 reactor adapter.
    #[command(after_help = crate::exit::EXIT_CODES_HELP)]
    Componentize(ComponentizeArgs),
    /// Serve every plugin of a manifest over HTTP: `POST
    /// /plugins/NAME/ACTION` runs an action on the body, `GET /plugins/NAME`
    /// shows its metadata; /healthz, /readyz and /metrics for operators.
    ///
    /// Structured logs (one JSON object per line: requests, reloads,
    /// start and stop) go to stderr. SIGTERM drains: no new connections,
    /// /readyz fails, requests in flight get --shutdown-grace to finish.
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
    /// Turn a plugin into an HTTP app for `wasmtime serve`, Spin or
    /// wasmCloud: one component exporting `wasi:http/incoming-handler`,
    /// made of the plugin, Warden's HTTP adapter and the shims the target
    /// needs. The plugin is checked against the trust policy first.
    #[command(after_help = EXPORT_HTTP_HELP)]
    ExportHttp(ExportHttpArgs),
}

impl Command {
    /// The trust policy's flags, for the commands that have them.
    fn trust_args(&self) -> Option<&TrustArgs> {
        match self {
            Command::Run(args) => Some(&args.sandbox.trust),
            Command::Exec(args) => Some(&args.sandbox.trust),
            Command::Inspect(args) => Some(&args.sandbox.trust),
            Command::Compile(args) => Some(&args.sandbox.trust),
            Command::ExportHttp(args) => Some(&args.trust),
            _ => None,
        }
    }
}

const EXPORT_HTTP_HELP: &str = "\
The app answers POST /ACTION (the body is the input) with 200 and the output; plugin errors
400 (invalid-input), 404 (unknown-action) and 500 (failed); GET / with the plugin's metadata;
other methods 405; bodies over 16 MiB 413. Errors are JSON: {\"error\": KIND, \"message\": TEXT}.
Limits are the engine's: a trap or a limit (e.g. wasmtime serve -Wtimeout) is a 500.
Run it with: wasmtime serve -Scli APP.wasm (add -Skeyvalue, -Sconfig if the plugin uses them).
Exit codes: 0 exported; 2 the target cannot provide an import; 10 not a Warden plugin;
11 the plugin cannot be read or the app cannot be written; 31 untrusted.";

#[derive(Debug, Args)]
pub struct ExportHttpArgs {
    /// The plugin component (.wasm).
    pub plugin: PathBuf,
    /// Where to write the app component; replaced atomically.
    #[arg(short, long, value_name = "APP.wasm")]
    pub output: PathBuf,
    /// The engine that will serve the app.
    #[arg(long, value_enum, default_value = "wasmtime")]
    pub target: warden_export::Target,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub trust: TrustArgs,
}

const SERVE_HELP: &str = "\
Replies: 200 with the output; plugin errors 400 (invalid-input), 404 (unknown-action) and
500 (failed); limits and traps 500; bodies over the plugin's max_input 413; saturation (call
slots, or request bodies over --max-body-memory) and shutdown 503 with Retry-After; a plugin
whose signer is no longer trusted 503 (untrusted).
Errors are JSON: {\"error\": KIND, \"message\": TEXT}; a host-side failure's full text goes
to the log only. Connections: --max-connections, --idle-timeout, --header-read-timeout and
--write-timeout, or the manifest's [serve] table.
Exit codes: 0 after a clean shutdown; 2 for a bad manifest or address; when a plugin does not
load, the code of its error (see `warden run --help`).";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The warden.toml declaring the plugins, their limits, grants and trust
    /// policy. Watched for changes unless --no-watch.
    #[arg(long, value_name = "PATH")]
    pub manifest: PathBuf,
    /// Address to listen on; port 0 picks a free one (the `listening` log
    /// line says which).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8080")]
    pub addr: std::net::SocketAddr,
    /// Plugin calls running at once, across plugins.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_concurrent: u32,
    /// Calls waiting for a free slot beyond those; more are answered 503
    /// [default: --max-concurrent].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub max_queue: Option<u32>,
    /// Time for a whole request: receiving the body, waiting for a slot and
    /// running. A slow body is answered 408, a slow call 504.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = warden::units::parse_duration)]
    pub request_timeout: Duration,
    /// How long requests in flight may finish after SIGTERM before they are
    /// cancelled (answered 503).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = warden::units::parse_duration)]
    pub shutdown_grace: Duration,
    /// How often the manifest and plugin files are checked for changes.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = warden::units::parse_duration)]
    pub watch_interval: Duration,
    /// Do not reload plugins when the manifest or their files change.
    #[arg(long)]
    pub no_watch: bool,
    /// Do not write a log line per request.
    #[arg(long)]
    pub no_access_log: bool,
    /// Where compiled plugins are cached [default: the user's cache directory].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile every plugin at start instead of using the compile cache.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
    /// The key that seals compile cache entries: created (owner-only) if
    /// missing, never inside the cache directory [default:
    /// $XDG_DATA_HOME/warden/cache.key, else ~/.local/share/warden/cache.key].
    #[arg(long, value_name = "PATH", conflicts_with = "no_cache")]
    pub cache_key: Option<PathBuf>,
    /// Time a client has to send a whole request head, from its first byte;
    /// then the connection is closed [default: the manifest's [serve]
    /// header_read_timeout, else 10s].
    #[arg(long, value_name = "DURATION", value_parser = warden::units::parse_duration)]
    pub header_read_timeout: Option<Duration>,
    /// Time a connection may stay open with no request in progress
    /// [default: the manifest's [serve] idle_timeout, else 60s].
    #[arg(long, value_name = "DURATION", value_parser = warden::units::parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Time writing a response may make no progress (the client stopped
    /// reading) before the connection is dropped [default: the manifest's
    /// [serve] write_timeout, else 30s].
    #[arg(long, value_name = "DURATION", value_parser = warden::units::parse_duration)]
    pub write_timeout: Option<Duration>,
    /// Connections open at once; further ones wait in the listen backlog
    /// until one closes [default: the manifest's [serve] max_connections,
    /// else 512].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: Option<u32>,
    /// Bytes of request bodies held at once over all connections, from
    /// their arrival until their call ends; a body that would go past it is
    /// answered 503 [default: the manifest's [serve] max_body_memory, else
    /// 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = warden::units::parse_size)]
    pub max_body_memory: Option<u64>,
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The plugin's name: lower-case letters, digits and `-`, starting with a
    /// letter. Also the project's folder.
    pub name: String,
    /// The language to write the plugin in.
    #[arg(long, value_enum)]
    pub lang: Language,
    /// Where to create the project's folder.
    #[arg(long, value_name = "PATH", default_value = ".")]
    pub dir: PathBuf,
}

/// A language `warden new` can start a plugin in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    Rust,
    Python,
    Js,
    C,
}

#[derive(Debug, Args)]
pub struct ComponentizeArgs {
    /// The core module (.wasm).
    pub module: PathBuf,
    /// Where to write the component.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The component (.wasm), or with --manifest its name.
    pub plugin: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
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
    /// Trust a public key under a name.
    Add {
        /// The public key file (NAME.pub).
        key: PathBuf,
        /// The name to trust it under.
        #[arg(long)]
        name: String,
        /// The trust store [default: $XDG_CONFIG_HOME/warden/trust.toml].
        #[arg(long, value_name = "PATH")]
        trust_store: Option<PathBuf>,
    },
    /// List the trusted keys.
    List {
        /// The trust store [default: $XDG_CONFIG_HOME/warden/trust.toml].
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

/// The trust policy's flags, for commands that load a plugin to run or
/// deploy it.
#[derive(Debug, Args)]
#[command(next_help_heading = "Signatures")]
pub struct TrustArgs {
    /// What to do with a plugin without a verifiable signature
    /// [default: warn, or the manifest's for a plugin it declares; deny
    /// under --signed-by trusted, which allow and warn contradict].
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
    /// ~/.config/warden/trust.toml].
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
    /// outside any manifest: warn about unverified plugins (the library
    /// leaves that choice to its caller) and trust the trust store's keys.
    pub fn command_line_trust(&self) -> TrustPolicy {
        let mut trust = TrustPolicy::default();
        trust.unsigned = UnsignedPolicy::Warn;
        trust.trusted = Arc::new(self.trust_store_for_loading());
        trust
    }

    /// The trust store's path: --trust-store, else the default location.
    fn trust_store_path(&self) -> Option<PathBuf> {
        self.trust_store.clone().or_else(TrustStore::default_path)
    }

    /// The trust store, for a command that reports on trust: one that
    /// cannot be used is an error naming it.
    pub fn trust_store(&self) -> anyhow::Result<TrustStore> {
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

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The plugin component (.wasm), or with --manifest the plugin's name.
    pub plugin: String,
    /// The action to run; empty when omitted.
    #[arg(default_value = "")]
    pub action: String,
    /// The input, as text. Without --input or --input-file, stdin is read
    /// (unless it is a terminal, in which case the input is empty).
    #[arg(long, conflicts_with = "input_file")]
    pub input: Option<String>,
    /// Read the input from this file.
    #[arg(long, value_name = "PATH")]
    pub input_file: Option<PathBuf>,
    /// Print one JSON object with the result and the report.
    #[arg(long)]
    pub json: bool,
    /// Keep running: run the action again whenever the plugin file (or the
    /// manifest) changes, until interrupted. A change that fails to load
    /// is reported and the previous version keeps serving. Each output ends
    /// with a newline.
    #[arg(long, conflicts_with = "signature")]
    pub watch: bool,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The program (.wasm), or with --manifest its name.
    pub program: String,
    /// Arguments for the program, after `--`.
    #[arg(last = true)]
    pub args: Vec<String>,
    /// Capture the program's output and print one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The plugin component (.wasm), or with --manifest the plugin's name.
    pub plugin: String,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

#[derive(Debug, Args)]
pub struct KvArgs {
    /// The plugin whose namespace to open (its name, as loaded).
    pub plugin: String,
    #[command(subcommand)]
    pub command: KvCommand,
    /// The SQLite store file [default: the plugin's store in --manifest,
    /// else the default location]. Redis stores cannot be inspected here.
    #[arg(long, value_name = "PATH", global = true)]
    pub store: Option<PathBuf>,
    /// Read the plugin's store and namespace from this manifest.
    #[arg(long, value_name = "PATH", global = true)]
    pub manifest: Option<PathBuf>,
    /// The namespace [default: the plugin's name, as a manifest names it; a
    /// plugin run from its file without --kv-namespace has a derived one,
    /// see `warden run --help`].
    #[arg(long, global = true)]
    pub namespace: Option<String>,
    /// The bucket.
    #[arg(long, default_value = "default", global = true)]
    pub bucket: String,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// List the buckets that hold keys.
    Buckets,
    /// List the keys of a bucket.
    List,
    /// Print a key's value.
    Get {
        /// The key.
        key: String,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
    },
}

/// Limits and grants, shared by every command that runs guest code.
#[derive(Debug, Args)]
#[command(next_help_heading = "Limits and grants")]
pub struct SandboxArgs {
    /// Take the plugin's path, limits and grants from this warden.toml; the
    /// flags below add to (and for limits, override) what it declares.
    #[arg(long, value_name = "PATH")]
    pub manifest: Option<PathBuf>,
    /// Wall-clock time per call, e.g. 300ms or 5s [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = warden::units::parse_duration)]
    pub timeout: Option<Duration>,
    /// Fuel per call (turns on fuel metering); unlimited when omitted.
    #[arg(long, value_name = "N")]
    pub fuel: Option<u64>,
    /// Linear memory per instance, e.g. 64MiB, 64M or 67108864 [default: 64MiB].
    #[arg(long, value_name = "SIZE", value_parser = warden::units::parse_size)]
    pub memory: Option<u64>,
    /// Largest input accepted [default: 16MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_usize_size)]
    pub max_input: Option<usize>,
    /// Largest output accepted from the plugin [default: 16MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_usize_size)]
    pub max_output: Option<usize>,
    /// Grant a host directory as HOST::GUEST, read-only unless suffixed with
    /// :rw (e.g. ./data::/data:rw). Repeatable.
    #[arg(long = "dir", value_name = "HOST::GUEST[:ro|:rw]")]
    pub dirs: Vec<Preopen>,
    /// Set an environment variable in the plugin. Repeatable; nothing is
    /// inherited from Warden's own environment.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = warden::parse_env_var)]
    pub env: Vec<(String, String)>,
    /// Allow HTTP requests to an origin, e.g. https://api.example.com,
    /// https://*.example.com or http://127.0.0.1:8080. Repeatable.
    #[arg(long = "allow-http", value_name = "ORIGIN")]
    pub allow_http: Vec<OriginPattern>,
    /// Give the plugin a configuration value (wasi:config). Repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = warden::parse_env_var)]
    pub config: Vec<(String, String)>,
    /// Grant the key-value store at its default location
    /// ($XDG_DATA_HOME/warden/kv.sqlite).
    #[arg(long)]
    pub kv: bool,
    /// Grant the key-value store in this SQLite file, or on the Redis server
    /// at this redis:// URL (e.g. redis://127.0.0.1:6379/0), which replicas
    /// on several machines can share.
    #[arg(long, value_name = "PATH|URL")]
    pub kv_store: Option<KvStore>,
    /// Allow TCP connections to HOST:PORT, e.g. 127.0.0.1:6379 or
    /// db.internal:5432 (listening needs --allow-tcp-listen). Repeatable.
    #[arg(long = "allow-tcp", value_name = "HOST:PORT")]
    pub allow_tcp: Vec<SocketPattern>,
    /// Allow UDP datagrams to (or binds on) HOST:PORT. Repeatable.
    #[arg(long = "allow-udp", value_name = "HOST:PORT")]
    pub allow_udp: Vec<SocketPattern>,
    /// Allow binding and listening for TCP connections on ADDR (HOST:PORT,
    /// e.g. 127.0.0.1:8081), and accepting them from any peer. Repeatable.
    #[arg(long = "allow-tcp-listen", value_name = "ADDR")]
    pub allow_tcp_listen: Vec<SocketPattern>,
    /// Refuse to load a plugin that imports a high-risk capability it is not
    /// granted (instead of denying it at call time).
    #[arg(long)]
    pub strict: bool,
    /// Fixed wall clock, stepping monotonic clock (timers and file times
    /// follow them) and seeded random numbers, for reproducible runs.
    #[arg(long)]
    pub deterministic: bool,
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
    /// Host memory an instance may make the host hold outside its linear
    /// memory (HTTP header maps and requests it builds, directory listings,
    /// log and denial records), e.g. 64MiB [default: 64MiB].
    #[arg(long, value_name = "SIZE", value_parser = warden::units::parse_size, help_heading = "Limits and grants")]
    pub host_memory: Option<u64>,
    /// The kv namespace the plugin's keys live in [default: the manifest's
    /// plugin name; for a plugin file, NAME@key:KEYID when a key Warden knows
    /// signed it, else NAME@sha256:HASH (the first 16 hex digits)].
    #[arg(long, value_name = "NAME", help_heading = "Limits and grants")]
    pub kv_namespace: Option<String>,
}

/// A component named on the command line, with the sandbox it runs in.
pub struct Target {
    /// The name it is loaded under (its manifest name, or the file's stem).
    pub name: String,
    pub path: PathBuf,
    pub sandbox: Sandbox,
    /// Whether its kv namespace is derived from the component when it is
    /// read (a file granted kv, outside any manifest, without
    /// --kv-namespace).
    derives_kv_namespace: bool,
}

impl Target {
    /// The sandbox to load `source` (this target's component) in: with the
    /// kv namespace derived from the component when no one named it.
    pub fn sandbox_for(&self, source: &Source) -> Sandbox {
        let mut sandbox = self.sandbox.clone();
        if self.derives_kv_namespace
            && let Some(kv) = &mut sandbox.grants.kv
        {
            kv.namespace = Some(derived_kv_namespace(&self.name, source, &sandbox.trust));
        }
        sandbox
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
pub fn derived_kv_namespace(name: &str, source: &Source, trust: &TrustPolicy) -> String {
    let signer = warden::trust::inspect_signatures(source, trust)
        .unwrap_or_default()
        .into_iter()
        .filter(|check| check.status == SignatureStatus::Valid)
        .filter_map(|check| check.key_id)
        .min();
    match signer {
        Some(key_id) => format!("{name}@key:{key_id}"),
        None => {
            let digest = hex::encode(Sha256::digest(source.bytes()));
            format!("{name}@sha256:{}", &digest[..16])
        }
    }
}

impl SandboxArgs {
    /// Resolves the component argument (a path, or a manifest name) and
    /// builds its sandbox: the manifest's, then the flags.
    pub fn target(&self, component: &str) -> anyhow::Result<Target> {
        let (name, path, mut sandbox) = match &self.manifest {
            Some(manifest) => {
                let manifest = Manifest::from_file(manifest)?;
                let entry = manifest.plugin(component)?;
                (
                    entry.name.clone(),
                    entry.path.clone(),
                    entry.sandbox.clone(),
                )
            }
            None => {
                let path = PathBuf::from(component);
                let name = path
                    .file_stem()
                    .map(|stem| stem.to_string_lossy().into_owned())
                    .unwrap_or_else(|| component.to_owned());
                let mut sandbox = Sandbox::default();
                sandbox.trust = self.trust.keys.command_line_trust();
                (name, path, sandbox)
            }
        };
        self.apply(&mut sandbox)
            .with_context(|| format!("preparing the sandbox of `{name}`"))?;
        let derives_kv_namespace =
            self.manifest.is_none() && self.kv_namespace.is_none() && sandbox.grants.kv.is_some();
        Ok(Target {
            name,
            path,
            sandbox,
            derives_kv_namespace,
        })
    }

    fn apply(&self, sandbox: &mut Sandbox) -> anyhow::Result<()> {
        let limits: &mut Limits = &mut sandbox.limits;
        if let Some(timeout) = self.timeout {
            limits.timeout = timeout;
        }
        if self.fuel.is_some() {
            limits.fuel = self.fuel;
        }
        if let Some(memory) = self.memory {
            limits.memory_bytes = memory;
        }
        if let Some(max_input) = self.max_input {
            limits.max_input_bytes = max_input;
        }
        if let Some(max_output) = self.max_output {
            limits.max_output_bytes = max_output;
        }
        if let Some(bytes) = self.host_memory {
            limits.host_memory_bytes = bytes;
        }
        let grants = &mut sandbox.grants;
        grants.dirs.extend(self.dirs.iter().cloned());
        grants.env.extend(self.env.iter().cloned());
        grants.http.allow.extend(self.allow_http.iter().cloned());
        grants.config.extend(self.config.iter().cloned());
        grants.tcp.extend(self.allow_tcp.iter().cloned());
        grants.udp.extend(self.allow_udp.iter().cloned());
        grants
            .tcp_listen
            .extend(self.allow_tcp_listen.iter().cloned());
        if let Some(store) = &self.kv_store {
            grants.kv = Some(KvGrant::new(store.clone()));
        } else if self.kv {
            let path = KvGrant::default_path().context(
                "--kv needs HOME or XDG_DATA_HOME to place the store; use --kv-store PATH",
            )?;
            grants.kv = Some(KvGrant::at(path));
        }
        if let Some(namespace) = &self.kv_namespace {
            let kv = grants
                .kv
                .as_mut()
                .context("--kv-namespace needs a kv grant: add --kv or --kv-store PATH|URL")?;
            kv.namespace = Some(namespace.clone());
        }
        grants.deterministic |= self.deterministic;
        sandbox.strict |= self.strict;
        self.trust.apply(&mut sandbox.trust)
    }
}

impl SandboxArgs {
    /// A runtime for `sandbox`: metering fuel when it sets a fuel limit,
    /// with the cache the flags ask for.
    pub fn runtime(&self, sandbox: &Sandbox) -> Result<warden::Runtime, warden::Error> {
        let mut builder = warden::Runtime::builder();
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
        builder.build()
    }
}

fn parse_usize_size(text: &str) -> Result<usize, String> {
    let bytes = warden::units::parse_size(text).map_err(|err| err.to_string())?;
    usize::try_from(bytes).map_err(|_| format!("size `{text}` is too large for this machine"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn run_args(extra: &[&str]) -> RunArgs {
        let cli =
            Cli::try_parse_from(["warden", "run", "p.wasm", "echo"].iter().chain(extra)).unwrap();
        match cli.command {
            Command::Run(args) => args,
            other => panic!("expected run, got {other:?}"),
        }
    }

    #[test]
    fn limits_and_grants_parse() {
        let args = run_args(&[
            "--timeout",
            "300ms",
            "--memory",
            "32M",
            "--dir",
            "/tmp::/data:rw",
            "--env",
            "A=1",
            "--allow-http",
            "https://*.example.com",
            "--config",
            "k=v",
            "--allow-tcp",
            "127.0.0.1:6379",
            "--allow-tcp-listen",
            "127.0.0.1:8081",
            "--kv-store",
            "/tmp/kv.sqlite",
            "--strict",
            "--deterministic",
        ]);
        let target = args.sandbox.target(&args.plugin).unwrap();
        assert_eq!(target.name, "p");
        let sandbox = target.sandbox;
        assert_eq!(sandbox.limits.timeout, Duration::from_millis(300));
        assert_eq!(sandbox.limits.memory_bytes, 32 << 20);
        assert_eq!(
            sandbox.grants.dirs,
            vec![Preopen::read_write("/tmp", "/data")]
        );
        assert_eq!(sandbox.grants.env, vec![("A".to_owned(), "1".to_owned())]);
        assert_eq!(sandbox.grants.http.allow.len(), 1);
        assert_eq!(sandbox.grants.config["k"], "v");
        assert_eq!(sandbox.grants.tcp.len(), 1);
        assert_eq!(
            sandbox.grants.tcp_listen,
            ["127.0.0.1:8081".parse().unwrap()]
        );
        assert_eq!(sandbox.grants.kv, Some(KvGrant::at("/tmp/kv.sqlite")));
        assert!(sandbox.strict && sandbox.grants.deterministic);
    }

    #[test]
    fn kv_store_takes_a_file_or_a_redis_url() {
        for (store, expected) in [
            (
                "redis://127.0.0.1:6379/0",
                KvGrant::redis("redis://127.0.0.1:6379/0"),
            ),
            (
                "rediss://cache.internal",
                KvGrant::redis("rediss://cache.internal"),
            ),
            ("state/kv.sqlite", KvGrant::at("state/kv.sqlite")),
        ] {
            let args = run_args(&["--kv-store", store]);
            let sandbox = args.sandbox.target(&args.plugin).unwrap().sandbox;
            assert_eq!(sandbox.grants.kv, Some(expected), "{store}");
        }
    }

    #[test]
    fn signed_by_trusted_implies_deny_and_refuses_allow_or_warn() {
        for unsigned in ["allow", "warn"] {
            let args = [
                "warden",
                "run",
                "p.wasm",
                "--signed-by",
                "trusted",
                "--unsigned",
                unsigned,
            ];
            let err = Cli::try_parse_checked_from(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{unsigned}");
            assert!(
                err.to_string().contains("contradicts --signed-by trusted"),
                "{err}"
            );
        }
        // A store path that does not exist: nothing is read from $HOME.
        let no_store = ["--trust-store", "/nonexistent/trust.toml"];
        for extra in [
            &["--signed-by", "trusted"][..],
            &["--signed-by", "trusted", "--unsigned", "deny"],
        ] {
            let args = run_args(&[extra, &no_store[..]].concat());
            let trust = args.sandbox.target(&args.plugin).unwrap().sandbox.trust;
            assert_eq!(
                (trust.signed_by, trust.unsigned),
                (SignerPolicy::Trusted, UnsignedPolicy::Deny),
                "{extra:?}"
            );
        }
    }

    #[test]
    fn host_memory_and_the_kv_namespace_are_the_operators() {
        let args = run_args(&[
            "--host-memory",
            "8MiB",
            "--kv-store",
            "/tmp/kv.sqlite",
            "--kv-namespace",
            "wallet",
        ]);
        let target = args.sandbox.target(&args.plugin).unwrap();
        assert_eq!(target.sandbox.limits.host_memory_bytes, 8 << 20);
        let source = Source::new("p", b"\0asm".to_vec());
        let kv = target.sandbox_for(&source).grants.kv.unwrap();
        assert_eq!(kv.namespace.as_deref(), Some("wallet"));

        // Unnamed, a plugin file's namespace comes from what it is.
        let args = run_args(&["--kv-store", "/tmp/kv.sqlite"]);
        let target = args.sandbox.target(&args.plugin).unwrap();
        let namespace = |bytes: &[u8]| {
            let source = Source::new("p", bytes.to_vec());
            target
                .sandbox_for(&source)
                .grants
                .kv
                .unwrap()
                .namespace
                .unwrap()
        };
        assert!(namespace(b"one").starts_with("p@sha256:"));
        assert_eq!(namespace(b"one").len(), "p@sha256:".len() + 16);
        assert_ne!(namespace(b"one"), namespace(b"two"));

        let args = run_args(&["--kv-namespace", "wallet"]);
        let err = args.sandbox.target(&args.plugin).err().unwrap();
        assert!(format!("{err:#}").contains("--kv-namespace needs a kv grant"));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for bad in [
            &["--timeout", "5"][..],
            &["--memory", "lots"],
            &["--dir", "/tmp"],
            &["--env", "NOVALUE"],
            &["--allow-http", "example.com"],
            &["--allow-tcp", "localhost"],
        ] {
            let err =
                Cli::try_parse_from(["warden", "run", "p.wasm"].iter().chain(bad)).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }
}

//! Command-line arguments: the commands and their flags. The limits and
//! grants are the library's sandbox spec ([`warden::LimitOptions`],
//! [`warden::GrantOptions`]), flattened into [`SandboxArgs`].

mod sandbox;
mod serve;
#[cfg(test)]
mod tests;
mod trust;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub use self::sandbox::{SandboxArgs, SandboxedComponent};
pub use self::serve::{ListenAddr, ServeArgs};
pub use self::trust::{
    KeygenArgs, SignArgs, TrustArgs, TrustCommand, VerifyArgs, require_existing_store,
};

/// Run untrusted WebAssembly plugins under real limits and explicit grants.
#[derive(Debug, Parser)]
#[command(name = "warden", version, about, after_help = crate::exit::EXIT_CODES_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses a command line, refusing flags that contradict each other (or,
    /// for `serve`, do not fit what it serves) with clap's usage error (exit
    /// code 2).
    pub fn try_parse_checked_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut command = <Cli as clap::CommandFactory>::command();
        let matches = command.try_get_matches_from_mut(args)?;
        let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches)
            .map_err(|err| err.format(&mut command))?;
        let refusal = match matches.subcommand() {
            Some(("serve", serve)) => serve::refusal(serve),
            _ => None,
        }
        .or_else(|| {
            let stray = cli.command.stray_arguments()?;
            Some((clap::error::ErrorKind::UnknownArgument, stray))
        })
        .or_else(|| {
            let contradiction = cli
                .command
                .trust_args()
                .and_then(TrustArgs::contradiction)?;
            Some((clap::error::ErrorKind::ArgumentConflict, contradiction))
        });
        match refusal {
            Some((kind, message)) => Err(command.error(kind, message)),
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
    /// Its arguments go after `--`. Stdin passes through, read to its end
    /// before the program starts (up to --max-input; a terminal gives none).
    /// Without --json its stdout (up to --max-output, default 1MiB) and
    /// stderr pass through, and what goes past a bound is dropped and said
    /// so on stderr; Warden exits with the program's exit code, while
    /// failures of the sandbox (limits, traps) use Warden's own exit codes.
    #[command(after_help = crate::exit::EXIT_CODES_HELP)]
    Exec(ExecArgs),
    /// Show what a plugin is: its metadata, capabilities, imports, exports,
    /// size and hash.
    #[command(after_help = crate::exit::EXIT_CODES_HELP)]
    Inspect(ComponentArgs),
    /// Look inside a plugin's key-value namespace, or set a key in it
    /// (SQLite stores only; use Redis's own tools for a Redis store).
    Kv(KvArgs),
    /// Generate an Ed25519 key pair: NAME.key (owner-only) and NAME.pub.
    Keygen(KeygenArgs),
    /// Sign a plugin (in place unless -o is given); signatures accumulate.
    Sign(SignArgs),
    /// Check a plugin's signatures: who signed it, and whether the key is
    /// trusted. Exits 0 only when a known key's signature is valid and no
    /// signature is bad; 31 otherwise, and 10 for a file that is not
    /// WebAssembly.
    Verify(VerifyArgs),
    /// Manage the trust store: the keys whose signatures `--signed-by
    /// trusted` accepts.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Compile a plugin or program into the compile cache ahead of time, so
    /// that its first run does not pay for compilation.
    #[command(after_help = crate::exit::EXIT_CODES_HELP)]
    Compile(ComponentArgs),
    /// Look at the compile cache, or free its space.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Start a new plugin project: Warden's WIT, a working plugin with the
    /// three example actions, and its build command, in NAME/.
    New(NewArgs),
    /// Turn a WASI preview 1 reactor module with an embedded component type
    /// (what wit-bindgen's C generator and clang produce) into a component,
    /// with wasmtime's preview 1 reactor adapter.
    #[command(after_help = crate::exit::EXIT_CODES_HELP)]
    Componentize(ComponentizeArgs),
    /// Serve a plugin, or every plugin of a manifest, over HTTP: `POST
    /// /plugins/NAME/ACTION` runs an action on the body, `GET /plugins/NAME`
    /// shows its metadata; /healthz, /readyz and /metrics for operators.
    ///
    /// Structured logs (one JSON object per line: requests, what plugins
    /// wrote to stdout and stderr, reloads, start and stop) go to stderr.
    /// SIGTERM drains: no new connections; open ones are served, /readyz
    /// answering 503, until requests in flight finish or --shutdown-grace
    /// ends.
    #[command(after_help = serve::SERVE_HELP)]
    Serve(ServeArgs),
    /// Turn a plugin into an HTTP app for `wasmtime serve`, Spin or
    /// wasmCloud: one component exporting `wasi:http/incoming-handler`,
    /// made of the plugin, Warden's HTTP adapter and the shims the target
    /// needs. The plugin is checked against the trust policy first.
    #[command(
        after_help = EXPORT_HTTP_HELP,
        // The shared trust flags mention a manifest's defaults, but
        // export-http takes a plugin file, never a manifest.
        mut_arg("unsigned", |arg| arg.help(
            "What to do with a plugin without a verifiable signature [default: warn; deny under \
             --signed-by trusted, which allow and warn contradict; $WARDEN_UNSIGNED, when set, \
             takes the place of warn]"
        )),
        mut_arg("signed_by", |arg| arg.help(
            "Whose signatures count: any key Warden knows, or trusted keys only (then unsigned \
             plugins and plugins signed by unknown or untrusted keys are refused) [default: any]"
        )),
    )]
    ExportHttp(ExportHttpArgs),
}

impl Command {
    /// What is wrong with words a command takes no place for, and where
    /// they belong: `warden run p.wasm greet Ada` meant `--input Ada`, and
    /// `warden exec p.wasm a b` meant `-- a b` (after the program, Warden
    /// reads its own flags, unlike `wasmtime run`).
    fn stray_arguments(&self) -> Option<String> {
        match self {
            Command::Run(args) => {
                let first = args.unexpected.first()?;
                Some(format!(
                    "unexpected argument `{first}` after the action; the input goes in \
                     --input (`--input {first}`), --input-file PATH or stdin"
                ))
            }
            Command::Exec(args) => {
                let first = args.unexpected.first()?;
                Some(format!(
                    "unexpected argument `{first}`; the program's arguments go after `--` \
                     (`warden exec {} -- {}`)",
                    args.program,
                    args.unexpected.join(" ")
                ))
            }
            _ => None,
        }
    }

    /// The trust policy's flags, for the commands that have them.
    fn trust_args(&self) -> Option<&TrustArgs> {
        match self {
            Command::Run(args) => Some(&args.sandbox.trust),
            Command::Exec(args) => Some(&args.sandbox.trust),
            Command::Inspect(args) => Some(&args.sandbox.trust),
            Command::Compile(args) => Some(&args.sandbox.trust),
            Command::ExportHttp(args) => Some(&args.trust),
            Command::Serve(args) => Some(&args.trust),
            _ => None,
        }
    }
}

const EXPORT_HTTP_HELP: &str = "\
The app answers POST /ACTION (the body is the input) with 200 and the output; plugin errors
400 (invalid-input), 404 (unknown-action) and 500 (failed); GET / with the plugin's metadata;
other methods 405; bodies over 16 MiB 413. Errors are JSON: {\"error\": KIND, \"message\": TEXT}.
Limits are the engine's: a trap or a limit (e.g. wasmtime serve -Wtimeout) is a 500.
For --target wasmtime, the command that serves the app is printed once it is written, with
the -S flags its imports need (e.g. wasmtime serve -Scli -Skeyvalue APP.wasm).
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
    /// The version of Warden's plugin world to write the plugin against:
    /// `0.2` is async on WASI 0.3, with streaming actions (Rust and Python
    /// only).
    #[arg(long, value_enum, default_value = "0.1")]
    pub world: PluginWorld,
}

/// A version of the plugin world `warden new` can start a plugin on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PluginWorld {
    /// `warden:plugin@0.1.0`: synchronous, whole inputs, on WASI 0.2.
    #[value(name = "0.1")]
    V0_1,
    /// `warden:plugin@0.2.0`: async, with streaming actions, on WASI 0.3.
    #[value(name = "0.2")]
    V0_2,
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

/// The arguments of the commands that take one component and print what
/// they found: `warden compile` and `warden inspect`.
#[derive(Debug, Args)]
pub struct ComponentArgs {
    /// The component (.wasm), or with --manifest its name.
    pub plugin: String,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The plugin component (.wasm), or with --manifest the plugin's name.
    pub plugin: String,
    /// The action to run. Omitted, the plugin is called with the empty
    /// action; a plugin that lists actions refuses it, and Warden then lists
    /// them (exit 2).
    pub action: Option<String>,
    /// Words after the action: refused with a hint at --input.
    #[arg(hide = true)]
    pub unexpected: Vec<String>,
    /// The input, as text. Without --input or --input-file, stdin is read
    /// (unless it is a terminal, in which case the input is empty).
    #[arg(long, conflicts_with = "input_file")]
    pub input: Option<String>,
    /// Read the input from this file.
    #[arg(long, value_name = "PATH")]
    pub input_file: Option<PathBuf>,
    /// Call `execute` with the whole input even when the plugin streams. A
    /// plugin that exports `warden:plugin/streaming` is otherwise fed stdin
    /// or --input-file as it is read, and its output is written as it comes
    /// (bounded by --max-stream-input and --max-stream-output, not
    /// --max-input; with --json the output is collected, up to --max-output).
    #[arg(long)]
    pub no_stream: bool,
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

impl RunArgs {
    /// The action to call: the empty one when none was named.
    pub fn action(&self) -> &str {
        self.action.as_deref().unwrap_or_default()
    }

    /// The plugin's name before it is resolved: the manifest's name for
    /// it, or its file's stem.
    pub fn plugin_name(&self) -> String {
        match self.sandbox.manifest {
            Some(_) => self.plugin.clone(),
            None => warden::Source::name_of(std::path::Path::new(&self.plugin)),
        }
    }
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The program (.wasm), or with --manifest its name.
    pub program: String,
    /// Words before `--`: refused with a hint at `--`.
    #[arg(hide = true)]
    pub unexpected: Vec<String>,
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
pub struct KvArgs {
    /// The plugin whose namespace to open (its name, as loaded).
    pub plugin: String,
    #[command(subcommand)]
    pub command: KvCommand,
    /// The SQLite store file, as `warden run --kv-store` names it [default:
    /// the plugin's store in --manifest, else the default location]. Redis
    /// stores cannot be inspected here.
    // `--store`, the flag's name before it matched `run`'s, still works.
    #[arg(long = "kv-store", alias = "store", value_name = "PATH", global = true)]
    pub kv_store: Option<PathBuf>,
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
    /// Set a key's value, creating the store file if it is missing (its
    /// directory must exist, except the default location's).
    Set {
        /// The key.
        key: String,
        /// The value, as text. Without it, stdin is read, for values that
        /// are not text.
        value: Option<String>,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List the compiled components in the cache: each entry's component
    /// hash, size and age, and the total.
    List(CacheListArgs),
    /// Remove compiled components from the cache: all of them, or those
    /// older than --older-than, or those of --plugin. Only the cache's own
    /// entries are removed; other files, directories and symbolic links in
    /// it are left alone. A removed plugin is compiled again when next
    /// loaded.
    Clean(CacheCleanArgs),
}

#[derive(Debug, Args)]
pub struct CacheListArgs {
    /// The compile cache directory [default: $XDG_CACHE_HOME/warden/compiled,
    /// else ~/.cache/warden/compiled].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CacheCleanArgs {
    /// Remove only entries compiled longer ago than this, e.g. 720h or 30m.
    #[arg(long, value_name = "DURATION", value_parser = warden::units::parse_duration)]
    pub older_than: Option<Duration>,
    /// Remove only the entries compiled from this component file.
    #[arg(long, value_name = "PLUGIN.wasm")]
    pub plugin: Option<PathBuf>,
    #[command(flatten)]
    pub list: CacheListArgs,
}

//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use warden::{Limits, Preopen};

/// Run untrusted WebAssembly plugins under real limits and explicit grants.
#[derive(Debug, Parser)]
#[command(name = "warden", version, about, after_help = crate::exit::EXIT_CODES_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one action of a plugin in a fresh, sandboxed instance.
    ///
    /// The output goes to stdout and a one-line report to stderr; with
    /// --json, one JSON object goes to stdout instead.
    #[command(after_help = crate::exit::EXIT_CODES_HELP)]
    Run(RunArgs),
    /// Show what a plugin is: its metadata, imports, exports, size and hash.
    #[command(after_help = crate::exit::EXIT_CODES_HELP)]
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The plugin component (.wasm).
    pub plugin: PathBuf,
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
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The plugin component (.wasm).
    pub plugin: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// Limits and grants, shared by every command that runs guest code.
#[derive(Debug, Args)]
#[command(next_help_heading = "Limits and grants")]
pub struct SandboxArgs {
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
}

impl SandboxArgs {
    pub fn limits(&self) -> Limits {
        let mut limits = Limits::default();
        limits.fuel = self.fuel;
        if let Some(timeout) = self.timeout {
            limits.timeout = timeout;
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
        limits
    }

    pub fn sandbox(&self) -> warden::Sandbox {
        let mut sandbox = warden::Sandbox::with_limits(self.limits());
        sandbox.grants.dirs = self.dirs.clone();
        sandbox.grants.env = self.env.clone();
        sandbox
    }

    pub fn runtime(&self) -> Result<warden::Runtime, warden::Error> {
        warden::Runtime::builder().fuel(self.fuel.is_some()).build()
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

    #[test]
    fn sizes_durations_and_grants_parse() {
        let cli = Cli::try_parse_from([
            "warden",
            "run",
            "p.wasm",
            "echo",
            "--timeout",
            "300ms",
            "--memory",
            "32M",
            "--dir",
            "/tmp::/data:rw",
            "--env",
            "A=1",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run");
        };
        let limits = args.sandbox.limits();
        assert_eq!(limits.timeout, Duration::from_millis(300));
        assert_eq!(limits.memory_bytes, 32 << 20);
        assert_eq!(
            args.sandbox.dirs,
            vec![Preopen::read_write("/tmp", "/data")]
        );
        assert_eq!(args.sandbox.env, vec![("A".to_owned(), "1".to_owned())]);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for bad in [
            &["--timeout", "5"][..],
            &["--memory", "lots"],
            &["--dir", "/tmp"],
            &["--env", "NOVALUE"],
        ] {
            let err =
                Cli::try_parse_from(["warden", "run", "p.wasm"].iter().chain(bad)).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }
}

//! `warden`: run, inspect and manage WebAssembly plugins from the command line.

mod args;
mod cache;
mod compile;
mod exec;
mod exit;
mod export_http;
mod inspect;
mod kv;
mod load;
mod new;
mod output;
mod run;
mod serve;
mod trust;

use std::process::ExitCode;
use std::time::Duration;

use crate::args::{Cli, Command};

/// How long `warden run` waits, once it is done, for blocking work still
/// in flight (see `main`).
const BLOCKING_WORK_GRACE: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let cli = Cli::try_parse_checked_from(std::env::args_os()).unwrap_or_else(|err| err.exit());
    // One call at a time needs one thread; a server wants every core.
    let runtime = match &cli.command {
        Command::Serve(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    }
    .enable_all()
    .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("warden: cannot start the async runtime: {err}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    let reads_stdin_async = matches!(cli.command, Command::Run(_));
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Exec(args) => exec::exec(args).await,
            Command::Inspect(args) => inspect::inspect(args).await,
            Command::Kv(args) => kv::kv(args),
            Command::Keygen(args) => trust::keygen(args),
            Command::Sign(args) => trust::sign(args),
            Command::Verify(args) => trust::verify(args).await,
            Command::Trust(command) => trust::trust(command),
            Command::Compile(args) => compile::compile(args).await,
            Command::Cache(command) => cache::cache(command),
            Command::New(args) => new::new(args),
            Command::Componentize(args) => new::componentize(args),
            Command::Serve(args) => serve::serve(args).await,
            Command::ExportHttp(args) => export_http::export_http(args).await,
        }
    });
    if reads_stdin_async {
        // `run` reads stdin on a blocking thread, and a read still waiting
        // when the call ended (a streaming plugin that stopped reading, a
        // writer that went quiet) cannot be cancelled: dropping the runtime
        // would wait for the writer's next byte. Other blocking work (a kv
        // write of a call that timed out) gets this long to finish.
        runtime.shutdown_timeout(BLOCKING_WORK_GRACE);
    }
    match result {
        Ok(code) => code,
        Err(err) => {
            // Errors may quote a plugin's text (its name, keys, metadata).
            output::print_guest_line(&format!("warden: {}", describe_chain(&err)));
            ExitCode::from(exit::USAGE)
        }
    }
}

/// An error and its causes, `: `-separated, as anyhow's `{:#}` writes them,
/// but leaving out a cause whose text the message before it already ends
/// with: `warden::Error::Io` prints its OS error and also returns it as its
/// source, which would otherwise be written twice.
fn describe_chain(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if text.ends_with(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

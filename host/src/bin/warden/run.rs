//! `warden run`: one action in a fresh instance.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::Context;
use warden::{Error, Outcome, Plugin, Report};

use crate::args::{RunArgs, SandboxArgs, Target};
use crate::exit;
use crate::output;

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let target = args.sandbox.target(&args.plugin)?;
    let limit = target.sandbox.limits.max_input_bytes;
    let input = match read_input(&args, limit)? {
        Input::Bytes(bytes) => bytes,
        Input::TooLarge { size } => {
            let err = Error::InputTooLarge { size, limit };
            return finish(&args, &target.name, Err(err), None);
        }
    };
    let plugin = match load(&target, &args.sandbox).await {
        Ok(plugin) => plugin,
        Err(err) => return finish(&args, &target.name, Err(err), None),
    };
    let Outcome { result, report } = plugin.execute(&args.action, &input).await;
    finish(&args, plugin.name(), result, Some(&report))
}

/// Reads and loads the plugin a command names.
pub async fn load(target: &Target, sandbox_args: &SandboxArgs) -> Result<Plugin, Error> {
    let source = sandbox_args
        .keys
        .source(&target.path)
        .await?
        .named(target.name.clone());
    let runtime = sandbox_args.runtime(&target.sandbox)?;
    let plugin = runtime.load(source, target.sandbox.clone()).await?;
    output::warn_if_unverified(plugin.info(), plugin.sandbox());
    Ok(plugin)
}

/// Prints the result; `report` is `None` when the call never started.
fn finish(
    args: &RunArgs,
    plugin: &str,
    result: Result<Vec<u8>, Error>,
    report: Option<&Report>,
) -> anyhow::Result<ExitCode> {
    if args.json {
        let report = report.cloned().unwrap_or_default();
        output::print_json(&output::call_json(plugin, &args.action, &result, &report))
            .context("writing the report")?;
    } else {
        if let Ok(bytes) = &result {
            output::print_output(bytes).context("writing the output")?;
        }
        match (report, &result) {
            (Some(report), _) => output::print_human_report(result.as_ref().err(), report),
            (None, Err(err)) => output::print_error(err),
            (None, Ok(_)) => {}
        }
    }
    Ok(exit::code(&result))
}

enum Input {
    Bytes(Vec<u8>),
    /// More than the input limit: counted, not kept.
    TooLarge {
        size: usize,
    },
}

/// Reads the input from `--input`, `--input-file` or stdin, keeping at most
/// `limit` bytes in memory.
fn read_input(args: &RunArgs, limit: usize) -> anyhow::Result<Input> {
    if let Some(text) = &args.input {
        return Ok(if text.len() > limit {
            Input::TooLarge { size: text.len() }
        } else {
            Input::Bytes(text.clone().into_bytes())
        });
    }
    if let Some(path) = &args.input_file {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot read --input-file `{}`", path.display()))?;
        return read_bounded(file, limit)
            .with_context(|| format!("cannot read --input-file `{}`", path.display()));
    }
    if std::io::stdin().is_terminal() {
        return Ok(Input::Bytes(Vec::new()));
    }
    read_bounded(std::io::stdin().lock(), limit).context("cannot read stdin")
}

fn read_bounded(mut reader: impl Read, limit: usize) -> std::io::Result<Input> {
    let mut bytes = Vec::new();
    (&mut reader).take(limit as u64).read_to_end(&mut bytes)?;
    let rest = std::io::copy(&mut reader, &mut std::io::sink())?;
    Ok(if rest == 0 {
        Input::Bytes(bytes)
    } else {
        Input::TooLarge {
            size: bytes.len().saturating_add(rest as usize),
        }
    })
}

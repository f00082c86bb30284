//! `warden exec`: a WASI program under the same limits and grants as a plugin.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Map, Value};
use warden::units::format_bytes;
use warden::{Captured, Outcome, Report, Stdio};

use crate::args::ExecArgs;
use crate::output::{self, Failure};
use crate::run;

/// `warden exec`: loads the program and runs it with its arguments and
/// stdin; its exit code becomes warden's.
pub async fn exec(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let mut target = match args.sandbox.resolve(&args.program) {
        Ok(target) => target,
        Err(err) => {
            let name = match args.sandbox.manifest {
                Some(_) => args.program.clone(),
                None => warden::Source::name_of(std::path::Path::new(&args.program)),
            };
            return finish(&args, &name, Err(Failure::before_loading(&err)), None);
        }
    };
    // A program's output is what it writes to stdout, so --max-output
    // bounds that (a plugin's is what `execute` returns).
    if let Some(bytes) = args.sandbox.limits.max_output {
        target.sandbox.limits.stdout_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
    }
    let limit = target.sandbox.limits.max_input_bytes;
    // The program's stdin, read before it starts (see `read_stdin`).
    let stdin = match run::bounded(run::read_stdin(limit).await, limit) {
        Ok(bytes) => bytes,
        Err(failure) => return finish(&args, &target.name, Err(failure), None),
    };
    let program = match crate::load::program(&target, &args.sandbox).await {
        Ok(program) => program,
        Err(err) => return finish(&args, &target.name, Err((&err).into()), None),
    };
    let stdio = if args.json {
        Stdio::Capture
    } else {
        Stdio::Forward
    };
    let Outcome { result, report } = program.run_with_stdin(&args.args, stdin, stdio).await;
    if !args.json {
        let limits = &program.sandbox().limits;
        say_what_was_dropped(
            "stdout",
            &report.stdout,
            limits.stdout_bytes,
            "--max-output",
        );
        say_what_was_dropped("stderr", &report.stderr, limits.stderr_bytes, "`stderr`");
    }
    let result = result.map_err(|err| Failure::from(&err));
    finish(&args, program.name(), result, Some(&report))
}

/// Says on stderr that a forwarded stream went past its bound, so that a
/// cut output is never taken for the whole of it.
fn say_what_was_dropped(stream: &str, captured: &Captured, limit: usize, setting: &str) {
    if captured.dropped_bytes > 0 {
        // Cut stderr ends mid-line, and this note goes to the same stream.
        let new_line = if stream == "stderr" { "\n" } else { "" };
        eprintln!(
            "{new_line}warden: the program's {stream} went past its limit of {} ({setting}); the last {} were dropped",
            format_bytes(limit as u64),
            format_bytes(captured.dropped_bytes)
        );
    }
}

/// Reports the run; `report` is `None` when the program never started.
fn finish(
    args: &ExecArgs,
    program: &str,
    result: Result<i32, Failure>,
    report: Option<&Report>,
) -> anyhow::Result<ExitCode> {
    if args.json {
        let mut object = Map::new();
        let status = match &result {
            Ok(_) => "ok",
            Err(failure) => failure.kind.as_str(),
        };
        object.insert("status".into(), status.into());
        object.insert("program".into(), program.into());
        object.insert("args".into(), args.args.clone().into());
        object.insert(
            "exit_code".into(),
            result
                .as_ref()
                .ok()
                .copied()
                .map_or(Value::Null, Value::from),
        );
        object.insert(
            "error".into(),
            result
                .as_ref()
                .err()
                .map_or(Value::Null, |failure| failure.message.clone().into()),
        );
        output::report_fields(&mut object, &report.cloned().unwrap_or_default());
        output::print_json(&Value::Object(object)).context("writing the report")?;
    } else if let Err(failure) = &result {
        match report {
            Some(report) => output::print_report_with(Some(&failure.message), report),
            None => output::print_failure(failure),
        }
    }
    Ok(match result {
        // Exit codes outside 0..=255 wrap, as a shell would see them.
        Ok(code) => ExitCode::from(code as u8),
        Err(failure) => failure.exit_code(),
    })
}

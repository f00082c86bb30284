//! `warden exec`: a WASI program under the same limits and grants as a plugin.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Map, Value};
use warden::{Error, Outcome, Report, Stdio};

use crate::args::ExecArgs;
use crate::exit;
use crate::load;
use crate::output;

/// `warden exec`: loads the program and runs it with its arguments; its
/// exit code becomes warden's.
pub async fn exec(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let target = args.sandbox.resolve(&args.program)?;
    let program = match load::program(&target, &args.sandbox).await {
        Ok(program) => program,
        Err(err) => return finish(&args, &target.name, Err(err), None),
    };
    let stdio = if args.json {
        Stdio::Capture
    } else {
        Stdio::Forward
    };
    let Outcome { result, report } = program.run(&args.args, stdio).await;
    finish(&args, program.name(), result, Some(&report))
}

/// Reports the run; `report` is `None` when the program never started.
fn finish(
    args: &ExecArgs,
    program: &str,
    result: Result<i32, Error>,
    report: Option<&Report>,
) -> anyhow::Result<ExitCode> {
    if args.json {
        let mut object = Map::new();
        let status = match &result {
            Ok(_) => "ok",
            Err(err) => err.kind().as_str(),
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
                .map_or(Value::Null, |err| err.to_string().into()),
        );
        output::report_fields(&mut object, &report.cloned().unwrap_or_default());
        output::print_json(&Value::Object(object)).context("writing the report")?;
    } else if let Err(err) = &result {
        match report {
            Some(report) => output::print_human_report(Some(err), report),
            None => output::print_error(err),
        }
    }
    Ok(match result {
        // Exit codes outside 0..=255 wrap, as a shell would see them.
        Ok(code) => ExitCode::from(code as u8),
        Err(err) => ExitCode::from(exit::for_kind(err.kind())),
    })
}

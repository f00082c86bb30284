//! `warden compile`: fill the compile cache ahead of time.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use warden::units::{format_bytes, format_duration};

use crate::args::ComponentArgs;
use crate::exit;
use crate::output;

/// `warden compile`: compiles a plugin into the compile cache.
pub async fn compile(args: ComponentArgs) -> anyhow::Result<ExitCode> {
    let target = args.sandbox.resolve(&args.plugin)?;
    let runtime = args.sandbox.runtime(&target.sandbox)?;
    let started = Instant::now();
    let compiled = match args.sandbox.trust.keys.source(&target.path).await {
        Ok(source) => {
            runtime
                .compile(source.named(target.name.clone()), target.sandbox.clone())
                .await
        }
        Err(err) => Err(err),
    };
    let elapsed = started.elapsed();
    let info = match compiled {
        Ok(info) => info,
        Err(err) => {
            output::print_error(&err);
            return Ok(ExitCode::from(exit::for_kind(err.kind())));
        }
    };
    if args.json {
        output::print_json(&json!({
            "plugin": target.name,
            "size": info.size,
            "sha256": info.sha256,
            "cached": info.cached,
            "cache": runtime.has_compile_cache(),
            "duration_ms": elapsed.as_micros() as f64 / 1e3,
        }))
        .context("writing the report")?;
    } else {
        let what = match (info.cached, runtime.has_compile_cache()) {
            _ if info.preview1 => {
                "compiled (a preview 1 module is compiled on every run, so nothing was kept)"
            }
            (true, _) => "already in the compile cache",
            (false, true) => "compiled into the compile cache",
            (false, false) => "compiled (the cache is off, so nothing was kept)",
        };
        println!(
            "{} ({}): {what} in {}",
            target.name,
            format_bytes(info.size),
            format_duration(elapsed)
        );
    }
    Ok(ExitCode::SUCCESS)
}

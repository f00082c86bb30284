//! An application with its own WIT world (`wit/filter.wit`: records, a
//! variant, a resource and a host-defined import) running a plugin of that
//! world under Warden: typed calls, limits, grants and the call report.
//!
//! Usage: `cargo run -p warden --example text-filter -- PLUGIN.wasm`
//! (the plugin is `guests/text-filter`, built by `make guests`).

mod glue;

use std::process::ExitCode;
use std::time::Duration;

use glue::{Dictionary, Rule, Verdict};
use warden::{Limits, Runtime, Sandbox, Source};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: text-filter PLUGIN.wasm");
        return ExitCode::from(2);
    };
    match run(&path).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("text-filter: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: &str) -> anyhow::Result<()> {
    let runtime = Runtime::new()?;
    let world = glue::world(&runtime)?;
    let mut limits = Limits::default();
    limits.timeout = Duration::from_secs(1);
    let mut sandbox = Sandbox::with_limits(limits);
    sandbox.grants.host.insert(glue::DICTIONARY.name.to_owned());
    let plugin = runtime
        .load_world(Source::read(path).await?, sandbox, &world)
        .await?;
    for capability in plugin.capabilities() {
        println!(
            "capability {} ({} risk, {})",
            capability.name,
            capability.risk,
            if capability.granted {
                "granted"
            } else {
                "not granted"
            }
        );
    }

    let dictionary = Dictionary {
        banned: ["darn".to_owned()].into(),
    };
    let rules = vec![Rule {
        pattern: "colour".into(),
        replacement: "color".into(),
    }];
    let lines = ["a plain line", "what a nice colour", "darn it"].map(String::from);
    let outcome = glue::filter(&plugin, dictionary, rules, lines.to_vec()).await;
    let (verdicts, stats) = outcome.result?;
    for (line, verdict) in lines.iter().zip(&verdicts) {
        let verdict = match verdict {
            Verdict::Keep => "keep".to_owned(),
            Verdict::Rewrite(text) => format!("rewrite to {text:?}"),
            Verdict::Drop(reason) => format!("drop: {reason}"),
        };
        println!("{line:?}: {verdict}");
    }
    println!(
        "kept {}, rewritten {}, dropped {} · in {:?}",
        stats.kept, stats.rewritten, stats.dropped, outcome.report.duration
    );
    Ok(())
}

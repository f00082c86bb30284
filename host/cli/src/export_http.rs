//! `warden export-http`: checks a plugin the way `warden run` does, then
//! composes it into an HTTP app with `warden_export`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;
use warden::units::format_bytes;
use warden::{Error, Runtime, Sandbox};
use warden_export::{App, ExportError, Target, compose};

use crate::args::ExportHttpArgs;
use crate::exit;
use crate::output;

/// The exit code for a plugin that could not be composed.
fn exit_code(err: &ExportError) -> u8 {
    match err {
        // The plugin is fine; the chosen target cannot run it.
        ExportError::Unsatisfiable { .. } => exit::USAGE,
        ExportError::UnreadablePlugin(_) => exit::INVALID_PLUGIN,
        ExportError::Composition(_) => exit::INTERNAL,
    }
}

/// `warden export-http`: composes a plugin into a `wasi:http` app for the
/// chosen target.
pub async fn export_http(args: ExportHttpArgs) -> anyhow::Result<ExitCode> {
    let name = warden::Source::name_of(&args.plugin);
    let mut sandbox = Sandbox::default();
    // The same trust policy as `warden run` and `warden compile`: exporting
    // is a way of deploying the plugin.
    sandbox.trust = args.trust.keys.command_line_trust()?;
    args.trust.apply(&mut sandbox.trust)?;

    let source = match args.trust.keys.source(&args.plugin).await {
        Ok(source) => source.named(name.clone()),
        Err(err) => return Ok(refuse(&err)),
    };
    let bytes = match source.bytes() {
        Ok(bytes) => bytes.to_vec(),
        Err(err) => return Ok(refuse(&err)),
    };
    // Loading checks the trust policy and that the bytes are a component of
    // Warden's plugin world; nothing runs and nothing is cached.
    let runtime = match Runtime::builder().no_compile_cache().pooling(false).build() {
        Ok(runtime) => runtime,
        Err(err) => return Ok(refuse(&err)),
    };
    let plugin = match runtime.load(source, sandbox.clone()).await {
        Ok(plugin) => plugin,
        Err(err) => return Ok(refuse(&err)),
    };
    output::warn_if_trust_store_damaged(&sandbox);
    // Nothing runs here, so the warning says what happens instead.
    if let Some(reason) = output::unverified_warning(plugin.info(), &sandbox) {
        eprintln!(
            "warden: warning: exporting an unverified plugin ({reason}); see `warden sign` and \
             --unsigned"
        );
    }

    let app = match compose(&bytes, args.target) {
        Ok(app) => app,
        Err(err) => {
            output::print_guest_line(&format!(
                "warden: cannot export `{name}` for {}: {err}",
                args.target.name()
            ));
            return Ok(ExitCode::from(exit_code(&err)));
        }
    };
    if let Err(err) = warden::tools::write_file_atomically(&args.output, &app.bytes) {
        output::print_error(&err);
        return Ok(ExitCode::from(exit::for_kind(err.kind())));
    }
    let target = args.target.name();
    let serve_command =
        (args.target == Target::Wasmtime).then(|| wasmtime_serve(&app, &args.output));
    if args.json {
        output::print_json(&json!({
            "plugin": name,
            "target": target,
            // Where the table of what the target provides was read off.
            "target_sources": args.target.sources(),
            "output": args.output.display().to_string(),
            "size": app.bytes.len(),
            "shims": app.shims.iter().map(|(shim, serves)| json!({ "name": shim, "serves": serves })).collect::<Vec<_>>(),
            "imports": app.imports,
            "type_only_imports": app.type_only_imports,
            "exports": app.exports,
            // The command that serves the app, for --target wasmtime.
            "serve_command": serve_command,
        }))
        .context("writing the report")?;
    } else {
        print_text(&name, target, &args.output, &app);
        if let Some(command) = serve_command {
            println!("serve it with: {command}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The `wasmtime serve` command line for the app written to `path`, with
/// the flags its imports need, quoted for a POSIX shell.
fn wasmtime_serve(app: &App, path: &Path) -> String {
    let mut words = vec!["wasmtime".to_owned(), "serve".to_owned()];
    words.extend(app.wasmtime_serve_flags().into_iter().map(str::to_owned));
    words.push(shell_quoted(&path.display().to_string()));
    words.join(" ")
}

/// `text` as one word for a POSIX shell: unchanged when it has nothing the
/// shell would interpret, else in single quotes.
fn shell_quoted(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

fn refuse(err: &Error) -> ExitCode {
    output::print_error(err);
    ExitCode::from(exit::for_kind(err.kind()))
}

fn print_text(name: &str, target: &str, path: &Path, app: &App) {
    println!(
        "{name}: exported for {target} to {} ({})",
        path.display(),
        format_bytes(app.bytes.len() as u64)
    );
    if app.shims.is_empty() {
        println!("shims: none needed");
    } else {
        println!("shims:");
        for (shim, serves) in &app.shims {
            println!("  {shim} for {}", serves.join(", "));
        }
    }
    println!("exports: {}", app.exports.join(", "));
    println!("imports:");
    for import in &app.imports {
        println!("  {import}");
    }
    for import in &app.type_only_imports {
        println!("  {import} (types only: nothing to provide)");
    }
}

#[cfg(test)]
mod tests {
    use warden_export::compose;

    use super::*;

    #[test]
    fn paths_the_shell_would_interpret_are_quoted() {
        assert_eq!(shell_quoted("out/app-1.wasm"), "out/app-1.wasm");
        assert_eq!(shell_quoted("my app.wasm"), "'my app.wasm'");
        assert_eq!(shell_quoted("it's.wasm"), "'it'\\''s.wasm'");
        assert_eq!(shell_quoted("$HOME/a.wasm"), "'$HOME/a.wasm'");
    }

    #[test]
    fn a_target_that_cannot_run_the_plugin_is_a_usage_error() {
        let err = ExportError::Unsatisfiable {
            import: "wasi:cli/stderr@0.2.0".to_owned(),
            consumer: "plugin".to_owned(),
            target: Target::Wasmtime,
        };
        assert_eq!(exit_code(&err), exit::USAGE);
    }

    #[test]
    fn what_is_not_a_component_is_an_invalid_plugin() {
        let err = compose(b"\0asm\x01\0\0\0", Target::Wasmtime).unwrap_err();
        assert_eq!(exit_code(&err), exit::INVALID_PLUGIN);
    }
}

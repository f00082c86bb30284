//! `wasi:logging` for hosts that lack it (`wasmtime serve`, Spin): each
//! record becomes one line on stderr, `LEVEL context: message`, with line
//! breaks and backslashes in the context and message escaped (`\n`, `\r`,
//! `\\`) so that a record never spans two lines. `warden export-http`
//! composes it in front of plugins that log.

wit_bindgen::generate!({
    path: "../../wit",
    inline: "
        package warden:logging-shim;

        world logging-shim {
            export wasi:logging/logging@0.1.0-draft;
        }
    ",
    world: "warden:logging-shim/logging-shim",
    generate_all,
});

use std::io::Write;

use exports::wasi::logging::logging::{Guest, Level};

struct Shim;

impl Guest for Shim {
    fn log(level: Level, context: String, message: String) {
        let mut line = String::with_capacity(12 + context.len() + message.len());
        line.push_str(match level {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        });
        line.push(' ');
        push_escaped(&mut line, &context);
        line.push_str(": ");
        push_escaped(&mut line, &message);
        line.push('\n');
        // One write per record keeps records whole; a closed stderr leaves
        // nowhere to report the failure, so the record is dropped.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// Appends `text` with `\n`, `\r` and `\` escaped.
fn push_escaped(out: &mut String, text: &str) {
    for character in text.chars() {
        match character {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            other => out.push(other),
        }
    }
}

export!(Shim);

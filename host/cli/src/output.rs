//! How results and reports are printed: one JSON object, or output bytes plus
//! a human-readable report on stderr.
//!
//! Guest-controlled text (output, captured streams, logs, denials, errors)
//! shown on a terminal has its control characters escaped
//! ([`warden::terminal`]); piped, and in JSON, it is written unchanged.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};

use base64::Engine as _;
use serde_json::{Map, Value, json};
use warden::trust::{SignatureCheck, UnsignedPolicy};
use warden::units::{format_bytes, format_duration};
use warden::{
    CapabilityUse, Captured, ComponentInfo, Error, ErrorKind, PluginError, Report, Sandbox,
};

/// Bytes as JSON: text when they are UTF-8, base64 otherwise. Returns the
/// value and its encoding (`utf-8` or `base64`).
pub fn encode_bytes(bytes: &[u8]) -> (Value, &'static str) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Value::String(text.to_owned()), "utf-8"),
        Err(_) => (
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            "base64",
        ),
    }
}

/// A failure as the command line reports it: its kind (the `status` and
/// the exit code), its message for a person, and the plugin's own error
/// when it reported one. Usually an [`Error`] as it is; the command adds
/// what it knows beyond it (the plugin's actions, say), or stands for a
/// failure before anything loaded (an unreadable input file).
pub struct Failure {
    /// The `status` and exit code.
    pub kind: ErrorKind,
    /// The message, for stderr and the `error` field.
    pub message: String,
    /// The plugin's own variant and text, for the `plugin_error` field.
    pub plugin_error: Option<PluginError>,
}

impl From<&Error> for Failure {
    fn from(error: &Error) -> Self {
        let plugin_error = match error {
            Error::Plugin(plugin_error) | Error::InitFailed(plugin_error) => {
                Some(plugin_error.clone())
            }
            _ => None,
        };
        Failure {
            kind: error.kind(),
            message: error.to_string(),
            plugin_error,
        }
    }
}

impl Failure {
    /// A failure before the command loaded anything (a manifest that does
    /// not declare the plugin, an unreadable input file): the library's
    /// kind when it is one of its errors, else `invalid-config`, and the
    /// whole chain of context as its message.
    pub fn before_loading(error: &anyhow::Error) -> Self {
        Failure {
            kind: error
                .downcast_ref::<Error>()
                .map_or(ErrorKind::InvalidConfig, Error::kind),
            message: format!("{error:#}"),
            plugin_error: None,
        }
    }

    /// The process exit code for it.
    pub fn exit_code(&self) -> std::process::ExitCode {
        std::process::ExitCode::from(crate::exit::for_kind(self.kind))
    }
}

/// The `error` field and, for errors the plugin reported from `execute` or
/// `init`, the plugin's own variant.
fn error_fields(object: &mut Map<String, Value>, failure: Option<&Failure>) {
    object.insert(
        "error".into(),
        failure.map_or(Value::Null, |failure| failure.message.clone().into()),
    );
    if let Some(plugin_error) = failure.and_then(|failure| failure.plugin_error.as_ref()) {
        let (variant, detail) = match plugin_error {
            PluginError::InvalidInput(detail) => ("invalid-input", detail),
            PluginError::UnknownAction(detail) => ("unknown-action", detail),
            PluginError::Failed(detail) => ("failed", detail),
        };
        object.insert(
            "plugin_error".into(),
            json!({ "variant": variant, "detail": detail }),
        );
    }
}

fn captured_fields(object: &mut Map<String, Value>, name: &str, captured: &Captured) {
    let (text, encoding) = encode_bytes(&captured.bytes);
    object.insert(name.into(), text);
    object.insert(format!("{name}_encoding"), encoding.into());
    object.insert(
        format!("{name}_dropped_bytes"),
        captured.dropped_bytes.into(),
    );
}

/// The JSON report of one call. `status` comes first so that it reads well.
pub fn call_json(
    plugin: &str,
    action: &str,
    result: &Result<Vec<u8>, Failure>,
    report: &Report,
) -> Value {
    let mut object = Map::new();
    let status = match result {
        Ok(_) => "ok",
        Err(failure) => failure.kind.as_str(),
    };
    object.insert("status".into(), status.into());
    object.insert("plugin".into(), plugin.into());
    object.insert("action".into(), action.into());
    let (output, encoding) = match result {
        Ok(output) => encode_bytes(output),
        Err(_) => (Value::Null, "utf-8"),
    };
    object.insert("output".into(), output);
    object.insert("output_encoding".into(), encoding.into());
    error_fields(&mut object, result.as_ref().err());
    report_fields(&mut object, report);
    Value::Object(object)
}

/// Adds a call report's fields (fuel, peak memory, duration, the guest's
/// stdout and stderr, logs and denials) to a JSON object.
pub fn report_fields(object: &mut Map<String, Value>, report: &Report) {
    object.insert("fuel_consumed".into(), report.fuel_consumed.into());
    object.insert("peak_memory_bytes".into(), report.peak_memory_bytes.into());
    object.insert(
        "duration_ms".into(),
        // Microsecond precision; more digits would only be float noise.
        json!(report.duration.as_micros() as f64 / 1e3),
    );
    captured_fields(object, "stdout", &report.stdout);
    captured_fields(object, "stderr", &report.stderr);
    let logs: Vec<Value> = report
        .logs
        .iter()
        .map(|record| {
            json!({
                "level": record.level.as_str(),
                "context": record.context,
                "message": record.message,
            })
        })
        .collect();
    object.insert("logs".into(), logs.into());
    object.insert("dropped_logs".into(), report.dropped_logs.into());
    let denials: Vec<Value> = report
        .denials
        .iter()
        .map(|denial| json!({ "capability": denial.capability, "detail": denial.detail }))
        .collect();
    object.insert("denials".into(), denials.into());
}

/// Capabilities as `warden inspect --json` lists them.
pub fn capabilities_json(capabilities: &[CapabilityUse]) -> Value {
    capabilities
        .iter()
        .map(|capability| {
            json!({
                "name": capability.name,
                "risk": capability.risk.as_str(),
                "granted": capability.granted,
                "imports": capability.imports,
                "how_to_grant": capability.how_to_grant,
            })
        })
        .collect()
}

/// Reports a failure that happened before any guest code ran.
pub fn print_error(error: &Error) {
    print_guest_line(&format!("warden: {error}"));
}

/// Reports a [`Failure`] that happened before any guest code ran.
pub fn print_failure(failure: &Failure) {
    print_guest_line(&format!("warden: {}", failure.message));
}

/// Writes one line that may quote guest text (a load error names the
/// binary's imports, say) to stderr, escaped on a terminal.
pub fn print_guest_line(line: &str) {
    let line = format!("{line}\n");
    let terminal = std::io::stderr().is_terminal();
    // Best effort: if stderr is gone there is nowhere to report that.
    let _ = std::io::stderr().write_all(&shown(line.as_bytes(), terminal));
}

/// Writes text the guest controls (its metadata, say) to stdout, escaped on
/// a terminal.
pub fn print_guest_text(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let terminal = stdout.is_terminal();
    // Best effort, like `println!` without the panic: a closed stdout has no reader.
    let _ = stdout.write_all(&shown(text.as_bytes(), terminal));
}

/// `text` as it is written to a stream: with its control characters escaped
/// when the stream is a terminal, unchanged otherwise.
pub fn shown(text: &[u8], terminal: bool) -> Cow<'_, [u8]> {
    if terminal {
        warden::terminal::escape_controls(text)
    } else {
        Cow::Borrowed(text)
    }
}

/// Prints a JSON value as one line on stdout.
pub fn print_json(value: &Value) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, value)?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}

/// Writes the plugin's output to stdout as is, adding a newline only when a
/// person is reading it on a terminal or when `end_line` asks for one (so
/// that the outputs of successive runs stay apart).
pub fn print_output(output: &[u8], end_line: bool) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let terminal = stdout.is_terminal();
    stdout.write_all(&shown(output, terminal))?;
    if (end_line || terminal) && !output.ends_with(b"\n") {
        stdout.write_all(b"\n")?;
    }
    stdout.flush()
}

/// A streaming call's output as it is written to stdout, piece by piece: as
/// [`print_output`] writes a whole output, escaped on a terminal with a
/// newline added at its end there, and unchanged otherwise.
pub struct StreamedOutput {
    terminal: bool,
    /// On a terminal, the start of a UTF-8 character the last piece ended
    /// in, held back so that it is not escaped as bytes that are not UTF-8.
    held: Vec<u8>,
    /// Whether the output so far ends with a newline.
    ends_line: bool,
}

impl StreamedOutput {
    /// Output written to stdout, which is a `terminal` or not.
    pub fn new(terminal: bool) -> Self {
        StreamedOutput {
            terminal,
            held: Vec::new(),
            ends_line: false,
        }
    }

    /// What to write for the next `piece` of output.
    pub fn piece<'a>(&mut self, piece: &'a [u8]) -> Cow<'a, [u8]> {
        if let Some(&last) = piece.last() {
            self.ends_line = last == b'\n';
        }
        if !self.terminal {
            return Cow::Borrowed(piece);
        }
        self.held.extend_from_slice(piece);
        let rest = self.held.split_off(complete_utf8_len(&self.held));
        let complete = std::mem::replace(&mut self.held, rest);
        Cow::Owned(shown(&complete, true).into_owned())
    }

    /// What to write once the output has ended: on a terminal, what was
    /// held back and a newline unless the output ended with one.
    pub fn end(self) -> Vec<u8> {
        if !self.terminal {
            return Vec::new();
        }
        let mut tail = shown(&self.held, true).into_owned();
        if !self.ends_line {
            tail.push(b'\n');
        }
        tail
    }
}

/// How much of `bytes` comes before a UTF-8 character cut short at its end
/// (all of it when none is).
fn complete_utf8_len(bytes: &[u8]) -> usize {
    // A character takes at most 4 bytes, so a cut one starts in the last 3.
    for back in 1..=bytes.len().min(3) {
        let start = bytes.len() - back;
        let needs = match bytes[start] {
            // A continuation byte: the character starts further back.
            0x80..=0xBF => continue,
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => 1,
        };
        return if needs > back { start } else { bytes.len() };
    }
    bytes.len()
}

/// What the guest wrote and logged, then the one-line report, on stderr.
pub fn print_human_report(error: Option<&Error>, report: &Report) {
    print_report_with(error.map(ToString::to_string).as_deref(), report);
}

/// [`print_human_report`] with the failure's message given: what the guest
/// wrote and logged, then the one-line report, on stderr.
pub fn print_report_with(message: Option<&str>, report: &Report) {
    let mut text = Vec::new();
    write_human_report(&mut text, message, report);
    let mut stderr = std::io::stderr().lock();
    let terminal = stderr.is_terminal();
    // Best effort: if stderr is gone there is nowhere to report that.
    let _ = stderr.write_all(&shown(&text, terminal));
}

fn write_human_report(out: &mut Vec<u8>, message: Option<&str>, report: &Report) {
    // The summary stays on one line; a backtrace follows it.
    let (headline, details) = match message {
        Some(message) => match message.split_once('\n') {
            Some((headline, details)) => (Some(headline), Some(details)),
            None => (Some(message), None),
        },
        None => (None, None),
    };
    // Writing into a `Vec` cannot fail.
    let _ = write_guest_streams(out, report)
        .and_then(|()| writeln!(out, "{}", summary_line(headline, report)))
        .and_then(|()| match details {
            Some(details) => writeln!(out, "{details}"),
            None => Ok(()),
        });
}

fn write_guest_streams(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    for (name, captured) in [("stdout", &report.stdout), ("stderr", &report.stderr)] {
        for line in String::from_utf8_lossy(&captured.bytes).lines() {
            writeln!(out, "[{name}] {line}")?;
        }
        if captured.dropped_bytes > 0 {
            writeln!(
                out,
                "[{name}] ({} more dropped)",
                format_bytes(captured.dropped_bytes)
            )?;
        }
    }
    for record in &report.logs {
        writeln!(
            out,
            "[log {} {}] {}",
            record.level, record.context, record.message
        )?;
    }
    if report.dropped_logs > 0 {
        writeln!(out, "[log] ({} more records dropped)", report.dropped_logs)?;
    }
    for denial in &report.denials {
        writeln!(out, "[denied] {denial}")?;
    }
    Ok(())
}

fn summary_line(error: Option<&str>, report: &Report) -> String {
    // Error messages start with what went wrong ("trap: …", "timed out …").
    let mut parts = vec![match error {
        Some(error) => format!("warden: {error}"),
        None => "warden: ok".to_owned(),
    }];
    parts.push(format!("in {}", format_duration(report.duration)));
    parts.push(format!(
        "peak memory {}",
        format_bytes(report.peak_memory_bytes)
    ));
    if let Some(fuel) = report.fuel_consumed {
        parts.push(format!("fuel {fuel}"));
    }
    match report.logs.len() {
        0 => {}
        1 => parts.push("1 log record".into()),
        n => parts.push(format!("{n} log records")),
    }
    parts.join(" · ")
}

/// Signatures as JSON: `[{"key_id", "trusted_as", "status"}]`.
pub fn signatures_json(signatures: &[SignatureCheck]) -> Value {
    signatures
        .iter()
        .map(|signature| {
            json!({
                "key_id": signature.key_id,
                "trusted_as": signature.trusted_as,
                "status": signature.status.as_str(),
            })
        })
        .collect()
}

/// One signature in words, e.g. `key 1a2b… (trusted as alice): valid`.
pub fn describe_signature(signature: &SignatureCheck) -> String {
    let key = signature.key_id.as_deref().unwrap_or("(anonymous)");
    match &signature.trusted_as {
        Some(name) => format!(
            "key {key} (trusted as {name}): {}",
            signature.status.as_str()
        ),
        None => format!("key {key}: {}", signature.status.as_str()),
    }
}

/// Says on stderr that a plugin was loaded without a verified signature,
/// when the policy asked to be warned, and that a trust store that cannot
/// be used was ignored (which a policy that needs it never does).
pub fn warn_if_unverified(info: &ComponentInfo, sandbox: &Sandbox) {
    warn_if_trust_store_damaged(sandbox);
    if let Some(reason) = unverified_warning(info, sandbox) {
        eprintln!(
            "warden: warning: running an unverified plugin ({reason}); see `warden sign` and --unsigned \
             (or WARDEN_UNSIGNED=allow on a development machine)"
        );
    }
}

/// Warns that the trust store could not be used, so that no key counts as
/// trusted under `sandbox`'s policy.
pub fn warn_if_trust_store_damaged(sandbox: &Sandbox) {
    if let Some(damage) = sandbox.trust.trusted.damage() {
        eprintln!(
            "warden: warning: ignoring the trust store, so no key counts as trusted: {damage}"
        );
    }
}

/// Why running the plugin deserves a warning under its trust policy: it is
/// unverified and the policy says `warn`.
pub fn unverified_warning(info: &ComponentInfo, sandbox: &Sandbox) -> Option<&'static str> {
    let unsigned = info.trust.signatures.is_empty();
    (info.trust.unverified && sandbox.trust.unsigned == UnsignedPolicy::Warn).then_some(
        if unsigned {
            "it is unsigned"
        } else {
            "no known key signed it"
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_text_is_escaped_only_for_a_terminal() {
        let text = b"\x1b[2Jred\x07\r\n";
        assert_eq!(&*shown(text, true), b"\\x1b[2Jred\\x07\\r\n");
        assert_eq!(&*shown(text, false), text, "piped: byte for byte");
    }

    #[test]
    fn streamed_output_is_shown_as_a_whole_output_would_be() {
        let text = "\x1b[2Jé ünï\n€".as_bytes();
        for cut in 0..=text.len() {
            let mut streamed = StreamedOutput::new(true);
            let mut shown_text = streamed.piece(&text[..cut]).into_owned();
            shown_text.extend_from_slice(&streamed.piece(&text[cut..]));
            shown_text.extend(streamed.end());
            assert_eq!(shown_text, "\\x1b[2Jé ünï\n€\n".as_bytes(), "cut at {cut}");
        }
        let mut piped = StreamedOutput::new(false);
        assert_eq!(&*piped.piece(b"\x1b"), b"\x1b");
        assert!(piped.end().is_empty(), "piped: byte for byte");
        let mut ended = StreamedOutput::new(true);
        let _ = ended.piece(b"line\n");
        assert!(ended.end().is_empty());
    }

    #[test]
    fn the_human_report_carries_guest_text_unchanged_until_shown() {
        let mut report = Report::default();
        report.stdout = Captured {
            bytes: b"\x1b]0;title\x07".to_vec(),
            dropped_bytes: 0,
        };
        let mut text = Vec::new();
        write_human_report(&mut text, None, &report);
        assert!(text.starts_with(b"[stdout] \x1b]0;title\x07\n"));
        let on_terminal = shown(&text, true);
        assert!(!on_terminal.contains(&0x1b) && !on_terminal.contains(&0x07));
        assert!(on_terminal.starts_with(b"[stdout] \\x1b]0;title\\x07\n"));
    }
}

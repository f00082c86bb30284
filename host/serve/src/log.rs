//! The server's structured log: every line is a `tracing` event with target
//! [`TARGET`] and an `event` field naming it (`listening`, `request`,
//! `call-failed`, `plugin-log`, `plugin-output`, `reloaded`, `draining`,
//! `stopped`, ...).
//!
//! The library installs no subscriber. [`json_lines`] is the layer that
//! writes the events as `warden serve` does, one JSON object per line on
//! stderr:
//!
//! ```json
//! {"time":1767225600.123,"event":"request","method":"POST","status":200,"plugin":"hello","error":null}
//! ```
//!
//! `time` is seconds since the Unix epoch, to the millisecond; the event's
//! fields follow in the order the event names them, and a field without a
//! value (an `Option` that is `None`) is `null`. An application that logs
//! otherwise formats the same events with its own layer.

use std::fmt::{self, Write as _};
use std::io::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The target of every event the server logs.
pub const TARGET: &str = "warden_serve";

/// A layer that writes the server's events (those with target [`TARGET`])
/// to stderr as JSON lines, and ignores every other event. Install it with
/// `tracing_subscriber::registry().with(json_lines())` (see the crate's
/// example).
pub fn json_lines<S>() -> impl Layer<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    json_lines_to(io::stderr)
}

/// [`json_lines`] written to `make_writer` instead of stderr: each line is
/// one `write_all` to a writer it makes. A line that cannot be written is
/// lost; the server goes on.
pub fn json_lines_to<S, W>(make_writer: W) -> impl Layer<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    // A per-layer filter, so that other crates' events (wasmtime's among
    // them) are never built for this layer, and other layers still see them.
    JsonLines { make_writer }.with_filter(Targets::new().with_target(TARGET, Level::TRACE))
}

/// Renders events as JSON lines.
struct JsonLines<W> {
    make_writer: W,
}

impl<S, W> Layer<S> for JsonLines<W>
where
    S: Subscriber,
    W: for<'writer> MakeWriter<'writer> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut line = log_line(&Value::Object(fields(event)));
        line.push('\n');
        let _ = self
            .make_writer
            .make_writer_for(event.metadata())
            .write_all(line.as_bytes());
    }
}

/// The line's fields: the time, then every field the event names, in order.
fn fields(event: &Event<'_>) -> Map<String, Value> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut line = Map::new();
    line.insert("time".into(), json!(now.as_millis() as f64 / 1000.0));
    // Named first, so that a field left without a value keeps its place as
    // `null`; recording a value replaces it in place.
    for field in event.metadata().fields() {
        line.insert(field.name().into(), Value::Null);
    }
    event.record(&mut JsonFields(&mut line));
    line
}

/// Records an event's values as JSON.
///
/// Text, numbers and booleans are recorded as themselves. A value recorded
/// with `%` or `?` is taken as JSON text when it parses as JSON: that is how
/// an event carries an array or an object (`plugins = %json!(names)`, with
/// `serde_json::Value`'s compact `Display`). Anything else recorded that way
/// is kept as a string; text that could look like JSON is recorded as a
/// `&str` or `String`, never with `%`.
struct JsonFields<'a>(&'a mut Map<String, Value>);

impl JsonFields<'_> {
    fn insert(&mut self, field: &Field, value: Value) {
        self.0.insert(field.name().into(), value);
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // `json!` writes a non-finite number as `null`.
        self.insert(field, json!(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, Value::from(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        self.insert(field, value);
    }
}

/// Whether a log line writes `c` as a `\u` escape although JSON lets a
/// string carry it raw: DEL, the C1 controls (U+009B is a one-character CSI
/// to a terminal, like ESC `[`) and Unicode's bidirectional formatting
/// characters (U+202E shows the rest of a line reversed), as
/// `warden::terminal` escapes them for a terminal.
fn escaped_in_log_lines(c: char) -> bool {
    matches!(c, '\u{7f}'..='\u{9f}') || warden::terminal::is_bidi_control(c)
}

/// `event` as one line of JSON in which the characters of
/// [`escaped_in_log_lines`] are written as `\u` escapes too, as JSON
/// already writes the C0 controls.
///
/// The log carries text that clients (action names) and plugins (their log
/// records and errors) choose, and it is read on terminals; the escaped line
/// parses to the same value.
fn log_line(event: &Value) -> String {
    let line = event.to_string();
    if !line.contains(escaped_in_log_lines) {
        return line;
    }
    let mut escaped = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if escaped_in_log_lines(c) {
            // Outside strings JSON has only ASCII punctuation, so every
            // such character is inside a string, where `\u` is valid.
            // Writing to a String cannot fail.
            let _ = write!(escaped, "\\u{:04x}", u32::from(c));
        } else {
            escaped.push(c);
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, PoisonError};

    use serde_json::{Value, json};
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::{TARGET, json_lines_to, log_line};

    #[test]
    fn log_lines_escape_del_c1_and_bidi_controls_and_keep_the_value() {
        let event = json!({ "message": "\u{9b}2J \u{1b}[31m \u{7f} \u{85} \u{202e}é\u{2069} \u{a0}\u{200d}" });
        let line = log_line(&event);
        // A no-break space and a zero-width joiner move nothing: kept.
        assert_eq!(
            line,
            "{\"message\":\"\\u009b2J \\u001b[31m \\u007f \\u0085 \\u202eé\\u2069 \u{a0}\u{200d}\"}"
        );
        assert_eq!(serde_json::from_str::<Value>(&line).unwrap(), event);
    }

    /// The lines the server's events become, and nothing of other targets.
    #[test]
    fn events_become_lines_with_their_fields_in_order_and_none_as_null() {
        let written = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = written.clone();
        let layer = json_lines_to(move || Writer(sink.clone()));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let missing: Option<&str> = None;
            tracing::info!(
                target: TARGET,
                event = "example",
                text = "{\"not\": \"json\"}",
                count = 3_u64,
                ratio = 0.5,
                ok = true,
                missing,
                names = %json!(["a", "b"]),
                addr = %"127.0.0.1:80",
            );
            tracing::info!(target: "elsewhere", event = "ignored");
        });
        let written = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), 1, "{written}");
        let line: Value = serde_json::from_str(lines[0]).unwrap();
        let keys: Vec<&String> = line.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "time", "event", "text", "count", "ratio", "ok", "missing", "names", "addr"
            ]
        );
        assert!(line["time"].as_f64().unwrap() > 1.7e9, "{line}");
        assert_eq!(line["event"], "example");
        assert_eq!(line["text"], "{\"not\": \"json\"}");
        assert_eq!(line["count"], 3);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["ok"], true);
        assert_eq!(line["missing"], Value::Null);
        assert_eq!(line["names"], json!(["a", "b"]));
        assert_eq!(line["addr"], "127.0.0.1:80");
    }

    /// Appends to a shared buffer.
    struct Writer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Writer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut written = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            written.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}

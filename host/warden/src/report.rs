//! What every call returns: its result and a report of what it cost and said.

use std::time::Duration;

use crate::Error;
use crate::capabilities::Denial;

/// The result of a call together with its [`Report`].
///
/// The report is there whether the call succeeded or not: the guest's stderr
/// and logs are often what explains a failure.
#[derive(Debug)]
#[must_use = "an outcome holds the call's result, which may be an error"]
pub struct Outcome<T> {
    /// What the call produced, or why it failed.
    pub result: Result<T, Error>,
    /// What the call cost and what the guest wrote along the way.
    pub report: Report,
}

impl<T> Outcome<T> {
    /// Discards the report and returns the result.
    pub fn into_result(self) -> Result<T, Error> {
        self.result
    }

    /// The outcome of a call refused before any guest code ran: it has
    /// nothing to report.
    pub(crate) fn before_guest(err: Error) -> Self {
        Outcome {
            result: Err(err),
            report: Report::default(),
        }
    }

    /// The same outcome with `f` applied to a successful result.
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        Outcome {
            result: self.result.map(f),
            report: self.report,
        }
    }
}

/// Measurements and captured output of one call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Wall-clock time of the call, including instantiation and `init` for a
    /// fresh-instance call.
    pub duration: Duration,
    /// Fuel the call consumed; `None` when the runtime meters no fuel.
    pub fuel_consumed: Option<u64>,
    /// The instance's linear-memory high-water mark at the end of the call,
    /// across all of its memories.
    pub peak_memory_bytes: u64,
    /// What the guest wrote to stdout, up to [`Limits::stdout_bytes`](crate::Limits::stdout_bytes).
    pub stdout: Captured,
    /// What the guest wrote to stderr, up to [`Limits::stderr_bytes`](crate::Limits::stderr_bytes).
    pub stderr: Captured,
    /// Records the guest logged through `wasi:logging`, up to the limits.
    pub logs: Vec<LogRecord>,
    /// Records dropped because of [`Limits::log_records`](crate::Limits::log_records)
    /// or [`Limits::log_bytes`](crate::Limits::log_bytes).
    pub dropped_logs: u64,
    /// Requests the host refused because a capability was not granted (at
    /// most 100 per call).
    pub denials: Vec<Denial>,
}

/// Bytes a guest wrote to a stream, bounded by a capture limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Captured {
    /// The first bytes written, up to the limit.
    pub bytes: Vec<u8>,
    /// How many further bytes were written and dropped.
    pub dropped_bytes: u64,
}

impl Captured {
    /// True when the guest wrote nothing.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.dropped_bytes == 0
    }
}

/// One record logged by a plugin through `wasi:logging`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// How severe the record is.
    pub level: LogLevel,
    /// The guest's grouping string (often a module or action name).
    pub context: String,
    /// The message text.
    pub message: String,
}

/// Severity of a [`LogRecord`], as defined by `wasi:logging`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Values of variables and flow of control.
    Trace,
    /// Of interest to someone debugging the plugin.
    Debug,
    /// Of interest to someone monitoring the plugin.
    Info,
    /// A hazardous situation.
    Warn,
    /// A serious error.
    Error,
    /// A fatal error.
    Critical,
}

impl LogLevel {
    /// The lowercase WIT name, e.g. `warn`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        }
    }
}

impl std::fmt::Display for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

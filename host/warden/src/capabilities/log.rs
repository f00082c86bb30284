//! The `log` capability: `wasi:logging/logging`.
//!
//! Records go into the call's [`Report`] and to `tracing`
//! (target `warden::plugin`, with the plugin's name), bounded per call by
//! [`Limits::log_records`](crate::Limits::log_records) and
//! [`Limits::log_bytes`](crate::Limits::log_bytes), and charged to the
//! instance's host-memory budget: past any of them a record is counted and
//! dropped, so a log flood costs the host nothing but the time the guest
//! spends producing it. A record too large for the bytes left is cut to fit,
//! with a note of its full length, rather than lost whole (its start, say a
//! backtrace's, is what a reader needs); with less than
//! [`MIN_CUT_MESSAGE_BYTES`] of room for its message it is dropped.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::{Capability, InstanceSetup, Risk};
use crate::bindings::wasi::logging::logging::{self, Level};
use crate::error::Error;
use crate::grants::Sandbox;
use crate::host_memory::HostMemory;
use crate::limits::Limits;
use crate::report::{LogLevel, LogRecord, Report};
use crate::state::HostState;

/// The `log` capability.
pub(crate) struct Log;

/// The least of a cut record's message worth keeping; with less room left
/// the record is dropped, as a few bytes of it say nothing.
const MIN_CUT_MESSAGE_BYTES: usize = 64;

impl Capability for Log {
    const NAME: &'static str = "log";
    const INTERFACES: &'static [&'static str] = &["wasi:logging/logging"];
    const HOW_TO_GRANT: &'static str = "always granted";
    type Shared = ();
    type State = LogCapture;

    fn risk(_: &Sandbox) -> Risk {
        Risk::Low
    }

    fn granted(_: &Sandbox) -> bool {
        true
    }

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        logging::add_to_linker::<HostState, HasSelf<LogCapture>>(linker, |state| {
            &mut state.caps.log
        })
    }

    fn prepare(_: &str, _: &Sandbox) -> Result<(), Error> {
        Ok(())
    }

    fn instantiate((): &(), setup: &mut InstanceSetup<'_>) -> LogCapture {
        LogCapture::new(
            setup.plugin_name.clone(),
            &setup.sandbox.limits,
            setup.host_memory,
        )
    }

    fn report(state: &mut LogCapture, report: &mut Report) {
        (report.logs, report.dropped_logs) = state.take();
    }
}

/// Per-instance log state: the records of the current call.
#[derive(Debug)]
pub(crate) struct LogCapture {
    plugin: Arc<str>,
    max_records: usize,
    max_bytes: usize,
    records: Vec<LogRecord>,
    bytes: usize,
    dropped: u64,
    host_memory: HostMemory,
}

impl LogCapture {
    fn new(plugin: Arc<str>, limits: &Limits, host_memory: &HostMemory) -> Self {
        LogCapture {
            plugin,
            max_records: limits.log_records,
            max_bytes: limits.log_bytes,
            records: Vec::new(),
            bytes: 0,
            dropped: 0,
            host_memory: host_memory.clone(),
        }
    }

    /// Takes the records of the call so far and how many were dropped.
    fn take(&mut self) -> (Vec<LogRecord>, u64) {
        self.host_memory
            .release_records(std::mem::take(&mut self.bytes));
        (
            std::mem::take(&mut self.records),
            std::mem::take(&mut self.dropped),
        )
    }
}

impl logging::Host for LogCapture {
    async fn log(
        &mut self,
        level: Level,
        context: String,
        message: String,
    ) -> wasmtime::Result<()> {
        let level = LogLevel::from(level);
        let room = self.max_bytes.saturating_sub(self.bytes);
        let message = match room.checked_sub(context.len()) {
            Some(message_room) if self.records.len() < self.max_records => {
                cut_to_fit(message, message_room)
            }
            _ => None,
        };
        let Some(message) = message else {
            self.dropped += 1;
            return Ok(());
        };
        let size = context.len() + message.len();
        if !self.host_memory.try_hold_record(size) {
            self.dropped += 1;
            return Ok(());
        }
        self.bytes += size;
        emit_tracing_event(&self.plugin, level, &context, &message);
        self.records.push(LogRecord {
            level,
            context,
            message,
        });
        Ok(())
    }
}

/// `message` whole if it fits in `room` bytes; else its start, cut on a
/// character boundary, with a note of its full length, in `room` bytes at
/// most; `None` when less than [`MIN_CUT_MESSAGE_BYTES`] of it would fit.
fn cut_to_fit(message: String, room: usize) -> Option<String> {
    if message.len() <= room {
        return Some(message);
    }
    let note = format!("… ({} bytes in all)", message.len());
    let mut end = room.checked_sub(note.len())?;
    if end < MIN_CUT_MESSAGE_BYTES {
        return None;
    }
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    Some(format!("{}{note}", &message[..end]))
}

impl From<Level> for LogLevel {
    fn from(level: Level) -> Self {
        match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
            Level::Critical => LogLevel::Critical,
        }
    }
}

fn emit_tracing_event(plugin: &str, level: LogLevel, context: &str, message: &str) {
    // `tracing` needs the level as a constant at each call site.
    macro_rules! event {
        ($level:expr) => {
            tracing::event!(target: "warden::plugin", $level, plugin, context, "{message}")
        };
    }
    match level {
        LogLevel::Trace => event!(tracing::Level::TRACE),
        LogLevel::Debug => event!(tracing::Level::DEBUG),
        LogLevel::Info => event!(tracing::Level::INFO),
        LogLevel::Warn => event!(tracing::Level::WARN),
        LogLevel::Error | LogLevel::Critical => event!(tracing::Level::ERROR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_that_fits_is_kept_whole() {
        assert_eq!(cut_to_fit("whole".to_owned(), 5).as_deref(), Some("whole"));
    }

    #[test]
    fn a_record_too_large_keeps_its_start_and_its_length_within_the_room() {
        // Two-byte characters, so the cut falls inside one.
        let message = "é".repeat(1000);
        let cut = cut_to_fit(message.clone(), 301).unwrap();
        assert!(cut.len() <= 301, "{}", cut.len());
        let (kept, note) = cut.split_once('…').unwrap();
        assert!(
            message.starts_with(kept) && kept.len() >= 301 - 30,
            "{kept}"
        );
        assert_eq!(note, " (2000 bytes in all)");
    }

    #[test]
    fn a_record_with_too_little_room_is_dropped() {
        let note = "… (1000 bytes in all)".len();
        assert_eq!(
            cut_to_fit("x".repeat(1000), note + MIN_CUT_MESSAGE_BYTES - 1),
            None
        );
        assert!(cut_to_fit("x".repeat(1000), note + MIN_CUT_MESSAGE_BYTES).is_some());
    }
}

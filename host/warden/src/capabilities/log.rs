//! The `log` capability: `wasi:logging/logging`.
//!
//! Records go into the call's [`Report`] and to `tracing`
//! (target `warden::plugin`, with the plugin's name), bounded per call by
//! [`Limits::log_records`](crate::Limits::log_records) and
//! [`Limits::log_bytes`](crate::Limits::log_bytes), and charged to the
//! instance's host-memory budget: past any of them a record is counted and
//! dropped, so a log flood costs the host nothing but the time the guest
//! spends producing it.

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
        let size = context.len() + message.len();
        if self.records.len() >= self.max_records
            || self.bytes + size > self.max_bytes
            || !self.host_memory.try_hold_record(size)
        {
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

//! How a failure wasmtime reports (a trap, a failed instantiation) maps onto
//! [`Error`], given what the host knew about the call.

use std::time::Duration;

use wasmtime::{Trap, WasmBacktrace};

use super::Error;
use crate::limits::{LimitRefusal, LimitedResource};

/// Frames kept from a wasm backtrace; deep recursion would otherwise make an
/// error message megabytes long.
const MAX_BACKTRACE_FRAMES: usize = 24;

/// How wasmtime words a refused instantiation (`Store::bump_resource_counts`).
const INSTANCE_LIMIT_MESSAGE: &str = "resource limit exceeded: instance count too high";
/// How wasmtime words a refused instantiation over the memory count.
const MEMORY_COUNT_LIMIT_MESSAGE: &str = "resource limit exceeded: memory count too high";
/// How wasmtime words a refused instantiation over the table count.
const TABLE_COUNT_LIMIT_MESSAGE: &str = "resource limit exceeded: table count too high";

/// What the host knew about a call when wasmtime reported a failure.
pub(crate) struct FailureContext {
    /// Growth the limiter refused during the call, if any.
    pub refusal: Option<LimitRefusal>,
    /// The call's timeout.
    pub timeout: Duration,
    /// The call's fuel budget, when fuel metering is on.
    pub fuel: Option<u64>,
    /// The plugin's core-instance limit.
    pub instances: u32,
    /// The plugin's host-resource limit.
    pub host_resources: usize,
    /// The plugin's limit on memories per instance.
    pub memories: u32,
    /// The plugin's limit on tables per instance.
    pub tables: u32,
}

impl FailureContext {
    /// Turns a failure reported by wasmtime (a trap, or a failed
    /// instantiation) into the variant a caller can act on.
    pub(crate) fn classify(self, err: wasmtime::Error) -> Error {
        // A refused growth explains whatever trap followed it: guests usually
        // abort when an allocation fails.
        if let Some(refusal) = self.refusal {
            return Error::MemoryLimit(refusal);
        }
        // A full resource table means the guest kept creating handles.
        if let Some(wasmtime::component::ResourceTableError::Full) =
            err.downcast_ref::<wasmtime::component::ResourceTableError>()
        {
            return Error::MemoryLimit(LimitRefusal {
                resource: LimitedResource::HostResources,
                requested: None,
                limit: self.host_resources as u64,
            });
        }
        // Wasmtime enforces the instance count itself and reports it only as
        // a message, from instantiation.
        let counted = [
            (
                INSTANCE_LIMIT_MESSAGE,
                LimitedResource::Instances,
                self.instances,
            ),
            (
                MEMORY_COUNT_LIMIT_MESSAGE,
                LimitedResource::Memories,
                self.memories,
            ),
            (
                TABLE_COUNT_LIMIT_MESSAGE,
                LimitedResource::Tables,
                self.tables,
            ),
        ];
        let message = root_cause_message(&err);
        for (prefix, resource, limit) in counted {
            if message.starts_with(prefix) {
                return Error::MemoryLimit(LimitRefusal {
                    resource,
                    requested: None,
                    limit: u64::from(limit),
                });
            }
        }
        let backtrace = err
            .downcast_ref::<WasmBacktrace>()
            .map(backtrace_frames)
            .unwrap_or_default();
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Error::Timeout {
                limit: self.timeout,
            },
            Some(Trap::OutOfFuel) => Error::OutOfFuel {
                limit: self.fuel.unwrap_or(u64::MAX),
            },
            Some(Trap::StackOverflow) => Error::StackOverflow { backtrace },
            Some(trap) => Error::Trap {
                message: trap_description(*trap),
                backtrace,
            },
            None => Error::Trap {
                message: root_cause_message(&err),
                backtrace,
            },
        }
    }
}

/// The trap's description without wasmtime's `wasm trap: ` prefix, which
/// would repeat the variant's own `trap: `.
fn trap_description(trap: Trap) -> String {
    let text = trap.to_string();
    match text.strip_prefix("wasm trap: ") {
        Some(description) => description.to_owned(),
        None => text,
    }
}

/// The innermost error's message: wasmtime wraps host-call failures in
/// context layers that only repeat the backtrace.
fn root_cause_message(err: &wasmtime::Error) -> String {
    err.chain()
        .last()
        .map(ToString::to_string)
        .unwrap_or_else(|| err.to_string())
}

fn backtrace_frames(backtrace: &WasmBacktrace) -> Vec<String> {
    let frames = backtrace.frames();
    let mut lines: Vec<String> = frames
        .iter()
        .take(MAX_BACKTRACE_FRAMES)
        .map(|frame| {
            let module = frame.module().name().unwrap_or("<module>");
            match frame.func_name() {
                Some(name) => format!("{module}!{:#}", rustc_demangle::demangle(name)),
                None => format!("{module}!<wasm function {}>", frame.func_index()),
            }
        })
        .collect();
    if frames.len() > MAX_BACKTRACE_FRAMES {
        lines.push(format!(
            "... {} more frames",
            frames.len() - MAX_BACKTRACE_FRAMES
        ));
    }
    lines
}

//! What every capability's per-instance state is built from: the instance's
//! options, the WASI context they configure together, and the budgets they
//! share.

use std::sync::Arc;

use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiView};

use super::denials::DenialLog;
use super::sockets::ConnectionSlots;
use crate::grants::Sandbox;
use crate::host_memory::HostMemory;

/// What happens to a program's stdout and stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stdio {
    /// Captured into the call's report, bounded.
    #[default]
    Capture,
    /// Written through to the host process's own stdout and stderr, bounded.
    /// On a host stream that is a terminal, control characters other than
    /// newline and tab are shown escaped ([`crate::terminal`]).
    Forward,
}

/// Per-instance settings that are not part of the sandbox.
#[derive(Clone, Debug, Default)]
pub(crate) struct InstanceOptions {
    /// Command-line arguments, for programs run with `wasi:cli/run`.
    pub args: Vec<String>,
    pub stdio: Stdio,
    /// Standard input, for programs; empty for plugins.
    pub stdin: bytes::Bytes,
    /// Whether the instance is a WASI preview 1 core module, which needs a
    /// preview 1 context ([`WasiContext::Preview1`]).
    pub preview1: bool,
}

/// An instance's WASI context, configured by the same grants either way.
pub(crate) enum WasiContext {
    /// A component's: its resources live in the store's own table, shared
    /// with the other capabilities.
    Component(WasiCtx),
    /// A preview 1 module's: wasmtime-wasi's preview 1 state, which keeps its
    /// descriptors in a table of its own (bounded like the store's).
    Preview1(WasiP1Ctx),
}

impl WasiContext {
    /// The WASI context inside, whichever kind of instance holds it.
    pub(crate) fn ctx(&mut self) -> &mut WasiCtx {
        match self {
            WasiContext::Component(ctx) => ctx,
            WasiContext::Preview1(preview1) => preview1.ctx().ctx,
        }
    }

    /// Builds the context the capabilities configured in `builder`, of the
    /// kind `options` asks for, and lets `install` put in what must be added
    /// to a built context (the granted directories).
    pub(crate) fn build(
        mut builder: WasiCtxBuilder,
        options: &InstanceOptions,
        host_resources: usize,
        install: impl FnOnce(&mut WasiCtx),
    ) -> Self {
        if options.preview1 {
            let mut preview1 = builder.build_p1();
            let view = preview1.ctx();
            view.table.set_max_capacity(host_resources);
            // A preview 1 context turns its preopens into descriptors at the
            // first call, so the directories are in place before that.
            install(view.ctx);
            WasiContext::Preview1(preview1)
        } else {
            let mut wasi = builder.build();
            install(&mut wasi);
            WasiContext::Component(wasi)
        }
    }
}

/// What a capability builds its state for a new instance from
/// ([`Capability::instantiate`](super::Capability::instantiate)).
pub(crate) struct InstanceSetup<'a> {
    /// The plugin's name, which its log records carry.
    pub plugin_name: &'a Arc<str>,
    /// The plugin's limits and grants.
    pub sandbox: &'a Sandbox,
    /// The instance's own settings.
    pub options: &'a InstanceOptions,
    /// The instance's host-memory budget, which records and buffers the
    /// host keeps for it are charged to.
    pub host_memory: &'a HostMemory,
    /// Where the capabilities record what they refuse.
    pub denials: &'a DenialLog,
    /// The instance's open sockets, counted against
    /// [`Limits::sockets`](crate::Limits::sockets): its `wasi:sockets`
    /// sockets and its outgoing HTTP connections share the one count.
    pub sockets: ConnectionSlots,
    /// The WASI context being configured; built once every capability has
    /// had its say.
    pub wasi: WasiCtxBuilder,
}

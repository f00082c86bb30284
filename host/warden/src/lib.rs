//! Warden runs untrusted WebAssembly plugins, written in any language that
//! speaks WIT, under real limits and exactly the capabilities their host grants.
//!
//! A plugin is a component targeting the `warden:plugin/plugin` world (see
//! `wit/plugin.wit`): it exports `init` and `execute`, and may import WASI 0.2
//! and `wasi:logging`. The host side is four types:
//!
//! - [`Runtime`]: one engine, configured once (epoch interruption, optional
//!   fuel, wasm stack size); loads plugins.
//! - [`Plugin`]: a compiled, linked component with its [`Sandbox`] (the
//!   [`Limits`] and [`Grants`] every instance runs under).
//! - [`Instance`]: a live instance that runs `execute` many times.
//! - [`Outcome`]: what a call returns, a result plus a [`Report`] (duration,
//!   fuel, peak memory, captured stdout/stderr and log records).
//!
//! ```no_run
//! # async fn example() -> Result<(), warden::Error> {
//! use std::time::Duration;
//! use warden::{Limits, Runtime, Sandbox};
//!
//! let runtime = Runtime::new()?;
//! let mut limits = Limits::default();
//! limits.timeout = Duration::from_secs(1);
//! let plugin = runtime.load_file("hello.wasm", Sandbox::with_limits(limits)).await?;
//!
//! let outcome = plugin.execute("count-vowels", b"hello world").await;
//! println!("took {:?}", outcome.report.duration);
//! let output = outcome.result?;
//! assert_eq!(output, b"3");
//! # Ok(())
//! # }
//! ```
//!
//! Every failure is an [`Error`] whose [`kind`](Error::kind) says what to do
//! about it: a timeout, running out of fuel, a memory limit, a stack overflow,
//! a trap, an invalid plugin, or the plugin's own [`PluginError`].

pub mod bindings;
mod cache;
mod call;
mod capabilities;
mod capacity;
mod deadline;
mod epoch;
mod error;
mod footprint;
mod fsutil;
mod grants;
mod host_memory;
mod instance;
mod limits;
mod load;
mod manifest;
mod metrics;
mod plugin;
mod preview1;
mod program;
mod registry;
mod report;
mod runtime;
mod source;
mod state;
pub mod terminal;
pub mod trust;
pub mod units;
mod world;

/// For operators' tools rather than for running plugins: looking inside
/// what plugins keep.
pub mod admin {
    pub use crate::capabilities::kv::KvInspector;
}

pub use capabilities::clocks::{DETERMINISTIC_TICK, DETERMINISTIC_WALL_CLOCK};
pub use capabilities::http::{HttpGrant, OriginPattern};
pub use capabilities::kv::{KvGrant, KvQuotas, KvStore};
pub use capabilities::random::{DETERMINISTIC_SEED, MAX_RANDOM_BYTES};
pub use capabilities::sockets::SocketPattern;
pub use capabilities::{CapabilityUse, Denial, HostCapability, Risk, Stdio};
pub use error::{Error, ErrorKind};
pub use fsutil::write_file_atomically;
pub use grants::{DirAccess, Grants, Preopen, Sandbox};
pub use host_memory::{MAX_RECORD_TEXT_BYTES, truncate_record_text};
pub use instance::Instance;
pub use limits::{LimitRefusal, LimitedResource, Limits};
pub use load::ComponentInfo;
pub use manifest::{
    GrantOptions, InvalidSetting, LimitOptions, Manifest, PluginEntry, ServeSettings,
};
pub use metrics::{HistogramSnapshot, MetricsSnapshot};
pub use plugin::{GUEST_INTERFACE, Plugin};
pub use program::{Program, RUN_INTERFACE};
pub use registry::{ManifestLoad, RegisteredPlugin, Registry, Reload, Shutdown, Watch};
pub use report::{Captured, LogLevel, LogRecord, Outcome, Report};
pub use runtime::{Runtime, RuntimeBuilder};
pub use source::{Source, signature_path};
pub use state::HostState;
pub use trust::TrustPolicy;
pub use world::{CallFuture, World, WorldPlugin};

/// What a plugin says about itself, returned by its `init`.
pub use bindings::warden::plugin::types::Metadata;
/// A failure the plugin reports itself (`plugin-error` in the WIT).
pub use bindings::warden::plugin::types::PluginError;

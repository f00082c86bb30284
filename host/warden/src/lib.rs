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
//!
//! # Map of the crate
//!
//! - **Running plugins**: [`Runtime`] and [`RuntimeBuilder`] (`runtime.rs`);
//!   [`Source`] (a plugin's bytes, name and signatures); [`Plugin`] with
//!   [`GUEST_INTERFACE`], [`Instance`], [`Metadata`]; [`Program`] with
//!   [`RUN_INTERFACE`] for plain WASI programs, and [`Stdio`]; [`World`],
//!   [`WorldPlugin`], [`CallFuture`], [`HostCapability`] and [`HostState`]
//!   for components of an application's own world. Loading is the pipeline
//!   in `load/` (read, verify, compile or take from the cache, check the
//!   world, link, admit), which describes the code as a [`ComponentInfo`];
//!   every call goes through the one driver in `call.rs`.
//! - **What a plugin may do**: [`Sandbox`] = [`Limits`] + [`Grants`] + a
//!   [`TrustPolicy`]. Grants name [`Preopen`] directories with their
//!   [`DirAccess`], [`HttpGrant`] with [`OriginPattern`]s, [`SocketPattern`]s
//!   and a [`KvGrant`] (a [`KvStore`] under [`KvQuotas`]); each capability is
//!   a module under `capabilities/`, registered in one list. The sandbox spec
//!   that manifests and command lines share is [`LimitOptions`] and
//!   [`GrantOptions`] (an unsupported value is an [`InvalidSetting`]);
//!   constants: [`DETERMINISTIC_SEED`], [`DETERMINISTIC_TICK`],
//!   [`DETERMINISTIC_WALL_CLOCK`], [`MAX_RANDOM_BYTES`],
//!   [`MAX_RECORD_TEXT_BYTES`] (with [`truncate_record_text`]).
//! - **What a call returns**: [`Outcome`] = a result + a [`Report`], with
//!   [`Captured`] output, [`LogRecord`]s at a [`LogLevel`], [`Denial`]s and
//!   the [`CapabilityUse`] of each import at its [`Risk`]; failures are an
//!   [`Error`] of an [`ErrorKind`], a [`PluginError`], or a [`LimitRefusal`]
//!   of a [`LimitedResource`]. Per-plugin counters: [`MetricsSnapshot`] and
//!   [`HistogramSnapshot`].
//! - **Many plugins**: [`Registry`] with [`RegisteredPlugin`], [`Reload`],
//!   [`Watch`], [`ManifestLoad`] and [`Shutdown`]; the manifest file is a
//!   [`Manifest`] of [`PluginEntry`]s and [`ServeSettings`].
//! - **Modules**: [`trust`] (keys, the trust store, signature checks),
//!   [`bindings`] (the generated bindings of Warden's world), [`units`]
//!   (durations and sizes as manifests and flags write them), [`terminal`]
//!   (showing guest text safely), [`tools`] (for operators' tools).

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
mod guest;
mod host_memory;
mod instance;
mod limits;
mod load;
mod manifest;
mod metadata;
mod metrics;
mod plugin;
mod preview1;
mod program;
mod registry;
mod report;
mod runtime;
mod source;
mod state;
mod streaming;
pub mod terminal;
pub mod trust;
pub mod units;
mod world;

/// For command-line tools and operators built on Warden rather than for
/// running plugins: looking inside what plugins keep and what the compile
/// cache holds, and writing files the way Warden writes its own.
pub mod tools {
    pub use crate::cache::CacheEntry;
    pub use crate::capabilities::kv::KvInspector;
    pub use crate::fsutil::write_file_atomically;
}

pub use capabilities::clocks::{DETERMINISTIC_TICK, DETERMINISTIC_WALL_CLOCK};
pub use capabilities::http::{HttpGrant, OriginPattern};
pub use capabilities::kv::{KvGrant, KvQuotas, KvStore};
pub use capabilities::random::{DETERMINISTIC_SEED, MAX_RANDOM_BYTES};
pub use capabilities::sockets::SocketPattern;
pub use capabilities::{CapabilityUse, Denial, HostCapability, Risk, Stdio};
pub use error::{Error, ErrorKind, unknown_action_message};
pub use grants::{DirAccess, Grants, Preopen, Sandbox};
pub use guest::WorldVersion;
pub use host_memory::{MAX_RECORD_TEXT_BYTES, truncate_record_text};
pub use instance::{Instance, SHUTDOWN_TIMEOUT};
pub use limits::{LimitRefusal, LimitedResource, Limits};
pub use load::ComponentInfo;
pub use manifest::{
    GrantOptions, InvalidSetting, LimitOptions, Manifest, PluginEntry, ServeSettings,
};
pub use metadata::{ActionDetails, Metadata};
pub use metrics::{HistogramSnapshot, MetricsSnapshot};
pub use plugin::{GUEST_INTERFACE, Plugin};
pub use program::{Program, RUN_INTERFACE};
pub use registry::{ManifestLoad, RegisteredPlugin, Registry, Reload, Shutdown, Watch};
pub use report::{Captured, LogLevel, LogRecord, Outcome, Report};
pub use runtime::{Runtime, RuntimeBuilder};
pub use source::Source;
pub use state::HostState;
pub use streaming::{OutputStream, STREAM_BUFFER_BYTES, StreamOutcome, Streamed};
pub use trust::TrustPolicy;
pub use world::{CallFuture, World, WorldPlugin};

/// A failure the plugin reports itself (`plugin-error` in the WIT).
pub use bindings::warden::plugin::types::PluginError;

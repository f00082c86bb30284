//! An HTTP server for the plugins of a [`Registry`](warden::Registry):
//! routing, admission, connection bounds, `/metrics`, structured logs and a
//! graceful drain, as a stateless service that can run as many replicas as
//! the load needs. The `warden serve` command is one user; an application
//! embeds it the same way:
//!
//! ```no_run
//! use tokio::net::TcpListener;
//! use tracing_subscriber::layer::SubscriberExt as _;
//! use warden::{Registry, Runtime};
//! use warden_serve::{Server, ServerConfig};
//!
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//! // The server logs through `tracing`; this writes its JSON lines to stderr.
//! let log = tracing_subscriber::registry().with(warden_serve::log::json_lines());
//! tracing::subscriber::set_global_default(log)?;
//!
//! let registry = Registry::new(Runtime::new()?);
//! let loaded = registry.load_manifest("warden.toml").await?;
//! assert!(loaded.failed.is_empty(), "{:?}", loaded.failed);
//!
//! let listener = TcpListener::bind("127.0.0.1:8080").await?;
//! let shutdown = async {
//!     let _ = tokio::signal::ctrl_c().await;
//!     "SIGINT"
//! };
//! let stopped = Server::new(registry, ServerConfig::default())
//!     .run(listener, shutdown)
//!     .await?;
//! println!("drained: {}, calls cancelled: {}", stopped.drained, stopped.cancelled);
//! # Ok(())
//! # }
//! ```
//!
//! Each plugin the registry holds (now, and after its reloads) answers under
//! `/plugins/<name>`, with its own limits, grants and trust policy:
//! `POST /plugins/<name>/<action>` runs the action on the request's body and
//! answers with its output, `GET /plugins/<name>` with its metadata; a
//! plugin's errors are `400`, `404` or `500` and the host's (limits, traps)
//! `500`, each as `{"error": kind, "message": text}`. Beside them:
//! `/healthz`, `/readyz`, `/metrics` (Prometheus text, version 0.0.4) and
//! `/plugins` (what is loaded). The server holds no state of its own:
//! plugin state lives in the kv capability's store, which replicas can share
//! (a Redis server).
//!
//! Admission is bounded: at most [`ServerConfig::max_concurrent`] calls run
//! and [`ServerConfig::max_queue`] wait; anything beyond is answered 503
//! with `Retry-After` at once. A request's body is read (within the
//! plugin's input limit and [`ServerConfig::request_timeout`]) before it
//! asks for admission, so slow clients hold no call slot.
//!
//! A plugin of world 0.2 that exports `warden:plugin/streaming` is
//! streamed instead: its request body flows into
//! [`Registry::execute_stream`](warden::Registry::execute_stream) as it arrives
//! (bounded by the plugin's `max_stream_input_bytes`, never held whole, and
//! outside the body memory) and its output flows back chunked as the plugin
//! writes it. The status line waits for the first output byte, so a call
//! that fails before it gets its usual status; one that fails after it ends
//! the response without its last chunk, or with `warden-error` and
//! `warden-message` trailers when the request said `TE: trailers`.
//!
//! Connections are bounded too (see [`ConnectionLimits`]): at most
//! [`ServerConfig::max_connections`] are open (more wait in the kernel's
//! listen backlog), each is closed after its idle timeout without a request
//! in progress or its header-read timeout into a request head that does not
//! complete, and a response the client stops reading is dropped after the
//! write timeout without progress. The request bodies held at once, over
//! all connections, are bounded by [`ServerConfig::max_body_memory`]: a body
//! that would go past it is answered 503 at once. When the shutdown future
//! given to [`Server::run`] resolves, the server stops accepting
//! connections and drains for at most [`ServerConfig::shutdown_grace`]:
//! connections already open are still served, `/readyz` answering 503 and
//! every reply carrying `Connection: close`, until no request is in
//! progress; then the connections close, and calls still running when the
//! grace period ends are cancelled.
//!
//! Every event (a request, a failed call, a reload, the drain) is a
//! `tracing` event; the [`log`] module renders them as JSON lines.

mod connection;
pub mod log;
mod prometheus;
mod routes;
mod server;

use std::time::Duration;

use tokio::sync::Semaphore;
use warden::ServeSettings;

pub use self::connection::ConnectionLimits;
pub use self::server::Server;

/// How a [`Server`] admits and bounds work. [`ServerConfig::default`] gives
/// the defaults stated on each field.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Calls that run at once. Default 64.
    pub max_concurrent: usize,
    /// Calls that may wait for one of the `max_concurrent` slots; beyond
    /// them a request is answered 503 at once. Default (`None`):
    /// `max_concurrent`.
    pub max_queue: Option<usize>,
    /// Client connections open at once; more wait in the kernel's listen
    /// backlog. Default 512 ([`ServeSettings::DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: u32,
    /// Bytes of request bodies held at once over all connections (streamed
    /// bodies are never held, so they take none). Default 1 GiB ([`ServeSettings::DEFAULT_MAX_BODY_MEMORY`]).
    pub max_body_memory: u64,
    /// How long a request may take, from its head to its reply (longer than
    /// zero); for a streamed call, how long it may wait for a call slot (the
    /// plugin's own timeouts bound the stream). Default 30 s.
    pub request_timeout: Duration,
    /// How long in-flight requests may finish after shutdown starts. Default
    /// 10 s; zero cancels them at once.
    pub shutdown_grace: Duration,
    /// How often to look for changed plugin files and manifests (longer
    /// than zero); `None` does not watch. Default 1 s.
    pub watch_interval: Option<Duration>,
    /// Whether to log one `request` event per request. Default on.
    pub access_log: bool,
    /// Time limits on each connection (see [`ConnectionLimits`]). Default:
    /// 10 s to read a request head, 60 s idle, 30 s writing without progress
    /// (the `DEFAULT_*_TIMEOUT`s of [`ServeSettings`]).
    pub connection_limits: ConnectionLimits,
}

impl ServerConfig {
    /// [`ServerConfig::max_queue`], or its default.
    fn queue_places(&self) -> usize {
        self.max_queue.unwrap_or(self.max_concurrent)
    }

    /// Refuses settings a server cannot run under: a bound of zero would
    /// refuse or close everything, and admission counts running plus queued
    /// calls in one semaphore.
    fn check(&self) -> std::io::Result<()> {
        let invalid = |message: String| {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                message,
            ))
        };
        let admitted = self.max_concurrent.checked_add(self.queue_places());
        if self.max_concurrent == 0 {
            return invalid("max_concurrent must be at least 1".to_owned());
        }
        if admitted.is_none_or(|admitted| admitted > Semaphore::MAX_PERMITS) {
            return invalid(format!(
                "max_concurrent plus max_queue must be at most {}",
                Semaphore::MAX_PERMITS
            ));
        }
        if self.max_connections == 0 {
            return invalid("max_connections must be at least 1".to_owned());
        }
        if self.max_body_memory == 0 {
            return invalid("max_body_memory must be at least 1 byte".to_owned());
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout must be longer than zero".to_owned());
        }
        if self
            .watch_interval
            .is_some_and(|interval| interval.is_zero())
        {
            return invalid(
                "watch_interval must be longer than zero; None does not watch".to_owned(),
            );
        }
        let limits = &self.connection_limits;
        for (name, limit) in [
            ("header_read", limits.header_read),
            ("idle", limits.idle),
            ("write", limits.write),
        ] {
            if limit.is_zero() {
                return invalid(format!("connection_limits.{name} must be longer than zero"));
            }
        }
        Ok(())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_concurrent: 64,
            max_queue: None,
            max_connections: ServeSettings::DEFAULT_MAX_CONNECTIONS,
            max_body_memory: ServeSettings::DEFAULT_MAX_BODY_MEMORY,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            watch_interval: Some(Duration::from_secs(1)),
            access_log: true,
            connection_limits: ConnectionLimits {
                header_read: ServeSettings::DEFAULT_HEADER_READ_TIMEOUT,
                idle: ServeSettings::DEFAULT_IDLE_TIMEOUT,
                write: ServeSettings::DEFAULT_WRITE_TIMEOUT,
            },
        }
    }
}

/// How a server stopped.
#[derive(Clone, Copy, Debug)]
pub struct Stopped {
    /// Whether every request in flight finished within the grace period.
    pub drained: bool,
    /// Calls cancelled once the grace period was over.
    pub cancelled: usize,
}

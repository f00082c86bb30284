//! The HTTP server behind `warden serve`: every plugin of a [`Registry`]
//! over HTTP, as a stateless service that can run as many replicas as the
//! load needs. An application embeds it with
//! `Server::new(registry, config).run(listener, shutdown)`.
//!
//! Each plugin answers under `/plugins/<name>/` with the same mapping as the
//! apps `warden export-http` builds (see the `routes` module), with its own limits,
//! grants and trust policy from the manifest. Beside them: `/healthz`,
//! `/readyz`, `/metrics` (Prometheus text) and `/plugins` (what is loaded).
//!
//! The server holds no state of its own: plugin state lives in the kv
//! capability's store, which replicas can share (a Redis server). Admission
//! is bounded: at most [`ServerConfig::max_concurrent`] calls run and
//! [`ServerConfig::max_queue`] wait; anything beyond is answered 503 with
//! `Retry-After` at once. A request's body is read (within the plugin's
//! input limit and the request timeout) before it asks for admission, so
//! slow clients hold no call slot.
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
//! connections, reports not ready, lets requests in flight finish for
//! [`ServerConfig::shutdown_grace`], then cancels what is left.

mod connection;
mod prometheus;
mod routes;

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use warden::{Registry, Reload, ServeSettings};

pub use self::connection::ConnectionLimits;
use self::connection::{GuardedStream, TrackedBody, Tracker};
use self::prometheus::HttpStats;

/// How long a failed `accept` (out of file descriptors, say) waits before the
/// next try, so that the loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long cancelled requests get to send their 503 once the grace period
/// is over.
const CANCELLED_FLUSH: Duration = Duration::from_secs(1);

/// Everything a request handler needs, shared by all connections.
pub(crate) struct Shared {
    registry: Registry,
    /// Calls admitted: running plus waiting. Never waited on; when none is
    /// free the request is refused.
    admission: Semaphore,
    /// Calls running at once.
    running: Semaphore,
    /// Bytes of request bodies held, over all connections: one permit per
    /// byte. Never waited on; a body that finds too few is refused.
    body_memory: Semaphore,
    /// The permits `body_memory` started with.
    body_memory_limit: usize,
    /// Set on shutdown: `/readyz` fails so load balancers stop sending.
    draining: AtomicBool,
    stats: HttpStats,
    request_timeout: Duration,
    access_log: bool,
}

/// How a [`Server`] admits and bounds work. [`ServerConfig::default`] gives
/// the defaults `warden serve` documents.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Calls that run at once. Default 64.
    pub max_concurrent: usize,
    /// Calls that may wait for one of the `max_concurrent` slots; beyond
    /// them a request is answered 503 at once. Default: `max_concurrent`.
    pub max_queue: Option<usize>,
    /// Client connections open at once; more wait in the kernel's listen
    /// backlog. Default [`ServeSettings::DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: u32,
    /// Bytes of request bodies held at once over all connections. Default
    /// [`ServeSettings::DEFAULT_MAX_BODY_MEMORY`].
    pub max_body_memory: u64,
    /// How long a request may take, from its head to its reply. Default 30 s.
    pub request_timeout: Duration,
    /// How long in-flight requests may finish after shutdown starts. Default 10 s.
    pub shutdown_grace: Duration,
    /// How often to look for changed plugin files and manifests; `None`
    /// does not watch. Default 1 s.
    pub watch_interval: Option<Duration>,
    /// Whether to log one line per request. Default on.
    pub access_log: bool,
    /// Time limits on each connection (see [`ConnectionLimits`]).
    pub connection_limits: ConnectionLimits,
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

/// An HTTP server for the plugins of a [`Registry`]: routing, admission,
/// connection bounds, `/metrics`, structured logs and a graceful drain.
pub struct Server {
    registry: Registry,
    config: ServerConfig,
}

impl Server {
    /// A server for every plugin `registry` holds, now and after reloads.
    pub fn new(registry: Registry, config: ServerConfig) -> Self {
        Server { registry, config }
    }

    /// Serves connections from `listener` until `shutdown` resolves (with a
    /// reason for the log, such as a signal's name), then drains: stops
    /// accepting, reports not ready, lets requests in flight finish for
    /// [`ServerConfig::shutdown_grace`] and cancels what is left.
    ///
    /// # Errors
    ///
    /// If the listener's address cannot be read.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = &'static str>,
    ) -> std::io::Result<Stopped> {
        let Server { registry, config } = self;
        let addr = listener.local_addr()?;
        let limits = config.connection_limits;
        let max_concurrent = config.max_concurrent;
        let max_queue = config.max_queue.unwrap_or(max_concurrent);
        let body_memory_limit = usize::try_from(config.max_body_memory)
            .map_or(Semaphore::MAX_PERMITS, |bytes| {
                bytes.min(Semaphore::MAX_PERMITS)
            });
        let server = Arc::new(Shared {
            registry: registry.clone(),
            admission: Semaphore::new(max_concurrent + max_queue),
            running: Semaphore::new(max_concurrent),
            body_memory: Semaphore::new(body_memory_limit),
            body_memory_limit,
            draining: AtomicBool::new(false),
            stats: HttpStats::default(),
            request_timeout: config.request_timeout,
            access_log: config.access_log,
        });
        let plugins: Vec<String> = registry
            .list()
            .into_iter()
            .map(|plugin| plugin.name)
            .collect();
        log_event(json!({
            "event": "listening",
            "addr": addr.to_string(),
            "plugins": plugins,
            "max_concurrent": max_concurrent,
            "max_queue": max_queue,
            "max_connections": config.max_connections,
            "max_body_memory": config.max_body_memory,
            "header_read_timeout_ms": limits.header_read.as_millis() as u64,
            "idle_timeout_ms": limits.idle.as_millis() as u64,
            "write_timeout_ms": limits.write.as_millis() as u64,
        }));

        let watcher = config
            .watch_interval
            .map(|interval| tokio::spawn(log_reloads(registry.clone(), interval)));
        let graceful = GracefulShutdown::new();
        // A connection is accepted only with one of these; without one, new
        // connections wait in the kernel's listen backlog.
        let connection_slots = Arc::new(Semaphore::new(config.max_connections as usize));
        let mut shutdown = std::pin::pin!(shutdown);
        let signal = loop {
            let slot = tokio::select! {
                // The semaphore is never closed, so this branch always matches.
                Ok(slot) = connection_slots.clone().acquire_owned() => slot,
                signal = &mut shutdown => break signal,
            };
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let connection = serve_connection(&server, &graceful, stream, peer, limits);
                        tokio::spawn(async move {
                            connection.await;
                            drop(slot);
                        });
                    }
                    Err(err) => {
                        log_event(json!({ "event": "accept-failed", "error": err.to_string() }));
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
                signal = &mut shutdown => break signal,
            }
        };
        log_event(
            json!({ "event": "draining", "signal": signal, "grace_ms": config.shutdown_grace.as_millis() as u64 }),
        );
        drop(listener);
        server.draining.store(true, Ordering::Release);
        if let Some(watcher) = watcher {
            watcher.abort();
        }

        let mut connections_closed = std::pin::pin!(graceful.shutdown());
        let drained = tokio::time::timeout(config.shutdown_grace, &mut connections_closed)
            .await
            .is_ok();
        // Past the grace period: cancel the calls still running, and give their
        // requests a moment to be answered 503 before returning.
        let stopped = registry.shutdown(Duration::ZERO).await;
        if !drained {
            let _ = tokio::time::timeout(CANCELLED_FLUSH, &mut connections_closed).await;
        }
        log_event(json!({
            "event": "stopped",
            "drained": drained,
            "cancelled": stopped.cancelled,
        }));
        Ok(Stopped {
            drained,
            cancelled: stopped.cancelled,
        })
    }
}

/// Serves one client connection until it closes, a bound in `limits` runs
/// out (the connection is then dropped, and with it any response it held),
/// or the graceful shutdown closes it.
fn serve_connection(
    server: &Arc<Shared>,
    graceful: &GracefulShutdown,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    limits: ConnectionLimits,
) -> impl Future<Output = ()> + Send + 'static {
    let tracker = Tracker::new();
    let service = {
        let server = server.clone();
        let tracker = tracker.clone();
        service_fn(move |request| {
            // The request is in progress until hyper drops its response.
            let request_in_progress = tracker.request_started();
            let reply = routes::handle(server.clone(), peer, request);
            async move {
                let reply = reply.await?;
                Ok::<_, Infallible>(reply.map(|body| TrackedBody::new(body, request_in_progress)))
            }
        })
    };
    let stream = GuardedStream::new(stream, tracker.clone(), limits.write);
    let connection =
        graceful.watch(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
    let server = server.clone();
    async move {
        server
            .stats
            .connections_open
            .fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            // A client that hangs up mid-request is its own business.
            _ = connection => {
                if tracker.write_timed_out() {
                    server.stats.count_closed("write-timeout");
                }
            }
            expired = tracker.expired(limits) => server.stats.count_closed(expired.as_str()),
        }
        server
            .stats
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Logs every reload the registry's watch makes.
async fn log_reloads(registry: Registry, interval: Duration) {
    let mut reloads = registry.watch(interval);
    while let Some(reload) = reloads.next().await {
        let event = match reload {
            Reload::Replaced { name, from, to } => {
                json!({ "event": "reloaded", "plugin": name, "from": from, "to": to })
            }
            Reload::Failed { name, error } => json!({
                "event": "reload-failed", "plugin": name, "error": error.kind().as_str(),
                "message": error.to_string(),
            }),
            Reload::Manifest(load) => {
                for (name, refusal) in &load.withdrawn {
                    log_event(json!({
                        "event": "plugin-withdrawn", "plugin": name,
                        "error": refusal.kind().as_str(),
                        "message": format!(
                            "the version serving no longer passes the trust policy and is not served until one that does is deployed: {refusal}"
                        ),
                    }));
                }
                json!({
                    "event": "manifest-reloaded",
                    "loaded": load.loaded,
                    "removed": load.removed,
                    "withdrawn": load.withdrawn.iter().map(|(name, _)| name).collect::<Vec<_>>(),
                    "failed": load.failed.iter().map(|(name, err)| json!({
                        "plugin": name, "error": err.kind().as_str(), "message": err.to_string(),
                    })).collect::<Vec<_>>(),
                })
            }
            Reload::ManifestFailed(error) => json!({
                "event": "manifest-reload-failed", "error": error.kind().as_str(),
                "message": error.to_string(),
            }),
            _ => continue,
        };
        log_event(event);
    }
}

/// Writes one structured log line (JSON) to stderr, led by the time in
/// seconds since the Unix epoch.
pub fn log_event(event: Value) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut line = serde_json::Map::new();
    line.insert("time".into(), json!(now.as_millis() as f64 / 1000.0));
    if let Value::Object(fields) = event {
        line.extend(fields);
    }
    eprintln!("{}", log_line(&Value::Object(line)));
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
    use serde_json::{Value, json};

    use super::log_line;

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
}

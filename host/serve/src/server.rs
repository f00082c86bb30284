//! [`Server`]: accepting connections within their bounds, serving each
//! with hyper, logging reloads, and the drain.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::header::{CONNECTION, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use warden::{Registry, Reload};

use crate::connection::{ConnectionLimits, GuardedStream, TrackedBody, Tracker};
use crate::log::TARGET;
use crate::prometheus::HttpStats;
use crate::routes;
use crate::{ServerConfig, Stopped};

/// How long a failed `accept` (out of file descriptors, say) waits before the
/// next try, so that the loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long cancelled requests get to send their 503 once the grace period
/// is over.
const CANCELLED_FLUSH: Duration = Duration::from_secs(1);

/// Everything a request handler needs, shared by all connections.
pub(crate) struct Shared {
    pub(crate) registry: Registry,
    /// Calls admitted: running plus waiting. Never waited on; when none is
    /// free the request is refused.
    pub(crate) admission: Arc<Semaphore>,
    /// Calls running at once.
    pub(crate) running: Arc<Semaphore>,
    /// Bytes of request bodies held, over all connections: one permit per
    /// byte. Never waited on; a body that finds too few is refused.
    pub(crate) body_memory: Semaphore,
    /// The permits `body_memory` started with.
    pub(crate) body_memory_limit: usize,
    /// Set on shutdown: `/readyz` fails so load balancers stop sending,
    /// and every reply asks its client to close the connection.
    pub(crate) draining: AtomicBool,
    /// Requests in progress over all connections, from a request's head
    /// until hyper drops its response: the drain waits for none.
    pub(crate) requests_in_progress: Arc<watch::Sender<usize>>,
    pub(crate) stats: HttpStats,
    pub(crate) request_timeout: Duration,
    pub(crate) access_log: bool,
}

impl Shared {
    fn new(registry: Registry, config: &ServerConfig) -> Self {
        let body_memory_limit = usize::try_from(config.max_body_memory)
            .map_or(Semaphore::MAX_PERMITS, |bytes| {
                bytes.min(Semaphore::MAX_PERMITS)
            });
        Shared {
            registry,
            admission: Arc::new(Semaphore::new(
                config.max_concurrent + config.queue_places(),
            )),
            running: Arc::new(Semaphore::new(config.max_concurrent)),
            body_memory: Semaphore::new(body_memory_limit),
            body_memory_limit,
            draining: AtomicBool::new(false),
            requests_in_progress: Arc::new(watch::Sender::new(0)),
            stats: HttpStats::default(),
            request_timeout: config.request_timeout,
            access_log: config.access_log,
        }
    }
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
    /// accepting, serves the connections already open (`/readyz` answering
    /// 503, every reply asking the client to close) until no request is in
    /// progress, closes them, and cancels what is still running when
    /// [`ServerConfig::shutdown_grace`] ends. The registry is shut down with
    /// it ([`Registry::shutdown`]): it accepts no calls afterwards.
    ///
    /// # Errors
    ///
    /// An [`InvalidInput`](std::io::ErrorKind::InvalidInput) error naming
    /// the setting when the [`ServerConfig`] has a bound of zero (calls,
    /// connections, body memory, the request timeout, the watch interval, a
    /// connection time limit) or more admitted calls than a semaphore holds;
    /// otherwise, if the listener's address cannot be read.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = &'static str>,
    ) -> std::io::Result<Stopped> {
        let Server { registry, config } = self;
        config.check()?;
        let addr = listener.local_addr()?;
        let server = Arc::new(Shared::new(registry.clone(), &config));
        log_listening(&registry, addr, &config);

        let watcher = config
            .watch_interval
            .map(|interval| tokio::spawn(log_reloads(registry.clone(), interval)));
        let graceful = GracefulShutdown::new();
        let signal = accept(&server, &graceful, &listener, &config, shutdown).await;
        drop(listener);
        server.draining.store(true, Ordering::Release);
        // Logged once `/readyz` answers 503, so that the line means it does.
        tracing::info!(
            target: TARGET,
            event = "draining",
            signal,
            grace_ms = config.shutdown_grace.as_millis() as u64,
        );
        if let Some(watcher) = watcher {
            watcher.abort();
        }

        // The connections already open are served on until no request is
        // in progress on any of them: a client that keeps its connection
        // (a load balancer's pool, a readiness probe) is answered meanwhile,
        // `/readyz` with 503, and every reply asks it to close. Then each
        // connection closes once its response is written.
        let grace_ends = tokio::time::Instant::now() + config.shutdown_grace;
        let mut requests_in_progress = server.requests_in_progress.subscribe();
        let quiet = tokio::time::timeout_at(
            grace_ends,
            requests_in_progress.wait_for(|requests| *requests == 0),
        )
        .await
        .is_ok();
        let mut connections_closed = std::pin::pin!(graceful.shutdown());
        let drained = quiet
            && tokio::time::timeout_at(grace_ends, &mut connections_closed)
                .await
                .is_ok();
        // Past the grace period: cancel the calls still running, and give their
        // requests a moment to be answered 503 before returning.
        let stopped = registry.shutdown(Duration::ZERO).await;
        if !drained {
            let _ = tokio::time::timeout(CANCELLED_FLUSH, &mut connections_closed).await;
        }
        tracing::info!(
            target: TARGET,
            event = "stopped",
            drained,
            cancelled = stopped.cancelled,
        );
        Ok(Stopped {
            drained,
            cancelled: stopped.cancelled,
        })
    }
}

/// Logs the address, the plugins and the bounds the server starts with.
fn log_listening(registry: &Registry, addr: SocketAddr, config: &ServerConfig) {
    let plugins: Vec<String> = registry
        .list()
        .into_iter()
        .map(|plugin| plugin.name)
        .collect();
    let limits = config.connection_limits;
    tracing::info!(
        target: TARGET,
        event = "listening",
        addr = addr.to_string(),
        plugins = %json!(plugins),
        max_concurrent = config.max_concurrent,
        max_queue = config.queue_places(),
        max_connections = config.max_connections,
        max_body_memory = config.max_body_memory,
        header_read_timeout_ms = limits.header_read.as_millis() as u64,
        idle_timeout_ms = limits.idle.as_millis() as u64,
        write_timeout_ms = limits.write.as_millis() as u64,
    );
}

/// Accepts connections, at most [`ServerConfig::max_connections`] open at
/// once, until `shutdown` resolves; its reason.
async fn accept(
    server: &Arc<Shared>,
    graceful: &GracefulShutdown,
    listener: &TcpListener,
    config: &ServerConfig,
    shutdown: impl Future<Output = &'static str>,
) -> &'static str {
    // A connection is accepted only with one of these; without one, new
    // connections wait in the kernel's listen backlog.
    let connection_slots = Arc::new(Semaphore::new(config.max_connections as usize));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            // The semaphore is never closed, so this branch always matches.
            Ok(slot) = connection_slots.clone().acquire_owned() => slot,
            signal = &mut shutdown => return signal,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let connection =
                        serve_connection(server, graceful, stream, peer, config.connection_limits);
                    tokio::spawn(async move {
                        connection.await;
                        drop(slot);
                    });
                }
                Err(err) => {
                    tracing::warn!(target: TARGET, event = "accept-failed", error = err.to_string());
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            signal = &mut shutdown => return signal,
        }
    }
}

/// Serves one client connection until it closes, a bound in `limits` runs
/// out (the connection is then dropped, and with it any response it held),
/// or the graceful shutdown closes it.
fn serve_connection(
    server: &Arc<Shared>,
    graceful: &GracefulShutdown,
    stream: TcpStream,
    peer: SocketAddr,
    limits: ConnectionLimits,
) -> impl Future<Output = ()> + Send + 'static {
    let tracker = Tracker::new(server.requests_in_progress.clone());
    let service = {
        let server = server.clone();
        let tracker = tracker.clone();
        service_fn(move |request| {
            // The request is in progress until hyper drops its response.
            let request_in_progress = tracker.request_started();
            let reply = routes::handle(server.clone(), peer, request);
            let server = server.clone();
            async move {
                let mut reply = reply.await?;
                // hyper closes the connection once it has written a reply
                // that says so.
                if server.draining.load(Ordering::Acquire) {
                    reply
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
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
        match reload {
            Reload::Replaced { name, from, to } => tracing::info!(
                target: TARGET,
                event = "reloaded",
                plugin = name,
                from,
                to,
            ),
            Reload::Failed { name, error } => tracing::warn!(
                target: TARGET,
                event = "reload-failed",
                plugin = name,
                error = error.kind().as_str(),
                message = error.to_string(),
            ),
            Reload::Manifest(load) => {
                for (name, refusal) in &load.withdrawn {
                    tracing::warn!(
                        target: TARGET,
                        event = "plugin-withdrawn",
                        plugin = name.as_str(),
                        error = refusal.kind().as_str(),
                        message = format!(
                            "the version serving no longer passes the trust policy and is not served until one that does is deployed: {refusal}"
                        ),
                    );
                }
                let withdrawn: Vec<&String> = load.withdrawn.iter().map(|(name, _)| name).collect();
                let failed: Vec<_> = load
                    .failed
                    .iter()
                    .map(|(name, err)| {
                        json!({ "plugin": name, "error": err.kind().as_str(), "message": err.to_string() })
                    })
                    .collect();
                tracing::info!(
                    target: TARGET,
                    event = "manifest-reloaded",
                    loaded = %json!(load.loaded),
                    removed = %json!(load.removed),
                    withdrawn = %json!(withdrawn),
                    failed = %json!(failed),
                );
            }
            Reload::ManifestFailed(error) => tracing::warn!(
                target: TARGET,
                event = "manifest-reload-failed",
                error = error.kind().as_str(),
                message = error.to_string(),
            ),
            _ => {}
        }
    }
}

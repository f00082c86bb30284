//! `warden serve`: every plugin of a manifest over HTTP, as a stateless
//! service that can run as many replicas as the load needs.
//!
//! Each plugin answers under `/plugins/<name>/` with the same mapping as the
//! apps `warden export-http` builds (see [`routes`]), with its own limits,
//! grants and trust policy from the manifest. Beside them: `/healthz`,
//! `/readyz`, `/metrics` (Prometheus text) and `/plugins` (what is loaded).
//!
//! The server holds no state of its own: plugin state lives in the kv
//! capability's store, which replicas can share (a Redis server). Admission
//! is bounded: at most `--max-concurrent` calls run and `--max-queue` wait;
//! anything beyond is answered 503 with `Retry-After` at once. A request's
//! body is read (within the plugin's input limit and the request timeout)
//! before it asks for admission, so slow clients hold no call slot.
//!
//! Connections are bounded too (see [`connection`]): at most
//! `--max-connections` are open (more wait in the kernel's listen backlog),
//! each is closed after `--idle-timeout` without a request in progress or
//! `--header-read-timeout` into a request head that does not complete, and
//! a response the client stops reading is dropped after `--write-timeout`
//! without progress. The request bodies held at once, over all
//! connections, are bounded by `--max-body-memory`: a body that would go
//! past it is answered 503 at once. SIGTERM or
//! SIGINT stops accepting connections, reports not ready, lets requests in
//! flight finish for `--shutdown-grace`, then cancels what is left.

mod connection;
mod prometheus;
mod routes;

use std::convert::Infallible;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use warden::{Manifest, Registry, Reload, ServeSettings};

use crate::args::ServeArgs;
use crate::exit;
use crate::output;

use self::connection::{ConnectionLimits, GuardedStream, TrackedBody, Tracker};
use self::prometheus::HttpStats;

/// How long a failed `accept` (out of file descriptors, say) waits before the
/// next try, so that the loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long cancelled requests get to send their 503 once the grace period
/// is over.
const CANCELLED_FLUSH: Duration = Duration::from_secs(1);

/// Everything a request handler needs, shared by all connections.
pub(crate) struct Server {
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
    /// Set on SIGTERM: `/readyz` fails so load balancers stop sending.
    draining: AtomicBool,
    stats: HttpStats,
    request_timeout: Duration,
    access_log: bool,
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let manifest = Manifest::from_file(&args.manifest)?;
    anyhow::ensure!(
        !manifest.plugins.is_empty(),
        "{} declares no plugins; add a [plugins.NAME] table",
        args.manifest.display()
    );
    let mut builder = warden::Runtime::builder();
    // Fuel metering is engine-wide: on when any plugin has a fuel limit.
    builder.fuel(
        manifest
            .plugins
            .values()
            .any(|entry| entry.sandbox.limits.fuel.is_some()),
    );
    if let Some(dir) = &args.cache_dir {
        builder.compile_cache(dir);
    }
    if let Some(key) = &args.cache_key {
        builder.compile_cache_key(key);
    }
    if args.no_cache {
        builder.no_compile_cache();
    }
    let limits = connection_limits(&args, &manifest.serve)?;
    let max_connections = args
        .max_connections
        .or(manifest.serve.max_connections)
        .unwrap_or(ServeSettings::DEFAULT_MAX_CONNECTIONS);
    anyhow::ensure!(
        max_connections > 0,
        "max_connections in [serve] of {} must be at least 1",
        args.manifest.display()
    );
    let max_body_memory = args
        .max_body_memory
        .or(manifest.serve.max_body_memory)
        .unwrap_or(ServeSettings::DEFAULT_MAX_BODY_MEMORY);
    anyhow::ensure!(
        max_body_memory > 0,
        "max_body_memory in [serve] of {} must be at least 1 byte",
        args.manifest.display()
    );
    let body_memory_limit = usize::try_from(max_body_memory)
        .map_or(Semaphore::MAX_PERMITS, |bytes| {
            bytes.min(Semaphore::MAX_PERMITS)
        });
    let registry = Registry::new(builder.build()?);

    // A replica with a plugin that does not load must not become ready.
    let loaded = registry.load_manifest(&args.manifest).await?;
    if let Some((name, err)) = loaded.failed.first() {
        for (name, err) in &loaded.failed {
            output::print_guest_line(&format!("warden: plugin `{name}` did not load: {err}"));
        }
        eprintln!(
            "warden: not serving: {} of {} plugins failed to load (first: `{name}`)",
            loaded.failed.len(),
            manifest.plugins.len()
        );
        return Ok(ExitCode::from(exit::for_kind(err.kind())));
    }
    for name in &loaded.loaded {
        if let Some(plugin) = registry.get(name)
            && let Some(reason) = output::unverified_warning(plugin.info(), plugin.sandbox())
        {
            log_event(json!({
                "event": "unverified-plugin",
                "plugin": name,
                "message": format!("serving an unverified plugin ({reason}); see `warden sign` and the manifest's [trust] table"),
            }));
        }
    }

    let listener = TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let max_concurrent = args.max_concurrent as usize;
    let max_queue = args
        .max_queue
        .map_or(max_concurrent, |queue| queue as usize);
    let server = Arc::new(Server {
        registry: registry.clone(),
        admission: Semaphore::new(max_concurrent + max_queue),
        running: Semaphore::new(max_concurrent),
        body_memory: Semaphore::new(body_memory_limit),
        body_memory_limit,
        draining: AtomicBool::new(false),
        stats: HttpStats::default(),
        request_timeout: args.request_timeout,
        access_log: !args.no_access_log,
    });
    log_event(json!({
        "event": "listening",
        "addr": addr.to_string(),
        "plugins": loaded.loaded,
        "max_concurrent": max_concurrent,
        "max_queue": max_queue,
        "max_connections": max_connections,
        "max_body_memory": max_body_memory,
        "header_read_timeout_ms": limits.header_read.as_millis() as u64,
        "idle_timeout_ms": limits.idle.as_millis() as u64,
        "write_timeout_ms": limits.write.as_millis() as u64,
    }));

    let watcher =
        (!args.no_watch).then(|| tokio::spawn(log_reloads(registry.clone(), args.watch_interval)));
    let graceful = GracefulShutdown::new();
    // A connection is accepted only with one of these; without one, new
    // connections wait in the kernel's listen backlog.
    let connection_slots = Arc::new(Semaphore::new(max_connections as usize));
    let mut terminated = std::pin::pin!(terminated());
    let signal = loop {
        let slot = tokio::select! {
            // The semaphore is never closed, so this branch always matches.
            Ok(slot) = connection_slots.clone().acquire_owned() => slot,
            signal = &mut terminated => break signal,
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
            signal = &mut terminated => break signal,
        }
    };
    log_event(
        json!({ "event": "draining", "signal": signal, "grace_ms": args.shutdown_grace.as_millis() as u64 }),
    );
    drop(listener);
    server.draining.store(true, Ordering::Release);
    if let Some(watcher) = watcher {
        watcher.abort();
    }

    let mut connections_closed = std::pin::pin!(graceful.shutdown());
    let drained = tokio::time::timeout(args.shutdown_grace, &mut connections_closed)
        .await
        .is_ok();
    // Past the grace period: cancel the calls still running, and give their
    // requests a moment to be answered 503 before the process exits.
    let stopped = registry.shutdown(Duration::ZERO).await;
    if !drained {
        let _ = tokio::time::timeout(CANCELLED_FLUSH, &mut connections_closed).await;
    }
    log_event(json!({
        "event": "stopped",
        "drained": drained,
        "cancelled": stopped.cancelled,
    }));
    Ok(ExitCode::SUCCESS)
}

/// The connection bounds: each flag, else the manifest's `[serve]`
/// setting, else its default. Zero would close every connection at once,
/// so it is refused.
fn connection_limits(
    args: &ServeArgs,
    settings: &ServeSettings,
) -> anyhow::Result<ConnectionLimits> {
    let resolve = |flag: Option<Duration>, setting: Option<Duration>, default, name: &str| {
        let value = flag.or(setting).unwrap_or(default);
        anyhow::ensure!(
            !value.is_zero(),
            "--{} (or {} in the manifest's [serve] table) must be longer than zero",
            name.replace('_', "-"),
            name
        );
        Ok(value)
    };
    Ok(ConnectionLimits {
        header_read: resolve(
            args.header_read_timeout,
            settings.header_read_timeout,
            ServeSettings::DEFAULT_HEADER_READ_TIMEOUT,
            "header_read_timeout",
        )?,
        idle: resolve(
            args.idle_timeout,
            settings.idle_timeout,
            ServeSettings::DEFAULT_IDLE_TIMEOUT,
            "idle_timeout",
        )?,
        write: resolve(
            args.write_timeout,
            settings.write_timeout,
            ServeSettings::DEFAULT_WRITE_TIMEOUT,
            "write_timeout",
        )?,
    })
}

/// Serves one client connection until it closes, a bound in `limits` runs
/// out (the connection is then dropped, and with it any response it held),
/// or the graceful shutdown closes it.
fn serve_connection(
    server: &Arc<Server>,
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

/// Resolves on SIGTERM or SIGINT, with the signal's name.
async fn terminated() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return "SIGINT",
                _ = terminate.recv() => return "SIGTERM",
            }
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "SIGINT"
}

/// Writes one structured log line (JSON) to stderr, led by the time in
/// seconds since the Unix epoch.
pub(crate) fn log_event(event: Value) {
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

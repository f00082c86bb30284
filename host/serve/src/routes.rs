//! Requests to responses.
//!
//! Under `/plugins/<name>`, the mapping every Warden HTTP front end shares
//! (the apps `warden export-http` builds use it too):
//! - `POST /plugins/<name>/<action>` runs `execute(action, body)`; `200`
//!   with the output as `application/octet-stream`. `POST /plugins/<name>`
//!   runs the empty action.
//! - Plugin errors: `invalid-input` → 400, `unknown-action` → 404,
//!   `failed` → 500, each as `{"error": kind, "message": text}`.
//! - `GET /plugins/<name>` → the plugin's `init` metadata as JSON.
//! - Other methods → 405 with `Allow: GET, POST`; a body larger than the
//!   plugin's `max_input_bytes` → 413.
//!
//! Host-side failures use the error kinds of `--json` reports: limits and
//! traps (`timeout`, `out-of-fuel`, `memory-limit`, `trap`, ...) → 500;
//! an unknown plugin → 404; a plugin withdrawn because it no longer passes
//! its trust policy → 503 `untrusted`; saturation (`saturated`) and shutdown
//! (`cancelled`) → 503 with `Retry-After`; a body that does not arrive
//! within `--request-timeout` → 408, a call that does not finish within it
//! → 504; a body that would take the request bodies held over
//! `--max-body-memory` → 503 `saturated`. The message of a host-side failure is one sentence from
//! [`public_message`]; its full text, which may name host paths or carry a
//! backtrace, goes to the log as a `call-failed` line.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, SemaphorePermit};
use warden::{Error, ErrorKind, Outcome, PluginError, Report, truncate_record_text};

use super::{Shared, log_event};

type Reply = Response<Full<Bytes>>;

/// Seconds a client is told to wait after a 503.
const RETRY_AFTER_SECONDS: &str = "1";

/// What the access log says about one request beyond its status.
#[derive(Default)]
struct Entry {
    plugin: Option<String>,
    action: Option<String>,
    bytes_in: usize,
    error: Option<&'static str>,
    /// The full text of a host-side failure, for the log only.
    detail: Option<String>,
    report: Option<Report>,
}

/// Answers one request and writes its access-log line.
pub(super) async fn handle(
    server: Arc<Shared>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Reply, Infallible> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut entry = Entry::default();
    server.stats.in_flight.fetch_add(1, Ordering::Relaxed);
    let reply = route(&server, request, &mut entry).await;
    server.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    let status = reply.status().as_u16();
    server
        .stats
        .count(entry.plugin.as_deref(), status, entry.error);
    // What the client was not told goes to the log, access log or not.
    if let Some(detail) = &entry.detail {
        log_event(json!({
            "event": "call-failed",
            "remote": peer.to_string(),
            "path": truncate_record_text(&path),
            "status": status,
            "plugin": entry.plugin.as_deref().map(truncate_record_text),
            "action": entry.action.as_deref().map(truncate_record_text),
            "error": entry.error,
            "message": detail,
        }));
    }
    if server.access_log {
        access_log(peer, &method, &path, status, started, &reply, entry);
    }
    Ok(reply)
}

async fn route(server: &Shared, request: Request<Incoming>, entry: &mut Entry) -> Reply {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    match path.as_str() {
        "/healthz" => only_get(&method, || {
            json_reply(StatusCode::OK, json!({ "status": "ok" }))
        }),
        "/readyz" => only_get(&method, || {
            if server.draining.load(Ordering::Acquire) {
                unavailable("draining", "the server is shutting down")
            } else {
                json_reply(StatusCode::OK, json!({ "status": "ready" }))
            }
        }),
        "/metrics" => only_get(&method, || {
            text_reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                super::prometheus::render(
                    &server.registry,
                    &server.stats,
                    server.body_memory_limit - server.body_memory.available_permits(),
                ),
            )
        }),
        "/plugins" | "/plugins/" => only_get(&method, || plugin_list(server)),
        _ => match path.strip_prefix("/plugins/") {
            Some(rest) => {
                let (name, action) = rest.split_once('/').unwrap_or((rest, ""));
                match (percent_decode(name), percent_decode(action)) {
                    (Some(name), Some(action)) => {
                        plugin_route(server, request, name, action, entry).await
                    }
                    _ => error_reply(
                        StatusCode::BAD_REQUEST,
                        "bad-request",
                        "the path is not valid percent-encoded UTF-8",
                    ),
                }
            }
            None => error_reply(
                StatusCode::NOT_FOUND,
                "not-found",
                &format!(
                    "nothing at `{path}`; plugins answer under /plugins/<name>/<action>, \
                     and /healthz, /readyz, /metrics and /plugins are the server's own"
                ),
            ),
        },
    }
}

async fn plugin_route(
    server: &Shared,
    request: Request<Incoming>,
    name: String,
    action: String,
    entry: &mut Entry,
) -> Reply {
    let Some(plugin) = server.registry.get(&name) else {
        // A plugin withdrawn for its trust policy is known, not missing.
        if let Some(refusal) = server.registry.withdrawn(&name) {
            entry.plugin = Some(name);
            return failure_reply(&refusal, entry);
        }
        entry.error = Some(ErrorKind::UnknownPlugin.as_str());
        return error_reply(
            StatusCode::NOT_FOUND,
            ErrorKind::UnknownPlugin.as_str(),
            &format!("no plugin is called `{name}`; GET /plugins lists them"),
        );
    };
    // Only names of loaded plugins become metric labels: a client must not
    // be able to grow the metrics with made-up names.
    entry.plugin = Some(name.clone());
    let wants_metadata = request.method() == Method::GET && action.is_empty();
    if request.method() != Method::POST && !wants_metadata {
        return method_not_allowed();
    }
    let deadline = tokio::time::Instant::now() + server.request_timeout;
    // The body is read (bounded by the plugin's input limit and the request
    // timeout) before admission: a client that trickles its body must not
    // hold a call slot or a queue place while it does.
    // The body's share of the server's body memory is held until the call ends.
    let (body, _body_memory) = if wants_metadata {
        (Bytes::new(), None)
    } else {
        entry.action = Some(action.clone());
        // A body larger than all of the body memory could never be held:
        // that is a body too large, not a busy server.
        let limit = plugin
            .sandbox()
            .limits
            .max_input_bytes
            .min(server.body_memory_limit);
        let budget = &server.body_memory;
        match read_body(request, limit, budget, deadline, server.request_timeout).await {
            Ok(body) => body,
            Err((reply, error)) => {
                entry.error = Some(error);
                return reply;
            }
        }
    };
    entry.bytes_in = body.len();
    // Metadata may need an instance too (until one has run `init`), so both
    // go through admission and the request timeout.
    let Ok(_admitted) = server.admission.try_acquire() else {
        entry.error = Some("saturated");
        return unavailable(
            "saturated",
            "every call slot and queue place is taken; retry shortly",
        );
    };
    if wants_metadata {
        let metadata = async {
            let _running = server.running.acquire().await;
            plugin.metadata().await
        };
        return match tokio::time::timeout_at(deadline, metadata).await {
            Ok(Ok(metadata)) => json_reply(
                StatusCode::OK,
                json!({
                    "name": metadata.name,
                    "version": metadata.version,
                    "description": metadata.description,
                    "actions": metadata.actions,
                }),
            ),
            Ok(Err(err)) => failure_reply(&err, entry),
            Err(_) => call_timed_out(server, entry),
        };
    }

    let call = async {
        let _running = server.running.acquire().await;
        server.registry.execute(&name, &action, &body).await
    };
    match tokio::time::timeout_at(deadline, call).await {
        Ok(Outcome { result, report }) => {
            entry.report = Some(report);
            match result {
                Ok(output) => octets_reply(output),
                Err(err) => failure_reply(&err, entry),
            }
        }
        Err(_) => call_timed_out(server, entry),
    }
}

/// The reply when a call (waiting included) outlives the request timeout;
/// dropping the call has already freed its instance.
fn call_timed_out(server: &Shared, entry: &mut Entry) -> Reply {
    entry.error = Some("request-timeout");
    error_reply(
        StatusCode::GATEWAY_TIMEOUT,
        "request-timeout",
        &format!(
            "the call did not finish within the server's request timeout ({:?})",
            server.request_timeout
        ),
    )
}

/// Why reading a body stopped short.
enum ReadFailure {
    /// The connection failed, or the body went past the plugin's limit.
    Body(Box<dyn std::error::Error + Send + Sync>),
    /// The server's body memory is taken.
    NoBodyMemory,
}

/// Reads the body up to `limit` bytes by `deadline` (the end of the
/// request's `timeout`), taking each chunk's bytes from `budget` as it
/// arrives (so a body that trickles holds only what it has sent); the body
/// and the bytes it holds. On failure, the reply to send and the error name
/// for the log.
async fn read_body<'a>(
    request: Request<Incoming>,
    limit: usize,
    budget: &'a Semaphore,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<(Bytes, Option<SemaphorePermit<'a>>), (Reply, &'static str)> {
    let too_large = || {
        (
            error_reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                &format!(
                    "the body is larger than {limit} bytes, the most this plugin takes here \
                     (its input limit, or the server's --max-body-memory if that is smaller)"
                ),
            ),
            "payload-too-large",
        )
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let mut body = Limited::new(request.into_body(), limit);
    let read = async move {
        let mut held: Option<SemaphorePermit<'a>> = None;
        // The chunks as they came: copying into one growing buffer could
        // hold twice what the budget counts.
        let mut received: Vec<Bytes> = Vec::new();
        while let Some(frame) = body.frame().await {
            // Trailers are not part of the input.
            let Ok(data) = frame.map_err(ReadFailure::Body)?.into_data() else {
                continue;
            };
            let taken = u32::try_from(data.len())
                .ok()
                .and_then(|bytes| budget.try_acquire_many(bytes).ok())
                .ok_or(ReadFailure::NoBodyMemory)?;
            match &mut held {
                Some(held) => held.merge(taken),
                None => held = Some(taken),
            }
            received.push(data);
        }
        let body = match received.len() {
            0 => Bytes::new(),
            1 => received.swap_remove(0),
            _ => Bytes::from(received.concat()),
        };
        Ok((body, held))
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(read)) => Ok(read),
        Ok(Err(ReadFailure::NoBodyMemory)) => Err((
            unavailable(
                "saturated",
                "the server holds as many request bodies as its body memory allows \
                 (--max-body-memory); retry shortly",
            ),
            "saturated",
        )),
        Ok(Err(ReadFailure::Body(err))) if err.is::<http_body_util::LengthLimitError>() => {
            Err(too_large())
        }
        Ok(Err(ReadFailure::Body(err))) => Err((
            error_reply(
                StatusCode::BAD_REQUEST,
                "bad-request",
                &format!("reading the body failed: {err}"),
            ),
            "bad-request",
        )),
        Err(_) => Err((
            error_reply(
                StatusCode::REQUEST_TIMEOUT,
                "request-timeout",
                &format!(
                    "the body did not arrive within the server's request timeout ({})",
                    warden::units::format_duration(timeout)
                ),
            ),
            "request-timeout",
        )),
    }
}

/// The error's name in replies and logs: the plugin's own variant for
/// plugin errors, else the kind.
fn error_name(err: &Error) -> &'static str {
    match err {
        Error::Plugin(PluginError::InvalidInput(_)) => "invalid-input",
        Error::Plugin(PluginError::UnknownAction(_)) => "unknown-action",
        Error::Plugin(PluginError::Failed(_)) => "failed",
        other => other.kind().as_str(),
    }
}

/// The reply to a failed call, and the error's name in `entry`.
///
/// The plugin's own errors are its answer and pass on as they are. For
/// everything the host reports (limits, traps, configuration, I/O) the
/// client gets the kind and [`public_message`], and the full text, which
/// may name host paths or carry a backtrace, is kept in `entry` for the
/// server's log.
fn failure_reply(err: &Error, entry: &mut Entry) -> Reply {
    entry.error = Some(error_name(err));
    let (status, message) = match err {
        Error::Plugin(PluginError::InvalidInput(text)) => (StatusCode::BAD_REQUEST, text.clone()),
        Error::Plugin(PluginError::UnknownAction(action)) => (
            StatusCode::NOT_FOUND,
            format!("the plugin has no action `{action}`"),
        ),
        Error::Plugin(PluginError::Failed(text))
        | Error::InitFailed(PluginError::Failed(text) | PluginError::InvalidInput(text)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, text.clone())
        }
        Error::InitFailed(PluginError::UnknownAction(action)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("init reported an unknown action `{action}`"),
        ),
        other => {
            entry.detail = Some(other.to_string());
            let message = public_message(other);
            let status = match other.kind() {
                ErrorKind::InputTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                ErrorKind::UnknownPlugin => StatusCode::NOT_FOUND,
                // Withdrawn until a version that passes is deployed.
                ErrorKind::Untrusted => StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::Cancelled => {
                    return unavailable(ErrorKind::Cancelled.as_str(), &message);
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (status, message)
        }
    };
    error_reply(status, error_name(err), &message)
}

/// What a client is told about a host-side failure: what happened, in one
/// sentence, with the plugin's limits where they explain it, and never a
/// host path, an environment value or a backtrace (the server's log has
/// the error's full text).
fn public_message(err: &Error) -> String {
    const SEE_LOG: &str = "the server's log has the details";
    match err {
        Error::Timeout { limit } => format!(
            "the call ran past the plugin's time limit of {}",
            warden::units::format_duration(*limit)
        ),
        Error::OutOfFuel { limit } => {
            format!("the call used the plugin's whole fuel budget of {limit} units")
        }
        Error::OutputTooLarge { size, limit } => {
            format!("the plugin's output of {size} bytes exceeds its limit of {limit} bytes")
        }
        Error::InputTooLarge { size, limit } => {
            format!("the input of {size} bytes exceeds this plugin's limit of {limit} bytes")
        }
        Error::MemoryLimit(_) => {
            format!("the call went past one of the plugin's memory limits; {SEE_LOG}")
        }
        Error::StackOverflow { .. } => format!("the plugin overflowed its stack; {SEE_LOG}"),
        Error::Trap { .. } => format!("the plugin trapped; {SEE_LOG}"),
        Error::Denied { .. } => {
            format!("the plugin asked for a capability it is not granted, then failed; {SEE_LOG}")
        }
        Error::Cancelled { .. } => "the server is shutting down; retry on another replica".into(),
        Error::Untrusted { .. } => {
            format!("the plugin does not pass this server's trust policy; {SEE_LOG}")
        }
        _ => format!("the server could not run the plugin; {SEE_LOG}"),
    }
}

fn plugin_list(server: &Shared) -> Reply {
    let plugins: Vec<Value> = server
        .registry
        .list()
        .into_iter()
        .map(|plugin| {
            json!({
                "name": plugin.name,
                "sha256": plugin.sha256,
                "generation": plugin.generation,
            })
        })
        .collect();
    json_reply(StatusCode::OK, json!({ "plugins": plugins }))
}

fn only_get(method: &Method, reply: impl FnOnce() -> Reply) -> Reply {
    if method == Method::GET {
        reply()
    } else {
        let mut reply = error_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            &format!("{method} is not allowed here; use GET"),
        );
        reply
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        reply
    }
}

fn method_not_allowed() -> Reply {
    let mut reply = error_reply(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "plugins answer GET (metadata) and POST (run an action)",
    );
    reply
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static("GET, POST"));
    reply
}

fn unavailable(error: &str, message: &str) -> Reply {
    let mut reply = error_reply(StatusCode::SERVICE_UNAVAILABLE, error, message);
    reply
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
    reply
}

fn error_reply(status: StatusCode, error: &str, message: &str) -> Reply {
    json_reply(status, json!({ "error": error, "message": message }))
}

fn json_reply(status: StatusCode, body: Value) -> Reply {
    text_reply(status, "application/json", body.to_string())
}

fn text_reply(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    reply
}

fn octets_reply(output: Vec<u8>) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(output)));
    reply.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    reply
}

/// Decodes `%XX` escapes; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            let hex = tail.get(..2)?;
            let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            bytes.push(value);
            rest = &tail[2..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

fn access_log(
    peer: SocketAddr,
    method: &Method,
    path: &str,
    status: u16,
    started: Instant,
    reply: &Reply,
    entry: Entry,
) {
    let bytes_out = reply
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or_else(|| {
            http_body::Body::size_hint(reply.body())
                .exact()
                .unwrap_or(0)
        });
    let report = entry.report.as_ref();
    log_event(json!({
        "event": "request",
        "remote": peer.to_string(),
        "method": method.as_str(),
        // The path, and the plugin and action named in it, are the
        // client's text: bounded like every other record.
        "path": truncate_record_text(path),
        "status": status,
        "duration_ms": started.elapsed().as_micros() as f64 / 1000.0,
        "plugin": entry.plugin.as_deref().map(truncate_record_text),
        "action": entry.action.as_deref().map(truncate_record_text),
        "bytes_in": entry.bytes_in,
        "bytes_out": bytes_out,
        "error": entry.error,
        "fuel_consumed": report.and_then(|report| report.fuel_consumed),
        "peak_memory_bytes": report.map(|report| report.peak_memory_bytes),
        "denials": report.map(|report| report.denials.len()),
    }));
    // What the guest logged through wasi:logging goes out beside the request.
    if let (Some(plugin), Some(report)) = (&entry.plugin, report) {
        for record in &report.logs {
            log_event(json!({
                "event": "plugin-log",
                "plugin": plugin,
                "level": record.level.as_str(),
                "context": record.context,
                "message": record.message,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn percent_escapes_decode_and_bad_ones_are_refused() {
        assert_eq!(
            percent_decode("count-vowels").as_deref(),
            Some("count-vowels")
        );
        assert_eq!(percent_decode("a%20b%2Fc").as_deref(), Some("a b/c"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%FF"), None);
    }
}

//! Requests to responses.
//!
//! Under `/plugins/<name>`, the mapping every Warden HTTP front end shares
//! (the apps `warden-export` composes use it too):
//! - `POST /plugins/<name>/<action>` runs `execute(action, body)`; `200`
//!   with the output as `application/octet-stream`. `POST /plugins/<name>`
//!   runs the empty action.
//! - Plugin errors: `invalid-input` → 400, `unknown-action` → 404,
//!   `failed` → 500, each as `{"error": kind, "message": text}`.
//! - `GET /plugins/<name>` → the plugin's `init` metadata as JSON.
//! - Other methods → 405 with `Allow: GET, POST`; a body larger than the
//!   plugin's `max_input_bytes` → 413.
//!
//! Host-side failures use the names of [`warden::ErrorKind`]: limits and
//! traps (`timeout`, `out-of-fuel`, `memory-limit`, `trap`, ...) → 500;
//! an unknown plugin → 404; a plugin withdrawn because it no longer passes
//! its trust policy → 503 `untrusted`; saturation (`saturated`) and shutdown
//! (`cancelled`) → 503 with `Retry-After`; a body that does not arrive
//! within [`ServerConfig::request_timeout`](crate::ServerConfig::request_timeout)
//! → 408, a call that does not finish within it → 504; a body that would
//! take the request bodies held over
//! [`ServerConfig::max_body_memory`](crate::ServerConfig::max_body_memory)
//! → 503 `saturated`. The message of a host-side failure is one sentence
//! from `public_message` (in `reply`); its full text, which may
//! name host paths or carry a backtrace, goes to the log as a `call-failed`
//! event.

mod body;
mod reply;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::{Method, Request, StatusCode};
use serde_json::{Value, json};
use warden::{Error, ErrorKind, Outcome, Plugin, PluginError, Report, truncate_record_text};

use self::body::read_body;
use self::reply::Reply;
use self::reply::{
    error_reply, failure_reply, json_reply, method_not_allowed, octets_reply, only_get, text_reply,
    unavailable, unknown_action_reply,
};
use crate::log::TARGET;
use crate::server::Shared;

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
        let plugin = entry.plugin.as_deref().map(truncate_record_text);
        let action = entry.action.as_deref().map(truncate_record_text);
        tracing::warn!(
            target: TARGET,
            event = "call-failed",
            remote = peer.to_string(),
            path = &*truncate_record_text(&path),
            status,
            plugin = plugin.as_deref(),
            action = action.as_deref(),
            error = entry.error,
            message = detail.as_str(),
        );
    }
    // What the plugin wrote goes to the log too: it is the plugin's, not
    // the access log's.
    if let (Some(plugin), Some(report)) = (&entry.plugin, &entry.report) {
        log_plugin_output(plugin, entry.action.as_deref(), report);
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
                crate::prometheus::CONTENT_TYPE,
                crate::prometheus::render(
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
        metadata_reply(server, &plugin, deadline, entry).await
    } else {
        call_reply(server, &name, &action, &body, deadline, entry).await
    }
}

/// The plugin's `init` metadata, once a call slot is free, by `deadline`.
async fn metadata_reply(
    server: &Shared,
    plugin: &Plugin,
    deadline: tokio::time::Instant,
    entry: &mut Entry,
) -> Reply {
    let metadata = async {
        let _running = server.running.acquire().await;
        plugin.metadata().await
    };
    match tokio::time::timeout_at(deadline, metadata).await {
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
    }
}

/// Runs `action` of the plugin `name` on `body`, once a call slot is free,
/// by `deadline`; the call's report goes to `entry`.
async fn call_reply(
    server: &Shared,
    name: &str,
    action: &str,
    body: &[u8],
    deadline: tokio::time::Instant,
    entry: &mut Entry,
) -> Reply {
    let call = async {
        let _running = server.running.acquire().await;
        let outcome = server.registry.execute(name, action, body).await;
        // The actions an unknown action's reply lists. The call ran `init`,
        // so they are usually known; a plugin swapped in meanwhile may need
        // an instance for them, which the same permit and deadline bound.
        let actions = match (&outcome.result, server.registry.get(name)) {
            (Err(Error::Plugin(PluginError::UnknownAction(_))), Some(plugin)) => {
                plugin.metadata().await.ok().map(|meta| meta.actions)
            }
            _ => None,
        };
        (outcome, actions)
    };
    match tokio::time::timeout_at(deadline, call).await {
        Ok((Outcome { result, report }, actions)) => {
            entry.report = Some(report);
            match result {
                Ok(output) => octets_reply(output),
                // Named as requested, not as the plugin echoed it.
                Err(Error::Plugin(PluginError::UnknownAction(_))) => {
                    unknown_action_reply(action, actions.as_deref(), entry)
                }
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
    let plugin = entry.plugin.as_deref().map(truncate_record_text);
    let action = entry.action.as_deref().map(truncate_record_text);
    tracing::info!(
        target: TARGET,
        event = "request",
        remote = peer.to_string(),
        method = method.as_str(),
        // The path, and the plugin and action named in it, are the
        // client's text: bounded like every other record.
        path = &*truncate_record_text(path),
        status,
        duration_ms = started.elapsed().as_micros() as f64 / 1000.0,
        plugin = plugin.as_deref(),
        action = action.as_deref(),
        bytes_in = entry.bytes_in,
        bytes_out,
        error = entry.error,
        fuel_consumed = report.and_then(|report| report.fuel_consumed),
        peak_memory_bytes = report.map(|report| report.peak_memory_bytes),
        denials = report.map(|report| report.denials.len()),
    );
}

/// The most of one stream (stdout or stderr) a call's `plugin-output`
/// line quotes: 16 KiB, room for a panic message and its context, so that
/// a plugin printing its whole capture (1 MiB by default) on every request
/// does not make every log line that large. The rest is counted.
const MAX_LOGGED_OUTPUT_BYTES: usize = 16 << 10;

/// Logs what a call's plugin logged through `wasi:logging` (`plugin-log`,
/// one line per record) and wrote to stdout and stderr (`plugin-output`,
/// one line per stream that is not empty).
fn log_plugin_output(plugin: &str, action: Option<&str>, report: &Report) {
    let action = action.map(truncate_record_text);
    for record in &report.logs {
        tracing::info!(
            target: TARGET,
            event = "plugin-log",
            plugin,
            level = record.level.as_str(),
            context = record.context.as_str(),
            message = record.message.as_str(),
        );
    }
    for (stream, captured) in [("stdout", &report.stdout), ("stderr", &report.stderr)] {
        if captured.is_empty() {
            continue;
        }
        let quoted = &captured.bytes[..captured.bytes.len().min(MAX_LOGGED_OUTPUT_BYTES)];
        let left_out = (captured.bytes.len() - quoted.len()) as u64 + captured.dropped_bytes;
        tracing::info!(
            target: TARGET,
            event = "plugin-output",
            plugin,
            action = action.as_deref(),
            stream,
            // A character cut in two at the end is replaced, like any byte
            // that is not UTF-8; the log's JSON escapes the controls.
            text = &*String::from_utf8_lossy(quoted),
            dropped_bytes = left_out,
        );
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

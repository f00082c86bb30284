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
//! - For a plugin that exports `warden:plugin/streaming` (world 0.2), the
//!   action's body and output are streamed instead (see `stream`): the body
//!   is bounded by `max_stream_input_bytes`, the output is chunked, and a
//!   failure after the first output byte ends the response without its last
//!   chunk (or with `warden-error` trailers when the client asked for them).
//! - `GET /plugins/<name>` and `GET /plugins` also give each plugin's
//!   `world` (`0.1.0`, `0.2.0`) and the optional `interfaces` it exports
//!   (`streaming`, `lifecycle`); the metadata adds `action_details`,
//!   `authors`, `license` and `homepage`.
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
//! → 503 `saturated`. Streams: `stream-idle` → 500 (408 when the plugin
//! was waiting for the client's body), `stream-broken` → 500,
//! `streaming-unsupported` → 501. The message of a host-side failure is one sentence
//! from `public_message` (in `reply`); its full text, which may
//! name host paths or carry a backtrace, goes to the log as a `call-failed`
//! event.

mod body;
mod reply;
mod stream;

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
use self::reply::{Reply, ReplyBody};
use self::reply::{
    error_reply, failure_reply, json_reply, method_not_allowed, octets_reply, only_get, text_reply,
    unavailable, unknown_action_reply,
};
use self::stream::StreamEnd;
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

/// Answers one request and writes its access-log line: at once for a
/// whole reply, when its call is over for a streamed one.
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
    let mut reply = route(&server, request, &mut entry).await;
    let answered = Answered {
        server,
        peer,
        method,
        path,
        started,
        status: reply.status().as_u16(),
        entry,
    };
    let declared = reply
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    match reply.body_mut() {
        ReplyBody::Whole(body) => {
            let bytes_out =
                declared.unwrap_or_else(|| http_body::Body::size_hint(body).exact().unwrap_or(0));
            answered.finish(bytes_out);
        }
        ReplyBody::Streamed(body) => body.on_end(Box::new(move |end| answered.stream_ended(end))),
    }
    Ok(reply)
}

/// A request answered, to count and log once its reply is complete.
struct Answered {
    server: Arc<Shared>,
    peer: SocketAddr,
    method: Method,
    path: String,
    started: Instant,
    status: u16,
    entry: Entry,
}

impl Answered {
    /// A streamed reply is over: its call's report and error, if any, join
    /// the entry. A failure here came after the status line, so the log
    /// has its full text, whoever's it was.
    fn stream_ended(mut self, end: StreamEnd) {
        let entry = &mut self.entry;
        entry.bytes_in = end.bytes_in;
        entry.report = Some(end.outcome.report);
        let error = match &end.outcome.result {
            Err(err) => {
                entry.detail = Some(err.to_string());
                Some(reply::error_name(err))
            }
            Ok(_) if end.abandoned => {
                entry.detail = Some(
                    "the client went away or stopped reading before the end of the streamed \
                     output"
                        .to_owned(),
                );
                Some("response-abandoned")
            }
            Ok(_) => None,
        };
        entry.error = error;
        if let (Some(error), Some(plugin)) = (error, &entry.plugin) {
            self.server.stats.count_stream_failure(plugin, error);
        }
        self.finish(end.bytes_out);
    }

    /// Counts the request and writes its log lines.
    fn finish(self, bytes_out: u64) {
        let Answered {
            server,
            peer,
            method,
            path,
            started,
            status,
            entry,
        } = self;
        server.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
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
            access_log(peer, &method, &path, status, started, bytes_out, entry);
        }
    }
}

async fn route(server: &Arc<Shared>, request: Request<Incoming>, entry: &mut Entry) -> Reply {
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
    server: &Arc<Shared>,
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
    if request.method() == Method::POST && plugin.streams() {
        entry.action = Some(action.clone());
        return stream::stream_reply(server, plugin, &name, &action, request, entry).await;
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
        Ok(Ok(metadata)) => {
            let actions: Vec<Value> = metadata
                .action_details
                .iter()
                .map(|action| {
                    json!({
                        "name": action.name,
                        "description": action.description,
                        "input_type": action.input_type,
                        "output_type": action.output_type,
                    })
                })
                .collect();
            json_reply(
                StatusCode::OK,
                json!({
                    "name": metadata.name,
                    "version": metadata.version,
                    "description": metadata.description,
                    "actions": metadata.actions,
                    "action_details": actions,
                    "authors": metadata.authors,
                    "license": metadata.license,
                    "homepage": metadata.homepage,
                    "world": plugin.world_version().as_str(),
                    "interfaces": optional_interfaces(plugin),
                }),
            )
        }
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
        .map(|registered| {
            let mut listed = json!({
                "name": registered.name,
                "sha256": registered.sha256,
                "generation": registered.generation,
            });
            // Gone since the listing was taken (an unload): listed as it was.
            if let Some(plugin) = server.registry.get(&registered.name) {
                listed["world"] = json!(plugin.world_version().as_str());
                listed["interfaces"] = json!(optional_interfaces(&plugin));
            }
            listed
        })
        .collect();
    json_reply(StatusCode::OK, json!({ "plugins": plugins }))
}

/// The optional interfaces of world 0.2 the plugin exports, by name
/// (none for a 0.1 plugin): `streaming` (its actions are streamed) and
/// `lifecycle`.
fn optional_interfaces(plugin: &Plugin) -> Vec<&'static str> {
    let mut interfaces = Vec::new();
    if plugin.streams() {
        interfaces.push("streaming");
    }
    if plugin.has_lifecycle() {
        interfaces.push("lifecycle");
    }
    interfaces
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
    bytes_out: u64,
    entry: Entry,
) {
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

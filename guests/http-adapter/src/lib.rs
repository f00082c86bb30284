//! Serves a Warden plugin over `wasi:http`: `warden export-http` composes
//! this component with a plugin, feeding it the plugin's exported
//! `warden:plugin/guest`, so that any host of `wasi:http/incoming-handler`
//! (`wasmtime serve`, Spin, wasmCloud) runs the plugin unchanged.
//!
//! The mapping (the same as `warden serve`'s):
//! - `POST /<action>`: `execute(action, body)`, where `<action>` is the
//!   percent-decoded path after the first `/` (the query is ignored); `200`
//!   with the output as `application/octet-stream`;
//! - plugin errors: `400` (`invalid-input`), `404` (`unknown-action`), `500`
//!   (`failed`), and `500` (`init-failed`) when `init` fails, each with a
//!   JSON body `{"error":KIND,"message":TEXT}`; a path that does not
//!   percent-decode to UTF-8, or a body that cannot be read: `400`
//!   (`bad-request`);
//! - `GET /`: `200` with the `init` metadata as JSON;
//! - any other method, or `GET` on another path: `405` with `allow: GET, POST`;
//! - a body over [`MAX_BODY_BYTES`]: `413`, without reading the rest of it.
//!
//! `init` runs once per instance, before the first request is handled.

wit_bindgen::generate!({
    path: "../../wit",
    inline: "
        package warden:http-adapter;

        world adapter {
            import warden:plugin/guest@0.1.0;
            export wasi:http/incoming-handler@0.2.12;
        }
    ",
    world: "warden:http-adapter/adapter",
    generate_all,
});

use std::sync::OnceLock;

use exports::wasi::http::incoming_handler::Guest;
use warden::plugin::guest;
use warden::plugin::types::PluginError;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::StreamError;

/// The largest request body accepted: Warden's default
/// `Limits::max_input_bytes`, so an exported plugin takes what `warden run` does.
const MAX_BODY_BYTES: usize = 16 << 20;

/// How much of the request body one read asks for.
const READ_CHUNK_BYTES: u64 = 64 << 10;

/// The most one `blocking-write-and-flush` call accepts (its documented limit).
const WRITE_CHUNK_BYTES: usize = 4096;

const JSON: &str = "application/json";
const OCTET_STREAM: &str = "application/octet-stream";

/// The outcome of `init`, kept for the instance's lifetime: the metadata as
/// JSON, or the plugin's reason for refusing.
static INIT: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();

struct Adapter;

impl Guest for Adapter {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let reply = handle(&request);
        // The request (and its body stream) is finished with before replying.
        drop(request);
        reply.send(response_out);
    }
}

/// A response, before it is written.
struct Reply {
    status: u16,
    content_type: &'static str,
    /// Whether to add `allow: GET, POST` (the 405 reply).
    allow: bool,
    body: Vec<u8>,
}

impl Reply {
    fn ok(content_type: &'static str, body: Vec<u8>) -> Self {
        Reply {
            status: 200,
            content_type,
            allow: false,
            body,
        }
    }

    /// `{"error":KIND,"message":TEXT}` with `status`.
    fn error(status: u16, kind: &str, message: &str) -> Self {
        let mut body = String::with_capacity(32 + kind.len() + message.len());
        body.push_str("{\"error\":");
        push_json_string(&mut body, kind);
        body.push_str(",\"message\":");
        push_json_string(&mut body, message);
        body.push('}');
        Reply {
            status,
            content_type: JSON,
            allow: false,
            body: body.into_bytes(),
        }
    }

    fn plugin_error(error: &PluginError) -> Self {
        match error {
            PluginError::InvalidInput(text) => Reply::error(400, "invalid-input", text),
            PluginError::UnknownAction(action) => Reply::error(
                404,
                "unknown-action",
                &format!("the plugin has no action `{action}`"),
            ),
            PluginError::Failed(text) => Reply::error(500, "failed", text),
        }
    }

    fn method_not_allowed(message: &str) -> Self {
        Reply {
            allow: true,
            ..Reply::error(405, "method-not-allowed", message)
        }
    }

    /// Writes the reply. A client that went away mid-body is not an error
    /// anyone could act on, so write failures end the reply quietly.
    fn send(self, response_out: ResponseOutparam) {
        let headers = Fields::new();
        let length = self.body.len().to_string();
        let mut header_list = vec![
            ("content-type", self.content_type.as_bytes()),
            ("content-length", length.as_bytes()),
        ];
        if self.allow {
            header_list.push(("allow", b"GET, POST"));
        }
        for (name, value) in header_list {
            // Fresh fields are mutable and these names and values are valid,
            // so appending cannot fail.
            let _ = headers.append(name, value);
        }
        let response = OutgoingResponse::new(headers);
        // A status code from this file is always valid.
        let _ = response.set_status_code(self.status);
        let Ok(body) = response.body() else {
            return;
        };
        ResponseOutparam::set(response_out, Ok(response));
        let Ok(stream) = body.write() else {
            return;
        };
        for chunk in self.body.chunks(WRITE_CHUNK_BYTES) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
        drop(stream);
        let _ = OutgoingBody::finish(body, None);
    }
}

fn handle(request: &IncomingRequest) -> Reply {
    let path_with_query = request.path_with_query();
    let path = path_with_query.as_deref().map_or("/", |text| {
        text.split_once('?').map_or(text, |(path, _)| path)
    });
    match request.method() {
        Method::Get if path == "/" => match initialized() {
            Ok(metadata) => Reply::ok(JSON, metadata.to_vec()),
            Err(message) => Reply::error(500, "init-failed", message),
        },
        Method::Get => Reply::method_not_allowed(
            "GET serves the metadata at `/` only; run actions with POST /ACTION",
        ),
        Method::Post => execute(request, path),
        _ => Reply::method_not_allowed("only GET / and POST /ACTION are served"),
    }
}

/// `POST /<action>`: the action from the path, the input from the body.
fn execute(request: &IncomingRequest, path: &str) -> Reply {
    let action = match percent_decode(path.strip_prefix('/').unwrap_or(path)) {
        Ok(action) => action,
        Err(message) => return Reply::error(400, "bad-request", message),
    };
    let input = match read_body(request) {
        Ok(input) => input,
        Err(reply) => return reply,
    };
    if let Err(message) = initialized() {
        return Reply::error(500, "init-failed", message);
    }
    match guest::execute(&action, &input) {
        Ok(output) => Reply::ok(OCTET_STREAM, output),
        Err(error) => Reply::plugin_error(&error),
    }
}

/// Runs `init` on the instance's first request; later requests get its
/// remembered outcome.
fn initialized() -> Result<&'static [u8], &'static str> {
    INIT.get_or_init(|| match guest::init() {
        Ok(metadata) => {
            let mut json = String::with_capacity(128);
            json.push_str("{\"name\":");
            push_json_string(&mut json, &metadata.name);
            json.push_str(",\"version\":");
            push_json_string(&mut json, &metadata.version);
            json.push_str(",\"description\":");
            push_json_string(&mut json, &metadata.description);
            json.push_str(",\"actions\":[");
            for (index, action) in metadata.actions.iter().enumerate() {
                if index > 0 {
                    json.push(',');
                }
                push_json_string(&mut json, action);
            }
            json.push_str("]}");
            Ok(json.into_bytes())
        }
        Err(PluginError::InvalidInput(text) | PluginError::Failed(text)) => Err(text),
        Err(PluginError::UnknownAction(action)) => {
            Err(format!("init reported an unknown action `{action}`"))
        }
    })
    .as_ref()
    .map(Vec::as_slice)
    .map_err(String::as_str)
}

/// The whole request body, or the reply that refuses it: `413` as soon as
/// the declared length or the bytes read pass [`MAX_BODY_BYTES`].
fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, Reply> {
    let too_large = || {
        Reply::error(
            413,
            "payload-too-large",
            "the request body is larger than the 16 MiB limit",
        )
    };
    let declared = request
        .headers()
        .get("content-length")
        .first()
        .and_then(|value| std::str::from_utf8(value).ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let unreadable = || Reply::error(400, "bad-request", "the request body cannot be read");
    let body = request.consume().map_err(|()| unreadable())?;
    let stream = body.stream().map_err(|()| unreadable())?;
    let mut input = Vec::with_capacity(declared.unwrap_or(0) as usize);
    loop {
        // One byte past the limit is enough to know it is passed.
        let wanted = READ_CHUNK_BYTES.min((MAX_BODY_BYTES - input.len()) as u64 + 1);
        match stream.blocking_read(wanted) {
            Ok(chunk) if input.len() + chunk.len() > MAX_BODY_BYTES => return Err(too_large()),
            Ok(chunk) => input.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(_)) => return Err(unreadable()),
        }
    }
    Ok(input)
}

/// Decodes `%XX` escapes; the result must be UTF-8, as actions are strings.
fn percent_decode(text: &str) -> Result<String, &'static str> {
    if !text.contains('%') {
        return Ok(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let high = bytes.get(index + 1).and_then(|&digit| hex_value(digit));
            let low = bytes.get(index + 2).and_then(|&digit| hex_value(digit));
            let (Some(high), Some(low)) = (high, low) else {
                return Err("the action has a `%` not followed by two hexadecimal digits");
            };
            decoded.push(high << 4 | low);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| "the percent-decoded action is not UTF-8")
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Appends `text` as a JSON string literal.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            control if u32::from(control) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", u32::from(control)));
            }
            other => out.push(other),
        }
    }
    out.push('"');
}

export!(Adapter);

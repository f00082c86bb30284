//! Replies: the JSON error body and its status for every failure, and what
//! a client may be told about a host-side one.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Response, StatusCode};
use serde_json::{Value, json};
use warden::{Error, ErrorKind, PluginError};

use super::Entry;
use super::stream::StreamedBody;

/// A response: whole, built before it is sent, or the output of a
/// streaming call as the plugin writes it.
pub(crate) type Reply = Response<ReplyBody>;

/// The body of a [`Reply`].
pub(crate) enum ReplyBody {
    /// Built before the status line is sent.
    Whole(Full<Bytes>),
    /// A streaming call's output, sent as it comes (chunked); boxed, since
    /// it holds the whole call while whole replies are most replies.
    Streamed(Box<StreamedBody>),
}

impl From<Full<Bytes>> for ReplyBody {
    fn from(body: Full<Bytes>) -> Self {
        ReplyBody::Whole(body)
    }
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ReplyBody::Whole(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(|never| match never {}))),
            ReplyBody::Streamed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReplyBody::Whole(body) => body.is_end_stream(),
            ReplyBody::Streamed(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReplyBody::Whole(body) => body.size_hint(),
            ReplyBody::Streamed(_) => SizeHint::default(),
        }
    }
}

/// Seconds a client is told to wait after a 503.
const RETRY_AFTER_SECONDS: &str = "1";

/// The error's name in replies and logs: the plugin's own variant for
/// plugin errors, else the kind.
pub(super) fn error_name(err: &Error) -> &'static str {
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
pub(super) fn failure_reply(err: &Error, entry: &mut Entry) -> Reply {
    entry.error = Some(error_name(err));
    let (status, message) = match err {
        Error::Plugin(PluginError::InvalidInput(text)) => (StatusCode::BAD_REQUEST, text.clone()),
        Error::Plugin(PluginError::UnknownAction(action)) => {
            return unknown_action_reply(action, None, entry);
        }
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
            if other.kind() == ErrorKind::Cancelled {
                return unavailable(ErrorKind::Cancelled.as_str(), &message);
            }
            (host_status(other.kind()), message)
        }
    };
    error_reply(status, error_name(err), &message)
}

/// The status of a host-side failure of kind `kind`.
///
/// Limits, traps and a plugin that breaks the streaming contract are the
/// server's failure to run the call: 500, like any other host error. A
/// stalled stream (`stream-idle`) is 500 too when the plugin stalled; when
/// the server was waiting for the client's body the streaming route answers
/// 408 instead (see `stream`).
pub(super) fn host_status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InputTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::UnknownPlugin => StatusCode::NOT_FOUND,
        // Withdrawn until a version that passes is deployed; a shutdown
        // asks the client to retry elsewhere.
        ErrorKind::Untrusted | ErrorKind::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        // The plugin cannot take streamed input: the server cannot do what
        // was asked of this plugin.
        ErrorKind::StreamingUnsupported => StatusCode::NOT_IMPLEMENTED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The reply to a call of an action the plugin does not have: 404, in the
/// words the command line uses too, listing `actions` (the plugin's
/// metadata) when they are known.
pub(super) fn unknown_action_reply(
    action: &str,
    actions: Option<&[String]>,
    entry: &mut Entry,
) -> Reply {
    let name = "unknown-action";
    entry.error = Some(name);
    // The name is the client's; a reply need not echo megabytes of it.
    let action = warden::truncate_record_text(action);
    let message = match actions {
        Some(actions) => warden::unknown_action_message(&action, actions),
        None => format!("the plugin has no action `{action}`"),
    };
    error_reply(StatusCode::NOT_FOUND, name, &message)
}

/// What a client is told about a host-side failure: what happened, in one
/// sentence, with the plugin's limits where they explain it, and never a
/// host path, an environment value or a backtrace (the server's log has
/// the error's full text).
pub(super) fn public_message(err: &Error) -> String {
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
        Error::StreamIdle { limit } => format!(
            "the stream stalled: neither the plugin nor the client moved for {} \
             (the plugin's stream idle timeout)",
            warden::units::format_duration(*limit)
        ),
        Error::StreamBroken(_) => {
            format!("the plugin broke the streaming contract; {SEE_LOG}")
        }
        Error::StreamingUnsupported => {
            "the plugin does not export `warden:plugin/streaming@0.2.0`".into()
        }
        Error::Cancelled { .. } => "the server is shutting down; retry on another replica".into(),
        Error::Untrusted { .. } => {
            format!("the plugin does not pass this server's trust policy; {SEE_LOG}")
        }
        _ => format!("the server could not run the plugin; {SEE_LOG}"),
    }
}

pub(super) fn only_get(method: &Method, reply: impl FnOnce() -> Reply) -> Reply {
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

pub(super) fn method_not_allowed() -> Reply {
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

pub(super) fn unavailable(error: &str, message: &str) -> Reply {
    let mut reply = error_reply(StatusCode::SERVICE_UNAVAILABLE, error, message);
    reply
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
    reply
}

pub(super) fn error_reply(status: StatusCode, error: &str, message: &str) -> Reply {
    json_reply(status, json!({ "error": error, "message": message }))
}

pub(super) fn json_reply(status: StatusCode, body: Value) -> Reply {
    text_reply(status, "application/json", body.to_string())
}

pub(super) fn text_reply(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body)).into());
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    reply
}

pub(super) fn octets_reply(output: Vec<u8>) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(output)).into());
    reply.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    reply
}

#[cfg(test)]
mod tests {
    use hyper::StatusCode;
    use warden::ErrorKind;

    use super::host_status;

    #[test]
    fn host_side_kinds_map_to_their_statuses() {
        for (kind, status) in [
            (ErrorKind::InputTooLarge, StatusCode::PAYLOAD_TOO_LARGE),
            (ErrorKind::UnknownPlugin, StatusCode::NOT_FOUND),
            (ErrorKind::Untrusted, StatusCode::SERVICE_UNAVAILABLE),
            (ErrorKind::Cancelled, StatusCode::SERVICE_UNAVAILABLE),
            (ErrorKind::StreamingUnsupported, StatusCode::NOT_IMPLEMENTED),
            (ErrorKind::StreamIdle, StatusCode::INTERNAL_SERVER_ERROR),
            (ErrorKind::StreamBroken, StatusCode::INTERNAL_SERVER_ERROR),
            (ErrorKind::Timeout, StatusCode::INTERNAL_SERVER_ERROR),
            (ErrorKind::Trap, StatusCode::INTERNAL_SERVER_ERROR),
        ] {
            assert_eq!(host_status(kind), status, "{kind}");
        }
    }
}

//! Reading a request's body within the plugin's input limit, the server's
//! body memory and the request timeout.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::{Request, StatusCode};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::reply::{Reply, error_reply, unavailable};

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
pub(super) async fn read_body<'a>(
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
    let declared = declared_length(&request);
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let read = read_chunks(Limited::new(request.into_body(), limit), budget);
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

/// The body's length as its `Content-Length` header declares it, if it does.
pub(super) fn declared_length(request: &Request<Incoming>) -> Option<u64> {
    request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
}

/// Reads `body` to its end, taking each chunk's bytes from `budget` as it
/// arrives; the body and the bytes it holds.
async fn read_chunks(
    mut body: Limited<Incoming>,
    budget: &Semaphore,
) -> Result<(Bytes, Option<SemaphorePermit<'_>>), ReadFailure> {
    let mut held: Option<SemaphorePermit<'_>> = None;
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
}

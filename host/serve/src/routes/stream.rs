//! Streaming calls: for a plugin that exports `warden:plugin/streaming`
//! (world 0.2), `POST /plugins/<name>/<action>` feeds the request body into
//! [`Registry::execute_stream`](warden::Registry::execute_stream) as it arrives and sends the output back
//! (chunked) as the plugin writes it.
//!
//! Nothing is collected on the way. The body is read one hyper frame at a
//! time, only when the plugin reads ([`BodyReader`]); the output is read
//! from the library's pipe of [`warden::STREAM_BUFFER_BYTES`] only when
//! hyper asks for the next frame ([`StreamedBody`]), which it does once it
//! has room in its write buffer. A client that stops reading therefore
//! stops the plugin (its writes wait on the full pipe) and holds no more
//! than the pipe and hyper's buffers; the connection's write timeout, or
//! the plugin's stream idle timeout, ends it. A streamed body is never held
//! whole, so it takes nothing of the server's body memory; its size is
//! bounded by the plugin's `max_stream_input_bytes` instead of
//! `max_input_bytes`.
//!
//! **The status line waits for the first output.** The reply's head is
//! sent once the plugin has written its first bytes, or once the call is
//! over: a call that fails before writing anything (an unknown action, a
//! limit, a trap, a body too large, a stalled stream) is answered with its
//! usual status and JSON error, like a whole call. Only a failure after the
//! first bytes went out cannot change the status any more; then the
//! response is ended in a way no client can take for success:
//!
//! - when the request carried `TE: trailers` (the client reads trailer
//!   fields), the chunked body ends with the trailers `warden-error` (the
//!   error's name) and `warden-message` (the one sentence an error reply
//!   would carry), announced by a `Trailer` header; a body that ends without
//!   them completed;
//! - otherwise the body is aborted: no last chunk is sent and the
//!   connection is closed, so the client sees an incomplete chunked
//!   response. (hyper drops trailers a client did not ask for and would end
//!   the body cleanly, which would pass a cut-off output for a whole one.)
//!
//! Either way the server logs a `call-failed` line (status 200, the error
//! and its full text), counts the request under its status and the failure
//! in `warden_http_streams_failed_total`. A response hyper drops before its
//! end (the client went away, or stopped reading past the write timeout)
//! is counted there as `response-abandoned`; its call ends once it notices
//! (its output is gone) and is logged then.
//!
//! The request timeout bounds the wait for a call slot only: a stream lasts
//! as long as its input, so the call is bounded by the plugin's own limits
//! (its `timeout` covers the whole call, and `stream_idle_timeout` ends a
//! stream where neither side moves, a client that stopped sending or
//! reading included).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, TE, TRAILER};
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt as _, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use warden::{Error, Outcome, OutputStream, Plugin, PluginError, StreamOutcome, Streamed};

use super::reply::{
    Reply, ReplyBody, error_name, error_reply, failure_reply, octets_reply, public_message,
    unavailable, unknown_action_reply,
};
use super::{Entry, call_timed_out};
use crate::server::Shared;

/// Bytes read from the plugin's output for one chunk of the response: the
/// size of the library's pipe, so that one read can take all it holds.
const OUTPUT_CHUNK_BYTES: usize = warden::STREAM_BUFFER_BYTES;

/// The trailer naming the error of a stream that failed after its status
/// line (when the client asked for trailers).
const ERROR_TRAILER: HeaderName = HeaderName::from_static("warden-error");

/// The trailer with that error's one-sentence message.
const MESSAGE_TRAILER: HeaderName = HeaderName::from_static("warden-message");

/// The most of a message a `warden-message` trailer carries: a trailer is a
/// header line, which clients and proxies bound (often at 8 KiB).
const MAX_TRAILER_MESSAGE_BYTES: usize = 1 << 10;

/// What the request body did, shared between its reader (on the call's
/// task) and the reply.
#[derive(Default)]
struct Intake {
    /// Bytes of the body handed to the plugin.
    bytes_in: AtomicU64,
    /// Set while the plugin waits for body bytes the client has not sent.
    waiting_for_client: AtomicBool,
}

/// Runs `action` of the streaming `plugin` on the request's body as it
/// arrives; the reply once the plugin has written its first bytes or the
/// call is over (see the module's documentation).
pub(super) async fn stream_reply(
    server: &Arc<Shared>,
    plugin: Plugin,
    name: &str,
    action: &str,
    request: Request<Incoming>,
    entry: &mut Entry,
) -> Reply {
    let limit = plugin.sandbox().limits.max_stream_input_bytes;
    let declared = super::body::declared_length(&request);
    if declared.is_some_and(|length| length > limit) {
        entry.error = Some("payload-too-large");
        return error_reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            &format!(
                "the body is larger than {limit} bytes, the most this plugin takes \
                 (its stream input limit)"
            ),
        );
    }
    let trailers = wants_trailers(request.headers());
    let Ok(admitted) = server.admission.clone().try_acquire_owned() else {
        entry.error = Some("saturated");
        return unavailable(
            "saturated",
            "every call slot and queue place is taken; retry shortly",
        );
    };
    let deadline = tokio::time::Instant::now() + server.request_timeout;
    let running = server.running.clone().acquire_owned();
    let Ok(Ok(running)) = tokio::time::timeout_at(deadline, running).await else {
        return call_timed_out(server, entry);
    };

    let intake = Arc::new(Intake::default());
    let input = BodyReader {
        body: request.into_body(),
        chunk: Bytes::new(),
        ended: false,
        intake: intake.clone(),
    };
    // Through the registry, so that a drain counts the stream as a call in
    // flight and cancels it when the grace period ends.
    let (mut output, mut outcome) = server.registry.execute_stream(name, action, input);
    let mut first = vec![0; OUTPUT_CHUNK_BYTES];
    let read = tokio::select! {
        biased;
        read = output.read(&mut first) => Ok(read.unwrap_or(0)),
        settled = &mut outcome => Err(settled),
    };
    let (first, settled) = match read {
        // The plugin answered input past its limit, which fails the call
        // (the library stops the input there): the status can still say
        // so. The output is dropped so that the plugin's writes end.
        Ok(read) if read > 0 && intake.bytes_in.load(Ordering::Relaxed) > limit => {
            drop(output);
            let Outcome { result, report } = outcome.await;
            entry.bytes_in = bytes_in(&intake);
            entry.report = Some(report);
            return match result {
                Ok(_) => failure_reply(
                    &Error::InputTooLarge {
                        size: entry.bytes_in,
                        limit: usize::try_from(limit).unwrap_or(usize::MAX),
                    },
                    entry,
                ),
                Err(err) => early_failure(err, &plugin, action, &intake, entry).await,
            };
        }
        Ok(read) if read > 0 => {
            first.truncate(read);
            (Some(Bytes::from(first)), None)
        }
        // The output ended empty: the outcome decides the status, and the
        // reply is whole.
        Ok(_) => {
            let Outcome { result, report } = outcome.await;
            entry.bytes_in = bytes_in(&intake);
            entry.report = Some(report);
            return match result {
                Ok(_) => octets_reply(Vec::new()),
                Err(err) => early_failure(err, &plugin, action, &intake, entry).await,
            };
        }
        Err(Outcome {
            result: Err(err),
            report,
        }) => {
            entry.bytes_in = bytes_in(&intake);
            entry.report = Some(report);
            return early_failure(err, &plugin, action, &intake, entry).await;
        }
        // Over before its output was read: what it wrote is still in the pipe.
        Err(settled) => (None, Some(settled)),
    };

    let mut reply = Response::new(ReplyBody::Streamed(Box::new(StreamedBody {
        first,
        output: Some(output),
        buffer: BytesMut::new(),
        outcome: Some(outcome),
        settled,
        trailers,
        intake,
        bytes_out: 0,
        end: Some(Ending {
            _slots: [admitted, running],
            finish: None,
        }),
    })));
    let headers = reply.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if trailers {
        headers.insert(
            TRAILER,
            HeaderValue::from_static("warden-error, warden-message"),
        );
    }
    reply
}

fn bytes_in(intake: &Intake) -> usize {
    usize::try_from(intake.bytes_in.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
}

/// Whether the request's `TE` header accepts trailer fields.
fn wants_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(TE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let coding = coding.split(';').next().unwrap_or_default().trim();
            coding.eq_ignore_ascii_case("trailers")
        })
}

/// The reply to a streaming call that failed before writing anything: the
/// status a whole call would get, except that a stream that stalled while
/// the plugin waited for the client's body is the client's: 408.
async fn early_failure(
    err: Error,
    plugin: &Plugin,
    action: &str,
    intake: &Intake,
    entry: &mut Entry,
) -> Reply {
    match err {
        // Named as requested, with the actions the plugin lists.
        Error::Plugin(PluginError::UnknownAction(_)) => {
            let actions = plugin.metadata().await.ok().map(|meta| meta.actions);
            unknown_action_reply(action, actions.as_deref(), entry)
        }
        Error::StreamIdle { limit } if intake.waiting_for_client.load(Ordering::Relaxed) => {
            entry.error = Some(error_name(&err));
            entry.detail = Some(err.to_string());
            error_reply(
                StatusCode::REQUEST_TIMEOUT,
                error_name(&err),
                &format!(
                    "the request body stopped arriving: nothing came for {} \
                     (the plugin's stream idle timeout)",
                    warden::units::format_duration(limit)
                ),
            )
        }
        err => failure_reply(&err, entry),
    }
}

/// A request body as an [`AsyncRead`], one frame at a time: it reads from
/// the connection only when the plugin reads.
struct BodyReader {
    body: Incoming,
    /// What is left of the last frame.
    chunk: Bytes,
    ended: bool,
    intake: Arc<Intake>,
}

impl AsyncRead for BodyReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.chunk.is_empty() {
            if this.ended || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) else {
                this.intake
                    .waiting_for_client
                    .store(true, Ordering::Relaxed);
                return Poll::Pending;
            };
            this.intake
                .waiting_for_client
                .store(false, Ordering::Relaxed);
            match frame {
                None => this.ended = true,
                Some(Err(err)) => return Poll::Ready(Err(io::Error::other(err))),
                // Trailers are not part of the input.
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        this.chunk = data;
                    }
                }
            }
        }
        let taken = this.chunk.split_to(this.chunk.len().min(buf.remaining()));
        buf.put_slice(&taken);
        this.intake
            .bytes_in
            .fetch_add(taken.len() as u64, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

/// How a streamed reply ended, for its log line and metrics.
pub(crate) struct StreamEnd {
    /// Bytes of the body the plugin took.
    pub(crate) bytes_in: usize,
    /// Bytes of output sent to hyper.
    pub(crate) bytes_out: u64,
    /// The call's outcome.
    pub(crate) outcome: Outcome<Streamed>,
    /// Whether hyper dropped the reply before its end.
    pub(crate) abandoned: bool,
}

/// What a streamed reply does once its call is over.
pub(crate) type Finish = Box<dyn FnOnce(StreamEnd) + Send>;

/// What a streamed reply holds until its call is over, and does then.
struct Ending {
    /// The admission place and the call slot the call holds.
    _slots: [OwnedSemaphorePermit; 2],
    finish: Option<Finish>,
}

impl Ending {
    fn run(self, end: StreamEnd) {
        if let Some(finish) = self.finish {
            finish(end);
        }
    }
}

/// The body of a streamed reply: the plugin's output as it comes, then the
/// end the call's outcome calls for (see the module's documentation).
pub(crate) struct StreamedBody {
    /// The output read before the status line was sent.
    first: Option<Bytes>,
    /// `None` once it has ended.
    output: Option<OutputStream>,
    /// Reused for reads of the output.
    buffer: BytesMut,
    /// `None` once it has resolved into `settled`.
    outcome: Option<StreamOutcome>,
    settled: Option<Outcome<Streamed>>,
    /// Whether a failure is told in trailers rather than by an abort.
    trailers: bool,
    intake: Arc<Intake>,
    bytes_out: u64,
    /// `None` once the end has been reported.
    end: Option<Ending>,
}

impl StreamedBody {
    /// Sets what to do once the call is over (log and count it).
    pub(crate) fn on_end(&mut self, finish: Finish) {
        if let Some(end) = &mut self.end {
            end.finish = Some(finish);
        }
    }

    /// The next chunk of output, `None` at its end, or `Pending`.
    fn poll_output(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let Some(output) = &mut self.output else {
            return Poll::Ready(None);
        };
        if self.buffer.len() < OUTPUT_CHUNK_BYTES {
            self.buffer.resize(OUTPUT_CHUNK_BYTES, 0);
        }
        let mut read = ReadBuf::new(&mut self.buffer[..]);
        match Pin::new(output).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                let length = read.filled().len();
                Poll::Ready(Some(self.buffer.split_to(length).freeze()))
            }
            // The pipe does not fail; either way the output is over.
            Poll::Ready(_) => {
                self.output = None;
                Poll::Ready(None)
            }
        }
    }

    /// Reports the end of the call and gives the body's last frame.
    fn finish(
        &mut self,
        outcome: Outcome<Streamed>,
    ) -> Option<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> {
        // Stops a plugin still writing after it failed.
        self.output = None;
        let failed = outcome
            .result
            .as_ref()
            .err()
            .map(|err| (error_name(err), client_message(err)));
        if let Some(end) = self.end.take() {
            end.run(StreamEnd {
                bytes_in: bytes_in(&self.intake),
                bytes_out: self.bytes_out,
                outcome,
                abandoned: false,
            });
        }
        let (name, message) = failed?;
        if self.trailers {
            let mut trailers = HeaderMap::new();
            trailers.insert(ERROR_TRAILER, HeaderValue::from_static(name));
            trailers.insert(MESSAGE_TRAILER, trailer_value(&message));
            return Some(Ok(Frame::trailers(trailers)));
        }
        Some(Err(format!(
            "the streaming call failed after the status line was sent ({name}): {message}"
        )
        .into()))
    }
}

impl Body for StreamedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.end.is_none() {
            return Poll::Ready(None);
        }
        if let Some(first) = this.first.take() {
            this.bytes_out += first.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        let output = this.poll_output(cx);
        if let Poll::Ready(Some(chunk)) = output {
            this.bytes_out += chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(outcome) = &mut this.outcome
            && let Poll::Ready(outcome) = Pin::new(outcome).poll(cx)
        {
            this.outcome = None;
            this.settled = Some(outcome);
        }
        match this.settled.take() {
            // A failure ends the body at once; success once the output has
            // ended too (its waker is registered while it has not).
            Some(outcome) if outcome.result.is_err() || output.is_ready() => {
                Poll::Ready(this.finish(outcome))
            }
            settled => {
                this.settled = settled;
                Poll::Pending
            }
        }
    }
}

impl Drop for StreamedBody {
    fn drop(&mut self) {
        let Some(end) = self.end.take() else {
            return;
        };
        // hyper let go of the reply before its end: the client went away or
        // stopped reading. Dropping the output stops the plugin's writes; the
        // call is logged, and keeps its slot, until it is over.
        self.output = None;
        let (bytes_in, bytes_out) = (bytes_in(&self.intake), self.bytes_out);
        let ended = move |outcome| {
            end.run(StreamEnd {
                bytes_in,
                bytes_out,
                outcome,
                abandoned: true,
            });
        };
        match (self.settled.take(), self.outcome.take()) {
            (Some(outcome), _) => ended(outcome),
            (None, Some(outcome)) => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move { ended(outcome.await) });
                }
            }
            (None, None) => {}
        }
    }
}

/// What the client is told about a failure: the plugin's own text for its
/// errors, else the one sentence of a host-side failure.
fn client_message(err: &Error) -> String {
    match err {
        Error::Plugin(PluginError::InvalidInput(text) | PluginError::Failed(text)) => text.clone(),
        Error::Plugin(PluginError::UnknownAction(action)) => format!(
            "the plugin has no action `{}`",
            warden::truncate_record_text(action)
        ),
        other => public_message(other),
    }
}

/// `message` as a header value: control characters replaced, cut to
/// [`MAX_TRAILER_MESSAGE_BYTES`] on a character boundary.
fn trailer_value(message: &str) -> HeaderValue {
    let mut text = String::new();
    for character in message.chars() {
        if text.len() + character.len_utf8() > MAX_TRAILER_MESSAGE_BYTES {
            break;
        }
        text.push(if character.is_control() {
            ' '
        } else {
            character
        });
    }
    HeaderValue::from_bytes(text.as_bytes())
        .unwrap_or_else(|_| HeaderValue::from_static("see the server's log"))
}

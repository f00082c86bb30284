//! Bounds on one client connection, beside the per-request ones: how long
//! it may sit idle, how long a request head may take once it has begun, and
//! how long a response may wait for a client that stopped reading.
//!
//! hyper's own `header_read_timeout` starts when a keep-alive connection
//! goes idle, so it cannot tell an idle connection from a slow request
//! head. Each connection here has a [`Tracker`] instead: its stream reports
//! the first byte of a head and every write that makes progress, the
//! service reports each request from the moment its head is parsed until
//! hyper drops the response body (taken whole, or abandoned), and
//! [`Tracker::expired`] resolves when the phase the connection is in has
//! lasted too long. Idle time counts from the last byte written, since
//! hyper may still be writing a response whose body it has dropped; so does
//! the time of a pipelined head that arrived while it was. The trackers of
//! all connections also keep the server's count of requests in progress,
//! which the drain waits on.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, Sleep};

/// The time bounds every connection is held to; past one, the connection
/// is closed (and with it any response it held).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// From the first byte of a request head to its end.
    pub header_read: Duration,
    /// With no request in progress.
    pub idle: Duration,
    /// Writing without progress.
    pub write: Duration,
}

/// Where a connection is between and within requests.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// No request in progress since `since`.
    Idle { since: Instant },
    /// The first bytes of a request head arrived at `since`, or the last
    /// bytes of the response before it were written then, if later.
    ReadingHead { since: Instant },
    /// Requests parsed whose responses hyper still holds.
    Busy { requests: usize },
}

/// Why a connection was closed by its bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expired {
    /// No request within the idle timeout.
    Idle,
    /// A request head did not complete within the header-read timeout.
    HeaderRead,
}

impl Expired {
    /// The `reason` label of `warden_http_connections_closed_total`.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Expired::Idle => "idle-timeout",
            Expired::HeaderRead => "header-read-timeout",
        }
    }
}

/// One connection's phase, shared by its stream, its service and its
/// watchdog.
#[derive(Debug)]
pub(super) struct Tracker {
    phase: Mutex<Phase>,
    changed: Notify,
    /// Set when a write failed for want of progress.
    write_timed_out: AtomicBool,
    /// Requests in progress over all the server's connections.
    server_requests: Arc<watch::Sender<usize>>,
}

impl Tracker {
    /// A connection just accepted: idle until its first byte. Its
    /// requests count in `server_requests` while they are in progress.
    pub(super) fn new(server_requests: Arc<watch::Sender<usize>>) -> Arc<Self> {
        Arc::new(Tracker {
            phase: Mutex::new(Phase::Idle {
                since: Instant::now(),
            }),
            changed: Notify::new(),
            write_timed_out: AtomicBool::new(false),
            server_requests,
        })
    }

    /// Whether the connection ended because the client stopped reading.
    pub(super) fn write_timed_out(&self) -> bool {
        self.write_timed_out.load(Ordering::Relaxed)
    }

    /// A request's head was parsed; the request is in progress until the
    /// returned guard is dropped (with the response body).
    pub(super) fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.server_requests.send_modify(|requests| *requests += 1);
        self.update(|phase| match phase {
            Phase::Busy { requests } => Phase::Busy {
                requests: requests + 1,
            },
            Phase::Idle { .. } | Phase::ReadingHead { .. } => Phase::Busy { requests: 1 },
        });
        RequestGuard {
            tracker: self.clone(),
        }
    }

    /// Bytes arrived: on an idle connection, they begin a request head.
    fn bytes_read(&self) {
        let mut phase = self.lock();
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::ReadingHead {
                since: Instant::now(),
            };
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// A write made progress. hyper drops a response body once it has
    /// taken its last bytes, which may still be queued for the client: the
    /// idle time counts from the last of them. So does the time of a head
    /// that arrived meanwhile (a pipelined request), since hyper parses it
    /// only once the response before it is written; until then the write
    /// timeout bounds the connection.
    fn bytes_written(&self) {
        match &mut *self.lock() {
            // Only later: the watchdog wakes at the old deadline and looks again.
            Phase::Idle { since } | Phase::ReadingHead { since } => *since = Instant::now(),
            Phase::Busy { .. } => {}
        }
    }

    fn request_finished(&self) {
        self.server_requests.send_modify(|requests| *requests -= 1);
        self.update(|phase| match phase {
            Phase::Busy { requests } if requests > 1 => Phase::Busy {
                requests: requests - 1,
            },
            _ => Phase::Idle {
                since: Instant::now(),
            },
        });
    }

    /// Resolves when the connection has been idle, or reading one request
    /// head, for longer than `limits` allow. Never resolves while a request
    /// is in progress: the request timeout and the write timeout bound that.
    pub(super) async fn expired(&self, limits: ConnectionLimits) -> Expired {
        loop {
            // Registered before the phase is read, so no change is missed.
            let changed = self.changed.notified();
            let deadline = match *self.lock() {
                Phase::Idle { since } => Some((since + limits.idle, Expired::Idle)),
                Phase::ReadingHead { since } => {
                    Some((since + limits.header_read, Expired::HeaderRead))
                }
                Phase::Busy { .. } => None,
            };
            match deadline {
                Some((deadline, why)) if deadline <= Instant::now() => return why,
                Some((deadline, _)) => tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = changed => {}
                },
                None => changed.await,
            }
        }
    }

    fn update(&self, next: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.lock();
        *phase = next(*phase);
        drop(phase);
        self.changed.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request in progress; dropping it (with the response body that holds
/// it) ends the request for its connection's [`Tracker`].
#[derive(Debug)]
pub(super) struct RequestGuard {
    tracker: Arc<Tracker>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.tracker.request_finished();
    }
}

/// A response body that keeps its request in progress until hyper has
/// written it, or dropped it with the connection.
#[derive(Debug)]
pub(super) struct TrackedBody<B> {
    body: B,
    _request: RequestGuard,
}

impl<B> TrackedBody<B> {
    pub(super) fn new(body: B, request: RequestGuard) -> Self {
        TrackedBody {
            body,
            _request: request,
        }
    }
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A client's stream that tells its [`Tracker`] when bytes arrive and fails
/// a write that makes no progress for the write timeout, so that hyper
/// drops the connection and the response it was holding.
pub(super) struct GuardedStream<S> {
    stream: S,
    tracker: Arc<Tracker>,
    write_timeout: Duration,
    /// Running while a write waits for the client to read.
    write_stall: Option<Pin<Box<Sleep>>>,
}

impl<S> GuardedStream<S> {
    pub(super) fn new(stream: S, tracker: Arc<Tracker>, write_timeout: Duration) -> Self {
        GuardedStream {
            stream,
            tracker,
            write_timeout,
            write_stall: None,
        }
    }

    /// Passes on a write's progress, or fails it once it has waited for the
    /// write timeout without any.
    fn bound_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if let Poll::Ready(result) = write {
            self.write_stall = None;
            if result.is_ok() {
                self.tracker.bytes_written();
            }
            return Poll::Ready(result);
        }
        let timeout = self.write_timeout;
        let stall = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(stall.as_mut().poll(cx));
        self.tracker.write_timed_out.store(true, Ordering::Relaxed);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read nothing of the response within the write timeout",
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.tracker.bytes_read();
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let write = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.bound_write(cx, write)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let write = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.bound_write(cx, write)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flush = Pin::new(&mut this.stream).poll_flush(cx);
        this.bound_write(cx, flush)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

//! Streaming calls: `execute-stream` of world 0.2, fed from an
//! [`AsyncRead`] and read back as one.
//!
//! A streaming call runs on a Tokio task of its own, in a fresh instance,
//! under the plugin's limits like any other call. Between the caller and the
//! guest there are two bounded hand-offs and nothing else:
//!
//! - input: the guest's reads are served straight from the caller's reader
//!   into the guest's buffer ([`InputProducer`]); nothing is read ahead;
//! - output: the guest's writes are copied into a pipe of
//!   [`STREAM_BUFFER_BYTES`] that the caller reads ([`OutputConsumer`]). When
//!   the pipe is full the guest's write waits (backpressure), so a slow
//!   reader never makes the host buffer more.
//!
//! Both count their bytes against the stream limits and note when either
//! side last moved; a call where neither side moves for
//! [`Limits::stream_idle_timeout`] fails with [`Error::StreamIdle`], so a
//! guest that never reads or never finishes, or a caller that stopped
//! reading, holds its instance no longer than that.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wasmtime::component::{
    Destination, FutureConsumer, Source, StreamConsumer, StreamProducer, StreamReader,
    StreamResult, VecBuffer,
};
use wasmtime::{Store, StoreContextMut};

use crate::bindings::v0_2::warden::plugin::types::PluginError as PluginErrorV0_2;
use crate::call::{self, GuestWork};
use crate::capabilities::InstanceOptions;
use crate::error::Error;
use crate::guest::{AsyncGuest, Guest};
use crate::limits::Limits;
use crate::plugin::Plugin;
use crate::report::{Outcome, Report};
use crate::state::HostState;

/// Bytes of the guest's output the host holds for a caller that has not
/// read them yet: past this the guest's writes wait. Large enough that a
/// reader keeping up never stalls the guest, small enough that thousands
/// of streaming calls hold little.
pub const STREAM_BUFFER_BYTES: usize = 64 << 10;

/// What a finished streaming call moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Streamed {
    /// Bytes the plugin read from the input.
    pub bytes_in: u64,
    /// Bytes the plugin wrote to the output.
    pub bytes_out: u64,
}

/// The output of a streaming call, as the plugin writes it: an
/// [`AsyncRead`] that ends when the call ends. Whether it ended well is the
/// [`StreamOutcome`]'s to say. Dropping it stops the guest's writes.
#[derive(Debug)]
pub struct OutputStream {
    pipe: DuplexStream,
}

impl AsyncRead for OutputStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.pipe).poll_read(cx, buf)
    }
}

/// How a streaming call ended, with its report: a future that resolves once
/// the call is over. The call runs whether or not this is awaited.
#[derive(Debug)]
pub struct StreamOutcome {
    task: JoinHandle<Outcome<Streamed>>,
}

impl Future for StreamOutcome {
    type Output = Outcome<Streamed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.task).poll(cx).map(|joined| {
            joined.unwrap_or_else(|err| Outcome {
                result: Err(Error::Internal(wasmtime::Error::msg(format!(
                    "the streaming call's task failed: {err}"
                )))),
                report: Report::default(),
            })
        })
    }
}

/// Starts a streaming call of `plugin`'s `action` on `input`; see
/// [`Plugin::execute_stream`].
pub(crate) fn start<R>(plugin: &Plugin, action: &str, input: R) -> (OutputStream, StreamOutcome)
where
    R: AsyncRead + Send + 'static,
{
    start_until(plugin, action, input, std::future::pending())
}

/// As [`start`], but the call ends with the error `stop` resolves to if that
/// comes first: the call is dropped, which frees its instance at once and
/// ends the output. `stop` lives as long as the call, so it can also hold
/// what the call must hold while it runs (a registry's count of calls).
pub(crate) fn start_until<R, S>(
    plugin: &Plugin,
    action: &str,
    input: R,
    stop: S,
) -> (OutputStream, StreamOutcome)
where
    R: AsyncRead + Send + 'static,
    S: Future<Output = Error> + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(STREAM_BUFFER_BYTES);
    let call = StreamCall {
        plugin: plugin.clone(),
        action: action.to_owned(),
        input: Box::pin(input),
        output: ours,
    };
    let plugin = plugin.clone();
    let task = tokio::spawn(async move {
        let options = InstanceOptions::default();
        tokio::select! {
            outcome = call::in_new_instance(plugin.loaded(), &options, call) => outcome,
            err = stop => Outcome {
                result: Err(err),
                report: Report::default(),
            },
        }
    });
    (OutputStream { pipe: theirs }, StreamOutcome { task })
}

/// A streaming call refused before it started: its output is empty and its
/// outcome is `error`.
pub(crate) fn refused(error: Error) -> (OutputStream, StreamOutcome) {
    // The writing end is dropped at once, so the output reads as ended.
    let (_, theirs) = tokio::io::duplex(1);
    let task = tokio::spawn(async move {
        Outcome {
            result: Err(error),
            report: Report::default(),
        }
    });
    (OutputStream { pipe: theirs }, StreamOutcome { task })
}

/// One streaming call: instantiate, `init`, `execute-stream`, then wait for
/// the output to end and the outcome to be written.
struct StreamCall {
    plugin: Plugin,
    action: String,
    input: Pin<Box<dyn AsyncRead + Send>>,
    output: DuplexStream,
}

impl GuestWork for StreamCall {
    type Output = Streamed;

    fn check(&self) -> Result<(), Error> {
        if self.plugin.streams() {
            Ok(())
        } else {
            Err(Error::StreamingUnsupported)
        }
    }

    async fn run(self, store: &mut Store<HostState>) -> wasmtime::Result<Result<Streamed, Error>> {
        let limits = self.plugin.loaded().sandbox.limits.clone();
        let guest = self.plugin.guest_pre().instantiate(&mut *store).await?;
        match guest.init(&mut *store).await? {
            Ok(metadata) => self.plugin.remember(metadata),
            Err(err) => return Ok(Err(Error::InitFailed(err))),
        }
        let Guest::V0_2(AsyncGuest {
            streaming: Some(streaming),
            ..
        }) = &guest
        else {
            return Ok(Err(Error::StreamingUnsupported));
        };
        let traffic = Arc::new(Traffic::new(&limits));
        let input = StreamReader::new(
            &mut *store,
            InputProducer {
                reader: self.input,
                traffic: traffic.clone(),
            },
        )?;
        let consumer_traffic = traffic.clone();
        let (action, output) = (self.action, self.output);
        let exchange = store.run_concurrent(
            async move |accessor| -> wasmtime::Result<Result<(), Error>> {
                let (output_stream, outcome) = streaming
                    .call_execute_stream(accessor, action, input)
                    .await?;
                let (ended, output_ended) = oneshot::channel();
                let (written, outcome_written) = oneshot::channel();
                accessor.with(|mut access| {
                    output_stream.pipe(
                        &mut access,
                        OutputConsumer {
                            pipe: output,
                            traffic: consumer_traffic,
                            ended: Some(ended),
                        },
                    )?;
                    outcome.pipe(
                        &mut access,
                        OutcomeConsumer {
                            written: Some(written),
                        },
                    )
                })?;
                let outcome = match outcome_written.await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        return Ok(Err(Error::StreamBroken(
                            "it dropped its outcome future without writing it".into(),
                        )));
                    }
                };
                if let Err(err) = outcome {
                    return Ok(Err(Error::Plugin(err.into())));
                }
                // The plugin said it succeeded; the call is over when its
                // output has ended too (or the caller stopped taking it).
                let _ = output_ended.await;
                Ok(Ok(()))
            },
        );
        let finished = tokio::select! {
            finished = exchange => Some(finished),
            () = traffic.stalled() => None,
        };
        // A limit the traffic hit, or an input that broke off, explains
        // whatever the guest did next, stalling included.
        if let Some(err) = traffic.failure() {
            return Ok(Err(err));
        }
        let Some(finished) = finished else {
            return Ok(Err(Error::StreamIdle {
                limit: limits.stream_idle_timeout,
            }));
        };
        Ok(finished??.map(|()| traffic.totals()))
    }
}

/// The two directions of a streaming call: bytes moved, the limits on
/// them, and when either last moved.
struct Traffic {
    started: Instant,
    /// Nanoseconds from `started` to the last time bytes moved.
    last_moved: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    max_in: u64,
    max_out: u64,
    idle_timeout: Duration,
    input_exceeded: AtomicBool,
    output_exceeded: AtomicBool,
    /// Why the caller's reader failed, if it did.
    input_error: Mutex<Option<io::Error>>,
}

impl Traffic {
    fn new(limits: &Limits) -> Self {
        Traffic {
            started: Instant::now(),
            last_moved: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            max_in: limits.max_stream_input_bytes,
            max_out: limits.max_stream_output_bytes,
            idle_timeout: limits.stream_idle_timeout,
            input_exceeded: AtomicBool::new(false),
            output_exceeded: AtomicBool::new(false),
            input_error: Mutex::new(None),
        }
    }

    fn moved(&self) {
        let since_start = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_moved.store(since_start, Ordering::Relaxed);
    }

    /// Resolves once neither side has moved for the idle timeout.
    async fn stalled(&self) {
        loop {
            let last = self.started + Duration::from_nanos(self.last_moved.load(Ordering::Relaxed));
            let stall_at = last + self.idle_timeout;
            if Instant::now() >= stall_at {
                return;
            }
            tokio::time::sleep_until(stall_at.into()).await;
        }
    }

    /// How many more input bytes the call may take.
    fn input_room(&self) -> u64 {
        self.max_in
            .saturating_sub(self.bytes_in.load(Ordering::Relaxed))
    }

    /// How many more output bytes the call may give.
    fn output_room(&self) -> u64 {
        self.max_out
            .saturating_sub(self.bytes_out.load(Ordering::Relaxed))
    }

    /// What went wrong with the traffic itself, if anything: a limit the
    /// call went past, or the caller's reader failing.
    fn failure(&self) -> Option<Error> {
        let input_error = self
            .input_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(err) = input_error {
            return Some(Error::io("reading the input of a streaming call", err));
        }
        self.exceeded()
    }

    /// The limit the call went past, if any.
    fn exceeded(&self) -> Option<Error> {
        if self.input_exceeded.load(Ordering::Relaxed) {
            return Some(Error::InputTooLarge {
                size: usize::try_from(self.max_in.saturating_add(1)).unwrap_or(usize::MAX),
                limit: usize::try_from(self.max_in).unwrap_or(usize::MAX),
            });
        }
        if self.output_exceeded.load(Ordering::Relaxed) {
            return Some(Error::OutputTooLarge {
                size: usize::try_from(self.max_out.saturating_add(1)).unwrap_or(usize::MAX),
                limit: usize::try_from(self.max_out).unwrap_or(usize::MAX),
            });
        }
        None
    }

    fn totals(&self) -> Streamed {
        Streamed {
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// Serves the guest's reads of its input from the caller's reader, straight
/// into the guest's buffer.
struct InputProducer {
    reader: Pin<Box<dyn AsyncRead + Send>>,
    traffic: Arc<Traffic>,
}

impl StreamProducer<HostState> for InputProducer {
    type Item = u8;
    type Buffer = VecBuffer<u8>;

    fn poll_produce<'a>(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut store: StoreContextMut<'a, HostState>,
        destination: Destination<'a, u8, VecBuffer<u8>>,
        finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        // A zero-length read asks whether input is ready; `AsyncRead` cannot
        // tell without reading, so say yes and let the next read wait.
        if destination.remaining(&mut store) == Some(0) {
            return Poll::Ready(Ok(StreamResult::Completed));
        }
        let mut direct = destination.as_direct(store, STREAM_BUFFER_BYTES);
        let room = self.traffic.input_room();
        let window = direct.remaining();
        // One byte past the limit is enough to know the input is too large.
        let take = window
            .len()
            .min(usize::try_from(room.saturating_add(1)).unwrap_or(usize::MAX));
        let mut buf = ReadBuf::new(&mut window[..take]);
        match self.reader.as_mut().poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                Poll::Ready(Ok(StreamResult::Dropped))
            }
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len();
                if read as u64 > room {
                    // The byte past the limit is in the guest's buffer but
                    // never delivered: its input ends here and the call
                    // fails with the limit.
                    self.traffic.input_exceeded.store(true, Ordering::Relaxed);
                    return Poll::Ready(Ok(StreamResult::Dropped));
                }
                direct.mark_written(read);
                self.traffic
                    .bytes_in
                    .fetch_add(read as u64, Ordering::Relaxed);
                self.traffic.moved();
                Poll::Ready(Ok(StreamResult::Completed))
            }
            // The caller's reader failed: the guest's input ends there, and
            // the call fails with why, whatever the guest makes of it.
            Poll::Ready(Err(err)) => {
                *self
                    .traffic
                    .input_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(err);
                Poll::Ready(Ok(StreamResult::Dropped))
            }
            Poll::Pending if finish => Poll::Ready(Ok(StreamResult::Cancelled)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Takes the guest's output into the caller's pipe, as fast as the caller
/// reads it and no faster.
struct OutputConsumer {
    pipe: DuplexStream,
    traffic: Arc<Traffic>,
    /// Told when the output has ended (or cannot go on).
    ended: Option<oneshot::Sender<()>>,
}

impl OutputConsumer {
    fn end(&mut self) -> Poll<wasmtime::Result<StreamResult>> {
        if let Some(ended) = self.ended.take() {
            let _ = ended.send(());
        }
        Poll::Ready(Ok(StreamResult::Dropped))
    }
}

impl Drop for OutputConsumer {
    fn drop(&mut self) {
        // The guest closed its output: wasmtime drops the consumer.
        if let Some(ended) = self.ended.take() {
            let _ = ended.send(());
        }
    }
}

impl StreamConsumer<HostState> for OutputConsumer {
    type Item = u8;

    fn poll_consume(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        store: StoreContextMut<'_, HostState>,
        source: Source<'_, u8>,
        finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        let mut direct = source.as_direct(store);
        let available = direct.remaining();
        if available.is_empty() {
            return Poll::Ready(Ok(StreamResult::Completed));
        }
        let room = self.traffic.output_room();
        if room == 0 {
            self.traffic.output_exceeded.store(true, Ordering::Relaxed);
            return self.end();
        }
        let offer = available
            .len()
            .min(usize::try_from(room).unwrap_or(usize::MAX));
        match Pin::new(&mut self.pipe).poll_write(cx, &available[..offer]) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => self.end(),
            Poll::Ready(Ok(written)) => {
                direct.mark_read(written);
                self.traffic
                    .bytes_out
                    .fetch_add(written as u64, Ordering::Relaxed);
                self.traffic.moved();
                Poll::Ready(Ok(StreamResult::Completed))
            }
            Poll::Pending if finish => Poll::Ready(Ok(StreamResult::Cancelled)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Receives the value of the guest's outcome future.
struct OutcomeConsumer {
    written: Option<oneshot::Sender<Result<(), PluginErrorV0_2>>>,
}

impl FutureConsumer<HostState> for OutcomeConsumer {
    type Item = Result<(), PluginErrorV0_2>;

    fn poll_consume(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        mut store: StoreContextMut<'_, HostState>,
        mut source: Source<'_, Self::Item>,
        _: bool,
    ) -> Poll<wasmtime::Result<()>> {
        let mut value = None;
        source.read(&mut store, &mut value)?;
        if let (Some(value), Some(written)) = (value, self.written.take()) {
            let _ = written.send(value);
        }
        Poll::Ready(Ok(()))
    }
}

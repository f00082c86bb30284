//! Streaming calls (`execute-stream`, world 0.2) against a guest that
//! misbehaves on either side of its streams: each ends in its exact error,
//! within its limit, and leaves the runtime holding no instance and serving
//! the next call. A caller that stops reading holds the guest instead of
//! making the host buffer, and one that walks away ends the call.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use warden::{
    Error, ErrorKind, LimitRefusal, LimitedResource, Limits, Outcome, Plugin, PluginError,
    Registry, STREAM_BUFFER_BYTES, Sandbox, Streamed,
};
use warden_tests::{guests, proc_status_bytes};

use crate::{load, runtime};

/// A short idle timeout, for the cases that must stall.
const IDLE: Duration = Duration::from_millis(300);

/// A short whole-call timeout, for the cases that must run out of time.
const TIMEOUT: Duration = Duration::from_millis(500);

/// Longer than any case should take: a call still running past it is a hang.
const HANG: Duration = Duration::from_secs(30);

/// Limits for the hostile stream cases: the whole call and the idle time
/// are long enough not to interfere unless a case adjusts them.
fn limits(adjust: impl FnOnce(&mut Limits)) -> Limits {
    let mut limits = Limits::default();
    limits.timeout = Duration::from_secs(10);
    limits.stream_idle_timeout = Duration::from_secs(10);
    limits.memory_bytes = 16 << 20;
    adjust(&mut limits);
    limits
}

async fn hostile_v2(runtime: &warden::Runtime, limits: Limits) -> Plugin {
    load(runtime, guests::HOSTILE_V2, Sandbox::with_limits(limits)).await
}

/// A streaming call whose output is read to its end while it runs: what the
/// caller read, the outcome, and how long the call took.
async fn drained(
    plugin: &Plugin,
    action: &str,
    input: impl AsyncRead + Send + 'static,
) -> (Vec<u8>, Outcome<Streamed>, Duration) {
    let started = Instant::now();
    let (mut output, outcome) = plugin.execute_stream(action, input);
    let read = async {
        let mut collected = Vec::new();
        output.read_to_end(&mut collected).await.unwrap();
        collected
    };
    let (collected, outcome) = tokio::time::timeout(HANG, async { tokio::join!(read, outcome) })
        .await
        .unwrap_or_else(|_| panic!("`{action}` still running after {HANG:?}"));
    (collected, outcome, started.elapsed())
}

/// A runtime that, after a hostile streaming call, holds no instance and
/// serves a whole call and a streaming call of the same plugin.
async fn assert_healthy(runtime: &warden::Runtime, plugin: &Plugin) {
    assert_eq!(runtime.instances_in_use(), 0, "an instance is still held");
    let whole = plugin.execute("echo", b"still here").await;
    assert_eq!(whole.result.unwrap(), b"still here");
    let (output, outcome, _) = drained(plugin, "echo", &b"streams too"[..]).await;
    assert_eq!(output, b"streams too");
    let streamed = outcome.result.unwrap();
    assert_eq!((streamed.bytes_in, streamed.bytes_out), (11, 11));
    assert_eq!(runtime.instances_in_use(), 0);
}

#[tokio::test]
async fn a_guest_that_never_reads_stalls_at_the_idle_timeout() {
    let runtime = runtime();
    let plugin = hostile_v2(&runtime, limits(|l| l.stream_idle_timeout = IDLE)).await;
    let (output, outcome, elapsed) = drained(&plugin, "never-reads", &b"unread"[..]).await;
    match outcome.result {
        Err(Error::StreamIdle { limit }) => assert_eq!(limit, IDLE),
        other => panic!("expected StreamIdle, got {other:?}"),
    }
    assert!(output.is_empty());
    assert!(
        elapsed >= IDLE && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    assert_healthy(&runtime, &plugin).await;
}

#[tokio::test]
async fn a_guest_that_never_reads_is_stopped_by_the_call_timeout_when_that_comes_first() {
    let runtime = runtime();
    let plugin = hostile_v2(&runtime, limits(|l| l.timeout = TIMEOUT)).await;
    let (output, outcome, elapsed) = drained(&plugin, "never-reads", &b"unread"[..]).await;
    match outcome.result {
        Err(Error::Timeout { limit }) => assert_eq!(limit, TIMEOUT),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(output.is_empty());
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_healthy(&runtime, &plugin).await;
}

#[tokio::test]
async fn a_guest_that_never_closes_its_output_stalls_at_the_idle_timeout() {
    let runtime = runtime();
    let plugin = hostile_v2(&runtime, limits(|l| l.stream_idle_timeout = IDLE)).await;
    let (output, outcome, _) = drained(&plugin, "never-closes", &b"some input"[..]).await;
    match outcome.result {
        Err(Error::StreamIdle { limit }) => assert_eq!(limit, IDLE),
        other => panic!("expected StreamIdle, got {other:?}"),
    }
    // What it wrote before it stopped reached the caller.
    assert_eq!(output, b"done");
    assert_healthy(&runtime, &plugin).await;
}

/// The caller holds the output and reads nothing: the guest fills the
/// host's buffer, then waits, and the call stalls. Afterwards the caller can
/// read no more than the buffer held.
#[tokio::test]
async fn a_guest_writing_forever_to_a_caller_that_reads_nothing_stalls() {
    let runtime = runtime();
    let plugin = hostile_v2(&runtime, limits(|l| l.stream_idle_timeout = IDLE)).await;
    let (mut output, outcome) = plugin.execute_stream("writes-forever", tokio::io::empty());
    let outcome = tokio::time::timeout(HANG, outcome).await.unwrap();
    match outcome.result {
        Err(Error::StreamIdle { limit }) => assert_eq!(limit, IDLE),
        other => panic!("expected StreamIdle, got {other:?}"),
    }
    let mut buffered = Vec::new();
    output.read_to_end(&mut buffered).await.unwrap();
    assert!(
        buffered.len() <= STREAM_BUFFER_BYTES && buffered.iter().all(|&byte| byte == b'x'),
        "{} bytes buffered",
        buffered.len()
    );
    assert_healthy(&runtime, &plugin).await;
}

#[tokio::test]
async fn a_guest_writing_forever_to_a_reader_that_keeps_up_stops_at_the_output_limit() {
    const MAX_OUT: u64 = 1 << 20;
    let runtime = runtime();
    let plugin = hostile_v2(&runtime, limits(|l| l.max_stream_output_bytes = MAX_OUT)).await;
    let (output, outcome, _) = drained(&plugin, "writes-forever", tokio::io::empty()).await;
    match outcome.result {
        Err(Error::OutputTooLarge { size, limit }) => {
            assert_eq!((size, limit), (MAX_OUT as usize + 1, MAX_OUT as usize));
        }
        other => panic!("expected OutputTooLarge, got {other:?}"),
    }
    // Exactly the limit reached the caller, not a byte more.
    assert_eq!(output.len() as u64, MAX_OUT);
    assert!(output.iter().all(|&byte| byte == b'x'));
    assert_healthy(&runtime, &plugin).await;
}

/// wit-bindgen writes the default a future was made with when its writer is
/// dropped, so the guest's own default is the outcome the host reads.
#[tokio::test]
async fn a_guest_that_drops_its_outcome_fails_with_the_default_it_chose() {
    let runtime = runtime();
    let plugin = hostile_v2(&runtime, limits(|_| {})).await;
    let (output, outcome, _) = drained(&plugin, "drops-future", &b"input"[..]).await;
    match outcome.result {
        Err(Error::Plugin(PluginError::Failed(message))) => {
            assert_eq!(message, "the plugin dropped its outcome");
        }
        other => panic!("expected the dropped outcome's default, got {other:?}"),
    }
    assert_eq!(output, b"ok");
    assert_healthy(&runtime, &plugin).await;
}

/// The guest spins for 2 s before it reads: the call timeout stops it well
/// before, though it never calls the host.
#[tokio::test]
async fn a_guest_that_spins_before_reading_is_stopped_at_the_call_timeout() {
    let runtime = runtime();
    let plugin = hostile_v2(&runtime, limits(|l| l.timeout = TIMEOUT)).await;
    let (output, outcome, elapsed) = drained(&plugin, "reads-after-deadline", &b"late"[..]).await;
    match outcome.result {
        Err(Error::Timeout { limit }) => assert_eq!(limit, TIMEOUT),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(output.is_empty());
    assert!(elapsed < Duration::from_millis(1_900), "{elapsed:?}");
    assert_healthy(&runtime, &plugin).await;
}

#[tokio::test]
async fn a_streaming_loop_is_stopped_at_the_call_timeout() {
    let runtime = runtime();
    let plugin = hostile_v2(&runtime, limits(|l| l.timeout = TIMEOUT)).await;
    let (_, outcome, elapsed) = drained(&plugin, "loop", tokio::io::empty()).await;
    match outcome.result {
        Err(Error::Timeout { limit }) => assert_eq!(limit, TIMEOUT),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_healthy(&runtime, &plugin).await;
}

/// Input past `max_stream_input_bytes` fails the call, and the guest (which
/// echoes what it reads) never saw more than the limit.
#[tokio::test]
async fn input_past_the_stream_limit_fails_and_never_reaches_the_guest() {
    const MAX_IN: u64 = 100_000;
    let runtime = runtime();
    let plugin = hostile_v2(&runtime, limits(|l| l.max_stream_input_bytes = MAX_IN)).await;
    let input: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let (output, outcome, _) = drained(&plugin, "echo", std::io::Cursor::new(input.clone())).await;
    match outcome.result {
        Err(Error::InputTooLarge { size, limit }) => {
            assert_eq!((size, limit), (MAX_IN as usize + 1, MAX_IN as usize));
        }
        other => panic!("expected InputTooLarge, got {other:?}"),
    }
    assert!(
        output.len() as u64 <= MAX_IN,
        "{} bytes echoed",
        output.len()
    );
    assert_eq!(output, input[..output.len()]);
    assert_healthy(&runtime, &plugin).await;
}

/// A guest that keeps every chunk of a large stream runs into its memory
/// limit, reported as such though the guest then traps.
#[tokio::test]
async fn a_guest_keeping_a_large_stream_hits_its_memory_limit() {
    let runtime = runtime();
    let plugin = hostile_v2(&runtime, limits(|_| {})).await;
    let input = tokio::io::repeat(b'm').take(64 << 20);
    let (output, outcome, _) = drained(&plugin, "grow-memory", input).await;
    match outcome.result {
        Err(Error::MemoryLimit(LimitRefusal {
            resource: LimitedResource::LinearMemory,
            limit,
            ..
        })) => assert_eq!(limit, 16 << 20),
        other => panic!("expected a linear-memory limit, got {other:?}"),
    }
    assert!(output.is_empty());
    assert_healthy(&runtime, &plugin).await;
}

/// A caller that drops the output mid-call ends the call: the guest's next
/// write fails, its outcome resolves, and no instance is held.
#[tokio::test]
async fn a_caller_that_drops_the_output_mid_call_ends_the_call() {
    let runtime = runtime();
    let plugin = hostile_v2(&runtime, limits(|_| {})).await;
    let started = Instant::now();
    let (mut output, outcome) = plugin.execute_stream("writes-forever", tokio::io::empty());
    let mut first = vec![0; 1000];
    output.read_exact(&mut first).await.unwrap();
    drop(output);
    let outcome = tokio::time::timeout(HANG, outcome).await.unwrap();
    let streamed = outcome
        .result
        .expect("the guest ends well when its reader leaves");
    assert!(
        streamed.bytes_out >= 1000 && streamed.bytes_out <= 2 * STREAM_BUFFER_BYTES as u64,
        "{streamed:?}"
    );
    // Well before the 10 s idle timeout could have ended it.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_healthy(&runtime, &plugin).await;
}

/// A caller that stops reading holds the guest (backpressure): for 2 s of a
/// guest that writes forever, the process grows by no more than a few MiB,
/// and the guest wrote no more than the host's buffer holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_holds_the_guest_not_the_hosts_memory() {
    /// A few MiB: allocator noise and the test's own buffers, far below the
    /// hundreds of MiB 2 s of unchecked 64 KiB writes would take.
    const GROWTH_ALLOWED: u64 = 4 << 20;
    let runtime = runtime();
    let plugin = hostile_v2(&runtime, limits(|_| {})).await;
    let (output, mut outcome) = plugin.execute_stream("writes-forever", tokio::io::empty());
    // Let the guest start and fill the buffer before taking the baseline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = proc_status_bytes("self", "VmRSS").unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = proc_status_bytes("self", "VmRSS").unwrap();
    assert!(
        after.saturating_sub(before) <= GROWTH_ALLOWED,
        "the process grew by {} bytes while nobody read",
        after - before
    );
    // The guest is held, not finished.
    assert!(
        poll_once(&mut outcome).await.is_none(),
        "the call ended though its reader is alive"
    );
    assert_eq!(runtime.instances_in_use(), 1);
    drop(output);
    let streamed = tokio::time::timeout(HANG, outcome)
        .await
        .unwrap()
        .result
        .unwrap();
    assert!(
        streamed.bytes_out <= STREAM_BUFFER_BYTES as u64,
        "the guest got {} bytes out with nobody reading",
        streamed.bytes_out
    );
    assert_healthy(&runtime, &plugin).await;
}

/// Polls `future` once: its output if it is ready now.
async fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut *future).poll(cx) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_counts_a_stream_as_a_call_and_cancels_it_when_its_grace_ends() {
    let runtime = runtime();
    let registry = Registry::new(runtime.clone());
    // Only the shutdown may end this stream: its own limits are far off.
    let limits = limits(|l| {
        l.timeout = Duration::from_secs(120);
        l.stream_idle_timeout = Duration::from_secs(120);
    });
    registry
        .load_file("hostile2", guests::HOSTILE_V2, Sandbox::with_limits(limits))
        .await
        .unwrap();
    let (output, outcome) = registry.execute_stream("nope", "echo", tokio::io::empty());
    let err = outcome.await.result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownPlugin, "{err}");
    assert_eq!(read_all(output).await, b"");

    // `never-closes` writes `done`, then holds its output open.
    let (mut output, outcome) = registry.execute_stream("hostile2", "never-closes", &b"in"[..]);
    let mut done = [0; 4];
    output.read_exact(&mut done).await.unwrap();
    assert_eq!(&done, b"done");
    let stopped = tokio::time::timeout(HANG, registry.shutdown(Duration::from_millis(200)))
        .await
        .expect("the shutdown waited out the stream's own limits");
    assert_eq!((stopped.finished, stopped.cancelled), (0, 1));
    let err = outcome.await.result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    assert_eq!(read_all(output).await, b"", "the output ends with the call");
    assert_eq!(runtime.instances_in_use(), 0);

    // Once shut down, a stream is refused before it starts.
    let (output, outcome) = registry.execute_stream("hostile2", "echo", &b"late"[..]);
    let err = outcome.await.result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    assert_eq!(read_all(output).await, b"");
    assert_eq!(runtime.instances_in_use(), 0);
}

/// The rest of a streaming call's output, to its end.
async fn read_all(mut output: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut collected = Vec::new();
    tokio::time::timeout(HANG, output.read_to_end(&mut collected))
        .await
        .expect("the output never ended")
        .unwrap();
    collected
}

//! A world 0.2 plugin that misbehaves on purpose, so Warden's tests can prove
//! that the host contains an async or streaming guest as it does a 0.1 one.
//!
//! Actions of `execute` (the whole input):
//! - `loop`: spins forever without calling the host;
//! - `grow-memory`: allocates and touches 1 MiB blocks until allocation fails;
//! - `echo`: the input, unchanged;
//! - `hoard-streams` (`N`): makes `N` streams and keeps them all until it
//!   returns `held N streams` (each is two component handles);
//! - `kv-set` (`KEY=VALUE`) and `kv-get` (`KEY`): the key-value store's
//!   bucket `default`; `kv-get` of a missing key fails `no key KEY`;
//! - `nap` (`MS`, or `forever`): waits `MS` milliseconds (or the longest
//!   duration there is) with WASI 0.3's `monotonic-clock.wait-for`, and
//!   answers `napped N ns`, as that clock measured the wait;
//! - `naps` (`MS,MS,...`): waits all of them at once, and answers the
//!   milliseconds of each in the order the waits ended (`10,20,30`);
//! - `nap-blocking` (`MS`): waits `MS` milliseconds with WASI 0.3 and, at the
//!   same time, twice as long in a WASI 0.2 `block`, which holds the instance
//!   until it returns; answers `napped N ns` for both;
//! - `http-get` (`URL`): the body of a GET of `URL`, through
//!   `wasi:http/outgoing-handler`. A failure of either capability fails the
//!   call with its error code as text.
//!
//! Actions of `execute-stream`. Each returns its output stream and outcome
//! future at once and does its work in a task of its own, which outlives the
//! call:
//! - `never-reads`: never reads the input, never writes, never closes the
//!   output and never writes the outcome; it holds all three forever, idle
//!   (no CPU);
//! - `never-closes`: reads all the input, writes `done`, then holds the
//!   output open forever, idle, and never writes the outcome;
//! - `writes-forever`: never reads the input (but holds it) and writes 64 KiB
//!   chunks of `x` until the reader of the output drops it; then the outcome
//!   is `ok`;
//! - `drops-future`: reads all the input, writes `ok`, closes the output and
//!   drops the outcome's writer without writing it. The component model then
//!   delivers the default the future was made with:
//!   `failed("the plugin dropped its outcome")`;
//! - `reads-after-deadline`: spins for 2 s of wall time without reading, then
//!   echoes the input chunk by chunk; the outcome is `ok`;
//! - `echo`: the input, unchanged, chunk by chunk; the outcome is `ok`;
//! - `grow-memory`: reads the input and keeps every chunk, writing nothing
//!   until the input ends; then writes `kept N bytes` and the outcome is `ok`;
//! - `loop`: spins forever without reading or writing.
//!
//! Either way an unknown action is `unknown-action(ACTION)` (for a stream,
//! after closing the empty output).
//!
//! `shutdown` logs `shutdown` (level info, context `lifecycle`) through
//! `wasi:logging`; then, when the environment variable `HOSTILE_SHUTDOWN`
//! (which only a grant makes visible) is `loop`, it spins forever.

wit_bindgen::generate!({
    path: "../../wit/v0.2",
    world: "warden:plugin/streaming-lifecycle-plugin@0.2.0",
    generate_all,
});

use std::cell::RefCell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use exports::warden::plugin::guest::Guest;
use exports::warden::plugin::lifecycle::Guest as Lifecycle;
use exports::warden::plugin::streaming::Guest as Streaming;
use futures::future::{join, join_all};
use warden::plugin::types::{Action, Metadata, PluginError};
use wasi::clocks0_2_12::monotonic_clock as monotonic_clock_0_2;
use wasi::clocks0_3_0::monotonic_clock;
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, OutgoingBody, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;
use wasi::keyvalue::store;
use wasi::logging::logging::{Level, log};
use wit_bindgen::{FutureReader, StreamReader, StreamResult, StreamWriter};

/// How many bytes one read asks for, and how many one `writes-forever` write
/// carries.
const CHUNK_BYTES: usize = 64 * 1024;

/// How long `reads-after-deadline` spins before it reads: longer than any
/// deadline the host's tests set for it.
const SPIN_BEFORE_READING: Duration = Duration::from_secs(2);

/// The outcome a stream's reader gets when the plugin drops the outcome's
/// writer without writing it (only `drops-future` does so on purpose).
const DROPPED_OUTCOME: &str = "the plugin dropped its outcome";

/// Every action: (name, what it does).
const ACTIONS: &[(&str, &str)] = &[
    ("loop", "Spins forever"),
    ("grow-memory", "Grows linear memory until allocation fails"),
    ("echo", "Returns the input unchanged"),
    ("hoard-streams", "Makes N streams and holds them all"),
    ("kv-set", "Sets KEY=VALUE in the key-value store"),
    ("kv-get", "The value of KEY in the key-value store"),
    ("nap", "Waits MS milliseconds on WASI 0.3's monotonic clock"),
    (
        "naps",
        "Waits MS,MS,... milliseconds at once; the order they ended",
    ),
    (
        "nap-blocking",
        "Waits MS milliseconds with WASI 0.3 beside a 0.2 block of twice that",
    ),
    ("http-get", "The body of a GET of the URL"),
    ("never-reads", "Streaming: never reads, writes or completes"),
    (
        "never-closes",
        "Streaming: writes `done`, then never closes",
    ),
    (
        "writes-forever",
        "Streaming: writes `x` until the reader drops",
    ),
    ("drops-future", "Streaming: drops its outcome unwritten"),
    ("reads-after-deadline", "Streaming: spins 2 s, then echoes"),
];

struct Hostile;

impl Guest for Hostile {
    async fn init() -> Result<Metadata, PluginError> {
        Ok(Metadata {
            name: "hostile-v2".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Misbehaves on purpose, whole and streaming".into(),
            actions: ACTIONS
                .iter()
                .map(|(name, description)| Action {
                    name: (*name).into(),
                    description: (*description).into(),
                    input_type: String::new(),
                    output_type: String::new(),
                })
                .collect(),
            authors: vec!["The Warden developers".into()],
            license: Some("Apache-2.0".into()),
            homepage: None,
        })
    }

    async fn execute(action: String, input: Vec<u8>) -> Result<Vec<u8>, PluginError> {
        match action.as_str() {
            "loop" => spin_forever(),
            "grow-memory" => grow_memory(),
            "echo" => Ok(input),
            "hoard-streams" => {
                let count = text(&input)?;
                let count = count
                    .parse()
                    .map_err(|_| PluginError::InvalidInput(format!("`{count}` is not a count")))?;
                Ok(hoard_streams(count).into_bytes())
            }
            "kv-set" => {
                let input = text(&input)?;
                let (key, value) = input.split_once('=').ok_or_else(|| {
                    PluginError::InvalidInput(format!("expected KEY=VALUE, not `{input}`"))
                })?;
                bucket()?.set(key, value.as_bytes()).map_err(kv_error)?;
                Ok(b"ok".to_vec())
            }
            "kv-get" => {
                let key = text(&input)?;
                bucket()?
                    .get(key)
                    .map_err(kv_error)?
                    .ok_or_else(|| PluginError::Failed(format!("no key {key}")))
            }
            "nap" => {
                let nanos = match text(&input)? {
                    "forever" => u64::MAX,
                    millis => nanos(millis)?,
                };
                let started = monotonic_clock::now();
                monotonic_clock::wait_for(nanos).await;
                let napped = monotonic_clock::now() - started;
                Ok(format!("napped {napped} ns").into_bytes())
            }
            "naps" => {
                let ended = RefCell::new(Vec::new());
                let naps = text(&input)?.split(',').map(|millis| {
                    let ended = &ended;
                    async move {
                        monotonic_clock::wait_for(nanos(millis)?).await;
                        ended.borrow_mut().push(millis);
                        Ok::<_, PluginError>(())
                    }
                });
                for nap in join_all(naps).await {
                    nap?;
                }
                Ok(ended.into_inner().join(",").into_bytes())
            }
            "nap-blocking" => {
                let nanos = nanos(text(&input)?)?;
                let started = monotonic_clock::now();
                let block = async {
                    monotonic_clock_0_2::subscribe_duration(nanos.saturating_mul(2)).block();
                };
                join(monotonic_clock::wait_for(nanos), block).await;
                let napped = monotonic_clock::now() - started;
                Ok(format!("napped {napped} ns").into_bytes())
            }
            "http-get" => http_get(text(&input)?).map_err(PluginError::Failed),
            _ => Err(PluginError::UnknownAction(action)),
        }
    }
}

impl Streaming for Hostile {
    async fn execute_stream(
        action: String,
        input: StreamReader<u8>,
    ) -> (StreamReader<u8>, FutureReader<Result<(), PluginError>>) {
        let (output, output_reader) = wit_stream::new::<u8>();
        let (outcome, outcome_reader) = wit_future::new::<Result<(), PluginError>>(|| {
            Err(PluginError::Failed(DROPPED_OUTCOME.into()))
        });
        wit_bindgen::spawn_local(stream_action(action, input, output, outcome));
        (output_reader, outcome_reader)
    }
}

impl Lifecycle for Hostile {
    async fn shutdown() {
        log(Level::Info, "lifecycle", "shutdown");
        if std::env::var("HOSTILE_SHUTDOWN").as_deref() == Ok("loop") {
            spin_forever();
        }
    }
}

/// The writer of a stream's outcome.
type Outcome = wit_bindgen::FutureWriter<Result<(), PluginError>>;

/// Runs one streaming action to its (mis)behaviour's end.
async fn stream_action(
    action: String,
    mut input: StreamReader<u8>,
    mut output: StreamWriter<u8>,
    outcome: Outcome,
) {
    let result = match action.as_str() {
        "never-reads" => return hold_forever((input, output, outcome)).await,
        "never-closes" => {
            while read_chunk(&mut input).await.is_some() {}
            output.write_all(b"done".to_vec()).await;
            return hold_forever((input, output, outcome)).await;
        }
        "writes-forever" => {
            while output.write_all(vec![b'x'; CHUNK_BYTES]).await.is_empty() {}
            Ok(())
        }
        "drops-future" => {
            while read_chunk(&mut input).await.is_some() {}
            output.write_all(b"ok".to_vec()).await;
            drop(output);
            // The point of the action: the default value is what the host reads.
            drop(outcome);
            return;
        }
        "reads-after-deadline" => {
            let start = Instant::now();
            while start.elapsed() < SPIN_BEFORE_READING {
                black_box(());
            }
            echo(&mut input, &mut output).await;
            Ok(())
        }
        "echo" => {
            echo(&mut input, &mut output).await;
            Ok(())
        }
        "grow-memory" => {
            let mut kept = Vec::new();
            while let Some(chunk) = read_chunk(&mut input).await {
                kept.push(chunk);
            }
            let bytes: usize = kept.iter().map(Vec::len).sum();
            output
                .write_all(format!("kept {bytes} bytes").into_bytes())
                .await;
            Ok(())
        }
        "loop" => spin_forever(),
        _ => Err(PluginError::UnknownAction(action)),
    };
    drop(output);
    let _ = outcome.write(result).await;
}

/// Keeps `held` (stream and future ends) alive and never returns. The task
/// waits without spinning: a task that waits on nothing the host can wake is
/// a panic in wit-bindgen unless its `inter-task-wakeup` feature is on.
async fn hold_forever<T>(held: T) {
    std::future::pending::<()>().await;
    drop(held);
}

/// Copies `input` to `output` chunk by chunk until either side ends.
async fn echo(input: &mut StreamReader<u8>, output: &mut StreamWriter<u8>) {
    while let Some(chunk) = read_chunk(input).await {
        if !output.write_all(chunk).await.is_empty() {
            break;
        }
    }
}

/// The next chunk of `input`, or `None` once it has ended.
async fn read_chunk(input: &mut StreamReader<u8>) -> Option<Vec<u8>> {
    loop {
        let (result, chunk) = input.read(Vec::with_capacity(CHUNK_BYTES)).await;
        match result {
            StreamResult::Complete(_) if !chunk.is_empty() => return Some(chunk),
            StreamResult::Complete(_) | StreamResult::Cancelled => continue,
            StreamResult::Dropped => return None,
        }
    }
}

fn spin_forever() -> ! {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

fn grow_memory() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        // Touch every page so the memory is really committed, not just reserved.
        blocks.push(black_box(vec![1u8; 1 << 20]));
    }
}

export!(Hostile);

/// Makes `count` streams and holds them all; the host traps the first one
/// past its handle limit.
fn hoard_streams(count: usize) -> String {
    let held: Vec<_> = (0..count)
        .map(|_| black_box(wit_stream::new::<u8>()))
        .collect();
    format!("held {} streams", held.len())
}

/// `millis` milliseconds in nanoseconds, the unit of WASI's clocks.
fn nanos(millis: &str) -> Result<u64, PluginError> {
    millis
        .parse::<u64>()
        .ok()
        .and_then(|millis| millis.checked_mul(1_000_000))
        .ok_or_else(|| {
            PluginError::InvalidInput(format!("`{millis}` is not a wait in milliseconds"))
        })
}

fn text(input: &[u8]) -> Result<&str, PluginError> {
    std::str::from_utf8(input).map_err(|_| PluginError::InvalidInput("expected UTF-8".into()))
}

fn bucket() -> Result<store::Bucket, PluginError> {
    store::open("default").map_err(kv_error)
}

fn kv_error(err: store::Error) -> PluginError {
    PluginError::Failed(match err {
        store::Error::NoSuchStore => "kv: no such store".to_owned(),
        store::Error::AccessDenied => "kv: access denied".to_owned(),
        store::Error::Other(reason) => format!("kv: {reason}"),
    })
}

/// The body of a GET of `url`, read to its end; any failure as text.
fn http_get(url: &str) -> Result<Vec<u8>, String> {
    let (scheme, rest) = url.split_once("://").ok_or("expected scheme://host/path")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let request = OutgoingRequest::new(Fields::new());
    let scheme = if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| "bad scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "bad authority")?;
    let path = if path.is_empty() { "/" } else { path };
    request
        .set_path_with_query(Some(path))
        .map_err(|()| "bad path")?;
    let body = request.body().map_err(|()| "no request body")?;
    let response = outgoing_handler::handle(request, None).map_err(|code| format!("{code:?}"))?;
    OutgoingBody::finish(body, None).map_err(|code| format!("{code:?}"))?;
    let response = loop {
        match response.get() {
            Some(result) => {
                break result
                    .map_err(|()| "response taken twice")?
                    .map_err(|code| format!("{code:?}"))?;
            }
            None => response.subscribe().block(),
        }
    };
    let body = response.consume().map_err(|()| "no response body")?;
    let stream = body.stream().map_err(|()| "no response stream")?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(CHUNK_BYTES as u64) {
            Ok(chunk) => bytes.extend(chunk),
            Err(StreamError::Closed) => return Ok(bytes),
            Err(StreamError::LastOperationFailed(err)) => {
                return Err(format!(
                    "failed after {} bytes of the body: {}",
                    bytes.len(),
                    err.to_debug_string()
                ));
            }
        }
    }
}

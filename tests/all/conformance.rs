//! One `hello` plugin in four languages (Rust, Python, JavaScript, C) on
//! world 0.1 and two (Rust, Python) on world 0.2, every one through the same
//! assertions: outputs for the same inputs (non-ASCII and empty ones
//! included), the same log record and stdout, the same typed errors, and the
//! same failure under a timeout and under a memory limit that stop the guest
//! mid-call. The 0.2 ones also stream: the same outputs for the streaming
//! actions, and for the whole-input actions called through `execute-stream`;
//! the 0.1 ones refuse a streaming call.
//! Prints a table of size, compile time, load-from-cache time and the time
//! of an isolated call, and writes it to `target/conformance.txt`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use warden::{
    Error, ErrorKind, Limits, LogLevel, Plugin, PluginError, Runtime, Sandbox, Source, Streamed,
    WorldVersion,
};
use warden_tests::{guest_bytes, guests};

/// Every `hello` that loads: (language, world version, path).
const LANGUAGES: [(&str, WorldVersion, &str); 6] = [
    ("Rust", WorldVersion::V0_1, guests::HELLO),
    ("Python", WorldVersion::V0_1, guests::PYTHON_HELLO),
    ("JavaScript", WorldVersion::V0_1, guests::JS_HELLO),
    ("C", WorldVersion::V0_1, guests::C_HELLO),
    ("Rust", WorldVersion::V0_2, guests::HELLO_V2),
    ("Python", WorldVersion::V0_2, guests::PYTHON_HELLO_V2),
];

/// The actions every `hello` offers.
const SHARED_ACTIONS: [&str; 3] = ["count-vowels", "echo", "greet"];

/// The streaming actions the 0.2 `hello`s add.
const STREAMING_ACTIONS: [&str; 2] = ["count", "upper"];

/// Calls timed for the table's isolated-call column (the median is shown).
const TIMED_CALLS: usize = 21;

/// What one language's hello measured.
struct Measured {
    language: &'static str,
    version: WorldVersion,
    size: u64,
    compile: Duration,
    from_cache: Duration,
    call: Duration,
}

fn cached_runtime(cache: &Path) -> Runtime {
    warden_tests::runtime_builder()
        .compile_cache(cache)
        .build()
        .expect("creating the runtime")
}

async fn load(runtime: &Runtime, path: &str, sandbox: Sandbox) -> Result<Plugin, Error> {
    runtime
        .load(Source::new("hello", guest_bytes(path)), sandbox)
        .await
}

async fn output(plugin: &Plugin, action: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
    plugin.execute(action, input).await.result
}

/// The assertions every language's hello must pass.
async fn check_behaviour(language: &str, plugin: &Plugin) {
    let metadata = plugin.metadata().await.unwrap();
    assert_eq!(metadata.name, "hello", "{language}");
    let mut actions = SHARED_ACTIONS.to_vec();
    if plugin.world_version() == WorldVersion::V0_2 {
        actions.extend(STREAMING_ACTIONS);
    }
    assert_eq!(metadata.actions, actions, "{language}");

    for (input, expected) in [
        (&b"hello world"[..], &b"3"[..]),
        (b"AEIOU aeiou", b"10"),
        (b"", b"0"),
        (b"rhythm", b"0"),
        ("héllo wörld ünïcode".as_bytes(), b"3"),
    ] {
        let counted = output(plugin, "count-vowels", input).await.unwrap();
        assert_eq!(counted, expected, "{language}: count-vowels {input:?}");
    }
    for input in [
        &b""[..],
        b"plain",
        "žluťoučký kůň".as_bytes(),
        b"\xff\xfe\0bytes",
    ] {
        let echoed = output(plugin, "echo", input).await.unwrap();
        assert_eq!(echoed, input, "{language}: echo {input:?}");
    }

    let greeted = plugin.execute("greet", b"Warden").await;
    assert_eq!(greeted.result.unwrap(), b"Hello, Warden!", "{language}");
    assert_eq!(
        greeted.report.stdout.bytes, b"Hello, Warden!\n",
        "{language}"
    );
    let [record] = greeted.report.logs.as_slice() else {
        panic!(
            "{language}: expected one log record, got {:?}",
            greeted.report.logs
        );
    };
    assert_eq!(
        (
            record.level,
            record.context.as_str(),
            record.message.as_str()
        ),
        (LogLevel::Info, "greet", "greeted Warden"),
        "{language}"
    );
    assert_eq!(
        output(plugin, "greet", b"").await.unwrap(),
        b"Hello, world!",
        "{language}"
    );
    assert_eq!(
        output(plugin, "greet", "Zoë".as_bytes()).await.unwrap(),
        "Hello, Zoë!".as_bytes(),
        "{language}"
    );
    match output(plugin, "greet", b"\xc3\x28").await {
        Err(Error::Plugin(PluginError::InvalidInput(_))) => {}
        other => panic!("{language}: greet on bad UTF-8 gave {other:?}"),
    }
    match output(plugin, "shout", b"").await {
        Err(Error::Plugin(PluginError::UnknownAction(action))) => {
            assert_eq!(action, "shout", "{language}")
        }
        other => panic!("{language}: an unknown action gave {other:?}"),
    }
}

/// Under limits each hello meets when a call starts but not by its end,
/// every language runs its code, then fails the same way.
async fn check_limits(language: &str, runtime: &Runtime, path: &str) {
    // What a call costs before it does any work: instantiation, `init` and
    // counting nothing, in a fresh instance like every call below.
    // The fastest of a few samples, so that one preemption on a loaded
    // machine cannot stretch the timeout past the work it must cut short.
    let plugin = load(runtime, path, Sandbox::default()).await.unwrap();
    let mut setup = None;
    for _ in 0..3 {
        let sample = plugin.execute("count-vowels", b"").await;
        sample.result.unwrap();
        if setup
            .as_ref()
            .is_none_or(|fastest: &warden::Report| sample.report.duration < fastest.duration)
        {
            setup = Some(sample.report);
        }
    }
    let setup = setup.expect("three samples");
    // Taking 15 MiB in grows every hello's memory by more than 1 MiB, and
    // counting it takes every language well past ten times the setup (Rust,
    // the fastest, about five times the 20 ms floor).
    let input = vec![b'a'; 15 << 20];

    let mut limits = Limits::default();
    limits.timeout = (setup.duration * 10).max(Duration::from_millis(20));
    let plugin = load(runtime, path, Sandbox::with_limits(limits.clone()))
        .await
        .unwrap();
    let outcome = plugin.execute("count-vowels", &input).await;
    let err = outcome.result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{language}: {err}");
    assert!(
        outcome.report.peak_memory_bytes >= input.len() as u64,
        "{language}: the guest took the input in before the timeout ({} bytes of memory)",
        outcome.report.peak_memory_bytes
    );
    assert!(outcome.report.duration >= limits.timeout, "{language}");

    // Just above the memory the instance starts with: `init` runs, and
    // taking the input in fails.
    let mut limits = Limits::default();
    limits.memory_bytes = setup.peak_memory_bytes + (1 << 20);
    let plugin = load(runtime, path, Sandbox::with_limits(limits))
        .await
        .unwrap();
    let outcome = plugin.execute("count-vowels", &input).await;
    let err = outcome.result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MemoryLimit, "{language}: {err}");
    assert_eq!(
        outcome.report.peak_memory_bytes, setup.peak_memory_bytes,
        "{language}: the instance reached its starting size, so `init` ran"
    );
}

/// A streaming call with its output read as it comes.
async fn streamed(
    plugin: &Plugin,
    action: &str,
    input: &[u8],
) -> (Vec<u8>, Result<Streamed, Error>) {
    let (mut output, outcome) = plugin.execute_stream(action, std::io::Cursor::new(input.to_vec()));
    let mut collected = Vec::new();
    let (read, outcome) = tokio::join!(output.read_to_end(&mut collected), outcome);
    read.unwrap();
    (collected, outcome.result)
}

/// The streaming assertions every 0.2 `hello` must pass, and the refusal
/// every 0.1 one gives.
async fn check_streaming(language: &str, plugin: &Plugin) {
    if plugin.world_version() == WorldVersion::V0_1 {
        assert!(!plugin.streams(), "{language}");
        let (output, result) = streamed(plugin, "echo", b"x").await;
        assert!(output.is_empty(), "{language}");
        assert!(
            matches!(result, Err(Error::StreamingUnsupported)),
            "{language}: {result:?}"
        );
        return;
    }
    assert!(plugin.streams() && plugin.has_lifecycle(), "{language}");
    // More than one read's worth, every byte value, so chunks and
    // non-ASCII bytes both cross the stream.
    let big: Vec<u8> = (0..(300 << 10)).map(|i: u32| (i % 256) as u8).collect();
    let cases: [(&str, &[u8], &[u8]); 7] = [
        (
            "upper",
            "hello, wörld\n".as_bytes(),
            "HELLO, WöRLD\n".as_bytes(),
        ),
        ("upper", b"", b""),
        ("echo", &big, &big),
        ("count", b"one\ntwo\nthree\n", b"lines 3 vowels 5"),
        ("count", b"", b"lines 0 vowels 0"),
        ("count-vowels", b"hello world", b"3"),
        ("greet", b"Warden", b"Hello, Warden!"),
    ];
    for (action, input, expected) in cases {
        let (output, result) = streamed(plugin, action, input).await;
        let totals = result.unwrap_or_else(|err| panic!("{language}: {action}: {err}"));
        assert!(
            output == expected,
            "{language}: {action} gave {} bytes",
            output.len()
        );
        assert_eq!(
            (totals.bytes_in, totals.bytes_out),
            (input.len() as u64, expected.len() as u64),
            "{language}: {action}"
        );
    }
    let (output, result) = streamed(plugin, "shout", b"").await;
    assert!(output.is_empty(), "{language}");
    match result {
        Err(Error::Plugin(PluginError::UnknownAction(action))) => {
            assert_eq!(action, "shout", "{language}")
        }
        other => panic!("{language}: an unknown streaming action gave {other:?}"),
    }
}

async fn measure(language: &'static str, version: WorldVersion, path: &'static str) -> Measured {
    let cache = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let runtime = cached_runtime(cache.path());
    let plugin = load(&runtime, path, Sandbox::default()).await.unwrap();
    let compile = started.elapsed();
    assert!(!plugin.info().cached, "{language}");
    assert_eq!(plugin.world_version(), version, "{language}");
    let mut exports = plugin.info().exports.clone();
    exports.sort();
    let expected: &[&str] = match version {
        WorldVersion::V0_1 => &[warden::GUEST_INTERFACE],
        _ => &[
            "warden:plugin/guest@0.2.0",
            "warden:plugin/lifecycle@0.2.0",
            "warden:plugin/streaming@0.2.0",
        ],
    };
    assert_eq!(exports, expected, "{language}");
    let language_version = format!("{language} ({version})");
    let language_version = language_version.as_str();

    check_behaviour(language_version, &plugin).await;
    check_streaming(language_version, &plugin).await;
    check_limits(language_version, &runtime, path).await;

    let again = cached_runtime(cache.path());
    let started = Instant::now();
    let from_cache = load(&again, path, Sandbox::default()).await.unwrap();
    let from_cache_time = started.elapsed();
    assert!(
        from_cache.info().cached,
        "{language}: not loaded from the cache"
    );

    let mut calls: Vec<Duration> = Vec::with_capacity(TIMED_CALLS);
    for _ in 0..TIMED_CALLS {
        let started = Instant::now();
        output(&from_cache, "count-vowels", b"hello world")
            .await
            .unwrap();
        calls.push(started.elapsed());
    }
    calls.sort();
    Measured {
        language,
        version,
        size: from_cache.info().size,
        compile,
        from_cache: from_cache_time,
        call: calls[TIMED_CALLS / 2],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_behaves_the_same_in_every_language() {
    let mut measured = Vec::new();
    for (language, version, path) in LANGUAGES {
        measured.push(measure(language, version, path).await);
    }
    let mut table = String::from(
        "| language | world | component size | compile | load from cache | isolated call (median) |\n\
         |---|---|---:|---:|---:|---:|\n",
    );
    for row in &measured {
        writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} |",
            row.language,
            row.version,
            warden::units::format_bytes(row.size),
            warden::units::format_duration(row.compile),
            warden::units::format_duration(row.from_cache),
            warden::units::format_duration(row.call),
        )
        .unwrap();
    }
    println!("{table}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/conformance.txt");
    std::fs::write(path, &table).unwrap();
}

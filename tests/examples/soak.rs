//! The soak test (`make soak`): many executions mixing good and hostile
//! guests across concurrent callers, on one runtime. Prints throughput and
//! outcomes by kind, and fails if any call ended differently than its guest
//! dictates or if the process's resident memory after warm-up grew by more
//! than 10%.
//!
//! Usage: `soak [--calls N] [--callers N]` (defaults: 100,000 calls, 16 callers).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use warden::{ErrorKind, Limits, Plugin, Runtime, Sandbox, Source};
use warden_tests::{guest_bytes, guests, malformed_abi_plugin};

/// The allowed growth of resident memory between the end of warm-up and the
/// end of the run.
const MAX_RSS_GROWTH: f64 = 0.10;

/// The run's phases, between which resident memory is measured.
const PHASES: usize = 10;

/// The phases that warm the runtime up (pool slots, allocator arenas,
/// caches) before the resident-memory baseline is taken.
const WARM_UP_PHASES: usize = 2;

/// What a call is expected to end in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    Output(&'static [u8]),
    Fails(ErrorKind),
}

/// One kind of call in the mix.
struct Call {
    plugin: Plugin,
    action: &'static str,
    input: &'static [u8],
    expect: Expect,
    /// How many of every 1,000 calls are this one.
    per_mille: usize,
}

struct Options {
    calls: usize,
    callers: usize,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        calls: 100_000,
        callers: 16,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = value
            .parse()
            .map_err(|err| format!("{flag} {value}: {err}"))?;
        match flag.as_str() {
            "--calls" => options.calls = number,
            "--callers" => options.callers = number,
            _ => {
                return Err(format!(
                    "unknown flag {flag}; expected --calls or --callers"
                ));
            }
        }
    }
    if options.callers == 0 {
        return Err("--callers must be at least 1".into());
    }
    Ok(options)
}

async fn mix(runtime: &Runtime) -> Vec<Call> {
    let mut limits = Limits::default();
    limits.memory_bytes = 16 << 20;
    limits.max_output_bytes = 1 << 20;
    limits.host_resources = 1_000;
    // Timeouts are wall-clock time, which includes waiting for a core: only
    // the guests meant to time out get a short one.
    let mut looping = limits.clone();
    looping.timeout = Duration::from_millis(50);
    let load = |name: &'static str, bytes: Vec<u8>, limits: Limits| async move {
        runtime
            .load(Source::new(name, bytes), Sandbox::with_limits(limits))
            .await
            .unwrap_or_else(|err| panic!("loading {name}: {err}"))
    };
    let hello = load("hello", guest_bytes(guests::HELLO), Limits::default()).await;
    let hostile = load("hostile", guest_bytes(guests::HOSTILE), limits.clone()).await;
    let abi = load("malformed-abi", malformed_abi_plugin(), limits).await;
    let looping = load("looping", guest_bytes(guests::HOSTILE), looping).await;
    let call = |plugin: &Plugin, action, input, expect, per_mille| Call {
        plugin: plugin.clone(),
        action,
        input,
        expect,
        per_mille,
    };
    use Expect::{Fails, Output};
    vec![
        call(&hello, "count-vowels", b"hello world", Output(b"3"), 600),
        call(
            &hello,
            "echo",
            "žluťoučký kůň".as_bytes(),
            Output("žluťoučký kůň".as_bytes()),
            200,
        ),
        call(&abi, "ok", b"", Output(b"ok"), 50),
        call(&hostile, "panic", b"", Fails(ErrorKind::Trap), 30),
        call(
            &hostile,
            "recurse",
            b"",
            Fails(ErrorKind::StackOverflow),
            20,
        ),
        call(
            &hostile,
            "grow-memory",
            b"",
            Fails(ErrorKind::MemoryLimit),
            20,
        ),
        call(
            &hostile,
            "output",
            b"2000000",
            Fails(ErrorKind::OutputTooLarge),
            20,
        ),
        call(
            &hostile,
            "leak-handles",
            b"",
            Fails(ErrorKind::MemoryLimit),
            15,
        ),
        call(&hostile, "log-flood", b"2000", Output(b"done"), 10),
        call(&abi, "huge-list", b"", Fails(ErrorKind::Trap), 10),
        call(&abi, "table-grow", b"", Fails(ErrorKind::MemoryLimit), 10),
        call(&abi, "bad-discriminant", b"", Fails(ErrorKind::Trap), 10),
        call(&looping, "loop", b"", Fails(ErrorKind::Timeout), 3),
        call(&looping, "sleep", b"", Fails(ErrorKind::Timeout), 2),
    ]
}

/// The call kind for the `index`th call: the mix repeats every 1,000 calls.
fn pick(mix: &[Call], index: usize) -> &Call {
    let mut slot = index % 1000;
    for call in mix {
        if slot < call.per_mille {
            return call;
        }
        slot -= call.per_mille;
    }
    unreachable!("the mix adds up to 1,000")
}

/// The process's resident set, from `/proc/self/status`.
fn resident_bytes() -> u64 {
    warden_tests::proc_status_bytes("self", "VmRSS").expect("VmRSS in /proc/self/status")
}

#[derive(Default)]
struct Tally {
    outcomes: BTreeMap<String, usize>,
    unexpected: Vec<String>,
}

/// Makes the calls numbered `calls` from `callers` concurrent callers, and
/// waits for all of them.
async fn run_calls(
    mix: &Arc<Vec<Call>>,
    calls: std::ops::Range<usize>,
    callers: usize,
    tally: &Arc<std::sync::Mutex<Tally>>,
) {
    let next = Arc::new(AtomicUsize::new(calls.start));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (mix, next, tally, end) = (mix.clone(), next.clone(), tally.clone(), calls.end);
        tasks.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= end {
                    break;
                }
                let call = pick(&mix, index);
                let result = call.plugin.execute(call.action, call.input).await.result;
                let (label, expected) = match (&result, call.expect) {
                    (Ok(output), Expect::Output(want)) => ("ok".to_owned(), output == want),
                    (Err(err), Expect::Fails(kind)) => (err.kind().to_string(), err.kind() == kind),
                    (Ok(_), _) => ("ok".to_owned(), false),
                    (Err(err), _) => (err.kind().to_string(), false),
                };
                let mut tally = tally.lock().expect("no caller panics holding the tally");
                *tally.outcomes.entry(label).or_default() += 1;
                if !expected && tally.unexpected.len() < 20 {
                    tally.unexpected.push(format!(
                        "{} {}: {result:?}",
                        call.action,
                        call.expect_text()
                    ));
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("a caller panicked");
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(err) => {
            eprintln!("soak: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = Runtime::builder()
        .max_instances(options.callers as u32)
        .build()
        .expect("creating the runtime");
    let mix = Arc::new(mix(&runtime).await);
    assert_eq!(mix.iter().map(|call| call.per_mille).sum::<usize>(), 1000);

    // The calls run in ten phases; resident memory is measured between
    // them, when no call is in flight, so that no figure depends on what
    // happened to be running. The first phases are the warm-up.
    let tally = Arc::new(std::sync::Mutex::new(Tally::default()));
    let started = Instant::now();
    let mut resident = Vec::new();
    for phase in 0..PHASES {
        let calls = options.calls * phase / PHASES..options.calls * (phase + 1) / PHASES;
        run_calls(&mix, calls, options.callers, &tally).await;
        resident.push(resident_bytes());
    }
    let elapsed = started.elapsed();
    let baseline = resident[WARM_UP_PHASES - 1];
    let end = resident[PHASES - 1];
    let growth = end as f64 / baseline as f64 - 1.0;
    let tally = tally.lock().expect("the callers are done");

    println!(
        "soak: {} calls from {} callers in {:.1} s ({:.0} calls/s)",
        options.calls,
        options.callers,
        elapsed.as_secs_f64(),
        options.calls as f64 / elapsed.as_secs_f64()
    );
    for (kind, count) in &tally.outcomes {
        println!("  {kind:<18} {count}");
    }
    let mib = |bytes: u64| format!("{:.1}", bytes as f64 / (1 << 20) as f64);
    println!(
        "  resident memory (MiB) after each tenth of the calls: {}",
        resident
            .iter()
            .map(|&bytes| mib(bytes))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "  after warm-up {} MiB, at the end {} MiB ({:+.1}%)",
        mib(baseline),
        mib(end),
        growth * 100.0
    );
    println!("  instances still held: {}", runtime.instances_in_use());

    let mut failed = false;
    if !tally.unexpected.is_empty() {
        failed = true;
        println!("unexpected outcomes (first {}):", tally.unexpected.len());
        for line in &tally.unexpected {
            println!("  {line}");
        }
    }
    if growth > MAX_RSS_GROWTH {
        failed = true;
        println!(
            "resident memory grew by {:.1}%, more than {:.0}%",
            growth * 100.0,
            MAX_RSS_GROWTH * 100.0
        );
    }
    if runtime.instances_in_use() != 0 {
        failed = true;
        println!("instances leaked");
    }
    if failed {
        println!("soak: FAILED");
        ExitCode::FAILURE
    } else {
        println!("soak: passed");
        ExitCode::SUCCESS
    }
}

impl Call {
    fn expect_text(&self) -> String {
        match self.expect {
            Expect::Output(output) => format!("expected {:?}", String::from_utf8_lossy(output)),
            Expect::Fails(kind) => format!("expected {kind}"),
        }
    }
}

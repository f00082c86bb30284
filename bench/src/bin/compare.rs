//! Measures Warden against Extism, a raw-pointer host and native Rust in one
//! run on one machine, and prints the results as Markdown tables (written to
//! a file with `--write PATH`).
//!
//! Run it through `make bench`, which builds in release mode and unsets
//! `RUST_BACKTRACE` (Extism's calls capture a backtrace when it is set).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use warden_bench::{
    ExtismHost, LimitsOverhead, RawHost, SHORT_INPUT, WardenHost, best_of, guests, median_per_op,
    native, rss_bytes, text,
};

/// Where the section `make load` writes (bench/load.sh) begins; this
/// program keeps that section when it rewrites the file.
const LOAD_SECTION: &str = "<!-- make load -->";

/// How long each measurement samples for.
const SAMPLE_TIME: Duration = Duration::from_secs(2);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let write_to = args
        .iter()
        .position(|arg| arg == "--write")
        .and_then(|index| args.get(index + 1))
        .cloned();
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        eprintln!(
            "note: RUST_BACKTRACE is set, which slows Extism's calls; `make bench` unsets it"
        );
    }
    // `--only SECTION` measures one section (e.g. `--only scaling`) and
    // writes nothing: for trying a change without the whole run.
    let only = args
        .iter()
        .position(|arg| arg == "--only")
        .and_then(|index| args.get(index + 1))
        .cloned();
    let cache = tempfile_dir("warden-bench-cache");
    let mut report = String::new();
    let mut targets = Vec::new();
    let sections: [(&str, Section); 6] = [
        ("calls", calls),
        ("worlds", worlds),
        ("loading", loading),
        ("scaling", scaling),
        ("memory", |_, targets| memory(targets)),
        ("limits", |_, targets| limits(targets)),
    ];
    for (name, measure) in sections {
        if only.as_ref().is_some_and(|only| only != name) {
            continue;
        }
        eprintln!("measuring {name}…");
        report.push_str(&measure(&cache, &mut targets));
    }
    report.push_str(&targets_table(&targets));
    if only.is_some() {
        println!("{report}");
        return;
    }

    println!("{report}");
    if let Some(path) = write_to {
        let document = format!(
            "# Performance\n\n\
             Measured by `make bench` (the comparison program in `bench/src/bin/compare.rs`; \
             criterion benches are in `bench/benches/hosts.rs`), all hosts in one run on one machine:\n\n\
             {}\n\
             Every host runs the same counting code (`guests/vowels`). Times are medians. \
             Extism is 1.30 (wasmtime 43) with a pooling-allocator configuration and WASI off; \
             the raw-pointer host is wasmtime 48 with pooling and epoch interruption, calling a \
             core module through `alloc`/`dealloc` exports and JSON.\n\n{report}",
            machine()
        );
        // `make load` keeps its own results at the end of the same file.
        let kept = std::fs::read_to_string(&path)
            .ok()
            .and_then(|old| Some(old[old.find(LOAD_SECTION)?..].to_owned()))
            .unwrap_or_default();
        let document = if kept.is_empty() {
            document
        } else {
            format!("{document}\n{kept}")
        };
        std::fs::write(&path, document).unwrap_or_else(|err| panic!("writing {path}: {err}"));
        eprintln!("wrote {path}");
    }
}

/// Measures one section of the report, adding to the targets.
type Section = fn(&std::path::Path, &mut Vec<Target>) -> String;

/// A target from the speed issue, with what was measured.
struct Target {
    name: &'static str,
    goal: String,
    measured: String,
    met: bool,
}

fn calls(cache: &std::path::Path, targets: &mut Vec<Target>) -> String {
    let warden = WardenHost::new(cache);
    let extism = ExtismHost::new();
    let raw = RawHost::new();
    let mut out = String::from(
        "## Calls\n\n| workload | Warden | Extism | raw-pointer host | native Rust | Warden vs Extism |\n|---|---|---|---|---|---|\n",
    );

    let isolated = [
        median_per_op(20, SAMPLE_TIME, |n| {
            warden.isolated(SHORT_INPUT, n);
        }),
        median_per_op(20, SAMPLE_TIME, |n| {
            extism.isolated(SHORT_INPUT, n);
        }),
        median_per_op(20, SAMPLE_TIME, |n| {
            raw.isolated(SHORT_INPUT, n);
        }),
    ];
    row(
        &mut out,
        "isolated call: fresh instance, `init`, `execute`, 13 B",
        &isolated,
        None,
    );
    targets.push(Target {
        name: "isolated call",
        goal: "≤ 20 µs, and ≥ 3× faster than Extism".into(),
        measured: format!(
            "{} ({:.1}× Extism)",
            micros(isolated[0]),
            ratio(isolated[1], isolated[0])
        ),
        met: isolated[0] <= Duration::from_micros(20) && ratio(isolated[1], isolated[0]) >= 3.0,
    });

    let mut instance = warden.instance();
    let mut plugin = extism.plugin();
    let mut raw_instance = raw.instance();
    let warm = |input: &[u8],
                batch: u32,
                out: &mut String,
                label: &str,
                instance: &mut warden::Instance,
                plugin: &mut extism::Plugin,
                raw_instance: &mut warden_bench::RawInstance| {
        let times = [
            median_per_op(batch, SAMPLE_TIME, |n| {
                warden.warm(instance, input, n);
            }),
            median_per_op(batch, SAMPLE_TIME, |n| {
                for _ in 0..n {
                    ExtismHost::call(plugin, input);
                }
            }),
            median_per_op(batch, SAMPLE_TIME, |n| {
                for _ in 0..n {
                    raw_instance.call(input);
                }
            }),
        ];
        let native = median_per_op(batch.max(1000), SAMPLE_TIME, |n| {
            for _ in 0..n {
                native(input);
            }
        });
        row(out, label, &times, Some(native));
        times
    };
    let warm_short = warm(
        SHORT_INPUT,
        1000,
        &mut out,
        "warm call on a live instance, 13 B",
        &mut instance,
        &mut plugin,
        &mut raw_instance,
    );
    targets.push(Target {
        name: "warm call",
        goal: "≤ 1.25× the raw-pointer host's time, and ≥ 5× faster than Extism".into(),
        measured: format!(
            "{} ({:.2}× the raw-pointer host, {:.1}× faster than Extism)",
            micros(warm_short[0]),
            ratio(warm_short[0], warm_short[2]),
            ratio(warm_short[1], warm_short[0])
        ),
        met: ratio(warm_short[0], warm_short[2]) <= 1.25
            && ratio(warm_short[1], warm_short[0]) >= 5.0,
    });
    let kib4 = text(4 << 10);
    let warm_4k = warm(
        &kib4,
        200,
        &mut out,
        "count-vowels over 4 KiB (warm)",
        &mut instance,
        &mut plugin,
        &mut raw_instance,
    );
    targets.push(Target {
        name: "count-vowels 4 KiB",
        goal: "≤ 1.1× the raw-pointer host's time".into(),
        measured: format!(
            "{:.2}× the raw-pointer host ({:.2}× Extism's time)",
            ratio(warm_4k[0], warm_4k[2]),
            ratio(warm_4k[0], warm_4k[1])
        ),
        met: ratio(warm_4k[0], warm_4k[2]) <= 1.1,
    });
    let mib = text(1 << 20);
    let warm_1m = warm(
        &mib,
        2,
        &mut out,
        "count-vowels over 1 MiB (warm)",
        &mut instance,
        &mut plugin,
        &mut raw_instance,
    );
    let _ = writeln!(
        out,
        "\nThroughput over 1 MiB: Warden {:.0} MiB/s, Extism {:.0} MiB/s, raw-pointer host {:.0} MiB/s.\n",
        mib_per_second(warm_1m[0]),
        mib_per_second(warm_1m[1]),
        mib_per_second(warm_1m[2])
    );
    out
}

/// Bytes each streaming measurement moves: enough that the call's set-up is
/// noise, little enough for a few runs per section.
const STREAM_BYTES: usize = 256 << 20;

/// World 0.1 against world 0.2: the same `hello` actions on each, on one
/// runtime (0.1 on the plain engine, 0.2 on the concurrent one), and a
/// streaming call's throughput against a plain copy of the same bytes.
fn worlds(cache: &std::path::Path, _: &mut Vec<Target>) -> String {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let runtime = warden::Runtime::builder()
        .compile_cache(cache)
        .build()
        .expect("a runtime");
    let load = |path: &str| {
        tokio
            .block_on(runtime.load_file(path, warden::Sandbox::default()))
            .expect("loading")
    };
    let plugins = [load(guests::HELLO), load(guests::HELLO_V2)];
    let mut out = String::from(
        "## World 0.1 and world 0.2\n\nThe Rust `hello` of each world on one runtime, `count-vowels` on 13 bytes: \
         0.1 runs on the engine without component-model concurrency, 0.2 (async exports) on the one with it.\n\n\
         | call | world 0.1 | world 0.2 | 0.2 vs 0.1 |\n|---|---:|---:|---:|\n",
    );
    let isolated = plugins.clone().map(|plugin| {
        median_per_op(20, SAMPLE_TIME, |n| {
            tokio.block_on(async {
                for _ in 0..n {
                    plugin
                        .execute("count-vowels", SHORT_INPUT)
                        .await
                        .result
                        .expect("a call");
                }
            });
        })
    });
    let warm = plugins.clone().map(|plugin| {
        let mut instance = tokio
            .block_on(plugin.instantiate())
            .result
            .expect("an instance");
        median_per_op(1000, SAMPLE_TIME, |n| {
            tokio.block_on(async {
                for _ in 0..n {
                    instance
                        .execute("count-vowels", SHORT_INPUT)
                        .await
                        .result
                        .expect("a call");
                }
            });
        })
    });
    for (label, times) in [
        (
            "isolated call (fresh instance, `init`, `execute`)",
            isolated,
        ),
        ("warm call on a live instance", warm),
    ] {
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {:.2}× |",
            micros(times[0]),
            micros(times[1]),
            ratio(times[1], times[0])
        );
    }

    let input = text(STREAM_BYTES);
    let copy = best_of(3, || {
        tokio.block_on(async {
            let mut reader = std::io::Cursor::new(input.as_slice());
            let copied = tokio::io::copy(&mut reader, &mut tokio::io::sink())
                .await
                .expect("copying");
            assert_eq!(copied, STREAM_BYTES as u64);
        });
    });
    let mut limits = warden::Limits::default();
    limits.timeout = Duration::from_secs(120);
    let streaming = tokio
        .block_on(runtime.load_file(guests::HELLO_V2, warden::Sandbox::with_limits(limits)))
        .expect("loading");
    let streamed = |action: &str| {
        best_of(3, || {
            tokio.block_on(async {
                let (mut output, outcome) =
                    streaming.execute_stream(action, std::io::Cursor::new(input.clone()));
                let out = tokio::io::copy(&mut output, &mut tokio::io::sink())
                    .await
                    .expect("reading the output");
                let moved = outcome.await.into_result().expect("a streaming call");
                assert_eq!(moved.bytes_in, STREAM_BYTES as u64);
                assert_eq!(moved.bytes_out, out);
            });
        })
    };
    let echo = streamed("echo");
    let count = streamed("count");
    let per_mib = |time: Duration| time / (STREAM_BYTES >> 20) as u32;
    let _ = writeln!(
        out,
        "\nStreaming {} MiB through `execute-stream` (input from memory, output read as it comes): \
         `echo` {:.0} MiB/s, `count` (input only) {:.0} MiB/s; a plain copy of the same bytes \
         (`tokio::io::copy`) {:.0} MiB/s.\n",
        STREAM_BYTES >> 20,
        mib_per_second(per_mib(echo)),
        mib_per_second(per_mib(count)),
        mib_per_second(per_mib(copy)),
    );
    out
}

fn row(out: &mut String, label: &str, times: &[Duration; 3], native: Option<Duration>) {
    let _ = writeln!(
        out,
        "| {label} | {} | {} | {} | {} | {:.1}× faster |",
        micros(times[0]),
        micros(times[1]),
        micros(times[2]),
        native.map_or("—".to_owned(), micros),
        ratio(times[1], times[0])
    );
}

/// The first isolated call of the large plugins as `warden run` reported it
/// before the speed work of issue #16 (this machine, idle, median of ten
/// runs): the baseline of its 4× target. Earlier code cannot be measured in
/// the same run, so these are the one figure here not measured by it.
const FIRST_CALL_BEFORE: [(&str, Duration); 2] = [
    ("hello (JavaScript)", Duration::from_micros(4900)),
    ("hello (Python)", Duration::from_micros(5100)),
];

/// Components above this size (the Python and JavaScript ones) count for
/// the large-component loading target.
const LARGE_COMPONENT_BYTES: u64 = 10 << 20;

fn loading(cache: &std::path::Path, targets: &mut Vec<Target>) -> String {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut out = String::from(
        "## Plugins by language\n\nThe hello plugin in each guest language: compiling it, loading it from the \
         compile cache (`Runtime::load_file`, what `warden run` does: read the file, check it, take the \
         compiled code from the cache), an isolated call of `count-vowels` on 13 bytes (fresh instance, \
         `init`, `execute`) as the first call after loading (what `warden run` reports) and as one of many \
         (what a long-running host sees), and the same call on a kept instance.\n\n\
         | plugin | size | compile | load from cache | first isolated call | isolated call | kept-instance call |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    let plugins = [
        ("hello (Rust)", guests::HELLO),
        ("hello (C)", guests::C_HELLO),
        ("hello (JavaScript)", guests::JS_HELLO),
        ("hello (Python)", guests::PYTHON_HELLO),
    ];
    let mut slowest_large_load = Duration::ZERO;
    for (name, path) in plugins {
        let size = std::fs::metadata(path).map_or(0, |metadata| metadata.len());
        let uncached = warden::Runtime::builder()
            .no_compile_cache()
            .build()
            .expect("a runtime");
        let cached = warden::Runtime::builder()
            .compile_cache(cache)
            .build()
            .expect("a runtime");
        let load = |runtime: &warden::Runtime| {
            tokio
                .block_on(runtime.load_file(path, warden::Sandbox::default()))
                .expect("loading")
        };
        let plugin = load(&cached);
        // The cache vouches for a file by its identity only once the file
        // has not changed for a while (a change within the same timestamp
        // tick could go unseen); the first load after that checks it fully.
        // (two seconds: `RACY_WINDOW` in host/warden/src/cache.rs).
        std::thread::sleep(Duration::from_millis(2500));
        load(&cached);
        let compile = median_per_op(1, SAMPLE_TIME, |_| {
            load(&uncached);
        });
        let from_cache = median_per_op(1, SAMPLE_TIME, |_| {
            assert!(load(&cached).info().cached);
        });
        let isolated = median_per_op(1, SAMPLE_TIME, |_| {
            tokio
                .block_on(plugin.execute("count-vowels", SHORT_INPUT))
                .result
                .expect("a call");
        });
        // What `warden run` sees: the first call in a runtime that has just
        // loaded the plugin, whose memory image no instance has touched yet.
        let first_call = median_sample(|| {
            let fresh = warden::Runtime::builder()
                .compile_cache(cache)
                .build()
                .expect("a runtime");
            let plugin = load(&fresh);
            let started = Instant::now();
            tokio
                .block_on(plugin.execute("count-vowels", SHORT_INPUT))
                .result
                .expect("a call");
            started.elapsed()
        });
        let mut instance = tokio
            .block_on(plugin.instantiate())
            .result
            .expect("an instance");
        let kept = median_per_op(100, SAMPLE_TIME, |n| {
            for _ in 0..n {
                tokio
                    .block_on(instance.execute("count-vowels", SHORT_INPUT))
                    .result
                    .expect("a call");
            }
        });
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            warden::units::format_bytes(size),
            micros(compile),
            micros(from_cache),
            micros(first_call),
            micros(isolated),
            micros(kept)
        );
        if size > LARGE_COMPONENT_BYTES {
            slowest_large_load = slowest_large_load.max(from_cache);
        }
        if let Some((_, before)) = FIRST_CALL_BEFORE.iter().find(|(plugin, _)| *plugin == name) {
            targets.push(Target {
                name: "isolated call, large plugin",
                goal: format!(
                    "{name}: ≥ 4× faster than before this work ({})",
                    micros(*before)
                ),
                measured: format!(
                    "{} ({:.1}× faster)",
                    micros(first_call),
                    ratio(*before, first_call)
                ),
                met: ratio(*before, first_call) >= 4.0,
            });
        }
    }
    targets.push(Target {
        name: "load from cache, large component",
        goal: "≤ 10 ms for an 18 MB component".into(),
        measured: micros(slowest_large_load),
        met: slowest_large_load <= Duration::from_millis(10),
    });
    let extism_compile = median_per_op(1, SAMPLE_TIME, |_| {
        ExtismHost::compile();
    });
    let _ = writeln!(
        out,
        "\nFor comparison, Extism compiles its count-vowels plugin ({}) in {}.\n",
        warden::units::format_bytes(
            std::fs::metadata(guests::EXTISM_VOWELS).map_or(0, |m| m.len())
        ),
        micros(extism_compile)
    );
    out
}

/// Callers of the scaling table: one per core and beyond, up to far more
/// than the runtime's instance limit (256), where callers queue for slots.
const CALLERS: [usize; 5] = [1, 2, 4, 64, 1000];

fn scaling(cache: &std::path::Path, targets: &mut Vec<Target>) -> String {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let runtime = warden::Runtime::builder()
        .compile_cache(cache)
        .build()
        .expect("a runtime");
    let plugin = tokio
        .block_on(runtime.load(
            warden::Source::new("hello", std::fs::read(guests::HELLO).expect("hello")),
            warden::Sandbox::default(),
        ))
        .expect("loading hello");
    let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    let mut out = format!(
        "## Scaling\n\nIsolated calls (fresh instance, `init`, `execute` each) of the hello plugin from many \
         callers at once, the best of three one-second runs each, on a multi-threaded Tokio runtime with one worker per core \
         ({cores} here; runtime limit: 256 instances, callers beyond it wait for a slot). p99 is one call's \
         latency as its caller saw it, waiting included.\n\n\
         | callers | calls per second | vs 1 caller | p99 latency | failed calls | fewest calls by one caller |\n\
         |---:|---:|---:|---:|---:|---:|\n",
    );
    let mut throughput = Vec::new();
    for callers in CALLERS {
        // Noise on a shared machine only ever lowers throughput: the best
        // of three runs is the closest to what the host can do.
        let runs: Vec<CallersRun> = (0..SCALING_RUNS)
            .map(|_| run_callers(&tokio, &plugin, callers))
            .collect();
        let failed: u64 = runs.iter().map(|run| run.failed).sum();
        let best = runs
            .into_iter()
            .max_by(|a, b| a.calls_per_second.total_cmp(&b.calls_per_second))
            .expect("at least one run");
        let CallersRun {
            calls_per_second,
            p99,
            fewest,
            ..
        } = best;
        throughput.push(calls_per_second);
        let _ = writeln!(
            out,
            "| {callers} | {calls_per_second:.0} | {:.2}× | {} | {failed} | {fewest} |",
            calls_per_second / throughput[0],
            micros(p99)
        );
        if callers == 1000 {
            targets.push(Target {
                name: "1,000 concurrent callers",
                goal: "no error, no starvation".into(),
                measured: format!("{failed} failed; every caller made at least {fewest} calls"),
                met: failed == 0 && fewest > 0,
            });
        }
    }
    let [one, two, _, many, thousand] = throughput[..] else {
        unreachable!("one figure per entry of CALLERS")
    };
    targets.push(Target {
        name: "2 callers",
        goal: "≥ 1.6× the isolated-call throughput of 1 caller".into(),
        measured: format!("{:.2}×", two / one),
        met: two / one >= 1.6,
    });
    // Within 5%: two runs of the same row differ by that much here.
    targets.push(Target {
        name: "64 and 1,000 callers",
        goal: "no lower than 2 callers (within 5%)".into(),
        measured: format!(
            "{:.2}× and {:.2}× the 2-caller figure",
            many / two,
            thousand / two
        ),
        met: many >= two * 0.95 && thousand >= two * 0.95,
    });
    out.push('\n');
    out
}

/// Runs of each row of the scaling table.
const SCALING_RUNS: usize = 3;

/// One run of isolated calls from many callers.
struct CallersRun {
    calls_per_second: f64,
    p99: Duration,
    failed: u64,
    fewest: usize,
}

/// `callers` tasks making isolated calls for a second.
fn run_callers(
    tokio: &tokio::runtime::Runtime,
    plugin: &warden::Plugin,
    callers: usize,
) -> CallersRun {
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let per_caller: Vec<Vec<Duration>> = tokio.block_on(async {
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let plugin = plugin.clone();
                let stop = stop.clone();
                let failures = failures.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let call = Instant::now();
                        if plugin
                            .execute("count-vowels", SHORT_INPUT)
                            .await
                            .result
                            .is_err()
                        {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                        latencies.push(call.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        tokio::time::sleep(SAMPLE_TIME / 2).await;
        stop.store(true, Ordering::Relaxed);
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.push(task.await.expect("a caller"));
        }
        latencies
    });
    let elapsed = started.elapsed();
    let fewest = per_caller.iter().map(Vec::len).min().unwrap_or(0);
    let mut latencies: Vec<Duration> = per_caller.into_iter().flatten().collect();
    latencies.sort_unstable();
    CallersRun {
        calls_per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p99: latencies
            .get(latencies.len().saturating_sub(1) * 99 / 100)
            .copied()
            .unwrap_or_default(),
        failed: failures.load(Ordering::Relaxed),
        fewest,
    }
}

fn memory(targets: &mut Vec<Target>) -> String {
    let mut out = String::from(
        "## Memory\n\nLive instances of hello (each initialised and holding its state), resident memory added:\n\n\
         | live instances | resident memory added | per instance |\n|---|---|---|\n",
    );
    for count in [1_000u32, 10_000] {
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let runtime = warden::Runtime::builder()
            .max_instances(count)
            .no_compile_cache()
            .build()
            .expect("a runtime");
        let plugin = tokio
            .block_on(runtime.load(
                warden::Source::new("hello", std::fs::read(guests::HELLO).expect("hello")),
                warden::Sandbox::default(),
            ))
            .expect("loading hello");
        let before = rss_bytes();
        let instances: Vec<warden::Instance> = (0..count)
            .map(|_| {
                tokio
                    .block_on(plugin.instantiate())
                    .result
                    .expect("an instance")
            })
            .collect();
        let added = rss_bytes().saturating_sub(before);
        let _ = writeln!(
            out,
            "| {count} | {} | {} |",
            warden::units::format_bytes(added),
            warden::units::format_bytes(added / u64::from(count))
        );
        if count == 10_000 {
            targets.push(Target {
                name: "10,000 live instances",
                goal: "under 600 MiB resident".into(),
                measured: warden::units::format_bytes(added),
                met: added < 600 << 20,
            });
        }
        drop(instances);
    }
    out.push('\n');
    out
}

fn limits(targets: &mut Vec<Target>) -> String {
    let mut out = String::from(
        "## Limits\n\nTwo compute-bound guests (wasmtime 48, best of 15 runs) under each way of bounding \
         them: `fib(32)`, which is all calls, and `mix(20000000)`, a tight loop.\n\n\
         | configuration | fib | vs no limits | loop | vs no limits |\n|---|---|---|---|---|\n",
    );
    let configurations = LimitsOverhead::all();
    let measure = |function: &str, n: u32| -> Vec<Duration> {
        configurations
            .iter()
            .map(|configuration| {
                best_of(15, || {
                    configuration.run(function, n);
                })
            })
            .collect()
    };
    let fib = measure("fib", 32);
    let mix = measure("mix", 20_000_000);
    for (index, configuration) in configurations.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {} | ×{:.2} | {} | ×{:.2} |",
            configuration.name,
            micros(fib[index]),
            ratio(fib[index], fib[0]),
            micros(mix[index]),
            ratio(mix[index], mix[0])
        );
    }
    let (calls, looping) = (ratio(fib[1], fib[0]), ratio(mix[1], mix[0]));
    targets.push(Target {
        name: "default limits (epoch)",
        goal: "≤ 15% overhead on compute".into(),
        measured: format!(
            "{:+.0}% on calls, {:+.0}% on a loop",
            (calls - 1.0) * 100.0,
            (looping - 1.0) * 100.0
        ),
        met: calls <= 1.15 && looping <= 1.15,
    });
    out.push('\n');
    out
}

fn targets_table(targets: &[Target]) -> String {
    let mut out =
        String::from("## Targets\n\n| target | goal | measured | met |\n|---|---|---|---|\n");
    for target in targets {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            target.name,
            target.goal,
            target.measured,
            if target.met { "yes" } else { "**no**" }
        );
    }
    let mut explained = Vec::new();
    for target in targets.iter().filter(|target| !target.met) {
        // Targets measured per plugin share one name and one explanation.
        if explained.contains(&target.name) {
            continue;
        }
        explained.push(target.name);
        if let Some(reason) = why_missed(target.name) {
            let _ = write!(out, "\n**{}.** {reason}\n", target.name);
        }
    }
    out
}

/// What profiling showed about a target that was not met.
fn why_missed(target: &str) -> Option<&'static str> {
    match target {
        "warm call" | "count-vowels 4 KiB" => Some(
            "Warden calls guests asynchronously, on a fiber, so that epoch ticks can make a busy guest \
             yield and a timeout can stop one blocked in a host call; the raw-pointer host calls \
             synchronously and copies bytes by hand, and has neither guarantee. `perf record` of warm \
             calls (`bench/examples/profile.rs warm`) splits a call into wasmtime's typed component call \
             (lowering the action name and input, lifting the result: about a third), the guest's own \
             code (a sixth), Warden's per-call report, metrics and clock reads (an eighth), creating \
             and entering the fiber (a twelfth), copies and allocations (a tenth) and Warden's call \
             path. Removing every piece of Warden's bookkeeping would still leave a warm call about \
             1.35× the raw host's; the rest is the component model's typed call on a fiber, which is \
             what gives the guarantees. A synchronous call would need every host function to be \
             synchronous and would give up stopping a guest blocked in a host call at its timeout.",
        ),
        "64 and 1,000 callers" => Some(
            "The drop comes where callers outnumber the runtime's 256 instance slots: measured with \
             the same plugin, 256 callers give the 64-caller figure, 300 about 0.88× of it and 1,000 \
             about 0.7×. Past the limit every call that ends hands its slot to a parked caller, so each \
             call adds a park, a wake-up and a hand-off through the runtime's fair slot semaphore, and \
             the callers are served in turn, so each call runs on a caller whose state is no longer \
             in the CPU's caches. A server should queue requests before they reach the runtime (as \
             `warden serve` does with `--max-concurrent` and `--max-queue`) rather than park \
             thousands of callers on it.",
        ),
        "default limits (epoch)" => Some(
            "Epoch interruption makes wasmtime load and compare the epoch counter at every function \
             entry and loop back-edge. What that costs depends on how little work sits between two \
             checks: in `fib`, which is nothing but calls, it is a noticeable share; in `mix`, a loop \
             whose body is a handful of instructions, the check is as large as the body, and runs on \
             this virtual machine have measured anywhere from +2% to about +100% for it. No wasmtime \
             setting checks less often, and a guest that cannot be interrupted is not an option for a \
             plugin host; fuel, the alternative, costs as much or more on calls, and both together \
             cost the sum.",
        ),
        "isolated call, large plugin" => Some(
            "`perf record` of repeated isolated calls of the Python hello puts most of the time in \
             instantiating its dozen core modules, not in Python: wasmtime resolving function \
             locations and module-registry entries for the thousands of functions in \
             componentize-py's tables (`CompiledFunctionsTable::func_loc` alone is a ninth), page \
             faults on the pages its memories touch, and TLB shootdowns when they are unmapped. \
             Python's own `init` and `execute` are a small share, so a snapshot taken after `init` \
             (Wizer) would save little: componentize-py already snapshots the interpreter after its \
             start-up. Loading from the cache in milliseconds made the whole `warden run` of the \
             Python hello about five times faster (about 14 ms, from 80 ms). A plugin that needs \
             fast calls keeps its instance (`calls_per_instance`), whose call is the kept-instance \
             column above.",
        ),
        "2 callers" => Some(
            "Isolated calls from two callers share this virtual machine's two cores with the epoch \
             thread and the Tokio scheduler, and single runs of the same build have measured anywhere \
             between 1.2× and 2× here depending on what else the physical host runs; the table \
             takes the best of three runs, and a miss here means all three were disturbed.",
        ),
        "load from cache, large component" => Some(
            "A load takes the fast path only for a component file and compiled entry the cache has \
             vouched for by their identity (device, inode, size, modification and change times), \
             which it records once a file has been unchanged for two seconds and only on local \
             filesystems whose change time the kernel alone sets; otherwise it reads and hashes the \
             component (SHA-256, about 12 ms for 18 MB here) and authenticates the whole compiled \
             artifact (HMAC-SHA256), as every load did before.",
        ),
        _ => None,
    }
}

/// The median of samples taken for [`SAMPLE_TIME`] (at least five), for
/// measurements whose set-up must not be timed.
fn median_sample(mut sample: impl FnMut() -> Duration) -> Duration {
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < SAMPLE_TIME || samples.len() < 5 {
        samples.push(sample());
    }
    samples.sort();
    samples[samples.len() / 2]
}

fn micros(duration: Duration) -> String {
    warden::units::format_duration(duration)
}

fn ratio(numerator: Duration, denominator: Duration) -> f64 {
    numerator.as_secs_f64() / denominator.as_secs_f64().max(f64::MIN_POSITIVE)
}

fn mib_per_second(per_mib: Duration) -> f64 {
    1.0 / per_mib.as_secs_f64().max(f64::MIN_POSITIVE)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|model| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    let rustc = command_output("rustc", &["--version"]);
    let date = command_output("date", &["-u", "+%Y-%m-%d"]);
    format!(
        "- machine: {cpu}, {cores} cores\n- compiler: {rustc}\n- date: {date}\n- command: `make bench`\n"
    )
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

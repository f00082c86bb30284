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
    let cache = tempfile_dir("warden-bench-cache");
    let mut report = String::new();
    let mut targets = Vec::new();

    eprintln!("measuring calls…");
    let calls = calls(&cache, &mut targets);
    report.push_str(&calls);
    eprintln!("measuring loading…");
    report.push_str(&loading(&cache, &mut targets));
    eprintln!("measuring concurrency…");
    report.push_str(&concurrency(&cache, &mut targets));
    eprintln!("measuring memory…");
    report.push_str(&memory(&mut targets));
    eprintln!("measuring limits…");
    report.push_str(&limits(&mut targets));
    report.push_str(&targets_table(&targets));

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
        goal: "≤ 0.5 µs, and ≥ 5× faster than Extism".into(),
        measured: format!(
            "{} ({:.1}× Extism)",
            micros(warm_short[0]),
            ratio(warm_short[1], warm_short[0])
        ),
        met: warm_short[0] <= Duration::from_nanos(500)
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
        goal: "≤ 0.75× Extism's time".into(),
        measured: format!("{:.2}× Extism's time", ratio(warm_4k[0], warm_4k[1])),
        met: ratio(warm_4k[0], warm_4k[1]) <= 0.75,
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

/// Components above this size (the Python and JavaScript ones) count for
/// the large-component loading target.
const LARGE_COMPONENT_BYTES: usize = 10 << 20;

fn loading(cache: &std::path::Path, targets: &mut Vec<Target>) -> String {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut out = String::from(
        "## Loading\n\n| component | size | compile from bytes | load from cache |\n|---|---|---|---|\n",
    );
    let components = [
        ("hello (Rust)", guests::HELLO),
        ("hello (C)", guests::C_HELLO),
        ("hello (JavaScript)", guests::JS_HELLO),
        ("hello (Python)", guests::PYTHON_HELLO),
    ];
    let mut slowest_large_load = Duration::ZERO;
    for (name, path) in components {
        let bytes = std::fs::read(&path).unwrap_or_else(|err| panic!("reading {path}: {err}"));
        let load = |runtime: &warden::Runtime| {
            tokio
                .block_on(runtime.compile(
                    warden::Source::new(name, bytes.clone()),
                    warden::Sandbox::default(),
                ))
                .expect("compiling")
        };
        let uncached = warden::Runtime::builder()
            .no_compile_cache()
            .build()
            .expect("a runtime");
        let cached = warden::Runtime::builder()
            .compile_cache(cache)
            .build()
            .expect("a runtime");
        load(&cached);
        let compile = median_per_op(1, SAMPLE_TIME, |_| {
            load(&uncached);
        });
        let from_cache = median_per_op(1, SAMPLE_TIME, |_| {
            assert!(load(&cached).cached);
        });
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} |",
            warden::units::format_bytes(bytes.len() as u64),
            micros(compile),
            micros(from_cache)
        );
        if bytes.len() > LARGE_COMPONENT_BYTES {
            slowest_large_load = slowest_large_load.max(from_cache);
        }
    }
    targets.push(Target {
        name: "load from cache, large component",
        goal: "≤ 5 ms for an 18 MB component".into(),
        measured: micros(slowest_large_load),
        met: slowest_large_load <= Duration::from_millis(5),
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

fn concurrency(cache: &std::path::Path, targets: &mut Vec<Target>) -> String {
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
    let mut out = String::from(
        "## Concurrency\n\nIsolated calls (fresh instance each) from many callers at once, for two seconds each, \
         on a multi-threaded Tokio runtime (runtime limit: 256 instances; callers beyond it wait).\n\n\
         | callers | calls per second | failed calls | fewest calls by one caller |\n|---|---|---|---|\n",
    );
    for callers in [1usize, 2, 64, 1000] {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let per_caller: Vec<u64> = tokio.block_on(async {
            let tasks: Vec<_> = (0..callers)
                .map(|_| {
                    let plugin = plugin.clone();
                    let stop = stop.clone();
                    let failures = failures.clone();
                    tokio::spawn(async move {
                        let mut calls = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            if plugin
                                .execute("count-vowels", SHORT_INPUT)
                                .await
                                .result
                                .is_err()
                            {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                            calls += 1;
                        }
                        calls
                    })
                })
                .collect();
            tokio::time::sleep(SAMPLE_TIME).await;
            stop.store(true, Ordering::Relaxed);
            let mut counts = Vec::new();
            for task in tasks {
                counts.push(task.await.expect("a caller"));
            }
            counts
        });
        let elapsed = started.elapsed();
        let total: u64 = per_caller.iter().sum();
        let fewest = per_caller.iter().copied().min().unwrap_or(0);
        let failed = failures.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "| {callers} | {:.0} | {failed} | {fewest} |",
            total as f64 / elapsed.as_secs_f64()
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
    out.push('\n');
    out
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
            "+{:.0}% on calls, +{:.0}% on a loop",
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
    for target in targets.iter().filter(|target| !target.met) {
        if let Some(reason) = why_missed(target.name) {
            let _ = write!(out, "\n**{}.** {reason}\n", target.name);
        }
    }
    out
}

/// What profiling showed about a target that was not met.
fn why_missed(target: &str) -> Option<&'static str> {
    match target {
        "isolated call" => Some(
            "A fresh instance needs its memory mapped and, after the call, reset. Profiling (`perf record` \
             on `bench/examples/profile.rs`) puts about half of an isolated call in the kernel: page \
             faults on the copy-on-write memory image, `madvise` when the slot is reset, and TLB \
             shootdowns between threads, which are costly inside this machine's virtual machine. Keeping \
             memories and stacks resident (zeroing them in place) measured no faster. The same costs \
             hit every host: Extism's fresh instance is several times slower on the same machine.",
        ),
        "warm call" => Some(
            "Warden calls guests asynchronously, on a fiber, so that epoch ticks can make a busy guest \
             yield and a timeout can stop one blocked in a host call; entering and leaving the fiber, \
             lowering the action name and input and lifting the result account for most of a warm call. \
             The raw-pointer host calls synchronously and copies bytes by hand, and has neither of \
             those guarantees.",
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
        "load from cache, large component" => Some(
            "A cache hit still hashes the component (SHA-256, the cache key and the trust check's \
             input) and authenticates the compiled artifact (HMAC-SHA256 with the cache's key, so a \
             planted entry is never deserialized) before deserializing it; for a component of tens \
             of megabytes that reading and hashing is the floor.",
        ),
        _ => None,
    }
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

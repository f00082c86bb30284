//! Warden's fuzzer (`make fuzz`): mutates the corpus of each target in
//! `tests/fuzz/` for a bounded time and feeds the results through the
//! target's check (see `warden_tests::fuzz`). A panic, a hang or a failed
//! check is a finding: the input is saved under
//! `tests/fuzz/regressions/TARGET/`, where the test suite replays it from
//! then on, and the run fails.
//!
//! cargo-fuzz needs a nightly compiler for its sanitizer flags; this fuzzer
//! runs on the stable toolchain the rest of the project uses. It has no
//! coverage instrumentation: as feedback it keeps inputs whose outcome (an
//! error message without its numbers, an exit code) it has not seen before.
//!
//! Usage: `fuzz [--seconds N] [--seed N] [--warden PATH] [--verbose] [TARGET...]`
//! (defaults: 60 seconds per target, a seed from the clock, every target;
//! `--warden` is the binary the `cli` target runs; `--verbose` prints each
//! new outcome).

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use warden_tests::fuzz::{self, Target, Verdict};

/// An in-process input that runs longer than this is a hang.
const HANG_LIMIT: Duration = Duration::from_secs(60);

/// The corpus grows to this many inputs; past it, new finds replace old
/// ones (never the seeds).
const MAX_CORPUS: usize = 10_000;

/// Inputs never grow beyond this, so a run cannot drift into huge inputs.
const MAX_INPUT_BYTES: usize = 4 << 20;

/// Tokens worth inserting, per target: the fuzzer knows nothing of TOML or
/// of warden's flags otherwise.
fn dictionary(target: Target) -> &'static [&'static str] {
    match target {
        Target::Load | Target::Execute => {
            &["\0asm", "\x0d\0\x01\0", "\x01\0\0\0", "\u{80}", "aeiou"]
        }
        Target::Manifest => &[
            "[plugins.x]\n",
            "[plugins.x.limits]\n",
            "[plugins.x.grants]\n",
            "[plugins.x.trust]\n",
            "[defaults.limits]\n",
            "[defaults.trust]\n",
            "path = \"a.wasm\"\n",
            "timeout = \"1ns\"\n",
            "timeout = \"18446744073709551616s\"\n",
            "memory = \"16EiB\"\n",
            "memory = -1\n",
            "fuel = 0\n",
            "fuel = 18446744073709551615\n",
            "concurrency = 0\n",
            "calls_per_instance = 0\n",
            "dirs = [\"a:/b:ro\"]\n",
            "env = { A = \"b\" }\n",
            "allow_http = [\"http://*:*\"]\n",
            "allow_tcp = [\"*:0\"]\n",
            "kv = { path = \"\", max_keys = 0 }\n",
            "unsigned = \"deny\"\n",
            "signed_by = \"trusted\"\n",
            "sha256 = \"00\"\n",
            "= ",
            "\"",
            "[[",
            "]]",
            "{",
            "}",
            "1e999",
            "\n",
        ],
        Target::Cli => &[
            "run\n",
            "exec\n",
            "inspect\n",
            "kv\n",
            "keygen\n",
            "sign\n",
            "verify\n",
            "trust\n",
            "compile\n",
            "add\n",
            "list\n",
            "remove\n",
            "--json\n",
            "--timeout\n",
            "1ns\n",
            "99999999999h\n",
            "--memory\n",
            "0\n",
            "18EiB\n",
            "--fuel\n",
            "--dir\n",
            "{DIR}:/data:ro\n",
            "--env\n",
            "A=b\n",
            "--input\n",
            "--input-file\n",
            "--manifest\n",
            "--kv-store\n",
            "{DIR}/kv.sqlite\n",
            "--allow-http\n",
            "http://127.0.0.1:1\n",
            "--unsigned\n",
            "deny\n",
            "--signed-by\n",
            "trusted\n",
            "--strict\n",
            "--key\n",
            "--trust-store\n",
            "--cache-dir\n",
            "--no-cache\n",
            "--cache-key\n",
            "{DIR}/cache.key\n",
            "warn\n",
            "--deterministic\n",
            "{HELLO}\n",
            "{PROBE}\n",
            "{DIR}\n",
            "-\n",
            "--\n",
            "count-vowels\n",
            "echo\n",
            "kv-set\n",
        ],
    }
}

/// A small, fast generator (xorshift64*), seeded for reproducible runs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }
}

/// Applies one to eight random edits to `input`.
fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>], tokens: &[&str]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(9) {
            0 if !bytes.is_empty() => {
                let at = at.min(bytes.len() - 1);
                bytes[at] ^= 1 << rng.below(8);
            }
            1 if !bytes.is_empty() => {
                let at = at.min(bytes.len() - 1);
                bytes[at] = [0, 0x7f, 0x80, 0xff, rng.next() as u8][rng.below(5)];
            }
            2 => {
                let len = 1 + rng.below(16);
                let end = (at + len).min(bytes.len());
                bytes.drain(at..end);
            }
            3 => {
                let len = 1 + rng.below(16);
                let random: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                bytes.splice(at..at, random);
            }
            4 => bytes.truncate(at),
            5 if !bytes.is_empty() => {
                // Duplicate a slice: repeated sections and fields.
                let start = rng.below(bytes.len());
                let end = (start + 1 + rng.below(64)).min(bytes.len());
                let copy = bytes[start..end].to_vec();
                bytes.splice(at..at, copy);
            }
            6 if !corpus.is_empty() => {
                // Splice in part of another input.
                let other = &corpus[rng.below(corpus.len())];
                let start = rng.below(other.len());
                let end = (start + 1 + rng.below(256)).min(other.len());
                bytes.splice(at..at, other[start..end].iter().copied());
            }
            7 | 8 => {
                let token = tokens[rng.below(tokens.len())].as_bytes();
                bytes.splice(at..at, token.iter().copied());
            }
            _ => {}
        }
    }
    bytes.truncate(MAX_INPUT_BYTES);
    bytes
}

struct Options {
    seconds: u64,
    seed: u64,
    warden: PathBuf,
    verbose: bool,
    targets: Vec<Target>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        seconds: 60,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(1)
            | 1,
        warden: PathBuf::from("target/release/warden"),
        verbose: false,
        targets: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--seconds" => {
                options.seconds = value()?
                    .parse()
                    .map_err(|err| format!("--seconds: {err}"))?
            }
            "--seed" => options.seed = value()?.parse().map_err(|err| format!("--seed: {err}"))?,
            "--warden" => options.warden = value()?.into(),
            "--verbose" => options.verbose = true,
            name => options.targets.push(Target::from_name(name).ok_or_else(|| {
                format!("unknown target {name}; targets: load, execute, manifest, cli")
            })?),
        }
    }
    if options.targets.is_empty() {
        options.targets = Target::ALL.to_vec();
    }
    if options.seed == 0 {
        return Err("--seed must not be 0".into());
    }
    Ok(options)
}

/// Runs checks for one target, in-process or through the binary.
struct Checker {
    target: Target,
    executor: tokio::runtime::Runtime,
    runtime: warden::Runtime,
    hello: Option<warden::Plugin>,
    warden: PathBuf,
    scratch: tempfile::TempDir,
}

impl Checker {
    fn new(target: Target, warden: PathBuf) -> Self {
        let executor = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("creating the executor");
        let runtime = fuzz::runtime();
        let hello = (target == Target::Execute).then(|| executor.block_on(fuzz::hello(&runtime)));
        Checker {
            target,
            executor,
            runtime,
            hello,
            warden,
            scratch: tempfile::tempdir().expect("creating a scratch directory"),
        }
    }

    fn check(&self, input: &[u8]) -> Verdict {
        match self.target {
            Target::Load => self.executor.block_on(fuzz::load(&self.runtime, input)),
            Target::Execute => {
                let hello = self.hello.as_ref().expect("loaded for this target");
                self.executor.block_on(fuzz::execute(hello, input))
            }
            Target::Manifest => fuzz::manifest(input),
            Target::Cli => {
                // A fresh scratch directory per input: what one run writes
                // (keys, a trust store, a cache) must not steer the next.
                let scratch = tempfile::tempdir_in(self.scratch.path())
                    .map_err(|err| format!("scratch directory: {err}"))?;
                fuzz::cli(&self.warden, scratch.path(), input)
            }
        }
    }
}

/// The message of the last panic, recorded by the panic hook instead of
/// printed, so that the fuzzer's output stays readable.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// The input being checked and since when, for the hang watchdog.
type Current = Arc<Mutex<Option<(Target, Instant, Vec<u8>)>>>;

fn save_finding(target: Target, input: &[u8], why: &str) -> PathBuf {
    let dir = fuzz::fuzz_dir().join("regressions").join(target.name());
    std::fs::create_dir_all(&dir).expect("creating the regressions directory");
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
    });
    let path = dir.join(format!("{hash:016x}"));
    std::fs::write(&path, input).expect("saving the finding");
    eprintln!(
        "fuzz: {}: FINDING saved to {}\n  {why}",
        target.name(),
        path.display()
    );
    path
}

fn fuzz_target(target: Target, options: &Options, rng: &mut Rng, current: &Current) -> usize {
    let checker = Checker::new(target, options.warden.clone());
    let tokens = dictionary(target);
    let mut corpus: Vec<Vec<u8>> = target
        .corpus()
        .into_iter()
        .map(|(_, bytes)| bytes)
        .collect();
    let seeds = corpus.len();
    let mut seen = HashSet::new();
    let mut findings = 0;
    let (mut runs, started) = (0u64, Instant::now());
    let deadline = started + Duration::from_secs(options.seconds);
    // The corpus itself first, then mutations of it until the deadline.
    let mut index = 0;
    while index < seeds || Instant::now() < deadline {
        let input = if index < seeds {
            corpus[index].clone()
        } else if rng.below(20) == 0 {
            (0..rng.below(256)).map(|_| rng.next() as u8).collect()
        } else {
            let parent = &corpus[rng.below(corpus.len())];
            mutate(rng, parent, &corpus, tokens)
        };
        index += 1;
        *current.lock().unwrap() = Some((target, Instant::now(), input.clone()));
        let verdict = std::panic::catch_unwind(AssertUnwindSafe(|| checker.check(&input)))
            .unwrap_or_else(|_| {
                Err(format!(
                    "panicked: {}",
                    LAST_PANIC.lock().unwrap().take().unwrap_or_default()
                ))
            });
        *current.lock().unwrap() = None;
        runs += 1;
        match verdict {
            Ok(outcome) => {
                if options.verbose && !seen.contains(&outcome) {
                    println!("fuzz: {}: new outcome: {outcome}", target.name());
                }
                if seen.insert(outcome) && index > seeds {
                    if corpus.len() < MAX_CORPUS {
                        corpus.push(input);
                    } else {
                        let replaced = seeds + rng.below(corpus.len() - seeds);
                        corpus[replaced] = input;
                    }
                }
            }
            Err(why) => {
                findings += 1;
                save_finding(target, &input, &why);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "fuzz: {:<8} {runs:>7} runs in {elapsed:>5.1} s ({:>6.0}/s), {seeds} seeds, corpus {}, {} distinct outcomes, {findings} findings",
        target.name(),
        runs as f64 / elapsed,
        corpus.len(),
        seen.len()
    );
    findings
}

fn main() -> ExitCode {
    let mut options = match options() {
        Ok(options) => options,
        Err(err) => {
            eprintln!("fuzz: {err}");
            return ExitCode::from(2);
        }
    };
    if options.targets.contains(&Target::Cli) {
        // Absolute, since each run starts in its own scratch directory.
        match std::fs::canonicalize(&options.warden) {
            Ok(path) => options.warden = path,
            Err(err) => {
                eprintln!(
                    "fuzz: no warden binary at {} ({err}); build it (cargo build --release -p warden) or pass --warden",
                    options.warden.display()
                );
                return ExitCode::from(2);
            }
        }
    }
    println!(
        "fuzz: seed {} (rerun with --seed {0}), {} s per target",
        options.seed, options.seconds
    );
    std::panic::set_hook(Box::new(|info| {
        *LAST_PANIC
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = Some(info.to_string());
    }));

    let current: Current = Arc::new(Mutex::new(None));
    let watched = current.clone();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let guard = watched.lock().unwrap_or_else(|poison| poison.into_inner());
            if let Some((target, since, input)) = guard.as_ref()
                && since.elapsed() > HANG_LIMIT
            {
                save_finding(
                    *target,
                    input,
                    &format!("hung for more than {HANG_LIMIT:?}"),
                );
                std::process::exit(1);
            }
        }
    });

    let mut rng = Rng(options.seed);
    let findings: usize = options
        .targets
        .iter()
        .map(|&target| fuzz_target(target, &options, &mut rng, &current))
        .sum();
    if findings == 0 {
        println!("fuzz: no findings");
        ExitCode::SUCCESS
    } else {
        println!(
            "fuzz: {findings} findings; each is now a regression test under tests/fuzz/regressions/"
        );
        ExitCode::FAILURE
    }
}

//! Warden's fuzz targets, shared by the fuzzer (`make fuzz`, the `fuzz`
//! example) and by the tests that replay the seed corpus and every input the
//! fuzzer ever caught (`tests/fuzz/`).
//!
//! Each target takes one input and says whether Warden handled it the way it
//! promises: a typed error or a correct result, never a panic, a hang or an
//! `internal` error. The fuzzer adds the rest: mutation, time limits, a
//! watchdog for hangs and catching panics.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use warden::{Error, ErrorKind, Manifest, Plugin, PluginError, Runtime, Sandbox, Source};

/// What a fuzz target exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Arbitrary bytes and mutated components into plugin loading (parse,
    /// validate, compile, link, pre-instantiate).
    Load,
    /// Arbitrary actions and inputs into the `hello` guest through the full
    /// execute path, checked against a reference implementation.
    Execute,
    /// Arbitrary text into the `warden.toml` parser, with every value
    /// checked and converted.
    Manifest,
    /// Arbitrary argument lists into the `warden` binary.
    Cli,
}

impl Target {
    /// Every target, in the order `make fuzz` runs them.
    pub const ALL: [Target; 4] = [Target::Load, Target::Execute, Target::Manifest, Target::Cli];

    /// The target's name: its folder under `tests/fuzz/` and its name on
    /// the fuzzer's command line.
    pub fn name(self) -> &'static str {
        match self {
            Target::Load => "load",
            Target::Execute => "execute",
            Target::Manifest => "manifest",
            Target::Cli => "cli",
        }
    }

    /// The target called `name`.
    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|target| target.name() == name)
    }

    /// The inputs this target starts from: the files in
    /// `tests/fuzz/seeds/TARGET/` and `tests/fuzz/regressions/TARGET/`, and
    /// for loading, the guest components themselves.
    pub fn corpus(self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut corpus = Vec::new();
        for folder in ["seeds", "regressions"] {
            let dir = fuzz_dir().join(folder).join(self.name());
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut paths: Vec<PathBuf> = entries.map(|entry| entry.unwrap().path()).collect();
            paths.sort();
            for path in paths {
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
                corpus.push((path, bytes));
            }
        }
        if self == Target::Load {
            for path in [crate::guests::HELLO, crate::guests::COMMAND] {
                corpus.push((path.into(), crate::guest_bytes(path)));
            }
            corpus.push((
                "malformed-abi (fixture)".into(),
                crate::malformed_abi_plugin(),
            ));
        }
        corpus
    }
}

/// `tests/fuzz/`: the seed corpus and the regressions.
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// A runtime for the in-process targets: no compile cache (inputs are
/// unique), default limits.
pub fn runtime() -> Runtime {
    Runtime::builder()
        .no_compile_cache()
        .build()
        .expect("creating the runtime")
}

/// Loads the `hello` guest for [`Target::Execute`].
pub async fn hello(runtime: &Runtime) -> Plugin {
    runtime
        .load_file(crate::guests::HELLO, Sandbox::default())
        .await
        .expect("loading hello")
}

/// A check's verdict: `Ok` with a short label of what happened (the fuzzer
/// keeps inputs that lead somewhere new), or `Err` with the finding.
pub type Verdict = Result<String, String>;

/// An outcome's label: the plain words of its message's last line, up to the
/// first quoted value, so that the same failure at another offset or with
/// another value is not "new".
fn label(text: &str) -> String {
    let line = text
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("");
    let unquoted = line.split(['`', '"', '\'']).next().unwrap_or("");
    unquoted
        .split_whitespace()
        .map(|word| word.trim_matches(|c: char| c.is_ascii_punctuation()))
        // Plain words only: numbers, offsets, byte dumps and names lifted
        // from the input would make every outcome "new".
        .filter(|word| {
            (3..=16).contains(&word.len())
                && word.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        })
        .take(8)
        .collect::<Vec<_>>()
        .join(" ")
}

/// [`Target::Load`]: loading arbitrary bytes ends in a plugin or in a typed
/// refusal of the plugin, never in an internal error.
pub async fn load(runtime: &Runtime, bytes: &[u8]) -> Verdict {
    match runtime
        .load(Source::new("fuzzed", bytes.to_vec()), Sandbox::default())
        .await
    {
        Ok(_) => Ok("loaded".into()),
        Err(err) => match err.kind() {
            ErrorKind::InvalidPlugin
            | ErrorKind::Denied
            | ErrorKind::MemoryLimit
            // A mutated signature section is a bad signature.
            | ErrorKind::Untrusted => Ok(label(&err.to_string())),
            _ => Err(format!("loading gave {err:?}")),
        },
    }
}

/// [`Target::Execute`]: the input's first byte picks an action (one of
/// hello's three, or the rest of a line as an unknown one), the rest is the
/// action's input. Results must match a reference implementation.
pub async fn execute(plugin: &Plugin, bytes: &[u8]) -> Verdict {
    let (selector, input) = bytes.split_first().unwrap_or((&0, &[]));
    let unknown;
    let action = match selector % 4 {
        0 => "count-vowels",
        1 => "echo",
        2 => "greet",
        _ => {
            let end = input
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(input.len());
            unknown = String::from_utf8_lossy(&input[..end]).into_owned();
            &unknown
        }
    };
    let outcome = plugin.execute(action, input).await;
    let result = outcome.result;
    let ok = match (action, &result) {
        ("count-vowels", Ok(output)) => {
            let vowels = input
                .iter()
                .filter(|b| matches!(b.to_ascii_lowercase(), b'a' | b'e' | b'i' | b'o' | b'u'))
                .count();
            *output == vowels.to_string().into_bytes()
        }
        ("echo", Ok(output)) => output == input,
        ("greet", Ok(output)) => match std::str::from_utf8(input) {
            Ok(name) => {
                let name = if name.is_empty() { "world" } else { name };
                *output == format!("Hello, {name}!").into_bytes()
            }
            Err(_) => false,
        },
        ("greet", Err(Error::Plugin(PluginError::InvalidInput(_)))) => {
            std::str::from_utf8(input).is_err()
        }
        // Guest text in an error is cut to a record's size.
        (_, Err(Error::Plugin(PluginError::UnknownAction(name)))) => {
            *name == warden::truncate_record_text(action)
                && !matches!(action, "count-vowels" | "echo" | "greet")
        }
        _ => false,
    };
    if ok {
        // The action, the outcome and the input's size class.
        Ok(format!(
            "{} {} {}",
            if selector % 4 == 3 { "unknown" } else { action },
            result
                .as_ref()
                .map_or_else(|err| err.kind().as_str(), |_| "ok"),
            input.len().checked_ilog2().unwrap_or(0)
        ))
    } else {
        Err(format!("{action} on {} bytes gave {result:?}", input.len()))
    }
}

/// [`Target::Manifest`]: parsing arbitrary text gives a manifest or an
/// `invalid-config` error, and every plugin of a parsed manifest can be
/// looked up.
pub fn manifest(bytes: &[u8]) -> Verdict {
    let text = String::from_utf8_lossy(bytes);
    match Manifest::parse(&text, Path::new("/fuzz/warden.toml")) {
        Ok(manifest) => {
            for name in manifest.plugins.keys() {
                manifest.plugin(name).map_err(|err| format!("{err:?}"))?;
            }
            Ok(format!(
                "parsed: {} plugins, fuel {}",
                manifest.plugins.len().min(2),
                manifest.needs_fuel()
            ))
        }
        Err(err @ Error::InvalidConfig(_)) => Ok(label(&err.to_string())),
        Err(err) => Err(format!("parsing gave {err:?}")),
    }
}

/// How long one `warden` process may take before it counts as a hang.
pub const CLI_TIME_LIMIT: Duration = Duration::from_secs(30);

/// [`Target::Cli`]: the input is a list of arguments, one per line; in them
/// `{HELLO}`, `{PROBE}` and `{DIR}` stand for a copy of the hello guest, a
/// copy of the probe guest and a scratch directory. `warden` runs in the
/// scratch directory with its configuration, cache and data directories
/// inside it, so nothing it writes escapes. It must exit with one of its
/// documented exit codes, without a panic or a hang.
pub fn cli(warden: &Path, scratch: &Path, bytes: &[u8]) -> Verdict {
    let hello = scratch.join("hello.wasm");
    let probe = scratch.join("probe.wasm");
    std::fs::copy(crate::guests::HELLO, &hello).map_err(|err| err.to_string())?;
    std::fs::copy(crate::guests::PROBE, &probe).map_err(|err| err.to_string())?;
    let text = String::from_utf8_lossy(bytes);
    let args: Vec<String> = text
        .lines()
        .map(|arg| {
            arg.replace("{HELLO}", &hello.to_string_lossy())
                .replace("{PROBE}", &probe.to_string_lossy())
                .replace("{DIR}", &scratch.to_string_lossy())
        })
        // The OS refuses NUL bytes in arguments before warden sees them.
        .filter(|arg| !arg.contains('\0'))
        .collect();
    let mut child = crate::with_home(&mut Command::new(warden), scratch)
        .args(&args)
        .current_dir(scratch)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("starting warden: {err}"))?;
    // Read stderr while waiting, so a chatty process never blocks on a full pipe.
    let mut pipe = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut stderr = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        stderr
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|err| err.to_string())? {
            break status;
        }
        if started.elapsed() > CLI_TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "warden {args:?} ran longer than {CLI_TIME_LIMIT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stderr = reader.join().unwrap_or_default();
    match status.code() {
        Some(code) if EXPECTED_EXIT_CODES.contains(&code) && !stderr.contains("panicked") => Ok(
            format!("{code} {}", label(stderr.lines().next().unwrap_or(""))),
        ),
        code => Err(format!("warden {args:?} exited with {code:?}: {stderr}")),
    }
}

/// The exit codes `warden --help` documents, except 70 (`internal`): that
/// one, 101 (a panic) and none at all (a signal) are findings.
pub const EXPECTED_EXIT_CODES: &[i32] = &[
    0, 1, 2, 10, 11, 12, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
];

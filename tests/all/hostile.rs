//! The hostile collection: every way the test guests misbehave, run one
//! after another on a single runtime. Each behaviour must end in its exact
//! error (or, where the sandbox absorbs it, in a capped success), after which
//! the same runtime serves a good call and holds no instance.
//!
//! `limits`, `grants` and `capabilities` test the same mechanisms in more
//! detail; this module proves that they hold together on one runtime, the way
//! a long-running host meets them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use warden::{
    Error, ErrorKind, Grants, KvGrant, LimitedResource, Limits, OriginPattern, Outcome,
    PluginError, Preopen, Runtime, Sandbox, Source,
};
use warden_tests::{
    HttpServer, TcpPong, UdpSink, guest_bytes, guests, malformed_abi_plugin,
    with_extra_core_instances,
};

/// The timeout of every hostile case: short, because many cases hit it.
const HOSTILE_TIMEOUT: Duration = Duration::from_millis(500);

/// The timeout of the log flood, whose check is of what was kept.
const LOG_FLOOD_TIMEOUT: Duration = Duration::from_secs(10);

/// The linear-memory limit of every hostile case.
const HOSTILE_MEMORY: u64 = 16 << 20;

/// One misbehaviour and what the caller must see.
struct Case {
    behaviour: &'static str,
    plugin: Vec<u8>,
    /// The name the plugin is loaded under (its kv namespace).
    name: &'static str,
    sandbox: Sandbox,
    action: &'static str,
    input: Vec<u8>,
    /// Called through `execute-stream` (world 0.2), the input streamed in
    /// and the output read as it comes, rather than through `execute`.
    streamed: bool,
    expected: Expected,
}

/// How a hostile call must end.
enum Expected {
    /// Fails with this kind of error.
    Fails(ErrorKind),
    /// Fails because the limiter refused this resource.
    Refused(LimitedResource),
    /// Fails because the plugin used this capability without a grant.
    Denied(&'static str),
    /// The guest reports `PluginError::Failed` (the sandbox gave it an
    /// error to report) with exactly this message.
    GuestFails(&'static str),
    /// The guest's `init` reports a failure whose message contains this text.
    InitFails(&'static str),
    /// Succeeds, and the report passes this check.
    Contained(fn(&Outcome<Vec<u8>>) -> Result<(), String>),
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Fails(kind) => write!(f, "fails with {kind}"),
            Expected::Refused(resource) => write!(f, "refused {resource:?}"),
            Expected::Denied(capability) => write!(f, "denied {capability}"),
            Expected::GuestFails(text) => write!(f, "the guest reports {text:?}"),
            Expected::InitFails(text) => write!(f, "init reports {text:?}"),
            Expected::Contained(_) => write!(f, "contained"),
        }
    }
}

impl Expected {
    fn check(&self, outcome: &Outcome<Vec<u8>>) -> Result<(), String> {
        match (self, &outcome.result) {
            (Expected::Fails(kind), Err(err)) if err.kind() == *kind => Ok(()),
            (Expected::Refused(resource), Err(Error::MemoryLimit(refusal)))
                if refusal.resource == *resource =>
            {
                Ok(())
            }
            (Expected::Denied(capability), Err(Error::Denied { denial, .. }))
                if denial.capability == *capability =>
            {
                Ok(())
            }
            (Expected::GuestFails(text), Err(Error::Plugin(PluginError::Failed(message))))
                if message == text =>
            {
                Ok(())
            }
            (Expected::InitFails(text), Err(Error::InitFailed(err)))
                if err.to_string().contains(text) =>
            {
                Ok(())
            }
            (Expected::Contained(check), Ok(_)) => check(outcome),
            (_, result) => Err(format!("got {result:?}")),
        }
    }
}

/// The world the hostile cases run in: a directory tree with a way out, local
/// servers, and a kv store where another plugin keeps a secret.
struct Fixture {
    root: tempfile::TempDir,
    http: HttpServer,
    tcp: TcpPong,
    udp: UdpSink,
}

impl Fixture {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let granted = root.path().join("granted");
        std::fs::create_dir(&granted).unwrap();
        std::fs::write(granted.join("inside.txt"), "inside").unwrap();
        std::fs::write(root.path().join("secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret.txt"), granted.join("escape")).unwrap();
        std::os::unix::fs::symlink("..", granted.join("parent")).unwrap();
        Fixture {
            root,
            http: HttpServer::start(),
            tcp: TcpPong::start(),
            udp: UdpSink::start(),
        }
    }

    fn granted(&self) -> PathBuf {
        self.root.path().join("granted")
    }

    fn kv(&self) -> KvGrant {
        KvGrant::at(self.root.path().join("kv.sqlite"))
    }
}

fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.timeout = HOSTILE_TIMEOUT;
    limits.memory_bytes = HOSTILE_MEMORY;
    limits
}

fn sandbox(adjust: impl FnOnce(&mut Limits, &mut Grants)) -> Sandbox {
    let mut sandbox = Sandbox::with_limits(limits());
    adjust(&mut sandbox.limits, &mut sandbox.grants);
    sandbox
}

fn plain() -> Sandbox {
    sandbox(|_, _| {})
}

fn case(
    behaviour: &'static str,
    plugin: &[u8],
    sandbox: Sandbox,
    action: &'static str,
    input: impl Into<Vec<u8>>,
    expected: Expected,
) -> Case {
    Case {
        behaviour,
        plugin: plugin.to_vec(),
        name: "hostile",
        sandbox,
        action,
        input: input.into(),
        streamed: false,
        expected,
    }
}

/// A case of a streaming action, called through `execute-stream`.
fn stream_case(
    behaviour: &'static str,
    plugin: &[u8],
    sandbox: Sandbox,
    action: &'static str,
    input: impl Into<Vec<u8>>,
    expected: Expected,
) -> Case {
    Case {
        streamed: true,
        ..case(behaviour, plugin, sandbox, action, input, expected)
    }
}

/// The idle timeout of the stream cases that must stall.
const HOSTILE_STREAM_IDLE: Duration = Duration::from_millis(200);

/// Runs a case's call: through `execute`, or through `execute-stream` with
/// the output read to its end while the call runs, as the collected output
/// and the outcome.
async fn call(
    plugin: &warden::Plugin,
    action: &str,
    input: &[u8],
    streamed: bool,
) -> Outcome<Vec<u8>> {
    if !streamed {
        return plugin.execute(action, input).await;
    }
    let input = std::io::Cursor::new(input.to_vec());
    let (mut output, outcome) = plugin.execute_stream(action, input);
    let read = async {
        let mut collected = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut output, &mut collected)
            .await
            .map(|_| collected)
    };
    let (collected, outcome) = tokio::join!(read, outcome);
    Outcome {
        result: outcome.result.and_then(|_| {
            collected.map_err(|err| Error::Io {
                context: "reading the stream".into(),
                source: err,
            })
        }),
        report: outcome.report,
    }
}

/// A read-only or read-write grant of the fixture's `granted/` at `/data`.
fn data_dir(fixture: &Fixture, writable: bool) -> Sandbox {
    let dir = if writable {
        Preopen::read_write(fixture.granted(), "/data")
    } else {
        Preopen::read_only(fixture.granted(), "/data")
    };
    sandbox(|_, grants| grants.dirs.push(dir))
}

fn with_init(behaviour: &str) -> Sandbox {
    sandbox(|_, grants| {
        grants
            .env
            .push(("HOSTILE_INIT".to_owned(), behaviour.to_owned()))
    })
}

fn cases(fixture: &Fixture) -> Vec<Case> {
    use Expected::{Contained, Denied, Fails, GuestFails, InitFails, Refused};
    let hostile = guest_bytes(guests::HOSTILE);
    let hostile_v2 = guest_bytes(guests::HOSTILE_V2);
    let probe = guest_bytes(guests::PROBE);
    let abi = malformed_abi_plugin();
    let origin: OriginPattern = fixture.http.origin().parse().unwrap();
    let other_port: OriginPattern = format!("http://127.0.0.1:{}", fixture.http.addr.port() + 1)
        .parse()
        .unwrap();
    let tcp = fixture.tcp.addr.to_string();
    let udp = fixture.udp.addr.to_string();
    let any_host: OriginPattern = format!("http://*:{}", fixture.http.addr.port())
        .parse()
        .unwrap();
    let mut kv_quota = fixture.kv();
    kv_quota.quotas.max_value_bytes = 16;

    let mut cases = vec![
        case(
            "infinite loop",
            &hostile,
            plain(),
            "loop",
            "",
            Fails(ErrorKind::Timeout),
        ),
        case(
            "busy between host calls",
            &hostile,
            plain(),
            "busy-host-calls",
            "",
            Fails(ErrorKind::Timeout),
        ),
        case(
            "sleeps forever",
            &hostile,
            plain(),
            "sleep",
            "",
            Fails(ErrorKind::Timeout),
        ),
        case(
            "loop under a fuel budget",
            &hostile,
            sandbox(|limits, _| limits.fuel = Some(10_000_000)),
            "loop",
            "",
            Fails(ErrorKind::OutOfFuel),
        ),
        case(
            "memory growth bomb",
            &hostile,
            plain(),
            "grow-memory",
            "",
            Refused(LimitedResource::LinearMemory),
        ),
        case(
            "gradual memory growth",
            &hostile,
            plain(),
            "grow-slowly",
            "",
            Refused(LimitedResource::LinearMemory),
        ),
        case(
            "memory.grow until refused",
            &hostile,
            plain(),
            "memory-grow",
            "",
            Contained(|outcome| {
                let pages: u64 = String::from_utf8_lossy(outcome.result.as_ref().unwrap())
                    .parse()
                    .map_err(|err| format!("{err}"))?;
                let peak = outcome.report.peak_memory_bytes;
                // The guest got every page up to the limit, and not one more.
                (pages > 0 && peak == HOSTILE_MEMORY)
                    .then_some(())
                    .ok_or(format!("{pages} pages, peak {peak}"))
            }),
        ),
        case(
            "table growth bomb",
            &abi,
            plain(),
            "table-grow",
            "",
            Refused(LimitedResource::TableElements),
        ),
        case(
            "handles created and never dropped",
            &hostile,
            sandbox(|limits, _| limits.host_resources = 1_000),
            "leak-handles",
            "",
            Refused(LimitedResource::HostResources),
        ),
        case(
            "unbounded recursion",
            &hostile,
            plain(),
            "recurse",
            "",
            Fails(ErrorKind::StackOverflow),
        ),
        case(
            "panic",
            &hostile,
            plain(),
            "panic",
            "",
            Fails(ErrorKind::Trap),
        ),
        case(
            "huge output",
            &hostile,
            sandbox(|limits, _| limits.max_output_bytes = 1 << 20),
            "output",
            (2 << 20).to_string(),
            Fails(ErrorKind::OutputTooLarge),
        ),
        case(
            "giant input",
            &hostile,
            sandbox(|limits, _| limits.max_input_bytes = 1 << 20),
            "output",
            vec![b'1'; 2 << 20],
            Fails(ErrorKind::InputTooLarge),
        ),
        case(
            "huge stdout",
            &hostile,
            plain(),
            "print",
            (8 << 20).to_string(),
            Contained(|outcome| {
                let stdout = &outcome.report.stdout;
                (stdout.bytes.len() == Limits::DEFAULT_CAPTURE_BYTES
                    && stdout.dropped_bytes == (8 << 20) - Limits::DEFAULT_CAPTURE_BYTES as u64)
                    .then_some(())
                    .ok_or(format!(
                        "kept {}, dropped {}",
                        stdout.bytes.len(),
                        stdout.dropped_bytes
                    ))
            }),
        ),
        case(
            "huge log record",
            &hostile,
            plain(),
            "log-huge",
            (8 << 20).to_string(),
            Contained(|outcome| {
                // Cut to the cap with a note of its length, not dropped.
                let report = &outcome.report;
                match report.logs.as_slice() {
                    [record]
                        if record.context.len() + record.message.len()
                            == Limits::DEFAULT_LOG_BYTES
                            && record.message.ends_with("… (8388608 bytes in all)") =>
                    {
                        Ok(())
                    }
                    records => Err(format!(
                        "kept {} records of {:?} bytes, dropped {}",
                        records.len(),
                        records
                            .iter()
                            .map(|r| r.context.len() + r.message.len())
                            .collect::<Vec<_>>(),
                        report.dropped_logs
                    )),
                }
            }),
        ),
        case(
            "log flood",
            &hostile,
            // What is checked is the records kept, not the time: 100,000
            // host calls can outlast HOSTILE_TIMEOUT on a loaded machine.
            sandbox(|limits, _| limits.timeout = LOG_FLOOD_TIMEOUT),
            "log-flood",
            "100000",
            Contained(|outcome| {
                let report = &outcome.report;
                (report.logs.len() <= Limits::DEFAULT_LOG_RECORDS
                    && report.logs.len() as u64 + report.dropped_logs == 100_000)
                    .then_some(())
                    .ok_or(format!(
                        "kept {}, dropped {}",
                        report.logs.len(),
                        report.dropped_logs
                    ))
            }),
        ),
        // The path goes to the host as written (`open-at`), past wasi-libc,
        // which refuses some of these in the guest on its own.
        case(
            "`..` out of a preopen",
            &hostile,
            data_dir(fixture, true),
            "open-at",
            "read ../secret.txt",
            GuestFails("not-permitted"),
        ),
        case(
            "absolute path outside every preopen",
            &hostile,
            data_dir(fixture, true),
            "open-at",
            format!("read {}", fixture.root.path().join("secret.txt").display()),
            GuestFails("not-permitted"),
        ),
        case(
            "symlink out of a preopen",
            &hostile,
            data_dir(fixture, true),
            "open-at",
            "write escape",
            GuestFails("not-permitted"),
        ),
        case(
            "symlinked parent with a trailing slash",
            &hostile,
            data_dir(fixture, true),
            "open-at",
            "truncate parent/secret.txt/",
            GuestFails("not-permitted"),
        ),
        case(
            "truncate on a read-only preopen",
            &hostile,
            data_dir(fixture, false),
            "truncate",
            "/data/inside.txt",
            GuestFails("Operation not permitted (os error 63)"),
        ),
        case(
            "rename on a read-only preopen",
            &hostile,
            data_dir(fixture, false),
            "rename",
            "/data/inside.txt>/data/moved.txt",
            GuestFails("Operation not permitted (os error 63)"),
        ),
        case(
            "hard link on a read-only preopen",
            &hostile,
            data_dir(fixture, false),
            "link",
            "/data/inside.txt>/data/linked.txt",
            GuestFails("Operation not permitted (os error 63)"),
        ),
        case(
            "environment variable never granted",
            &hostile,
            plain(),
            "env",
            "HOME",
            GuestFails("environment variable not found"),
        ),
        case(
            "HTTP to a host off the allow-list",
            &probe,
            sandbox(|_, grants| grants.http.allow.push(origin.clone())),
            "http-get",
            "http://example.com/",
            Denied("http"),
        ),
        case(
            "HTTP to a loopback port not granted",
            &probe,
            sandbox(|_, grants| grants.http.allow.push(other_port)),
            "http-get",
            fixture.http.url("/"),
            Denied("http"),
        ),
        case(
            "TCP without a grant",
            &probe,
            plain(),
            "tcp-echo",
            tcp,
            Denied("sockets"),
        ),
        case(
            "UDP without a grant",
            &probe,
            plain(),
            "udp-send",
            udp,
            Denied("sockets"),
        ),
        case(
            "kv beyond its quota",
            &probe,
            sandbox(|_, grants| grants.kv = Some(kv_quota)),
            "kv-set",
            "big=0123456789abcdefg",
            GuestFails("kv: kv quota exceeded: a value of 17 bytes is larger than 16 bytes"),
        ),
        case(
            "kv read of another plugin's key",
            &probe,
            sandbox(|_, grants| grants.kv = Some(fixture.kv())),
            "kv-get",
            "secret",
            GuestFails("no key secret"),
        ),
        case(
            "kv panic after a batch",
            &probe,
            sandbox(|_, grants| grants.kv = Some(fixture.kv())),
            "kv-set-many-then-panic",
            "a=1,b=2,c=3",
            Fails(ErrorKind::Trap),
        ),
        case(
            "huge random buffer",
            &probe,
            plain(),
            "random",
            "1000000000",
            Fails(ErrorKind::Trap),
        ),
        case(
            "trap in init",
            &hostile,
            with_init("trap"),
            "calls",
            "",
            Fails(ErrorKind::Trap),
        ),
        case(
            "failure in init",
            &hostile,
            with_init("fail"),
            "calls",
            "",
            InitFails("init refuses"),
        ),
        case(
            "loop in init",
            &hostile,
            with_init("loop"),
            "calls",
            "",
            Fails(ErrorKind::Timeout),
        ),
        case(
            "list longer than memory",
            &abi,
            plain(),
            "huge-list",
            "",
            Fails(ErrorKind::Trap),
        ),
        case(
            "result case that does not exist",
            &abi,
            plain(),
            "bad-discriminant",
            "",
            Fails(ErrorKind::Trap),
        ),
        case(
            "error string that is not UTF-8",
            &abi,
            plain(),
            "utf8-error",
            "",
            Fails(ErrorKind::Trap),
        ),
        case(
            "plugin-error case that does not exist",
            &abi,
            plain(),
            "error-case",
            "",
            Fails(ErrorKind::Trap),
        ),
        case(
            "a thousand sockets without a grant",
            &probe,
            plain(),
            "tcp-sockets",
            "1000",
            Contained(|outcome| {
                expect_output(outcome, "created 0, failed 1000 (first: access-denied)")
            }),
        ),
        case(
            "more sockets than the per-instance cap",
            &probe,
            sandbox(|_, grants| grants.udp.push("127.0.0.1:9".parse().unwrap())),
            "udp-sockets",
            "150",
            Contained(|outcome| {
                expect_output(outcome, "created 100, failed 50 (first: new-socket-limit)")
            }),
        ),
        case(
            "listening with only a connect grant",
            &probe,
            sandbox(|_, grants| grants.tcp.push("127.0.0.1:9".parse().unwrap())),
            "tcp-listen",
            "127.0.0.1:9",
            Denied("sockets"),
        ),
        case(
            "HTTP through a wildcard grant to a name that resolves to loopback",
            &probe,
            sandbox(|_, grants| grants.http.allow.push(any_host.clone())),
            "http-get",
            format!("http://localhost:{}/", fixture.http.addr.port()),
            Denied("http"),
        ),
        case(
            "HTTP through a wildcard grant to loopback behind the NAT64 prefix",
            &probe,
            sandbox(|_, grants| grants.http.allow.push(any_host)),
            "http-get",
            format!("http://[64:ff9b::7f00:1]:{}/", fixture.http.addr.port()),
            Denied("http"),
        ),
        case(
            "HTTP requests held open past the socket limit",
            &probe,
            sandbox(|limits, grants| {
                limits.sockets = 4;
                grants.http.allow.push(origin.clone());
            }),
            "http-hold",
            // `/stall` keeps each connection open past the call, as a
            // server that is slow to send its body does, so the first four
            // hold the instance's sockets; without the limit all ten are held.
            format!("10 {}", fixture.http.url("/stall")),
            GuestFails("request 4: ErrorCode::ConnectionLimitReached"),
        ),
        case(
            "header maps built and kept past the host-memory budget",
            &hostile,
            // A small budget, reached well within the short timeout.
            sandbox(|limits, _| limits.host_memory_bytes = 8 << 20),
            "header-maps",
            "10000",
            Refused(LimitedResource::HostMemory),
        ),
        case(
            "outgoing bodies filled and kept unsent past the host-memory budget",
            &hostile,
            // 24 bodies buffer 3 MiB at 64 KiB a write (48 MiB at 1 MiB).
            sandbox(|limits, _| limits.host_memory_bytes = 2 << 20),
            "body-buffers",
            "24",
            Refused(LimitedResource::HostMemory),
        ),
        case(
            "denials quoting huge config keys",
            &probe,
            plain(),
            "config-keys",
            (1 << 20).to_string(),
            Contained(|outcome| {
                let denials = &outcome.report.denials;
                let longest = denials.iter().map(|d| d.detail.len()).max();
                match (denials.len(), longest) {
                    (5, Some(longest)) if longest < 2 * warden::MAX_RECORD_TEXT_BYTES => Ok(()),
                    _ => Err(format!(
                        "{} denials, the longest {longest:?} bytes",
                        denials.len()
                    )),
                }
            }),
        ),
        case(
            "directory listings kept past the host-memory budget",
            &hostile,
            {
                let mut listed = data_dir(fixture, false);
                // Room for a few listings of the small granted directory.
                listed.limits.host_memory_bytes = 1 << 10;
                listed
            },
            "dir-streams",
            "100",
            Refused(LimitedResource::HostMemory),
        ),
        case(
            "kv batch past its bounds",
            &probe,
            sandbox(|_, grants| grants.kv = Some(fixture.kv())),
            "kv-batch",
            "20000",
            GuestFails(
                "kv: kv batch too large: 20000 keys in one call, at most 10000; \
                 split it into smaller batches",
            ),
        ),
        case(
            "0.2: infinite loop",
            &hostile_v2,
            plain(),
            "loop",
            "",
            Fails(ErrorKind::Timeout),
        ),
        case(
            "0.2: loop under a fuel budget",
            &hostile_v2,
            sandbox(|limits, _| limits.fuel = Some(10_000_000)),
            "loop",
            "",
            Fails(ErrorKind::OutOfFuel),
        ),
        case(
            "0.2: memory growth bomb",
            &hostile_v2,
            plain(),
            "grow-memory",
            "",
            Refused(LimitedResource::LinearMemory),
        ),
        case(
            "0.2: streams made and held past the handle cap",
            &hostile_v2,
            sandbox(|limits, _| limits.host_resources = 100),
            "hoard-streams",
            "1000",
            Fails(ErrorKind::Trap),
        ),
        stream_case(
            "0.2 stream: never reads its input",
            &hostile_v2,
            sandbox(|limits, _| limits.stream_idle_timeout = HOSTILE_STREAM_IDLE),
            "never-reads",
            "unread",
            Fails(ErrorKind::StreamIdle),
        ),
        stream_case(
            "0.2 stream: never closes its output",
            &hostile_v2,
            sandbox(|limits, _| limits.stream_idle_timeout = HOSTILE_STREAM_IDLE),
            "never-closes",
            "input",
            Fails(ErrorKind::StreamIdle),
        ),
        stream_case(
            "0.2 stream: writes forever",
            &hostile_v2,
            sandbox(|limits, _| limits.max_stream_output_bytes = 1 << 20),
            "writes-forever",
            "",
            Fails(ErrorKind::OutputTooLarge),
        ),
        stream_case(
            "0.2 stream: drops its outcome unwritten",
            &hostile_v2,
            plain(),
            "drops-future",
            "input",
            GuestFails("the plugin dropped its outcome"),
        ),
        stream_case(
            "0.2 stream: spins past its deadline before reading",
            &hostile_v2,
            plain(),
            "reads-after-deadline",
            "late",
            Fails(ErrorKind::Timeout),
        ),
        stream_case(
            "0.2 stream: infinite loop",
            &hostile_v2,
            plain(),
            "loop",
            "",
            Fails(ErrorKind::Timeout),
        ),
        stream_case(
            "0.2 stream: input past its limit",
            &hostile_v2,
            sandbox(|limits, _| limits.max_stream_input_bytes = 64 << 10),
            "echo",
            vec![b'i'; 1 << 20],
            Fails(ErrorKind::InputTooLarge),
        ),
        stream_case(
            "0.2 stream: keeps all of a large input",
            &hostile_v2,
            plain(),
            "grow-memory",
            vec![b'm'; 2 * HOSTILE_MEMORY as usize],
            Refused(LimitedResource::LinearMemory),
        ),
    ];
    // Each plugin has its own kv namespace: these two are strangers to the
    // plugin named `owner` that holds the secret.
    for case in &mut cases {
        if case.action.starts_with("kv-") {
            case.name = "intruder";
        }
    }
    cases
}

/// Checks that a contained call answered exactly `expected`.
fn expect_output(outcome: &Outcome<Vec<u8>>, expected: &str) -> Result<(), String> {
    match &outcome.result {
        Ok(output) if output == expected.as_bytes() => Ok(()),
        other => Err(format!("expected {expected:?}, got {other:?}")),
    }
}

/// Stores a secret under the plugin name `owner`, for the namespace case.
async fn store_secret(runtime: &Runtime, fixture: &Fixture) {
    let owner = runtime
        .load(
            Source::new("owner", guest_bytes(guests::PROBE)),
            sandbox(|_, grants| grants.kv = Some(fixture.kv())),
        )
        .await
        .unwrap();
    owner.execute("kv-set", b"secret=42").await.result.unwrap();
}

async fn good_call(runtime: &Runtime) -> Result<(), String> {
    let hello = runtime
        .load_file(guests::HELLO, Sandbox::default())
        .await
        .map_err(|err| err.to_string())?;
    match hello.execute("count-vowels", b"hello world").await.result {
        Ok(output) if output == b"3" => Ok(()),
        other => Err(format!("the good call got {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_behaviour_is_contained() {
    let fixture = Fixture::new();
    let runtime = crate::fuel_runtime();
    store_secret(&runtime, &fixture).await;
    let cases = cases(&fixture);
    assert!(cases.len() >= 20, "the collection shrank");

    let mut failures = Vec::new();
    for case in cases {
        let plugin = match runtime
            .load(Source::new(case.name, case.plugin), case.sandbox)
            .await
        {
            Ok(plugin) => plugin,
            Err(err) => {
                failures.push(format!("{}: loading failed: {err}", case.behaviour));
                continue;
            }
        };
        let outcome = call(&plugin, case.action, &case.input, case.streamed).await;
        if let Err(why) = case.expected.check(&outcome) {
            failures.push(format!(
                "{}: expected it to be {}: {why}",
                case.behaviour, case.expected
            ));
        }
        drop(plugin);
        if let Err(why) = good_call(&runtime).await {
            failures.push(format!(
                "{}: the runtime stopped serving: {why}",
                case.behaviour
            ));
        }
        if runtime.instances_in_use() != 0 {
            failures.push(format!(
                "{}: {} instances still held",
                case.behaviour,
                runtime.instances_in_use()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Nothing outside the sandbox changed, and the batch before the panic is
    // whole.
    assert_eq!(
        std::fs::read_to_string(fixture.root.path().join("secret.txt")).unwrap(),
        "secret"
    );
    assert_eq!(
        std::fs::read_to_string(fixture.granted().join("inside.txt")).unwrap(),
        "inside"
    );
    let mut entries: Vec<_> = std::fs::read_dir(fixture.granted())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    entries.sort();
    assert_eq!(entries, ["escape", "inside.txt", "parent"]);
    let intruder = runtime
        .load(
            Source::new("intruder", guest_bytes(guests::PROBE)),
            sandbox(|_, grants| grants.kv = Some(fixture.kv())),
        )
        .await
        .unwrap();
    let keys = intruder.execute("kv-list", b"").await.result.unwrap();
    assert_eq!(String::from_utf8(keys).unwrap(), "a,b,c");
}

/// A plugin whose core instances define 128 memories of zero pages (which no
/// byte limit sees) would take 64 plugins' share of the pools with each
/// call, and four calls at once would leave other plugins none. It is
/// refused at load, before compilation, naming the count and the limit; so
/// are too many core instances, and too many tables, which without pooling
/// would be host memory no limit counted. The hostile guest itself creates
/// 3 core instances, 1 memory and 2 tables.
#[tokio::test]
async fn a_plugin_over_its_share_of_the_pools_is_refused_at_load() {
    let cases: [(&str, u32, &str); 3] = [
        (
            "(memory 0) (memory 0)",
            64,
            "each instance of this component would create 129 linear memories, more than its \
             limit of 2 (Limits::memories, `memories` in the manifest's limits)",
        ),
        (
            "",
            98,
            "each instance of this component would create 101 core instances, more than its \
             limit of 100 (Limits::instances, `instances` in the manifest's limits)",
        ),
        (
            "(table 100000 funcref)",
            16,
            "each instance of this component would create 18 tables, more than its limit of 4 \
             (Limits::tables, `tables` in the manifest's limits)",
        ),
    ];
    for pooling in [true, false] {
        let runtime = warden_tests::runtime_builder()
            .pooling(pooling)
            .build()
            .unwrap();
        for (module, count, expected) in cases {
            let plugin =
                with_extra_core_instances(guest_bytes(guests::HOSTILE), &[(module, count)]);
            match runtime
                .load(Source::new("greedy", plugin), Sandbox::default())
                .await
            {
                Err(Error::InvalidPlugin { reason }) => {
                    assert_eq!(reason, expected, "pooling {pooling}");
                }
                Err(other) => panic!("pooling {pooling}, {count} × {module:?}: got {other:?}"),
                Ok(_) => panic!("pooling {pooling}, {count} × {module:?}: it loaded"),
            }
            good_call(&runtime).await.unwrap();
            assert_eq!(runtime.instances_in_use(), 0);
        }
    }
}

//! Plugins of world 0.2 (WASI 0.3, async exports, streams, lifecycle)
//! through the library, beside 0.1 ones on the same runtime.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use warden::{
    Error, KvGrant, LimitRefusal, LimitedResource, Limits, OriginPattern, Plugin, PluginError,
    Runtime, Sandbox, Source, WorldVersion,
};
use warden_tests::guests::{self, HELLO_V2, HOSTILE_V2};
use warden_tests::{HTTP_GREETING, HttpServer, guest_bytes};

use crate::capabilities::{assert_denied, call, sandbox};
use crate::{fuel_runtime, hello, load, runtime, tight_limits};

#[tokio::test]
async fn a_0_2_plugin_runs_whole_calls_beside_a_0_1_plugin() {
    let runtime = runtime();
    let old = hello(&runtime).await;
    let new = load(&runtime, HELLO_V2, Sandbox::default()).await;
    assert_eq!(old.world_version(), WorldVersion::V0_1);
    assert_eq!(new.world_version(), WorldVersion::V0_2);
    assert!(new.streams() && new.has_lifecycle());
    assert!(!old.streams() && !old.has_lifecycle());
    for plugin in [&old, &new] {
        let outcome = plugin.execute("count-vowels", b"hello world").await;
        assert_eq!(outcome.result.unwrap(), b"3");
        let outcome = plugin.execute("greet", b"Zo").await;
        assert_eq!(outcome.result.unwrap(), b"Hello, Zo!");
        assert_eq!(outcome.report.stdout.bytes, b"Hello, Zo!\n");
        assert_eq!(outcome.report.logs.len(), 1);
        let err = plugin.execute("shout", b"").await.result.unwrap_err();
        assert!(
            matches!(&err, Error::Plugin(PluginError::UnknownAction(action)) if action == "shout"),
            "{err:?}"
        );
    }
    let metadata = new.metadata().await.unwrap();
    assert_eq!(metadata.license.as_deref(), Some("Apache-2.0"));
    assert_eq!(metadata.action_details[3].name, "count");
    assert_eq!(metadata.action_details[3].input_type, "text/plain");
}

#[tokio::test]
async fn a_streaming_action_transforms_its_input_as_it_flows() {
    let runtime = runtime();
    let plugin = load(&runtime, HELLO_V2, Sandbox::default()).await;
    let input: Vec<u8> = b"hello, streaming world\n".repeat(10_000);
    let (mut output, outcome) = plugin.execute_stream("upper", std::io::Cursor::new(input.clone()));
    let mut collected = Vec::new();
    output.read_to_end(&mut collected).await.unwrap();
    let streamed = outcome.await.into_result().unwrap();
    assert_eq!(collected, input.to_ascii_uppercase());
    assert_eq!(streamed.bytes_in, input.len() as u64);
    assert_eq!(streamed.bytes_out, input.len() as u64);

    let (mut output, outcome) = plugin.execute_stream("count", std::io::Cursor::new(input));
    let mut summary = String::new();
    output.read_to_string(&mut summary).await.unwrap();
    outcome.await.into_result().unwrap();
    assert_eq!(summary, "lines 10000 vowels 60000");
}

/// A reader that gives some input, then fails.
struct BreaksOff {
    sent: bool,
}

impl tokio::io::AsyncRead for BreaksOff {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.sent {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "the client went away",
            )));
        }
        self.sent = true;
        buf.put_slice(b"half of the input\n");
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn an_input_that_breaks_off_fails_the_call_rather_than_ending_it() {
    let runtime = runtime();
    let plugin = load(&runtime, HELLO_V2, Sandbox::default()).await;
    for action in ["count", "upper"] {
        let (mut output, outcome) = plugin.execute_stream(action, BreaksOff { sent: false });
        let mut ignored = Vec::new();
        output.read_to_end(&mut ignored).await.unwrap();
        let err = outcome.await.result.unwrap_err();
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::ConnectionReset),
            "{action}: {err:?}"
        );
        assert_eq!(
            err.to_string(),
            "reading the input of a streaming call: the client went away",
            "{action}"
        );
    }
    assert_eq!(runtime.instances_in_use(), 0);
}

#[tokio::test]
async fn a_dropped_plugin_frees_its_kept_instances() {
    let runtime = runtime();
    for path in [guests::HELLO, HELLO_V2] {
        let mut sandbox = Sandbox::default();
        sandbox.calls_per_instance = 4;
        let plugin = load(&runtime, path, sandbox).await;
        plugin.execute("echo", b"kept").await.result.unwrap();
        assert_eq!(runtime.instances_in_use(), 1, "{path}: one instance kept");
        drop(plugin);
        assert_eq!(
            runtime.instances_in_use(),
            0,
            "{path}: kept past its plugin"
        );
    }
}

#[tokio::test]
async fn no_instance_is_kept_after_retirement_even_by_a_call_in_flight() {
    let runtime = runtime();
    let mut sandbox = Sandbox::default();
    sandbox.calls_per_instance = 4;
    let plugin = load(&runtime, guests::HOSTILE, sandbox).await;
    let in_flight = tokio::spawn({
        let plugin = plugin.clone();
        async move { plugin.execute("nap", b"300").await.result }
    });
    crate::wait_for_instances(&runtime, 1).await;
    plugin.retire_kept_instances().await;
    assert_eq!(in_flight.await.unwrap().unwrap(), b"rested");
    // Its shutdown runs on a task of its own; give it a moment to end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while runtime.instances_in_use() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "an instance was kept after retirement"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn hostile_shutdowns_are_retired_together_within_their_deadline() {
    let runtime = runtime();
    let registry = warden::Registry::new(runtime.clone());
    let mut sandbox = Sandbox::default();
    sandbox.calls_per_instance = 100;
    sandbox.grants.env = vec![("HOSTILE_SHUTDOWN".into(), "loop".into())];
    // Three plugins, each with a kept instance whose `shutdown` loops.
    for name in ["a", "b", "c"] {
        registry
            .load_file(name, HOSTILE_V2, sandbox.clone())
            .await
            .unwrap();
        registry.execute(name, "echo", b"x").await.result.unwrap();
    }
    assert_eq!(runtime.instances_in_use(), 3);
    let started = std::time::Instant::now();
    registry.shutdown(Duration::ZERO).await;
    let took = started.elapsed();
    assert_eq!(runtime.instances_in_use(), 0);
    // One after another they would take 3 × SHUTDOWN_TIMEOUT.
    assert!(
        took < 2 * warden::SHUTDOWN_TIMEOUT,
        "retiring took {took:?}"
    );
}

/// Limits under which the hostile 0.2 guest fails fast.
fn hostile_limits() -> Limits {
    let mut limits = tight_limits();
    limits.timeout = Duration::from_millis(500);
    limits
}

/// After a failure the runtime holds no instance and the plugin serves.
async fn assert_still_serves(runtime: &Runtime, plugin: &Plugin) {
    assert_eq!(runtime.instances_in_use(), 0);
    let outcome = plugin.execute("echo", b"again").await;
    assert_eq!(outcome.result.unwrap(), b"again");
}

#[tokio::test]
async fn a_0_2_memory_bomb_is_a_memory_limit() {
    let runtime = runtime();
    let plugin = load(&runtime, HOSTILE_V2, Sandbox::with_limits(hostile_limits())).await;
    let outcome = plugin.execute("grow-memory", b"").await;
    match outcome.result {
        Err(Error::MemoryLimit(LimitRefusal {
            resource: LimitedResource::LinearMemory,
            requested: Some(requested),
            limit,
        })) => {
            assert_eq!(limit, 16 << 20);
            assert!(requested > limit, "{requested}");
        }
        other => panic!("expected a linear-memory limit, got {other:?}"),
    }
    assert!(outcome.report.peak_memory_bytes <= 16 << 20);
    assert_still_serves(&runtime, &plugin).await;
}

#[tokio::test]
async fn a_0_2_infinite_loop_times_out() {
    let runtime = runtime();
    let limits = hostile_limits();
    let plugin = load(&runtime, HOSTILE_V2, Sandbox::with_limits(limits.clone())).await;
    let outcome = plugin.execute("loop", b"").await;
    match outcome.result {
        Err(Error::Timeout { limit }) => assert_eq!(limit, limits.timeout),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(outcome.report.duration < limits.timeout * 4);
    assert_still_serves(&runtime, &plugin).await;
}

#[tokio::test]
async fn a_0_2_loop_under_a_fuel_budget_runs_out_of_fuel() {
    const FUEL: u64 = 10_000_000;
    let runtime = fuel_runtime();
    let mut limits = hostile_limits();
    limits.timeout = Duration::from_secs(10);
    limits.fuel = Some(FUEL);
    let plugin = load(&runtime, HOSTILE_V2, Sandbox::with_limits(limits)).await;
    let outcome = plugin.execute("loop", b"").await;
    match outcome.result {
        Err(Error::OutOfFuel { limit }) => assert_eq!(limit, FUEL),
        other => panic!("expected OutOfFuel, got {other:?}"),
    }
    assert_eq!(outcome.report.fuel_consumed, Some(FUEL));
    assert_still_serves(&runtime, &plugin).await;
    // A good call reports what it used.
    let outcome = plugin.execute("echo", b"x").await;
    assert!(
        outcome
            .report
            .fuel_consumed
            .is_some_and(|used| used > 0 && used < FUEL)
    );
}

/// The same bytes under a version of the world no host runs: refused
/// before compiling, naming the versions this host runs.
#[tokio::test]
async fn a_plugin_of_an_unknown_world_version_is_refused_naming_the_known_ones() {
    let runtime = runtime();
    for (path, exported) in [
        (guests::HELLO, "warden:plugin/guest@0.1.0"),
        (HELLO_V2, "warden:plugin/guest@0.2.0"),
    ] {
        let bytes = replace_all(
            guest_bytes(path),
            exported.as_bytes(),
            b"warden:plugin/guest@0.9.0",
        );
        match runtime
            .load(Source::new("future", bytes), Sandbox::default())
            .await
        {
            Err(Error::InvalidPlugin { reason }) => assert_eq!(
                reason,
                "the component exports `warden:plugin/guest@0.9.0`, a version of Warden's \
                 plugin world this host does not run; it runs warden:plugin@0.1.0 and \
                 warden:plugin@0.2.0"
            ),
            Err(other) => panic!("{path}: expected InvalidPlugin, got {other:?}"),
            Ok(_) => panic!("{path}: a 0.9.0 plugin loaded"),
        }
    }
    assert_eq!(runtime.instances_in_use(), 0);
}

/// `bytes` with every occurrence of `from` replaced by `to`, of the same
/// length, so that the binary's layout is unchanged.
fn replace_all(mut bytes: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut replaced = 0;
    let mut at = 0;
    while let Some(found) = bytes[at..].windows(from.len()).position(|w| w == from) {
        let start = at + found;
        bytes[start..start + to.len()].copy_from_slice(to);
        at = start + to.len();
        replaced += 1;
    }
    assert!(replaced > 0, "nothing to replace");
    bytes
}

/// 0.1 and 0.2 plugins run on two engines, but draw on the runtime's one
/// set of instance slots: with one slot, a live instance of either version
/// makes a call of the other wait until it is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_versions_share_the_runtimes_instance_slots() {
    let runtime = warden_tests::runtime_builder()
        .max_instances(1)
        .build()
        .unwrap();
    let old = hello(&runtime).await;
    let new = load(&runtime, HELLO_V2, Sandbox::default()).await;
    for (holder, waiter) in [(&old, &new), (&new, &old)] {
        let held = holder.instantiate().await.result.unwrap();
        assert_eq!(runtime.instances_in_use(), 1);
        let waiter = waiter.clone();
        let mut call =
            tokio::spawn(async move { waiter.execute("count-vowels", b"waiting").await });
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut call)
                .await
                .is_err(),
            "a call ran while the only slot was held by the other version"
        );
        drop(held);
        let outcome = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(outcome.result.unwrap(), b"3");
        assert_eq!(runtime.instances_in_use(), 0);
    }
    // A streaming call takes a slot too.
    let held = old.instantiate().await.result.unwrap();
    let (mut output, outcome) = new.execute_stream("echo", &b"queued"[..]);
    let mut collected = Vec::new();
    assert!(
        tokio::time::timeout(
            Duration::from_millis(300),
            output.read_to_end(&mut collected)
        )
        .await
        .is_err(),
        "a streaming call ran while the only slot was held"
    );
    drop(held);
    output.read_to_end(&mut collected).await.unwrap();
    outcome.await.result.unwrap();
    assert_eq!(collected, b"queued");
}

/// A 0.2 plugin is compiled into the cache once, and a second runtime on
/// the same cache loads it from there, onto the right engine.
#[tokio::test]
async fn the_compile_cache_serves_0_2_plugins() {
    let cache = tempfile::tempdir().unwrap();
    let cached_runtime = || {
        warden_tests::runtime_builder()
            .compile_cache(cache.path())
            .build()
            .unwrap()
    };
    let first = cached_runtime();
    let plugin = load(&first, HELLO_V2, Sandbox::default()).await;
    assert!(!plugin.info().cached);
    let second = cached_runtime();
    let plugin = load(&second, HELLO_V2, Sandbox::default()).await;
    assert!(plugin.info().cached, "not loaded from the cache");
    assert_eq!(plugin.world_version(), WorldVersion::V0_2);
    assert!(plugin.streams() && plugin.has_lifecycle());
    let outcome = plugin.execute("count-vowels", b"from the cache").await;
    assert_eq!(outcome.result.unwrap(), b"4");
    let (mut output, outcome) = plugin.execute_stream("upper", &b"cached"[..]);
    let mut upper = Vec::new();
    output.read_to_end(&mut upper).await.unwrap();
    outcome.await.result.unwrap();
    assert_eq!(upper, b"CACHED");
}

#[tokio::test]
async fn a_0_2_guest_hoarding_streams_traps_at_its_handle_limit() {
    let runtime = runtime();
    let hoard = async |plugin: &Plugin, count: usize| {
        plugin
            .execute("hoard-streams", count.to_string().as_bytes())
            .await
            .result
    };
    let assert_trapped = |result: Result<Vec<u8>, Error>| match result {
        Err(Error::Trap { message, .. }) => assert_eq!(
            message,
            "cannot allocate another handle: store handle limit exceeded"
        ),
        other => panic!("expected a trap at the handle limit, got {other:?}"),
    };
    // Time enough for thousands of streams on a loaded machine.
    let mut limits = hostile_limits();
    limits.timeout = Duration::from_secs(10);
    // Each stream is two handles: 40 fit in 100, 50 do not.
    let mut small = limits.clone();
    small.host_resources = 100;
    let plugin = load(&runtime, HOSTILE_V2, Sandbox::with_limits(small)).await;
    assert_eq!(hoard(&plugin, 40).await.unwrap(), b"held 40 streams");
    assert_trapped(hoard(&plugin, 50).await);
    assert_still_serves(&runtime, &plugin).await;

    // The default cap holds too.
    let plugin = load(&runtime, HOSTILE_V2, Sandbox::with_limits(limits)).await;
    let default = Limits::DEFAULT_HOST_RESOURCES;
    assert_eq!(
        hoard(&plugin, default / 2 - 100).await.unwrap(),
        format!("held {} streams", default / 2 - 100).into_bytes()
    );
    assert_trapped(hoard(&plugin, default / 2).await);
    assert_still_serves(&runtime, &plugin).await;
}

#[tokio::test]
async fn a_0_2_plugins_kv_works_when_granted_and_is_denied_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let granted = sandbox(|grants| grants.kv = Some(KvGrant::at(dir.path().join("kv.sqlite"))));
    let plugin = load(&runtime, HOSTILE_V2, granted).await;
    assert_eq!(call(&plugin, "kv-set", "colour=blue").await.unwrap(), "ok");
    assert_eq!(call(&plugin, "kv-get", "colour").await.unwrap(), "blue");

    let plugin = load(&runtime, HOSTILE_V2, sandbox(|_| {})).await;
    assert_denied(&plugin, "kv-set", "colour=red", "kv").await;
    let err = call(&plugin, "kv-get", "colour").await.unwrap_err();
    assert!(err.to_string().contains("kv: access denied"), "{err}");
}

#[tokio::test]
async fn a_0_2_plugins_http_reaches_granted_origins_only() {
    let server = HttpServer::start();
    let runtime = runtime();
    let origin: OriginPattern = server.origin().parse().unwrap();
    let plugin = load(
        &runtime,
        HOSTILE_V2,
        sandbox(|grants| grants.http.allow.push(origin)),
    )
    .await;
    assert_eq!(
        call(&plugin, "http-get", &server.url("/")).await.unwrap(),
        HTTP_GREETING
    );

    let plugin = load(&runtime, HOSTILE_V2, sandbox(|_| {})).await;
    assert_denied(&plugin, "http-get", &server.url("/"), "http").await;
    let err = call(&plugin, "http-get", &server.url("/"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("HttpRequestDenied"), "{err}");

    // A grant for another origin is no grant for this one.
    let other: OriginPattern = format!("http://127.0.0.1:{}", server.addr.port() + 1)
        .parse()
        .unwrap();
    let plugin = load(
        &runtime,
        HOSTILE_V2,
        sandbox(|grants| grants.http.allow.push(other)),
    )
    .await;
    assert_denied(&plugin, "http-get", &server.url("/"), "http").await;
}

#[tokio::test]
async fn a_0_2_wait_follows_virtual_time_when_deterministic_and_real_time_otherwise() {
    const HOUR_MS: &[u8] = b"3600000";
    let runtime = runtime();
    // Deterministic: an hour's wait ends at once, and the clock measures it
    // exactly (one tick for each reading of the clock before the wait ends),
    // the same on every run.
    let mut sandbox = Sandbox::with_limits(hostile_limits());
    sandbox.grants.deterministic = true;
    let plugin = load(&runtime, HOSTILE_V2, sandbox).await;
    for _ in 0..2 {
        let outcome = plugin.execute("nap", HOUR_MS).await;
        assert_eq!(outcome.result.unwrap(), b"napped 3600001000000 ns");
    }
    // Waits at once end in the order of their instants.
    let outcome = plugin.execute("naps", b"3600000,1000,60000").await;
    assert_eq!(outcome.result.unwrap(), b"1000,60000,3600000");
    // A 0.2 `block` beside a 0.3 wait: the block holds the instance, so the
    // wait cannot end first; the block must not wait for it either.
    for _ in 0..2 {
        let outcome = plugin.execute("nap-blocking", HOUR_MS).await;
        assert_eq!(outcome.result.unwrap(), b"napped 7200002000000 ns");
    }
    // A wait for ever is not over at the end of the clock: the timeout ends it.
    match plugin.execute("nap", b"forever").await.result {
        Err(Error::Timeout { limit }) => assert_eq!(limit, hostile_limits().timeout),
        other => panic!("expected Timeout, got {other:?}"),
    }

    // Real: the wait takes its time, which counts against the call's timeout.
    let limits = hostile_limits();
    let plugin = load(&runtime, HOSTILE_V2, Sandbox::with_limits(limits.clone())).await;
    let outcome = plugin.execute("nap", b"50").await;
    let napped = String::from_utf8(outcome.result.unwrap()).unwrap();
    let nanos: u64 = napped
        .strip_prefix("napped ")
        .and_then(|rest| rest.strip_suffix(" ns"))
        .and_then(|nanos| nanos.parse().ok())
        .unwrap_or_else(|| panic!("{napped}"));
    assert!(nanos >= 50_000_000, "{napped}");
    match plugin.execute("nap", HOUR_MS).await.result {
        Err(Error::Timeout { limit }) => assert_eq!(limit, limits.timeout),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_still_serves(&runtime, &plugin).await;
}

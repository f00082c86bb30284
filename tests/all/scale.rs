//! Speed and scale: the compile cache, instance slots and backpressure,
//! per-plugin concurrency, kept instances, metrics, and many calls at once.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use warden::{ErrorKind, Limits, Plugin, Runtime, Sandbox, Source};
use warden_tests::{guest_bytes, guests};

use crate::{hello, hostile, runtime, tight_limits};

fn cached_runtime(dir: &tempfile::TempDir) -> Runtime {
    warden_tests::runtime_builder()
        .compile_cache(dir.path().join("cache"))
        .build()
        .unwrap()
}

async fn load_hello(runtime: &Runtime) -> Plugin {
    runtime
        .load(
            Source::new("hello", guest_bytes(guests::HELLO)),
            Sandbox::default(),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn the_second_load_comes_from_the_compile_cache() {
    let dir = tempfile::tempdir().unwrap();
    let first = load_hello(&cached_runtime(&dir)).await;
    assert!(!first.info().cached);
    // Another runtime with the same configuration (another process, say).
    let second = load_hello(&cached_runtime(&dir)).await;
    assert!(second.info().cached);
    let output = second
        .execute("count-vowels", b"cached")
        .await
        .result
        .unwrap();
    assert_eq!(output, b"2");

    let uncached = warden_tests::runtime_builder()
        .no_compile_cache()
        .build()
        .unwrap();
    assert!(!load_hello(&uncached).await.info().cached);
}

#[tokio::test]
async fn damaged_cache_entries_are_recompiled_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    load_hello(&cached_runtime(&dir)).await;
    // An entry's compiled code; its seal is the `.seal` file beside it.
    let entries: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "cwasm")
        })
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    let sound = std::fs::read(entry).unwrap();
    let damages: [(&str, Vec<u8>); 4] = [
        ("truncated", sound[..sound.len() / 3].to_vec()),
        ("empty", Vec::new()),
        ("flipped", {
            let mut flipped = sound.clone();
            let middle = flipped.len() / 2;
            flipped[middle] ^= 0x40;
            flipped
        }),
        (
            "foreign",
            b"this is not a warden cache entry at all".repeat(100),
        ),
    ];
    for (damage, bytes) in damages {
        std::fs::write(entry, &bytes).unwrap();
        let plugin = load_hello(&cached_runtime(&dir)).await;
        assert!(!plugin.info().cached, "a {damage} entry must not be loaded");
        let output = plugin.execute("echo", b"ok").await.result.unwrap();
        assert_eq!(output, b"ok", "{damage}");
        assert!(
            load_hello(&cached_runtime(&dir)).await.info().cached,
            "{damage}: replaced"
        );
    }
}

#[tokio::test]
async fn an_unwritable_cache_directory_is_a_clear_error() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let err = warden_tests::runtime_builder()
        .compile_cache(file.path().join("cache"))
        .build()
        .err()
        .expect("refused");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.to_string().contains("compile cache"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_calls_mixing_good_and_looping_guests() {
    let runtime = runtime();
    let good = hello(&runtime).await;
    let mut limits = tight_limits();
    limits.timeout = Duration::from_millis(300);
    let looping = hostile(&runtime, limits).await;
    let started = Instant::now();
    let mut calls = JoinSet::new();
    for index in 0..1000 {
        if index % 10 == 0 {
            let looping = looping.clone();
            calls.spawn(async move { (false, looping.execute("loop", b"").await.result) });
        } else {
            let good = good.clone();
            calls.spawn(async move {
                (
                    true,
                    good.execute("count-vowels", b"hello world").await.result,
                )
            });
        }
    }
    let (mut successes, mut timeouts) = (0, 0);
    while let Some(joined) = calls.join_next().await {
        match joined.unwrap() {
            (true, result) => {
                assert_eq!(result.unwrap(), b"3");
                successes += 1;
            }
            (false, result) => {
                assert_eq!(result.unwrap_err().kind(), ErrorKind::Timeout);
                timeouts += 1;
            }
        }
    }
    assert_eq!((successes, timeouts), (900, 100));
    // Loops yield every epoch tick, so good calls never wait for them to end.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let metrics = good.metrics();
    assert_eq!((metrics.calls, metrics.successes), (900, 900));
    assert_eq!(looping.metrics().failures_of(ErrorKind::Timeout), 100);
}

async fn naps(plugin: &Plugin, count: usize, millis: u64) -> Duration {
    let started = Instant::now();
    let mut calls = JoinSet::new();
    for _ in 0..count {
        let plugin = plugin.clone();
        calls.spawn(async move { plugin.execute("nap", millis.to_string().as_bytes()).await });
    }
    while let Some(joined) = calls.join_next().await {
        assert_eq!(joined.unwrap().result.unwrap(), b"rested");
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_wait_for_instance_slots_instead_of_failing() {
    let runtime = warden_tests::runtime_builder()
        .max_instances(2)
        .build()
        .unwrap();
    let plugin = hostile(&runtime, tight_limits()).await;
    // Ten naps of 100 ms through two slots take at least five rounds.
    let elapsed = naps(&plugin, 10, 100).await;
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    // The wait for a slot is not part of a call's timeout.
    let mut limits = tight_limits();
    limits.timeout = Duration::from_millis(250);
    let plugin = hostile(&runtime, limits).await;
    naps(&plugin, 6, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_can_be_limited_to_fewer_instances_than_the_runtime() {
    let runtime = runtime();
    let mut limits = tight_limits();
    limits.concurrency = Some(1);
    let single = hostile(&runtime, limits).await;
    let elapsed = naps(&single, 4, 100).await;
    assert!(
        elapsed >= Duration::from_millis(400),
        "one at a time: {elapsed:?}"
    );
    let unlimited = hostile(&runtime, tight_limits()).await;
    let elapsed = naps(&unlimited, 4, 100).await;
    assert!(
        elapsed < Duration::from_millis(400),
        "side by side: {elapsed:?}"
    );
}

#[tokio::test]
async fn kept_instances_serve_several_calls_and_are_replaced_after_a_trap() {
    let runtime = runtime();
    let mut sandbox = Sandbox::with_limits(tight_limits());
    sandbox.calls_per_instance = 3;
    let plugin = runtime
        .load(
            Source::new("hostile", guest_bytes(guests::HOSTILE)),
            sandbox,
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..7 {
        let output = plugin.execute("calls", b"").await.result.unwrap();
        seen.push(String::from_utf8(output).unwrap());
    }
    assert_eq!(seen, ["1", "2", "3", "1", "2", "3", "1"]);
    assert_eq!(
        plugin
            .execute("panic", b"")
            .await
            .result
            .unwrap_err()
            .kind(),
        ErrorKind::Trap
    );
    let after = plugin.execute("calls", b"").await.result.unwrap();
    assert_eq!(after, b"1", "the trapped instance was not kept");
}

#[tokio::test]
async fn pooling_can_be_turned_off() {
    let runtime = warden_tests::runtime_builder()
        .pooling(false)
        .build()
        .unwrap();
    let plugin = load_hello(&runtime).await;
    assert_eq!(
        plugin
            .execute("count-vowels", b"aeiou")
            .await
            .result
            .unwrap(),
        b"5"
    );
}

#[tokio::test]
async fn limits_beyond_the_pools_are_refused_at_load() {
    let runtime = warden_tests::runtime_builder()
        .max_memory_bytes(16 << 20)
        .build()
        .unwrap();
    let mut limits = Limits::default();
    limits.memory_bytes = 32 << 20;
    let err = runtime
        .load(
            Source::new("hello", guest_bytes(guests::HELLO)),
            Sandbox::with_limits(limits),
        )
        .await
        .err()
        .expect("refused");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.to_string().contains("max_memory_bytes"), "{err}");
}

#[tokio::test]
async fn metrics_count_outcomes_fuel_and_distributions() {
    let runtime = crate::fuel_runtime();
    let plugin = hostile(&runtime, tight_limits()).await;
    for _ in 0..3 {
        plugin.execute("calls", b"").await.result.unwrap();
    }
    plugin.execute("panic", b"").await.result.unwrap_err();
    plugin
        .execute("no-such-action", b"")
        .await
        .result
        .unwrap_err();
    let metrics = plugin.metrics();
    assert_eq!((metrics.calls, metrics.successes), (5, 3));
    assert_eq!(metrics.failures_of(ErrorKind::Trap), 1);
    assert_eq!(metrics.failures_of(ErrorKind::PluginError), 1);
    assert!(metrics.fuel_consumed > 0);
    assert_eq!(metrics.duration_seconds.count, 5);
    assert!(metrics.peak_memory_bytes.mean() > 0.0);
}

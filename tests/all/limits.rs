//! Every limit, each against a hostile guest: the exact error, and the same
//! runtime serving a good call afterwards.

use std::time::{Duration, Instant};

use warden::{Error, ErrorKind, LimitedResource, Limits, Sandbox};
use warden_tests::guests;

use crate::{
    TIGHT_TIMEOUT, assert_runtime_serves, assert_serves, fuel_runtime, hostile, load, runtime,
    tight_limits,
};

/// How far past its timeout a call may end on a busy 2-core machine.
const TIMEOUT_MARGIN: Duration = Duration::from_millis(250);

#[tokio::test]
async fn an_infinite_loop_stops_at_its_timeout() {
    let runtime = runtime();
    let plugin = hostile(&runtime, tight_limits()).await;
    let started = Instant::now();
    let outcome = plugin.execute("loop", b"").await;
    let elapsed = started.elapsed();
    let err = outcome.result.unwrap_err();
    assert!(
        matches!(err, Error::Timeout { limit } if limit == TIGHT_TIMEOUT),
        "{err:?}"
    );
    assert!(elapsed >= TIGHT_TIMEOUT, "{elapsed:?}");
    assert!(elapsed < TIGHT_TIMEOUT + TIMEOUT_MARGIN, "{elapsed:?}");
    assert_serves(&plugin).await;
}

#[tokio::test]
async fn a_guest_blocked_in_a_host_call_times_out_too() {
    let runtime = runtime();
    let plugin = hostile(&runtime, tight_limits()).await;
    let started = Instant::now();
    let err = plugin.execute("sleep", b"").await.result.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < TIGHT_TIMEOUT + TIMEOUT_MARGIN);
    assert_serves(&plugin).await;
}

/// A guest that calls the host on every turn of its loop (the monotonic
/// clock) spends most of its time in host code, where no epoch check runs;
/// each return into wasm checks the deadline.
#[tokio::test]
async fn a_busy_loop_calling_the_host_stops_at_its_timeout() {
    let runtime = runtime();
    let plugin = hostile(&runtime, tight_limits()).await;
    let started = Instant::now();
    let err = plugin
        .execute("busy-host-calls", b"")
        .await
        .result
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(err, Error::Timeout { limit } if limit == TIGHT_TIMEOUT),
        "{err:?}"
    );
    assert!(elapsed >= TIGHT_TIMEOUT, "{elapsed:?}");
    assert!(elapsed < TIGHT_TIMEOUT + TIMEOUT_MARGIN, "{elapsed:?}");
    assert_serves(&plugin).await;
}

#[tokio::test]
async fn a_memory_bomb_is_reported_as_a_memory_limit() {
    let runtime = runtime();
    let plugin = hostile(&runtime, tight_limits()).await;
    let outcome = plugin.execute("grow-memory", b"").await;
    let err = outcome.result.unwrap_err();
    let Error::MemoryLimit(refusal) = &err else {
        panic!("expected a memory limit, got {err:?}");
    };
    assert_eq!(refusal.resource, LimitedResource::LinearMemory);
    assert_eq!(refusal.limit, 16 << 20);
    assert!(refusal.requested.unwrap() > 16 << 20);
    assert!(outcome.report.peak_memory_bytes <= 16 << 20);
    assert!(outcome.report.peak_memory_bytes > 8 << 20);
    // The guest's allocator said why it gave up.
    let stderr = String::from_utf8_lossy(&outcome.report.stderr.bytes);
    assert!(stderr.contains("memory allocation"), "{stderr}");
    assert_serves(&plugin).await;
}

#[tokio::test]
async fn unbounded_recursion_is_a_stack_overflow() {
    let runtime = runtime();
    let plugin = hostile(&runtime, tight_limits()).await;
    let err = plugin.execute("recurse", b"").await.result.unwrap_err();
    let Error::StackOverflow { backtrace } = &err else {
        panic!("expected a stack overflow, got {err:?}");
    };
    assert!(
        backtrace
            .iter()
            .any(|frame| frame.contains("hostile::recurse")),
        "{backtrace:?}"
    );
    assert!(backtrace.len() <= 25, "the backtrace is bounded");
    assert_serves(&plugin).await;
}

#[tokio::test]
async fn a_panic_is_a_trap_with_the_guests_message_on_stderr() {
    let runtime = runtime();
    let plugin = hostile(&runtime, tight_limits()).await;
    let outcome = plugin.execute("panic", b"").await;
    let err = outcome.result.unwrap_err();
    let Error::Trap { message, backtrace } = &err else {
        panic!("expected a trap, got {err:?}");
    };
    assert!(message.contains("unreachable"), "{message}");
    assert!(!backtrace.is_empty());
    let stderr = String::from_utf8_lossy(&outcome.report.stderr.bytes);
    assert!(stderr.contains("panics on purpose"), "{stderr}");
    assert_serves(&plugin).await;
}

#[tokio::test]
async fn fuel_bounds_compute_and_is_reported() {
    let runtime = fuel_runtime();
    let mut limits = tight_limits();
    limits.fuel = Some(2_000_000);
    limits.timeout = Duration::from_secs(30);
    let plugin = hostile(&runtime, limits).await;
    let outcome = plugin.execute("loop", b"").await;
    let err = outcome.result.unwrap_err();
    assert!(
        matches!(err, Error::OutOfFuel { limit: 2_000_000 }),
        "{err:?}"
    );
    assert_eq!(outcome.report.fuel_consumed, Some(2_000_000));
    assert_serves(&plugin).await;
}

#[tokio::test]
async fn a_fuel_limit_needs_a_fuel_metering_runtime() {
    let mut limits = Limits::default();
    limits.fuel = Some(1000);
    let err = runtime()
        .load_file(guests::HELLO, Sandbox::with_limits(limits))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, Error::InvalidConfig(why) if why.contains("fuel")),
        "{err:?}"
    );
}

#[tokio::test]
async fn output_beyond_the_limit_is_refused() {
    let runtime = runtime();
    let mut limits = tight_limits();
    limits.max_output_bytes = 1 << 20;
    let plugin = hostile(&runtime, limits).await;
    let ok = plugin.execute("output", b"1048576").await.result.unwrap();
    assert_eq!(ok.len(), 1 << 20);
    let err = plugin
        .execute("output", b"1048577")
        .await
        .result
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutputTooLarge {
                size: 1_048_577,
                limit: 1_048_576
            }
        ),
        "{err:?}"
    );
    assert_serves(&plugin).await;
}

#[tokio::test]
async fn input_beyond_the_limit_never_reaches_the_guest() {
    let runtime = runtime();
    let mut limits = tight_limits();
    limits.max_input_bytes = 10;
    let plugin = hostile(&runtime, limits).await;
    let outcome = plugin.execute("calls", &[0; 11]).await;
    let err = outcome.result.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InputTooLarge {
                size: 11,
                limit: 10
            }
        ),
        "{err:?}"
    );
    assert_eq!(outcome.report.duration, Duration::ZERO, "nothing ran");
    assert_eq!(
        plugin.execute("calls", &[0; 10]).await.result.unwrap(),
        b"1"
    );
}

#[tokio::test]
async fn stdout_is_captured_up_to_its_cap_and_the_rest_counted() {
    let runtime = runtime();
    let mut limits = tight_limits();
    limits.stdout_bytes = 1000;
    let plugin = hostile(&runtime, limits).await;
    let outcome = plugin.execute("print", b"100000").await;
    assert_eq!(outcome.result.unwrap(), b"done");
    assert_eq!(outcome.report.stdout.bytes, vec![b'y'; 1000]);
    assert_eq!(outcome.report.stdout.dropped_bytes, 99_000);
}

#[tokio::test]
async fn log_floods_are_capped_by_count_and_by_bytes() {
    let runtime = runtime();
    let mut limits = tight_limits();
    limits.log_records = 10;
    let plugin = hostile(&runtime, limits).await;
    let report = plugin.execute("log-flood", b"100").await.report;
    assert_eq!(report.logs.len(), 10);
    assert_eq!(report.dropped_logs, 90);

    let mut limits = tight_limits();
    limits.log_bytes = 4 * 1024 + 100;
    let plugin = hostile(&runtime, limits).await;
    let report = plugin.execute("log-flood", b"100").await.report;
    assert_eq!(
        report.logs.len(),
        4,
        "each record is 1 KiB of message plus its context"
    );
    assert_eq!(report.dropped_logs, 96);
}

/// One record far larger than `Limits::log_bytes` keeps its start, cut to
/// the cap with a note of its full length, and the call succeeds.
#[tokio::test]
async fn a_huge_log_record_is_cut_to_the_cap_not_lost() {
    let runtime = runtime();
    let plugin = hostile(&runtime, tight_limits()).await;
    let outcome = plugin.execute("log-huge", b"8388608").await;
    assert_eq!(outcome.result.unwrap(), b"done");
    let report = outcome.report;
    assert_eq!(report.dropped_logs, 0);
    let [record] = report.logs.as_slice() else {
        panic!("expected one record, got {}", report.logs.len());
    };
    assert_eq!(record.context, "huge");
    let kept = record.context.len() + record.message.len();
    assert!(kept <= Limits::DEFAULT_LOG_BYTES, "{kept} bytes kept");
    let (text, note) = record
        .message
        .split_once('…')
        .expect("the cut record notes its length");
    assert_eq!(note, " (8388608 bytes in all)");
    assert!(text.bytes().all(|byte| byte == b'h'));
    // Everything but the context and the note is kept.
    assert_eq!(kept, Limits::DEFAULT_LOG_BYTES);
}

#[tokio::test]
async fn too_few_instances_is_refused_at_load_not_a_crash() {
    let runtime = runtime();
    let mut limits = tight_limits();
    limits.instances = 1;
    let err = runtime
        .load_file(guests::HOSTILE, Sandbox::with_limits(limits))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidPlugin, "{err}");
    assert!(err.to_string().contains("3 core instances"), "{err}");
    assert_runtime_serves(&runtime).await;
}

#[tokio::test]
async fn a_plugin_whose_memory_never_fits_fails_at_instantiation() {
    let runtime = runtime();
    let mut limits = tight_limits();
    limits.memory_bytes = 64 << 10;
    let plugin = load(&runtime, guests::HELLO, Sandbox::with_limits(limits)).await;
    let err = plugin.execute("echo", b"x").await.result.unwrap_err();
    assert!(matches!(err, Error::MemoryLimit(_)), "{err:?}");
    assert_runtime_serves(&runtime).await;
}

/// Memories and tables a component creates only through a module it passes
/// to a nested component are not in the load-time count; wasmtime counts
/// them when it compiles the component for the pools, and without pooling
/// the store's limiter counts them at instantiation, so that table memory
/// stays bounded by `tables × table_elements` there too.
#[tokio::test]
async fn memories_and_tables_hidden_in_nested_components_are_still_counted() {
    let cases = [
        (
            "(memory 0) (memory 0)",
            LimitedResource::Memories,
            2,
            "memories",
        ),
        (
            "(table 100000 funcref) (table 100000 funcref) (table 100000 funcref)",
            LimitedResource::Tables,
            4,
            "tables",
        ),
    ];
    for (module, resource, limit, what) in cases {
        let plugin = warden_tests::with_module_passed_to_a_nested_component(
            std::fs::read(guests::HOSTILE).unwrap(),
            module,
        );
        let unpooled = warden_tests::runtime_builder()
            .pooling(false)
            .build()
            .unwrap();
        let loaded = unpooled
            .load(
                warden::Source::new("nested", plugin.clone()),
                Sandbox::default(),
            )
            .await
            .unwrap();
        match loaded.execute("calls", b"").await.result {
            Err(Error::MemoryLimit(refusal)) => {
                assert_eq!((refusal.resource, refusal.limit), (resource, limit));
            }
            other => panic!("{what} without pooling: expected a memory limit, got {other:?}"),
        }
        assert_runtime_serves(&unpooled).await;
        assert_eq!(unpooled.instances_in_use(), 0);

        let pooled = runtime();
        let err = pooled
            .load(warden::Source::new("nested", plugin), Sandbox::default())
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidPlugin, "{what}: {err}");
        assert!(err.to_string().contains(what), "{err}");
        assert_runtime_serves(&pooled).await;
    }
}

//! Live instances: state kept between calls, and discarded after a failure.

use std::time::Duration;

use warden::{Error, ErrorKind, PluginError, Sandbox};

use warden_tests::guests;

use crate::{fuel_runtime, hostile, load, runtime, tight_limits};

#[tokio::test]
async fn a_live_instance_keeps_state_and_a_fresh_call_never_does() {
    let runtime = runtime();
    let plugin = hostile(&runtime, tight_limits()).await;
    let mut instance = plugin.instantiate().await.result.unwrap();
    assert_eq!(instance.metadata().name, "hostile");
    for expected in ["1", "2", "3"] {
        let output = instance.execute("calls", b"").await.result.unwrap();
        assert_eq!(output, expected.as_bytes());
    }
    for _ in 0..2 {
        assert_eq!(plugin.execute("calls", b"").await.result.unwrap(), b"1");
    }
}

#[tokio::test]
async fn a_trap_discards_the_instance() {
    let runtime = runtime();
    let plugin = hostile(&runtime, tight_limits()).await;
    let mut instance = plugin.instantiate().await.result.unwrap();
    let err = instance.execute("panic", b"").await.result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Trap);
    assert!(instance.is_discarded());
    let err = instance.execute("calls", b"").await.result.unwrap_err();
    assert!(
        matches!(err, Error::InstanceDiscarded(ErrorKind::Trap)),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_timeout_discards_the_instance() {
    let runtime = runtime();
    let mut limits = tight_limits();
    limits.timeout = Duration::from_millis(100);
    let plugin = hostile(&runtime, limits).await;
    let mut instance = plugin.instantiate().await.result.unwrap();
    let err = instance.execute("sleep", b"").await.result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    let err = instance.execute("calls", b"").await.result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InstanceDiscarded);
}

#[tokio::test]
async fn plugin_errors_do_not_discard_the_instance() {
    let runtime = runtime();
    let plugin = hostile(&runtime, tight_limits()).await;
    let mut instance = plugin.instantiate().await.result.unwrap();
    let err = instance
        .execute("no-such-action", b"")
        .await
        .result
        .unwrap_err();
    assert!(matches!(err, Error::Plugin(PluginError::UnknownAction(_))));
    assert_eq!(instance.execute("calls", b"").await.result.unwrap(), b"2");
}

#[tokio::test]
async fn each_report_holds_only_its_own_calls_output() {
    let runtime = runtime();
    let plugin = hostile(&runtime, tight_limits()).await;
    let mut instance = plugin.instantiate().await.result.unwrap();
    let first = instance.execute("print", b"10").await.report;
    assert_eq!(first.stdout.bytes.len(), 10);
    let second = instance.execute("log-flood", b"2").await.report;
    assert!(second.stdout.is_empty());
    assert_eq!(second.logs.len(), 2);
    let third = instance.execute("calls", b"").await.report;
    assert!(third.logs.is_empty());
    // Memory is the instance's high-water mark, which never shrinks.
    assert!(third.peak_memory_bytes >= first.peak_memory_bytes);
}

/// Every way into a plugin reports a failing `init` as `init-failed`, apart
/// from the plugin errors `execute` returns.
#[tokio::test]
async fn a_failing_init_is_reported_as_init_failed_on_every_path() {
    let runtime = runtime();
    let mut sandbox = Sandbox::with_limits(tight_limits());
    sandbox
        .grants
        .env
        .push(("HOSTILE_INIT".to_owned(), "fail".to_owned()));
    let fresh = load(&runtime, guests::HOSTILE, sandbox.clone()).await;
    sandbox.calls_per_instance = 4;
    let reused = load(&runtime, guests::HOSTILE, sandbox).await;
    let failures = [
        fresh.execute("calls", b"").await.result.unwrap_err(),
        reused.execute("calls", b"").await.result.unwrap_err(),
        fresh.instantiate().await.result.err().unwrap(),
        fresh.metadata().await.unwrap_err(),
    ];
    for err in failures {
        assert!(
            matches!(&err, Error::InitFailed(PluginError::Failed(why)) if why == "init refuses on purpose"),
            "{err:?}"
        );
        assert_eq!(err.kind().as_str(), "init-failed");
        assert!(!err.poisons_instance());
    }
    assert_eq!(fresh.metrics().failures_of(ErrorKind::InitFailed), 1);
}

/// A memory limit, running out of fuel and a stack overflow discard a live
/// instance as a trap does; a plugin that keeps instances
/// (`calls_per_instance`) runs the next call in a fresh one, whose state
/// starts over.
#[tokio::test]
async fn limits_discard_live_and_kept_instances() {
    let runtime = fuel_runtime();
    for (action, kind) in [
        ("grow-memory", ErrorKind::MemoryLimit),
        ("loop", ErrorKind::OutOfFuel),
        ("recurse", ErrorKind::StackOverflow),
    ] {
        let mut limits = tight_limits();
        if action == "loop" {
            limits.fuel = Some(10_000_000);
        }
        let mut sandbox = Sandbox::with_limits(limits);
        let plugin = load(&runtime, guests::HOSTILE, sandbox.clone()).await;
        let mut instance = plugin.instantiate().await.result.unwrap();
        assert_eq!(instance.execute("calls", b"").await.result.unwrap(), b"1");
        let err = instance.execute(action, b"").await.result.unwrap_err();
        assert_eq!(err.kind(), kind, "{action}: {err}");
        assert!(instance.is_discarded(), "{action}");
        let err = instance.execute("calls", b"").await.result.unwrap_err();
        assert!(
            matches!(err, Error::InstanceDiscarded(after) if after == kind),
            "{action}: {err:?}"
        );

        drop(instance);
        sandbox.calls_per_instance = 10;
        let kept = load(&runtime, guests::HOSTILE, sandbox).await;
        for expected in ["1", "2"] {
            let output = kept.execute("calls", b"").await.result.unwrap();
            assert_eq!(output, expected.as_bytes(), "{action}");
        }
        let err = kept.execute(action, b"").await.result.unwrap_err();
        assert_eq!(err.kind(), kind, "{action}: {err}");
        assert_eq!(
            kept.execute("calls", b"").await.result.unwrap(),
            b"1",
            "{action}: the next call ran in a fresh instance"
        );
    }
}

/// Output over `max_output_bytes` is refused, but the guest returned
/// normally and its instance is sound: it is kept, state and all.
#[tokio::test]
async fn output_too_large_keeps_the_instance() {
    let runtime = runtime();
    let mut limits = tight_limits();
    limits.max_output_bytes = 1 << 10;
    let plugin = hostile(&runtime, limits).await;
    let mut instance = plugin.instantiate().await.result.unwrap();
    assert_eq!(instance.execute("calls", b"").await.result.unwrap(), b"1");
    let err = instance
        .execute("output", b"2048")
        .await
        .result
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutputTooLarge {
                size: 2048,
                limit: 1024
            }
        ),
        "{err:?}"
    );
    assert!(!instance.is_discarded());
    assert_eq!(instance.execute("calls", b"").await.result.unwrap(), b"3");
}

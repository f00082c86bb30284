//! Live instances: state kept between calls, and discarded after a failure.

use std::time::Duration;

use warden::{Error, ErrorKind, PluginError, Sandbox};

use warden_tests::guests;

use crate::{hostile, load, runtime, tight_limits};

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

//! The `lifecycle` export of world 0.2: a kept instance's `shutdown` is
//! called once when the host retires it while it is sound, never after a
//! trap, is bounded by `SHUTDOWN_TIMEOUT`, and is what a registry's unload
//! and shutdown do with kept instances. 0.1 plugins have none.

use std::time::{Duration, Instant};

use warden::{
    Error, Instance, Limits, LogLevel, Plugin, Registry, SHUTDOWN_TIMEOUT, Sandbox, Source,
};
use warden_tests::{guest_bytes, guests};

use crate::{load, runtime, wait_for_instances};

/// Calls a kept instance serves before it is retired: more than one, so
/// that the plugin keeps instances.
const CALLS_PER_INSTANCE: u32 = 4;

/// A sandbox that keeps instances between calls, with a short timeout for
/// the calls that must fail.
fn kept(adjust: impl FnOnce(&mut Sandbox)) -> Sandbox {
    let mut limits = Limits::default();
    limits.timeout = Duration::from_millis(500);
    let mut sandbox = Sandbox::with_limits(limits);
    sandbox.calls_per_instance = CALLS_PER_INSTANCE;
    adjust(&mut sandbox);
    sandbox
}

/// The grant that makes the hostile guest's `shutdown` loop forever.
fn looping_shutdown(sandbox: &mut Sandbox) {
    sandbox
        .grants
        .env
        .push(("HOSTILE_SHUTDOWN".to_owned(), "loop".to_owned()));
}

async fn instantiate(plugin: &Plugin) -> Instance {
    plugin.instantiate().await.result.expect("instantiating")
}

/// Asserts that a shutdown logged exactly one record, `(context, message)`.
fn assert_logged_once(outcome: &warden::Outcome<()>, message: &str) {
    let logs: Vec<_> = outcome
        .report
        .logs
        .iter()
        .map(|record| {
            (
                record.level,
                record.context.as_str(),
                record.message.as_str(),
            )
        })
        .collect();
    assert_eq!(logs, [(LogLevel::Info, "lifecycle", message)]);
}

#[tokio::test]
async fn shutdown_is_called_once_on_a_sound_kept_instance() {
    let runtime = runtime();
    for (path, message) in [
        (guests::HOSTILE_V2, "shutdown"),
        (guests::HELLO_V2, "shutting down"),
    ] {
        let plugin = load(&runtime, path, kept(|_| {})).await;
        let mut instance = instantiate(&plugin).await;
        assert_eq!(instance.execute("echo", b"x").await.result.unwrap(), b"x");
        assert_eq!(runtime.instances_in_use(), 1);
        let outcome = instance.shutdown().await.expect("a shutdown call was made");
        outcome.result.as_ref().unwrap();
        assert_logged_once(&outcome, message);
        assert_eq!(runtime.instances_in_use(), 0, "{path}");
    }
}

#[tokio::test]
async fn shutdown_is_not_called_after_a_trap_discarded_the_instance() {
    let runtime = runtime();
    let plugin = load(&runtime, guests::HOSTILE_V2, kept(|_| {})).await;
    let mut instance = instantiate(&plugin).await;
    let err = instance.execute("loop", b"").await.result.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(instance.is_discarded());
    assert!(instance.shutdown().await.is_none());
    assert_eq!(runtime.instances_in_use(), 0);
}

/// The guest logs, then loops: `SHUTDOWN_TIMEOUT` stops it, and what it
/// logged before is in the report. Without the grant the guest cannot see
/// the variable, and its shutdown returns at once.
#[tokio::test]
async fn a_looping_shutdown_is_stopped_by_the_shutdown_timeout() {
    let runtime = runtime();
    let plugin = load(&runtime, guests::HOSTILE_V2, kept(looping_shutdown)).await;
    let instance = instantiate(&plugin).await;
    let started = Instant::now();
    let outcome = instance.shutdown().await.expect("a shutdown call was made");
    let elapsed = started.elapsed();
    match &outcome.result {
        Err(Error::Timeout { limit }) => assert_eq!(*limit, SHUTDOWN_TIMEOUT),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_logged_once(&outcome, "shutdown");
    assert!(
        elapsed >= SHUTDOWN_TIMEOUT && elapsed < SHUTDOWN_TIMEOUT * 3,
        "{elapsed:?}"
    );
    assert_eq!(runtime.instances_in_use(), 0);

    // The same guest without the grant: the variable does not exist for it.
    let plugin = load(&runtime, guests::HOSTILE_V2, kept(|_| {})).await;
    let started = Instant::now();
    let outcome = instantiate(&plugin).await.shutdown().await.unwrap();
    outcome.result.unwrap();
    assert!(started.elapsed() < SHUTDOWN_TIMEOUT);
}

#[tokio::test]
async fn a_0_1_plugin_has_no_shutdown_to_call() {
    let runtime = runtime();
    let plugin = load(&runtime, guests::HELLO, kept(|_| {})).await;
    assert!(!plugin.has_lifecycle());
    let mut instance = instantiate(&plugin).await;
    instance.execute("echo", b"x").await.result.unwrap();
    assert!(instance.shutdown().await.is_none());
    assert_eq!(runtime.instances_in_use(), 0);
}

/// A plugin that keeps instances holds one between calls; `retire_kept_instances`
/// ends it, calling its `shutdown` (which, looping, takes the shutdown
/// timeout: the proof it was called).
#[tokio::test]
async fn retiring_kept_instances_calls_their_shutdown() {
    let runtime = runtime();
    let plugin = load(&runtime, guests::HOSTILE_V2, kept(looping_shutdown)).await;
    assert_eq!(
        plugin.execute("echo", b"kept").await.result.unwrap(),
        b"kept"
    );
    assert_eq!(runtime.instances_in_use(), 1, "the instance is kept");
    let started = Instant::now();
    plugin.retire_kept_instances().await;
    assert!(
        started.elapsed() >= SHUTDOWN_TIMEOUT,
        "shutdown was not called"
    );
    assert_eq!(runtime.instances_in_use(), 0);
    // Calls after it start a new instance.
    assert_eq!(plugin.execute("echo", b"new").await.result.unwrap(), b"new");
}

#[tokio::test]
async fn a_registry_retires_kept_instances_on_unload_and_on_shutdown() {
    let registry = Registry::new(runtime());
    let bytes = guest_bytes(guests::HOSTILE_V2);
    for name in ["unloaded", "at-shutdown"] {
        registry
            .insert(
                name,
                Source::new(name, bytes.clone()),
                kept(looping_shutdown),
            )
            .await
            .unwrap();
        let outcome = registry.execute(name, "echo", b"x").await;
        assert_eq!(outcome.result.unwrap(), b"x");
    }
    assert_eq!(registry.runtime().instances_in_use(), 2);

    // Unloading retires in the background: the instance goes once its
    // shutdown has run into its timeout.
    registry.unload("unloaded").unwrap();
    tokio::time::sleep(SHUTDOWN_TIMEOUT / 2).await;
    assert_eq!(
        registry.runtime().instances_in_use(),
        2,
        "the instance went before its shutdown ran out"
    );
    wait_for_instances(registry.runtime(), 1).await;

    let started = Instant::now();
    let shutdown = registry.shutdown(Duration::from_secs(1)).await;
    assert_eq!((shutdown.finished, shutdown.cancelled), (0, 0));
    assert!(
        started.elapsed() >= SHUTDOWN_TIMEOUT,
        "Registry::shutdown did not call the kept instance's shutdown"
    );
    assert_eq!(registry.runtime().instances_in_use(), 0);
}

//! Calls that never finish because their caller went away: a dropped future,
//! an aborted task, a tokio runtime shut down with calls in flight. Each must
//! free the call's instance at once and leave the Warden runtime serving.

use std::collections::BTreeMap;
use std::time::Duration;

use warden::tools::KvInspector;
use warden::{KvGrant, Limits, Sandbox, Source};
use warden_tests::{guest_bytes, guests};

use crate::{assert_runtime_serves, hostile, runtime, wait_for_instances};

/// Long enough that no call here ends by its own timeout: every one of them
/// is cancelled first.
fn patient_limits() -> Limits {
    let mut limits = Limits::default();
    limits.timeout = Duration::from_secs(60);
    limits
}

/// How long the calls run before they are cancelled.
const RUN_FOR: Duration = Duration::from_millis(200);

#[tokio::test]
async fn dropping_an_in_flight_call_frees_its_instance() {
    let runtime = runtime();
    let plugin = hostile(&runtime, patient_limits()).await;
    // In guest code, and blocked in a host call.
    for action in ["loop", "busy-host-calls", "sleep"] {
        let call = plugin.execute(action, b"");
        assert!(
            tokio::time::timeout(RUN_FOR, call).await.is_err(),
            "{action} finished"
        );
        assert_eq!(runtime.instances_in_use(), 0, "{action}");
        assert_eq!(plugin.execute("calls", b"").await.result.unwrap(), b"1");
    }
    assert_runtime_serves(&runtime).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_tasks_free_their_instances() {
    let runtime = runtime();
    let plugin = hostile(&runtime, patient_limits()).await;
    let mut tasks = tokio::task::JoinSet::new();
    for action in ["loop", "busy-host-calls", "sleep", "grow-slowly"]
        .into_iter()
        .cycle()
        .take(16)
    {
        let plugin = plugin.clone();
        tasks.spawn(async move { plugin.execute(action, b"").await });
    }
    wait_for_instances(&runtime, 16).await;
    tokio::time::sleep(RUN_FOR).await;
    assert_eq!(runtime.instances_in_use(), 16);
    tasks.abort_all();
    while let Some(joined) = tasks.join_next().await {
        assert!(joined.unwrap_err().is_cancelled());
    }
    assert_eq!(runtime.instances_in_use(), 0);
    assert_runtime_serves(&runtime).await;
}

#[test]
fn shutting_down_tokio_with_calls_in_flight_is_safe() {
    let runtime = runtime();
    let executor = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    executor.block_on(async {
        let plugin = hostile(&runtime, patient_limits()).await;
        for action in ["loop", "sleep", "nap"].into_iter().cycle().take(12) {
            let plugin = plugin.clone();
            tokio::spawn(async move { plugin.execute(action, b"600000").await });
        }
        wait_for_instances(&runtime, 12).await;
        tokio::time::sleep(RUN_FOR).await;
        assert_eq!(runtime.instances_in_use(), 12);
    });
    // Dropping the executor drops every task, with its call, at its next
    // yield; a guest spinning in wasm yields at every epoch tick.
    let started = std::time::Instant::now();
    executor.shutdown_timeout(Duration::from_secs(10));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited for the calls"
    );
    assert_eq!(runtime.instances_in_use(), 0);

    let executor = tokio::runtime::Runtime::new().unwrap();
    executor.block_on(assert_runtime_serves(&runtime));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_runtime_and_plugins_mid_call_is_safe() {
    let runtime = runtime();
    let plugin = hostile(&runtime, patient_limits()).await;
    let call = tokio::spawn(async move { plugin.execute("loop", b"").await });
    drop(runtime);
    tokio::time::sleep(RUN_FOR).await;
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    assert_runtime_serves(&crate::runtime()).await;
}

/// A call cancelled in the middle of kv writes leaves whole batches only:
/// each `set-many` is one transaction, which a cancelled caller never splits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_kv_writes_leave_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("kv.sqlite");
    let runtime = runtime();
    let mut sandbox = Sandbox::with_limits(patient_limits());
    sandbox.grants.kv = Some(KvGrant::at(&store));
    let plugin = runtime
        .load(Source::new("writer", guest_bytes(guests::PROBE)), sandbox)
        .await
        .unwrap();
    for _ in 0..5 {
        let call = plugin.execute("kv-batches", b"1000000");
        assert!(tokio::time::timeout(RUN_FOR, call).await.is_err());
        assert_eq!(runtime.instances_in_use(), 0);
    }

    let inspector = KvInspector::open(&store, "writer").unwrap();
    let keys = inspector.keys("default").unwrap();
    assert!(!keys.is_empty(), "no batch was written in time");
    let mut per_batch: BTreeMap<&str, usize> = BTreeMap::new();
    for key in &keys {
        let (batch, _) = key.split_once('-').expect("bBATCH-KEY");
        *per_batch.entry(batch).or_default() += 1;
    }
    assert!(
        per_batch.values().all(|&count| count == 100),
        "a batch was split: {per_batch:?}"
    );
}

//! Calls that never finish because their caller went away: a dropped future,
//! an aborted task, a tokio runtime shut down with calls in flight. Each must
//! free the call's instance at once and leave the Warden runtime serving.

use std::collections::BTreeMap;
use std::time::Duration;

use warden::tools::KvInspector;
use warden::{ErrorKind, KvGrant, Limits, Sandbox, Source};
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

/// Every handle the caller holds (the `Runtime` and the `Plugin`) is dropped
/// while two calls run in wasm, so the calls' own futures hold the last
/// references. One goes on to its timeout, which needs the runtime's epoch
/// ticker to outlive the handle; the other is then dropped itself, which
/// frees the last of the runtime (its store, its instance slot, its ticker)
/// from inside the cancelled task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_runtime_and_plugins_mid_call_is_safe() {
    let runtime = runtime();
    let mut limits = Limits::default();
    limits.timeout = Duration::from_secs(2);
    let brief = hostile(&runtime, limits).await;
    let patient = hostile(&runtime, patient_limits()).await;
    let spawn_loop = |plugin: &warden::Plugin| {
        let plugin = plugin.clone();
        tokio::spawn(async move { plugin.execute("loop", b"").await })
    };
    let (finishing, cancelled) = (spawn_loop(&brief), spawn_loop(&patient));
    wait_for_instances(&runtime, 2).await;
    drop((brief, patient, runtime));

    let outcome = tokio::time::timeout(Duration::from_secs(30), finishing)
        .await
        .expect("the call ended at its timeout")
        .unwrap();
    let err = outcome.result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");

    assert!(!cancelled.is_finished(), "the other call is still running");
    cancelled.abort();
    assert!(cancelled.await.unwrap_err().is_cancelled());
    assert_runtime_serves(&crate::runtime()).await;
}

/// Calls cancelled in the middle of kv writes leave whole batches only:
/// each `set-many` is one transaction, which a cancelled caller never splits.
/// Each of the five calls writes under its own plugin name (its own kv
/// namespace), and is cancelled only once a batch of it is in the store, so
/// every cancellation lands among its writes and is checked on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_kv_writes_leave_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("kv.sqlite");
    let runtime = runtime();
    for writer in 0..5 {
        let name = format!("writer-{writer}");
        let mut sandbox = Sandbox::with_limits(patient_limits());
        sandbox.grants.kv = Some(KvGrant::at(&store));
        let plugin = runtime
            .load(Source::new(&name, guest_bytes(guests::PROBE)), sandbox)
            .await
            .unwrap();
        let call = plugin.execute("kv-batches", b"1000000");
        tokio::select! {
            outcome = call => panic!("{name}: a million batches finished: {:?}", outcome.result),
            () = wait_for_a_batch(&store, &name) => {}
        }
        assert_eq!(runtime.instances_in_use(), 0, "{name}");
    }

    for writer in 0..5 {
        let name = format!("writer-{writer}");
        let inspector = KvInspector::open(&store, &name).unwrap();
        let mut per_batch: BTreeMap<u32, usize> = BTreeMap::new();
        for key in inspector.keys("default").unwrap() {
            let (batch, _) = key.split_once('-').expect("bBATCH-KEY");
            let batch: u32 = batch[1..].parse().expect("a batch number");
            let value = inspector.get("default", &key).unwrap().unwrap();
            assert_eq!(value, batch.to_string().as_bytes(), "{name}: {key}");
            *per_batch.entry(batch).or_default() += 1;
        }
        // Batches are written in order: whole ones numbered from 0, then
        // nothing of the one the cancellation interrupted.
        let batches: Vec<u32> = per_batch.keys().copied().collect();
        assert!(!batches.is_empty(), "{name}: nothing written");
        assert_eq!(
            batches,
            (0..batches.len() as u32).collect::<Vec<_>>(),
            "{name}: a gap"
        );
        assert!(
            per_batch.values().all(|&count| count == 100),
            "{name}: a batch was split: {per_batch:?}"
        );
    }
}

/// Waits until the store holds at least one batch of `namespace`'s.
async fn wait_for_a_batch(store: &std::path::Path, namespace: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let written = KvInspector::open(store, namespace)
            .and_then(|inspector| inspector.keys("default"))
            .is_ok_and(|keys| !keys.is_empty());
        if written {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{namespace} wrote no batch in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

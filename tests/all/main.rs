//! Warden's integration tests: one binary, one module per concern.

mod cancellation;
mod capabilities;
mod concurrency;
mod conformance;
mod deterministic;
mod fuzz;
mod grant_paths;
mod grants;
mod hello;
mod hostile;
mod instance;
mod invalid;
mod kv_redis;
mod lifecycle;
mod limits;
mod programs;
mod registry;
mod scale;
mod slots;
mod streams;
mod trust;
mod world_v0_2;

use std::time::Duration;

use warden::{Limits, Plugin, Runtime, Sandbox};
use warden_tests::guests;

/// A runtime with default settings, but the tests' compile cache (see
/// [`warden_tests::runtime_builder`]).
fn runtime() -> Runtime {
    warden_tests::runtime_builder()
        .build()
        .expect("creating the runtime")
}

/// A runtime that meters fuel.
fn fuel_runtime() -> Runtime {
    warden_tests::runtime_builder()
        .fuel(true)
        .build()
        .expect("creating the runtime")
}

/// The timeout of [`tight_limits`]: short enough for hostile guests to fail
/// fast, long enough that a good call never hits it on a loaded machine.
const TIGHT_TIMEOUT: Duration = Duration::from_secs(1);

/// Limits small enough that hostile guests fail fast.
fn tight_limits() -> Limits {
    let mut limits = Limits::default();
    limits.timeout = TIGHT_TIMEOUT;
    limits.memory_bytes = 16 << 20;
    limits
}

async fn load(runtime: &Runtime, path: &str, sandbox: Sandbox) -> Plugin {
    runtime
        .load_file(path, sandbox)
        .await
        .unwrap_or_else(|err| panic!("loading {path}: {err}"))
}

async fn hello(runtime: &Runtime) -> Plugin {
    load(runtime, guests::HELLO, Sandbox::default()).await
}

async fn hostile(runtime: &Runtime, limits: Limits) -> Plugin {
    load(runtime, guests::HOSTILE, Sandbox::with_limits(limits)).await
}

/// Waits until `count` instances are in use, as the calls just spawned
/// start: on a loaded machine that can take a while.
async fn wait_for_instances(runtime: &Runtime, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while runtime.instances_in_use() != count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} instances in use after 30 s, expected {count}",
            runtime.instances_in_use()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that `plugin` still serves a good call after a failure.
async fn assert_serves(plugin: &Plugin) {
    let outcome = plugin.execute("calls", b"").await;
    assert_eq!(outcome.result.expect("a good call after a failure"), b"1");
}

/// Asserts that the runtime still serves a good call on a fresh plugin.
async fn assert_runtime_serves(runtime: &Runtime) {
    let plugin = hello(runtime).await;
    let output = plugin
        .execute("count-vowels", b"hello world")
        .await
        .result
        .expect("a good call after a failure");
    assert_eq!(output, b"3");
}

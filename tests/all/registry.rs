//! The plugin registry: loading by name, hot reload while calls run, and
//! graceful shutdown.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use warden::{Error, ErrorKind, Limits, Registry, Reload, Sandbox, Source};
use warden_tests::{guest_bytes, guests};

use crate::{runtime, wait_for_instances};

/// Replaces `path` the way deploy tools do: write beside it, then rename.
fn replace(path: &Path, bytes: &[u8]) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, bytes).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

async fn count_vowels(registry: &Registry, name: &str) -> Result<Vec<u8>, Error> {
    registry
        .execute(name, "count-vowels", b"hello world")
        .await
        .result
}

#[tokio::test]
async fn plugins_are_loaded_listed_found_and_unloaded_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.wasm");
    std::fs::copy(guests::PROBE, &path).unwrap();
    let registry = Registry::new(runtime());
    registry
        .insert(
            "hello",
            Source::new("ignored", guest_bytes(guests::HELLO)),
            Sandbox::default(),
        )
        .await
        .unwrap();
    registry
        .load_file("probe", &path, Sandbox::default())
        .await
        .unwrap();

    let listed = registry.list();
    let names: Vec<&str> = listed.iter().map(|plugin| plugin.name.as_str()).collect();
    assert_eq!(names, ["hello", "probe"]);
    assert_eq!(listed[0].path, None);
    assert_eq!(listed[1].path.as_deref(), Some(path.as_path()));
    assert_eq!(registry.get("hello").unwrap().name(), "hello");
    assert_eq!(count_vowels(&registry, "hello").await.unwrap(), b"3");

    assert!(registry.unload("hello").is_some());
    assert!(registry.unload("hello").is_none());
    match count_vowels(&registry, "hello").await {
        Err(Error::UnknownPlugin { name, known }) => {
            assert_eq!(name, "hello");
            assert_eq!(known, ["probe"]);
        }
        other => panic!("expected an unknown plugin, got {other:?}"),
    }
}

#[tokio::test]
async fn a_manifest_loads_what_it_can_and_says_why_not_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.wasm"), b"not wasm").unwrap();
    let manifest = dir.path().join("warden.toml");
    std::fs::write(
        &manifest,
        format!(
            "[plugins.hello]\npath = {:?}\n\n[plugins.broken]\npath = \"broken.wasm\"\n\n\
             [plugins.missing]\npath = \"missing.wasm\"\n",
            guests::HELLO
        ),
    )
    .unwrap();
    let registry = Registry::new(runtime());
    let report = registry.load_manifest(&manifest).await.unwrap();
    assert_eq!(report.loaded, ["hello"]);
    let failed: Vec<(&str, ErrorKind)> = report
        .failed
        .iter()
        .map(|(name, err)| (name.as_str(), err.kind()))
        .collect();
    assert_eq!(
        failed,
        [
            ("broken", ErrorKind::InvalidPlugin),
            ("missing", ErrorKind::Io)
        ]
    );
    assert_eq!(count_vowels(&registry, "hello").await.unwrap(), b"3");

    // The manifest drops `hello` and fixes nothing else: hello is removed.
    std::fs::write(&manifest, "[plugins.broken]\npath = \"broken.wasm\"\n").unwrap();
    let reloads = registry.check_for_changes().await;
    let [Reload::Manifest(report)] = reloads.as_slice() else {
        panic!("expected the manifest to be read again: {reloads:?}");
    };
    assert_eq!(report.removed, ["hello"]);
    assert!(registry.get("hello").is_none());

    // A manifest that does not parse changes nothing.
    std::fs::write(&manifest, "[plugins.broken\n").unwrap();
    let reloads = registry.check_for_changes().await;
    assert!(
        matches!(
            reloads.as_slice(),
            [Reload::ManifestFailed(Error::InvalidConfig(_))]
        ),
        "{reloads:?}"
    );
    assert!(
        registry.check_for_changes().await.is_empty(),
        "reported once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_leaves_calls_in_flight_on_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin.wasm");
    std::fs::copy(guests::HOSTILE, &path).unwrap();
    let runtime = runtime();
    let registry = Registry::new(runtime.clone());
    registry
        .load_file("plugin", &path, Sandbox::default())
        .await
        .unwrap();

    let napping = {
        let registry = registry.clone();
        // Long enough to outlast the reload on a loaded machine, within the
        // default 5 s timeout.
        tokio::spawn(async move { registry.execute("plugin", "nap", b"2000").await })
    };
    wait_for_instances(&runtime, 1).await;
    replace(&path, &guest_bytes(guests::HELLO));
    let reloads = registry.check_for_changes().await;
    assert!(
        matches!(reloads.as_slice(), [Reload::Replaced { name, .. }] if name == "plugin"),
        "{reloads:?}"
    );
    assert!(!napping.is_finished(), "the call was still in flight");
    // New calls see hello; the call that started on hostile finishes there.
    assert_eq!(count_vowels(&registry, "plugin").await.unwrap(), b"3");
    assert_eq!(napping.await.unwrap().result.unwrap(), b"rested");

    // A broken version is refused, reported once, and hello keeps serving.
    replace(&path, b"\0asm broken");
    let reloads = registry.check_for_changes().await;
    match reloads.as_slice() {
        [Reload::Failed { name, error }] => {
            assert_eq!(name, "plugin");
            assert_eq!(error.kind(), ErrorKind::InvalidPlugin);
        }
        other => panic!("expected a failed reload, got {other:?}"),
    }
    assert!(registry.check_for_changes().await.is_empty());
    assert_eq!(count_vowels(&registry, "plugin").await.unwrap(), b"3");
}

/// A plugin written against the canonical ABI whose every action answers
/// `v{version}`, so a caller can tell which version served it.
fn versioned_plugin(version: u32) -> Vec<u8> {
    let answer = format!("v{version}");
    let module = wat::parse_str(format!(
        r#"(module
          (memory (export "memory") 1)
          (global $heap (mut i32) (i32.const 1024))
          (data (i32.const 64) "versioned")
          (data (i32.const 80) "0.1.0")
          (data (i32.const 96) "answers its version")
          (data (i32.const 128) "version")
          ;; `actions`: one (pointer, length) pair.
          (data (i32.const 144) "\80\00\00\00\07\00\00\00")
          (data (i32.const 160) "{answer}")
          (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
            (local $ptr i32)
            (local.set $ptr
              (i32.and
                (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
                (i32.sub (i32.const 0) (local.get 2))))
            (global.set $heap (i32.add (local.get $ptr) (local.get 3)))
            (local.get $ptr))
          (func (export "warden:plugin/guest@0.1.0#init") (result i32)
            (i32.store8 (i32.const 512) (i32.const 0))
            (i32.store (i32.const 516) (i32.const 64))
            (i32.store (i32.const 520) (i32.const 9))
            (i32.store (i32.const 524) (i32.const 80))
            (i32.store (i32.const 528) (i32.const 5))
            (i32.store (i32.const 532) (i32.const 96))
            (i32.store (i32.const 536) (i32.const 19))
            (i32.store (i32.const 540) (i32.const 144))
            (i32.store (i32.const 544) (i32.const 1))
            (i32.const 512))
          (func (export "warden:plugin/guest@0.1.0#execute")
            (param i32 i32 i32 i32) (result i32)
            (i32.store8 (i32.const 512) (i32.const 0))
            (i32.store (i32.const 516) (i32.const 160))
            (i32.store (i32.const 520) (i32.const {len}))
            (i32.const 512)))"#,
        len = answer.len()
    ))
    .expect("the versioned plugin parses");
    warden_tests::wrap_core_module(module, None, "plugin")
}

/// Callers keep calling through five hot swaps. Every call succeeds, each
/// version serves some of them (each swap waits until the version it
/// installed has answered), and no caller sees an older version after a
/// newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_a_plugin_under_load_fails_no_call() {
    const SWAPS: u32 = 5;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin.wasm");
    std::fs::write(&path, versioned_plugin(0)).unwrap();
    let registry = Registry::new(runtime());
    registry
        .load_file("plugin", &path, Sandbox::default())
        .await
        .unwrap();
    let mut watch = registry.watch(Duration::from_millis(20));

    let served: Arc<Mutex<BTreeMap<u32, usize>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (registry, served, stop) = (registry.clone(), served.clone(), stop.clone());
        callers.spawn(async move {
            let mut newest = 0;
            while !stop.load(Ordering::SeqCst) {
                let output = registry
                    .execute("plugin", "version", b"")
                    .await
                    .result
                    .expect("every call succeeds");
                let version: u32 = std::str::from_utf8(&output)
                    .ok()
                    .and_then(|text| text.strip_prefix('v')?.parse().ok())
                    .unwrap_or_else(|| panic!("answered {output:?}"));
                assert!(version >= newest, "v{version} after v{newest}");
                newest = version;
                *served.lock().unwrap().entry(version).or_default() += 1;
            }
        });
    }
    let wait_until_served = |version: u32| {
        let served = served.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while !served.lock().unwrap().contains_key(&version) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "v{version} served no call in 30 s"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_until_served(0).await;
    let mut hashes = vec![registry.list()[0].sha256.clone()];
    for version in 1..=SWAPS {
        replace(&path, &versioned_plugin(version));
        let reload = tokio::time::timeout(Duration::from_secs(30), watch.next())
            .await
            .expect("the watcher noticed the change")
            .unwrap();
        let Reload::Replaced { from, to, .. } = reload else {
            panic!("expected a replacement, got {reload:?}");
        };
        assert_eq!(&from, hashes.last().unwrap());
        hashes.push(to);
        wait_until_served(version).await;
    }
    stop.store(true, Ordering::SeqCst);
    while let Some(caller) = callers.join_next().await {
        caller.expect("every call succeeded");
    }
    let served = served.lock().unwrap().clone();
    assert_eq!(
        served.keys().copied().collect::<Vec<_>>(),
        (0..=SWAPS).collect::<Vec<_>>(),
        "{served:?}"
    );
    assert_eq!(registry.list()[0].sha256, *hashes.last().unwrap());
    hashes.dedup();
    assert_eq!(
        hashes.len(),
        1 + SWAPS as usize,
        "every version had its own hash"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_calls_finish_then_cancels_the_rest() {
    let runtime = runtime();
    let registry = Registry::new(runtime.clone());
    let mut limits = Limits::default();
    limits.timeout = Duration::from_secs(60);
    registry
        .insert(
            "hostile",
            Source::new("hostile", guest_bytes(guests::HOSTILE)),
            Sandbox::with_limits(limits),
        )
        .await
        .unwrap();
    let call = |action: &'static str, input: &'static [u8]| {
        let registry = registry.clone();
        tokio::spawn(async move { registry.execute("hostile", action, input).await })
    };
    // The endless call is in flight first, so the nap is seen in flight as
    // soon as it starts; the nap ends well within the grace period.
    let endless = call("loop", b"");
    wait_for_instances(&runtime, 1).await;
    let quick = call("nap", b"1000");
    wait_for_instances(&runtime, 2).await;

    let stopped = registry.shutdown(Duration::from_secs(3)).await;
    assert_eq!((stopped.finished, stopped.cancelled), (1, 1));
    assert_eq!(quick.await.unwrap().result.unwrap(), b"rested");
    let err = endless.await.unwrap().result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    assert_eq!(runtime.instances_in_use(), 0);

    let err = registry
        .execute("hostile", "calls", b"")
        .await
        .result
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert!(registry.get("hostile").is_some(), "still there to inspect");
}

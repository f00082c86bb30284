//! `warden compile`: filling the compile cache ahead of the runs.

use warden_tests::guests;

use crate::support::{assert_status, json_at_home, report, warden, warden_at_home};

#[test]
fn compile_warms_the_cache_for_later_runs() {
    // One home for every run, so that they share the key sealing the cache.
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cache = cache.to_str().unwrap();
    let (first, code) = report(&warden_at_home(
        dir.path(),
        &["compile", guests::HOSTILE, "--cache-dir", cache, "--json"],
    ));
    assert_eq!(code, 0);
    assert_eq!(
        (&first["cached"], &first["cache"]),
        (&false.into(), &true.into())
    );
    let (second, _) = report(&warden_at_home(
        dir.path(),
        &["compile", guests::HOSTILE, "--cache-dir", cache, "--json"],
    ));
    assert_eq!(second["cached"], true);
    // Preview 1 modules run on wasmtime-wasi's preview 1 implementation and
    // are compiled on every run; `compile` says so rather than claim a cache.
    let output = warden_at_home(
        dir.path(),
        &["compile", guests::COMMAND_PREVIEW1, "--cache-dir", cache],
    );
    assert_eq!(output.status.code(), Some(0));
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .contains("a preview 1 module is compiled on every run")
    );
    let output = warden(&["compile", guests::HELLO, "--no-cache"]);
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .contains("the cache is off")
    );
    let (value, code) = json_at_home(
        dir.path(),
        &["run", guests::HOSTILE, "calls", "--cache-dir", cache],
    );
    assert_status(&value, code, "ok", 0);
    let output = warden(&["compile", "/no/such.wasm"]);
    assert_eq!(output.status.code(), Some(11));
}

//! The kv capability across processes (SQLite files and Redis) and
//! `warden kv`, which looks inside a store.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use warden_tests::guests;

use crate::support::{
    assert_status, exit_code, json, kv_store, refused, report, warden, write_file,
};

/// `warden run` killed with SIGKILL in the middle of kv writes: the store
/// opens afterwards and holds whole batches only, and takes new writes.
#[test]
fn a_killed_run_leaves_only_whole_kv_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = kv_store(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args([
            "run",
            guests::PROBE,
            "kv-batches",
            "--input",
            "1000000",
            "--kv-store",
            &store,
            // A plugin file's own namespace is derived from its hash; this
            // one is named, so that `warden kv probe` finds it.
            "--kv-namespace",
            "probe",
            "--timeout",
            "10m",
            "--unsigned",
            "allow",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting warden");
    // Kill it once some batches are in; it would run for minutes otherwise.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
        let listed = warden(&["kv", "probe", "list", "--store", &store]);
        if listed.status.success() && listed.stdout.len() > 5 * 100 * 10 {
            break;
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();

    let listed = warden(&["kv", "probe", "list", "--store", &store]);
    assert!(listed.status.success(), "{listed:?}");
    let keys = String::from_utf8(listed.stdout).unwrap();
    let mut per_batch = std::collections::BTreeMap::new();
    for key in keys.lines() {
        let (batch, _) = key.split_once('-').expect("bBATCH-KEY");
        *per_batch.entry(batch.to_owned()).or_insert(0) += 1;
    }
    assert!(!per_batch.is_empty(), "no batch was written");
    assert!(
        per_batch.values().all(|&count| count == 100),
        "a batch was split: {per_batch:?}"
    );
    // Each batch is a number that runs from 0 without gaps.
    let batches: Vec<usize> = per_batch
        .keys()
        .map(|batch| batch[1..].parse().unwrap())
        .collect();
    assert_eq!(batches, (0..batches.len()).collect::<Vec<_>>());

    let (value, code) = json(&[
        "run",
        guests::PROBE,
        "kv-set",
        "--input",
        "after=kill",
        "--kv-store",
        &store,
    ]);
    assert_status(&value, code, "ok", 0);
}

/// Processes granted the same Redis server share one store; `warden kv`,
/// which reads SQLite files only, says so instead of guessing.
#[test]
fn kv_on_redis_is_shared_by_processes() {
    let server = warden_tests::RedisServer::start();
    /// `warden run` of the probe counting a visit in `store`.
    fn count_visit(store: &str) -> [&str; 7] {
        [
            "run",
            guests::PROBE,
            "kv-incr",
            "--input",
            "visits",
            "--kv-store",
            store,
        ]
    }
    for expected in ["1", "2"] {
        let (value, code) = json(&count_visit(&server.url));
        assert_status(&value, code, "ok", 0);
        assert_eq!(value["output"], expected);
    }

    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let unreachable = format!("redis://127.0.0.1:{closed_port}/0");
    let (code, stderr) = refused(&count_visit(&unreachable));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot use the kv store `{unreachable}`")),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let manifest = write_file(
        dir.path(),
        "warden.toml",
        format!(
            "[plugins.probe]\npath = {:?}\n[plugins.probe.grants]\nkv = {{ redis = {:?} }}\n",
            guests::PROBE,
            server.url
        )
        .as_bytes(),
    );
    let (code, stderr) = refused(&["kv", "probe", "list", "--manifest", &manifest]);
    assert_eq!(code, 2, "a usage error");
    assert!(stderr.contains("SQLite files only"), "{stderr}");
    let (code, stderr) = refused(&["kv", "probe", "list", "--store", &server.url]);
    assert_eq!(code, 2, "a usage error");
    assert!(stderr.contains("SQLite files only"), "{stderr}");
}

#[test]
fn kv_persists_across_processes_and_operators_can_look_inside() {
    let dir = tempfile::tempdir().unwrap();
    let store = kv_store(&dir);
    let (value, code) = json(&[
        "run",
        guests::PROBE,
        "kv-set",
        "--input",
        "colour=blue",
        "--kv-store",
        &store,
        // Named, so that `warden kv probe` finds it (a plugin file's own
        // namespace is derived from its hash).
        "--kv-namespace",
        "probe",
    ]);
    assert_status(&value, code, "ok", 0);
    let (value, code) = json(&[
        "run",
        guests::PROBE,
        "kv-get",
        "--input",
        "colour",
        "--kv-store",
        &store,
        "--kv-namespace",
        "probe",
    ]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"], "blue");

    let output = warden(&["kv", "probe", "list", "--store", &store]);
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "colour\n");
    let output = warden(&["kv", "probe", "get", "colour", "--store", &store]);
    assert_eq!(output.stdout, b"blue");
    let output = warden(&["kv", "probe", "buckets", "--store", &store, "--json"]);
    assert_eq!(report(&output).0, serde_json::json!(["default"]));
    let output = warden(&["kv", "other-plugin", "list", "--store", &store]);
    assert!(output.stdout.is_empty(), "another namespace is empty");
    assert_eq!(
        exit_code(&["kv", "probe", "delete", "colour", "--store", &store]),
        Some(0)
    );
    assert_eq!(
        exit_code(&["kv", "probe", "get", "colour", "--store", &store]),
        Some(1)
    );
    let missing = warden(&["kv", "probe", "list", "--store", "/no/such/kv.sqlite"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8(missing.stderr)
            .unwrap()
            .contains("no kv store")
    );

    let (value, code) = json(&["run", guests::PROBE, "kv-get", "--input", "colour"]);
    assert_status(&value, code, "denied", 30);
    assert_eq!(value["denials"][0]["capability"], "kv");
}

#[test]
fn kv_increments_from_concurrent_processes_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let store = kv_store(&dir);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                for _ in 0..5 {
                    let (value, code) = json(&[
                        "run",
                        guests::PROBE,
                        "kv-incr",
                        "--input",
                        "hits",
                        "--kv-store",
                        &store,
                        "--kv-namespace",
                        "probe",
                    ]);
                    assert_status(&value, code, "ok", 0);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("no process failed");
    }
    let output = warden(&["kv", "probe", "get", "hits", "--store", &store]);
    assert_eq!(output.stdout, b"20");
}

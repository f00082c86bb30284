//! The kv capability across processes (SQLite files and Redis) and
//! `warden kv`, which looks inside a store.

use std::process::Stdio;
use std::time::{Duration, Instant};

use warden_tests::guests;

use crate::support::{
    assert_status, at_home, exit_code, json, kv_store, refused, report, warden, warden_with_stdin,
    write_file,
};

/// `warden run` killed with SIGKILL in the middle of kv writes: the store
/// opens afterwards and holds whole batches only, and takes new writes.
#[test]
fn a_killed_run_leaves_only_whole_kv_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = kv_store(&dir);
    let mut child = at_home(
        dir.path(),
        &[
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
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("starting warden");
    // Kill it once some batches are in; it would run for minutes otherwise.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
        let listed = warden(&["kv", "probe", "list", "--kv-store", &store]);
        if listed.status.success() && listed.stdout.len() > 5 * 100 * 10 {
            break;
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();

    let listed = warden(&["kv", "probe", "list", "--kv-store", &store]);
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
    let (code, stderr) = refused(&["kv", "probe", "list", "--kv-store", &server.url]);
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

    let output = warden(&["kv", "probe", "list", "--kv-store", &store]);
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "colour\n");
    let output = warden(&["kv", "probe", "get", "colour", "--kv-store", &store]);
    assert_eq!(output.stdout, b"blue");
    let output = warden(&["kv", "probe", "buckets", "--kv-store", &store, "--json"]);
    assert_eq!(report(&output).0, serde_json::json!(["default"]));
    let output = warden(&["kv", "other-plugin", "list", "--kv-store", &store]);
    assert!(output.stdout.is_empty(), "another namespace is empty");
    assert_eq!(
        exit_code(&["kv", "probe", "delete", "colour", "--kv-store", &store]),
        Some(0)
    );
    assert_eq!(
        exit_code(&["kv", "probe", "get", "colour", "--kv-store", &store]),
        Some(1)
    );
    let missing = warden(&["kv", "probe", "list", "--kv-store", "/no/such/kv.sqlite"]);
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
    let output = warden(&["kv", "probe", "get", "hits", "--kv-store", &store]);
    assert_eq!(output.stdout, b"20");
}

/// `warden kv set` writes what a plugin then reads, from an argument or
/// (for a value that is not text) from stdin; a new store is created and
/// named on stderr, an existing one silently used.
#[test]
fn kv_set_writes_what_the_plugin_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = kv_store(&dir);
    let output = warden(&["kv", "probe", "set", "colour", "blue", "--kv-store", &store]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!("warden: created the kv store `{store}`\n")
    );
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

    let bytes = [0xff, 0x00, 0xfe];
    let output = warden_with_stdin(&["kv", "probe", "set", "raw", "--kv-store", &store], &bytes);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        output.stderr.is_empty(),
        "an existing store is not announced"
    );
    let output = warden(&["kv", "probe", "get", "raw", "--kv-store", &store]);
    assert_eq!(output.stdout, bytes);

    // A value over the default quota is refused, and nothing is written.
    let too_big = vec![b'x'; warden::KvQuotas::default().max_value_bytes + 1];
    let output = warden_with_stdin(
        &["kv", "probe", "set", "big", "--kv-store", &store],
        &too_big,
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("larger than a kv value may be"),
        "{output:?}"
    );
    assert_eq!(
        exit_code(&["kv", "probe", "get", "big", "--kv-store", &store]),
        Some(1)
    );
}

/// `--kv-store` is the store's one name, on `run` and on `kv`; `--store`,
/// its old name on `kv`, still works but is no longer shown.
#[test]
fn the_old_store_flag_of_kv_still_works_unlisted() {
    let dir = tempfile::tempdir().unwrap();
    let store = kv_store(&dir);
    let output = warden(&["kv", "probe", "set", "k", "v", "--store", &store]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let output = warden(&["kv", "probe", "get", "k", "--store", &store]);
    assert_eq!(output.stdout, b"v");
    let help = warden(&["kv", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--kv-store <PATH>"), "{help}");
    assert!(!help.contains("--store"), "{help}");
}

/// A store in a directory that does not exist is a mistyped path: refused
/// by `run` and `kv set` alike, naming the directory, which is not created.
/// A new store in an existing directory is created and named on stderr.
#[test]
fn a_store_in_a_missing_directory_is_refused_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("stte");
    let store = typo.join("kv.sqlite");
    let store = store.to_str().unwrap();
    let run = [
        "run",
        guests::PROBE,
        "kv-set",
        "--input",
        "a=1",
        "--kv-store",
        store,
    ];
    let (code, stderr) = refused(&run);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the kv store `{store}` is in a directory that does not exist, `{}`",
            typo.display()
        )),
        "{stderr}"
    );
    let (code, stderr) = refused(&["kv", "probe", "set", "a", "1", "--kv-store", store]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!typo.exists(), "the mistyped directory was created");

    let store = kv_store(&dir);
    let output = warden(&[
        "run",
        guests::PROBE,
        "kv-set",
        "--input",
        "a=1",
        "--kv-store",
        &store,
    ]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains(&format!("warden: created the kv store `{store}`\n")),
        "{output:?}"
    );
    let again = warden(&[
        "run",
        guests::PROBE,
        "kv-set",
        "--input",
        "a=2",
        "--kv-store",
        &store,
    ]);
    assert!(
        !String::from_utf8_lossy(&again.stderr).contains("created"),
        "{again:?}"
    );
}

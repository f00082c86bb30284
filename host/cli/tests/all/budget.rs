//! Host-side work a plugin causes stays within bounds, end to end with the
//! `warden` binary: what a guest builds in host memory, the records of what
//! it did, the size and life of its kv batches, and whose kv namespace it
//! gets. Every process runs in a scratch home of its own.

use std::io::Read;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use warden_tests::guests;

use crate::support::{Scratch, assert_status, report};

/// Runs `command` to its end (at most a minute) and returns its output and
/// its peak resident memory in bytes, read from `/proc` while it runs.
fn run_measuring_peak_memory(mut command: Command) -> (Output, u64) {
    let mut child = command.spawn().expect("starting warden");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let stdout = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stdout.read_to_end(&mut bytes).map(|_| bytes)
    });
    let stderr = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stderr.read_to_end(&mut bytes).map(|_| bytes)
    });
    let pid = child.id().to_string();
    let started = Instant::now();
    let mut peak = 0;
    let status = loop {
        // VmHWM is the high-water mark, so the last reading before the
        // process ends is its peak.
        if let Some(bytes) = warden_tests::proc_status_bytes(&pid, "VmHWM") {
            peak = peak.max(bytes);
        }
        if let Some(status) = child.try_wait().expect("waiting for warden") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().ok();
            panic!("warden ran for more than a minute");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let output = Output {
        status,
        stdout: stdout.join().unwrap().expect("reading stdout"),
        stderr: stderr.join().unwrap().expect("reading stderr"),
    };
    (output, peak)
}

const MIB: u64 = 1 << 20;

/// Runs the hostile guest's `action` with `input` under the default host
/// budget and checks that it ends in `memory-limit` naming host memory,
/// with `warden` staying far below what the guest asked the host to hold.
/// Returns the error's message.
fn host_memory_runs_out(scratch: &Scratch, action: &str, input: &str) -> String {
    let command = scratch.command(&[
        "run",
        "--json",
        guests::HOSTILE,
        action,
        "--input",
        input,
        // The budget must stop the guest, not the clock, however busy the
        // machine.
        "--timeout",
        "60s",
        "--unsigned",
        "allow",
    ]);
    let (output, peak) = run_measuring_peak_memory(command);
    let (value, code) = report(&output);
    assert_status(&value, code, "memory-limit", 22);
    let message = value["error"].to_string();
    assert!(message.contains("host memory"), "{message}");
    assert!(
        peak < 256 * MIB,
        "warden reached {} MiB resident",
        peak / MIB
    );
    message
}

/// 10,000 header maps of 100 KiB, with no grant at all: once the host holds
/// the instance's budget (64 MiB by default) it refuses every header, and
/// the run ends in `memory-limit` naming host memory, without the process
/// growing towards the gigabyte the maps would take.
#[test]
fn header_maps_past_the_host_memory_budget_are_a_memory_limit() {
    let scratch = Scratch::new();
    let message = host_memory_runs_out(&scratch, "header-maps", "10000");
    assert!(message.contains("64 MiB"), "{message}");

    // The budget is the operator's to raise.
    let (value, code) = scratch.run_json(&[
        guests::HOSTILE,
        "header-maps",
        "--input",
        "100",
        "--host-memory",
        "2MiB",
        "--unsigned",
        "allow",
    ]);
    assert_status(&value, code, "memory-limit", 22);
    let (value, code) = scratch.run_json(&[
        guests::HOSTILE,
        "header-maps",
        "--input",
        "100",
        "--unsigned",
        "allow",
    ]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"], "kept 100");
}

/// 600 outgoing requests with no grant, never sent, each body filled with
/// all the host buffers: wasmtime-wasi-http's default 1 MiB writes would
/// keep 1.2 GiB. Writes are 64 KiB, each unsent body counts against the
/// budget at the most it can hold, and once the budget (64 MiB) is full a
/// new body takes no bytes: the run ends in `memory-limit` naming host
/// memory, and a handful of bodies still fits.
#[test]
fn outgoing_bodies_kept_unsent_past_the_host_memory_budget_are_a_memory_limit() {
    let scratch = Scratch::new();
    host_memory_runs_out(&scratch, "body-buffers", "600");

    let (value, code) = scratch.run_json(&[
        guests::HOSTILE,
        "body-buffers",
        "--input",
        "10",
        "--unsigned",
        "allow",
    ]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"], "kept 10 bodies holding 1310720 bytes");
}

/// Five `wasi:config` lookups with a 32 MiB key, without a grant: each
/// denial quotes the key, cut to `MAX_RECORD_TEXT_BYTES`, so the report
/// stays small and the process does not hold copies of the key.
#[test]
fn denials_quoting_huge_keys_keep_the_report_and_memory_small() {
    let scratch = Scratch::new();
    let command = scratch.command(&[
        "run",
        "--json",
        guests::PROBE,
        "config-keys",
        "--input",
        "33554432",
        "--memory",
        "128MiB",
        "--unsigned",
        "allow",
    ]);
    let (output, peak) = run_measuring_peak_memory(command);
    assert!(
        output.stdout.len() < MIB as usize,
        "the report is {} bytes",
        output.stdout.len()
    );
    let (value, code) = report(&output);
    assert_status(&value, code, "ok", 0);
    let denials = value["denials"].as_array().expect("denials");
    assert_eq!(denials.len(), 5, "{value}");
    for denial in denials {
        assert_eq!(denial["capability"], "config");
        let detail = denial["detail"].as_str().unwrap();
        assert!(
            detail.len() <= warden::MAX_RECORD_TEXT_BYTES + 64,
            "a detail of {} bytes",
            detail.len()
        );
        assert!(detail.contains("(33554432 bytes in all)"), "{detail}");
    }
    assert!(
        peak < 320 * MIB,
        "warden reached {} MiB resident",
        peak / MIB
    );
}

/// 500 `read-directory` streams over a directory of 3,000 long names, kept
/// unread under an 8 MiB memory limit: each listing is charged to the host
/// memory budget until the guest drops it, so the host refuses the streams
/// past the budget instead of holding hundreds of megabytes of names.
#[test]
fn directory_listings_count_against_the_host_memory_budget() {
    let scratch = Scratch::new();
    let listed = scratch.dir.path().join("listed");
    std::fs::create_dir(&listed).unwrap();
    for index in 0..3000 {
        let name = format!("{index:05}-{}", "n".repeat(200));
        std::fs::write(listed.join(name), b"").unwrap();
    }
    let grant = format!("{}::/data", listed.display());
    let command = scratch.command(&[
        "run",
        "--json",
        guests::HOSTILE,
        "dir-streams",
        "--input",
        "500",
        "--dir",
        &grant,
        "--memory",
        "8MiB",
        "--unsigned",
        "allow",
    ]);
    let (output, peak) = run_measuring_peak_memory(command);
    let (value, code) = report(&output);
    assert_status(&value, code, "memory-limit", 22);
    assert!(
        value["error"].to_string().contains("host memory"),
        "{value}"
    );
    assert!(
        peak < 256 * MIB,
        "warden reached {} MiB resident",
        peak / MIB
    );

    let (value, code) = scratch.run_json(&[
        guests::HOSTILE,
        "dir-streams",
        "--input",
        "20",
        "--dir",
        &grant,
        "--unsigned",
        "allow",
    ]);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"], "kept 20");
}

/// Listings are Warden's own: every entry arrives, with its type, and a
/// granted directory lists as before.
#[test]
fn directory_listings_hold_every_entry_with_its_type() {
    let scratch = Scratch::new();
    let listed = scratch.dir.path().join("listed");
    std::fs::create_dir_all(listed.join("sub")).unwrap();
    std::fs::write(listed.join("a.txt"), b"a").unwrap();
    std::os::unix::fs::symlink("a.txt", listed.join("link")).unwrap();
    let grant = format!("{}::/data", listed.display());
    let output = scratch.run(&[
        "exec",
        guests::COMMAND,
        "--dir",
        &grant,
        "--unsigned",
        "allow",
        "--",
        "ls",
        "/data",
    ]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "a.txt file\nlink other\nsub dir\n"
    );
}

/// A batch of a million keys is refused before it reaches the store: the
/// guest gets a kv error naming the bound, and nothing is written.
#[test]
fn a_kv_batch_past_its_bounds_is_refused_before_it_reaches_the_store() {
    let scratch = Scratch::new();
    let store = scratch.path("kv.sqlite");
    let started = Instant::now();
    let (value, code) = scratch.run_json(&[
        guests::PROBE,
        "kv-batch",
        "--input",
        "1000000",
        "--kv-store",
        &store,
        "--kv-namespace",
        "bulk",
        "--memory",
        "512MiB",
        "--timeout",
        "20s",
        "--unsigned",
        "allow",
    ]);
    assert_status(&value, code, "plugin-error", 1);
    let message = value["error"].to_string();
    assert!(
        message.contains("kv batch too large: 1000000 keys in one call, at most 10000"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    let listed = scratch.run(&["kv", "bulk", "list", "--store", &store]);
    assert!(listed.stdout.is_empty(), "{listed:?}");
}

/// With the batch bound raised, a million-key batch under a one-second
/// timeout: the call times out, its transaction stops and rolls back at
/// once, so the process ends within seconds of the timeout (the batch alone
/// would write for tens of seconds), nothing of the batch
/// is written, and another plugin's write to the same store goes through
/// meanwhile.
#[test]
fn a_timed_out_kv_batch_stops_and_other_plugins_write_meanwhile() {
    let scratch = Scratch::new();
    let store = scratch.path("kv.sqlite");
    let manifest = scratch.path("warden.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
[plugins.bulk]
path = "{probe}"
[plugins.bulk.limits]
timeout = "1s"
memory = "512MiB"
[plugins.bulk.grants]
kv = {{ path = "{store}", max_batch_keys = 2_000_000, max_batch_bytes = "512MiB" }}
[plugins.bulk.trust]
unsigned = "allow"

[plugins.probe]
path = "{probe}"
[plugins.probe.grants]
kv = {{ path = "{store}" }}
[plugins.probe.trust]
unsigned = "allow"
"#,
            probe = guests::PROBE,
        ),
    )
    .unwrap();
    // Compiled ahead, so that the time measured is the run's.
    for plugin in ["bulk", "probe"] {
        let compiled = scratch.run(&["compile", plugin, "--manifest", &manifest]);
        assert_eq!(compiled.status.code(), Some(0), "{compiled:?}");
    }
    let started = Instant::now();
    let bulk = scratch
        .command(&[
            "run",
            "--json",
            "--manifest",
            &manifest,
            "bulk",
            "kv-batch",
            "--input",
            "1000000",
        ])
        .spawn()
        .expect("starting the bulk writer");
    // The other plugin writes while the batch is being built or written.
    std::thread::sleep(Duration::from_millis(700));
    let (value, code) = scratch.run_json(&[
        "--manifest",
        &manifest,
        "probe",
        "kv-set",
        "--input",
        "meanwhile=written",
    ]);
    assert_status(&value, code, "ok", 0);
    let bulk = bulk.wait_with_output().expect("the bulk writer ends");
    let elapsed = started.elapsed();
    let (value, code) = report(&bulk);
    assert_status(&value, code, "timeout", 20);
    // Unbounded, the batch writes for tens of seconds; stopped, the run
    // ends a few seconds after its timeout even on a busy machine.
    assert!(
        elapsed < Duration::from_secs(10),
        "the timed-out run lived {elapsed:?}"
    );
    let listed = scratch.run(&["kv", "bulk", "list", "--manifest", &manifest]);
    assert!(
        listed.stdout.is_empty(),
        "the batch was written: {listed:?}"
    );
    let got = scratch.run(&["kv", "probe", "get", "meanwhile", "--manifest", &manifest]);
    assert_eq!(got.stdout, b"written", "{got:?}");
}

/// The probe plugin under another identity: the same code with one more
/// custom section, so its bytes and hash differ.
fn another_build_of_the_probe(path: &str) {
    let mut bytes = std::fs::read(guests::PROBE).unwrap();
    // Custom section 0: size 4, a 2-byte name `v2`, a 1-byte payload.
    bytes.extend_from_slice(&[0, 4, 2, b'v', b'2', b'x']);
    std::fs::write(path, bytes).unwrap();
}

/// On the command line the kv namespace is not the file's name alone: a
/// different component shipped as `wallet.wasm` does not read the first
/// one's keys, a new version signed by the same key does, a stranger's
/// signature does not, and `--kv-namespace` shares one on purpose.
#[test]
fn a_plugin_files_kv_namespace_is_its_own_and_survives_signed_upgrades() {
    let scratch = Scratch::new();
    let store = scratch.path("kv.sqlite");
    for dir in ["first", "stranger", "v1", "v2", "mallory"] {
        std::fs::create_dir(scratch.path(dir)).unwrap();
    }
    let first = scratch.path("first/wallet.wasm");
    std::fs::copy(guests::PROBE, &first).unwrap();
    let stranger = scratch.path("stranger/wallet.wasm");
    another_build_of_the_probe(&stranger);
    let kv = |plugin: &str, action: &str, input: &str, extra: &[&str]| {
        let mut args = vec![plugin, action, "--input", input, "--kv-store", &store];
        args.extend_from_slice(extra);
        scratch.run_json(&args)
    };

    let (value, code) = kv(&first, "kv-set", "secret=first", &[]);
    assert_status(&value, code, "ok", 0);
    let (value, code) = kv(&stranger, "kv-get", "secret", &[]);
    assert_eq!(
        (value["status"].as_str(), code),
        (Some("plugin-error"), 1),
        "a stranger under the same file name reads nothing: {value}"
    );
    let (value, _) = kv(&first, "kv-get", "secret", &[]);
    assert_eq!(value["output"], "first");
    // `warden inspect` names the derived namespace, for `warden kv`.
    let (inspected, _) = report(&scratch.run(&["inspect", "--json", &first, "--kv-store", &store]));
    let namespace = inspected["kv_namespace"].as_str().unwrap().to_owned();
    assert!(namespace.starts_with("wallet@sha256:"), "{namespace}");
    let got = scratch.run(&[
        "kv",
        "wallet",
        "get",
        "secret",
        "--store",
        &store,
        "--namespace",
        &namespace,
    ]);
    assert_eq!(got.stdout, b"first", "{got:?}");

    // Named by the operator, a namespace is shared on purpose.
    let shared = ["--kv-namespace", "wallet"];
    kv(&first, "kv-set", "common=1", &shared);
    let (value, _) = kv(&stranger, "kv-get", "common", &shared);
    assert_eq!(value["output"], "1", "{value}");

    // Signed versions keep their data across an upgrade by the same key.
    for name in ["alice", "mallory"] {
        let output = scratch.run(&["keygen", &scratch.path(name)]);
        assert_eq!(output.status.code(), Some(0), "{output:?}");
    }
    let sign = |plugin: &str, key: &str, output: &str| {
        let key = scratch.path(&format!("{key}.key"));
        let signed = scratch.run(&["sign", plugin, "--key", &key, "-o", output]);
        assert_eq!(signed.status.code(), Some(0), "{signed:?}");
    };
    let v1 = scratch.path("v1/wallet.wasm");
    let v2 = scratch.path("v2/wallet.wasm");
    let by_mallory = scratch.path("mallory/wallet.wasm");
    sign(&first, "alice", &v1);
    sign(&stranger, "alice", &v2);
    sign(&stranger, "mallory", &by_mallory);
    let alice = scratch.path("alice.pub");
    let mallory = scratch.path("mallory.pub");
    let keys = ["--key", &alice, "--key", &mallory];
    let (value, code) = kv(&v1, "kv-set", "secret=signed", &keys);
    assert_status(&value, code, "ok", 0);
    let (value, code) = kv(&v2, "kv-get", "secret", &keys);
    assert_status(&value, code, "ok", 0);
    assert_eq!(value["output"], "signed", "the upgrade keeps its data");
    let (value, code) = kv(&by_mallory, "kv-get", "secret", &keys);
    assert_eq!(
        (value["status"].as_str(), code),
        (Some("plugin-error"), 1),
        "another signer's plugin reads nothing: {value}"
    );
}

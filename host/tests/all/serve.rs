//! `warden serve` end to end: a real server process answering real HTTP
//! requests on 127.0.0.1, with the manifest's limits and grants.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use warden_tests::{HttpReply, guests, http_request};

/// A `warden serve` process, killed on drop. Its stderr (the structured
/// log) is collected line by line.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Value>>>,
}

/// How long a server may take to load its plugins and start listening.
const STARTUP: Duration = Duration::from_secs(60);

impl Server {
    fn start(manifest: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
            .arg("serve")
            .arg("--manifest")
            .arg(manifest)
            .args(["--addr", "127.0.0.1:0", "--watch-interval", "100ms"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting warden serve");
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_sender, addr_receiver) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // A line that is not JSON is kept as a string, for the
                // tests to catch.
                let event = serde_json::from_str::<Value>(&line).unwrap_or(Value::String(line));
                if event["event"] == "listening" {
                    let addr: SocketAddr = event["addr"].as_str().unwrap().parse().unwrap();
                    let _ = addr_sender.send(addr);
                }
                lines.lock().unwrap().push(event);
            }
        });
        let addr = match addr_receiver.recv_timeout(STARTUP) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().unwrap();
                panic!(
                    "warden serve did not start ({status}): {:?}",
                    log.lock().unwrap()
                );
            }
        };
        Server { child, addr, log }
    }

    fn get(&self, path: &str) -> HttpReply {
        http_request(self.addr, "GET", path, b"")
    }

    fn post(&self, path: &str, body: &[u8]) -> HttpReply {
        http_request(self.addr, "POST", path, body)
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait(&mut self, within: Duration) -> ExitStatus {
        let until = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < until,
                "warden serve did not exit in {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log events named `event`.
    fn events(&self, event: &str) -> Vec<Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line["event"] == event)
            .cloned()
            .collect()
    }

    /// Waits until some log event matches.
    fn wait_for_event(&self, what: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(found) = self.log.lock().unwrap().iter().find(|line| what(line)) {
                return found.clone();
            }
            assert!(
                Instant::now() < until,
                "no such log event: {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a sample of /metrics has `value`.
    fn wait_for_metric(&self, sample: &str, value: f64) {
        let until = Instant::now() + Duration::from_secs(30);
        while self.metric(sample) != Some(value) {
            assert!(Instant::now() < until, "{sample} never reached {value}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The value of one sample line of /metrics, e.g.
    /// `warden_plugin_calls_total{plugin="hello"}`.
    fn metric(&self, sample: &str) -> Option<f64> {
        let metrics = self.get("/metrics");
        assert_eq!(metrics.status, 200);
        String::from_utf8(metrics.body)
            .unwrap()
            .lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `warden.toml` in a fresh directory: these plugin tables, unsigned
/// plugins allowed (the test guests are not signed).
fn write_manifest(plugins: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.toml");
    std::fs::write(
        &path,
        format!("[defaults.trust]\nunsigned = \"allow\"\n\n{plugins}"),
    )
    .unwrap();
    (dir, path)
}

/// A manifest serving hello, hostile, probe and sleepy.
fn manifest() -> (tempfile::TempDir, PathBuf) {
    write_manifest(&format!(
        r#"[plugins.hello]
path = "{hello}"
[plugins.hello.limits]
fuel = 100000000
max_input = "1KiB"

[plugins.hostile]
path = "{hostile}"
[plugins.hostile.limits]
timeout = "300ms"
memory = "16MiB"

[plugins.probe]
path = "{probe}"

# hostile again, told to fail its `init`.
[plugins.refuser]
path = "{hostile}"
[plugins.refuser.grants]
env = {{ HOSTILE_INIT = "fail" }}

# hostile again, with time for `nap`.
[plugins.sleepy]
path = "{hostile}"
[plugins.sleepy.limits]
timeout = "30s"
"#,
        hello = guests::HELLO,
        hostile = guests::HOSTILE,
        probe = guests::PROBE,
    ))
}

fn json(reply: &HttpReply) -> Value {
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{reply:?}"
    );
    serde_json::from_slice(&reply.body).unwrap()
}

fn assert_error(reply: &HttpReply, status: u16, error: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(json(reply)["error"], error, "{reply:?}");
}

#[test]
fn actions_metadata_and_every_error_mapping() {
    let (_dir, manifest) = manifest();
    let server = Server::start(&manifest, &[]);

    let reply = server.post("/plugins/hello/count-vowels", b"hello world");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(reply.body, b"3");

    let metadata = json(&server.get("/plugins/hello"));
    assert_eq!(metadata["name"], "hello");
    assert_eq!(
        metadata["actions"],
        serde_json::json!(["count-vowels", "echo", "greet"])
    );

    assert_error(
        &server.post("/plugins/hello/greet", &[0xff, 0xfe]),
        400,
        "invalid-input",
    );
    assert_error(
        &server.post("/plugins/hello/no-such", b""),
        404,
        "unknown-action",
    );
    // Without an env grant the variable is missing, which probe reports as `failed`.
    assert_error(&server.post("/plugins/probe/env", b"HOME"), 500, "failed");
    assert_error(
        &server.post("/plugins/nobody/echo", b""),
        404,
        "unknown-plugin",
    );
    assert_error(
        &server.post("/plugins/hello/echo", &[b'x'; 2048]),
        413,
        "payload-too-large",
    );
    assert_error(&server.post("/plugins/hostile/loop", b""), 500, "timeout");
    assert_error(
        &server.post("/plugins/hostile/grow-memory", b""),
        500,
        "memory-limit",
    );
    for failed_init in [
        server.post("/plugins/refuser/calls", b""),
        server.get("/plugins/refuser"),
    ] {
        assert_error(&failed_init, 500, "init-failed");
        assert_eq!(json(&failed_init)["message"], "init refuses on purpose");
    }
    assert_error(&server.get("/nowhere"), 404, "not-found");

    let put = http_request(server.addr, "PUT", "/plugins/hello/echo", b"x");
    assert_error(&put, 405, "method-not-allowed");
    assert_eq!(put.header("allow"), Some("GET, POST"));

    // Percent-encoded action names are decoded.
    assert_eq!(server.post("/plugins/hello/%65cho", b"hi").body, b"hi");

    assert_eq!(json(&server.get("/healthz"))["status"], "ok");
    assert_eq!(json(&server.get("/readyz"))["status"], "ready");
    let plugins = json(&server.get("/plugins"));
    let names: Vec<&str> = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|plugin| plugin["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hello", "hostile", "probe", "refuser", "sleepy"]);

    // Every request has its access-log line, with the error's name.
    let requests = server.events("request");
    let timeout = requests
        .iter()
        .find(|line| line["path"] == "/plugins/hostile/loop")
        .expect("the hostile call is logged");
    assert_eq!(timeout["status"], 500);
    assert_eq!(timeout["error"], "timeout");
    assert_eq!(timeout["plugin"], "hostile");
    assert_eq!(timeout["action"], "loop");
    let greeted = server.post("/plugins/hello/greet", b"Warden");
    assert_eq!(greeted.body, b"Hello, Warden!");
    let logged = server.wait_for_event(|line| {
        line["event"] == "plugin-log" && line["message"] == "greeted Warden"
    });
    assert_eq!(logged["plugin"], "hello");
    assert_eq!(logged["level"], "info");
    let log = server.log.lock().unwrap();
    assert!(
        log.iter().all(Value::is_object),
        "every log line is a JSON object: {log:?}"
    );
}

#[test]
fn metrics_count_requests_failures_fuel_and_memory() {
    let (_dir, manifest) = manifest();
    let server = Server::start(&manifest, &[]);
    for _ in 0..3 {
        assert_eq!(server.post("/plugins/hello/echo", b"x").status, 200);
    }
    assert_eq!(server.post("/plugins/hostile/loop", b"").status, 500);

    assert_eq!(
        server.metric(r#"warden_http_requests_total{plugin="hello",code="200"}"#),
        Some(3.0)
    );
    assert_eq!(
        server.metric(r#"warden_plugin_calls_total{plugin="hello"}"#),
        Some(3.0)
    );
    assert_eq!(
        server.metric(r#"warden_plugin_failures_total{plugin="hostile",kind="timeout"}"#),
        Some(1.0)
    );
    let fuel = server
        .metric(r#"warden_plugin_fuel_consumed_total{plugin="hello"}"#)
        .unwrap();
    assert!(fuel > 0.0, "hello has a fuel limit, so its fuel is metered");
    assert_eq!(
        server.metric(r#"warden_plugin_peak_memory_bytes_count{plugin="hello"}"#),
        Some(3.0)
    );
    assert_eq!(
        server.metric(r#"warden_plugin_call_duration_seconds_bucket{plugin="hello",le="+Inf"}"#),
        Some(3.0)
    );
    assert_eq!(server.metric("warden_instances_in_use"), Some(0.0));

    // Made-up plugin names are counted under the server's own label, so a
    // client cannot grow the metrics without bound.
    for name in ["ghost-1", "ghost-2"] {
        assert_eq!(server.post(&format!("/plugins/{name}/x"), b"").status, 404);
    }
    assert_eq!(
        server.metric(r#"warden_http_requests_total{plugin="",code="404"}"#),
        Some(2.0)
    );
    let metrics = server.get("/metrics").text();
    assert!(!metrics.contains("ghost"), "{metrics}");
}

#[test]
fn saturation_is_answered_503_with_retry_after_and_counted() {
    let (_dir, manifest) = manifest();
    let server = Server::start(&manifest, &["--max-concurrent", "1", "--max-queue", "0"]);
    let addr = server.addr;
    let slow =
        std::thread::spawn(move || http_request(addr, "POST", "/plugins/sleepy/nap", b"1500"));
    server.wait_for_metric("warden_instances_in_use", 1.0);

    let refused = server.post("/plugins/hello/echo", b"x");
    assert_error(&refused, 503, "saturated");
    assert_eq!(refused.header("retry-after"), Some("1"));
    // The server's own routes are never refused.
    assert_eq!(server.get("/healthz").status, 200);

    let slow = slow.join().unwrap();
    assert_eq!(slow.status, 200, "{slow:?}");
    assert_eq!(slow.body, b"rested");
    assert_eq!(server.post("/plugins/hello/echo", b"x").status, 200);
    assert_eq!(
        server.metric(r#"warden_http_rejected_total{reason="saturated"}"#),
        Some(1.0)
    );
}

#[test]
fn sigterm_lets_requests_in_flight_finish_then_exits() {
    let (_dir, manifest) = manifest();
    let mut server = Server::start(&manifest, &["--shutdown-grace", "10s"]);
    let addr = server.addr;
    let in_flight =
        std::thread::spawn(move || http_request(addr, "POST", "/plugins/sleepy/nap", b"1000"));
    server.wait_for_metric("warden_instances_in_use", 1.0);
    server.signal("TERM");
    server.wait_for_event(|line| line["event"] == "draining");

    let finished = in_flight.join().unwrap();
    assert_eq!(finished.status, 200, "{finished:?}");
    assert_eq!(finished.body, b"rested");
    let status = server.wait(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let stopped = server.wait_for_event(|line| line["event"] == "stopped");
    assert_eq!(stopped["drained"], true);
    assert_eq!(stopped["cancelled"], 0);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the listener is closed"
    );
}

#[test]
fn calls_still_running_when_the_grace_period_ends_are_cancelled_with_503() {
    let (_dir, manifest) = write_manifest(&format!(
        "[plugins.hostile]\npath = \"{}\"\n[plugins.hostile.limits]\ntimeout = \"60s\"\n",
        guests::HOSTILE
    ));
    let mut server = Server::start(&manifest, &["--shutdown-grace", "300ms"]);
    let addr = server.addr;
    let stuck =
        std::thread::spawn(move || http_request(addr, "POST", "/plugins/hostile/nap", b"20000"));
    server.wait_for_metric("warden_instances_in_use", 1.0);
    server.signal("TERM");
    let reply = stuck.join().unwrap();
    assert_error(&reply, 503, "cancelled");
    assert!(server.wait(Duration::from_secs(20)).success());
    let stopped = server.wait_for_event(|line| line["event"] == "stopped");
    assert_eq!(stopped["drained"], false);
    assert_eq!(stopped["cancelled"], 1);
}

#[test]
fn a_replaced_plugin_file_is_served_without_a_restart() {
    let (dir, manifest) = write_manifest("[plugins.app]\npath = \"app.wasm\"\n");
    let plugin = dir.path().join("app.wasm");
    std::fs::copy(guests::HELLO, &plugin).unwrap();
    let server = Server::start(&manifest, &[]);
    assert_eq!(json(&server.get("/plugins/app"))["name"], "hello");

    // Deploy by rename, as a deploy tool would.
    let next = dir.path().join("app.wasm.new");
    std::fs::copy(guests::PROBE, &next).unwrap();
    std::fs::rename(&next, &plugin).unwrap();
    server.wait_for_event(|line| line["event"] == "reloaded" && line["plugin"] == "app");
    assert_eq!(json(&server.get("/plugins/app"))["name"], "probe");
}

#[test]
fn a_bad_manifest_or_a_plugin_that_does_not_load_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let run = |manifest: &Path| {
        Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["serve", "--addr", "127.0.0.1:0", "--manifest"])
            .arg(manifest)
            .output()
            .unwrap()
    };

    let missing = run(&dir.path().join("missing.toml"));
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("missing.toml"));

    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[plugins.hello]\npaht = \"hello.wasm\"\n").unwrap();
    let output = run(&broken);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("paht"));

    let not_wasm = dir.path().join("not.wasm");
    std::fs::write(&not_wasm, b"not wasm").unwrap();
    let invalid = dir.path().join("invalid.toml");
    std::fs::write(
        &invalid,
        "[defaults.trust]\nunsigned = \"allow\"\n[plugins.bad]\npath = \"not.wasm\"\n",
    )
    .unwrap();
    let output = run(&invalid);
    assert_eq!(output.status.code(), Some(10), "invalid-plugin");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("plugin `bad` did not load"), "{stderr}");
}

#[test]
fn two_replicas_sharing_redis_land_every_increment_exactly() {
    let redis = warden_tests::RedisServer::start();
    let (_dir, manifest) = write_manifest(&format!(
        "[plugins.counter]\npath = \"{}\"\n\
         [plugins.counter.grants]\nkv = {{ redis = \"{}\", max_keys = 10 }}\n",
        guests::PROBE,
        redis.url
    ));
    let replicas = [Server::start(&manifest, &[]), Server::start(&manifest, &[])];
    let addrs: Vec<SocketAddr> = replicas.iter().map(|replica| replica.addr).collect();

    const CALLERS: usize = 4;
    const INCREMENTS: usize = 40;
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let addrs = addrs.clone();
            std::thread::spawn(move || {
                (0..INCREMENTS)
                    .map(|call| {
                        // Alternate replicas, as a round-robin balancer would.
                        let addr = addrs[(caller + call) % addrs.len()];
                        let reply = http_request(addr, "POST", "/plugins/counter/kv-incr", b"hits");
                        assert_eq!(reply.status, 200, "{reply:?}");
                        reply.text().parse::<u64>().unwrap()
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seen: Vec<u64> = callers
        .into_iter()
        .flat_map(|caller| caller.join().unwrap())
        .collect();
    seen.sort_unstable();
    let total = (CALLERS * INCREMENTS) as u64;
    // Every increment returned a distinct value, and none was lost.
    assert_eq!(seen, (1..=total).collect::<Vec<u64>>());
    for replica in &replicas {
        let reply = replica.post("/plugins/counter/kv-get", b"hits");
        assert_eq!(reply.text(), total.to_string());
    }

    // The quota holds across replicas: ten keys in all, whichever replica writes.
    for key in 1..10 {
        let replica = &replicas[key % 2];
        let reply = replica.post("/plugins/counter/kv-set", format!("k{key}=v").as_bytes());
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let refused = replicas[0].post("/plugins/counter/kv-set", b"one-too-many=v");
    assert_error(&refused, 500, "failed");
    assert!(
        json(&refused)["message"]
            .as_str()
            .unwrap()
            .contains("quota"),
        "{refused:?}"
    );
}

#[test]
fn instances_are_fresh_per_request_unless_the_manifest_opts_into_reuse() {
    let (_dir, manifest) = write_manifest(&format!(
        "[plugins.fresh]\npath = \"{hostile}\"\n\
         [plugins.kept]\npath = \"{hostile}\"\ncalls_per_instance = 3\n",
        hostile = guests::HOSTILE
    ));
    let server = Server::start(&manifest, &[]);
    // `calls` answers how many calls its instance has served.
    let calls = |plugin: &str| {
        (0..4)
            .map(|_| server.post(&format!("/plugins/{plugin}/calls"), b"").text())
            .collect::<Vec<_>>()
    };
    assert_eq!(calls("fresh"), ["1", "1", "1", "1"]);
    assert_eq!(calls("kept"), ["1", "2", "3", "1"]);
}

#[test]
fn a_body_that_trickles_gets_408_and_a_call_past_the_request_timeout_gets_504() {
    use std::io::{Read, Write};

    let (_dir, manifest) = manifest();
    let server = Server::start(&manifest, &["--request-timeout", "500ms"]);

    // Ten of the hundred bytes promised, then silence.
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .write_all(
            b"POST /plugins/hello/echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\
              Connection: close\r\n\r\n0123456789",
        )
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"error\":\"request-timeout\""), "{reply}");

    // sleepy's own timeout is 30s; the server's request timeout ends it first.
    let started = Instant::now();
    assert_error(
        &server.post("/plugins/sleepy/nap", b"5000"),
        504,
        "request-timeout",
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // The cancelled call's instance is freed.
    server.wait_for_metric("warden_instances_in_use", 0.0);
    assert_eq!(
        server.metric(r#"warden_http_rejected_total{reason="request-timeout"}"#),
        Some(2.0)
    );
}

/// The hostile guest grown to the largest share of the instance pools a
/// plugin may take: 100 core instances, 2 memories and 4 tables.
fn pool_heavy_plugin() -> Vec<u8> {
    warden_tests::with_extra_core_instances(
        std::fs::read(guests::HOSTILE).unwrap(),
        &[
            ("", 96),
            ("(memory 0) (table 0 funcref) (table 0 funcref)", 1),
        ],
    )
}

#[test]
fn a_plugin_hammering_the_pools_never_makes_another_plugins_call_fail() {
    let dir = tempfile::tempdir().unwrap();
    let heavy = dir.path().join("heavy.wasm");
    std::fs::write(&heavy, pool_heavy_plugin()).unwrap();
    let manifest = dir.path().join("warden.toml");
    std::fs::write(
        &manifest,
        format!(
            "[defaults.trust]\nunsigned = \"allow\"\ntrust_store = \"trust.toml\"\n\n\
             [plugins.hello]\npath = \"{hello}\"\n\n\
             [plugins.heavy]\npath = \"{heavy}\"\n[plugins.heavy.limits]\ntimeout = \"60s\"\n",
            hello = guests::HELLO,
            heavy = heavy.display(),
        ),
    )
    .unwrap();
    // Enough calls at once that, were each plugin's share not bounded, the
    // heavy plugin's instances would take every core instance of the pools.
    let server = Arc::new(Server::start(
        &manifest,
        &[
            "--no-cache",
            "--max-concurrent",
            "200",
            "--max-queue",
            "400",
        ],
    ));
    let hammers: Vec<_> = (0..160)
        .map(|_| {
            let server = server.clone();
            std::thread::spawn(move || {
                (0..2)
                    // `nap` holds the instance, and its share, for a while.
                    .map(|_| server.post("/plugins/heavy/nap", b"300").status)
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    let hello: Vec<(u16, String)> = (0..20)
        .map(|_| {
            let reply = server.post("/plugins/hello/count-vowels", b"hello world");
            (reply.status, reply.text())
        })
        .collect();
    let heavy: Vec<u16> = hammers
        .into_iter()
        .flat_map(|hammer| hammer.join().unwrap())
        .collect();
    assert!(
        hello.iter().all(|reply| *reply == (200, "3".to_owned())),
        "{hello:?}"
    );
    assert!(heavy.iter().all(|status| *status == 200), "{heavy:?}");
    assert_eq!(
        server.post("/plugins/hello/count-vowels", b"aei").text(),
        "3"
    );
}

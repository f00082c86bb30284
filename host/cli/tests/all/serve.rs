//! `warden serve` end to end: a real server process answering real HTTP
//! requests on 127.0.0.1, with the manifest's limits and grants.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use warden_tests::{
    HttpReply, chunked_head, guests, http_request, http_request_chunked, write_chunk,
};

use crate::support::{self, in_home, wait_bounded};

/// A `warden serve` process in a home of its own, killed on drop. Its
/// stderr (the structured log) is collected line by line.
struct Server {
    child: Child,
    /// Where the server listens; a loopback address when it listens on
    /// every interface.
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Value>>>,
    /// The same lines as written, before parsing.
    raw_log: Arc<Mutex<Vec<String>>>,
    /// The address the `listening` line names.
    listening: SocketAddr,
    _home: tempfile::TempDir,
}

/// How long a server may take to load its plugins and start listening.
const STARTUP: Duration = Duration::from_secs(60);

impl Server {
    /// Serves `manifest` on a free port of 127.0.0.1, checking the files
    /// every 100 ms, with `extra` flags.
    fn start(manifest: &Path, extra: &[&str]) -> Server {
        let manifest = manifest.to_str().unwrap();
        let mut args = vec![
            "--manifest",
            manifest,
            "--addr",
            "127.0.0.1:0",
            "--watch-interval",
            "100ms",
        ];
        args.extend_from_slice(extra);
        Server::spawn(&args)
    }

    /// `warden serve` with `args`, which must make it listen on port 0.
    fn spawn(args: &[&str]) -> Server {
        Server::spawn_in(tempfile::tempdir().unwrap(), args)
    }

    /// As [`Server::start`], with `plugin` of the manifest compiled into
    /// the compile cache first, so that the server loads it without
    /// compiling (and its memory holds no compiler's peak).
    fn start_compiled(manifest: &Path, plugin: &str, extra: &[&str]) -> Server {
        let home = tempfile::tempdir().unwrap();
        let compiled = support::warden_at_home(
            home.path(),
            &["compile", "--manifest", manifest.to_str().unwrap(), plugin],
        );
        assert!(compiled.status.success(), "{compiled:?}");
        let manifest = manifest.to_str().unwrap();
        let mut args = vec!["--manifest", manifest, "--addr", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        Server::spawn_in(home, &args)
    }

    /// `warden serve` with `args` in `home`.
    fn spawn_in(home: tempfile::TempDir, args: &[&str]) -> Server {
        let mut child = in_home(
            Command::new(env!("CARGO_BIN_EXE_warden"))
                .arg("serve")
                .args(args),
            home.path(),
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("starting warden serve");
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let raw_log = Arc::new(Mutex::new(Vec::new()));
        let (addr_sender, addr_receiver) = std::sync::mpsc::channel();
        let lines = log.clone();
        let raw_lines = raw_log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                raw_lines.lock().unwrap().push(line.clone());
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
        let listening = match addr_receiver.recv_timeout(STARTUP) {
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
        let mut addr = listening;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        Server {
            child,
            addr,
            log,
            raw_log,
            listening,
            _home: home,
        }
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
        // Generous: a busy machine runs debug builds of the guests slowly.
        let until = Instant::now() + Duration::from_secs(60);
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
    let reply = server.post("/plugins/hello/no-such", b"");
    assert_error(&reply, 404, "unknown-action");
    assert_eq!(
        json(&reply)["message"],
        "the plugin has no action `no-such`; its actions are: count-vowels, echo, greet",
        "the command line's words"
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
fn a_kept_alive_connection_is_answered_503_by_readyz_while_the_server_drains() {
    use std::io::Write;

    let (_dir, manifest) = manifest();
    // Bounds far beyond the test's steps: the drain ends when the request
    // in progress does, not when a bound runs out.
    let mut server = Server::start(
        &manifest,
        &["--shutdown-grace", "120s", "--request-timeout", "120s"],
    );
    let addr = server.addr;
    let mut probe = KeptAlive::open(addr);
    let ready = probe.get("/readyz");
    assert_eq!(json(&ready)["status"], "ready", "{ready:?}");
    assert_eq!(ready.header("connection"), None, "{ready:?}");
    // A request in progress, for as long as the test holds back the end of
    // its body. (The /metrics request counts itself.)
    let mut in_progress = stalled_client(
        addr,
        b"POST /plugins/hello/echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhe",
    );
    server.wait_for_metric("warden_http_requests_in_flight", 2.0);
    server.signal("TERM");
    server.wait_for_event(|line| line["event"] == "draining");

    // The same connection, asked after shutdown began, hears the drain.
    let draining = probe.get("/readyz");
    assert_error(&draining, 503, "draining");
    assert_eq!(json(&draining)["message"], "the server is shutting down");
    assert_eq!(draining.header("retry-after"), Some("1"));
    assert_eq!(draining.header("connection"), Some("close"));
    assert!(
        read_until_closed(&mut probe.stream, Duration::from_secs(30)).is_empty(),
        "the server closes the connection after a reply that says so"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no new connection is accepted while draining"
    );

    // The request in progress is served, and then the server stops.
    in_progress.write_all(b"llo").unwrap();
    let reply = read_until_closed(&mut in_progress, Duration::from_secs(30));
    let reply = String::from_utf8(reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{reply}"
    );
    assert!(reply.ends_with("\r\n\r\nhello"), "{reply}");
    assert!(server.wait(Duration::from_secs(60)).success());
    let stopped = server.wait_for_event(|line| line["event"] == "stopped");
    assert_eq!(stopped["drained"], true);
    assert_eq!(stopped["cancelled"], 0);
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
        in_home(
            Command::new(env!("CARGO_BIN_EXE_warden"))
                .args(["serve", "--addr", "127.0.0.1:0", "--manifest"])
                .arg(manifest),
            dir.path(),
        )
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

#[test]
fn a_link_planted_by_one_plugin_never_hands_another_the_host_files() {
    let tree = tempfile::tempdir().unwrap();
    let secret = tree.path().join("secret.txt");
    std::fs::write(&secret, "the host's secret").unwrap();
    std::fs::create_dir_all(tree.path().join("outer/inner")).unwrap();
    std::fs::write(tree.path().join("outer/inner/marker.txt"), "inner").unwrap();
    // The reader's timeout is the knob turned below to make it reload. No
    // user trust store and no compile cache: the test stays out of $HOME.
    let plugins = |reader_timeout: &str| {
        format!(
            r#"[plugins.writer]
path = "{hostile}"
[plugins.writer.trust]
trust_store = "trust.toml"
[plugins.writer.grants]
dirs = ["{outer}::/outer:rw"]

[plugins.reader]
path = "{hostile}"
[plugins.reader.trust]
trust_store = "trust.toml"
[plugins.reader.limits]
timeout = "{reader_timeout}"
[plugins.reader.grants]
dirs = ["{outer}/inner::/inner:ro"]
"#,
            hostile = guests::HOSTILE,
            outer = tree.path().join("outer").display(),
        )
    };
    let (dir, manifest) = write_manifest(&plugins("5s"));
    let server = Server::start(&manifest, &["--no-cache"]);
    let read_secret = format!("/inner{}", secret.display());
    let reader_sees_only_its_directory = || {
        let marker = server.post("/plugins/reader/read-file", b"/inner/marker.txt");
        assert_eq!(
            (marker.status, marker.body.as_slice()),
            (200, &b"inner"[..])
        );
        let leak = server.post("/plugins/reader/read-file", read_secret.as_bytes());
        assert_error(&leak, 500, "failed");
    };
    reader_sees_only_its_directory();

    // One call of the writer swaps `inner` for a link to the host's root.
    let renamed = server.post("/plugins/writer/rename", b"/outer/inner>/outer/moved");
    assert_eq!(renamed.status, 200, "{renamed:?}");
    let plant = format!("{}>/outer/inner", "../".repeat(32));
    let planted = server.post("/plugins/writer/symlink", plant.as_bytes());
    assert_eq!(planted.status, 200, "{planted:?}");
    reader_sees_only_its_directory();
    // Between two calls, the reader's directory moves again and another one
    // takes its old name.
    for (action, input) in [
        ("rename", "/outer/moved>/outer/elsewhere"),
        ("mkdir", "/outer/moved"),
        ("write-file", "/outer/moved/marker.txt"),
    ] {
        let done = server.post(&format!("/plugins/writer/{action}"), input.as_bytes());
        assert_eq!(done.status, 200, "{action}: {done:?}");
    }
    reader_sees_only_its_directory();

    // Reloading the reader resolves its grant again, and refuses the link;
    // the reader already loaded keeps its own directory.
    std::fs::write(
        dir.path().join("warden.toml"),
        format!(
            "[defaults.trust]\nunsigned = \"allow\"\n\n{}",
            plugins("10s")
        ),
    )
    .unwrap();
    let reload = server.wait_for_event(|line| line["event"] == "manifest-reloaded");
    assert_eq!(reload["failed"][0]["plugin"], "reader", "{reload}");
    assert_eq!(reload["failed"][0]["error"], "invalid-config", "{reload}");
    assert!(
        reload["failed"][0]["message"]
            .as_str()
            .unwrap()
            .contains("`inner` is a symbolic link to `../"),
        "{reload}"
    );
    reader_sees_only_its_directory();
}

/// Waits up to `within` for `condition`, failing with `what` if it never holds.
fn wait_until(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < until, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The file descriptors a process holds open.
fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("reading the server's descriptors")
        .count()
}

/// The descriptors a server holds once the connections its client just
/// closed are gone too: the same count twice, 100 ms apart.
fn settled_descriptors(pid: u32) -> usize {
    let mut settled = open_descriptors(pid);
    wait_until(
        "the server's descriptors settle",
        Duration::from_secs(10),
        || {
            std::thread::sleep(Duration::from_millis(100));
            let now = open_descriptors(pid);
            std::mem::replace(&mut settled, now) == now
        },
    );
    settled
}

/// A process's resident memory, in bytes.
fn resident_bytes(pid: u32) -> u64 {
    warden_tests::proc_status_bytes(&pid.to_string(), "VmRSS").expect("VmRSS of a live process")
}

/// A connection that sends `bytes` and then neither sends nor reads more.
fn stalled_client(addr: SocketAddr, bytes: &[u8]) -> std::net::TcpStream {
    use std::io::Write;

    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    stream.write_all(bytes).unwrap();
    stream
}

/// The head and body of a request asking the `big` plugin for `size` bytes
/// of output; `headers` (each ending in CRLF) go after `Content-Length`.
fn output_request(size: usize, headers: &str) -> String {
    let size = size.to_string();
    format!(
        "POST /plugins/big/output HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\
         {headers}\r\n{size}",
        size.len()
    )
}

/// A client that has sent [`output_request`] and reads nothing yet; its
/// reads time out after 30 s.
fn output_client(server: &Server, size: usize, headers: &str) -> std::net::TcpStream {
    let client = stalled_client(server.addr, output_request(size, headers).as_bytes());
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    client
}

/// A client connection kept open between requests (HTTP/1.1 keep-alive).
struct KeptAlive {
    stream: std::net::TcpStream,
}

impl KeptAlive {
    fn open(addr: SocketAddr) -> KeptAlive {
        let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        KeptAlive { stream }
    }

    /// Sends `GET path` without asking to close, and reads the reply (whose
    /// length the server states), leaving the connection open.
    fn get(&mut self, path: &str) -> HttpReply {
        use std::io::{Read, Write};

        write!(self.stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        let mut head = Vec::new();
        let mut byte = [0; 1];
        while !head.ends_with(b"\r\n\r\n") {
            self.stream.read_exact(&mut byte).expect("a reply head");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let mut lines = head.trim_end().split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.trim().to_owned(), value.trim().to_owned())
            })
            .collect();
        let length = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .map(|(_, value)| value.parse().unwrap())
            .expect("the server states the length");
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).unwrap();
        HttpReply {
            status: status.parse().unwrap(),
            headers,
            body,
        }
    }
}

/// Reads until the server closes the connection (end of stream or reset),
/// within `within`; what arrived before.
fn read_until_closed(stream: &mut std::net::TcpStream, within: Duration) -> Vec<u8> {
    use std::io::Read;

    stream.set_read_timeout(Some(within)).unwrap();
    let mut received = Vec::new();
    match stream.read_to_end(&mut received) {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(err) => panic!("the server did not close the connection within {within:?}: {err}"),
    }
    received
}

#[test]
#[cfg(target_os = "linux")]
fn a_half_sent_request_head_is_closed_after_the_header_read_timeout() {
    let (_dir, manifest) = manifest();
    let server = Server::start(
        &manifest,
        &["--header-read-timeout", "500ms", "--idle-timeout", "60s"],
    );
    // Connected, silent: idle, which has its own (longer) timeout.
    let mut idle = stalled_client(server.addr, b"");
    let started = Instant::now();
    let mut half_sent = stalled_client(
        server.addr,
        b"POST /plugins/hello/echo HTTP/1.1\r\nHost: test\r\nContent-Le",
    );
    let received = read_until_closed(&mut half_sent, Duration::from_secs(30));
    let elapsed = started.elapsed();
    assert!(
        received.is_empty(),
        "{}",
        String::from_utf8_lossy(&received)
    );
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(10),
        "closed after {elapsed:?}"
    );
    // The idle connection is still open: reading it times out on our side.
    idle.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let still_open = std::io::Read::read(&mut idle, &mut [0; 1]).unwrap_err();
    assert!(
        matches!(
            still_open.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{still_open}"
    );
    assert_eq!(
        server.metric(r#"warden_http_connections_closed_total{reason="header-read-timeout"}"#),
        Some(1.0)
    );
    assert_eq!(server.post("/plugins/hello/echo", b"x").body, b"x");
}

#[test]
#[cfg(target_os = "linux")]
fn idle_connections_are_closed_and_those_beyond_the_cap_wait_in_the_backlog() {
    const CAP: usize = 4;
    const CLIENTS: usize = 20;
    let (_dir, manifest) = manifest();
    let server = Server::start(
        &manifest,
        &["--max-connections", "4", "--idle-timeout", "1s"],
    );
    let pid = server.child.id();
    assert_eq!(server.post("/plugins/hello/echo", b"x").status, 200);
    wait_until(
        "the warm-up connection closes",
        Duration::from_secs(10),
        || server.metric("warden_http_connections_open") == Some(1.0),
    );
    let baseline = settled_descriptors(pid);

    let started = Instant::now();
    let mut clients: Vec<_> = (0..CLIENTS)
        .map(|_| stalled_client(server.addr, b""))
        .collect();
    wait_until(
        "the server accepts up to its cap",
        Duration::from_secs(10),
        || open_descriptors(pid) >= baseline + CAP,
    );
    // However long they stay, the others are not accepted meanwhile.
    for _ in 0..10 {
        let held = open_descriptors(pid);
        assert!(
            held <= baseline + CAP,
            "{held} descriptors, {baseline} before"
        );
        std::thread::sleep(Duration::from_millis(30));
    }
    // Each is closed after a second idle, letting the next one in.
    for client in &mut clients {
        assert!(read_until_closed(client, Duration::from_secs(60)).is_empty());
    }
    let elapsed = started.elapsed();
    let rounds = (CLIENTS / CAP) as u32;
    assert!(
        elapsed >= Duration::from_millis(900) * rounds && elapsed < Duration::from_secs(60),
        "{CLIENTS} idle clients through {CAP} slots took {elapsed:?}"
    );
    wait_until(
        "the descriptors are released",
        Duration::from_secs(10),
        || open_descriptors(pid) == baseline,
    );
    assert_eq!(server.post("/plugins/hello/echo", b"x").body, b"x");
    assert_eq!(
        server.metric(r#"warden_http_connections_closed_total{reason="idle-timeout"}"#),
        Some(CLIENTS as f64)
    );
}

#[test]
fn slow_bodies_take_no_call_slot_from_other_requests() {
    let (_dir, manifest) = manifest();
    let server = Server::start(
        &manifest,
        &[
            "--max-concurrent",
            "4",
            "--max-queue",
            "4",
            "--request-timeout",
            "3s",
        ],
    );
    // Eight clients promise a hundred bytes and send ten.
    let mut slow: Vec<_> = (0..8)
        .map(|_| {
            stalled_client(
                server.addr,
                b"POST /plugins/hello/echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\
                  Connection: close\r\n\r\n0123456789",
            )
        })
        .collect();
    // The eight, and the scrape that counts them.
    server.wait_for_metric("warden_http_requests_in_flight", 9.0);

    let reply = server.post("/plugins/hello/echo", b"through");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, b"through");
    assert_eq!(
        server.metric(r#"warden_http_rejected_total{reason="saturated"}"#),
        Some(0.0)
    );
    // The slow bodies end at the request timeout.
    for client in &mut slow {
        let reply = read_until_closed(client, Duration::from_secs(30));
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
        assert!(reply.contains("\"error\":\"request-timeout\""), "{reply}");
    }
    assert_eq!(server.post("/plugins/hello/echo", b"x").body, b"x");
}

#[test]
#[cfg(target_os = "linux")]
fn a_client_that_never_reads_a_large_response_is_dropped_after_the_write_timeout() {
    const OUTPUT: usize = 64 << 20;
    const CLIENTS: usize = 4;
    let (_dir, manifest) = write_manifest(&format!(
        "[plugins.big]\npath = \"{}\"\n\
         [plugins.big.limits]\nmemory = \"256MiB\"\nmax_output = \"64MiB\"\ntimeout = \"60s\"\n",
        guests::HOSTILE
    ));
    let server = Server::start(&manifest, &["--write-timeout", "1s"]);
    let pid = server.child.id();
    let request = output_request(OUTPUT, "Connection: close\r\n");
    // One client that reads it all, so that the baseline includes what
    // serving such a response leaves warm.
    let read = server.post("/plugins/big/output", OUTPUT.to_string().as_bytes());
    assert_eq!((read.status, read.body.len()), (200, OUTPUT));
    wait_until(
        "the first connection closes",
        Duration::from_secs(10),
        || server.metric("warden_http_connections_open") == Some(1.0),
    );
    let descriptors = settled_descriptors(pid);
    let resident = resident_bytes(pid);

    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| stalled_client(server.addr, request.as_bytes()))
        .collect();
    server.wait_for_metric(
        r#"warden_http_connections_closed_total{reason="write-timeout"}"#,
        CLIENTS as f64,
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(60),
        "{elapsed:?}"
    );
    // The clients still hold their ends; the server holds nothing for them.
    wait_until(
        "the descriptors are released",
        Duration::from_secs(10),
        || {
            server.metric("warden_http_connections_open") == Some(1.0)
                && open_descriptors(pid) == descriptors
        },
    );
    let grown = resident_bytes(pid).saturating_sub(resident);
    assert!(
        grown < (OUTPUT as u64) / 2,
        "{CLIENTS} abandoned responses of {OUTPUT} bytes left {grown} more bytes resident"
    );
    drop(clients);
    assert_eq!(server.metric("warden_instances_in_use"), Some(0.0));
    assert_eq!(server.post("/plugins/big/output", b"3").body, b"xxx");
}

#[test]
fn error_replies_name_no_host_path_and_the_log_keeps_the_detail() {
    let (dir, manifest) = write_manifest(&format!(
        "[plugins.reader]\npath = \"{hostile}\"\n\
         [plugins.reader.grants]\ndirs = [\"secret-customer-data::/data:ro\"]\n\n\
         [plugins.trapper]\npath = \"{hostile}\"\n",
        hostile = guests::HOSTILE
    ));
    let granted = dir.path().join("secret-customer-data");
    std::fs::create_dir(&granted).unwrap();
    std::fs::write(granted.join("orders.csv"), b"1,2,3").unwrap();
    let server = Server::start(&manifest, &[]);
    assert_eq!(
        server
            .post("/plugins/reader/read-file", b"/data/orders.csv")
            .body,
        b"1,2,3"
    );

    // The granted directory goes away under the running server. Instances
    // keep the directory opened at load, so the guest gets a WASI error of
    // its own; nothing in the reply names the host's path.
    std::fs::remove_dir_all(&granted).unwrap();
    let reply = server.post("/plugins/reader/read-file", b"/data/orders.csv");
    assert_eq!(json(&reply)["error"], "failed", "{reply:?}");
    let host_path = granted.to_string_lossy().into_owned();
    assert!(!reply.text().contains(&host_path), "{reply:?}");
    assert!(!reply.text().contains("secret-customer-data"), "{reply:?}");

    // A trap's reply carries no backtrace.
    let reply = server.post("/plugins/trapper/panic", b"");
    assert_error(&reply, 500, "trap");
    assert_eq!(
        json(&reply)["message"],
        "the plugin trapped; the server's log has the details"
    );
    let logged =
        server.wait_for_event(|line| line["event"] == "call-failed" && line["plugin"] == "trapper");
    let detail = logged["message"].as_str().unwrap();
    assert!(detail.contains("wasm backtrace"), "{detail}");
    // The client gets the kind and the sentence, nothing else: no
    // backtrace, no source file, no host path.
    let body = json(&reply);
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    for leak in ["backtrace", ".rs", "hostile.wasm", "/"] {
        assert!(!reply.text().contains(leak), "{leak}: {reply:?}");
    }
    assert_eq!(server.post("/plugins/trapper/calls", b"").body, b"1");
}

/// Runs `warden` in `dir`, with its home and configuration inside it.
fn warden_in(dir: &Path, args: &[&str]) {
    let output = in_home(
        Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(args)
            .current_dir(dir),
        dir,
    )
    .output()
    .unwrap();
    assert!(
        output.status.success(),
        "warden {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Replaces `path` with `contents` by rename, as a deploy tool would.
fn deploy(path: &Path, contents: &[u8]) {
    let next = path.with_extension("next");
    std::fs::write(&next, contents).unwrap();
    std::fs::rename(&next, path).unwrap();
}

#[test]
fn revoking_a_signer_refuses_its_new_files_and_withdraws_what_it_signed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for name in ["alice", "bob"] {
        warden_in(root, &["keygen", name]);
        warden_in(
            root,
            &[
                "trust",
                "add",
                &format!("{name}.pub"),
                "--name",
                name,
                "--trust-store",
                "trust.toml",
            ],
        );
    }
    // Signs `guest` with `key` into a file of its own; what was written.
    let sign = |guest: &str, key: &str, out: &str, extra: &[&str]| {
        let out = root.join(out);
        let key = format!("{key}.key");
        let out_arg = out.to_string_lossy();
        let mut args = vec!["sign", guest, "--key", &key];
        args.extend_from_slice(extra);
        args.extend(["-o", &out_arg]);
        warden_in(root, &args);
        std::fs::read(&out).unwrap()
    };
    let signed = |guest: &str, key: &str| sign(guest, key, &format!("signed-{key}.wasm"), &[]);
    let detached =
        |guest: &str, key: &str| sign(guest, key, &format!("detached-{key}.sig"), &["--detached"]);
    let app = root.join("app.wasm");
    std::fs::write(&app, signed(guests::HELLO, "alice")).unwrap();
    let other = root.join("other.wasm");
    std::fs::write(&other, signed(guests::PROBE, "bob")).unwrap();
    let loose = root.join("loose.wasm");
    std::fs::copy(guests::HOSTILE, &loose).unwrap();
    let loose_signature = root.join("loose.wasm.sig");
    std::fs::write(&loose_signature, detached(guests::HOSTILE, "bob")).unwrap();
    let manifest = root.join("warden.toml");
    std::fs::write(
        &manifest,
        "[defaults.trust]\nunsigned = \"deny\"\nsigned_by = \"trusted\"\ntrust_store = \"trust.toml\"\n\n\
         [plugins.app]\npath = \"app.wasm\"\n[plugins.other]\npath = \"other.wasm\"\n\
         [plugins.loose]\npath = \"loose.wasm\"\n",
    )
    .unwrap();
    let server = Server::start(&manifest, &[]);
    assert_eq!(server.post("/plugins/app/echo", b"hi").body, b"hi");

    // Revoked: what alice signed stops serving, the rest goes on.
    warden_in(
        root,
        &["trust", "remove", "alice", "--trust-store", "trust.toml"],
    );
    let withdrawn = server
        .wait_for_event(|line| line["event"] == "plugin-withdrawn" && line["plugin"] == "app");
    assert_eq!(withdrawn["error"], "untrusted");
    let refused = server.post("/plugins/app/echo", b"hi");
    assert_error(&refused, 503, "untrusted");
    assert_eq!(
        server.post("/plugins/other/env", b"HOME").status,
        500,
        "probe serves (and has no env grant)"
    );
    assert_eq!(server.post("/plugins/loose/calls", b"").body, b"1");

    // A new file signed by alice is refused, with the reason in the log.
    deploy(&app, &signed(guests::PROBE, "alice"));
    let failed =
        server.wait_for_event(|line| line["event"] == "reload-failed" && line["plugin"] == "app");
    assert_eq!(failed["error"], "untrusted");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("signed by unknown key"),
        "{failed}"
    );
    assert_error(&server.post("/plugins/app/echo", b"hi"), 503, "untrusted");
    // One that bob signed serves again.
    deploy(&app, &signed(guests::HELLO, "bob"));
    server.wait_for_event(|line| line["event"] == "reloaded" && line["plugin"] == "app");
    assert_eq!(server.post("/plugins/app/echo", b"back").body, b"back");

    // Only the detached signature changes: the plugin is verified again.
    std::fs::remove_file(&loose_signature).unwrap();
    let unsigned =
        server.wait_for_event(|line| line["event"] == "reload-failed" && line["plugin"] == "loose");
    assert_eq!(unsigned["error"], "untrusted");
    // The version serving was verified with its signature; it goes on.
    assert_eq!(server.post("/plugins/loose/calls", b"").body, b"1");
    deploy(&loose_signature, &detached(guests::HOSTILE, "bob"));
    server.wait_for_event(|line| line["event"] == "reloaded" && line["plugin"] == "loose");
    assert_eq!(
        server
            .events("reload-failed")
            .iter()
            .filter(|line| line["plugin"] == "loose")
            .count(),
        1
    );
}

#[test]
#[cfg(unix)]
fn a_plugin_file_replaced_by_a_fifo_holds_up_no_reload_and_no_shutdown() {
    let (dir, manifest) = write_manifest(
        "[plugins.stuck]\npath = \"stuck.wasm\"\n[plugins.other]\npath = \"other.wasm\"\n",
    );
    let stuck = dir.path().join("stuck.wasm");
    let other = dir.path().join("other.wasm");
    std::fs::copy(guests::HELLO, &stuck).unwrap();
    std::fs::copy(guests::HELLO, &other).unwrap();
    let mut server = Server::start(&manifest, &[]);

    let mkfifo = |path: &Path| {
        let made = Command::new("mkfifo").arg(path).status().unwrap();
        assert!(made.success());
    };
    let names_a_fifo = |message: &Value| {
        message
            .as_str()
            .unwrap()
            .contains("it is a FIFO, not a regular file")
    };
    let fifo = dir.path().join("stuck.fifo");
    mkfifo(&fifo);
    std::fs::rename(&fifo, &stuck).unwrap();
    let refused =
        server.wait_for_event(|line| line["event"] == "reload-failed" && line["plugin"] == "stuck");
    assert_eq!(refused["error"], "io-error");
    assert!(names_a_fifo(&refused["message"]), "{refused}");
    // The version loaded before keeps serving, and the other plugin reloads.
    assert_eq!(server.post("/plugins/stuck/echo", b"still").body, b"still");
    deploy(&other, &std::fs::read(guests::PROBE).unwrap());
    server.wait_for_event(|line| line["event"] == "reloaded" && line["plugin"] == "other");
    assert_eq!(json(&server.get("/plugins/other"))["name"], "probe");

    // A file past the size limit is refused without being read (it is sparse).
    let huge = dir.path().join("huge.next");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(warden::Registry::MAX_PLUGIN_FILE_BYTES + 1)
        .unwrap();
    std::fs::rename(&huge, &other).unwrap();
    let oversized = server.wait_for_event(|line| {
        line["event"] == "reload-failed"
            && line["plugin"] == "other"
            && line["message"]
                .as_str()
                .unwrap()
                .contains("more than the 256 MiB")
    });
    assert_eq!(oversized["error"], "io-error");
    assert_eq!(json(&server.get("/plugins/other"))["name"], "probe");

    // A new manifest entry naming a FIFO is refused the same way.
    mkfifo(&dir.path().join("pipe.wasm"));
    let text = std::fs::read_to_string(&manifest).unwrap();
    deploy(
        &manifest,
        format!("{text}[plugins.pipe]\npath = \"pipe.wasm\"\n").as_bytes(),
    );
    let reloaded = server.wait_for_event(|line| line["event"] == "manifest-reloaded");
    assert_eq!(reloaded["failed"][0]["plugin"], "pipe", "{reloaded}");
    assert!(
        names_a_fifo(&reloaded["failed"][0]["message"]),
        "{reloaded}"
    );
    // And so is a manifest that became a FIFO.
    let fifo = dir.path().join("warden.fifo");
    mkfifo(&fifo);
    std::fs::rename(&fifo, &manifest).unwrap();
    let refused = server.wait_for_event(|line| line["event"] == "manifest-reload-failed");
    assert!(names_a_fifo(&refused["message"]), "{refused}");
    assert_eq!(server.post("/plugins/stuck/echo", b"x").body, b"x");

    let started = Instant::now();
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(10)).success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
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

#[test]
fn a_client_cannot_make_an_access_log_line_large() {
    let (_dir, manifest) = manifest();
    let server = Server::start(&manifest, &[]);
    // A 32 KiB action name: the reply says there is no such action, and the
    // log line quotes the path and the action cut to a record's size.
    let action = "a".repeat(32 << 10);
    let reply = server.post(&format!("/plugins/hello/{action}"), b"");
    assert_eq!(json(&reply)["error"], "unknown-action", "{}", reply.status);
    let logged = server.wait_for_event(|line| {
        line["event"] == "request" && line["status"] == reply.status && line["plugin"] == "hello"
    });
    let line = logged.to_string();
    assert!(
        line.len() < 4 * warden::MAX_RECORD_TEXT_BYTES,
        "a {} byte log line",
        line.len()
    );
    assert!(
        logged["path"].as_str().unwrap().ends_with(&format!(
            "({} bytes in all)",
            "/plugins/hello/".len() + action.len()
        )),
        "{logged}"
    );
    assert_eq!(server.post("/plugins/hello/echo", b"x").body, b"x");
}

#[test]
fn log_lines_carry_no_raw_terminal_controls_from_clients_or_plugins() {
    const CSI: char = '\u{9b}';
    const DEL: char = '\u{7f}';
    const RIGHT_TO_LEFT_OVERRIDE: char = '\u{202e}';
    let (_dir, manifest) = manifest();
    let server = Server::start(&manifest, &[]);
    // A client's action name (percent-decoded), and a plugin's log record
    // and stdout, each with the one-character CSI (clear the screen), DEL and an
    // override that shows the rest of the line reversed.
    let attack = format!("{CSI}2J{DEL}{RIGHT_TO_LEFT_OVERRIDE}");
    let reply = server.post("/plugins/hello/%C2%9B2J%7F%E2%80%AE", b"");
    assert_error(&reply, 404, "unknown-action");
    let greeted = attack.clone();
    assert_eq!(
        server
            .post("/plugins/hello/greet", greeted.as_bytes())
            .status,
        200
    );
    let logged = server.wait_for_event(|event| {
        event["event"] == "plugin-log" && event["message"] == format!("greeted {greeted}")
    });
    assert_eq!(logged["plugin"], "hello");
    server.wait_for_event(|event| {
        event["event"] == "plugin-output" && event["text"] == format!("Hello, {greeted}!\n")
    });
    let request =
        server.wait_for_event(|event| event["event"] == "request" && event["action"] == attack);
    assert_eq!(request["status"], 404);
    // The values arrive whole; the lines carry them as `\u` escapes only.
    let raw = server.raw_log.lock().unwrap();
    let escaped: Vec<_> = raw
        .iter()
        .filter(|line| line.contains("\\u009b2J\\u007f\\u202e"))
        .collect();
    // The action in the access log; the greeting in the plugin's log
    // record and on its stdout.
    assert_eq!(escaped.len(), 3, "{raw:#?}");
    for line in raw.iter() {
        assert!(
            !line.contains([CSI, DEL, RIGHT_TO_LEFT_OVERRIDE]),
            "a raw control in {line:?}"
        );
    }
}

#[test]
#[cfg(target_os = "linux")]
fn a_request_pipelined_behind_a_slowly_read_response_is_served_after_it() {
    use std::io::{Read, Write};

    const OUTPUT: usize = 16 << 20;
    const CHUNK: usize = 64 << 10;
    let (_dir, manifest) = write_manifest(&format!(
        "[plugins.big]\npath = \"{}\"\n\
         [plugins.big.limits]\nmemory = \"64MiB\"\nmax_output = \"16MiB\"\n",
        guests::HOSTILE
    ));
    let server = Server::start(&manifest, &["--header-read-timeout", "1s"]);
    let mut client = output_client(&server, OUTPUT, "");
    // Read at a pace that makes the response last several header-read
    // timeouts (256 chunks, 20 ms apart). Once it has begun, the next
    // request's whole head is sent: hyper parses it only after the
    // response is written.
    let started = Instant::now();
    let mut received = Vec::new();
    let mut chunk = vec![0; CHUNK];
    let mut next_sent = false;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the exchange did not end"
        );
        match client.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => received.extend_from_slice(&chunk[..read]),
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(err) => panic!("after {} bytes: {err}", received.len()),
        }
        if !next_sent {
            client
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                .unwrap();
            next_sent = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed();
    assert!(elapsed > Duration::from_secs(2), "read in {elapsed:?}");
    let head_end = received
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    assert!(received.starts_with(b"HTTP/1.1 200 OK\r\n"));
    let body = &received[head_end..(head_end + OUTPUT).min(received.len())];
    assert_eq!(
        (body.len(), body.iter().all(|&byte| byte == b'x')),
        (OUTPUT, true),
        "the first response was cut after {elapsed:?}"
    );
    let second = String::from_utf8_lossy(&received[head_end + OUTPUT..]);
    assert!(second.starts_with("HTTP/1.1 200 OK\r\n"), "{second}");
    assert!(second.ends_with(r#"{"status":"ok"}"#), "{second}");
    assert_eq!(
        server.metric(r#"warden_http_connections_closed_total{reason="header-read-timeout"}"#),
        Some(0.0)
    );
    assert_eq!(server.metric("warden_instances_in_use"), Some(0.0));
    // A half-sent head still ends at the header-read timeout.
    let mut half_sent = stalled_client(server.addr, b"GET /healthz HTTP/1.1\r\nHo");
    assert!(read_until_closed(&mut half_sent, Duration::from_secs(30)).is_empty());
    server.wait_for_metric(
        r#"warden_http_connections_closed_total{reason="header-read-timeout"}"#,
        1.0,
    );
}

#[test]
#[cfg(target_os = "linux")]
fn without_proc_a_grant_is_refused_naming_the_fix_and_never_opened_by_its_path() {
    // /proc is unmounted in a mount namespace of the test's own, which
    // needs root (or unprivileged user namespaces).
    let private_mounts = ["--mount", "--propagation", "private"];
    let can_unshare = Command::new("unshare")
        .args(private_mounts)
        .args(["umount", "-l", "/proc"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !can_unshare {
        eprintln!("skipped: cannot unmount /proc in a mount namespace of our own");
        return;
    }
    let (dir, manifest) = write_manifest(&format!(
        "[plugins.reader]\npath = \"{}\"\n[plugins.reader.grants]\ndirs = [\"granted::/data:ro\"]\n",
        guests::HOSTILE,
    ));
    std::fs::create_dir(dir.path().join("granted")).unwrap();
    let child = in_home(
        Command::new("unshare")
            .args(private_mounts)
            .args([
                "sh",
                "-c",
                r#"umount -l /proc && exec "$WARDEN" serve --manifest "$MANIFEST" --addr 127.0.0.1:0"#,
            ])
            .env("WARDEN", env!("CARGO_BIN_EXE_warden"))
            .env("MANIFEST", &manifest),
        dir.path(),
    )
    .stdout(Stdio::null())
    .spawn()
        .expect("starting unshare");
    let output = wait_bounded(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("plugin `reader` did not load: invalid configuration")
            && stderr.contains("`/proc/self/fd` does not exist")
            && stderr.contains("mount /proc"),
        "{stderr}"
    );
}

#[test]
fn request_bodies_held_at_once_are_bounded_by_the_body_memory() {
    const HELD: usize = 700 << 10;
    const DECLARED: usize = 800 << 10;
    let (_dir, manifest) = write_manifest(&format!(
        "[plugins.hello]\npath = \"{}\"\n[plugins.hello.limits]\nmax_input = \"1MiB\"\n",
        guests::HELLO
    ));
    let server = Server::start(&manifest, &["--max-body-memory", "1MiB"]);
    let stalled_body = |connection: &str| {
        let mut request = format!(
            "POST /plugins/hello/echo HTTP/1.1\r\nHost: test\r\nContent-Length: {DECLARED}\r\n\
             Connection: {connection}\r\n\r\n"
        )
        .into_bytes();
        request.resize(request.len() + HELD, b'a');
        stalled_client(server.addr, &request)
    };
    // One client sends most of a large body, then stalls: the server holds
    // what arrived.
    let holder = stalled_body("keep-alive");
    server.wait_for_metric("warden_http_request_body_bytes", HELD as f64);
    let second = vec![b'b'; 400 << 10];
    let refused = server.post("/plugins/hello/echo", &second);
    assert_error(&refused, 503, "saturated");
    assert_eq!(refused.header("retry-after"), Some("1"));
    // Eight more like it are refused at once rather than held.
    for _ in 0..8 {
        let mut client = stalled_body("close");
        let reply = read_until_closed(&mut client, Duration::from_secs(10));
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
        assert!(reply.contains("\"error\":\"saturated\""), "{reply}");
    }
    // Small bodies still fit.
    assert_eq!(server.post("/plugins/hello/echo", b"x").body, b"x");
    // The held bytes return with their connection.
    drop(holder);
    server.wait_for_metric("warden_http_request_body_bytes", 0.0);
    assert_eq!(server.post("/plugins/hello/echo", &second).body, second);
    assert_eq!(server.metric("warden_instances_in_use"), Some(0.0));

    // Where the body memory is smaller than a plugin's input limit, a body
    // that could never fit is too large, not a reason to retry.
    let server = Server::start(&manifest, &["--max-body-memory", "512KiB"]);
    let never_fits = server.post("/plugins/hello/echo", &vec![b'c'; 600 << 10]);
    assert_error(&never_fits, 413, "payload-too-large");
    assert_eq!(server.post("/plugins/hello/echo", &second).body, second);
}

#[test]
#[cfg(target_os = "linux")]
fn a_client_that_reads_a_large_response_a_little_at_a_time_is_dropped_after_the_write_timeout() {
    use std::io::Read;

    const OUTPUT: usize = 32 << 20;
    let (_dir, manifest) = write_manifest(&format!(
        "[plugins.big]\npath = \"{}\"\n\
         [plugins.big.limits]\nmemory = \"256MiB\"\nmax_output = \"32MiB\"\n",
        guests::HOSTILE
    ));
    let server = Server::start(&manifest, &["--write-timeout", "1s"]);
    let mut client = output_client(&server, OUTPUT, "Connection: close\r\n");
    // 4 KiB every 200 ms: always some progress, never enough to matter.
    // The kernel wakes a blocked write only once much of the send buffer
    // has drained, so the server sees no progress and drops the response.
    let started = Instant::now();
    let mut chunk = [0; 4 << 10];
    let mut received = 0;
    while server.metric(r#"warden_http_connections_closed_total{reason="write-timeout"}"#)
        != Some(1.0)
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still writing after {:?} and {received} bytes",
            started.elapsed()
        );
        received += client.read(&mut chunk).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(received < OUTPUT / 2, "{received} bytes");
    assert_eq!(server.metric("warden_instances_in_use"), Some(0.0));
    assert_eq!(server.post("/plugins/big/output", b"3").body, b"xxx");
}

#[test]
fn a_path_that_is_not_valid_percent_encoded_utf8_is_answered_400() {
    let (_dir, manifest) = manifest();
    let server = Server::start(&manifest, &[]);
    for path in [
        "/plugins/hello/%zz",
        "/plugins/hello/ech%",
        "/plugins/hello/%FF%FE",
        "/plugins/h%C3/echo",
    ] {
        let reply = server.post(path, b"x");
        assert_error(&reply, 400, "bad-request");
        assert_eq!(
            json(&reply)["message"],
            "the path is not valid percent-encoded UTF-8",
            "{path}"
        );
    }
    assert_eq!(
        server.metric(r#"warden_http_requests_total{plugin="",code="400"}"#),
        Some(4.0)
    );
    assert_eq!(server.post("/plugins/hello/%65cho", b"x").body, b"x");
}

#[test]
fn a_chunked_body_over_the_plugins_input_limit_is_answered_413() {
    let (_dir, manifest) = manifest();
    let server = Server::start(&manifest, &[]);
    // hello's max_input is 1 KiB; a chunked body declares no length, so it
    // is refused while it is read.
    let over = http_request_chunked(
        server.addr,
        "POST",
        "/plugins/hello/echo",
        &[b'x'; 4096],
        256,
    );
    assert_error(&over, 413, "payload-too-large");
    let message = json(&over)["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with("the body is larger than 1024 bytes, the most this plugin takes"),
        "{message}"
    );
    let within = http_request_chunked(
        server.addr,
        "POST",
        "/plugins/hello/echo",
        &[b'y'; 1024],
        256,
    );
    assert_eq!(within.status, 200, "{within:?}");
    assert_eq!(within.body, [b'y'; 1024]);
    assert_eq!(
        server.metric(r#"warden_plugin_calls_total{plugin="hello"}"#),
        Some(1.0),
        "the refused body never reached the plugin"
    );
}

#[test]
fn what_a_plugin_writes_to_stdout_and_stderr_is_logged_bounded_and_escaped() {
    let (_dir, manifest) = manifest();
    // The plugin's output is logged without the access log too.
    let server = Server::start(&manifest, &["--no-access-log"]);

    assert_eq!(
        server.post("/plugins/hostile/print", b"100000").body,
        b"done"
    );
    let printed = server.wait_for_event(|line| {
        line["event"] == "plugin-output" && line["plugin"] == "hostile" && line["action"] == "print"
    });
    assert_eq!(printed["stream"], "stdout");
    assert_eq!(printed["text"], "y".repeat(16 << 10));
    assert_eq!(printed["dropped_bytes"], 100_000 - (16 << 10));

    assert_error(&server.post("/plugins/hostile/panic", b""), 500, "trap");
    let panicked =
        server.wait_for_event(|line| line["event"] == "plugin-output" && line["action"] == "panic");
    assert_eq!(panicked["stream"], "stderr");
    let message = panicked["text"].as_str().unwrap();
    assert!(
        message.contains("the hostile plugin panics on purpose"),
        "{message}"
    );
    assert_eq!(panicked["dropped_bytes"], 0);

    // hello writes its greeting to stdout: a name with an escape sequence
    // and a right-to-left override reaches the log as `\u` escapes.
    let name = "Ada\u{1b}[2J\u{202e}";
    assert_eq!(
        server.post("/plugins/hello/greet", name.as_bytes()).status,
        200
    );
    let greeted =
        server.wait_for_event(|line| line["event"] == "plugin-output" && line["plugin"] == "hello");
    assert_eq!(greeted["stream"], "stdout");
    assert_eq!(greeted["text"], format!("Hello, {name}!\n"));
    let raw = server.raw_log.lock().unwrap();
    let line = raw
        .iter()
        .find(|line| line.contains("plugin-output") && line.contains("\"hello\""))
        .unwrap();
    assert!(line.contains("Ada\\u001b[2J\\u202e!"), "{line}");
    assert!(!line.contains(['\u{1b}', '\u{202e}']), "{line}");
    drop(raw);
    assert!(server.events("request").is_empty());
}

/// `name.wasm` in a fresh directory, a copy of the guest at `guest`.
fn plugin_file(guest: &str, name: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.wasm"));
    std::fs::copy(guest, &path).unwrap();
    (dir, path.to_str().unwrap().to_owned())
}

#[test]
fn a_plugin_file_is_served_alone_under_its_stem_with_the_sandbox_its_flags_give() {
    let (_dir, plugin) = plugin_file(guests::HOSTILE, "guard");
    let server = Server::spawn(&[
        &plugin,
        "--addr",
        "127.0.0.1:0",
        "--timeout",
        "300ms",
        "--env",
        "SECRET=granted",
        "--unsigned",
        "allow",
    ]);
    let plugins = json(&server.get("/plugins"));
    assert_eq!(plugins["plugins"].as_array().unwrap().len(), 1, "{plugins}");
    assert_eq!(plugins["plugins"][0]["name"], "guard");
    assert_eq!(
        server.post("/plugins/guard/env", b"SECRET").body,
        b"granted"
    );
    assert_error(&server.post("/plugins/guard/env", b"HOME"), 500, "failed");
    let looped = server.post("/plugins/guard/loop", b"");
    assert_error(&looped, 500, "timeout");
    assert_eq!(
        json(&looped)["message"],
        "the call ran past the plugin's time limit of 300 ms"
    );
    // --unsigned allow: no warning about serving an unsigned plugin.
    assert!(server.events("unverified-plugin").is_empty());
}

#[test]
fn a_plugin_file_follows_the_unsigned_policy_its_flag_gives() {
    let (_dir, plugin) = plugin_file(guests::HELLO, "hello");
    // The default warns, in the log.
    let server = Server::spawn(&[&plugin, "--addr", "127.0.0.1:0"]);
    let warned = server.wait_for_event(|line| line["event"] == "unverified-plugin");
    assert_eq!(warned["plugin"], "hello");
    assert_eq!(server.post("/plugins/hello/echo", b"hi").body, b"hi");
    drop(server);

    let home = tempfile::tempdir().unwrap();
    let output = support::warden_at_home(
        home.path(),
        &[
            "serve",
            &plugin,
            "--addr",
            "127.0.0.1:0",
            "--unsigned",
            "deny",
        ],
    );
    assert_eq!(output.status.code(), Some(31), "{output:?}");
    let stderr = support::stderr_of(&output);
    assert!(
        stderr.contains("warden: plugin `hello` did not load: ") && stderr.contains("unsigned"),
        "{stderr}"
    );
}

#[test]
fn every_form_of_addr_listens_where_its_help_says() {
    let (_dir, plugin) = plugin_file(guests::HELLO, "hello");
    for (addr, listening) in [
        ("0", "127.0.0.1"),
        (":0", "0.0.0.0"),
        ("localhost:0", "localhost"),
        ("[::1]:0", "::1"),
        ("127.0.0.1:0", "127.0.0.1"),
    ] {
        if addr.contains("::1") && std::net::TcpListener::bind("[::1]:0").is_err() {
            // No IPv6 loopback on this machine.
            continue;
        }
        let server = Server::spawn(&[&plugin, "--addr", addr, "--unsigned", "allow"]);
        let ip = server.listening.ip();
        match listening {
            "localhost" => assert!(ip.is_loopback(), "{addr}: {ip}"),
            expected => assert_eq!(ip, expected.parse::<std::net::IpAddr>().unwrap(), "{addr}"),
        }
        assert_ne!(server.listening.port(), 0);
        assert_eq!(
            server.post("/plugins/hello/echo", b"hi").body,
            b"hi",
            "{addr}"
        );
    }
}

#[test]
fn a_zero_duration_or_size_is_refused_naming_the_flag_or_the_setting() {
    let (_dir, manifest) = manifest();
    let manifest = manifest.to_str().unwrap();
    let home = tempfile::tempdir().unwrap();
    let serve = |args: &[&str]| {
        let mut command = vec!["serve", "--manifest", manifest, "--addr", "127.0.0.1:0"];
        command.extend_from_slice(args);
        let output = support::warden_at_home(home.path(), &command);
        (output.status.code(), support::stderr_of(&output))
    };
    for (flag, value, names) in [
        (
            "--watch-interval",
            "0s",
            "is zero; give a duration longer than zero, such as 300ms, 5s or 1m30s; \
             to stop watching the files, use --no-watch",
        ),
        (
            "--request-timeout",
            "0ms",
            "is zero; give a duration longer than zero",
        ),
        (
            "--idle-timeout",
            "0s",
            "is zero; give a duration longer than zero",
        ),
        (
            "--header-read-timeout",
            "0s",
            "is zero; give a duration longer than zero",
        ),
        (
            "--write-timeout",
            "0s",
            "is zero; give a duration longer than zero",
        ),
        ("--max-body-memory", "0", "must be at least 1 byte"),
    ] {
        let (code, stderr) = serve(&[flag, value]);
        assert_eq!(code, Some(2), "{flag}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid value '{value}' for '{flag} "))
                && stderr.contains(names),
            "{flag}: {stderr}"
        );
    }

    let (dir, zero_idle) = write_manifest("[serve]\nidle_timeout = \"0s\"\n");
    let (code, stderr) = {
        let output = support::warden_at_home(
            home.path(),
            &["serve", "--manifest", zero_idle.to_str().unwrap()],
        );
        (output.status.code(), support::stderr_of(&output))
    };
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "in manifest `{}`",
            dir.path().join("warden.toml").display()
        )) && stderr.contains("idle_timeout = \"0s\"")
            && stderr.contains("`0s` is zero; give a duration longer than zero"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_to_guess_what_to_serve_and_plugin_flags_beside_a_manifest() {
    let (_dir, manifest) = manifest();
    let manifest = manifest.to_str().unwrap();
    let home = tempfile::tempdir().unwrap();
    let output = support::warden_at_home(home.path(), &["serve"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        support::stderr_of(&output)
            .contains("name what to serve: a plugin file (warden serve PLUGIN.wasm) or a manifest"),
        "{output:?}"
    );
    for flag in [
        &["--memory", "1MiB"][..],
        &["--unsigned", "allow"],
        &["--kv"],
        &["--strict"],
    ] {
        let mut args = vec!["serve", "--manifest", manifest];
        args.extend_from_slice(flag);
        let output = support::warden_at_home(home.path(), &args);
        assert_eq!(output.status.code(), Some(2), "{flag:?}");
        let stderr = support::stderr_of(&output);
        assert!(
            stderr.contains(&format!(
                "{} configures a plugin file served alone (warden serve PLUGIN.wasm",
                flag[0]
            )) && stderr.contains("[plugins.NAME] and [defaults] tables, so set it there"),
            "{stderr}"
        );
    }
}

/// A manifest serving the 0.2 hello as `hello2` for the memory tests: stream
/// input and output up to 2 GiB, a 10-minute timeout, and `idle` as the
/// stream idle timeout.
fn streaming_manifest(idle: &str) -> (tempfile::TempDir, PathBuf) {
    write_manifest(&format!(
        "[plugins.hello2]\npath = \"{}\"\n[plugins.hello2.limits]\ntimeout = \"600s\"\n\
         max_stream_input = \"2GiB\"\nmax_stream_output = \"2GiB\"\nstream_idle_timeout = \"{idle}\"\n",
        guests::HELLO_V2
    ))
}

impl Server {
    /// Its peak resident memory so far.
    #[cfg(target_os = "linux")]
    fn peak_resident(&self) -> u64 {
        warden_tests::proc_status_bytes(&self.child.id().to_string(), "VmHWM").unwrap()
    }
}

/// The bytes of the streamed input at `offset`: lower-case text in lines.
fn input_byte(offset: u64) -> u8 {
    const LINE: &[u8] = b"the quick brown fox jumps over the lazy dog\n";
    LINE[(offset % LINE.len() as u64) as usize]
}

/// Writes `total` bytes of [`input_byte`] as chunks of 64 KiB, made as they
/// go; the error that stopped it, if any.
fn send_generated(stream: &mut std::net::TcpStream, total: u64) -> std::io::Result<()> {
    use std::io::Write;
    const CHUNK: u64 = 64 << 10;
    let mut chunk = Vec::with_capacity(CHUNK as usize);
    let mut sent = 0;
    while sent < total {
        chunk.clear();
        chunk.extend((sent..(sent + CHUNK).min(total)).map(input_byte));
        write_chunk(stream, &chunk)?;
        sent += chunk.len() as u64;
    }
    stream.write_all(b"0\r\n\r\n")
}

/// Reads a chunked response body as it comes, checking each byte is the
/// upper case of the input's; the bytes read and what followed the last
/// chunk.
fn read_upper(stream: impl std::io::Read) -> (u64, String) {
    use std::io::Read;
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        assert!(!line.is_empty(), "the head ended early");
        if line.to_lowercase().starts_with("http/1.1 ") {
            assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        }
    }
    let mut offset = 0u64;
    let mut chunk = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let size = usize::from_str_radix(line.trim_end(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {line:?} after {offset} bytes"));
        if size == 0 {
            let mut rest = String::new();
            let _ = reader.read_to_string(&mut rest);
            return (offset, rest);
        }
        chunk.resize(size + 2, 0);
        reader.read_exact(&mut chunk).unwrap();
        for &byte in &chunk[..size] {
            assert_eq!(byte, input_byte(offset).to_ascii_uppercase(), "at {offset}");
            offset += 1;
        }
    }
}

#[test]
#[cfg(target_os = "linux")]
fn a_gibibyte_streams_through_upper_in_bounded_memory() {
    const TOTAL: u64 = 1 << 30;
    const BOUND: u64 = 64 << 20;
    let (_dir, manifest) = streaming_manifest("30s");
    let server = Server::start_compiled(&manifest, "hello2", &["--write-timeout", "30s"]);
    // Warm: the plugin compiled and one stream served.
    let reply = http_request_chunked(server.addr, "POST", "/plugins/hello2/upper", b"warm", 2);
    assert_eq!(reply.body, b"WARM");
    let before = server.peak_resident();

    let started = Instant::now();
    let mut stream = chunked_head(server.addr, "/plugins/hello2/upper", "");
    let reading = {
        let stream = stream.try_clone().unwrap();
        std::thread::spawn(move || read_upper(stream))
    };
    send_generated(&mut stream, TOTAL).unwrap();
    let (received, rest) = reading.join().unwrap();
    let elapsed = started.elapsed();
    let peak = server.peak_resident();
    eprintln!(
        "1 GiB through upper in {elapsed:?}; server peak resident {} KiB before, {} KiB after",
        before >> 10,
        peak >> 10
    );
    assert_eq!(received, TOTAL);
    assert_eq!(rest, "\r\n", "a whole response");
    assert!(
        peak < BOUND,
        "the server's peak resident memory was {peak} bytes"
    );
}

#[test]
#[cfg(target_os = "linux")]
fn a_client_that_stops_reading_a_stream_is_dropped_and_holds_no_memory() {
    const INPUT: u64 = 512 << 20;
    const GROWTH_BOUND: u64 = 16 << 20;
    let (_dir, manifest) = streaming_manifest("5s");
    let server = Server::start_compiled(&manifest, "hello2", &["--write-timeout", "1s"]);
    let reply = http_request_chunked(server.addr, "POST", "/plugins/hello2/upper", b"warm", 2);
    assert_eq!(reply.body, b"WARM");
    let before = server.peak_resident();

    // It sends, and never reads: the kernel's buffers fill, then the
    // server's writes wait, then the write timeout drops the connection.
    let started = Instant::now();
    let mut stream = chunked_head(server.addr, "/plugins/hello2/upper", "");
    let sent = send_generated(&mut stream, INPUT);
    let elapsed = started.elapsed();
    assert!(sent.is_err(), "the server took all {INPUT} bytes unread");
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    let grown = server.peak_resident().saturating_sub(before);
    eprintln!(
        "dropped after {elapsed:?}; server peak resident {} KiB before, grew {} KiB",
        before >> 10,
        grown >> 10
    );
    assert!(
        grown < GROWTH_BOUND,
        "the server's peak grew by {grown} bytes"
    );

    // The server counts it, frees the call and serves on.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server
        .metric(r#"warden_http_streams_failed_total{plugin="hello2",error="response-abandoned"}"#)
        != Some(1.0)
    {
        assert!(
            Instant::now() < deadline,
            "the abandoned stream was not counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        server.metric(r#"warden_http_connections_closed_total{reason="write-timeout"}"#),
        Some(1.0)
    );
    assert_eq!(server.metric("warden_instances_in_use"), Some(0.0));
    let reply = http_request_chunked(server.addr, "POST", "/plugins/hello2/upper", b"again", 2);
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"AGAIN"[..]));
    drop(stream);
}

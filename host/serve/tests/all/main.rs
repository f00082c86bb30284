//! `warden-serve` as a library: an application builds a registry, starts a
//! `Server` on a listener of its own, calls its plugins over HTTP, reads
//! `/metrics` and its log events, and stops it with a future.
//!
//! The `warden serve` command is tested end to end in
//! `host/cli/tests/all/serve.rs`.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing_subscriber::layer::SubscriberExt as _;
use warden::{Registry, Sandbox};
use warden_serve::{Server, ServerConfig, Stopped};
use warden_tests::{HttpReply, guests, http_request};

mod streaming;

/// A server on an ephemeral port of 127.0.0.1.
struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    server: JoinHandle<io::Result<Stopped>>,
}

impl Running {
    /// Serves `registry` until [`Running::stop`], which gives `reason` as
    /// the shutdown's.
    async fn start(registry: Registry, config: ServerConfig, reason: &'static str) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
            reason
        };
        let server = tokio::spawn(Server::new(registry, config).run(listener, shutdown));
        Running { addr, stop, server }
    }

    /// One request over a connection of its own.
    async fn request(&self, method: &'static str, path: &str, body: &[u8]) -> HttpReply {
        let (addr, path, body) = (self.addr, path.to_owned(), body.to_vec());
        // The client blocks; the server runs on this test's runtime.
        tokio::task::spawn_blocking(move || http_request(addr, method, &path, &body))
            .await
            .unwrap()
    }

    /// Resolves the shutdown future, and waits for the drain.
    async fn stop(self) -> Stopped {
        self.stop.send(()).unwrap();
        self.server.await.unwrap().unwrap()
    }
}

/// A registry holding the hello guest as `hello`.
async fn hello_registry() -> Registry {
    let registry = Registry::new(warden_tests::runtime_builder().build().unwrap());
    registry
        .load_file("hello", guests::HELLO, Sandbox::default())
        .await
        .unwrap();
    registry
}

/// The value of the sample line of `metrics` that starts with `sample`.
fn metric(metrics: &str, sample: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_serves_a_registry_and_stops_it_with_a_future() {
    let server = Running::start(hello_registry().await, ServerConfig::default(), "done").await;

    let reply = server
        .request("POST", "/plugins/hello/count-vowels", b"hello world")
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, b"3");
    let metadata: Value =
        serde_json::from_slice(&server.request("GET", "/plugins/hello", b"").await.body).unwrap();
    assert_eq!(metadata["name"], "hello");
    assert_eq!(server.request("GET", "/readyz", b"").await.status, 200);

    let metrics = server.request("GET", "/metrics", b"").await;
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let metrics = metrics.text();
    assert_eq!(
        metric(
            &metrics,
            r#"warden_http_requests_total{plugin="hello",code="200"}"#
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, r#"warden_plugin_calls_total{plugin="hello"}"#),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "warden_instances_in_use"), Some(0.0));

    let addr = server.addr;
    let stopped = server.stop().await;
    assert!(stopped.drained, "{stopped:?}");
    assert_eq!(stopped.cancelled, 0);
    // The listener went with the server.
    assert!(std::net::TcpStream::connect(addr).is_err());
}

/// Every line the server's events became, in every test of this binary.
///
/// One global subscriber, as an application installs it: a subscriber set
/// for one thread misses events at callsites another test's thread met
/// first, since `tracing` caches each callsite's interest process-wide.
fn log_lines() -> Vec<Value> {
    static WRITTEN: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    let written = WRITTEN.get_or_init(|| {
        let written = Arc::new(Mutex::new(Vec::new()));
        let sink = written.clone();
        let log =
            tracing_subscriber::registry().with(warden_serve::log::json_lines_to(move || {
                SharedBuffer(sink.clone())
            }));
        tracing::subscriber::set_global_default(log).unwrap();
        written
    });
    let written = written.lock().unwrap().clone();
    String::from_utf8(written)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_logs_through_tracing_and_json_lines_renders_it() {
    log_lines();
    // Named for this test, so that its lines can be told from the others'.
    let registry = Registry::new(warden_tests::runtime_builder().build().unwrap());
    registry
        .load_file("logged", guests::HELLO, Sandbox::default())
        .await
        .unwrap();
    let server = Running::start(registry, ServerConfig::default(), "logged enough").await;
    let addr = server.addr.to_string();
    let reply = server
        .request("POST", "/plugins/logged/greet", b"log")
        .await;
    assert_eq!(reply.body, b"Hello, log!");
    server.stop().await;

    let lines = log_lines();
    let find = |event: &str, what: &dyn Fn(&Value) -> bool| {
        let found = lines
            .iter()
            .find(|line| line["event"] == event && what(line));
        found.unwrap_or_else(|| panic!("no {event} line: {lines:#?}"))
    };
    let listening = find("listening", &|line| line["addr"] == addr.as_str());
    assert_eq!(listening["plugins"], serde_json::json!(["logged"]));
    let request = find("request", &|line| line["plugin"] == "logged");
    assert_eq!(request["status"], 200);
    assert_eq!(request["path"], "/plugins/logged/greet");
    assert_eq!(request["error"], Value::Null);
    let logged = find("plugin-log", &|line| line["plugin"] == "logged");
    assert_eq!(logged["message"], "greeted log");
    let draining = find("draining", &|line| line["signal"] == "logged enough");
    assert_eq!(draining["grace_ms"], 10_000);
    assert!(lines.iter().all(|line| line["time"].is_f64()), "{lines:#?}");
}

/// A writer that appends to a buffer the test reads.
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for SharedBuffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut buffer = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn settings_a_server_cannot_run_under_are_refused_before_it_listens() {
    let refused = |config: ServerConfig| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let registry = Registry::new(warden_tests::runtime_builder().build().unwrap());
        Server::new(registry, config)
            .run(listener, std::future::pending())
            .await
            .expect_err("the settings are refused")
    };
    let defaults = ServerConfig::default;
    let none_running = ServerConfig {
        max_concurrent: 0,
        ..defaults()
    };
    let overflowing = ServerConfig {
        max_queue: Some(usize::MAX),
        ..defaults()
    };
    let no_connections = ServerConfig {
        max_connections: 0,
        ..defaults()
    };
    let no_body_memory = ServerConfig {
        max_body_memory: 0,
        ..defaults()
    };
    let no_request_time = ServerConfig {
        request_timeout: std::time::Duration::ZERO,
        ..defaults()
    };
    let watching_without_pause = ServerConfig {
        watch_interval: Some(std::time::Duration::ZERO),
        ..defaults()
    };
    let mut no_idle_time = defaults();
    no_idle_time.connection_limits.idle = std::time::Duration::ZERO;
    for (config, named) in [
        (no_request_time, "request_timeout"),
        (watching_without_pause, "watch_interval"),
        (none_running, "max_concurrent"),
        (overflowing, "max_queue"),
        (no_connections, "max_connections"),
        (no_body_memory, "max_body_memory"),
        (no_idle_time, "connection_limits.idle"),
    ] {
        let err = refused(config).await;
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains(named), "{err}");
    }
}

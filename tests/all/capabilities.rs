//! Every capability through the library, granted and denied, with the probe
//! plugin exercising it against local servers.

use std::time::Duration;

use tokio::task::JoinSet;
use warden::{
    Error, ErrorKind, Grants, KvGrant, Limits, OriginPattern, Plugin, PluginError, Preopen, Risk,
    Runtime, Sandbox, Source,
};
use warden_tests::{
    HTTP_BIG_BODY, HTTP_DRIP_BYTES, HTTP_DRIP_INTERVAL, HTTP_GREETING, HttpServer, TcpPong,
    UdpSink, guest_bytes, guests,
};

use crate::{runtime, tight_limits};

/// A sandbox with `grant` applied. These tests are about grants, not
/// limits, so the timeout leaves room for a loaded test machine.
pub(crate) fn sandbox(grant: impl FnOnce(&mut Grants)) -> Sandbox {
    let mut limits = tight_limits();
    limits.timeout = Duration::from_secs(20);
    let mut sandbox = Sandbox::with_limits(limits);
    grant(&mut sandbox.grants);
    sandbox
}

pub(crate) async fn probe_in(runtime: &Runtime, name: &str, sandbox: Sandbox) -> Plugin {
    runtime
        .load(Source::new(name, guest_bytes(guests::PROBE)), sandbox)
        .await
        .unwrap_or_else(|err| panic!("loading the probe: {err}"))
}

async fn probe(sandbox: Sandbox) -> Plugin {
    probe_in(&runtime(), "probe", sandbox).await
}

pub(crate) async fn call(plugin: &Plugin, action: &str, input: &str) -> Result<String, Error> {
    plugin
        .execute(action, input.as_bytes())
        .await
        .result
        .map(|output| String::from_utf8(output).expect("the probe answers in UTF-8"))
}

/// Asserts that a call was refused for `capability` and that the report and
/// the error both say so.
pub(crate) async fn assert_denied(plugin: &Plugin, action: &str, input: &str, capability: &str) {
    let outcome = plugin.execute(action, input.as_bytes()).await;
    assert!(
        outcome
            .report
            .denials
            .iter()
            .any(|d| d.capability == capability),
        "{action}: no {capability} denial in {:?}",
        outcome.report.denials
    );
    match outcome.result {
        Err(Error::Denied { denial, then }) => {
            assert_eq!(denial.capability, capability);
            assert!(matches!(*then, Error::Plugin(_)), "{then:?}");
        }
        other => panic!("{action}: expected a {capability} denial, got {other:?}"),
    }
}

fn origin(text: &str) -> OriginPattern {
    text.parse().unwrap()
}

#[tokio::test]
async fn http_to_an_allowed_origin_works() {
    let server = HttpServer::start();
    let plugin = probe(sandbox(|grants| {
        grants.http.allow.push(origin(&server.origin()))
    }))
    .await;
    assert_eq!(
        call(&plugin, "http-get", &server.url("/")).await.unwrap(),
        HTTP_GREETING
    );
    let big = call(&plugin, "http-get", &server.url("/big"))
        .await
        .unwrap();
    assert_eq!(big.len(), HTTP_BIG_BODY);
}

#[tokio::test]
async fn http_without_a_grant_or_to_another_origin_is_denied() {
    let server = HttpServer::start();
    let plugin = probe(sandbox(|_| {})).await;
    assert_denied(&plugin, "http-get", &server.url("/"), "http").await;
    let err = call(&plugin, "http-get", &server.url("/"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("HttpRequestDenied"), "{err}");

    let other_port = format!("http://127.0.0.1:{}", server.addr.port() + 1);
    let plugin = probe(sandbox(|grants| {
        grants.http.allow.push(origin(&other_port))
    }))
    .await;
    assert_denied(&plugin, "http-get", &server.url("/"), "http").await;
    let https = format!("https://{}", server.addr);
    let plugin = probe(sandbox(|grants| grants.http.allow.push(origin(&https)))).await;
    assert_denied(&plugin, "http-get", &server.url("/"), "http").await;
}

/// Asserts that a call was refused for `http` with exactly `detail`, and
/// that the guest saw `HttpRequestDenied`.
async fn assert_http_denied(plugin: &Plugin, url: &str, detail: &str) {
    let outcome = plugin.execute("http-get", url.as_bytes()).await;
    match outcome.result {
        Err(Error::Denied { denial, then }) => {
            assert_eq!(denial.capability, "http");
            assert_eq!(denial.detail, detail);
            assert!(then.to_string().contains("HttpRequestDenied"), "{then}");
        }
        other => panic!("{url}: expected an http denial, got {other:?}"),
    }
}

#[tokio::test]
async fn http_to_internal_addresses_needs_a_grant_that_names_them() {
    let server = HttpServer::start();
    let port = server.addr.port();
    let internal = "an internal address (loopback, private or link-local) that the grant does \
                    not name; grant it by address to allow it";
    // Any host on the port: neither a name that resolves to loopback nor
    // the loopback address itself is reached.
    let wildcard = probe(sandbox(|grants| {
        grants.http.allow.push(origin(&format!("http://*:{port}")))
    }))
    .await;
    let by_name = format!("http://localhost:{port}/");
    let resolved = tokio::net::lookup_host(("localhost", port))
        .await
        .unwrap()
        .next()
        .unwrap()
        .ip();
    assert_http_denied(
        &wildcard,
        &by_name,
        &format!("GET {by_name} resolves to {resolved}, {internal}"),
    )
    .await;
    assert_http_denied(
        &wildcard,
        &server.url("/"),
        &format!("GET {} resolves to 127.0.0.1, {internal}", server.url("/")),
    )
    .await;
    // Named by address, or as localhost: allowed.
    let by_address = probe(sandbox(|grants| {
        grants.http.allow.push(origin(&server.origin()))
    }))
    .await;
    assert_eq!(
        call(&by_address, "http-get", &server.url("/"))
            .await
            .unwrap(),
        HTTP_GREETING
    );
    let localhost = probe(sandbox(|grants| {
        grants
            .http
            .allow
            .push(origin(&format!("http://localhost:{port}")))
    }))
    .await;
    assert_eq!(
        call(&localhost, "http-get", &by_name).await.unwrap(),
        HTTP_GREETING
    );
}

#[tokio::test]
async fn http_responses_beyond_the_cap_fail() {
    let server = HttpServer::start();
    let plugin = probe(sandbox(|grants| {
        grants.http.allow.push(origin(&server.origin()));
        grants.http.max_response_bytes = 1000;
    }))
    .await;
    let err = call(&plugin, "http-get", &server.url("/big"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("body size exceeds limit: 1000 bytes"),
        "{err}"
    );
    assert_eq!(
        call(&plugin, "http-get", &server.url("/")).await.unwrap(),
        HTTP_GREETING
    );
}

/// A body that keeps arriving, a byte every 100 ms, never trips the
/// first-byte timeout (the head comes at once) nor the between-bytes one
/// (bounded by the total, 1 s here): only the total deadline ends it, one
/// second after the request was sent, with part of the body read.
#[tokio::test]
async fn a_dripping_body_ends_at_the_grants_total_timeout() {
    let server = HttpServer::start();
    let total_timeout = Duration::from_secs(1);
    let plugin = probe(sandbox(|grants| {
        grants.http.allow.push(origin(&server.origin()));
        grants.http.total_timeout = total_timeout;
    }))
    .await;
    let started = std::time::Instant::now();
    let err = call(&plugin, "http-get", &server.url("/drip"))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    let Error::Plugin(PluginError::Failed(message)) = &err else {
        panic!("expected the probe to report the error code, got {err:?}");
    };
    // wasmtime-wasi-http gives a body's read error no `error-code`; its
    // text names it: "HTTP response timeout" is the total deadline, which
    // the first-byte and between-bytes timeouts would call "connection read
    // timeout".
    let (arrived, error) = message
        .strip_prefix("None after ")
        .and_then(|rest| rest.split_once(" bytes of the body: "))
        .unwrap_or_else(|| panic!("expected a failed body read, got {message:?}"));
    assert_eq!(
        error.lines().next(),
        Some("HTTP response timeout"),
        "{message}"
    );
    let arrived: usize = arrived.parse().unwrap();
    assert!(
        arrived > 0 && arrived < HTTP_DRIP_BYTES,
        "{arrived} bytes of the body arrived"
    );
    let drip_takes = HTTP_DRIP_INTERVAL * HTTP_DRIP_BYTES as u32;
    assert!(
        elapsed >= total_timeout && elapsed < drip_takes,
        "{elapsed:?}"
    );

    // With a total timeout longer than the drip, the same body arrives
    // whole: no other timeout cut it short.
    let patient = probe(sandbox(|grants| {
        grants.http.allow.push(origin(&server.origin()));
        grants.http.total_timeout = drip_takes * 4;
    }))
    .await;
    assert_eq!(
        call(&patient, "http-get", &server.url("/drip"))
            .await
            .unwrap(),
        "d".repeat(HTTP_DRIP_BYTES)
    );
}

/// A server that sends no head within the total timeout.
#[tokio::test]
async fn http_requests_end_at_the_grants_total_timeout() {
    let server = HttpServer::start();
    let plugin = probe(sandbox(|grants| {
        grants.http.allow.push(origin(&server.origin()));
        grants.http.total_timeout = Duration::from_millis(300);
    }))
    .await;
    let started = std::time::Instant::now();
    let err = call(&plugin, "http-get", &server.url("/slow"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Timeout"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

/// A guest that panics right after a `set-many` loses nothing of the
/// batch: it was one transaction, committed before the trap.
#[tokio::test]
async fn a_panic_right_after_a_kv_batch_leaves_the_batch_whole() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = probe(sandbox(|grants| grants.kv = Some(kv_at(&dir)))).await;
    let pairs: Vec<String> = (0..100).map(|key| format!("k{key:03}={key}")).collect();
    let err = call(&plugin, "kv-set-many-then-panic", &pairs.join(","))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Trap, "{err}");
    let inspector =
        warden::tools::KvInspector::open(&dir.path().join("kv.sqlite"), "probe").unwrap();
    let keys = inspector.keys("default").unwrap();
    assert_eq!(keys.len(), 100, "{keys:?}");
    for key in 0..100 {
        let value = inspector.get("default", &format!("k{key:03}")).unwrap();
        assert_eq!(value, Some(key.to_string().into_bytes()));
    }
}

fn kv_at(dir: &tempfile::TempDir) -> KvGrant {
    KvGrant::at(dir.path().join("kv.sqlite"))
}

/// Writes, reads, counts, lists and deletes through the probe, with the
/// answers every kv backend must give on an empty store.
pub(crate) async fn assert_kv_round_trip(plugin: &Plugin) {
    assert_eq!(call(plugin, "kv-set", "colour=blue").await.unwrap(), "ok");
    assert_eq!(call(plugin, "kv-get", "colour").await.unwrap(), "blue");
    assert_eq!(call(plugin, "kv-incr", "visits").await.unwrap(), "1");
    assert_eq!(call(plugin, "kv-incr", "visits").await.unwrap(), "2");
    assert_eq!(call(plugin, "kv-set-many", "a=1,b=2").await.unwrap(), "ok");
    assert_eq!(
        call(plugin, "kv-list", "").await.unwrap(),
        "a,b,colour,visits"
    );
    assert_eq!(
        call(plugin, "kv-set", "other/colour=red").await.unwrap(),
        "ok"
    );
    assert_eq!(call(plugin, "kv-get", "other/colour").await.unwrap(), "red");
    assert_eq!(call(plugin, "kv-delete", "a").await.unwrap(), "ok");
    // Deleting what is not there is not an error.
    assert_eq!(call(plugin, "kv-delete", "a").await.unwrap(), "ok");
    assert!(call(plugin, "kv-get", "a").await.is_err());
}

#[tokio::test]
async fn kv_stores_counts_lists_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = probe(sandbox(|grants| grants.kv = Some(kv_at(&dir)))).await;
    assert_kv_round_trip(&plugin).await;

    // A new runtime on the same file sees everything.
    let again = probe(sandbox(|grants| grants.kv = Some(kv_at(&dir)))).await;
    assert_eq!(call(&again, "kv-get", "colour").await.unwrap(), "blue");
    assert_eq!(call(&again, "kv-incr", "visits").await.unwrap(), "3");
}

#[tokio::test]
async fn kv_namespaces_keep_plugins_apart() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let alpha = probe_in(
        &runtime,
        "alpha",
        sandbox(|grants| grants.kv = Some(kv_at(&dir))),
    )
    .await;
    let beta = probe_in(
        &runtime,
        "beta",
        sandbox(|grants| grants.kv = Some(kv_at(&dir))),
    )
    .await;
    call(&alpha, "kv-set", "secret=alpha's").await.unwrap();
    let err = call(&beta, "kv-get", "secret").await.unwrap_err();
    assert!(
        matches!(err, Error::Plugin(PluginError::Failed(ref why)) if why.contains("no key")),
        "{err:?}"
    );
    assert_eq!(call(&beta, "kv-list", "").await.unwrap(), "");

    // A namespace can be shared on purpose.
    let mut shared = kv_at(&dir);
    shared.namespace = Some("alpha".into());
    let gamma = probe_in(
        &runtime,
        "gamma",
        sandbox(|grants| grants.kv = Some(shared)),
    )
    .await;
    assert_eq!(call(&gamma, "kv-get", "secret").await.unwrap(), "alpha's");
}

#[tokio::test]
async fn kv_quotas_refuse_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut grant = kv_at(&dir);
    grant.quotas.max_keys = 2;
    grant.quotas.max_value_bytes = 8;
    let plugin = probe(sandbox(|grants| grants.kv = Some(grant))).await;
    call(&plugin, "kv-set", "a=1").await.unwrap();
    let err = call(&plugin, "kv-set", "b=123456789").await.unwrap_err();
    assert!(err.to_string().contains("kv quota exceeded"), "{err}");
    call(&plugin, "kv-set", "b=2").await.unwrap();
    let err = call(&plugin, "kv-set", "c=3").await.unwrap_err();
    assert!(err.to_string().contains("at most 2"), "{err}");
    assert_eq!(call(&plugin, "kv-list", "").await.unwrap(), "a,b");
}

#[tokio::test]
async fn kv_without_a_grant_is_denied() {
    let plugin = probe(sandbox(|_| {})).await;
    assert_denied(&plugin, "kv-set", "a=1", "kv").await;
    let err = call(&plugin, "kv-get", "a").await.unwrap_err();
    assert!(err.to_string().contains("kv: access denied"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_increments_are_exact_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let plugin = probe_in(
        &runtime,
        "counter",
        sandbox(|grants| grants.kv = Some(kv_at(&dir))),
    )
    .await;
    increment_hits_concurrently(std::slice::from_ref(&plugin), 8).await;
    assert_eq!(call(&plugin, "kv-get", "hits").await.unwrap(), "200");
}

/// Increments the counter `hits` 25 times in each of `tasks` tasks per
/// plugin, all running at once, and waits for every increment to succeed.
pub(crate) async fn increment_hits_concurrently(plugins: &[Plugin], tasks: usize) {
    let mut calls = JoinSet::new();
    for plugin in plugins {
        for _ in 0..tasks {
            let plugin = plugin.clone();
            calls.spawn(async move {
                for _ in 0..25 {
                    call(&plugin, "kv-incr", "hits").await.unwrap();
                }
            });
        }
    }
    while let Some(joined) = calls.join_next().await {
        joined.unwrap();
    }
}

#[tokio::test]
async fn config_values_are_read_when_granted() {
    let plugin = probe(sandbox(|grants| {
        grants.config.insert("greeting".into(), "hi".into());
        grants.config.insert("colour".into(), "blue".into());
    }))
    .await;
    assert_eq!(call(&plugin, "config-get", "greeting").await.unwrap(), "hi");
    assert_eq!(
        call(&plugin, "config-all", "").await.unwrap(),
        "colour=blue,greeting=hi"
    );
    let err = call(&plugin, "config-get", "missing").await.unwrap_err();
    assert!(err.to_string().contains("no config value missing"), "{err}");
}

#[tokio::test]
async fn config_without_values_is_denied() {
    let plugin = probe(sandbox(|_| {})).await;
    assert_denied(&plugin, "config-get", "greeting", "config").await;
}

#[tokio::test]
async fn tcp_to_a_granted_address_works_and_others_are_denied() {
    let server = TcpPong::start();
    let address = server.addr.to_string();
    let plugin = probe(sandbox(|grants| grants.tcp.push(address.parse().unwrap()))).await;
    assert_eq!(call(&plugin, "tcp-echo", &address).await.unwrap(), "pong");

    let ungranted = probe(sandbox(|_| {})).await;
    assert_denied(&ungranted, "tcp-echo", &address, "sockets").await;

    let elsewhere = format!("127.0.0.1:{}", server.addr.port() + 1);
    let wrong_port = probe(sandbox(|grants| {
        grants.tcp.push(elsewhere.parse().unwrap())
    }))
    .await;
    assert_denied(&wrong_port, "tcp-echo", &address, "sockets").await;

    let udp_only = probe(sandbox(|grants| grants.udp.push(address.parse().unwrap()))).await;
    assert_denied(&udp_only, "tcp-echo", &address, "sockets").await;
}

#[tokio::test]
async fn udp_to_a_granted_address_works_and_others_are_denied() {
    let sink = UdpSink::start();
    let address = sink.addr.to_string();
    let plugin = probe(sandbox(|grants| grants.udp.push(address.parse().unwrap()))).await;
    assert_eq!(call(&plugin, "udp-send", &address).await.unwrap(), "sent");
    assert_eq!(
        sink.next(Duration::from_secs(5)).as_deref(),
        Some(&b"ping"[..])
    );

    let ungranted = probe(sandbox(|_| {})).await;
    assert_denied(&ungranted, "udp-send", &address, "sockets").await;
    assert_eq!(sink.next(Duration::from_millis(200)), None);
}

/// The descriptors this process has open now.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("listing /proc/self/fd")
        .count()
}

/// Runs `call` while another thread samples the process's open descriptors;
/// returns its result and the most descriptors seen open meanwhile.
async fn with_peak_descriptors<T>(call: impl Future<Output = T>) -> (T, usize) {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampling = done.clone();
    let sampler = std::thread::spawn(move || {
        let mut peak = open_descriptors();
        while !sampling.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(open_descriptors());
            std::thread::sleep(Duration::from_millis(1));
        }
        peak.max(open_descriptors())
    });
    let result = call.await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    (result, sampler.join().expect("the sampler thread"))
}

#[tokio::test]
async fn sockets_are_never_created_without_a_grant() {
    let runtime = runtime();
    // A UDP grant is no TCP grant, and the other way round.
    for (action, grant, detail) in [
        (
            "tcp-sockets",
            None,
            "creating a TCP socket without a --allow-tcp or --allow-tcp-listen grant",
        ),
        (
            "tcp-sockets",
            Some("udp"),
            "creating a TCP socket without a --allow-tcp or --allow-tcp-listen grant",
        ),
        (
            "udp-sockets",
            None,
            "creating a UDP socket without a --allow-udp grant",
        ),
        (
            "udp-sockets",
            Some("tcp"),
            "creating a UDP socket without a --allow-udp grant",
        ),
    ] {
        let plugin = probe_in(
            &runtime,
            "probe",
            sandbox(|grants| match grant {
                Some("udp") => grants.udp.push("127.0.0.1:9".parse().unwrap()),
                Some(_) => grants.tcp.push("127.0.0.1:9".parse().unwrap()),
                None => {}
            }),
        )
        .await;
        let before = open_descriptors();
        let (outcome, peak) = with_peak_descriptors(plugin.execute(action, b"10000")).await;
        assert_eq!(
            String::from_utf8(outcome.result.unwrap()).unwrap(),
            "created 0, failed 10000 (first: access-denied)",
            "{action} with {grant:?}"
        );
        assert_eq!(
            outcome.report.denials[0],
            warden::Denial {
                capability: "sockets",
                detail: detail.to_owned(),
            }
        );
        // Other tests in this process open descriptors too; 10,000 sockets
        // (or the process's whole descriptor limit) would not fit in this.
        assert!(
            peak <= before + 64,
            "{action}: {before} descriptors open before, {peak} during the call"
        );
        assert_eq!(runtime.instances_in_use(), 0);
    }
    let plugin = probe_in(&runtime, "probe", sandbox(|_| {})).await;
    assert_eq!(call(&plugin, "random", "100").await.unwrap(), "100");
}

#[tokio::test]
async fn granted_sockets_are_capped_per_instance() {
    let runtime = runtime();
    for action in ["tcp-sockets", "udp-sockets"] {
        let mut sandbox = sandbox(|grants| {
            grants.tcp.push("127.0.0.1:9".parse().unwrap());
            grants.udp.push("127.0.0.1:9".parse().unwrap());
        });
        // Two calls on one instance: the first call's sockets are dropped
        // when it returns, and count no more.
        sandbox.calls_per_instance = 2;
        let plugin = probe_in(&runtime, "probe", sandbox).await;
        let mut instance = plugin.instantiate().await.result.unwrap();
        for _ in 0..2 {
            let outcome = instance.execute(action, b"150").await;
            assert_eq!(
                String::from_utf8(outcome.result.unwrap()).unwrap(),
                format!(
                    "created {}, failed 50 (first: new-socket-limit)",
                    Limits::DEFAULT_SOCKETS
                ),
                "{action}"
            );
            assert_eq!(outcome.report.denials, []);
        }
        drop(instance);
        assert_eq!(runtime.instances_in_use(), 0);
    }
}

/// A socket's streams might keep it open after the guest drops the socket
/// resource, past the count of live sockets; wasmtime-wasi makes the
/// streams the socket's children, so dropping a socket that still has
/// streams traps instead, and the plugin serves the next call.
#[tokio::test]
async fn a_socket_cannot_be_dropped_while_its_streams_live() {
    let runtime = runtime();
    let plugin = probe_in(
        &runtime,
        "probe",
        sandbox(|grants| grants.udp.push("127.0.0.1:*".parse().unwrap())),
    )
    .await;
    let outcome = plugin.execute("udp-streams", b"150").await;
    let err = outcome.result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Trap, "{err}");
    assert!(err.to_string().contains("resource has children"), "{err}");
    assert_eq!(runtime.instances_in_use(), 0);
    assert_eq!(call(&plugin, "random", "100").await.unwrap(), "100");
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Without any socket grant, binding is refused like every other socket
/// use, and so is reading configuration without a config grant: each a
/// denial of its capability, which the guest sees as an error.
#[tokio::test]
async fn binding_a_socket_and_reading_config_without_a_grant_are_denied() {
    let plugin = probe(sandbox(|_| {})).await;
    assert_denied(
        &plugin,
        "tcp-listen",
        &format!("127.0.0.1:{}", free_port()),
        "sockets",
    )
    .await;
    assert_denied(&plugin, "config-get", "greeting", "config").await;
}

#[tokio::test]
async fn listening_needs_its_own_grant() {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let connect_only = probe(sandbox(|grants| grants.tcp.push(address.parse().unwrap()))).await;
    let outcome = connect_only.execute("tcp-listen", address.as_bytes()).await;
    match outcome.result {
        Err(Error::Denied { denial, then }) => {
            assert_eq!(
                denial,
                warden::Denial {
                    capability: "sockets",
                    detail: format!("TCP bind on {address}"),
                }
            );
            assert!(
                matches!(&*then, Error::Plugin(PluginError::Failed(code)) if code == "access-denied"),
                "{then:?}"
            );
        }
        other => panic!("expected a sockets denial, got {other:?}"),
    }

    let listener = probe(sandbox(|grants| {
        grants.tcp_listen.push(address.parse().unwrap())
    }))
    .await;
    let client = std::thread::spawn(move || {
        use std::io::Read;
        let until = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(mut stream) => {
                    stream
                        .set_read_timeout(Some(Duration::from_secs(20)))
                        .unwrap();
                    let mut reply = String::new();
                    stream.read_to_string(&mut reply).unwrap();
                    return reply;
                }
                Err(err) if std::time::Instant::now() > until => panic!("never connected: {err}"),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    assert_eq!(
        call(&listener, "tcp-listen", &address).await.unwrap(),
        "accepted"
    );
    assert_eq!(client.join().unwrap(), "pong");
}

#[tokio::test]
async fn name_lookups_are_allowed_only_for_granted_names() {
    let plugin = probe(sandbox(|grants| {
        grants.tcp.push("localhost:80".parse().unwrap())
    }))
    .await;
    let addresses = call(&plugin, "resolve", "localhost").await.unwrap();
    assert!(
        addresses.contains("127.0.0.1") || addresses.contains("::1"),
        "{addresses}"
    );
    assert_denied(&plugin, "resolve", "example.com", "sockets").await;

    let ungranted = probe(sandbox(|_| {})).await;
    assert_denied(&ungranted, "resolve", "localhost", "sockets").await;
}

#[tokio::test]
async fn deterministic_runs_repeat_exactly() {
    let plugin = probe(sandbox(|grants| grants.deterministic = true)).await;
    let clock = call(&plugin, "clock", "").await.unwrap();
    assert_eq!(
        clock, "946684800 0 1000000",
        "fixed wall clock, stepping monotonic clock"
    );
    let random = call(&plugin, "random", "16").await.unwrap();
    for _ in 0..3 {
        assert_eq!(call(&plugin, "clock", "").await.unwrap(), clock);
        assert_eq!(call(&plugin, "random", "16").await.unwrap(), random);
    }

    let real = probe(sandbox(|_| {})).await;
    assert_ne!(
        call(&real, "random", "16").await.unwrap(),
        call(&real, "random", "16").await.unwrap()
    );
    let wall: u64 = call(&real, "clock", "")
        .await
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wall > 1_700_000_000, "the real wall clock: {wall}");
}

#[tokio::test]
async fn oversized_random_requests_trap_instead_of_allocating() {
    let plugin = probe(sandbox(|_| {})).await;
    assert_eq!(call(&plugin, "random", "1048576").await.unwrap(), "1048576");
    let err = call(&plugin, "random", "1048577").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Trap, "{err}");
}

#[tokio::test]
async fn inspection_lists_capabilities_with_risk_and_grants() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = probe(sandbox(|grants| grants.kv = Some(kv_at(&dir)))).await;
    let capabilities = plugin.capabilities();
    let find = |name: &str| {
        capabilities
            .iter()
            .find(|capability| capability.name == name)
            .unwrap_or_else(|| panic!("{name} is not listed in {capabilities:?}"))
    };
    assert_eq!((find("kv").risk, find("kv").granted), (Risk::Medium, true));
    assert_eq!(
        (find("http").risk, find("http").granted),
        (Risk::High, false)
    );
    assert_eq!(
        (find("clocks").risk, find("clocks").granted),
        (Risk::Low, true)
    );
    let http_imports = &find("http").imports;
    assert!(
        http_imports
            .iter()
            .any(|name| name.starts_with("wasi:http/outgoing-handler@"))
    );
    assert!(
        capabilities
            .iter()
            .all(|capability| capability.name != "fs"),
        "the probe never touches files, so it does not import wasi:filesystem"
    );

    // The hostile plugin does use files: read-only is medium risk, read-write high.
    for (preopen, risk) in [
        (Preopen::read_only(dir.path(), "/data"), Risk::Medium),
        (Preopen::read_write(dir.path(), "/data"), Risk::High),
    ] {
        let sandbox = sandbox(|grants| grants.dirs.push(preopen));
        let hostile = crate::load(&runtime(), guests::HOSTILE, sandbox).await;
        let fs = hostile
            .capabilities()
            .iter()
            .find(|c| c.name == "fs")
            .unwrap();
        assert_eq!((fs.risk, fs.granted), (risk, true));
    }
}

#[tokio::test]
async fn strict_refuses_every_ungranted_high_risk_import() {
    let mut strict = sandbox(|_| {});
    strict.strict = true;
    let err = runtime()
        .load(Source::new("probe", guest_bytes(guests::PROBE)), strict)
        .await
        .err()
        .expect("strict refuses the probe");
    let Error::MissingGrants(missing) = &err else {
        panic!("expected missing grants, got {err:?}");
    };
    let names: Vec<&str> = missing.iter().map(|capability| capability.name).collect();
    // Not `env`: ungranted, the environment is empty, so it is low risk.
    assert_eq!(names, ["http", "sockets"]);
    assert_eq!(err.kind(), ErrorKind::Denied);
    let message = err.to_string();
    for hint in ["--allow-http ORIGIN", "--allow-tcp"] {
        assert!(message.contains(hint), "{hint} missing from: {message}");
    }

    let mut granted = sandbox(|grants| {
        grants.http.allow.push(origin("https://example.com"));
        grants.tcp.push("127.0.0.1:1".parse().unwrap());
    });
    granted.strict = true;
    let plugin = runtime()
        .load(Source::new("probe", guest_bytes(guests::PROBE)), granted)
        .await
        .expect("everything high-risk is granted");
    assert!(
        plugin
            .capabilities()
            .iter()
            .all(|c| c.granted || c.risk != Risk::High)
    );
}

#[tokio::test]
async fn unwritable_kv_locations_are_refused_at_load() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let under_a_file = file.path().join("kv.sqlite");
    let err = runtime()
        .load(
            Source::new("probe", guest_bytes(guests::PROBE)),
            sandbox(|grants| grants.kv = Some(KvGrant::at(&under_a_file))),
        )
        .await
        .err()
        .expect("refused");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(err.to_string().contains("kv store"), "{err}");
}

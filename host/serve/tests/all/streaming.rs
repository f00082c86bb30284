//! Streamed calls of world 0.2 plugins over HTTP: the body flows into
//! `execute-stream` as it arrives and the output flows back chunked, within
//! the connection bounds; errors before the first output byte keep their
//! statuses, errors after it end the response so that no client takes it
//! for a whole one.
//!
//! The memory bounds of streams are tested on `warden serve` itself, in a
//! process of its own (`host/cli/tests/all/serve.rs`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use warden::{Registry, Sandbox};
use warden_serve::ServerConfig;
use warden_tests::{chunked_head, guests, http_request, http_request_chunked, write_chunk};

use super::Running;

/// How long a raw client waits for the server at each step.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The stream idle timeout of the in-process tests' plugins: short, so that
/// stalls end quickly.
const QUICK_IDLE: Duration = Duration::from_millis(500);

/// A registry with the 0.1 `hello`, the 0.2 `hello2` (stream input up to
/// 1 MiB) and the 0.2 `hostile2`, both with [`QUICK_IDLE`].
async fn streaming_registry() -> Registry {
    let registry = Registry::new(warden_tests::runtime_builder().build().unwrap());
    registry
        .load_file("hello", guests::HELLO, Sandbox::default())
        .await
        .unwrap();
    let mut sandbox = Sandbox::default();
    sandbox.limits.stream_idle_timeout = QUICK_IDLE;
    sandbox.limits.max_stream_input_bytes = 1 << 20;
    registry
        .load_file("hello2", guests::HELLO_V2, sandbox.clone())
        .await
        .unwrap();
    registry
        .load_file("hostile2", guests::HOSTILE_V2, sandbox)
        .await
        .unwrap();
    registry
}

/// Everything the server sends until it closes the connection.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut response = Vec::new();
    // A reset after the response is still its end.
    let _ = stream.read_to_end(&mut response);
    response
}

/// What the server sends until it has sent `wanted`, without waiting for
/// more.
fn read_until(stream: &mut TcpStream, wanted: &[u8]) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buffer = [0; 4096];
    while !seen.windows(wanted.len()).any(|window| window == wanted) {
        let read = stream.read(&mut buffer).unwrap();
        assert!(read > 0, "{:?}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buffer[..read]);
    }
    seen
}

/// A chunked body split into its data and what follows the last chunk
/// (`None` when it has no last chunk: the response was cut off).
fn dechunk(mut data: &[u8]) -> (Vec<u8>, Option<String>) {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|window| window == b"\r\n") else {
            return (body, None);
        };
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size in {:?}", String::from_utf8_lossy(data)));
        data = &data[line_end + 2..];
        if size == 0 {
            return (body, Some(String::from_utf8_lossy(data).into_owned()));
        }
        if data.len() < size + 2 {
            body.extend_from_slice(&data[..size.min(data.len())]);
            return (body, None);
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A raw response's head (as text) and body.
fn split_response(response: &[u8]) -> (String, &[u8]) {
    let end = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(response)));
    (
        String::from_utf8_lossy(&response[..end]).to_lowercase(),
        &response[end + 4..],
    )
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| panic!("{:?}", String::from_utf8_lossy(body)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_output_arrives_before_the_request_body_is_complete() {
    let server = Running::start(streaming_registry().await, ServerConfig::default(), "done").await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        let mut stream = chunked_head(addr, "/plugins/hello2/upper", "");
        write_chunk(&mut stream, b"hello\n").unwrap();
        // The body is not over; the reply to its first chunk comes anyway.
        let mut seen = read_until(&mut stream, b"HELLO\n");
        let (head, _) = split_response(&seen);
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        write_chunk(&mut stream, b"world\n").unwrap();
        stream.write_all(b"0\r\n\r\n").unwrap();
        seen.extend(read_to_close(&mut stream));
        let (_, body) = split_response(&seen);
        let (output, rest) = dechunk(body);
        assert_eq!(output, b"HELLO\nWORLD\n");
        assert_eq!(rest.as_deref(), Some("\r\n"), "a whole response");
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_before_the_first_output_byte_keep_their_statuses() {
    let server = Running::start(streaming_registry().await, ServerConfig::default(), "done").await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        // A whole-input action through the stream, and the 0.1 plugin as before.
        let reply = http_request_chunked(addr, "POST", "/plugins/hello2/count-vowels", b"hello", 2);
        assert_eq!((reply.status, reply.body.as_slice()), (200, &b"2"[..]));
        let reply = http_request_chunked(addr, "POST", "/plugins/hello/count-vowels", b"hello", 2);
        assert_eq!((reply.status, reply.body.as_slice()), (200, &b"2"[..]));
        assert_eq!(reply.header("content-length"), Some("1"));

        let reply = http_request(addr, "POST", "/plugins/hello2/nope", b"x");
        assert_eq!(reply.status, 404, "{reply:?}");
        let body = json(&reply.body);
        assert_eq!(body["error"], "unknown-action");
        assert!(
            body["message"].as_str().unwrap().contains("upper"),
            "{body}"
        );

        // The plugin never reads: its stall is its own.
        let reply = http_request(addr, "POST", "/plugins/hostile2/never-reads", b"x");
        assert_eq!(reply.status, 500, "{reply:?}");
        assert_eq!(json(&reply.body)["error"], "stream-idle");

        // Past the plugin's stream input limit, declared or not.
        let big = vec![b'a'; (1 << 20) + 1];
        let reply = http_request(addr, "POST", "/plugins/hello2/count", &big);
        assert_eq!(reply.status, 413, "{reply:?}");
        assert_eq!(json(&reply.body)["error"], "payload-too-large");
        let reply = http_request_chunked(addr, "POST", "/plugins/hello2/count", &big, 64 << 10);
        assert_eq!(reply.status, 413, "{reply:?}");
        assert_eq!(json(&reply.body)["error"], "input-too-large");

        // The client stops sending while the plugin waits for its body.
        let mut stream = chunked_head(addr, "/plugins/hello2/count", "");
        write_chunk(&mut stream, b"some of it").unwrap();
        let response = read_to_close(&mut stream);
        let (head, body) = split_response(&response);
        assert!(head.starts_with("http/1.1 408"), "{head}");
        assert_eq!(json(body)["error"], "stream-idle");
    })
    .await
    .unwrap();
    let metrics = server.request("GET", "/metrics", b"").await.text();
    assert!(
        !metrics.contains("warden_http_streams_failed_total{"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_after_the_status_line_cuts_the_response_or_fills_its_trailers() {
    let server = Running::start(streaming_registry().await, ServerConfig::default(), "done").await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        // `never-closes` writes `done`, then stalls: the 200 is sent.
        let mut stream = chunked_head(addr, "/plugins/hostile2/never-closes", "");
        stream.write_all(b"0\r\n\r\n").unwrap();
        let response = read_to_close(&mut stream);
        let (head, body) = split_response(&response);
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(!head.contains("trailer:"), "{head}");
        let (output, end) = dechunk(body);
        assert_eq!(output, b"done");
        assert_eq!(end, None, "no last chunk: the response is incomplete");

        // A client that reads trailers is told the error in them.
        let mut stream = chunked_head(addr, "/plugins/hostile2/never-closes", "TE: trailers\r\n");
        stream.write_all(b"0\r\n\r\n").unwrap();
        let response = read_to_close(&mut stream);
        let (head, body) = split_response(&response);
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(
            head.contains("trailer: warden-error, warden-message"),
            "{head}"
        );
        let (output, end) = dechunk(body);
        assert_eq!(output, b"done");
        let trailers = end.expect("a last chunk").to_lowercase();
        assert!(
            trailers.contains("warden-error: stream-idle\r\n"),
            "{trailers}"
        );
        assert!(
            trailers.contains("warden-message: the stream stalled"),
            "{trailers}"
        );

        // A stream that succeeds has no error trailer.
        let mut stream = chunked_head(addr, "/plugins/hello2/upper", "TE: trailers\r\n");
        write_chunk(&mut stream, b"ok").unwrap();
        stream.write_all(b"0\r\n\r\n").unwrap();
        let response = read_to_close(&mut stream);
        let (_, body) = split_response(&response);
        assert_eq!(dechunk(body), (b"OK".to_vec(), Some("\r\n".to_owned())));
    })
    .await
    .unwrap();
    let metrics = server.request("GET", "/metrics", b"").await.text();
    assert!(
        metrics.contains(
            r#"warden_http_streams_failed_total{plugin="hostile2",error="stream-idle"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"warden_http_requests_total{plugin="hostile2",code="200"} 2"#),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_still_running_when_the_grace_period_ends_is_cancelled() {
    let registry = Registry::new(warden_tests::runtime_builder().build().unwrap());
    // Only the drain may end this stream: its own limits are far off.
    let mut sandbox = Sandbox::default();
    sandbox.limits.timeout = Duration::from_secs(120);
    sandbox.limits.stream_idle_timeout = Duration::from_secs(120);
    registry
        .load_file("hello2", guests::HELLO_V2, sandbox)
        .await
        .unwrap();
    let config = ServerConfig {
        shutdown_grace: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    let server = Running::start(registry.clone(), config, "done").await;
    let addr = server.addr;
    let (streaming, streaming_seen) = tokio::sync::oneshot::channel();
    let client = tokio::task::spawn_blocking(move || {
        // A client that sends a first chunk, reads its answer, and then
        // neither sends nor ends its body.
        let mut stream = chunked_head(addr, "/plugins/hello2/upper", "TE: trailers\r\n");
        write_chunk(&mut stream, b"hello\n").unwrap();
        let mut seen = read_until(&mut stream, b"HELLO\n");
        streaming.send(()).unwrap();
        seen.extend(read_to_close(&mut stream));
        seen
    });
    streaming_seen.await.unwrap();
    let stopped = tokio::time::timeout(CLIENT_TIMEOUT, server.stop())
        .await
        .expect("the drain waited out the stream's own limits");
    assert_eq!((stopped.drained, stopped.cancelled), (false, 1));
    let response = client.await.unwrap();
    let (head, body) = split_response(&response);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let (output, end) = dechunk(body);
    assert_eq!(output, b"HELLO\n");
    let trailers = end.expect("a last chunk").to_lowercase();
    assert!(
        trailers.contains("warden-error: cancelled\r\n"),
        "{trailers}"
    );
    assert_eq!(registry.runtime().instances_in_use(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_descriptions_name_their_world_and_optional_interfaces() {
    let server = Running::start(streaming_registry().await, ServerConfig::default(), "done").await;
    let v2 = json(&server.request("GET", "/plugins/hello2", b"").await.body);
    assert_eq!(v2["name"], "hello");
    assert_eq!(v2["world"], "0.2.0");
    assert_eq!(
        v2["interfaces"],
        serde_json::json!(["streaming", "lifecycle"])
    );
    assert!(
        v2["actions"].as_array().unwrap().contains(&"upper".into()),
        "{v2}"
    );
    let upper = v2["action_details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|action| action["name"] == "upper")
        .unwrap_or_else(|| panic!("{v2}"));
    assert_eq!(upper["input_type"], "text/plain");
    assert_eq!(v2["authors"], serde_json::json!(["The Warden developers"]));
    assert_eq!(v2["license"], "Apache-2.0");
    assert_eq!(v2["homepage"], Value::Null);

    let v1 = json(&server.request("GET", "/plugins/hello", b"").await.body);
    assert_eq!(v1["world"], "0.1.0");
    assert_eq!(v1["interfaces"], serde_json::json!([]));
    assert_eq!(v1["action_details"][0]["name"], v1["actions"][0]);

    let listed = json(&server.request("GET", "/plugins", b"").await.body);
    let worlds: Vec<(&str, &str)> = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|plugin| {
            assert!(plugin["sha256"].is_string(), "{plugin}");
            (
                plugin["name"].as_str().unwrap(),
                plugin["world"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        worlds,
        [
            ("hello", "0.1.0"),
            ("hello2", "0.2.0"),
            ("hostile2", "0.2.0")
        ]
    );
    server.stop().await;
}

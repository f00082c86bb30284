//! Streamed calls of world 0.2 plugins over HTTP: the body flows into
//! `execute-stream` as it arrives and the output flows back chunked, within
//! the connection bounds; errors before the first output byte keep their
//! statuses, errors after it end the response so that no client takes it
//! for a whole one.
//!
//! The memory tests run the server in a process of its own (this test
//! binary, started again to run only [`server_process`]), so that its peak
//! resident memory is the server's alone.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use warden::{Registry, Sandbox};
use warden_serve::{Server, ServerConfig};
use warden_tests::{guests, http_request, http_request_chunked, proc_status_bytes};

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

/// Connects to `addr` and sends a request head for a chunked body.
fn chunked_head(addr: SocketAddr, path: &str, extra_headers: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
         Transfer-Encoding: chunked\r\n{extra_headers}\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream
}

/// Writes `data` as one chunk.
fn write_chunk(stream: &mut TcpStream, data: &[u8]) -> io::Result<()> {
    stream.write_all(format!("{:x}\r\n", data.len()).as_bytes())?;
    stream.write_all(data)?;
    stream.write_all(b"\r\n")
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

/// The environment variable that makes [`server_process`] serve: the write
/// timeout and the stream idle timeout, in milliseconds, as `WRITE,IDLE`.
const SERVER_PROCESS: &str = "WARDEN_SERVE_TEST_SERVER_PROCESS";

/// Not a test: the server process of the memory tests, started by
/// [`ServerProcess::start`]. Serves HELLO_V2 as `hello2` (stream input up
/// to 2 GiB, a 10-minute timeout) on 127.0.0.1, prints `listening ADDR`,
/// and stops when its stdin closes.
#[test]
#[ignore = "the server process of the memory tests; does nothing when run alone"]
fn server_process() {
    let Ok(settings) = std::env::var(SERVER_PROCESS) else {
        return;
    };
    let (write, idle) = settings.split_once(',').unwrap();
    let millis = |text: &str| Duration::from_millis(text.parse().unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let registry = Registry::new(warden_tests::runtime_builder().build().unwrap());
        let mut sandbox = Sandbox::default();
        sandbox.limits.timeout = Duration::from_secs(600);
        sandbox.limits.max_stream_input_bytes = 2 << 30;
        sandbox.limits.max_stream_output_bytes = 2 << 30;
        sandbox.limits.stream_idle_timeout = millis(idle);
        registry
            .load_file("hello2", guests::HELLO_V2, sandbox)
            .await
            .unwrap();
        let mut config = ServerConfig::default();
        config.connection_limits.write = millis(write);
        config.watch_interval = None;
        config.access_log = false;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("listening {}", listener.local_addr().unwrap());
        let stdin_closed = async {
            let _ =
                tokio::task::spawn_blocking(|| io::copy(&mut io::stdin(), &mut io::sink())).await;
            "stdin closed"
        };
        Server::new(registry, config)
            .run(listener, stdin_closed)
            .await
            .unwrap();
    });
}

/// [`server_process`] running; killed on drop.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start(write_timeout: Duration, stream_idle: Duration) -> ServerProcess {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "streaming::server_process",
                "--ignored",
                "--nocapture",
            ])
            .env(
                SERVER_PROCESS,
                format!("{},{}", write_timeout.as_millis(), stream_idle.as_millis()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut lines = stdout.lines();
        let addr = loop {
            let line = lines.next().expect("the server process's address").unwrap();
            // libtest may have begun the line with the test's name.
            if let Some((_, addr)) = line.split_once("listening ") {
                break addr.trim().parse().unwrap();
            }
        };
        // The rest of its output is not read; it writes none.
        std::thread::spawn(move || lines.for_each(drop));
        ServerProcess { child, addr }
    }

    /// Its peak resident memory so far.
    fn peak_resident(&self) -> u64 {
        proc_status_bytes(&self.child.id().to_string(), "VmHWM").unwrap()
    }

    fn metric(&self, sample: &str) -> Option<f64> {
        let metrics = http_request(self.addr, "GET", "/metrics", b"").text();
        super::metric(&metrics, sample)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bytes of the streamed input at `offset`: lower-case text in lines.
fn input_byte(offset: u64) -> u8 {
    const LINE: &[u8] = b"the quick brown fox jumps over the lazy dog\n";
    LINE[(offset % LINE.len() as u64) as usize]
}

/// Writes `total` bytes of [`input_byte`] as chunks of 64 KiB, made as they
/// go; the error that stopped it, if any.
fn send_generated(stream: &mut TcpStream, total: u64) -> io::Result<()> {
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
fn read_upper(stream: impl Read) -> (u64, String) {
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
    let server = ServerProcess::start(Duration::from_secs(30), Duration::from_secs(30));
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
    let server = ServerProcess::start(Duration::from_secs(1), Duration::from_secs(5));
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

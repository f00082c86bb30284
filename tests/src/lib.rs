//! Shared support for Warden's integration tests: the paths of the guest
//! components (built by `build.rs`) and small local servers for the
//! capability tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub mod fuzz;

/// Paths of the guest components built from `guests/`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// A size in bytes from `/proc/PROCESS/status` (`PROCESS` is a pid or
/// `self`), e.g. `VmRSS` (resident now) or `VmHWM` (its peak); `None` when
/// the process is gone or the field is missing.
pub fn proc_status_bytes(process: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|value| value.trim().parse().ok())?;
    Some(kib * 1024)
}

/// A runtime builder for tests. Its compile cache and the key that seals it
/// are the tests' own, in `target/test-cache/` beside the guests, never the
/// defaults in the home of the user running the tests; every test process
/// shares them, so that a guest is compiled once rather than once per test.
pub fn runtime_builder() -> warden::RuntimeBuilder {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-cache");
    let mut builder = warden::Runtime::builder();
    builder
        .compile_cache(dir.join("compiled"))
        .compile_cache_key(dir.join("cache.key"));
    builder
}

/// The XDG base directories, each a directory of its own inside a test's
/// home (see [`with_home`]).
const XDG_DIRS: [(&str, &str); 4] = [
    ("XDG_CONFIG_HOME", "config"),
    ("XDG_CACHE_HOME", "cache"),
    ("XDG_DATA_HOME", "data"),
    ("XDG_STATE_HOME", "state"),
];

/// Removes from `command`'s environment everything through which the user
/// running the tests could reach the process it starts: `HOME`, the XDG
/// base directories and every `WARDEN_*` variable.
pub fn without_user_environment(command: &mut Command) -> &mut Command {
    command.env_remove("HOME");
    for (variable, _) in XDG_DIRS {
        command.env_remove(variable);
    }
    for (variable, _) in std::env::vars_os() {
        if variable.to_string_lossy().starts_with("WARDEN_") {
            command.env_remove(variable);
        }
    }
    command
}

/// Gives `command` `home` as its home, and the XDG base directories inside
/// it, instead of the user's (see [`without_user_environment`]): the trust
/// store, compile cache, cache key and kv store a process defaults to are
/// then the test's own.
pub fn with_home<'a>(command: &'a mut Command, home: &std::path::Path) -> &'a mut Command {
    without_user_environment(command).env("HOME", home);
    for (variable, dir) in XDG_DIRS {
        command.env(variable, home.join(dir));
    }
    command
}

/// Reads a guest component's bytes.
///
/// # Panics
///
/// If the file is missing, which means the build script did not run.
pub fn guest_bytes(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|err| panic!("cannot read guest {path}: {err}"))
}

/// The `malformed-abi` plugin: `tests/fixtures/malformed-abi.wat`, a core
/// module written against the canonical ABI, wrapped into a component of
/// Warden's world. Its actions return values no binding generator would
/// produce (see the fixture for the list).
///
/// # Panics
///
/// If the fixture or Warden's WIT does not parse, which is a bug in the repository.
pub fn malformed_abi_plugin() -> Vec<u8> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let module = wat::parse_file(root.join("fixtures/malformed-abi.wat"))
        .expect("the malformed-abi fixture parses");
    wrap_core_module(module, None, "plugin")
}

/// The slot-residue plugin (`fixtures/slot-residue.wat`): leaves a secret in
/// its memory and table, and looks for one an earlier instance left.
/// Different `variant`s give different components of the same code.
///
/// # Panics
///
/// If the fixture or Warden's WIT does not parse, which is a bug in the repository.
pub fn slot_residue_plugin(variant: char) -> Vec<u8> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("fixtures/slot-residue.wat"))
        .expect("the slot-residue fixture is readable");
    let text = text.replace("in its slot: X\"", &format!("in its slot: {variant}\""));
    let module = wat::parse_str(&text).expect("the slot-residue fixture parses");
    wrap_core_module(module, None, "plugin")
}

/// Wraps a core module written against the canonical ABI into a component
/// of `world`: a world of Warden's WIT package, or of `extra_wit`, a WIT
/// document read beside it (so it may include Warden's world).
///
/// # Panics
///
/// If the WIT does not parse, names no such world, or the module does not
/// fit the world: a bug in the test that calls it.
pub fn wrap_core_module(mut module: Vec<u8>, extra_wit: Option<&str>, world: &str) -> Vec<u8> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut resolve = wit_parser::Resolve::default();
    let (warden, _) = resolve
        .push_dir(root.join("../wit"))
        .expect("Warden's WIT package parses");
    let package = match extra_wit {
        Some(text) => resolve
            .push_str("extra.wit", text)
            .expect("the extra WIT parses"),
        None => warden,
    };
    let world = resolve
        .select_world(&[package], Some(world))
        .unwrap_or_else(|err| panic!("no world `{world}`: {err}"));
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("embedding the world");
    wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|encoder| encoder.validate(true).encode())
        .expect("the module wraps into a component")
}

/// Adds to a component a nested component that imports a core module and
/// instantiates it, and an instance of that nested component given the core
/// module whose fields `module` holds (WAT; it must import nothing). What
/// the module defines is created only through the import, where a count of
/// the binary's own instantiations does not see it.
///
/// # Panics
///
/// If the component or the WAT does not parse: a bug in the test.
pub fn with_module_passed_to_a_nested_component(component: Vec<u8>, module: &str) -> Vec<u8> {
    let (modules, components) = index_space_sizes(&component);
    append_sections(
        component,
        &format!(
            "(core module {module})
             (component (import \"m\" (core module)) (core instance (instantiate 0)))
             (instance (instantiate {components} (with \"m\" (core module {modules}))))"
        ),
    )
}

/// How many core modules and components a component defines at its top level.
fn index_space_sizes(component: &[u8]) -> (usize, usize) {
    let mut depth = 0;
    let (mut modules, mut components) = (0, 0);
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        match payload.expect("the component parses") {
            wasmparser::Payload::Version { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth -= 1,
            wasmparser::Payload::ModuleSection { .. } if depth == 1 => modules += 1,
            wasmparser::Payload::ComponentSection { .. } if depth == 1 => components += 1,
            _ => {}
        }
    }
    (modules, components)
}

/// Appends the sections of a component written in WAT (`fields`, its
/// contents) to `component`; indices in `fields` count the component's own
/// definitions first.
fn append_sections(mut component: Vec<u8>, fields: &str) -> Vec<u8> {
    let sections = wat::parse_str(format!("(component {fields})")).expect("the sections parse");
    // Everything after the 8-byte header is sections, which a component may
    // carry in any number and order.
    component.extend_from_slice(&sections[8..]);
    component
}

/// Adds core instances to a component: for each `(module, count)`, the core
/// module whose fields `module` holds (WAT, e.g. `(memory 0) (memory 0)`;
/// it must import nothing) and `count` instantiations of it. Every instance
/// of the component then creates them too, whatever its world: a plugin that
/// takes much more of the runtime's pools than its own code suggests.
///
/// # Panics
///
/// If the component or the WAT does not parse: a bug in the test.
pub fn with_extra_core_instances(component: Vec<u8>, extra: &[(&str, u32)]) -> Vec<u8> {
    // The appended modules come after the component's own in its module
    // index space.
    let (modules, _) = index_space_sizes(&component);
    let mut fields = String::new();
    for (module, _) in extra {
        fields.push_str(&format!("(core module {module})"));
    }
    for (index, (_, count)) in extra.iter().enumerate() {
        for _ in 0..*count {
            fields.push_str(&format!(
                "(core instance (instantiate {}))",
                modules + index
            ));
        }
    }
    append_sections(component, &fields)
}

/// The body of `GET /` on [`HttpServer`].
pub const HTTP_GREETING: &str = "hello from the test server";
/// The size of `GET /big` on [`HttpServer`].
pub const HTTP_BIG_BODY: usize = 256 << 10;
/// The size of `GET /drip` on [`HttpServer`], sent a byte at a time.
pub const HTTP_DRIP_BYTES: usize = 40;
/// The pause before each byte of `GET /drip`: the whole body takes
/// [`HTTP_DRIP_BYTES`] of them (4 s).
pub const HTTP_DRIP_INTERVAL: Duration = Duration::from_millis(100);

/// An HTTP/1.1 server on 127.0.0.1 for the tests: `GET /` answers
/// [`HTTP_GREETING`], `GET /big` answers [`HTTP_BIG_BODY`] bytes, `GET /slow`
/// answers after five seconds, `GET /stall` sends its head and the first
/// bytes of the greeting at once and the rest after five seconds (so the
/// connection stays open while the client holds the response), `GET /drip`
/// sends its head at once and then [`HTTP_DRIP_BYTES`] bytes of `d`, one every
/// [`HTTP_DRIP_INTERVAL`] (a body that keeps arriving, slowly), anything else
/// 404. It serves until the test process ends.
pub struct HttpServer {
    /// Where it listens.
    pub addr: SocketAddr,
}

impl HttpServer {
    /// Starts the server on a free port.
    ///
    /// # Panics
    ///
    /// If no port can be bound.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a test port");
        let addr = listener.local_addr().expect("the bound address");
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut reader = BufReader::new(&stream);
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).is_err() {
                        return;
                    }
                    // Skip the headers; the tests send no bodies.
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|read| read > 2) {
                        line.clear();
                    }
                    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
                    if path == "/slow" {
                        thread::sleep(Duration::from_secs(5));
                    }
                    let (status, body) = match path {
                        "/" | "/slow" | "/stall" => ("200 OK", HTTP_GREETING.as_bytes().to_vec()),
                        "/big" => ("200 OK", vec![b'b'; HTTP_BIG_BODY]),
                        "/drip" => ("200 OK", vec![b'd'; HTTP_DRIP_BYTES]),
                        _ => ("404 Not Found", b"not found".to_vec()),
                    };
                    let mut stream = &stream;
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    if path == "/drip" {
                        for byte in body.chunks(1) {
                            thread::sleep(HTTP_DRIP_INTERVAL);
                            if stream.write_all(byte).is_err() {
                                return;
                            }
                        }
                        return;
                    }
                    if path == "/stall" {
                        let (first, rest) = body.split_at(1);
                        let _ = stream.write_all(first);
                        thread::sleep(Duration::from_secs(5));
                        let _ = stream.write_all(rest);
                        return;
                    }
                    let _ = stream.write_all(&body);
                });
            }
        });
        HttpServer { addr }
    }

    /// `http://127.0.0.1:PORT`, as an allow-list entry.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A URL on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// A TCP server on 127.0.0.1 that answers each connection's first read with
/// `pong` (the probe plugin's `tcp-echo` sends `ping`).
pub struct TcpPong {
    /// Where it listens.
    pub addr: SocketAddr,
}

impl TcpPong {
    /// Starts the server on a free port.
    ///
    /// # Panics
    ///
    /// If no port can be bound.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a test port");
        let addr = listener.local_addr().expect("the bound address");
        thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut buffer = [0u8; 16];
                if stream.read(&mut buffer).is_ok() {
                    let _ = stream.write_all(b"pong");
                }
            }
        });
        TcpPong { addr }
    }
}

/// A UDP socket on 127.0.0.1 that reports the datagrams it receives.
pub struct UdpSink {
    /// Where it listens.
    pub addr: SocketAddr,
    received: mpsc::Receiver<Vec<u8>>,
}

impl UdpSink {
    /// Binds a free port.
    ///
    /// # Panics
    ///
    /// If no port can be bound.
    pub fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("binding a test port");
        let addr = socket.local_addr().expect("the bound address");
        let (sender, received) = mpsc::channel();
        thread::spawn(move || {
            let mut buffer = [0u8; 1500];
            while let Ok((size, _)) = socket.recv_from(&mut buffer) {
                if sender.send(buffer[..size].to_vec()).is_err() {
                    break;
                }
            }
        });
        UdpSink { addr, received }
    }

    /// The next datagram, if one arrives within `wait`.
    pub fn next(&self, wait: Duration) -> Option<Vec<u8>> {
        self.received.recv_timeout(wait).ok()
    }
}

/// A response read by [`http_request`].
#[derive(Clone, Debug)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The headers, in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, with any chunked transfer coding removed.
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as text (lossily).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How long [`http_request`] waits for the server at each step.
const HTTP_CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends one HTTP/1.1 request with `Connection: close` and a
/// `Content-Length` body (none when `body` is empty and the method is not
/// `POST`), and reads the whole response (`Content-Length`, chunked, or up
/// to the end of the connection).
///
/// The body is written from a second thread while the response is read,
/// so a server that answers before reading all of it (a 413) is heard, and
/// an error writing the rest is ignored.
///
/// # Panics
///
/// If the server cannot be reached, sends nothing, or sends a malformed
/// response.
pub fn http_request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> HttpReply {
    let length = if !body.is_empty() || method == "POST" {
        format!("Content-Length: {}\r\n", body.len())
    } else {
        String::new()
    };
    exchange(addr, method, path, &length, body.to_vec())
}

/// Connects to `addr` and sends the head of a `POST` to `path` whose body
/// is chunked and follows (see [`write_chunk`]), with `extra_headers` (each
/// line ending in `\r\n`). Reads and writes wait as [`http_request`]'s do.
///
/// # Panics
///
/// If the server cannot be reached.
pub fn chunked_head(addr: SocketAddr, path: &str, extra_headers: &str) -> TcpStream {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_CLIENT_TIMEOUT)
        .unwrap_or_else(|err| panic!("cannot connect to {addr}: {err}"));
    stream.set_read_timeout(Some(HTTP_CLIENT_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(HTTP_CLIENT_TIMEOUT)).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
         Transfer-Encoding: chunked\r\n{extra_headers}\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream
}

/// Writes `data` as one chunk of a chunked body (`data` must not be empty:
/// an empty chunk ends the body).
///
/// # Errors
///
/// The error writing it.
pub fn write_chunk(stream: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    stream.write_all(format!("{:x}\r\n", data.len()).as_bytes())?;
    stream.write_all(data)?;
    stream.write_all(b"\r\n")
}

/// Like [`http_request`], but the body is sent with `Transfer-Encoding:
/// chunked` in chunks of `chunk_bytes`, so the server cannot know its length
/// before reading it.
///
/// # Panics
///
/// As [`http_request`]; also if `chunk_bytes` is zero.
pub fn http_request_chunked(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    chunk_bytes: usize,
) -> HttpReply {
    let mut encoded = Vec::with_capacity(body.len() + body.len() / chunk_bytes * 12 + 16);
    for chunk in body.chunks(chunk_bytes) {
        encoded.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        encoded.extend_from_slice(chunk);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded.extend_from_slice(b"0\r\n\r\n");
    exchange(
        addr,
        method,
        path,
        "Transfer-Encoding: chunked\r\n",
        encoded,
    )
}

/// Writes the request head (with `extra_headers`) and, from a second
/// thread, the already encoded body, while reading the response.
fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra_headers: &str,
    body: Vec<u8>,
) -> HttpReply {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_CLIENT_TIMEOUT)
        .unwrap_or_else(|err| panic!("cannot connect to {addr}: {err}"));
    stream
        .set_read_timeout(Some(HTTP_CLIENT_TIMEOUT))
        .expect("setting a timeout");
    stream
        .set_write_timeout(Some(HTTP_CLIENT_TIMEOUT))
        .expect("setting a timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra_headers}\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .unwrap_or_else(|err| panic!("cannot send the request to {addr}: {err}"));
    let mut writer = stream.try_clone().expect("cloning the connection");
    let sending = thread::spawn(move || {
        // The server may answer (and close) before reading all of it.
        let _ = writer.write_all(&body).and_then(|()| writer.flush());
    });
    let mut response = Vec::new();
    if let Err(err) = stream.read_to_end(&mut response) {
        // A server that closes with unread request bytes resets the
        // connection; what arrived before the reset is the response.
        if response.is_empty() {
            panic!("no response from {addr}: {err}");
        }
    }
    let _ = sending.join();
    parse_http_response(&response)
}

fn parse_http_response(response: &[u8]) -> HttpReply {
    let end_of_head = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no end of headers in {:?}",
                String::from_utf8_lossy(response)
            )
        });
    let head = std::str::from_utf8(&response[..end_of_head]).expect("the response head is text");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("a status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {line:?}"));
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    let mut reply = HttpReply {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &response[end_of_head + 4..];
    reply.body = if reply
        .header("transfer-encoding")
        .is_some_and(|coding| coding.eq_ignore_ascii_case("chunked"))
    {
        dechunk(rest)
    } else if let Some(length) = reply.header("content-length") {
        let length: usize = length.parse().expect("a numeric content-length");
        assert!(
            rest.len() >= length,
            "the body is shorter than its content-length"
        );
        rest[..length].to_vec()
    } else {
        rest.to_vec()
    };
    reply
}

/// Removes the chunked transfer coding (trailers are ignored).
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|window| window == b"\r\n")
            .expect("a chunk size line");
        let size_text = std::str::from_utf8(&data[..line_end]).expect("a text chunk size");
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        data = &data[line_end + 2..];
        if size == 0 {
            return body;
        }
        assert!(data.len() >= size + 2, "a truncated chunk");
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// How long a fresh `redis-server` may take to answer, on a loaded machine.
const REDIS_START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` of its own for one test: on a free 127.0.0.1 port, with
/// no persistence, working in a temporary directory. Killed on drop.
///
/// Warden reaches Redis by `redis://` URL only, so the server listens on
/// TCP, and a free port can only be probed, then bound by the server: in
/// between, another test's server may take it. Then this server exits, and
/// the one answering on the port is the other's; so a server is used only
/// once it answers with its own process id, else a fresh port is tried.
pub struct RedisServer {
    /// `redis://127.0.0.1:PORT/0`.
    pub url: String,
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts the server and waits until it answers on its port.
    ///
    /// # Panics
    ///
    /// If `redis-server` is not installed (`make setup` installs it), or if
    /// it does not answer within ten seconds on any of five ports.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for redis-server");
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free test port")
                .port();
            let mut child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|err| {
                    panic!("cannot start redis-server ({err}); run `make setup` to install it")
                });
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let started = Instant::now();
            while started.elapsed() < REDIS_START_TIMEOUT {
                if redis_process_id(addr) == Some(child.id()) {
                    return RedisServer {
                        url: format!("redis://{addr}/0"),
                        addr,
                        child,
                        _dir: dir,
                    };
                }
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start answering on 127.0.0.1");
    }
}

impl RedisServer {
    /// Closes every client's connection, as a restarting server or an idle
    /// timeout would.
    ///
    /// # Panics
    ///
    /// If the server does not answer.
    pub fn close_client_connections(&self) {
        let mut stream = TcpStream::connect(self.addr).expect("connecting to redis");
        stream
            .write_all(b"CLIENT KILL TYPE normal\r\n")
            .expect("sending CLIENT KILL");
        let mut reply = String::new();
        BufReader::new(stream)
            .read_line(&mut reply)
            .expect("the reply to CLIENT KILL");
        assert!(reply.starts_with(':'), "CLIENT KILL answered {reply:?}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The process id of the Redis server answering at `addr` (the
/// `process_id` field of `INFO server`), or `None` when none answers yet.
fn redis_process_id(addr: SocketAddr) -> Option<u32> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream.write_all(b"INFO server\r\n").ok()?;
    let mut reader = BufReader::new(stream);
    // A bulk string: `$LENGTH`, then that many bytes of `field:value` lines.
    let mut header = String::new();
    reader.read_line(&mut header).ok()?;
    let length: usize = header.strip_prefix('$')?.trim_end().parse().ok()?;
    let mut info = vec![0; length];
    reader.read_exact(&mut info).ok()?;
    String::from_utf8_lossy(&info)
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))?
        .parse()
        .ok()
}

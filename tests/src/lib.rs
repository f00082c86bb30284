//! Shared support for Warden's integration tests: the paths of the guest
//! components (built by `build.rs`) and small local servers for the
//! capability tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

pub mod fuzz;

/// Paths of the guest components built from `guests/`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
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
    let mut module = wat::parse_file(root.join("fixtures/malformed-abi.wat"))
        .expect("the malformed-abi fixture parses");
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_dir(root.join("../wit"))
        .expect("Warden's WIT package parses");
    let world = resolve
        .select_world(&[package], Some("plugin"))
        .expect("Warden's WIT package has the plugin world");
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
        .expect("the fixture wraps into a component")
}

/// The body of `GET /` on [`HttpServer`].
pub const HTTP_GREETING: &str = "hello from the test server";
/// The size of `GET /big` on [`HttpServer`].
pub const HTTP_BIG_BODY: usize = 256 << 10;

/// An HTTP/1.1 server on 127.0.0.1 for the tests: `GET /` answers
/// [`HTTP_GREETING`], `GET /big` answers [`HTTP_BIG_BODY`] bytes, `GET /slow`
/// answers after five seconds, anything else 404. It serves until the test
/// process ends.
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
                        "/" | "/slow" => ("200 OK", HTTP_GREETING.as_bytes().to_vec()),
                        "/big" => ("200 OK", vec![b'b'; HTTP_BIG_BODY]),
                        _ => ("404 Not Found", b"not found".to_vec()),
                    };
                    let mut stream = &stream;
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
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

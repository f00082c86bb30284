//! A plugin that uses each capability on request, so that tests can check
//! what happens when it is granted and when it is not.
//!
//! Actions and their input:
//! - `http-get URL`: the response body (an error names the `wasi:http` error
//!   code, and how much of the body had arrived when reading it failed);
//! - `kv-set KEY=VALUE`, `kv-get KEY`, `kv-delete KEY`, `kv-incr KEY`,
//!   `kv-list`, `kv-set-many K1=V1,K2=V2`: the `default` bucket, or
//!   `BUCKET/KEY` for another one;
//! - `kv-set-many-then-panic K1=V1,…`: writes the pairs in one batch, then
//!   panics;
//! - `kv-batches N`: writes N batches of 100 keys each (`bBATCH-KEY`, the
//!   value is the batch number), one `set-many` per batch;
//! - `kv-batch COUNT`: writes COUNT small pairs to the `default` bucket in
//!   one `wasi:keyvalue/batch` call;
//! - `config-get KEY`, `config-all`;
//! - `config-keys BYTES`: looks up five `wasi:config` keys of BYTES bytes
//!   each (denied without a grant; each denial quotes the key);
//! - `tcp-echo HOST:PORT`: connects, sends `ping`, returns what comes back;
//! - `udp-send HOST:PORT`: sends one datagram;
//! - `tcp-sockets N`, `udp-sockets N`: tries to create N sockets, holding
//!   every one it gets until the call ends; answers `created C, failed F`,
//!   followed by ` (first: ERROR-CODE)` when some failed;
//! - `udp-streams N`: binds N UDP sockets to loopback, keeps each one's
//!   datagram streams and drops the socket (which wasmtime-wasi refuses
//!   while the streams live); answers `kept K`, followed by
//!   ` (first failure: ERROR-CODE)` when some failed;
//! - `tcp-listen IPV4:PORT`: binds and listens there, accepts one
//!   connection and writes `pong` to it; answers `accepted`;
//! - `resolve NAME`: the addresses the name resolves to;
//! - `env NAME`;
//! - `clock`: the wall clock (seconds) and two monotonic readings;
//! - `random N`: N random bytes, as hex (for N ≤ 64; for more, how many arrived);
//! - `timer MS`: reads the monotonic clock, subscribes to a timer due in MS
//!   milliseconds, counts the `ready` checks that say no, blocks on it, and
//!   reads the clock again: `BEFORE AFTER CHECKS`;
//! - `nap MS`: sleeps MS milliseconds between two readings: `BEFORE AFTER`;
//! - `poll-timers MS1,MS2`: polls two timers at once: the indices `poll`
//!   returned, then the monotonic clock.

wit_bindgen::generate!({
    path: "../../wit",
    world: "warden:plugin/plugin",
    generate_all,
});

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};

use exports::warden::plugin::guest::Guest;
use warden::plugin::types::{Metadata, PluginError};
use wasi::clocks::monotonic_clock;
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, FutureIncomingResponse, OutgoingBody, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;
use wasi::keyvalue::{atomics, batch, store};

const ACTIONS: &[&str] = &[
    "http-get",
    "kv-set",
    "kv-get",
    "kv-delete",
    "kv-incr",
    "kv-list",
    "kv-set-many",
    "kv-set-many-then-panic",
    "kv-batches",
    "kv-batch",
    "config-get",
    "config-all",
    "config-keys",
    "tcp-echo",
    "udp-send",
    "tcp-sockets",
    "udp-sockets",
    "tcp-listen",
    "udp-streams",
    "resolve",
    "env",
    "clock",
    "random",
    "timer",
    "nap",
    "poll-timers",
    "http-hold",
];

struct Probe;

impl Guest for Probe {
    fn init() -> Result<Metadata, PluginError> {
        Ok(Metadata {
            name: "probe".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Uses each capability on request".into(),
            actions: ACTIONS.iter().map(|action| action.to_string()).collect(),
        })
    }

    fn execute(action: String, input: Vec<u8>) -> Result<Vec<u8>, PluginError> {
        let input =
            String::from_utf8(input).map_err(|err| PluginError::InvalidInput(err.to_string()))?;
        let text = match action.as_str() {
            "http-get" => return http_get(&input).map_err(PluginError::Failed),
            "http-hold" => {
                let (count, url) = split(&input, ' ')?;
                let count = count
                    .parse()
                    .map_err(|_| PluginError::InvalidInput(format!("`{count}` is not a count")))?;
                return http_hold(url, count).map_err(PluginError::Failed);
            }
            "kv-set" => {
                let (place, value) = split(&input, '=')?;
                let (bucket, key) = open(place)?;
                bucket.set(key, value.as_bytes()).map_err(kv_error)?;
                "ok".to_owned()
            }
            "kv-get" => {
                let (bucket, key) = open(&input)?;
                return bucket
                    .get(key)
                    .map_err(kv_error)?
                    .ok_or_else(|| PluginError::Failed(format!("no key {key}")));
            }
            "kv-delete" => {
                let (bucket, key) = open(&input)?;
                bucket.delete(key).map_err(kv_error)?;
                "ok".to_owned()
            }
            "kv-incr" => {
                let (bucket, key) = open(&input)?;
                atomics::increment(&bucket, key, 1)
                    .map_err(kv_error)?
                    .to_string()
            }
            "kv-list" => {
                let (bucket, _) = open(&format!("{input}/"))?;
                let mut keys = Vec::new();
                let mut cursor = None;
                loop {
                    let page = bucket.list_keys(cursor).map_err(kv_error)?;
                    keys.extend(page.keys);
                    match page.cursor {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
                keys.join(",")
            }
            "kv-set-many" => {
                set_many(&input)?;
                "ok".to_owned()
            }
            "kv-set-many-then-panic" => {
                set_many(&input)?;
                panic!("the probe panics after a batch on purpose");
            }
            "kv-batches" => {
                let count: u32 = input
                    .trim()
                    .parse()
                    .map_err(|err| PluginError::InvalidInput(format!("{err}")))?;
                let (bucket, _) = open("default/")?;
                for batch in 0..count {
                    let pairs: Vec<(String, Vec<u8>)> = (0..100)
                        .map(|key| {
                            (
                                format!("b{batch:06}-{key:02}"),
                                batch.to_string().into_bytes(),
                            )
                        })
                        .collect();
                    batch::set_many(&bucket, &pairs).map_err(kv_error)?;
                }
                "ok".to_owned()
            }
            "kv-batch" => {
                let pairs: Vec<(String, Vec<u8>)> = (0..input.parse().map_err(failed)?)
                    .map(|index: usize| (format!("k{index:08}"), b"v".to_vec()))
                    .collect();
                let bucket = store::open("default").map_err(kv_error)?;
                batch::set_many(&bucket, &pairs).map_err(kv_error)?;
                "written".to_owned()
            }
            "config-get" => wasi::config::store::get(&input)
                .map_err(config_error)?
                .ok_or_else(|| PluginError::Failed(format!("no config value {input}")))?,
            "config-all" => wasi::config::store::get_all()
                .map_err(config_error)?
                .into_iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>()
                .join(","),
            "config-keys" => {
                let key = "k".repeat(input.parse().map_err(failed)?);
                for _ in 0..5 {
                    // Refused without a grant; the result is not the point.
                    let _ = wasi::config::store::get(&key);
                }
                "looked up".to_owned()
            }
            "tcp-echo" => tcp_echo(&input).map_err(failed)?,
            "udp-send" => {
                let socket = UdpSocket::bind("0.0.0.0:0").map_err(failed)?;
                socket.send_to(b"ping", &input).map_err(failed)?;
                "sent".to_owned()
            }
            "tcp-sockets" | "udp-sockets" => create_sockets(&action, &input)?,
            "tcp-listen" => tcp_listen(&input).map_err(PluginError::Failed)?,
            "udp-streams" => udp_streams(&input)?,
            "resolve" => (input.as_str(), 0)
                .to_socket_addrs()
                .map_err(failed)?
                .map(|addr| addr.ip().to_string())
                .collect::<Vec<_>>()
                .join(","),
            "env" => std::env::var(&input).map_err(failed)?,
            "clock" => {
                let wall = wasi::clocks::wall_clock::now();
                let first = wasi::clocks::monotonic_clock::now();
                let second = wasi::clocks::monotonic_clock::now();
                format!("{} {first} {second}", wall.seconds)
            }
            "random" => {
                let count = input
                    .parse()
                    .map_err(|_| PluginError::InvalidInput("expected a byte count".into()))?;
                let bytes = wasi::random::random::get_random_bytes(count);
                if count > 64 {
                    bytes.len().to_string()
                } else {
                    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
                }
            }
            "timer" => {
                let millis: u64 = number(&input)?;
                let before = monotonic_clock::now();
                let timer = monotonic_clock::subscribe_duration(millis * 1_000_000);
                let mut checks = 0u64;
                while !timer.ready() && checks < MAX_READY_CHECKS {
                    checks += 1;
                }
                timer.block();
                let after = monotonic_clock::now();
                format!("{before} {after} {checks}")
            }
            "nap" => {
                let millis: u64 = number(&input)?;
                let before = monotonic_clock::now();
                std::thread::sleep(std::time::Duration::from_millis(millis));
                let after = monotonic_clock::now();
                format!("{before} {after}")
            }
            "poll-timers" => {
                let (first, second) = split(&input, ',')?;
                let first = monotonic_clock::subscribe_duration(number(first)? * 1_000_000);
                let second = monotonic_clock::subscribe_duration(number(second)? * 1_000_000);
                let ready = wasi::io::poll::poll(&[&first, &second]);
                format!("{ready:?} {}", monotonic_clock::now())
            }
            _ => return Err(PluginError::UnknownAction(action)),
        };
        Ok(text.into_bytes())
    }
}

/// `ready` checks the `timer` action makes at most, so that it ends even
/// on a host whose timers never fire.
const MAX_READY_CHECKS: u64 = 100_000_000;

fn number(text: &str) -> Result<u64, PluginError> {
    text.trim()
        .parse()
        .map_err(|err| PluginError::InvalidInput(format!("expected a number: {err}")))
}

fn failed(err: impl std::fmt::Display) -> PluginError {
    PluginError::Failed(err.to_string())
}

/// The configuration store's error as a person reads it.
fn config_error(err: wasi::config::store::Error) -> PluginError {
    PluginError::Failed(match err {
        wasi::config::store::Error::Upstream(reason) => format!("config: {reason}"),
        wasi::config::store::Error::Io(reason) => format!("config: {reason}"),
    })
}

/// The store's error as a person reads it, the way a plugin should report it.
fn kv_error(err: store::Error) -> PluginError {
    PluginError::Failed(match err {
        store::Error::NoSuchStore => "kv: no such store".to_owned(),
        store::Error::AccessDenied => "kv: access denied".to_owned(),
        store::Error::Other(reason) => format!("kv: {reason}"),
    })
}

fn split(text: &str, separator: char) -> Result<(&str, &str), PluginError> {
    text.split_once(separator)
        .ok_or_else(|| PluginError::InvalidInput(format!("expected `{separator}` in `{text}`")))
}

/// Opens the bucket of `BUCKET/KEY`, or `default` for a bare key.
fn open(place: &str) -> Result<(store::Bucket, &str), PluginError> {
    let (bucket, key) = place.split_once('/').unwrap_or(("default", place));
    let bucket = if bucket.is_empty() { "default" } else { bucket };
    Ok((store::open(bucket).map_err(kv_error)?, key))
}

fn tcp_echo(address: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(address)?;
    stream.write_all(b"ping")?;
    let mut reply = [0u8; 64];
    let read = stream.read(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply[..read]).into_owned())
}

/// Creates up to `count` sockets of the action's protocol, holding them all
/// until it returns.
fn create_sockets(action: &str, count: &str) -> Result<String, PluginError> {
    use wasi::sockets::network::{ErrorCode, IpAddressFamily};
    use wasi::sockets::{tcp_create_socket, udp_create_socket};
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| PluginError::InvalidInput("expected a socket count".into()))?;
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    let mut failed = 0;
    let mut first_error: Option<ErrorCode> = None;
    for _ in 0..count {
        let created = if action == "tcp-sockets" {
            tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4)
                .map(|socket| tcp.push(socket))
        } else {
            udp_create_socket::create_udp_socket(IpAddressFamily::Ipv4)
                .map(|socket| udp.push(socket))
        };
        if let Err(code) = created {
            failed += 1;
            first_error.get_or_insert(code);
        }
    }
    let mut answer = format!("created {}, failed {failed}", tcp.len() + udp.len());
    if let Some(code) = first_error {
        answer.push_str(&format!(" (first: {})", code.name()));
    }
    Ok(answer)
}

/// Binds COUNT UDP sockets to loopback, keeps each one's datagram streams
/// and drops the socket itself, which the streams keep open.
fn udp_streams(count: &str) -> Result<String, PluginError> {
    use wasi::sockets::instance_network::instance_network;
    use wasi::sockets::network::{IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};
    use wasi::sockets::udp_create_socket::create_udp_socket;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| PluginError::InvalidInput("expected a socket count".into()))?;
    let loopback = IpSocketAddress::Ipv4(Ipv4SocketAddress {
        port: 0,
        address: (127, 0, 0, 1),
    });
    let mut kept = Vec::new();
    let mut first_error = None;
    for _ in 0..count {
        let streams = create_udp_socket(IpAddressFamily::Ipv4).and_then(|socket| {
            let ready = socket.subscribe();
            socket.start_bind(&instance_network(), loopback)?;
            ready.block();
            socket.finish_bind()?;
            socket.stream(None)
        });
        match streams {
            Ok(streams) => kept.push(streams),
            Err(code) => {
                first_error.get_or_insert(code);
            }
        }
    }
    let mut answer = format!("kept {}", kept.len());
    if let Some(code) = first_error {
        answer.push_str(&format!(" (first failure: {})", code.name()));
    }
    Ok(answer)
}

/// Listens on `address`, accepts one connection and answers it `pong`.
fn tcp_listen(address: &str) -> Result<String, String> {
    use wasi::sockets::instance_network::instance_network;
    use wasi::sockets::network::{ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};
    use wasi::sockets::tcp_create_socket::create_tcp_socket;
    let address: std::net::SocketAddrV4 = address.parse().map_err(|_| "expected IPV4:PORT")?;
    let name = |code: ErrorCode| code.name().to_owned();
    let [a, b, c, d] = address.ip().octets();
    let local = IpSocketAddress::Ipv4(Ipv4SocketAddress {
        port: address.port(),
        address: (a, b, c, d),
    });
    let socket = create_tcp_socket(IpAddressFamily::Ipv4).map_err(name)?;
    let ready = socket.subscribe();
    socket
        .start_bind(&instance_network(), local)
        .map_err(name)?;
    ready.block();
    socket.finish_bind().map_err(name)?;
    socket.start_listen().map_err(name)?;
    ready.block();
    socket.finish_listen().map_err(name)?;
    let (client, input, output) = loop {
        match socket.accept() {
            Ok(accepted) => break accepted,
            Err(ErrorCode::WouldBlock) => ready.block(),
            Err(code) => return Err(name(code)),
        }
    };
    output
        .blocking_write_and_flush(b"pong")
        .map_err(|err| format!("{err:?}"))?;
    drop((input, output, client));
    Ok("accepted".to_owned())
}

/// Writes `K1=V1,K2=V2` to the default bucket in one batch.
fn set_many(input: &str) -> Result<(), PluginError> {
    let (bucket, _) = open("default/")?;
    let pairs = input
        .split(',')
        .map(|pair| split(pair, '=').map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec())))
        .collect::<Result<Vec<_>, _>>()?;
    batch::set_many(&bucket, &pairs).map_err(kv_error)
}

fn http_get(url: &str) -> Result<Vec<u8>, String> {
    let response = start_get(url)?;
    let response = loop {
        match response.get() {
            Some(result) => {
                break result
                    .map_err(|()| "response taken twice")?
                    .map_err(|code| format!("{code:?}"))?;
            }
            None => response.subscribe().block(),
        }
    };
    let body = response.consume().map_err(|()| "no response body")?;
    let stream = body.stream().map_err(|()| "no response stream")?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => bytes.extend(chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(err)) => {
                let code = wasi::http::types::http_error_code(&err);
                return Err(format!(
                    "{code:?} after {} bytes of the body: {}",
                    bytes.len(),
                    err.to_debug_string()
                ));
            }
        }
    }
    Ok(bytes)
}

/// Sends `count` GET requests to `url` at once and holds them all; once
/// every one is answered, fails with the error of the first that failed.
fn http_hold(url: &str, count: usize) -> Result<Vec<u8>, String> {
    let held = (0..count)
        .map(|_| start_get(url))
        .collect::<Result<Vec<_>, _>>()?;
    for response in &held {
        response.subscribe().block();
    }
    for (index, response) in held.iter().enumerate() {
        if let Some(Ok(Err(code))) = response.get() {
            return Err(format!("request {index}: {code:?}"));
        }
    }
    Ok(format!("held {count} requests").into_bytes())
}

/// Sends a GET request to `url` with an empty body.
fn start_get(url: &str) -> Result<FutureIncomingResponse, String> {
    let (scheme, rest) = url.split_once("://").ok_or("expected scheme://host/path")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let request = OutgoingRequest::new(Fields::new());
    let scheme = if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| "bad scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "bad authority")?;
    let path = if path.is_empty() { "/" } else { path };
    request
        .set_path_with_query(Some(path))
        .map_err(|()| "bad path")?;
    let body = request.body().map_err(|()| "no request body")?;
    let response = outgoing_handler::handle(request, None).map_err(|code| format!("{code:?}"))?;
    OutgoingBody::finish(body, None).map_err(|code| format!("{code:?}"))?;
    Ok(response)
}

export!(Probe);

// Over 400 lines: the grant, its origin patterns, the address checks and the
// connector are one policy, best read together.
//! The `http` capability: `wasi:http/outgoing-handler`, through
//! wasmtime-wasi-http, to the origins in [`HttpGrant::allow`]
//! (`--allow-http ORIGIN`).
//!
//! A request to any other origin fails with `HTTP-request-denied` and is
//! recorded as a denial. Allowed requests are bounded by the grant's connect
//! timeout, total timeout and response-size cap (as well as by the call's own
//! timeout).
//!
//! Origins match names, and DNS is not trusted: a name under a wildcard
//! grant could resolve to the host itself or its private network. So the
//! host resolves the name, refuses (and records as a denial) every address
//! that is loopback, private, link-local, unspecified, broadcast or multicast
//! unless the matching grant names that address, or `localhost`, explicitly,
//! and connects to the address it checked: nothing is resolved twice.

use std::fmt;
use std::future::{Future, poll_fn};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::{Pin, pin};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use wasmtime::component::Linker;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpHooks,
};

use super::sockets::ConnectionSlots;
use super::{Capability, DenialLog, InstanceSetup, Risk};
use crate::error::Error;
use crate::grants::Sandbox;
use crate::host_memory::{HttpAllowance, truncate_record_text};
use crate::state::HostState;
use crate::units::ParseError;

/// The `http` capability.
pub(crate) struct Http;

impl Capability for Http {
    const NAME: &'static str = "http";
    const INTERFACES: &'static [&'static str] = &["wasi:http/types", "wasi:http/outgoing-handler"];
    const HOW_TO_GRANT: &'static str = "--allow-http ORIGIN";
    type Shared = Arc<HttpGrant>;
    type State = HttpState;

    fn risk(_: &Sandbox) -> Risk {
        Risk::High
    }

    fn granted(sandbox: &Sandbox) -> bool {
        !sandbox.grants.http.allow.is_empty()
    }

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
    }

    fn prepare(_: &str, sandbox: &Sandbox) -> Result<Arc<HttpGrant>, Error> {
        Ok(Arc::new(sandbox.grants.http.clone()))
    }

    fn instantiate(grant: &Arc<HttpGrant>, setup: &mut InstanceSetup<'_>) -> HttpState {
        HttpState {
            ctx: WasiHttpCtx::new(),
            hooks: HttpHooks {
                grant: grant.clone(),
                denials: setup.denials.clone(),
                over_budget: false,
                connections: setup.sockets.clone(),
            },
        }
    }
}

/// Outgoing HTTP a plugin may make, and the bounds on each request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpGrant {
    /// Origins the plugin may send requests to. Default: none.
    pub allow: Vec<OriginPattern>,
    /// Largest response body accepted; a bigger one fails the body stream
    /// with `HTTP-response-body-size`. Default: 16 MiB.
    pub max_response_bytes: u64,
    /// Longest wait for a connection. Default: 10 s.
    pub connect_timeout: Duration,
    /// Longest time from sending a request to the end of its response body.
    /// Default: 30 s.
    pub total_timeout: Duration,
}

impl HttpGrant {
    /// Default for [`HttpGrant::max_response_bytes`].
    pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 << 20;
    /// Default for [`HttpGrant::connect_timeout`].
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default for [`HttpGrant::total_timeout`].
    pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(30);
}

impl Default for HttpGrant {
    fn default() -> Self {
        HttpGrant {
            allow: Vec::new(),
            max_response_bytes: Self::DEFAULT_MAX_RESPONSE_BYTES,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            total_timeout: Self::DEFAULT_TOTAL_TIMEOUT,
        }
    }
}

/// An origin a plugin may send HTTP requests to: `scheme://host[:port]`.
///
/// The scheme is `http` or `https`. The host is a name or address, `*.`
/// followed by a domain (any subdomain of it, not the domain itself), or `*`
/// (any host). Without a port the scheme's default port is meant; `:*`
/// allows any port.
///
/// ```
/// let origin: warden::OriginPattern = "https://*.example.com".parse()?;
/// assert!(origin.matches("https", "api.example.com", 443));
/// assert!(!origin.matches("https", "example.com", 443));
/// assert!(!origin.matches("http", "api.example.com", 80));
/// # Ok::<(), warden::units::ParseError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginPattern {
    https: bool,
    host: HostMatch,
    port: PortMatch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortMatch {
    /// The scheme's default port.
    Default,
    Exact(u16),
    Any,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostMatch {
    Any,
    Exact(String),
    SubdomainOf(String),
}

impl OriginPattern {
    /// Whether a request to `scheme://host:port` is allowed.
    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_matches = match scheme.to_ascii_lowercase().as_str() {
            "https" => self.https,
            "http" => !self.https,
            _ => false,
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host_matches = match &self.host {
            HostMatch::Any => true,
            HostMatch::Exact(allowed) => *allowed == host,
            HostMatch::SubdomainOf(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|prefix| !prefix.is_empty()),
        };
        let port_matches = match self.port {
            PortMatch::Default => port == if self.https { 443 } else { 80 },
            PortMatch::Exact(allowed) => allowed == port,
            PortMatch::Any => true,
        };
        scheme_matches && host_matches && port_matches
    }

    /// Whether the pattern names one host by its address, or `localhost`:
    /// only such a grant lets a request reach a loopback, private or
    /// link-local address.
    fn names_address(&self) -> bool {
        match &self.host {
            HostMatch::Exact(host) => host == "localhost" || host.parse::<IpAddr>().is_ok(),
            HostMatch::Any | HostMatch::SubdomainOf(_) => false,
        }
    }
}

impl FromStr for OriginPattern {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        let invalid = |why: &str| {
            ParseError::new(format!(
                "invalid HTTP origin `{text}`: {why}; expected scheme://host[:port] such as https://api.example.com, https://*.example.com or http://127.0.0.1:8080"
            ))
        };
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| invalid("missing `scheme://`"))?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            _ => return Err(invalid("the scheme must be http or https")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('@') {
            return Err(invalid("an origin has no path, query or user"));
        }
        let (host, port) = split_host_port(rest).ok_or_else(|| invalid("bad host or port"))?;
        let port = match port {
            None => PortMatch::Default,
            Some("*") => PortMatch::Any,
            Some(port) => match port.parse::<u16>() {
                Ok(0) | Err(_) => return Err(invalid("the port must be 1-65535 or *")),
                Ok(port) => PortMatch::Exact(port),
            },
        };
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostMatch::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') {
                return Err(invalid("a wildcard must be `*` or `*.domain`"));
            }
            HostMatch::SubdomainOf(format!(".{domain}"))
        } else if host.is_empty() || host.contains('*') {
            return Err(invalid("a wildcard must be `*` or `*.domain`"));
        } else {
            HostMatch::Exact(host)
        };
        Ok(OriginPattern { https, host, port })
    }
}

/// Splits `host[:port]`, keeping IPv6 literals (`[::1]:8080`) whole.
fn split_host_port(text: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            after => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match text.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((text, None)),
    }
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", if self.https { "https" } else { "http" })?;
        match &self.host {
            HostMatch::Any => write!(f, "*")?,
            HostMatch::Exact(host) if host.contains(':') => write!(f, "[{host}]")?,
            HostMatch::Exact(host) => write!(f, "{host}")?,
            HostMatch::SubdomainOf(domain) => write!(f, "*{domain}")?,
        }
        match self.port {
            PortMatch::Default => Ok(()),
            PortMatch::Exact(port) => write!(f, ":{port}"),
            PortMatch::Any => write!(f, ":*"),
        }
    }
}

/// The most one write to an outgoing body (request or response) may carry.
/// 64 KiB rather than wasmtime-wasi-http's 1 MiB: a body whose request is
/// never sent keeps what was written to it, and the host-memory budget
/// counts each such body at the most it can hold.
pub(crate) const OUTGOING_BODY_CHUNK_BYTES: usize = 64 << 10;

/// Writes an outgoing body buffers before the guest must wait for them to be
/// sent: wasmtime-wasi-http's default of one.
const OUTGOING_BODY_BUFFER_CHUNKS: usize = 1;

/// The most an outgoing body that nobody reads holds: wasmtime-wasi-http's
/// channel keeps one slot more than the chunks it buffers, each of at most
/// [`OUTGOING_BODY_CHUNK_BYTES`].
pub(crate) const OUTGOING_BODY_BUFFER_BYTES: usize =
    (OUTGOING_BODY_BUFFER_CHUNKS + 1) * OUTGOING_BODY_CHUNK_BYTES;

/// The HTTP state of one instance: wasmtime-wasi-http's context and the
/// hooks that enforce the grant.
pub(crate) struct HttpState {
    pub ctx: WasiHttpCtx,
    pub hooks: HttpHooks,
}

impl HttpState {
    /// Applies what the instance's host-memory budget allows the next call
    /// to build: the size of new header maps, and whether any header may be
    /// added at all.
    pub(crate) fn allow(&mut self, allowance: HttpAllowance) {
        self.ctx.set_field_size_limit(allowance.field_bytes);
        self.hooks.over_budget = allowance.refusal.is_some();
    }
}

pub(crate) struct HttpHooks {
    grant: Arc<HttpGrant>,
    denials: DenialLog,
    /// Set while the instance's host-memory budget has no room: every header
    /// is refused (as forbidden), so that no header map grows.
    over_budget: bool,
    /// Each request's connection holds one of the instance's sockets
    /// ([`Limits::sockets`](crate::Limits::sockets)) until it ends.
    connections: ConnectionSlots,
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

/// Where an allowed request goes.
struct Destination {
    host: String,
    port: u16,
    tls: bool,
    /// Whether a grant that matches names this host by its address (or
    /// `localhost`), so that it may resolve to an internal address.
    internal_granted: bool,
}

impl HttpHooks {
    /// Where the request goes, if some origin of the grant allows it.
    fn destination(&self, uri: &http::Uri) -> Option<Destination> {
        let host = uri.host()?;
        let scheme = uri.scheme_str().unwrap_or("https");
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tls = !scheme.eq_ignore_ascii_case("http");
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let mut matching = self
            .grant
            .allow
            .iter()
            .filter(|origin| origin.matches(scheme, host, port))
            .peekable();
        matching.peek()?;
        Some(Destination {
            host: host.to_owned(),
            port,
            tls,
            internal_granted: matching.any(OriginPattern::names_address),
        })
    }
}

impl Destination {
    /// Resolves the host and keeps the addresses the grant allows, in the
    /// resolver's order. Refusing internal addresses records a denial.
    async fn addresses(
        &self,
        what: &str,
        denials: &DenialLog,
    ) -> Result<Vec<SocketAddr>, HttpError> {
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|_| HttpError::DnsError {
                rcode: None,
                info_code: None,
            })?
            .collect();
        if self.internal_granted {
            return Ok(resolved);
        }
        let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
            .into_iter()
            .partition(|addr| !is_internal(addr.ip()));
        if allowed.is_empty()
            && let Some(refused) = refused.first()
        {
            denials.record(
                "http",
                format!(
                    "{what} resolves to {}, an internal address (loopback, private or \
                     link-local) that the grant does not name; grant it by address to allow it",
                    refused.ip()
                ),
            );
            return Err(HttpError::HttpRequestDenied);
        }
        Ok(allowed)
    }
}

/// Whether an address belongs to the host itself or a network behind it, or
/// is not a destination at all: what a name from outside must never lead to.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [first, second, ..] = ip.octets();
            ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_broadcast()
                || ip.is_multicast()
                // 0.0.0.0/8 ("this network") reaches the host itself.
                || first == 0
                // 100.64.0.0/10, carrier-grade NAT's shared space.
                || (first == 100 && (second & 0xc0) == 64)
        }
        IpAddr::V6(ip) => match embedded_ipv4(ip) {
            Some(embedded) => is_internal(IpAddr::V4(embedded)),
            None => {
                let [first, second, ..] = ip.segments();
                ip.is_loopback()
                    || ip.is_unspecified()
                    || ip.is_multicast()
                    // fc00::/7, unique local addresses.
                    || (first & 0xfe00) == 0xfc00
                    // fe80::/10, link-local.
                    || (first & 0xffc0) == 0xfe80
                    // fec0::/10, the deprecated site-local addresses.
                    || (first & 0xffc0) == 0xfec0
                    // 64:ff9b:1::/48, NAT64 prefixes of a local network's
                    // own choosing (RFC 8215), translated to its addresses.
                    || (first == 0x64 && second == 0xff9b && ip.segments()[2] == 1)
            }
        },
    }
}

/// The IPv4 address an IPv6 address stands for, where the IPv6 address is
/// one that a host or its network delivers to that IPv4 address:
/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), the
/// well-known NAT64 prefix (`64:ff9b::a.b.c.d`, RFC 6052) and 6to4
/// (`2002:aabb:ccdd::/48`, RFC 3056). Each must be judged by its IPv4
/// address, or `64:ff9b::7f00:1` would reach 127.0.0.1 through a NAT64
/// gateway while passing as a public IPv6 address.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = ip.segments();
    let octets = ip.octets();
    let low32 = || Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    match segments {
        // `to_ipv4` covers both ::ffff:0:0/96 and ::/96; `::` and `::1` are
        // judged as IPv6 (unspecified and loopback).
        [0, 0, 0, 0, 0, 0 | 0xffff, ..] if !ip.is_unspecified() && !ip.is_loopback() => {
            ip.to_ipv4()
        }
        [0x64, 0xff9b, 0, 0, 0, 0, ..] => Some(low32()),
        [0x2002, ..] => Some(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5])),
        _ => None,
    }
}

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        let what = format!(
            "{} {}",
            truncate_record_text(request.method().as_str()),
            truncate_record_text(&request.uri().to_string())
        );
        let Some(destination) = self.destination(request.uri()) else {
            self.denials
                .record("http", format!("{what} is not an allowed origin"));
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        };
        // Without this, a guest holding unread responses would hold as many
        // connections, and descriptors, as its resource table has room for.
        let Some(slot) = self.connections.take() else {
            return Box::new(async { Err(HttpError::ConnectionLimitReached) });
        };
        let grant = self.grant.clone();
        let denials = self.denials.clone();
        let options = bounded_options(options, &grant);
        Box::new(async move {
            let deadline = Instant::now() + grant.total_timeout;
            let sent = tokio::time::timeout_at(deadline, async {
                let addresses = destination.addresses(&what, &denials).await?;
                send(request, &destination, &addresses, &options).await
            })
            .await
            .map_err(|_elapsed| HttpError::HttpResponseTimeout)?;
            let (response, connection) = sent?;
            let between_bytes = options.between_bytes_timeout.unwrap_or(grant.total_timeout);
            let response = response.map(|body| {
                BoundedBody {
                    inner: body,
                    remaining: grant.max_response_bytes,
                    limit: grant.max_response_bytes,
                    deadline: Box::pin(tokio::time::sleep_until(deadline)),
                    between_bytes,
                    idle: Box::pin(tokio::time::sleep(between_bytes)),
                }
                .boxed_unsync()
            });
            // The socket is the instance's until the connection ends: when
            // the response is read, or dropped with its body.
            let connection: Worker = Box::new(async move {
                let _slot = slot;
                Pin::from(connection).await
            });
            Ok((response, connection))
        })
    }

    fn is_supported_scheme(&mut self, scheme: &Scheme) -> bool {
        *scheme == Scheme::HTTP || *scheme == Scheme::HTTPS
    }

    fn is_forbidden_header(&mut self, name: &http::HeaderName) -> bool {
        self.over_budget || wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
    }

    /// The most one write to an outgoing body may carry, which bounds what
    /// a body nobody reads holds ([`OUTGOING_BODY_BUFFER_BYTES`]). While the
    /// host-memory budget has no room, a new body takes no bytes at all: a
    /// guest that writes to it anyway traps, and the trap is reported as
    /// the budget refusal already recorded.
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        if self.over_budget {
            0
        } else {
            OUTGOING_BODY_CHUNK_BYTES
        }
    }

    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        OUTGOING_BODY_BUFFER_CHUNKS
    }
}

/// A connection's byte stream, plain or TLS.
trait Connection: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Connection for T {}

type Worker = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

/// Sends `request` over a connection to the first of `addresses` that
/// answers (HTTP/1.1, TLS for `https` with the host name as the server
/// name), as wasmtime-wasi-http's default sender does, but to addresses
/// already checked. Returns the response and the future that drives the
/// connection until the body is read.
async fn send(
    mut request: http::Request<WasiBody>,
    destination: &Destination,
    addresses: &[SocketAddr],
    options: &RequestOptions,
) -> Result<(http::Response<WasiBody>, Worker), HttpError> {
    let connect_timeout = options.connect_timeout.unwrap_or(Duration::MAX);
    let first_byte_timeout = options.first_byte_timeout.unwrap_or(Duration::MAX);
    let tcp = tokio::time::timeout(connect_timeout, connect(addresses))
        .await
        .map_err(|_elapsed| HttpError::ConnectionTimeout)??;
    let stream: Box<dyn Connection> = if destination.tls {
        let server_name =
            rustls::pki_types::ServerName::try_from(destination.host.as_str())?.to_owned();
        let tls = tokio::time::timeout(
            connect_timeout,
            tokio_rustls::TlsConnector::from(tls_config()).connect(server_name, tcp),
        )
        .await
        .map_err(|_elapsed| HttpError::ConnectionTimeout)?
        .map_err(HttpError::Tls)?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut sender, connection) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_elapsed| HttpError::ConnectionTimeout)??;
    // The request line carries the path only; the scheme and authority are
    // for proxies (the `host` header names the host).
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;
    // Drive the connection while waiting for the response head; then hand
    // it to the caller, which drives it while the body is read.
    let mut response = pin!(tokio::time::timeout(
        first_byte_timeout,
        sender.send_request(request)
    ));
    let mut connection = Some(connection);
    let response = poll_fn(|cx| {
        if let Poll::Ready(response) = response.as_mut().poll(cx) {
            return Poll::Ready(response);
        }
        if let Some(driving) = connection.as_mut()
            && let Poll::Ready(ended) = Pin::new(driving).poll(cx)
        {
            connection = None;
            if let Err(err) = ended {
                return Poll::Ready(Ok(Err(err)));
            }
            return response.as_mut().poll(cx);
        }
        Poll::Pending
    })
    .await
    .map_err(|_elapsed| HttpError::ConnectionReadTimeout)??;
    let worker = async move {
        match connection {
            Some(connection) => connection.await.map_err(HttpError::from),
            None => Ok(()),
        }
    };
    Ok((
        response.map(|body| body.map_err(HttpError::from).boxed_unsync()),
        Box::new(worker),
    ))
}

/// Connects to the first address that accepts, in order.
async fn connect(addresses: &[SocketAddr]) -> Result<TcpStream, HttpError> {
    let mut last_error = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error.map_or(HttpError::DestinationNotFound, HttpError::Connect))
}

/// TLS as wasmtime-wasi-http's default sender sets it up: the web PKI's
/// roots, no client certificate. Built once.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            Arc::new(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        })
        .clone()
}

/// The guest's request options, with no timeout longer than the grant's.
fn bounded_options(options: Option<RequestOptions>, grant: &HttpGrant) -> RequestOptions {
    let options = options.unwrap_or_default();
    let cap = |requested: Option<Duration>, bound: Duration| {
        Some(requested.map_or(bound, |requested| requested.min(bound)))
    };
    RequestOptions {
        connect_timeout: cap(options.connect_timeout, grant.connect_timeout),
        first_byte_timeout: cap(options.first_byte_timeout, grant.total_timeout),
        between_bytes_timeout: cap(options.between_bytes_timeout, grant.total_timeout),
    }
}

/// A response body that fails once it exceeds the size cap or the deadline,
/// or when no bytes arrive for the between-bytes timeout.
struct BoundedBody {
    inner: WasiBody,
    remaining: u64,
    limit: u64,
    deadline: Pin<Box<Sleep>>,
    between_bytes: Duration,
    idle: Pin<Box<Sleep>>,
}

impl Body for BoundedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(HttpError::HttpResponseTimeout)));
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Pending if self.idle.as_mut().poll(cx).is_ready() => {
                return Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)));
            }
            other => return other,
        };
        let next_idle = Instant::now() + self.between_bytes;
        self.idle.as_mut().reset(next_idle);
        if let Some(data) = frame.data_ref() {
            let size = data.len() as u64;
            if size > self.remaining {
                let limit = self.limit;
                return Poll::Ready(Some(Err(HttpError::HttpResponseBodySize(Some(limit)))));
            }
            self.remaining -= size;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(text: &str) -> OriginPattern {
        text.parse().unwrap()
    }

    #[test]
    fn origins_match_scheme_host_and_port() {
        let exact = origin("http://127.0.0.1:8080");
        assert!(exact.matches("http", "127.0.0.1", 8080));
        assert!(!exact.matches("http", "127.0.0.1", 8081));
        assert!(!exact.matches("https", "127.0.0.1", 8080));

        let default_port = origin("https://api.example.com");
        assert!(default_port.matches("https", "API.example.com", 443));
        assert!(!default_port.matches("https", "api.example.com", 8443));

        let any_port = origin("http://localhost:*");
        assert!(any_port.matches("http", "localhost", 1234));

        let wildcard = origin("https://*.example.com");
        assert!(wildcard.matches("https", "a.b.example.com", 443));
        assert!(!wildcard.matches("https", "example.com", 443));
        assert!(!wildcard.matches("https", "badexample.com", 443));
        assert!(!wildcard.matches("https", "example.com.evil.net", 443));

        assert!(origin("https://*").matches("https", "anything.net", 443));
        assert!(origin("http://[::1]:80").matches("http", "::1", 80));
    }

    #[test]
    fn origins_round_trip_and_reject_nonsense() {
        for text in [
            "https://api.example.com",
            "http://127.0.0.1:8080",
            "https://*.example.com",
            "http://localhost:*",
            "http://[::1]:80",
        ] {
            assert_eq!(origin(text).to_string(), text);
        }
        for bad in [
            "api.example.com",
            "ftp://x.com",
            "https://x.com/path",
            "https://a*.com",
            "https://x.com:0",
            "https://x.com:99999",
            "https://user@x.com",
            "https://",
        ] {
            assert!(bad.parse::<OriginPattern>().is_err(), "{bad}");
        }
    }

    #[test]
    fn internal_addresses_are_told_apart() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "::169.254.169.254",
            "64:ff9b::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "64:ff9b:1::8.8.8.8",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "fec0::1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
        ] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn only_addresses_and_localhost_are_named_explicitly() {
        assert!(origin("http://127.0.0.1:8080").names_address());
        assert!(origin("http://[::1]:8080").names_address());
        assert!(origin("http://localhost:*").names_address());
        assert!(!origin("http://*:8080").names_address());
        assert!(!origin("https://*.example.com").names_address());
        assert!(!origin("https://api.example.com").names_address());
    }

    #[test]
    fn guest_timeouts_are_capped_by_the_grant() {
        let grant = HttpGrant::default();
        let options = bounded_options(
            Some(RequestOptions {
                connect_timeout: Some(Duration::from_secs(3600)),
                first_byte_timeout: Some(Duration::from_millis(5)),
                between_bytes_timeout: None,
            }),
            &grant,
        );
        assert_eq!(options.connect_timeout, Some(grant.connect_timeout));
        assert_eq!(options.first_byte_timeout, Some(Duration::from_millis(5)));
        assert_eq!(options.between_bytes_timeout, Some(grant.total_timeout));
    }
}

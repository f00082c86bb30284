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

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use http_body_util::BodyExt;
use tokio::time::Instant;
use wasmtime::component::Linker;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpHooks,
};

use super::sockets::ConnectionSlots;
use super::{Capability, DenialLog, InstanceSetup, Risk};
use crate::error::Error;
use crate::grants::Sandbox;
use crate::host_memory::{HttpAllowance, truncate_record_text};
use crate::state::HostState;

mod client;
mod origin;

use self::client::{BoundedBody, Worker, bounded_options, send};
pub use self::origin::OriginPattern;

/// The `http` capability.
pub(crate) struct Http;

impl Capability for Http {
    const NAME: &'static str = "http";
    const INTERFACES: &'static [&'static str] = &["wasi:http/types", "wasi:http/outgoing-handler"];
    const HOW_TO_GRANT: &'static str =
        "--allow-http ORIGIN, or `allow_http` in a manifest's [grants]";
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
                BoundedBody::new(body, grant.max_response_bytes, deadline, between_bytes)
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

#[cfg(test)]
mod tests;

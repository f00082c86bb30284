//! The `http` capability: `wasi:http/outgoing-handler`, through
//! wasmtime-wasi-http, to the origins in [`HttpGrant::allow`]
//! (`--allow-http ORIGIN`).
//!
//! A request to any other origin fails with `HTTP-request-denied` and is
//! recorded as a denial. Allowed requests are bounded by the grant's connect
//! timeout, total timeout and response-size cap (as well as by the call's own
//! timeout).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep};
use wasmtime::component::Linker;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpHooks,
};

use super::{Capability, DenialLog, Risk};
use crate::host_memory::{HttpAllowance, truncate_record_text};
use crate::state::HostState;
use crate::units::ParseError;

pub(crate) const CAPABILITY: Capability = Capability {
    name: "http",
    interfaces: &["wasi:http/types", "wasi:http/outgoing-handler"],
    risk: |_| Risk::High,
    granted: |sandbox| !sandbox.grants.http.allow.is_empty(),
    how_to_grant: "--allow-http ORIGIN",
    add_to_linker,
};

fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
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

/// The HTTP state of one instance: wasmtime-wasi-http's context and the
/// hooks that enforce the grant.
pub(crate) struct HttpState {
    pub ctx: WasiHttpCtx,
    pub hooks: HttpHooks,
}

impl HttpState {
    pub(crate) fn new(grant: &Arc<HttpGrant>, denials: &DenialLog) -> Self {
        HttpState {
            ctx: WasiHttpCtx::new(),
            hooks: HttpHooks {
                grant: grant.clone(),
                denials: denials.clone(),
                over_budget: false,
            },
        }
    }

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

impl HttpHooks {
    fn allows(&self, uri: &http::Uri) -> bool {
        let Some(host) = uri.host() else {
            return false;
        };
        let scheme = uri.scheme_str().unwrap_or("https");
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri
            .port_u16()
            .unwrap_or(if scheme.eq_ignore_ascii_case("http") {
                80
            } else {
                443
            });
        self.grant
            .allow
            .iter()
            .any(|origin| origin.matches(scheme, host, port))
    }
}

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        if !self.allows(request.uri()) {
            let uri = request.uri().to_string();
            self.denials.record(
                "http",
                format!(
                    "{} {} is not an allowed origin",
                    truncate_record_text(request.method().as_str()),
                    truncate_record_text(&uri)
                ),
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let grant = self.grant.clone();
        let options = bounded_options(options, &grant);
        Box::new(async move {
            let deadline = Instant::now() + grant.total_timeout;
            let sent = tokio::time::timeout_at(
                deadline,
                wasmtime_wasi_http::default_send_request(request, Some(options)),
            )
            .await
            .map_err(|_elapsed| HttpError::HttpResponseTimeout)?;
            let (response, connection) = sent?;
            let response = response.map(|body| {
                BoundedBody {
                    inner: body.boxed_unsync(),
                    remaining: grant.max_response_bytes,
                    limit: grant.max_response_bytes,
                    deadline: Box::pin(tokio::time::sleep_until(deadline)),
                }
                .boxed_unsync()
            });
            Ok((
                response,
                Box::new(connection) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }

    fn is_supported_scheme(&mut self, scheme: &Scheme) -> bool {
        *scheme == Scheme::HTTP || *scheme == Scheme::HTTPS
    }

    fn is_forbidden_header(&mut self, name: &http::HeaderName) -> bool {
        self.over_budget || wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
    }
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

/// A response body that fails once it exceeds the size cap or the deadline.
struct BoundedBody {
    inner: WasiBody,
    remaining: u64,
    limit: u64,
    deadline: Pin<Box<Sleep>>,
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
            other => return other,
        };
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

//! Sending an allowed request: connecting to the addresses the hooks
//! checked, TLS, and the bounds on the response.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody};

use super::{Destination, HttpGrant};

/// A connection's byte stream, plain or TLS.
trait Connection: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Connection for T {}

pub(super) type Worker = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

/// Sends `request` over a connection to the first of `addresses` that
/// answers (HTTP/1.1, TLS for `https` with the host name as the server
/// name), as wasmtime-wasi-http's default sender does, but to addresses
/// already checked. Returns the response and the future that drives the
/// connection until the body is read.
pub(super) async fn send(
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
pub(super) fn bounded_options(
    options: Option<RequestOptions>,
    grant: &HttpGrant,
) -> RequestOptions {
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
pub(super) struct BoundedBody {
    inner: WasiBody,
    remaining: u64,
    limit: u64,
    deadline: Pin<Box<Sleep>>,
    between_bytes: Duration,
    idle: Pin<Box<Sleep>>,
}

impl BoundedBody {
    /// `inner`, cut at `limit` bytes, ended at `deadline`, and failed when
    /// no bytes come for `between_bytes`.
    pub(super) fn new(
        inner: WasiBody,
        limit: u64,
        deadline: Instant,
        between_bytes: Duration,
    ) -> Self {
        BoundedBody {
            inner,
            remaining: limit,
            limit,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            between_bytes,
            idle: Box::pin(tokio::time::sleep(between_bytes)),
        }
    }
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

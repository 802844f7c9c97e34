//! The streaming server's HTTP side: accept (plain or TLS), route `/<kind>/<token>`,
//! consume the token, negotiate SPDY/3.1 or WebSocket and a subprotocol, answer
//! `101 Switching Protocols`, and hand the upgraded connection to the protocol code
//! with an idle timeout around it.

use std::convert::Infallible;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Backend, Request, StreamServer, portforward, remotecommand};

/// Remote command subprotocols over SPDY, most preferred first. `v5` over SPDY is `v4`
/// (the close signal it adds is WebSocket's; SPDY half-closes streams itself).
const SPDY_REMOTECOMMAND: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
const SPDY_PORTFORWARD: &[&str] = &["portforward.k8s.io"];
/// Binary channel protocols over WebSocket (the base64 variants are not served).
const WS_REMOTECOMMAND: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
const WS_PORTFORWARD: &[&str] = &["v4.channel.k8s.io", "channel.k8s.io"];

/// How long a TLS handshake or an HTTP request head may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A loaded certificate and key.
pub struct Tls(tokio_rustls::TlsAcceptor);

impl Tls {
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Tls> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(cert)
            .with_context(|| format!("streaming.tls_cert_file {}", cert.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("streaming.tls_cert_file {}", cert.display()))?;
        if certs.is_empty() {
            anyhow::bail!(
                "streaming.tls_cert_file {}: no certificate in it",
                cert.display()
            );
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("streaming.tls_key_file {}", key.display()))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("streaming TLS: protocol versions")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("streaming TLS: the certificate and key do not go together")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }
}

pub(super) async fn accept_loop<B: Backend>(
    server: Arc<StreamServer>,
    listener: tokio::net::TcpListener,
    tls: Option<Tls>,
    backend: Arc<B>,
    shutdown: CancellationToken,
) {
    let tls = tls.map(Arc::new);
    info!(url = %server.base_url, "streaming server listening");
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    warn!("streaming server: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let _ = tcp.set_nodelay(true);
        let server = server.clone();
        let backend = backend.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_conn(server, backend, tcp, shutdown).await,
                Some(tls) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.0.accept(tcp)).await {
                        Ok(Ok(s)) => serve_conn(server, backend, s, shutdown).await,
                        Ok(Err(e)) => debug!(%peer, "streaming TLS handshake: {e}"),
                        Err(_) => debug!(%peer, "streaming TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_conn<B, T>(
    server: Arc<StreamServer>,
    backend: Arc<B>,
    io: T,
    shutdown: CancellationToken,
) where
    B: Backend,
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let server = server.clone();
        let backend = backend.clone();
        let shutdown = shutdown.clone();
        async move { Ok::<_, Infallible>(route(server, backend, req, shutdown)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    if let Err(e) = conn.await {
        debug!("streaming connection: {e}");
    }
}

fn plain(status: StatusCode, msg: impl Into<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(msg.into() + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Every value of a header, split on commas and trimmed.
fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The client's first protocol the server also speaks.
fn negotiate<'a>(client: &[String], server: &[&'a str]) -> Option<&'a str> {
    client
        .iter()
        .find_map(|c| server.iter().find(|s| **s == c.as_str()).copied())
}

/// Which upgrade the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    Spdy,
    WebSocket,
}

fn upgrade_kind(headers: &HeaderMap) -> Option<Upgrade> {
    let up = header_list(headers, "upgrade");
    if up.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
        Some(Upgrade::Spdy)
    } else if up.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        Some(Upgrade::WebSocket)
    } else {
        None
    }
}

fn route<B: Backend>(
    server: Arc<StreamServer>,
    backend: Arc<B>,
    mut req: hyper::Request<Incoming>,
    shutdown: CancellationToken,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_start_matches('/');
    let Some((kind, token)) = path.split_once('/') else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    if !matches!(kind, "exec" | "attach" | "portforward") || token.contains('/') {
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    // The token is spent by this request whatever happens next.
    let Some(parked) = server.tokens.consume(token) else {
        return plain(
            StatusCode::NOT_FOUND,
            "unknown, used or expired streaming token",
        );
    };
    if parked.path() != kind {
        return plain(
            StatusCode::NOT_FOUND,
            "unknown, used or expired streaming token",
        );
    }
    let Some(upgrade) = upgrade_kind(req.headers()) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "this endpoint needs an upgrade to SPDY/3.1 or websocket",
        );
    };
    let port_forward = matches!(parked, Request::PortForward(_));
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let protocol = match upgrade {
        Upgrade::Spdy => {
            let offered = header_list(req.headers(), "x-stream-protocol-version");
            let ours = if port_forward {
                SPDY_PORTFORWARD
            } else {
                SPDY_REMOTECOMMAND
            };
            let chosen = if offered.is_empty() {
                // Clients from before negotiation speak the first version.
                if port_forward {
                    "portforward.k8s.io"
                } else {
                    "channel.k8s.io"
                }
            } else {
                match negotiate(&offered, ours) {
                    Some(p) => p,
                    None => {
                        let mut r = plain(
                            StatusCode::FORBIDDEN,
                            format!(
                                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {ours:?}"
                            ),
                        );
                        if let Ok(v) = HeaderValue::from_str(&ours.join(", ")) {
                            r.headers_mut()
                                .insert("x-accepted-stream-protocol-versions", v);
                        }
                        return r;
                    }
                }
            };
            h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            h.insert(
                "x-stream-protocol-version",
                HeaderValue::from_static(chosen),
            );
            chosen
        }
        Upgrade::WebSocket => {
            let key = req
                .headers()
                .get("sec-websocket-key")
                .map(|k| k.as_bytes().to_vec());
            let version_ok = req
                .headers()
                .get("sec-websocket-version")
                .is_some_and(|v| v.as_bytes() == b"13");
            let (Some(key), true) = (key, version_ok) else {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "websocket upgrade needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
                );
            };
            let offered = header_list(req.headers(), "sec-websocket-protocol");
            let ours = if port_forward {
                WS_PORTFORWARD
            } else {
                WS_REMOTECOMMAND
            };
            let chosen = if offered.is_empty() {
                "channel.k8s.io"
            } else {
                match negotiate(&offered, ours) {
                    Some(p) => p,
                    None => {
                        return plain(
                            StatusCode::BAD_REQUEST,
                            format!(
                                "unable to negotiate a websocket protocol: client supports {offered:?}, server supports {ours:?}"
                            ),
                        );
                    }
                }
            };
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            if let Ok(v) = HeaderValue::from_str(&accept) {
                h.insert("sec-websocket-accept", v);
            }
            if !offered.is_empty() {
                h.insert("sec-websocket-protocol", HeaderValue::from_static(chosen));
            }
            chosen
        }
    };
    let query = req.uri().query().unwrap_or("").to_string();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let limits = server.limits;
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                debug!("streaming upgrade failed: {e}");
                return;
            }
        };
        let gone = shutdown.child_token();
        let (io, last) = Activity::new(TokioIo::new(upgraded));
        tokio::spawn(idle_watch(last, limits.idle, gone.clone()));
        match (upgrade, parked) {
            (Upgrade::Spdy, Request::PortForward(r)) => {
                portforward::serve_spdy(io, r, backend, limits, gone).await;
            }
            (Upgrade::WebSocket, Request::PortForward(r)) => {
                portforward::serve_ws(io, r, &query, backend, gone).await;
            }
            (Upgrade::Spdy, parked) => {
                remotecommand::serve_spdy(io, protocol, parked, backend, limits, gone).await;
            }
            (Upgrade::WebSocket, parked) => {
                remotecommand::serve_ws(io, protocol, parked, backend, gone).await;
            }
        }
    });
    resp
}

/// When the last byte moved, in milliseconds since the connection was upgraded.
struct LastActive {
    start: Instant,
    ms: AtomicU64,
}

impl LastActive {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.ms.store(ms, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(now.saturating_sub(self.ms.load(Ordering::Relaxed)))
    }
}

/// An upgraded connection that notes when bytes last moved either way.
pub(crate) struct Activity<T> {
    inner: T,
    last: Arc<LastActive>,
}

impl<T> Activity<T> {
    fn new(inner: T) -> (Self, Arc<LastActive>) {
        let last = Arc::new(LastActive {
            start: Instant::now(),
            ms: AtomicU64::new(0),
        });
        (
            Activity {
                inner,
                last: last.clone(),
            },
            last,
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.last.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.last.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Cancels `gone` once nothing has moved for `limit`; ends when `gone` is cancelled.
async fn idle_watch(last: Arc<LastActive>, limit: Duration, gone: CancellationToken) {
    let tick = (limit / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            () = gone.cancelled() => return,
        }
        if last.idle() >= limit {
            info!(idle_secs = limit.as_secs(), "closing an idle stream");
            gone.cancel();
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_client_order() {
        let c = vec!["v4.channel.k8s.io".to_string(), "v5.channel.k8s.io".into()];
        assert_eq!(negotiate(&c, SPDY_REMOTECOMMAND), Some("v4.channel.k8s.io"));
        let c = vec!["v9.channel.k8s.io".to_string()];
        assert_eq!(negotiate(&c, SPDY_REMOTECOMMAND), None);
        let c = vec!["portforward.k8s.io".to_string()];
        assert_eq!(negotiate(&c, SPDY_PORTFORWARD), Some("portforward.k8s.io"));
    }

    #[test]
    fn header_lists_split_on_commas() {
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("a, b"));
        h.append("x-a", HeaderValue::from_static("c"));
        assert_eq!(header_list(&h, "x-a"), vec!["a", "b", "c"]);
    }

    #[test]
    fn upgrades_are_recognised() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("SPDY/3.1"));
        assert_eq!(upgrade_kind(&h), Some(Upgrade::Spdy));
        h.insert("upgrade", HeaderValue::from_static("WebSocket"));
        assert_eq!(upgrade_kind(&h), Some(Upgrade::WebSocket));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        assert_eq!(upgrade_kind(&h), None);
    }
}

//! The streaming server's HTTP side: accept (plain or TLS), route `/<kind>/<token>`,
//! consume the token, negotiate SPDY/3.1 or WebSocket and a subprotocol, answer
//! `101 Switching Protocols`, and hand the upgraded connection to the protocol code
//! with an idle timeout around it.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::idle::{Activity, idle_watch};
use crate::{
    Backend, Conn, Limits, Request, StreamError, StreamServer, portforward, remotecommand,
};

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
/// Port forward over WebSocket: an SPDY session tunnelled in binary messages (the
/// SPDY subprotocol with a `SPDY/3.1+` prefix, as client-go's tunnelling dialer offers
/// it), or the channel form.
const WS_PORTFORWARD: &[&str] = &[WS_SPDY_PORTFORWARD, "v4.channel.k8s.io", "channel.k8s.io"];
/// The WebSocket subprotocol that carries an SPDY `portforward.k8s.io` session.
const WS_SPDY_PORTFORWARD: &str = "SPDY/3.1+portforward.k8s.io";

/// How long a TLS handshake or an HTTP request head may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type Body = Full<Bytes>;

/// A loaded certificate and key, from [`StreamServer::bind`], for
/// [`StreamServer::serve`].
pub struct Tls(tokio_rustls::TlsAcceptor);

impl Tls {
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<Tls, StreamError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let cert_err = |source| StreamError::TlsCert {
            path: cert.to_path_buf(),
            source,
        };
        let certs = CertificateDer::pem_file_iter(cert)
            .map_err(cert_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(cert_err)?;
        if certs.is_empty() {
            return Err(StreamError::NoCertificate {
                path: cert.to_path_buf(),
            });
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|source| StreamError::TlsKey {
            path: key.to_path_buf(),
            source,
        })?;
        let tls_err = |what| move |source| StreamError::Tls { what, source };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_err("protocol versions"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(tls_err("the certificate and key do not go together"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }
}

pub(crate) async fn accept_loop<B: Backend>(
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

async fn serve_conn<B: Backend, T: Conn>(
    server: Arc<StreamServer>,
    backend: Arc<B>,
    io: T,
    shutdown: CancellationToken,
) {
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

fn plain(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
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

/// What is served over one upgrade for one kind of request: the subprotocols, most
/// preferred first, and the one a client that offers none speaks (clients from before
/// negotiation).
fn served(upgrade: Upgrade, port_forward: bool) -> (&'static [&'static str], &'static str) {
    match (upgrade, port_forward) {
        (Upgrade::Spdy, true) => (SPDY_PORTFORWARD, "portforward.k8s.io"),
        (Upgrade::Spdy, false) => (SPDY_REMOTECOMMAND, "channel.k8s.io"),
        (Upgrade::WebSocket, true) => (WS_PORTFORWARD, "channel.k8s.io"),
        (Upgrade::WebSocket, false) => (WS_REMOTECOMMAND, "channel.k8s.io"),
    }
}

/// What the client offered in `header`, and the subprotocol to speak; `Err` is the
/// refusal's message when they have none in common.
fn choose(
    headers: &HeaderMap,
    header: &str,
    upgrade: Upgrade,
    port_forward: bool,
) -> Result<(Vec<String>, &'static str), String> {
    let offered = header_list(headers, header);
    let (ours, default) = served(upgrade, port_forward);
    if offered.is_empty() {
        return Ok((offered, default));
    }
    match negotiate(&offered, ours) {
        Some(p) => Ok((offered, p)),
        None => Err(format!(
            "client supports {offered:?}, server supports {ours:?}"
        )),
    }
}

/// The answer to an upgrade request.
enum Switch {
    /// `101`, speaking this subprotocol.
    To(Response<Body>, &'static str),
    /// A refusal to send as it is.
    Refused(Response<Body>),
}

/// A `101 Switching Protocols` to `upgrade`.
fn switching(upgrade: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static(upgrade));
    resp
}

/// The answer to an SPDY upgrade: `101` and the chosen protocol, or `403` listing ours.
fn spdy_switch(headers: &HeaderMap, port_forward: bool) -> Switch {
    let chosen = match choose(
        headers,
        "x-stream-protocol-version",
        Upgrade::Spdy,
        port_forward,
    ) {
        Ok((_, chosen)) => chosen,
        Err(msg) => {
            let mut r = plain(
                StatusCode::FORBIDDEN,
                format!("unable to upgrade: unable to negotiate protocol: {msg}"),
            );
            let (ours, _) = served(Upgrade::Spdy, port_forward);
            if let Ok(v) = HeaderValue::from_str(&ours.join(", ")) {
                r.headers_mut()
                    .insert("x-accepted-stream-protocol-versions", v);
            }
            return Switch::Refused(r);
        }
    };
    let mut resp = switching("SPDY/3.1");
    resp.headers_mut().insert(
        "x-stream-protocol-version",
        HeaderValue::from_static(chosen),
    );
    Switch::To(resp, chosen)
}

/// The answer to a WebSocket upgrade: `101` and the chosen protocol, or `400`.
fn ws_switch(headers: &HeaderMap, port_forward: bool) -> Switch {
    let key = headers
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec());
    let version_ok = headers
        .get("sec-websocket-version")
        .is_some_and(|v| v.as_bytes() == b"13");
    let (Some(key), true) = (key, version_ok) else {
        return Switch::Refused(plain(
            StatusCode::BAD_REQUEST,
            "websocket upgrade needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
        ));
    };
    let (offered, chosen) = match choose(
        headers,
        "sec-websocket-protocol",
        Upgrade::WebSocket,
        port_forward,
    ) {
        Ok(v) => v,
        Err(msg) => {
            return Switch::Refused(plain(
                StatusCode::BAD_REQUEST,
                format!("unable to negotiate a websocket protocol: {msg}"),
            ));
        }
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let mut resp = switching("websocket");
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    if !offered.is_empty() {
        h.insert("sec-websocket-protocol", HeaderValue::from_static(chosen));
    }
    Switch::To(resp, chosen)
}

fn route<B: Backend>(
    server: Arc<StreamServer>,
    backend: Arc<B>,
    mut req: hyper::Request<Incoming>,
    shutdown: CancellationToken,
) -> Response<Body> {
    let path = req.uri().path().trim_start_matches('/');
    let Some((kind, token)) = path.split_once('/') else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    if !matches!(kind, "exec" | "attach" | "portforward") || token.contains('/') {
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    // The token is spent by this request whatever happens next.
    let Some(parked) = server.tokens.consume(token).filter(|p| p.path() == kind) else {
        return plain(
            StatusCode::NOT_FOUND,
            "unknown, used or expired streaming token",
        );
    };
    let Some(upgrade) = upgrade_kind(req.headers()) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "this endpoint needs an upgrade to SPDY/3.1 or websocket",
        );
    };
    let port_forward = matches!(parked, Request::PortForward(_));
    let switched = match upgrade {
        Upgrade::Spdy => spdy_switch(req.headers(), port_forward),
        Upgrade::WebSocket => ws_switch(req.headers(), port_forward),
    };
    let (resp, protocol) = match switched {
        Switch::To(resp, protocol) => (resp, protocol),
        Switch::Refused(refusal) => return refusal,
    };
    let upgraded = Upgraded {
        on_upgrade: hyper::upgrade::on(&mut req),
        kind: upgrade,
        protocol,
        query: req.uri().query().unwrap_or("").to_string(),
    };
    tokio::spawn(upgraded.serve(parked, backend, server.limits, shutdown));
    resp
}

/// A connection answered with `101`, to be served once hyper hands it over.
struct Upgraded {
    on_upgrade: OnUpgrade,
    kind: Upgrade,
    protocol: &'static str,
    query: String,
}

impl Upgraded {
    async fn serve<B: Backend>(
        self,
        parked: Request,
        backend: Arc<B>,
        limits: Limits,
        shutdown: CancellationToken,
    ) {
        let upgraded = match self.on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                debug!("streaming upgrade failed: {e}");
                return;
            }
        };
        let gone = shutdown.child_token();
        let (io, last) = Activity::new(TokioIo::new(upgraded));
        tokio::spawn(idle_watch(last, limits.idle, gone.clone()));
        let protocol = self.protocol;
        match (self.kind, parked) {
            (Upgrade::Spdy, Request::PortForward(r)) => {
                portforward::serve_spdy(io, r, backend, limits, gone).await;
            }
            (Upgrade::WebSocket, Request::PortForward(r)) if protocol == WS_SPDY_PORTFORWARD => {
                let tunnelled = crate::ws::tunnel(io, gone.clone()).await;
                portforward::serve_spdy(tunnelled, r, backend, limits, gone).await;
            }
            (Upgrade::WebSocket, Request::PortForward(r)) => {
                portforward::serve_ws(io, r, &self.query, backend, gone).await;
            }
            (Upgrade::Spdy, parked) => {
                remotecommand::serve_spdy(io, protocol, parked, backend, limits, gone).await;
            }
            (Upgrade::WebSocket, parked) => {
                remotecommand::serve_ws(io, protocol, parked, backend, gone).await;
            }
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
        let c = vec!["SPDY/3.1+portforward.k8s.io".to_string()];
        assert_eq!(negotiate(&c, WS_PORTFORWARD), Some(WS_SPDY_PORTFORWARD));
    }

    #[test]
    fn a_client_offering_nothing_gets_the_first_version() {
        let none = HeaderMap::new();
        let pick = |upgrade, pf| choose(&none, "x-stream-protocol-version", upgrade, pf);
        assert_eq!(pick(Upgrade::Spdy, false).unwrap().1, "channel.k8s.io");
        assert_eq!(pick(Upgrade::Spdy, true).unwrap().1, "portforward.k8s.io");
        assert_eq!(pick(Upgrade::WebSocket, true).unwrap().1, "channel.k8s.io");
        let mut h = HeaderMap::new();
        h.insert("x-stream-protocol-version", HeaderValue::from_static("v9"));
        let err = choose(&h, "x-stream-protocol-version", Upgrade::Spdy, false).unwrap_err();
        assert!(
            err.contains("v9") && err.contains("v5.channel.k8s.io"),
            "{err}"
        );
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

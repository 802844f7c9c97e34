//! The streaming server: what `Exec`, `Attach` and `PortForward` hand out URLs to.
//!
//! The CRI calls only validate and park the request under a single-use token
//! ([`tokens`]); the client (the kubelet, crictl) then connects to the URL with an HTTP
//! upgrade to SPDY/3.1 or WebSocket and the stream is served here:
//!
//! - [`http`]: the listener (plain or TLS), routing, token check and protocol
//!   negotiation, and the idle timeout on every upgraded connection;
//! - [`remotecommand`]: exec and attach over SPDY (`channel.k8s.io` to
//!   `v5.channel.k8s.io`) and WebSocket (channels, `v4`/`v5`);
//! - [`portforward`]: `portforward.k8s.io` over SPDY, and the channel form over WebSocket;
//! - [`backend`]: the runtime side: exec and attach through the container's shim, TCP
//!   connections inside the pod's network namespace.
//!
//! Invariants: a token is consumed by the first connection that presents it, before
//! anything else is looked at; every stream task ends when its client goes away or goes
//! idle, and takes with it whatever it started (an exec'd process is killed).

pub mod backend;
mod http;
mod portforward;
mod remotecommand;
pub mod status;
pub mod tokens;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1 as cri;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::StreamingConfig;
use crate::error::{CriError, CriResult};
pub use status::{Outcome, TermSize};
use tokens::{TokenError, Tokens};

/// Requests waiting for their client at once (the kubelet's streaming server caps its
/// cache at the same number).
const MAX_WAITING: usize = 1000;

/// A parked streaming request.
#[derive(Debug, Clone)]
pub enum Request {
    Exec(cri::ExecRequest),
    Attach(cri::AttachRequest),
    PortForward(cri::PortForwardRequest),
}

impl Request {
    fn path(&self) -> &'static str {
        match self {
            Request::Exec(_) => "exec",
            Request::Attach(_) => "attach",
            Request::PortForward(_) => "portforward",
        }
    }
}

pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// A remote command's streams, as the client opened them, whatever the protocol.
pub struct StdStreams {
    pub stdin: Option<BoxRead>,
    pub stdout: Option<BoxWrite>,
    pub stderr: Option<BoxWrite>,
    /// Terminal sizes, for a tty.
    pub resize: Option<mpsc::Receiver<TermSize>>,
    /// Cancelled when the client goes away or the stream goes idle: stop and clean up.
    pub gone: CancellationToken,
}

/// The runtime side of streaming.
pub trait Backend: Send + Sync + 'static {
    /// Runs `req.cmd` in the container with `io`; returns how it ended.
    fn exec(&self, req: cri::ExecRequest, io: StdStreams) -> impl Future<Output = Outcome> + Send;
    /// Connects `io` to the container's own stdio until the container exits or the
    /// client goes.
    fn attach(
        &self,
        req: cri::AttachRequest,
        io: StdStreams,
    ) -> impl Future<Output = Outcome> + Send;
    /// A TCP connection to `port` on the pod's loopback, inside its network namespace.
    fn connect(
        &self,
        pod_id: &str,
        port: u16,
    ) -> impl Future<Output = Result<TcpStream, String>> + Send;
}

/// Ties an SPDY session to its stream's `gone`: the session ending cancels `gone`, and
/// `gone` cancelled (idle, shutdown) closes the session.
fn link_session(session: &crius_spdy::session::Session, gone: &CancellationToken) {
    let s = session.clone();
    let g = gone.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = s.closed() => g.cancel(),
            () = g.cancelled() => s.close(),
        }
    });
}

/// Timeouts every stream is served with.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub stream_creation: Duration,
    pub idle: Duration,
}

/// The streaming server: token cache and base URL. `serve` runs it.
pub struct StreamServer {
    tokens: Tokens<Request>,
    base_url: String,
    limits: Limits,
}

impl StreamServer {
    /// Binds the listener the config names (port 0: a free one).
    pub async fn bind(
        cfg: &StreamingConfig,
    ) -> anyhow::Result<(
        Arc<StreamServer>,
        tokio::net::TcpListener,
        Option<http::Tls>,
    )> {
        use anyhow::Context;
        let ip = cfg.ip()?;
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, cfg.port))
            .await
            .with_context(|| format!("binding the streaming server to {ip}:{}", cfg.port))?;
        let local = listener
            .local_addr()
            .context("reading the streaming server's address")?;
        let tls = if cfg.tls_cert_file.as_os_str().is_empty() {
            None
        } else {
            Some(http::Tls::load(&cfg.tls_cert_file, &cfg.tls_key_file)?)
        };
        // An unspecified address listens everywhere; URLs then name loopback.
        let host = if ip.is_unspecified() {
            if ip.is_ipv4() {
                "127.0.0.1".to_string()
            } else {
                "[::1]".to_string()
            }
        } else if ip.is_ipv6() {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let server = StreamServer {
            tokens: Tokens::new(Duration::from_secs(cfg.token_ttl_secs), MAX_WAITING),
            base_url: format!("{scheme}://{host}:{}", local.port()),
            limits: Limits {
                stream_creation: Duration::from_secs(cfg.stream_creation_timeout_secs),
                idle: Duration::from_secs(cfg.idle_timeout_secs),
            },
        };
        Ok((Arc::new(server), listener, tls))
    }

    /// The URL a validated request is served at.
    pub fn url(&self, req: Request) -> CriResult<String> {
        let path = req.path();
        let token = self.tokens.insert(req).map_err(|e| match e {
            TokenError::Full(_) => CriError::Unavailable(e.to_string()),
            TokenError::Random(_) => CriError::Internal(e.to_string()),
        })?;
        Ok(format!("{}/{path}/{token}", self.base_url))
    }

    /// Serves connections until `shutdown`.
    pub fn serve<B: Backend>(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        tls: Option<http::Tls>,
        backend: Arc<B>,
        shutdown: CancellationToken,
    ) {
        tokio::spawn(http::accept_loop(self, listener, tls, backend, shutdown));
    }
}

//! The CRI streaming server: what `Exec`, `Attach` and `PortForward` hand out URLs to.
//!
//! The CRI calls only validate a request and park it with [`StreamServer::url`], which
//! returns a URL carrying a token; the client (the kubelet, crictl, kubectl) then
//! connects to that URL with an HTTP upgrade to SPDY/3.1 or WebSocket and the stream is
//! served here, the runtime side being a [`Backend`]:
//!
//! - `http`: the listener (plain or TLS), routing, token check and protocol
//!   negotiation, and the idle timeout on every upgraded connection;
//! - `remotecommand`: exec and attach over SPDY (`channel.k8s.io` to
//!   `v5.channel.k8s.io`) and WebSocket (channels, `v5` adding the close signal);
//! - `portforward`: `portforward.k8s.io` over SPDY, the same SPDY session tunnelled in
//!   WebSocket binary messages (`SPDY/3.1+portforward.k8s.io`), and the channel form
//!   over WebSocket.
//!
//! # Invariants
//!
//! - **Single use.** A token is consumed by the first connection that presents it,
//!   before anything else about the request is looked at: a request on the wrong path,
//!   without an upgrade or with no protocol in common still spends it. Unknown, used
//!   and expired tokens, and a token on another kind's path, get `404`.
//! - **TTL.** A token is usable for `token_ttl_secs` after `url` made it.
//! - **Bounded waiting.** At most 1000 requests wait for their clients at once (the
//!   kubelet's own streaming server has the same cap); `url` then fails with
//!   [`StreamError::TooManyPending`] until some connect or expire.
//! - **Stream creation.** An SPDY remote command whose client has not opened every
//!   stream the request asked for within `stream_creation_timeout_secs` is closed
//!   without running anything; a port-forward stream whose pair is not complete by
//!   then is reset.
//! - **Idle.** An upgraded connection on which no byte moved either way for
//!   `idle_timeout_secs` is closed.
//! - **Clients that vanish.** Every stream task ends when its client goes away or goes
//!   idle, or the server shuts down: [`StdStreams::gone`] is cancelled, the backend
//!   must then stop what it started (an exec'd process is killed) and return; nothing
//!   more is written to the client.
//! - A TLS handshake or an HTTP request head that takes longer than 10 seconds ends
//!   the connection.

mod config;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod idle;
mod portforward;
mod remotecommand;
mod status;
mod tokens;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crius_cri_api::v1 as cri;
use crius_spdy::session::{Incoming, Role, Session, SessionConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use config::{InvalidConfig, StreamingConfig};
pub use error::StreamError;
pub use http::Tls;
pub use status::{Outcome, TermSize};
use tokens::Tokens;

/// Requests waiting for their client at once (the kubelet's streaming server caps its
/// cache at the same number).
const MAX_WAITING: usize = 1000;

/// A validated streaming request, parked until its client connects.
#[derive(Debug, Clone)]
pub enum Request {
    /// Served at `/exec/<token>`.
    Exec(cri::ExecRequest),
    /// Served at `/attach/<token>`.
    Attach(cri::AttachRequest),
    /// Served at `/portforward/<token>`.
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

/// A client's input stream.
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// A client's output stream; shutting it down ends that stream for the client.
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// A remote command's streams, as the client opened them, whatever the protocol.
///
/// `stderr` is `None` for a tty (a terminal has one output); `resize` is `Some` only
/// for a tty.
pub struct StdStreams {
    /// The client's input; EOF when the client closes it.
    pub stdin: Option<BoxRead>,
    /// Output to the client.
    pub stdout: Option<BoxWrite>,
    /// Error output to the client.
    pub stderr: Option<BoxWrite>,
    /// Terminal sizes, for a tty.
    pub resize: Option<mpsc::Receiver<TermSize>>,
    /// Cancelled when the client goes away or the stream goes idle: stop and clean up.
    pub gone: CancellationToken,
}

/// Why a port-forward connection could not be made; the client is shown its message
/// (and its sources').
pub type ConnectError = Box<dyn std::error::Error + Send + Sync>;

/// The runtime side of streaming.
pub trait Backend: Send + Sync + 'static {
    /// Runs `req.cmd` in the container with `io`; returns how it ended. Once
    /// `io.gone` is cancelled the process must be stopped; the outcome is then dropped.
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
    ) -> impl Future<Output = Result<TcpStream, ConnectError>> + Send;
}

/// A client's connection as the servers here take it: a byte stream that can be moved
/// to a task of its own.
pub(crate) trait Conn: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Conn for T {}

/// A server-side SPDY session on an upgraded connection, tied to its stream's `gone`:
/// the session ending cancels `gone`, and `gone` cancelled (idle, shutdown) closes the
/// session.
fn spdy_session<T: Conn>(io: T, gone: &CancellationToken) -> (Session, Incoming) {
    let (session, incoming) = Session::new(io, Role::Server, SessionConfig::default());
    let s = session.clone();
    let g = gone.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = s.closed() => g.cancel(),
            () = g.cancelled() => s.close(),
        }
    });
    (session, incoming)
}

/// An error and its sources, `: `-separated, for logs and for messages to clients.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

/// Timeouts every stream is served with.
#[derive(Debug, Clone, Copy)]
struct Limits {
    stream_creation: Duration,
    idle: Duration,
}

/// The streaming server: token cache and base URL. [`StreamServer::serve`] runs it.
pub struct StreamServer {
    tokens: Tokens<Request>,
    base_url: String,
    limits: Limits,
}

impl StreamServer {
    /// Binds the listener the config names (port 0: a free one) and loads the TLS
    /// certificate and key if the config names them. URLs name the bound address, or
    /// loopback when it is unspecified.
    pub async fn bind(
        cfg: &StreamingConfig,
    ) -> Result<(Arc<StreamServer>, tokio::net::TcpListener, Option<Tls>), StreamError> {
        let ip = cfg.ip()?;
        let addr = SocketAddr::new(ip, cfg.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StreamError::Bind { addr, source })?;
        let local = listener.local_addr().map_err(StreamError::LocalAddr)?;
        let tls = if cfg.tls_cert_file.as_os_str().is_empty() {
            None
        } else {
            Some(Tls::load(&cfg.tls_cert_file, &cfg.tls_key_file)?)
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

    /// Parks a validated request and returns the single-use URL it is served at.
    pub fn url(&self, req: Request) -> Result<String, StreamError> {
        let path = req.path();
        let token = self.tokens.insert(req)?;
        Ok(format!("{}/{path}/{token}", self.base_url))
    }

    /// Serves connections on `listener` (a task of its own) until `shutdown`, which
    /// also ends every stream being served.
    pub fn serve<B: Backend>(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        tls: Option<Tls>,
        backend: Arc<B>,
        shutdown: CancellationToken,
    ) {
        tokio::spawn(http::accept_loop(self, listener, tls, backend, shutdown));
    }
}

//! Clients for crius's streaming server, as kubectl and crictl speak to it: an HTTP
//! upgrade to SPDY/3.1 (through crates/spdy's session) or WebSocket (tungstenite), then
//! Kubernetes' remote command and port forward protocols on top.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use crius_spdy::Headers;
use crius_spdy::session::{Role, Session, SessionConfig, Stream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// `http(s)://host:port/path` split up; true for https.
fn split_url(url: &str) -> Result<(String, String, bool)> {
    let (rest, tls) = if let Some(r) = url.strip_prefix("http://") {
        (r, false)
    } else if let Some(r) = url.strip_prefix("https://") {
        (r, true)
    } else {
        bail!("not an http(s) URL: {url}");
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    Ok((host.to_string(), path.to_string(), tls))
}

/// A connection, plain or TLS.
pub type Conn = Box<dyn Duplex>;

/// The CA that https URLs are checked against (tests that use TLS set it).
static CA: std::sync::Mutex<Option<std::path::PathBuf>> = std::sync::Mutex::new(None);

/// Trusts the PEM certificate(s) at `path` for https URLs.
pub fn trust_ca(path: &std::path::Path) {
    *CA.lock().unwrap_or_else(|p| p.into_inner()) = Some(path.to_path_buf());
}

/// Connects to `host` (`ip:port`), with TLS when asked.
pub async fn dial(host: &str, tls: bool) -> Result<Conn> {
    let tcp = TcpStream::connect(host)
        .await
        .with_context(|| format!("connecting to {host}"))?;
    if !tls {
        return Ok(Box::new(tcp));
    }
    use rustls_pki_types::pem::PemObject;
    let ca = CA
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or_else(|| anyhow!("an https URL, but no CA to check it against (trust_ca)"))?;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(&ca)? {
        roots.add(c?)?;
    }
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let ip = host
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']))
        .unwrap_or(host);
    let name = rustls_pki_types::ServerName::try_from(ip.to_string())?;
    let s = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    Ok(Box::new(s))
}

/// A raw HTTP response head.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends a request with `headers` and reads the response head; on a 101 the socket is
/// returned ready for the new protocol.
pub async fn upgrade_request(
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
) -> Result<(Head, Conn)> {
    let (host, path, tls) = split_url(url)?;
    let mut tcp = dial(&host, tls).await?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await?;
    // Byte by byte up to the blank line, so nothing of the next protocol is consumed.
    let mut raw = Vec::new();
    let mut b = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut b).await? == 0 {
            bail!(
                "connection closed in the response head: {:?}",
                String::from_utf8_lossy(&raw)
            );
        }
        raw.push(b[0]);
        if raw.len() > 64 * 1024 {
            bail!("response head too long");
        }
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut head = Head {
        status,
        headers,
        body: String::new(),
    };
    if status != 101 {
        let len: usize = head
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len.min(1 << 20)];
        tcp.read_exact(&mut body).await.ok();
        head.body = String::from_utf8_lossy(&body).to_string();
    }
    Ok((head, tcp))
}

/// An SPDY connection after the upgrade.
pub struct Spdy {
    pub session: Session,
    pub protocol: String,
}

/// Upgrades to SPDY/3.1 offering `protocols`; fails unless the server answers 101.
pub async fn spdy_connect(url: &str, protocols: &[&str]) -> Result<Spdy> {
    let mut headers = vec![("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")];
    for p in protocols {
        headers.push(("X-Stream-Protocol-Version", p));
    }
    let (head, tcp) = upgrade_request(url, "POST", &headers).await?;
    if head.status != 101 {
        bail!("upgrade refused: {} {}", head.status, head.body);
    }
    let protocol = head
        .header("x-stream-protocol-version")
        .unwrap_or("")
        .to_string();
    let (session, _incoming) = Session::new(tcp, Role::Client, SessionConfig::default());
    Ok(Spdy { session, protocol })
}

impl Spdy {
    /// Opens a stream with `streamType` (and extra headers).
    pub async fn open(&self, kind: &str, extra: &[(&str, &str)]) -> Result<Stream> {
        let mut h = Headers::new();
        // SPDY header names are lower case on the wire (Go's framer lowers them).
        h.add("streamtype", kind);
        for (k, v) in extra {
            h.add(k.to_ascii_lowercase(), *v);
        }
        self.session
            .open_stream(h)
            .await
            .map_err(|e| anyhow!("opening the {kind} stream: {e}"))
    }
}

/// Reads until EOF (or an error, which ends the stream too).
pub async fn read_all(mut r: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = r.read_to_end(&mut out).await;
    out
}

/// What a remote command session asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Want {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// A remote command over SPDY with its streams open (client-go's order: error, stdin,
/// stdout, stderr, resize).
pub struct SpdyCommand {
    pub conn: Spdy,
    pub error: Stream,
    pub stdin: Option<Stream>,
    pub stdout: Option<Stream>,
    pub stderr: Option<Stream>,
    pub resize: Option<Stream>,
}

pub async fn spdy_command(url: &str, protocol: &str, want: Want) -> Result<SpdyCommand> {
    let conn = spdy_connect(url, &[protocol]).await?;
    let error = conn.open("error", &[]).await?;
    let stdin = if want.stdin {
        Some(conn.open("stdin", &[]).await?)
    } else {
        None
    };
    let stdout = if want.stdout {
        Some(conn.open("stdout", &[]).await?)
    } else {
        None
    };
    let stderr = if want.stderr && !want.tty {
        Some(conn.open("stderr", &[]).await?)
    } else {
        None
    };
    let resize = if want.tty {
        Some(conn.open("resize", &[]).await?)
    } else {
        None
    };
    Ok(SpdyCommand {
        conn,
        error,
        stdin,
        stdout,
        stderr,
        resize,
    })
}

/// The result of a finished remote command.
#[derive(Debug)]
pub struct Finished {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// What the error stream carried (JSON status from v4 on).
    pub error: Vec<u8>,
}

impl Finished {
    /// The exit code the status reports (0 for Success).
    pub fn exit_code(&self) -> Result<i32> {
        exit_code(&self.error)
    }
}

/// The exit code a v4+ error-stream status reports: 0 for `Success`, the `ExitCode`
/// cause of a `NonZeroExitCode` failure; anything else is an error.
pub fn exit_code(status: &[u8]) -> Result<i32> {
    let v: serde_json::Value = serde_json::from_slice(status)
        .with_context(|| format!("status {:?}", String::from_utf8_lossy(status)))?;
    match v["status"].as_str() {
        Some("Success") => Ok(0),
        Some("Failure") if v["reason"] == "NonZeroExitCode" => v["details"]["causes"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["reason"] == "ExitCode"))
            .and_then(|c| c["message"].as_str())
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| anyhow!("no exit code in {v}")),
        _ => bail!("failure status: {v}"),
    }
}

impl SpdyCommand {
    /// Sends `input` (then half-closes stdin), sends `sizes` on the resize stream, and
    /// reads every output to its end, as client-go does.
    pub async fn run(mut self, input: &[u8], limit: Duration) -> Result<Finished> {
        if let Some(s) = self.stdin.take() {
            let (_, mut w) = s.split();
            w.write_all(input).await?;
            w.shutdown().await?;
        }
        let out = self
            .stdout
            .take()
            .map(|s| tokio::spawn(read_all(s.split().0)));
        let err = self
            .stderr
            .take()
            .map(|s| tokio::spawn(read_all(s.split().0)));
        let (error_r, _) = self.error.split();
        let work = async {
            let stdout = match out {
                Some(h) => h.await?,
                None => Vec::new(),
            };
            let stderr = match err {
                Some(h) => h.await?,
                None => Vec::new(),
            };
            let error = read_all(error_r).await;
            anyhow::Ok(Finished {
                stdout,
                stderr,
                error,
            })
        };
        let f = tokio::time::timeout(limit, work)
            .await
            .context("the remote command did not finish in time")??;
        self.conn.session.close();
        Ok(f)
    }
}

/// A WebSocket connection speaking the channel protocol.
pub struct Ws {
    pub ws: WebSocketStream<Conn>,
    pub protocol: String,
}

pub async fn ws_connect(url: &str, protocols: &[&str]) -> Result<Ws> {
    let (host, _, tls) = split_url(url)?;
    let tcp = dial(&host, tls).await?;
    let ws_url = url
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1);
    let mut req = ws_url.into_client_request()?;
    if !protocols.is_empty() {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(&protocols.join(", "))?,
        );
    }
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp)
        .await
        .map_err(|e| anyhow!("websocket handshake: {e}"))?;
    let protocol = resp
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Ok(Ws { ws, protocol })
}

/// A WebSocket upgrade offering `protocols` whose binary messages then carry an SPDY
/// client session (client-go's tunnelling: `SPDY/3.1+portforward.k8s.io`). The
/// protocol is the one the server chose, prefix and all.
pub async fn ws_tunnel_connect(url: &str, protocols: &[&str]) -> Result<Spdy> {
    let Ws { ws, protocol } = ws_connect(url, protocols).await?;
    let (mut sink, mut source) = ws.split();
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut from_session, mut to_session) = tokio::io::split(theirs);
    tokio::spawn(async move {
        while let Some(Ok(msg)) = source.next().await {
            let b = match msg {
                Message::Binary(b) => b,
                Message::Close(_) | Message::Text(_) => break,
                _ => continue,
            };
            if to_session.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = to_session.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from_session.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    });
    let (session, _incoming) = Session::new(ours, Role::Client, SessionConfig::default());
    Ok(Spdy { session, protocol })
}

impl Ws {
    /// Sends `data` on channel `ch`.
    pub async fn send(&mut self, ch: u8, data: &[u8]) -> Result<()> {
        let mut m = vec![ch];
        m.extend_from_slice(data);
        self.ws.send(Message::Binary(m.into())).await?;
        Ok(())
    }

    /// The next channel message; `None` once the server closed.
    pub async fn recv(&mut self) -> Result<Option<(u8, Vec<u8>)>> {
        loop {
            match self.ws.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Err(e)) => return Err(anyhow!("websocket: {e}")),
                Some(Ok(Message::Binary(b))) => {
                    if let Some((&ch, rest)) = b.split_first() {
                        return Ok(Some((ch, rest.to_vec())));
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// Collects every channel's bytes until the server closes.
    pub async fn collect(&mut self, limit: Duration) -> Result<Vec<Vec<u8>>> {
        let mut chans = vec![Vec::new(); 256];
        tokio::time::timeout(limit, async {
            while let Some((ch, data)) = self.recv().await? {
                chans[usize::from(ch)].extend_from_slice(&data);
            }
            anyhow::Ok(())
        })
        .await
        .context("the websocket stream did not end in time")??;
        Ok(chans)
    }
}

/// Anything `AsyncRead + AsyncWrite`, for helpers that take either.
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

//! Port forwarding: TCP connections to ports on the pod's loopback, inside its network
//! namespace.
//!
//! SPDY (`portforward.k8s.io`): for every connection the client opens a pair of
//! streams, `streamType: error` and `streamType: data`, with the same `requestID` and
//! `port` headers. Once both are there the server connects and copies both ways; a
//! half-close on either side is passed on (FIN to `shutdown(Write)` and back), and when
//! both directions are done the error stream is closed. A failure is written to the
//! error stream as text. Pairs never completed are reset after the stream creation
//! timeout.
//!
//! SPDY tunnelled in WebSocket (`SPDY/3.1+portforward.k8s.io`, client-go's
//! tunnelling dialer): the same SPDY session, its bytes carried in binary messages.
//!
//! WebSocket channels: the ports come from the `ports` query parameter; port i uses channel 2i
//! for data and 2i+1 for errors, and each channel's first message is the port number
//! (two bytes, little endian). One connection per port; the socket closes when all
//! are done.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crius_cri_api::v1 as cri;
use crius_spdy::session::{IncomingStream, Stream};
use crius_spdy::{Headers, RstStatus};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::ws::{Layout, Mux};
use crate::{Backend, Conn, Limits};

/// A port from a header or query value.
fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("invalid port {s:?}: must be 1-65535")),
        Ok(p) => Ok(p),
    }
}

/// A connection to `port` in `pod`, or the message for the client's error stream.
async fn dial<B: Backend>(
    backend: &B,
    pod: &str,
    port: Result<u16, String>,
) -> Result<TcpStream, String> {
    let p = port?;
    backend.connect(pod, p).await.map_err(|e| {
        format!(
            "error forwarding port {p} to pod {pod}: {}",
            crate::chain(&*e)
        )
    })
}

/// Copies between a TCP connection and a client stream until both directions end or
/// `gone`; half-closes are passed on. With `pod_eof_ends`, the pod closing its side
/// ends it all (the WebSocket form has no half-close for the client to answer with).
async fn splice<R, W>(
    tcp: TcpStream,
    mut from_client: R,
    mut to_client: W,
    gone: &CancellationToken,
    pod_eof_ends: bool,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (mut tr, mut tw) = tcp.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut from_client, &mut tw).await;
        let _ = tw.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut tr, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    if pod_eof_ends {
        let up = async {
            up.await;
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = down => {}
            () = up => {}
            () = gone.cancelled() => {}
        }
    } else {
        tokio::select! {
            _ = async { tokio::join!(up, down) } => {}
            () = gone.cancelled() => {}
        }
    }
}

struct Pending {
    data: Option<Stream>,
    error: Option<Stream>,
    port: String,
    since: tokio::time::Instant,
}

/// The request id of a stream: its header, or (clients that send none) derived from
/// the stream id as the kubelet does: the data stream follows its error stream.
fn request_id(inc: &IncomingStream, kind: &str) -> String {
    match inc.headers().get("requestid") {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => {
            let id = inc.id();
            let base = if kind == "data" {
                id.saturating_sub(2)
            } else {
                id
            };
            format!("stream-{base}")
        }
    }
}

pub(crate) async fn serve_spdy<T: Conn, B: Backend>(
    io: T,
    req: cri::PortForwardRequest,
    backend: Arc<B>,
    limits: Limits,
    gone: CancellationToken,
) {
    let pod = req.pod_sandbox_id;
    let (session, mut incoming) = crate::spdy_session(io, &gone);
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        let inc = tokio::select! {
            s = incoming.accept() => match s { Some(s) => s, None => break },
            _ = sweep.tick() => {
                let now = tokio::time::Instant::now();
                let stale: Vec<String> = pending
                    .iter()
                    .filter(|(_, p)| now.duration_since(p.since) > limits.stream_creation)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in stale {
                    if let Some(p) = pending.remove(&k) {
                        debug!(request = %k, "port forward pair not completed in time");
                        for s in [p.data, p.error].into_iter().flatten() {
                            let (_, w) = s.split();
                            w.reset(RstStatus::CANCEL);
                        }
                    }
                }
                continue;
            }
            () = gone.cancelled() => break,
        };
        let kind = inc.headers().get("streamtype").unwrap_or("").to_string();
        if kind != "data" && kind != "error" {
            inc.reset(RstStatus::REFUSED_STREAM);
            continue;
        }
        let id = request_id(&inc, &kind);
        let port = inc.headers().get("port").unwrap_or("").to_string();
        let Ok(stream) = inc.reply(Headers::new()) else {
            break;
        };
        let p = pending.entry(id.clone()).or_insert_with(|| Pending {
            data: None,
            error: None,
            port: port.clone(),
            since: tokio::time::Instant::now(),
        });
        let slot = if kind == "data" {
            &mut p.data
        } else {
            &mut p.error
        };
        if slot.is_some() {
            debug!(request = %id, %kind, "duplicate port forward stream");
            let (_, w) = stream.split();
            w.reset(RstStatus::PROTOCOL_ERROR);
            continue;
        }
        *slot = Some(stream);
        if p.data.is_some() && p.error.is_some() {
            if let Some(Pending {
                data: Some(data),
                error: Some(error),
                port,
                ..
            }) = pending.remove(&id)
            {
                let backend = backend.clone();
                let pod = pod.clone();
                let gone = gone.clone();
                tokio::spawn(async move {
                    forward_pair(&*backend, &pod, &port, data, error, &gone).await;
                });
            }
        }
    }
    session.close();
}

async fn forward_pair<B: Backend>(
    backend: &B,
    pod: &str,
    port: &str,
    data: Stream,
    error: Stream,
    gone: &CancellationToken,
) {
    let (data_r, mut data_w) = data.split();
    let (_, mut err_w) = error.split();
    match dial(backend, pod, parse_port(port)).await {
        Ok(tcp) => splice(tcp, data_r, &mut data_w, gone, false).await,
        Err(msg) => {
            let _ = err_w.write_all(msg.as_bytes()).await;
            let _ = data_w.shutdown().await;
        }
    }
    let _ = err_w.shutdown().await;
}

pub(crate) async fn serve_ws<T: Conn, B: Backend>(
    io: T,
    req: cri::PortForwardRequest,
    query: &str,
    backend: Arc<B>,
    gone: CancellationToken,
) {
    let pod = req.pod_sandbox_id;
    // Ports from the query (`ports=80,8080` or repeated), else the request's.
    let mut raw: Vec<String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "ports" || *k == "port")
        .flat_map(|(_, v)| v.split(',').map(str::to_string).collect::<Vec<_>>())
        .collect();
    if raw.is_empty() {
        raw = req.port.iter().map(|p| p.to_string()).collect();
    }
    let ports: Vec<Result<u16, String>> = raw.iter().map(|p| parse_port(p)).collect();
    let Ok(n) = u8::try_from(ports.len()) else {
        return;
    };
    if n == 0 || n > 127 {
        return;
    }
    let layout = Layout {
        inputs: (0..n).map(|i| 2 * i).collect(),
        resize: None,
        close_signal: true,
    };
    let mut mux = Mux::start(io, layout, gone.clone()).await;
    let mut tasks = Vec::new();
    for (i, port) in ports.into_iter().enumerate() {
        let Ok(i) = u8::try_from(i) else { break };
        let (data_ch, err_ch) = (2 * i, 2 * i + 1);
        let number = port
            .as_ref()
            .map(|p| *p)
            .unwrap_or(0)
            .to_le_bytes()
            .to_vec();
        mux.send(data_ch, number.clone()).await;
        mux.send(err_ch, number).await;
        let Some(input) = mux.input(data_ch) else {
            continue;
        };
        let mut out = mux.output(data_ch);
        let mut err = mux.output(err_ch);
        let backend = backend.clone();
        let pod = pod.clone();
        let gone = gone.clone();
        tasks.push(tokio::spawn(async move {
            match dial(&*backend, &pod, port).await {
                Ok(tcp) => splice(tcp, input, &mut out, &gone, true).await,
                Err(msg) => {
                    let _ = err.write_all(msg.as_bytes()).await;
                }
            }
        }));
    }
    tokio::select! {
        _ = futures_util::future::join_all(tasks) => {}
        () = gone.cancelled() => {}
    }
    mux.close().await;
    gone.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_checked() {
        assert_eq!(parse_port("8080"), Ok(8080));
        assert!(parse_port("0").is_err());
        assert!(parse_port("70000").is_err());
        assert!(parse_port("http").is_err());
    }
}

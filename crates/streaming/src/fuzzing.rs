//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not an API): the
//! WebSocket forms of exec/attach and port forward on an already upgraded
//! connection, and the resize stream decoder, so that a harness can feed them what a
//! client sends.

use std::sync::Arc;

use crius_cri_api::v1 as cri;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::status::ResizeDecoder;
use crate::{Backend, Request, TermSize};

/// Serves an exec or attach request over WebSocket subprotocol `protocol` on `io`,
/// as the server does after the upgrade.
pub async fn websocket_exec<T, B>(
    io: T,
    protocol: &str,
    request: Request,
    backend: Arc<B>,
    gone: CancellationToken,
) where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    B: Backend,
{
    crate::remotecommand::serve_ws(io, protocol, request, backend, gone).await;
}

/// Serves a port-forward request over WebSocket on `io`; `query` is the request
/// URL's query string (`ports=80,8080`).
pub async fn websocket_port_forward<T, B>(
    io: T,
    request: cri::PortForwardRequest,
    query: &str,
    backend: Arc<B>,
    gone: CancellationToken,
) where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    B: Backend,
{
    crate::portforward::serve_ws(io, request, query, backend, gone).await;
}

/// Feeds a resize stream to the decoder in the given pieces; the sizes decoded
/// until the first error, and that error.
pub fn resize(pieces: &[&[u8]]) -> (Vec<TermSize>, Option<String>) {
    let mut d = ResizeDecoder::default();
    let mut out = Vec::new();
    for p in pieces {
        match d.feed(p) {
            Ok(sizes) => out.extend(sizes),
            Err(e) => return (out, Some(e.to_string())),
        }
    }
    (out, None)
}

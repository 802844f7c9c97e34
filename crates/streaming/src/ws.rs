//! Kubernetes' channel protocol over WebSocket: every binary message starts with a
//! channel byte (exec: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; port forward:
//! two channels per port). `v5.channel.k8s.io` adds message `[255, ch]`: the client
//! will send nothing more on channel `ch` (how stdin reaches EOF).
//!
//! [`Mux`] turns one WebSocket into per-channel byte streams: input channels become
//! [`DuplexStream`] readers, output channels [`ChannelWriter`]s (AsyncWrite), resize
//! messages a channel of sizes. One task reads the socket, one writes it.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_util::sync::{CancellationToken, PollSender};

use crate::Conn;
use crate::status::{ResizeDecoder, TermSize};

/// `[255, ch]`: the client closed channel `ch` (v5 only).
const CLOSE_SIGNAL: u8 = 255;
/// Largest piece of output put in one message.
const MAX_CHUNK: usize = 32 * 1024;
/// Buffer between the socket reader and a channel's consumer.
const INPUT_BUFFER: usize = 64 * 1024;

enum Out {
    Data(u8, Bytes),
    Close,
}

/// One WebSocket, split into channels.
pub(crate) struct Mux {
    inputs: HashMap<u8, DuplexStream>,
    resize: Option<mpsc::Receiver<TermSize>>,
    tx: mpsc::Sender<Out>,
    writer: tokio::task::JoinHandle<()>,
}

/// What the mux reads and how.
pub(crate) struct Layout {
    /// Channels whose messages are client data for us.
    pub(crate) inputs: Vec<u8>,
    /// The channel carrying terminal sizes, if any.
    pub(crate) resize: Option<u8>,
    /// Whether `[255, ch]` closes an input channel (`v5.channel.k8s.io`).
    pub(crate) close_signal: bool,
}

type Sink<T> = futures_util::stream::SplitSink<WebSocketStream<T>, Message>;
type Source<T> = futures_util::stream::SplitStream<WebSocketStream<T>>;

impl Mux {
    /// Starts the reader and writer tasks on an upgraded connection. `gone` is
    /// cancelled when the client closes or the socket fails; cancelling it stops both.
    pub(crate) async fn start<T: Conn>(io: T, layout: Layout, gone: CancellationToken) -> Mux {
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(16 << 20);
        config.max_frame_size = Some(16 << 20);
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        let (sink, stream) = ws.split();
        let (tx, rx) = mpsc::channel::<Out>(64);
        let mut inputs = HashMap::new();
        let mut feeds: HashMap<u8, DuplexStream> = HashMap::new();
        for ch in &layout.inputs {
            let (ours, theirs) = tokio::io::duplex(INPUT_BUFFER);
            inputs.insert(*ch, theirs);
            feeds.insert(*ch, ours);
        }
        let (resize_tx, resize_rx) = mpsc::channel(16);
        let resize = layout.resize.map(|_| resize_rx);
        tokio::spawn(read_socket(stream, layout, feeds, resize_tx, gone.clone()));
        let writer = tokio::spawn(write_socket(sink, rx, gone));
        Mux {
            inputs,
            resize,
            tx,
            writer,
        }
    }

    /// The reader of an input channel (once).
    pub(crate) fn input(&mut self, ch: u8) -> Option<DuplexStream> {
        self.inputs.remove(&ch)
    }

    /// Terminal sizes (once).
    pub(crate) fn resize(&mut self) -> Option<mpsc::Receiver<TermSize>> {
        self.resize.take()
    }

    /// A writer for output channel `ch`.
    pub(crate) fn output(&self, ch: u8) -> ChannelWriter {
        ChannelWriter {
            ch,
            tx: PollSender::new(self.tx.clone()),
        }
    }

    /// Sends one whole message on `ch`.
    pub(crate) async fn send(&self, ch: u8, data: Vec<u8>) {
        let _ = self.tx.send(Out::Data(ch, data.into())).await;
    }

    /// Sends a normal close after everything queued, and waits (bounded) for it to go.
    pub(crate) async fn close(self) {
        let _ = self.tx.send(Out::Close).await;
        drop(self.tx);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.writer).await;
    }
}

/// The reader task: client messages to their channels' feeds, resize messages
/// decoded, `[255, ch]` closing a feed; cancels `gone` when the client closes.
async fn read_socket<T>(
    mut stream: Source<T>,
    layout: Layout,
    mut feeds: HashMap<u8, DuplexStream>,
    resize_tx: mpsc::Sender<TermSize>,
    gone: CancellationToken,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut decoder = ResizeDecoder::default();
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            () = gone.cancelled() => break,
        };
        let data = match msg {
            Some(Ok(Message::Binary(d))) => d,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            // Pings are answered by the library; text (base64 protocols) unsupported.
            Some(Ok(_)) => continue,
        };
        let Some((&ch, payload)) = data.split_first() else {
            continue;
        };
        if layout.close_signal && ch == CLOSE_SIGNAL {
            if let Some(target) = payload.first() {
                // Dropping our end gives the consumer EOF.
                if let Some(mut feed) = feeds.remove(target) {
                    let _ = feed.shutdown().await;
                }
            }
            continue;
        }
        if Some(ch) == layout.resize {
            match decoder.feed(payload) {
                Ok(sizes) => {
                    for s in sizes {
                        if resize_tx.send(s).await.is_err() {
                            break;
                        }
                    }
                }
                Err(e) => tracing::debug!("websocket stream: {}", crate::chain(&e)),
            }
            continue;
        }
        if let Some(feed) = feeds.get_mut(&ch) {
            if feed.write_all(payload).await.is_err() {
                // The consumer is gone; drop what it would have read.
                feeds.remove(&ch);
            }
        }
    }
    gone.cancel();
}

/// The writer task: queued output as channel messages, then a normal close; cancels
/// `gone` when it ends.
async fn write_socket<T>(mut sink: Sink<T>, mut rx: mpsc::Receiver<Out>, gone: CancellationToken)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let out = tokio::select! {
            o = rx.recv() => o,
            () = gone.cancelled() => None,
        };
        match out {
            Some(Out::Data(ch, bytes)) => {
                let mut msg = Vec::with_capacity(bytes.len() + 1);
                msg.push(ch);
                msg.extend_from_slice(&bytes);
                if sink.send(Message::Binary(msg.into())).await.is_err() {
                    break;
                }
            }
            Some(Out::Close) => {
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    })))
                    .await;
                break;
            }
            None => break,
        }
    }
    let _ = sink.close().await;
    gone.cancel();
}

/// Output on one channel, as an `AsyncWrite`. Shutdown is a no-op: the channel protocol
/// has no per-channel end from the server's side.
pub(crate) struct ChannelWriter {
    ch: u8,
    tx: PollSender<Out>,
}

impl AsyncWrite for ChannelWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if ready!(self.tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = buf.len().min(MAX_CHUNK);
        let ch = self.ch;
        match self
            .tx
            .send_item(Out::Data(ch, Bytes::copy_from_slice(&buf[..n])))
        {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Buffer between a tunnelled byte stream and its WebSocket.
const TUNNEL_BUFFER: usize = 64 * 1024;

/// A byte stream carried in the binary messages of a WebSocket, as newer clients
/// tunnel SPDY (`SPDY/3.1+portforward.k8s.io`): message boundaries mean nothing, a
/// normal close is EOF. The returned end reads what the client sends and writes to
/// it; shutting down its write side (or dropping it) sends a normal close. One task
/// reads the socket, one writes it; either ending cancels `gone`, and `gone` cancelled
/// stops both.
pub(crate) async fn tunnel<T: Conn>(io: T, gone: CancellationToken) -> DuplexStream {
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(16 << 20);
    config.max_frame_size = Some(16 << 20);
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let (mut sink, mut stream) = ws.split();
    let (theirs, ours) = tokio::io::duplex(TUNNEL_BUFFER);
    let (mut from_us, mut to_us) = tokio::io::split(ours);
    let reader_gone = gone.clone();
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                m = stream.next() => m,
                () = reader_gone.cancelled() => break,
            };
            let data = match msg {
                Some(Ok(Message::Binary(d))) => d,
                // Only binary messages carry the stream (as the client checks too).
                Some(Ok(Message::Text(_))) => {
                    tracing::debug!("tunnelled stream: text message from the client");
                    break;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                // Pings are answered by the library.
                Some(Ok(_)) => continue,
            };
            if to_us.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = to_us.shutdown().await;
        reader_gone.cancel();
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_CHUNK];
        loop {
            let n = tokio::select! {
                r = tokio::io::AsyncReadExt::read(&mut from_us, &mut buf) => r.unwrap_or(0),
                () = gone.cancelled() => 0,
            };
            if n == 0 {
                break;
            }
            if sink
                .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
            {
                gone.cancel();
                return;
            }
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
        let _ = sink.close().await;
        gone.cancel();
    });
    theirs
}

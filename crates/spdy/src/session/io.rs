//! Stream handles: [`IncomingStream`], [`Stream`] and its two halves.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::SessionError;
use super::shared::{End, Guard, StreamCell, lock, reset_error, session_failed};
use crate::encode::validate_headers;
use crate::{Frame, Headers, RstStatus, SynReply};

/// A stream the peer opened, waiting for our answer.
///
/// Answer with [`IncomingStream::reply`] or [`IncomingStream::reset`];
/// dropping it unanswered refuses the stream (RST_STREAM REFUSED_STREAM).
pub struct IncomingStream {
    guard: Arc<Guard>,
    cell: Arc<StreamCell>,
    headers: Headers,
    answered: bool,
}

impl std::fmt::Debug for IncomingStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingStream")
            .field("id", &self.cell.id)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl IncomingStream {
    pub(super) fn new(guard: Arc<Guard>, cell: Arc<StreamCell>, headers: Headers) -> Self {
        Self {
            guard,
            cell,
            headers,
            answered: false,
        }
    }

    /// The stream id (odd when the peer is the client).
    pub fn id(&self) -> u32 {
        self.cell.id
    }

    /// The headers of the peer's SYN_STREAM.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Whether the peer's SYN_STREAM carried FLAG_FIN: it sends no data.
    pub fn is_remote_finished(&self) -> bool {
        lock(&self.cell.state).remote_fin
    }

    /// Accepts the stream: queues SYN_REPLY with `headers` (ahead of any data
    /// written to the returned stream).
    ///
    /// Fails if the headers cannot be encoded (the stream is then refused),
    /// if the peer reset the stream meanwhile, or if the session has ended.
    pub fn reply(mut self, headers: Headers) -> Result<Stream, SessionError> {
        validate_headers(&headers).map_err(SessionError::InvalidHeaders)?;
        let shared = &self.guard.shared;
        let done = {
            let mut inner = shared.lock_to_send()?;
            let done = {
                let mut st = lock(&self.cell.state);
                if let Some(reset) = st.reset {
                    self.answered = true;
                    return Err(SessionError::Reset(reset.status));
                }
                st.awaiting_our_reply = false;
                st.done()
            };
            inner.data.push_back(super::shared::Queued {
                frame: Frame::SynReply(SynReply {
                    stream_id: self.cell.id,
                    fin: false,
                    headers: headers.clone(),
                }),
                stream: None,
                ack: None,
            });
            done
        };
        self.answered = true;
        shared.writer_wake.notify_one();
        if done {
            shared.remove(&self.cell);
        }
        let request = std::mem::take(&mut self.headers);
        Ok(Stream::new(
            self.guard.clone(),
            self.cell.clone(),
            request,
            headers,
        ))
    }

    /// Rejects the stream with RST_STREAM `status` (status 0, which
    /// spdystream treats as a session error, is sent as CANCEL).
    pub fn reset(mut self, status: RstStatus) {
        self.answered = true;
        self.guard.shared.reset_stream(
            &self.cell,
            status,
            false,
            true,
            SessionError::Reset(status),
        );
    }
}

impl Drop for IncomingStream {
    fn drop(&mut self) {
        if !self.answered {
            self.guard.shared.reset_stream(
                &self.cell,
                RstStatus::REFUSED_STREAM,
                false,
                true,
                SessionError::Reset(RstStatus::REFUSED_STREAM),
            );
        }
    }
}

/// An established stream: both directions, until [`Stream::split`].
///
/// Reading and writing work as on its halves ([`StreamReader`],
/// [`StreamWriter`]); dropping it half-closes our side and discards what
/// the peer sends.
pub struct Stream {
    headers: Headers,
    reply_headers: Headers,
    reader: StreamReader,
    writer: StreamWriter,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id())
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl Stream {
    pub(super) fn new(
        guard: Arc<Guard>,
        cell: Arc<StreamCell>,
        headers: Headers,
        reply_headers: Headers,
    ) -> Self {
        Self {
            headers,
            reply_headers,
            reader: StreamReader {
                guard: guard.clone(),
                cell: cell.clone(),
            },
            writer: StreamWriter {
                inner: Arc::new(WriterInner { guard, cell }),
            },
        }
    }

    /// The stream id.
    pub fn id(&self) -> u32 {
        self.reader.cell.id
    }

    /// The headers of the stream's SYN_STREAM (ours or the peer's).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The headers of the stream's SYN_REPLY (the peer's or ours).
    pub fn reply_headers(&self) -> &Headers {
        &self.reply_headers
    }

    /// Resets the stream; see [`StreamWriter::reset`].
    pub fn reset(&self, status: RstStatus) {
        self.writer.reset(status);
    }

    /// Splits the stream into independently owned halves.
    pub fn split(self) -> (StreamReader, StreamWriter) {
        (self.reader, self.writer)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().writer).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().writer).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().writer).poll_shutdown(cx)
    }
}

/// The receiving half of a stream.
///
/// Reads return buffered data, then EOF (`Ok(0)`) once the peer has
/// half-closed (FIN) or the session ended cleanly; after a reset, the data
/// received before it and then an error of kind
/// [`io::ErrorKind::ConnectionReset`]; after a socket or protocol error,
/// the buffered data and then [`io::ErrorKind::ConnectionAborted`].
///
/// Dropping it discards whatever the peer still sends on the stream (the
/// session never waits for a dropped reader).
pub struct StreamReader {
    guard: Arc<Guard>,
    cell: Arc<StreamCell>,
}

impl std::fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReader")
            .field("id", &self.cell.id)
            .finish_non_exhaustive()
    }
}

impl StreamReader {
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.cell.id
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let (n, delta, wake_task) = {
            let mut st = lock(&this.cell.state);
            if st.buffered == 0 {
                if st.remote_fin {
                    return Poll::Ready(Ok(()));
                }
                if let Some(reset) = st.reset {
                    return Poll::Ready(Err(reset_error(reset)));
                }
                return match st.ended {
                    Some(End::Clean) => Poll::Ready(Ok(())),
                    Some(End::Failed) => Poll::Ready(Err(session_failed())),
                    None => {
                        st.read_waker = Some(cx.waker().clone());
                        Poll::Pending
                    }
                };
            }
            let mut n = 0;
            while buf.remaining() > 0 {
                let off = st.recv_off;
                let Some(front) = st.recv.front() else {
                    break;
                };
                let chunk = front.get(off..).unwrap_or_default();
                let k = chunk.len().min(buf.remaining());
                buf.put_slice(chunk.get(..k).unwrap_or_default());
                n += k;
                if off + k >= front.len() {
                    st.recv.pop_front();
                    st.recv_off = 0;
                } else {
                    st.recv_off = off + k;
                }
            }
            st.buffered -= n;
            let delta = st.ack(n);
            (n, delta, std::mem::take(&mut st.reader_task_waiting))
        };
        let shared = &this.guard.shared;
        if wake_task {
            shared.reader_wake.notify_one();
        }
        shared.consumed(this.cell.id, delta, n);
        Poll::Ready(Ok(()))
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        let (n, delta, wake_task) = {
            let mut st = lock(&self.cell.state);
            st.reader_dropped = true;
            st.read_waker = None;
            let n = std::mem::take(&mut st.buffered);
            st.recv.clear();
            st.recv_off = 0;
            let delta = if n > 0 { st.ack(n) } else { None };
            (n, delta, std::mem::take(&mut st.reader_task_waiting))
        };
        let shared = &self.guard.shared;
        if wake_task {
            shared.reader_wake.notify_one();
        }
        if n > 0 {
            shared.consumed(self.cell.id, delta, n);
        }
    }
}

/// The sending half of a stream; clones share it.
///
/// Writes queue DATA frames of at most 32 KiB for the session's writer task
/// and wait only while the session's send queue is full (no SPDY send
/// window is enforced). `poll_flush` returns at once: the writer task
/// flushes the socket whenever its queue runs empty. `poll_shutdown`
/// half-closes the stream (an empty DATA frame with FLAG_FIN); dropping the
/// last clone does the same. Writes fail with
/// [`io::ErrorKind::ConnectionReset`] after a reset and
/// [`io::ErrorKind::BrokenPipe`] after shutdown or once the session ended.
#[derive(Clone)]
pub struct StreamWriter {
    inner: Arc<WriterInner>,
}

impl std::fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWriter")
            .field("id", &self.inner.cell.id)
            .finish_non_exhaustive()
    }
}

struct WriterInner {
    guard: Arc<Guard>,
    cell: Arc<StreamCell>,
}

impl Drop for WriterInner {
    fn drop(&mut self) {
        let _ = self.guard.shared.half_close(&self.cell);
    }
}

impl StreamWriter {
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.inner.cell.id
    }

    /// Resets the stream with RST_STREAM `status` (queued behind the frames
    /// already queued for it; its unsent DATA is dropped). Both halves then
    /// fail. Does nothing if the stream is already over. Status 0, which
    /// spdystream treats as a session error, is sent as CANCEL.
    pub fn reset(&self, status: RstStatus) {
        self.inner.guard.shared.reset_stream(
            &self.inner.cell,
            status,
            false,
            true,
            SessionError::Reset(status),
        );
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let inner = &self.inner;
        inner.guard.shared.poll_send_data(cx, &inner.cell, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let inner = &self.inner;
        Poll::Ready(inner.guard.shared.half_close(&inner.cell))
    }
}

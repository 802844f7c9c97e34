//! An async SPDY/3.1 session over tokio (feature `tokio`), built on the codec.
//!
//! [`Session::new`] takes a connected socket (after the HTTP upgrade to
//! `SPDY/3.1`) and spawns two tasks: a **reader** that decodes frames and
//! dispatches them to streams, and a **writer** that owns the [`Encoder`]
//! (header compression is one context per direction, so every header block
//! must be encoded and written in one order) and the socket's write half.
//! Handles talk to the writer through a queue; the writer takes every
//! queued control frame first, then the ordered SYN/DATA queue.
//!
//! Behaviour chosen for moby/spdystream, the SPDY side of `kubectl` and
//! `crictl` (through `k8s.io/apimachinery/pkg/util/httpstream/spdy`):
//!
//! - **No send windows.** spdystream never sends WINDOW_UPDATE, so holding
//!   ourselves to the SPDY/3.1 send windows would stall every stream after
//!   64 KiB. We do send WINDOW_UPDATE (stream and session) for data our
//!   readers consume, so peers that enforce windows keep going.
//! - **Receive buffers are bounded** per stream
//!   ([`SessionConfig::max_stream_buffer`]). When one is full the reader task
//!   waits for that stream's reader: head-of-line blocking for the
//!   connection, as spdystream has. A stream whose [`StreamReader`] was
//!   dropped discards its data instead.
//! - Every peer SYN_STREAM is surfaced through [`Incoming`] and must be
//!   answered with [`IncomingStream::reply`] (client-go waits for the
//!   SYN_REPLY of each stream it creates) or [`IncomingStream::reset`].
//! - DATA frames we send carry at most 32 KiB.
//! - PING is answered automatically; SETTINGS and WINDOW_UPDATE are accepted
//!   and ignored; DATA for an unknown stream is answered with RST_STREAM
//!   INVALID_STREAM; a session-level protocol error is answered with GOAWAY
//!   PROTOCOL_ERROR and closes the session.
//!
//! # Lifecycle
//!
//! - A stream leaves the session's table once it is reset or FIN went both
//!   ways, so long sessions with many short streams stay small.
//! - After a GOAWAY in either direction no new streams are opened or
//!   accepted; once the last stream is gone the session writes out what is
//!   queued, closes its side of the socket and ends.
//! - On EOF or an error reading the socket, or [`Session::close`], the
//!   session ends at once: readers return what they buffered and then EOF
//!   (an error if the socket failed), writers fail, [`Incoming::accept`]
//!   returns `None` and [`Session::closed`] resolves. If writing fails
//!   first, writers fail at once and the rest follows when the read side
//!   ends, so data the peer sent before it went is still delivered.
//! - When every handle ([`Session`], [`Incoming`], streams) has been dropped
//!   the session drains like after a GOAWAY and ends; no task outlives it.

mod io;
mod shared;
mod task;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

pub use io::{IncomingStream, Stream, StreamReader, StreamWriter};
use shared::{End, Guard, Phase, Shared, StreamCell, StreamState, lock};

use crate::encode::validate_headers;
use crate::{Error, Frame, GoAwayStatus, Headers, MAX_STREAM_ID, Ping, RstStatus, SynStream};

#[cfg(doc)]
use crate::Encoder;

/// Which end of the connection a session is: decides stream and PING id
/// parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that made the connection (`kubectl`): opens odd stream ids.
    Client,
    /// The side that accepted it (criusd): opens even stream ids.
    Server,
}

/// Tunables of a [`Session`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Received bytes buffered per stream before the session stops reading
    /// from the socket until the stream's reader catches up (default 1 MiB).
    /// A single DATA frame larger than this is still accepted into an empty
    /// buffer.
    pub max_stream_buffer: usize,
    /// Most streams open at once, in both directions together (default
    /// 1000). Further peer streams are refused with RST_STREAM
    /// REFUSED_STREAM; [`Session::open_stream`] fails.
    pub max_streams: usize,
    /// DATA bytes queued for the writer task, all streams together, before
    /// stream writes wait (default 512 KiB).
    pub max_send_queue: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_stream_buffer: 1 << 20,
            max_streams: 1000,
            max_send_queue: 512 << 10,
        }
    }
}

/// Why a session operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The session has ended (socket closed or failed, or [`Session::close`]).
    #[error("the SPDY session has ended")]
    Closed,
    /// A GOAWAY was sent or received: no new streams.
    #[error("the SPDY session is going away (GOAWAY)")]
    GoingAway,
    /// [`SessionConfig::max_streams`] streams are open.
    #[error("too many open SPDY streams (limit {0})")]
    TooManyStreams(usize),
    /// Every stream id of our parity has been used.
    #[error("no SPDY stream ids left on this session")]
    StreamIdsExhausted,
    /// The stream was reset (by the peer, or locally) before it was set up.
    #[error("SPDY stream reset (status {})", .0.0)]
    Reset(RstStatus),
    /// The headers cannot be encoded (for example an upper-case name).
    #[error("invalid SPDY headers: {0}")]
    InvalidHeaders(#[source] Error),
}

/// A SPDY session: a cheap, cloneable handle.
///
/// See the [module documentation](self) for the protocol behaviour.
#[derive(Clone)]
pub struct Session {
    guard: Arc<Guard>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.guard.shared.role)
            .field("streams", &self.stream_count())
            .finish_non_exhaustive()
    }
}

/// The streams the peer opens, in order. Not cloneable: one acceptor.
pub struct Incoming {
    guard: Arc<Guard>,
    rx: mpsc::UnboundedReceiver<IncomingStream>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming").finish_non_exhaustive()
    }
}

impl Incoming {
    /// The next stream the peer opened, or `None` once the session has ended
    /// or no more streams will be accepted (after a GOAWAY either way).
    ///
    /// Cancel-safe: no stream is lost if the future is dropped.
    pub async fn accept(&mut self) -> Option<IncomingStream> {
        let stream = self.rx.recv().await?;
        if lock(&self.guard.shared.inner).ended.is_some() {
            return None;
        }
        Some(stream)
    }
}

impl Session {
    /// Starts a session on `io`, spawning its reader and writer tasks.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as [`tokio::spawn`] does).
    pub fn new<T>(io: T, role: Role, cfg: SessionConfig) -> (Session, Incoming)
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(role, cfg, tx));
        let guard = Arc::new(Guard {
            shared: shared.clone(),
        });
        lock(&shared.inner).guard = Arc::downgrade(&guard);
        tokio::spawn(task::read_loop(shared.clone(), rd));
        tokio::spawn(task::write_loop(shared, wr));
        let incoming = Incoming {
            guard: guard.clone(),
            rx,
        };
        (Session { guard }, incoming)
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.guard.shared
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.shared().role
    }

    /// Opens a stream: sends SYN_STREAM with `headers` and waits for the
    /// peer's SYN_REPLY.
    ///
    /// Fails with [`SessionError::Reset`] if the peer resets the stream
    /// instead, [`SessionError::GoingAway`] after a GOAWAY, and
    /// [`SessionError::Closed`] if the session ends first. Dropping the
    /// future before the reply resets the stream (CANCEL).
    pub async fn open_stream(&self, headers: Headers) -> Result<Stream, SessionError> {
        validate_headers(&headers).map_err(SessionError::InvalidHeaders)?;
        let shared = self.shared();
        let (tx, rx) = oneshot::channel();
        let cell = {
            let mut inner = shared.lock_to_send()?;
            if inner.goaway_sent || inner.goaway_received {
                return Err(SessionError::GoingAway);
            }
            if inner.streams.len() >= shared.cfg.max_streams {
                return Err(SessionError::TooManyStreams(shared.cfg.max_streams));
            }
            let id = inner.next_id;
            if id > MAX_STREAM_ID {
                return Err(SessionError::StreamIdsExhausted);
            }
            inner.next_id = id + 2;
            let cell = StreamCell::new(
                id,
                StreamState {
                    pending_reply: Some(tx),
                    ..StreamState::default()
                },
            );
            inner.streams.insert(id, cell.clone());
            // Queued under the lock, so stream ids go out in increasing order.
            inner.data.push_back(shared::Queued {
                frame: Frame::SynStream(SynStream {
                    stream_id: id,
                    headers: headers.clone(),
                    ..SynStream::default()
                }),
                stream: None,
                ack: None,
            });
            cell
        };
        shared.writer_wake.notify_one();
        let mut pending = PendingOpen {
            shared: shared.clone(),
            cell: Some(cell),
        };
        let reply = rx.await;
        let cell = pending.cell.take().ok_or(SessionError::Closed)?;
        match reply {
            Ok(Ok(reply_headers)) => Ok(Stream::new(
                self.guard.clone(),
                cell,
                headers,
                reply_headers,
            )),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SessionError::Closed),
        }
    }

    /// Sends GOAWAY (once) and stops accepting streams: later peer
    /// SYN_STREAMs are refused, [`Incoming::accept`] returns what is already
    /// queued and then `None`, and [`Session::open_stream`] fails. Open
    /// streams carry on; once none is left the session closes. Resolves once
    /// the GOAWAY has been written (or the session ended).
    ///
    /// spdystream stops reading as soon as it receives a GOAWAY and closes
    /// the connection once its streams are torn down, so to such a peer this
    /// is a prompt close: call it when our streams are finished.
    pub async fn goaway(&self) {
        if let Some(written) = self.shared().goaway(GoAwayStatus::OK) {
            let _ = written.await;
        }
    }

    /// Tears the session down now: queued frames are dropped, the socket is
    /// closed, readers see EOF and writers fail.
    pub fn close(&self) {
        self.shared().end(End::Clean, Phase::Abort);
    }

    /// Resolves once the session is over and both of its tasks have finished
    /// (the socket has been dropped).
    pub async fn closed(&self) {
        let mut done = self.shared().done.subscribe();
        let _ = done.wait_for(|d| *d).await;
    }

    /// Whether the session has ended (its tasks may still be finishing).
    pub fn is_closed(&self) -> bool {
        lock(&self.shared().inner).ended.is_some()
    }

    /// When a frame was last read or written, for idle timeouts.
    pub fn last_activity(&self) -> Instant {
        self.shared().last_activity()
    }

    /// Streams in the session's table: open, or waiting for a SYN_REPLY.
    pub fn stream_count(&self) -> usize {
        lock(&self.shared().inner).streams.len()
    }

    /// Sends a PING and waits for the peer's answer; returns the round trip
    /// time. Fails with [`SessionError::Closed`] if the session ends first.
    pub async fn ping(&self) -> Result<Duration, SessionError> {
        let shared = self.shared();
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut inner = shared.lock_to_send()?;
            let id = inner.next_ping;
            // Keep the parity; skip 0 (spdystream refuses PING id 0).
            inner.next_ping = match id.wrapping_add(2) {
                0 => 2,
                next => next,
            };
            inner.pings.insert(id, tx);
            id
        };
        let _cleanup = PendingPing {
            shared: shared.clone(),
            id,
        };
        shared.push_control(Frame::Ping(Ping { id }), None);
        let start = Instant::now();
        rx.await.map_err(|_| SessionError::Closed)?;
        Ok(start.elapsed())
    }
}

/// Resets a stream whose `open_stream` future was dropped before the reply.
struct PendingOpen {
    shared: Arc<Shared>,
    cell: Option<Arc<StreamCell>>,
}

impl Drop for PendingOpen {
    fn drop(&mut self) {
        if let Some(cell) = self.cell.take() {
            self.shared.reset_stream(
                &cell,
                RstStatus::CANCEL,
                false,
                true,
                SessionError::Reset(RstStatus::CANCEL),
            );
        }
    }
}

/// Forgets a PING whose `ping` future is gone.
struct PendingPing {
    shared: Arc<Shared>,
    id: u32,
}

impl Drop for PendingPing {
    fn drop(&mut self) {
        let tx = lock(&self.shared.inner).pings.remove(&self.id);
        drop(tx);
    }
}

//! State shared by a session's handles and its two tasks.
//!
//! Locking: one session mutex ([`Inner`]) and one mutex per stream
//! ([`StreamCell`]). A stream lock may be taken while the session lock is
//! held, never the other way round. Nothing that can drop a user handle
//! (an [`IncomingStream`] or the last [`Guard`]) is dropped while the session
//! lock is held, since those drops take the lock themselves.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::{IncomingStream, Role, SessionConfig, SessionError};
use crate::{
    DEFAULT_INITIAL_WINDOW, Data, Frame, GoAway, GoAwayStatus, Headers, MAX_WINDOW, RstStatus,
    RstStream, WindowUpdate,
};

/// Largest DATA payload the session sends in one frame.
pub(super) const MAX_DATA_FRAME: usize = 32 * 1024;

/// Consumed bytes (per stream, and for the session) that trigger a
/// WINDOW_UPDATE: half the default window, so a peer enforcing the SPDY/3.1
/// windows never stalls on us.
const WINDOW_UPDATE_THRESHOLD: u32 = DEFAULT_INITIAL_WINDOW / 2;

/// Control frames the reader task may queue before it waits for the writer
/// (answers to a peer that sends PINGs or bad frames but does not read).
pub(super) const CONTROL_QUEUE_LIMIT: usize = 1024;

/// Largest amount of DATA the writer takes off the queue for one socket write.
pub(super) const BATCH_BYTES: usize = 256 * 1024;

/// How long a draining session (GOAWAY done, protocol error, all handles
/// dropped) may take to write out what is queued before it is cut off.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Locks `m`, ignoring poisoning: every critical section leaves the state
/// consistent before anything that could panic.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where the session's tasks are in their life. Only ever moves forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Phase {
    /// Normal operation.
    Running,
    /// The reader stops; the writer writes what is queued, shuts the socket's
    /// write half and stops (within [`DRAIN_TIMEOUT`]).
    Draining,
    /// Both tasks stop now; queued frames are dropped.
    Abort,
}

/// How the session ended, as streams see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
    /// Peer EOF, `close()`, GOAWAY drain: readers see EOF.
    Clean,
    /// I/O or protocol error: readers see an error.
    Failed,
}

/// A frame waiting for the writer task.
pub(super) struct Queued {
    pub frame: Frame,
    /// The stream of a DATA frame: its data is dropped if the stream has been
    /// reset by the time the writer gets to it.
    pub stream: Option<Arc<StreamCell>>,
    /// Fired once the frame has been written to the socket.
    pub ack: Option<oneshot::Sender<()>>,
}

impl Queued {
    fn frame(frame: Frame) -> Self {
        Self {
            frame,
            stream: None,
            ack: None,
        }
    }

    fn data_len(&self) -> usize {
        match &self.frame {
            Frame::Data(d) => d.data.len(),
            _ => 0,
        }
    }
}

/// How a stream was reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Reset {
    pub status: RstStatus,
    pub by_peer: bool,
}

/// One stream's state, shared by the table, the reader task and the handles.
pub(super) struct StreamCell {
    pub id: u32,
    pub state: Mutex<StreamState>,
}

impl StreamCell {
    pub(super) fn new(id: u32, state: StreamState) -> Arc<Self> {
        Arc::new(Self {
            id,
            state: Mutex::new(state),
        })
    }
}

/// See [`StreamCell`].
#[derive(Default)]
pub(super) struct StreamState {
    /// Received data not yet read; `recv_off` bytes of the front are consumed.
    pub recv: VecDeque<Vec<u8>>,
    pub recv_off: usize,
    pub buffered: usize,
    /// The peer sent FIN.
    pub remote_fin: bool,
    /// We sent (queued) FIN, or may not send (unidirectional).
    pub local_fin: bool,
    pub reset: Option<Reset>,
    /// The session ended while the stream was open.
    pub ended: Option<End>,
    /// The StreamReader is gone: received data is discarded.
    pub reader_dropped: bool,
    pub read_waker: Option<Waker>,
    /// The reader task waits for this stream's buffer to drain.
    pub reader_task_waiting: bool,
    /// Our SYN_STREAM awaits the peer's SYN_REPLY.
    pub pending_reply: Option<oneshot::Sender<Result<Headers, SessionError>>>,
    /// The peer's SYN_STREAM awaits our SYN_REPLY (or reset).
    pub awaiting_our_reply: bool,
    /// Bytes consumed since the last stream WINDOW_UPDATE.
    pub unacked: u32,
}

impl StreamState {
    /// Whether the stream is over and leaves the table: reset, or FIN both
    /// ways once the opening handshake is complete.
    pub(super) fn done(&self) -> bool {
        self.reset.is_some()
            || (self.local_fin
                && self.remote_fin
                && self.pending_reply.is_none()
                && !self.awaiting_our_reply)
    }

    /// Records `n` consumed bytes; returns the stream WINDOW_UPDATE delta to
    /// send, if one is due.
    pub(super) fn ack(&mut self, n: usize) -> Option<u32> {
        self.unacked = self.unacked.saturating_add(clamp_window(n));
        if self.unacked >= WINDOW_UPDATE_THRESHOLD && !self.remote_fin && self.reset.is_none() {
            Some(std::mem::take(&mut self.unacked).min(MAX_WINDOW))
        } else {
            None
        }
    }

    /// The error a write on this stream gets now, if any.
    pub(super) fn write_error(&self) -> Option<io::Error> {
        if let Some(reset) = self.reset {
            return Some(reset_error(reset));
        }
        if self.ended.is_some() {
            return Some(session_closed());
        }
        if self.local_fin {
            return Some(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "SPDY stream already half-closed for writing",
            ));
        }
        None
    }
}

fn clamp_window(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(MAX_WINDOW).min(MAX_WINDOW)
}

pub(super) fn reset_error(reset: Reset) -> io::Error {
    let who = if reset.by_peer { "peer" } else { "us" };
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        format!("SPDY stream reset by {who} (status {})", reset.status.0),
    )
}

pub(super) fn session_closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "SPDY session closed")
}

pub(super) fn session_failed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "SPDY session failed (I/O or protocol error)",
    )
}

/// What the session mutex protects.
pub(super) struct Inner {
    /// Open streams (see [`StreamState::done`] for when they leave).
    pub streams: HashMap<u32, Arc<StreamCell>>,
    /// The next id for a stream we open.
    pub next_id: u32,
    /// The highest stream id the peer opened.
    pub last_peer_id: u32,
    pub next_ping: u32,
    pub pings: HashMap<u32, oneshot::Sender<()>>,
    /// Where peer streams go; `None` once no more are accepted.
    pub incoming: Option<mpsc::UnboundedSender<IncomingStream>>,
    /// The user handles' guard, for incoming streams the reader task creates.
    pub guard: Weak<Guard>,
    pub goaway_sent: bool,
    pub goaway_received: bool,
    pub ended: Option<End>,
    /// The socket's write half failed: nothing more can be sent, but the
    /// reader carries on until the socket's read half ends too.
    pub write_failed: bool,
    /// Written first: PING, WINDOW_UPDATE, RST_STREAM for stream errors
    /// found by the reader, GOAWAY PROTOCOL_ERROR.
    pub control: VecDeque<Queued>,
    /// Written in order: SYN_STREAM, SYN_REPLY, DATA, RST_STREAM of local
    /// resets (which must follow the stream's SYN) and our GOAWAY.
    pub data: VecDeque<Queued>,
    /// DATA payload bytes in `data`.
    pub data_bytes: usize,
    /// Stream writers waiting for room in `data`.
    pub send_waiters: Vec<Waker>,
    /// Bytes consumed since the last session WINDOW_UPDATE.
    pub session_unacked: u32,
}

impl Inner {
    /// Whether frames can still be queued for the peer.
    pub(super) fn can_send(&self) -> bool {
        self.ended.is_none() && !self.write_failed
    }
}

/// Held (through an `Arc`) by every user handle; when the last one goes,
/// the session drains and closes.
pub(super) struct Guard {
    pub shared: Arc<Shared>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.end(End::Clean, Phase::Draining);
    }
}

/// Everything the handles and the two tasks share.
pub(super) struct Shared {
    pub role: Role,
    pub cfg: SessionConfig,
    pub inner: Mutex<Inner>,
    /// Something was queued for the writer task (or the phase changed).
    pub writer_wake: Notify,
    /// A stream the reader task waits on consumed data, or the control
    /// queue drained.
    pub reader_wake: Notify,
    pub phase: watch::Sender<Phase>,
    /// Set once both tasks have finished.
    pub done: watch::Sender<bool>,
    tasks: AtomicUsize,
    epoch: Instant,
    /// Nanoseconds since `epoch` of the last frame read or written.
    last_activity: AtomicU64,
}

impl Shared {
    pub(super) fn new(
        role: Role,
        cfg: SessionConfig,
        incoming: mpsc::UnboundedSender<IncomingStream>,
    ) -> Self {
        let first = match role {
            Role::Client => 1,
            Role::Server => 2,
        };
        Self {
            role,
            cfg,
            inner: Mutex::new(Inner {
                streams: HashMap::new(),
                next_id: first,
                last_peer_id: 0,
                next_ping: first,
                pings: HashMap::new(),
                incoming: Some(incoming),
                guard: Weak::new(),
                goaway_sent: false,
                goaway_received: false,
                ended: None,
                write_failed: false,
                control: VecDeque::new(),
                data: VecDeque::new(),
                data_bytes: 0,
                send_waiters: Vec::new(),
                session_unacked: 0,
            }),
            writer_wake: Notify::new(),
            reader_wake: Notify::new(),
            phase: watch::Sender::new(Phase::Running),
            done: watch::Sender::new(false),
            tasks: AtomicUsize::new(2),
            epoch: Instant::now(),
            last_activity: AtomicU64::new(0),
        }
    }

    /// 1 if our stream ids and PING ids are odd, 0 if even.
    pub(super) fn own_parity(&self) -> u32 {
        match self.role {
            Role::Client => 1,
            Role::Server => 0,
        }
    }

    pub(super) fn touch(&self) {
        let nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_activity.fetch_max(nanos, Ordering::Relaxed);
    }

    pub(super) fn last_activity(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.last_activity.load(Ordering::Relaxed))
    }

    pub(super) fn stream(&self, id: u32) -> Option<Arc<StreamCell>> {
        lock(&self.inner).streams.get(&id).cloned()
    }

    /// Locks the session state to queue something the user asked for;
    /// [`SessionError::Closed`] once frames can no longer be queued.
    pub(super) fn lock_to_send(&self) -> Result<MutexGuard<'_, Inner>, SessionError> {
        let inner = lock(&self.inner);
        if !inner.can_send() {
            return Err(SessionError::Closed);
        }
        Ok(inner)
    }

    /// Called by each task as it finishes.
    pub(super) fn task_exited(&self) {
        if self.tasks.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.send_replace(true);
        }
    }

    /// Queues a control frame regardless of the queue's length (for frames
    /// the user asks for; each is bounded by what the user does).
    pub(super) fn push_control(&self, frame: Frame, ack: Option<oneshot::Sender<()>>) {
        {
            let mut inner = lock(&self.inner);
            if !inner.can_send() {
                return;
            }
            inner.control.push_back(Queued {
                frame,
                stream: None,
                ack,
            });
        }
        self.writer_wake.notify_one();
    }

    /// Queues a control frame from the reader task, waiting while the control
    /// queue is full. Returns `false` if the session stopped meanwhile.
    pub(super) async fn push_control_bounded(
        &self,
        frame: Frame,
        phase: &mut watch::Receiver<Phase>,
    ) -> bool {
        loop {
            {
                let mut inner = lock(&self.inner);
                if !inner.can_send() {
                    return true;
                }
                if inner.control.len() < CONTROL_QUEUE_LIMIT {
                    inner.control.push_back(Queued::frame(frame));
                    drop(inner);
                    self.writer_wake.notify_one();
                    return true;
                }
            }
            tokio::select! {
                () = self.reader_wake.notified() => {}
                _ = phase.wait_for(|p| *p != Phase::Running) => return false,
            }
        }
    }

    /// Queues `frame` on the ordered data queue without waiting for room
    /// (SYN frames, FIN, local RST: small and bounded by the stream count).
    fn push_data_locked(inner: &mut Inner, frame: Frame, stream: Option<Arc<StreamCell>>) {
        let q = Queued {
            frame,
            stream,
            ack: None,
        };
        inner.data_bytes += q.data_len();
        inner.data.push_back(q);
    }

    /// `AsyncWrite::poll_write` of a stream: queues up to [`MAX_DATA_FRAME`]
    /// bytes of `buf` as one DATA frame, or waits for room in the queue.
    pub(super) fn poll_send_data(
        &self,
        cx: &mut Context<'_>,
        cell: &Arc<StreamCell>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut inner = lock(&self.inner);
        if let Some(e) = lock(&cell.state).write_error() {
            return Poll::Ready(Err(e));
        }
        if !inner.can_send() {
            return Poll::Ready(Err(session_closed()));
        }
        if inner.data_bytes >= self.cfg.max_send_queue {
            if !inner.send_waiters.iter().any(|w| w.will_wake(cx.waker())) {
                inner.send_waiters.push(cx.waker().clone());
            }
            return Poll::Pending;
        }
        let n = buf.len().min(MAX_DATA_FRAME);
        let frame = Frame::Data(Data {
            stream_id: cell.id,
            fin: false,
            data: buf.get(..n).unwrap_or_default().to_vec(),
        });
        Self::push_data_locked(&mut inner, frame, Some(cell.clone()));
        drop(inner);
        self.writer_wake.notify_one();
        Poll::Ready(Ok(n))
    }

    /// Half-closes the stream for writing: queues an empty DATA frame with
    /// FLAG_FIN. Idempotent.
    pub(super) fn half_close(&self, cell: &Arc<StreamCell>) -> io::Result<()> {
        let mut inner = lock(&self.inner);
        let done = {
            let mut st = lock(&cell.state);
            if st.local_fin && st.reset.is_none() && st.ended.is_none() {
                return Ok(());
            }
            if let Some(e) = st.write_error() {
                return Err(e);
            }
            if !inner.can_send() {
                return Err(session_closed());
            }
            st.local_fin = true;
            st.done()
        };
        let fin = Frame::Data(Data {
            stream_id: cell.id,
            fin: true,
            data: Vec::new(),
        });
        Self::push_data_locked(&mut inner, fin, Some(cell.clone()));
        let drain = done && Self::remove_locked(&mut inner, cell);
        drop(inner);
        self.writer_wake.notify_one();
        if drain {
            self.end(End::Clean, Phase::Draining);
        }
        Ok(())
    }

    /// Resets a stream: marks it, fails a pending `open_stream` with
    /// `reply_err`, wakes its reader and takes it out of the table. With
    /// `send`, our RST_STREAM is queued behind the stream's earlier frames.
    pub(super) fn reset_stream(
        &self,
        cell: &Arc<StreamCell>,
        status: RstStatus,
        by_peer: bool,
        send: bool,
        reply_err: SessionError,
    ) {
        // status 0 is not a valid RST_STREAM status; spdystream's framer
        // treats it as a session error.
        let status = if status.0 == 0 {
            RstStatus::CANCEL
        } else {
            status
        };
        let mut inner = lock(&self.inner);
        let (waker, reply) = {
            let mut st = lock(&cell.state);
            if st.done() || st.ended.is_some() {
                return;
            }
            st.reset = Some(Reset { status, by_peer });
            st.awaiting_our_reply = false;
            (st.read_waker.take(), st.pending_reply.take())
        };
        if send && inner.can_send() {
            let rst = Frame::RstStream(RstStream {
                stream_id: cell.id,
                status,
            });
            Self::push_data_locked(&mut inner, rst, None);
        }
        let drain = Self::remove_locked(&mut inner, cell);
        let waiters = std::mem::take(&mut inner.send_waiters);
        drop(inner);
        self.writer_wake.notify_one();
        self.reader_wake.notify_one();
        waiters.into_iter().for_each(Waker::wake);
        if let Some(w) = waker {
            w.wake();
        }
        if let Some(tx) = reply {
            let _ = tx.send(Err(reply_err));
        }
        if drain {
            self.end(End::Clean, Phase::Draining);
        }
    }

    /// Takes `cell` out of the table (if it is still the entry for its id);
    /// returns whether the session should now drain.
    pub(super) fn remove_locked(inner: &mut Inner, cell: &Arc<StreamCell>) -> bool {
        if inner
            .streams
            .get(&cell.id)
            .is_some_and(|c| Arc::ptr_eq(c, cell))
        {
            inner.streams.remove(&cell.id);
        }
        Self::should_drain(inner)
    }

    /// Removes a finished stream (see [`StreamState::done`]).
    pub(super) fn remove(&self, cell: &Arc<StreamCell>) {
        let drain = Self::remove_locked(&mut lock(&self.inner), cell);
        if drain {
            self.end(End::Clean, Phase::Draining);
        }
    }

    /// A GOAWAY went one way or the other and no stream is left.
    fn should_drain(inner: &Inner) -> bool {
        inner.ended.is_none()
            && (inner.goaway_sent || inner.goaway_received)
            && inner.streams.is_empty()
    }

    /// Marks the stream's remote side finished (FIN received).
    pub(super) fn remote_fin(&self, cell: &Arc<StreamCell>) {
        // Both locks: the stream leaves the table before anyone can see
        // its EOF.
        let mut inner = lock(&self.inner);
        let waker = {
            let mut st = lock(&cell.state);
            if st.remote_fin {
                return;
            }
            st.remote_fin = true;
            if st.done() && Self::remove_locked(&mut inner, cell) {
                drop(st);
                drop(inner);
                self.end(End::Clean, Phase::Draining);
                return self.wake_reader_of(cell);
            }
            st.read_waker.take()
        };
        drop(inner);
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn wake_reader_of(&self, cell: &StreamCell) {
        let waker = lock(&cell.state).read_waker.take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Records `n` bytes of stream `id` consumed by its reader (or
    /// discarded) and queues the WINDOW_UPDATEs that are due.
    pub(super) fn consumed(&self, id: u32, stream_delta: Option<u32>, n: usize) {
        {
            let mut inner = lock(&self.inner);
            if !inner.can_send() {
                return;
            }
            if let Some(delta) = stream_delta {
                inner
                    .control
                    .push_back(Queued::frame(Frame::WindowUpdate(WindowUpdate {
                        stream_id: id,
                        delta,
                    })));
            }
            inner.session_unacked = inner.session_unacked.saturating_add(clamp_window(n));
            if inner.session_unacked >= WINDOW_UPDATE_THRESHOLD {
                let delta = std::mem::take(&mut inner.session_unacked).min(MAX_WINDOW);
                inner
                    .control
                    .push_back(Queued::frame(Frame::WindowUpdate(WindowUpdate {
                        stream_id: 0,
                        delta,
                    })));
            } else if stream_delta.is_none() {
                return;
            }
        }
        self.writer_wake.notify_one();
    }

    /// Sends GOAWAY (once), stops accepting peer streams; returns a receiver
    /// fired once the frame is written.
    pub(super) fn goaway(&self, status: GoAwayStatus) -> Option<oneshot::Receiver<()>> {
        let (incoming, rx, drain) = {
            let mut inner = lock(&self.inner);
            if !inner.can_send() || inner.goaway_sent {
                return None;
            }
            inner.goaway_sent = true;
            let (tx, rx) = oneshot::channel();
            let frame = Frame::GoAway(GoAway {
                last_good_stream_id: inner.last_peer_id,
                status,
            });
            // Behind what is already queued (SYN_REPLYs in particular):
            // spdystream stops reading at a GOAWAY.
            inner.data.push_back(Queued {
                frame,
                stream: None,
                ack: Some(tx),
            });
            (inner.incoming.take(), rx, Self::should_drain(&inner))
        };
        drop(incoming);
        self.writer_wake.notify_one();
        if drain {
            self.end(End::Clean, Phase::Draining);
        }
        Some(rx)
    }

    /// A session-level protocol error: drop queued data, send GOAWAY
    /// PROTOCOL_ERROR, end the session.
    pub(super) fn protocol_error(&self) {
        {
            let mut inner = lock(&self.inner);
            if inner.ended.is_none() {
                inner.data.clear();
                inner.data_bytes = 0;
                let frame = Frame::GoAway(GoAway {
                    last_good_stream_id: inner.last_peer_id,
                    status: GoAwayStatus::PROTOCOL_ERROR,
                });
                inner.control.push_back(Queued::frame(frame));
                inner.goaway_sent = true;
            }
        }
        self.end(End::Failed, Phase::Draining);
    }

    /// The socket's write half failed: drop everything queued and fail all
    /// senders; the session ends when the reader reaches the end of the
    /// socket's read half (so data the peer sent before going is not lost).
    pub(super) fn writer_failed(&self) {
        let (dropped, waiters) = {
            let mut inner = lock(&self.inner);
            inner.write_failed = true;
            inner.data_bytes = 0;
            (
                (
                    std::mem::take(&mut inner.control),
                    std::mem::take(&mut inner.data),
                ),
                std::mem::take(&mut inner.send_waiters),
            )
        };
        drop(dropped);
        waiters.into_iter().for_each(Waker::wake);
        self.reader_wake.notify_one();
    }

    /// Ends the session for its users (idempotent: the first `end` decides
    /// what streams see) and moves the tasks to `phase` (never backwards).
    pub(super) fn end(&self, end: End, phase: Phase) {
        let mut taken = None;
        let mut dropped = None;
        let waiters;
        {
            let mut inner = lock(&self.inner);
            if inner.ended.is_none() {
                inner.ended = Some(end);
                let streams: Vec<_> = inner.streams.drain().map(|(_, c)| c).collect();
                taken = Some((
                    streams,
                    inner.incoming.take(),
                    std::mem::take(&mut inner.pings),
                ));
            }
            if phase == Phase::Abort {
                dropped = Some((
                    std::mem::take(&mut inner.control),
                    std::mem::take(&mut inner.data),
                ));
                inner.data_bytes = 0;
            }
            waiters = std::mem::take(&mut inner.send_waiters);
        }
        drop(dropped);
        self.phase.send_if_modified(|p| {
            if phase > *p {
                *p = phase;
                true
            } else {
                false
            }
        });
        if let Some((streams, incoming, pings)) = taken {
            drop(incoming);
            drop(pings);
            for cell in streams {
                let (waker, reply) = {
                    let mut st = lock(&cell.state);
                    st.ended = Some(end);
                    (st.read_waker.take(), st.pending_reply.take())
                };
                if let Some(w) = waker {
                    w.wake();
                }
                if let Some(tx) = reply {
                    let _ = tx.send(Err(SessionError::Closed));
                }
            }
        }
        waiters.into_iter().for_each(Waker::wake);
        self.writer_wake.notify_one();
        self.reader_wake.notify_one();
    }

    /// Moves queued frames into `batch` for the writer: every control frame,
    /// then DATA-queue frames up to [`BATCH_BYTES`]. Returns whether frames
    /// remain queued.
    pub(super) fn take_batch(&self, batch: &mut Vec<Queued>) -> bool {
        let (waiters, wake_reader, more) = {
            let mut inner = lock(&self.inner);
            let wake_reader = inner.control.len() >= CONTROL_QUEUE_LIMIT;
            batch.extend(inner.control.drain(..));
            let mut bytes = 0;
            while bytes < BATCH_BYTES {
                let Some(q) = inner.data.pop_front() else {
                    break;
                };
                let n = q.data_len();
                bytes += n;
                inner.data_bytes -= n;
                batch.push(q);
            }
            let waiters = if inner.data_bytes < self.cfg.max_send_queue {
                std::mem::take(&mut inner.send_waiters)
            } else {
                Vec::new()
            };
            (waiters, wake_reader, !inner.data.is_empty())
        };
        waiters.into_iter().for_each(Waker::wake);
        if wake_reader {
            self.reader_wake.notify_one();
        }
        more
    }
}

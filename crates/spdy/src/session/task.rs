//! The reader and writer tasks of a session.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::shared::{DRAIN_TIMEOUT, End, Phase, Queued, Shared, StreamCell, StreamState, lock};
use super::{IncomingStream, SessionError};
use crate::{Data, Decoder, Encoder, Frame, Ping, RstStatus, RstStream, SynReply, SynStream};

/// Size of the socket read buffer.
const READ_BUF: usize = 64 * 1024;

/// What the reader does after a frame.
enum Flow {
    Continue,
    /// The session stopped while the reader waited.
    Stop,
    /// A session-level protocol error.
    ProtocolError,
}

/// Why the read loop ended.
enum ReadEnd {
    Eof,
    Io,
    ProtocolError,
    Stopped,
}

/// Reads frames and dispatches them until EOF, an error, or the session
/// leaving [`Phase::Running`].
pub(super) async fn read_loop<R: AsyncRead + Unpin>(shared: Arc<Shared>, mut rd: R) {
    let mut r = Reader {
        phase: shared.phase.subscribe(),
        shared,
    };
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; READ_BUF];
    let end = 'session: loop {
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    r.shared.touch();
                    match r.handle_frame(frame).await {
                        Flow::Continue => {}
                        Flow::Stop => break 'session ReadEnd::Stopped,
                        Flow::ProtocolError => break 'session ReadEnd::ProtocolError,
                    }
                }
                Ok(None) => break,
                Err(e) => match e.stream_id() {
                    // A stream error: the decoder stays usable.
                    Some(id) => {
                        if let Flow::Stop = r.stream_error(id, RstStatus::PROTOCOL_ERROR).await {
                            break 'session ReadEnd::Stopped;
                        }
                    }
                    None => break 'session ReadEnd::ProtocolError,
                },
            }
        }
        tokio::select! {
            biased;
            _ = r.phase.wait_for(|p| *p != Phase::Running) => break ReadEnd::Stopped,
            read = rd.read(&mut buf) => match read {
                Ok(0) => break ReadEnd::Eof,
                Ok(n) => decoder.feed(buf.get(..n).unwrap_or_default()),
                Err(_) => break ReadEnd::Io,
            },
        }
    };
    let shared = r.shared;
    match end {
        ReadEnd::Eof => shared.end(End::Clean, Phase::Abort),
        ReadEnd::Io => shared.end(End::Failed, Phase::Abort),
        ReadEnd::ProtocolError => shared.protocol_error(),
        ReadEnd::Stopped => {}
    }
    drop(rd);
    shared.task_exited();
}

/// Writes queued frames until the session aborts, or drains and stops.
pub(super) async fn write_loop<W: AsyncWrite + Unpin>(shared: Arc<Shared>, mut wr: W) {
    let mut phase = shared.phase.subscribe();
    let mut encoder = Encoder::new();
    let mut batch: Vec<Queued> = Vec::new();
    let mut out = Vec::new();
    let mut acks: Vec<oneshot::Sender<()>> = Vec::new();
    let mut deadline: Option<Instant> = None;
    let failed = 'session: loop {
        let now = *phase.borrow_and_update();
        match now {
            Phase::Abort => break false,
            Phase::Draining if deadline.is_none() => {
                deadline = Some(Instant::now() + DRAIN_TIMEOUT);
            }
            _ => {}
        }
        let more = shared.take_batch(&mut batch);
        if batch.is_empty() {
            if now == Phase::Draining {
                // Everything is written: close our direction and stop.
                let _ = tokio::select! {
                    r = wr.shutdown() => r,
                    () = sleep_until(deadline) => Ok(()),
                    _ = phase.wait_for(|p| *p == Phase::Abort) => Ok(()),
                };
                break false;
            }
            tokio::select! {
                () = shared.writer_wake.notified() => {}
                _ = phase.changed() => {}
            }
            continue;
        }
        out.clear();
        for q in batch.drain(..) {
            if let (Frame::Data(_), Some(cell)) = (&q.frame, &q.stream) {
                // The stream was reset after this was queued: drop it.
                if lock(&cell.state).reset.is_some() {
                    continue;
                }
            }
            if encoder.encode(&q.frame, &mut out).is_err() {
                // Everything queued was validated: a broken encoder, and the
                // peer's compression context is out of step with ours.
                shared.end(End::Failed, Phase::Abort);
                break 'session false;
            }
            acks.extend(q.ack);
        }
        let write = async {
            wr.write_all(&out).await?;
            if !more {
                wr.flush().await?;
            }
            Ok::<(), std::io::Error>(())
        };
        let written = tokio::select! {
            r = write => r.is_ok(),
            _ = phase.wait_for(|p| *p == Phase::Abort) => break false,
            () = sleep_until(deadline) => break false,
        };
        if !written {
            break true;
        }
        shared.touch();
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    };
    if failed {
        // The reader ends the session when the read half ends too.
        shared.writer_failed();
    } else {
        shared.end(End::Clean, Phase::Abort);
    }
    drop(wr);
    shared.task_exited();
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// What the reader task's frame handlers work with.
struct Reader {
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
}

impl Reader {
    async fn handle_frame(&mut self, frame: Frame) -> Flow {
        match frame {
            Frame::Data(data) => self.on_data(data).await,
            Frame::SynStream(syn) => self.on_syn_stream(syn).await,
            Frame::SynReply(reply) => self.on_syn_reply(reply).await,
            Frame::RstStream(rst) => {
                if let Some(cell) = self.shared.stream(rst.stream_id) {
                    self.shared.reset_stream(
                        &cell,
                        rst.status,
                        true,
                        false,
                        SessionError::Reset(rst.status),
                    );
                }
                Flow::Continue
            }
            Frame::Headers(headers) => {
                // Extra headers are not surfaced; only their FIN matters.
                if headers.fin {
                    if let Some(cell) = self.shared.stream(headers.stream_id) {
                        self.shared.remote_fin(&cell);
                    }
                }
                Flow::Continue
            }
            Frame::Ping(ping) => {
                if ping.id % 2 == self.shared.own_parity() {
                    let waiter = lock(&self.shared.inner).pings.remove(&ping.id);
                    if let Some(tx) = waiter {
                        let _ = tx.send(());
                    }
                    Flow::Continue
                } else {
                    let echo = Frame::Ping(Ping { id: ping.id });
                    continue_unless_stopped(
                        self.shared
                            .push_control_bounded(echo, &mut self.phase)
                            .await,
                    )
                }
            }
            Frame::GoAway(goaway) => {
                on_goaway(&self.shared, goaway.last_good_stream_id);
                Flow::Continue
            }
            // We do not enforce send windows (spdystream never sends
            // WINDOW_UPDATE), so neither SETTINGS nor WINDOW_UPDATE change anything.
            Frame::Settings(_) | Frame::WindowUpdate(_) => Flow::Continue,
        }
    }

    /// Answers a stream-level problem with RST_STREAM `status`.
    async fn stream_error(&mut self, id: u32, status: RstStatus) -> Flow {
        if let Some(cell) = self.shared.stream(id) {
            self.shared
                .reset_stream(&cell, status, false, false, SessionError::Reset(status));
        }
        let rst = Frame::RstStream(RstStream {
            stream_id: id,
            status,
        });
        continue_unless_stopped(self.shared.push_control_bounded(rst, &mut self.phase).await)
    }

    async fn on_data(&mut self, data: Data) -> Flow {
        let Some(cell) = self.shared.stream(data.stream_id) else {
            return self
                .stream_error(data.stream_id, RstStatus::INVALID_STREAM)
                .await;
        };
        if lock(&cell.state).remote_fin {
            return self
                .stream_error(cell.id, RstStatus::STREAM_ALREADY_CLOSED)
                .await;
        }
        let fin = data.fin;
        let len = data.data.len();
        if len > 0 {
            let mut payload = Some(data.data);
            loop {
                match buffer_data(&cell, &mut payload, self.shared.cfg.max_stream_buffer) {
                    Buffered::Stored(waker) => {
                        if let Some(w) = waker {
                            w.wake();
                        }
                        break;
                    }
                    Buffered::Discarded(delta) => {
                        self.shared.consumed(cell.id, delta, len);
                        break;
                    }
                    Buffered::Gone => return Flow::Continue,
                    Buffered::Full => {
                        // Head-of-line blocking, as in spdystream: wait for this
                        // stream's reader before reading further frames.
                        tokio::select! {
                            () = self.shared.reader_wake.notified() => {}
                            _ = self.phase.wait_for(|p| *p != Phase::Running) => return Flow::Stop,
                        }
                    }
                }
            }
        }
        if fin {
            self.shared.remote_fin(&cell);
        }
        Flow::Continue
    }

    async fn on_syn_stream(&mut self, syn: SynStream) -> Flow {
        let id = syn.stream_id;
        match admit(&self.shared, syn) {
            Admit::Accepted => Flow::Continue,
            Admit::ProtocolError => Flow::ProtocolError,
            Admit::Refused => {
                let rst = Frame::RstStream(RstStream {
                    stream_id: id,
                    status: RstStatus::REFUSED_STREAM,
                });
                continue_unless_stopped(
                    self.shared.push_control_bounded(rst, &mut self.phase).await,
                )
            }
        }
    }

    async fn on_syn_reply(&mut self, reply: SynReply) -> Flow {
        let Some(cell) = self.shared.stream(reply.stream_id) else {
            // Most likely a stream we reset meanwhile.
            return Flow::Continue;
        };
        if cell.id % 2 != self.shared.own_parity() {
            return self.stream_error(cell.id, RstStatus::PROTOCOL_ERROR).await;
        }
        let (tx, done) = {
            let mut st = lock(&cell.state);
            let tx = st.pending_reply.take();
            if tx.is_some() && reply.fin {
                st.remote_fin = true;
            }
            (tx, st.done())
        };
        let Some(tx) = tx else {
            return self.stream_error(cell.id, RstStatus::STREAM_IN_USE).await;
        };
        if tx.send(Ok(reply.headers)).is_err() {
            // open_stream was cancelled; its guard resets the stream.
        }
        if done {
            self.shared.remove(&cell);
        }
        Flow::Continue
    }
}

fn continue_unless_stopped(pushed: bool) -> Flow {
    if pushed { Flow::Continue } else { Flow::Stop }
}

enum Buffered {
    /// In the stream's buffer; wake its reader.
    Stored(Option<std::task::Waker>),
    /// The reader is gone; the data was dropped (send this WINDOW_UPDATE).
    Discarded(Option<u32>),
    /// The stream was reset or the session ended.
    Gone,
    /// No room; wait for the reader.
    Full,
}

fn buffer_data(cell: &StreamCell, payload: &mut Option<Vec<u8>>, max: usize) -> Buffered {
    let mut st = lock(&cell.state);
    let len = payload.as_ref().map_or(0, Vec::len);
    if st.reset.is_some() || st.ended.is_some() {
        return Buffered::Gone;
    }
    if st.reader_dropped {
        st.reader_task_waiting = false;
        return Buffered::Discarded(st.ack(len));
    }
    if st.buffered == 0 || st.buffered + len <= max {
        if let Some(bytes) = payload.take() {
            st.recv.push_back(bytes);
            st.buffered += len;
        }
        st.reader_task_waiting = false;
        return Buffered::Stored(st.read_waker.take());
    }
    st.reader_task_waiting = true;
    Buffered::Full
}

enum Admit {
    Accepted,
    Refused,
    ProtocolError,
}

/// Registers a peer stream and hands it to [`super::Incoming`], or says why not.
fn admit(shared: &Arc<Shared>, syn: SynStream) -> Admit {
    let id = syn.stream_id;
    let mut inner = lock(&shared.inner);
    // Peer streams have the other parity and strictly increasing ids.
    if id % 2 == shared.own_parity() || id <= inner.last_peer_id {
        return Admit::ProtocolError;
    }
    inner.last_peer_id = id;
    if !inner.can_send()
        || inner.goaway_sent
        || inner.goaway_received
        || inner.streams.len() >= shared.cfg.max_streams
    {
        return Admit::Refused;
    }
    let (guard, tx) = match (inner.guard.upgrade(), inner.incoming.clone()) {
        (Some(guard), Some(tx)) => (guard, tx),
        other => {
            // Unlock first: dropping the last guard takes the lock.
            drop(inner);
            drop(other);
            return Admit::Refused;
        }
    };
    let cell = StreamCell::new(
        id,
        StreamState {
            remote_fin: syn.fin,
            local_fin: syn.unidirectional,
            awaiting_our_reply: true,
            ..StreamState::default()
        },
    );
    inner.streams.insert(id, cell.clone());
    drop(inner);
    // Outside the lock: if the Incoming is gone, the failed send drops the
    // stream, which refuses it.
    let _ = tx.send(IncomingStream::new(guard, cell, syn.headers));
    Admit::Accepted
}

fn on_goaway(shared: &Arc<Shared>, last_good: u32) {
    let own = shared.own_parity();
    let (incoming, doomed) = {
        let mut inner = lock(&shared.inner);
        inner.goaway_received = true;
        let doomed: Vec<_> = inner
            .streams
            .values()
            .filter(|c| c.id % 2 == own && c.id > last_good)
            .cloned()
            .collect();
        (inner.incoming.take(), doomed)
    };
    drop(incoming);
    // Our streams the peer never processed: fail the waiting open_stream.
    for cell in &doomed {
        if lock(&cell.state).pending_reply.is_some() {
            shared.reset_stream(
                cell,
                RstStatus::REFUSED_STREAM,
                true,
                false,
                SessionError::GoingAway,
            );
        }
    }
    let drain = {
        let inner = lock(&shared.inner);
        inner.ended.is_none() && inner.streams.is_empty()
    };
    if drain {
        shared.end(End::Clean, Phase::Draining);
    }
}

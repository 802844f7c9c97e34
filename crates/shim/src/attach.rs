//! Attach: the container's output teed to callers' FIFOs (CRI Attach), next to the CRI log.
//!
//! One [`Tee`] per output stream of the container's init (crius mode only). The stream's
//! copier thread, after reading a chunk from the container, hands it to the CRI log and to
//! [`Tee::send`]; at the stream's end it calls [`Tee::end`]. Each attacher has its own
//! writer thread, which owns the attacher's FIFO.
//!
//! Invariants:
//! - The copier never blocks on an attacher. `send` appends a copy of the chunk to each
//!   attacher's queue under two short mutexes (no I/O but an eventfd write) and wakes its
//!   writer. An attacher whose queue would pass [`QUEUE_LIMIT`] bytes is dropped on the spot.
//! - A writer thread writes its queue to the FIFO in order, bytes unchanged. Its FIFO is
//!   non-blocking and it waits only in poll(2), on the FIFO and its eventfd, so it always
//!   notices promptly that it was dropped, that the stream ended or that the reader is gone
//!   (POLLERR: the FIFO has no reader, even while nothing is being written).
//! - A writer thread exits, closing its FIFO (its reader sees EOF), when: the stream ended
//!   and its queue is written (or [`END_FLUSH_LIMIT`] passed without the reader taking the
//!   rest), it was dropped, or the reader went away (POLLERR, EPIPE). On its way out it
//!   unregisters itself, so neither its eventfd nor its FIFO outlives it.
//! - Lock order: `Tee::state`, then `Attacher::queue`. A writer never holds both.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::sys::{self, EventFd};

/// Most bytes an attacher may have queued (beyond what its pipe holds) before it is
/// dropped.
pub(crate) const QUEUE_LIMIT: usize = 1 << 20;

/// After the stream ended, how long a writer waits for its reader to take what is left.
const END_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// The attachers of one output stream.
#[derive(Default)]
pub(crate) struct Tee {
    state: Mutex<TeeState>,
}

#[derive(Default)]
struct TeeState {
    ended: bool,
    next_id: u64,
    attachers: Vec<Arc<Attacher>>,
}

struct Attacher {
    id: u64,
    queue: Mutex<Queue>,
    wake: EventFd,
}

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Vec<u8>>,
    bytes: usize,
    /// The stream ended: write what is queued, then close.
    ended: bool,
    /// Fell too far behind: close now.
    dropped: bool,
}

impl Attacher {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why [`Tee::attach`] did not attach.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttachError {
    /// The stream has already ended (the FIFO was closed: its reader sees EOF).
    #[error("the stream has ended")]
    Ended,
    /// No eventfd or thread could be made.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl Tee {
    fn lock(&self) -> MutexGuard<'_, TeeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives `chunk` to every attacher. Never blocks on one: an attacher that fell more
    /// than [`QUEUE_LIMIT`] behind is dropped instead.
    pub(crate) fn send(&self, chunk: &[u8]) {
        let mut st = self.lock();
        st.attachers.retain(|a| {
            let mut q = a.lock();
            let keep = q.bytes + chunk.len() <= QUEUE_LIMIT;
            if keep {
                q.chunks.push_back(chunk.to_vec());
                q.bytes += chunk.len();
            } else {
                q.dropped = true;
                q.chunks = VecDeque::new();
                q.bytes = 0;
            }
            drop(q);
            a.wake.signal();
            keep
        });
    }

    /// The stream ended: every attacher gets what is queued for it, then EOF. Later
    /// attaches fail with [`AttachError::Ended`].
    pub(crate) fn end(&self) {
        let mut st = self.lock();
        st.ended = true;
        for a in st.attachers.drain(..) {
            a.lock().ended = true;
            a.wake.signal();
        }
    }

    /// Number of current attachers.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().attachers.len()
    }

    /// Tees the stream to `fifo` (a FIFO opened O_WRONLY|O_NONBLOCK) from the next chunk
    /// on, until the stream ends or the reader goes away.
    pub(crate) fn attach(self: &Arc<Self>, fifo: File) -> Result<(), AttachError> {
        let wake = EventFd::new()?;
        let mut st = self.lock();
        if st.ended {
            return Err(AttachError::Ended);
        }
        st.next_id += 1;
        let a = Arc::new(Attacher {
            id: st.next_id,
            queue: Mutex::new(Queue::default()),
            wake,
        });
        let tee = Arc::clone(self);
        let mine = Arc::clone(&a);
        std::thread::Builder::new()
            .name("attach".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                write_loop(&mine, &fifo);
                drop(fifo);
                tee.lock().attachers.retain(|x| x.id != mine.id);
            })?;
        st.attachers.push(a);
        Ok(())
    }
}

/// An attacher's writer thread: queue → FIFO until one of the exits in the module docs.
fn write_loop(a: &Attacher, fifo: &File) {
    let mut cur: Vec<u8> = Vec::new();
    let mut off = 0;
    let mut flush_deadline: Option<Instant> = None;
    loop {
        {
            let mut q = a.lock();
            if q.dropped {
                return;
            }
            if q.ended && flush_deadline.is_none() {
                flush_deadline = Some(Instant::now() + END_FLUSH_LIMIT);
            }
            if off == cur.len() {
                match q.chunks.pop_front() {
                    Some(c) => {
                        q.bytes -= c.len();
                        cur = c;
                        off = 0;
                    }
                    None if q.ended => return,
                    None => {}
                }
            }
        }
        let pending = off < cur.len();
        if pending {
            match (&*fifo).write(&cur[off..]) {
                Ok(0) => return,
                Ok(n) => {
                    off += n;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // EPIPE: the reader closed its end.
                Err(_) => return,
            }
        }
        let timeout = match flush_deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return;
                }
                i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1)
            }
        };
        let mut fds = [
            libc::pollfd {
                fd: a.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: fifo.as_raw_fd(),
                // Even with no events asked for, poll reports POLLERR once the FIFO has no
                // reader: a caller that went away is noticed while the container is quiet.
                events: if pending { libc::POLLOUT } else { 0 },
                revents: 0,
            },
        ];
        if sys::poll(&mut fds, timeout).is_err() {
            return;
        }
        if fds[0].revents != 0 {
            a.wake.clear();
        }
        if fds[1].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::Read;

    fn wait_for(mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Reads `r` to its end in a thread.
    fn read_all(mut r: File) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            r.read_to_end(&mut v).unwrap();
            v
        })
    }

    /// A FIFO-like pipe: (our read end, the write end the tee gets, non-blocking).
    fn pipe() -> (File, File) {
        let (r, w) = sys::pipe().unwrap();
        // Reopening a pipe through /proc gives a new, non-blocking open file, as the
        // shim's own O_WRONLY|O_NONBLOCK open of an attach FIFO does.
        let w2 = sys::open_fifo(
            std::path::Path::new(&format!("/proc/self/fd/{}", w.as_raw_fd())),
            libc::O_WRONLY | libc::O_NONBLOCK,
        )
        .unwrap();
        drop(w);
        (r, w2)
    }

    #[test]
    fn tees_in_order_and_ends() {
        let tee = Arc::new(Tee::default());
        let (r1, w1) = pipe();
        let (r2, w2) = pipe();
        tee.attach(w1).unwrap();
        tee.attach(w2).unwrap();
        let mut want = Vec::new();
        for i in 0..1000 {
            let c = format!("chunk {i}\n");
            tee.send(c.as_bytes());
            want.extend_from_slice(c.as_bytes());
        }
        let (t1, t2) = (read_all(r1), read_all(r2));
        tee.end();
        assert_eq!(t1.join().unwrap(), want);
        assert_eq!(t2.join().unwrap(), want);
        wait_for(|| tee.len() == 0);
        let (_r, w) = pipe();
        assert!(matches!(tee.attach(w), Err(AttachError::Ended)));
    }

    #[test]
    fn drops_a_reader_that_falls_behind() {
        let tee = Arc::new(Tee::default());
        let (mut slow, w1) = pipe();
        let (fast, w2) = pipe();
        tee.attach(w1).unwrap();
        tee.attach(w2).unwrap();
        let reader = read_all(fast);
        let chunk = vec![b'x'; 8192];
        // Pipe (64 KiB) + queue limit, and then some.
        let n = (QUEUE_LIMIT + (1 << 20)) / chunk.len();
        for _ in 0..n {
            tee.send(&chunk);
            std::thread::sleep(Duration::from_micros(50));
        }
        wait_for(|| tee.len() == 1);
        // The slow reader got what fit in its pipe, then EOF.
        let mut v = Vec::new();
        slow.read_to_end(&mut v).unwrap();
        assert!(!v.is_empty() && v.len() < n * chunk.len());
        tee.end();
        assert_eq!(reader.join().unwrap().len(), n * chunk.len());
    }

    #[test]
    fn notices_a_reader_gone_while_quiet() {
        let tee = Arc::new(Tee::default());
        let (r, w) = pipe();
        tee.attach(w).unwrap();
        assert_eq!(tee.len(), 1);
        drop(r);
        wait_for(|| tee.len() == 0);
    }
}

//! A process's standard streams as the shim holds them.
//!
//! The shim always puts pipes (or a pty) between the container and whatever consumes
//! its output, and copies in a thread per stream, so that the container never depends on
//! a reader being present: output goes to the CRI log file (the container's init in
//! crius mode, teed to any attachers: see `attach`), to a FIFO or `file://` path
//! (containerd's convention, and exec attach), or nowhere.
//!
//! stdin: a copy-in thread moves the stdin FIFO's bytes into the process's stdin pipe (or
//! pty). For an exec, and for everything in containerd mode, the FIFO is opened O_RDONLY:
//! when its last writer closes, the process's stdin is closed (EOF), as containerd does.
//! For the container's init in crius mode it is opened O_RDWR ([`StdinMode::KeepOpen`]):
//! the shim holds a writer itself, so the FIFO never reports EOF and writers (criusd's
//! attach sessions) can come and go; only CloseIO (or the process's exit) closes the
//! process's stdin. Either way the copy-in thread waits in poll(2) on the FIFO and an
//! eventfd that [`Stdin::close`] signals, so it never spins and ends at CloseIO.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::attach::Tee;
use crate::crilog::{CriLog, Stream};
use crate::runtime::Stdio3;
use crate::sys::{self, EventFd};

/// Where one output stream goes.
#[derive(Clone)]
pub(crate) enum Sink {
    /// The CRI log, and whoever is attached to the stream.
    Log(Arc<CriLog>, Stream, Arc<Tee>),
    Path(String),
    Null,
}

impl Sink {
    pub(crate) fn from_path(path: &str) -> Sink {
        if path.is_empty() {
            Sink::Null
        } else {
            Sink::Path(path.to_string())
        }
    }
}

/// How the stdin FIFO is opened (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum StdinMode {
    /// O_RDONLY: once every writer has closed the FIFO (EOF), stdin is closed.
    UntilEof,
    /// O_RDWR: the FIFO never reports EOF; only CloseIO (or the exit) closes stdin.
    KeepOpen,
}

/// The shim's write end of a process's stdin (a pipe, or a dup of the pty master),
/// shared by the copy-in thread, which alone writes and closes it, and CloseIO.
pub(crate) struct Stdin {
    w: Mutex<Option<File>>,
    closed: AtomicBool,
    wake: EventFd,
}

impl Stdin {
    fn new(w: File) -> io::Result<Arc<Self>> {
        Ok(Arc::new(Stdin {
            w: Mutex::new(Some(w)),
            closed: AtomicBool::new(false),
            wake: EventFd::new()?,
        }))
    }

    /// Closes the process's stdin (CloseIO, or the process exited): the copy-in thread
    /// wakes, copies what writers already put in the FIFO (so a writer that closes and
    /// then calls CloseIO loses nothing), closes the process's end and ends. Never blocks;
    /// if the copy-in thread is stuck writing to a process that does not read its stdin,
    /// the close happens when that write returns.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.signal();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn take(&self) {
        self.w.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// The shim's side of a running process's stdio.
#[derive(Default)]
pub(crate) struct ProcIo {
    /// Write end of the container's stdin pipe (or a dup of the pty master); closed by
    /// CloseIO. None when the process has no stdin.
    pub(crate) stdin: Option<Arc<Stdin>>,
    /// The pty master, for ResizePty.
    pub(crate) console: Option<Arc<OwnedFd>>,
    /// Each copier thread sends once when it is done.
    done_rx: Option<Receiver<()>>,
    copiers: usize,
}

impl Drop for ProcIo {
    /// The process exited (or never started): its stdin is closed and the copy-in thread
    /// ends, which in KeepOpen mode nothing else would make it do.
    fn drop(&mut self) {
        if let Some(stdin) = &self.stdin {
            stdin.close();
        }
    }
}

impl ProcIo {
    /// Waits until the output copiers have drained (the container's end of every pipe is
    /// closed), at most `limit`.
    pub(crate) fn wait_drained(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        if let Some(rx) = self.done_rx.take() {
            for _ in 0..self.copiers {
                let left = deadline.saturating_duration_since(Instant::now());
                if rx.recv_timeout(left).is_err() {
                    break;
                }
            }
        }
    }
}

fn open_sink(path: &str) -> io::Result<File> {
    if let Some(p) = path.strip_prefix("file://") {
        OpenOptions::new().create(true).append(true).open(p)
    } else {
        // A FIFO (or any path): blocks until a reader opens it, as containerd's shim does.
        sys::open_fifo(Path::new(path), libc::O_WRONLY)
    }
}

fn copy_out(src: File, sink: Sink, done: Sender<()>) -> io::Result<()> {
    sys::spawn_small("copy-out", move || {
        match sink {
            Sink::Log(log, stream, tee) => {
                log.copy_from(src, stream, |chunk| tee.send(chunk));
                tee.end();
            }
            Sink::Path(p) => {
                if let Ok(mut dst) = open_sink(&p) {
                    let mut src = src;
                    let _ = io::copy(&mut src, &mut dst);
                } else {
                    // Nobody to give it to: drain so the container never blocks.
                    let _ = io::copy(&mut { src }, &mut io::sink());
                }
            }
            Sink::Null => {
                let _ = io::copy(&mut { src }, &mut io::sink());
            }
        }
        let _ = done.send(());
    })
}

/// Opens the stdin FIFO at `path` (never waiting: a bad path fails the caller) and
/// starts the copy-in thread, which copies it into `dst` until EOF (UntilEof mode: the
/// FIFO's writers have all closed it) or [`Stdin::close`], then closes `dst`.
fn copy_in(path: &str, mode: StdinMode, dst: Arc<Stdin>) -> io::Result<()> {
    // O_NONBLOCK on a reader needs no writer. In UntilEof mode poll reports POLLHUP only
    // once a writer has come and gone since this open (Linux's FIFO rule), so this is the
    // same EOF as after the blocking open containerd's shim does, without the open
    // parking a thread that nothing could wake.
    let access = match mode {
        StdinMode::KeepOpen => libc::O_RDWR,
        StdinMode::UntilEof => libc::O_RDONLY,
    };
    let src = sys::open_fifo(Path::new(path), access | libc::O_NONBLOCK)?;
    sys::spawn_small("copy-in", move || {
        pump_in(&src, &dst);
        dst.take();
    })
}

enum Copied {
    Some,
    Nothing,
    End,
}

/// One read from the FIFO into the process's stdin.
fn copy_once(src: &File, dst: &Stdin, buf: &mut [u8]) -> Copied {
    let n = match (&*src).read(buf) {
        Ok(0) => return Copied::End,
        Ok(n) => n,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            return Copied::Nothing;
        }
        Err(_) => return Copied::End,
    };
    // A blocking write: a process that does not read its stdin holds up only this thread
    // (and the FIFO's writers), never CloseIO.
    let mut g = dst.w.lock().unwrap_or_else(|p| p.into_inner());
    match g.as_mut().map(|w| w.write_all(&buf[..n])) {
        Some(Ok(())) => Copied::Some,
        _ => Copied::End,
    }
}

fn pump_in(src: &File, dst: &Stdin) {
    let mut buf = [0u8; 4096];
    loop {
        if dst.is_closed() {
            // What writers put in before CloseIO still goes in, then EOF.
            loop {
                let mut fds = [libc::pollfd {
                    fd: src.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                }];
                let ready = sys::poll(&mut fds, 0).unwrap_or(0) > 0;
                if !ready || !matches!(copy_once(src, dst, &mut buf), Copied::Some) {
                    return;
                }
            }
        }
        let mut fds = [
            libc::pollfd {
                fd: src.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: dst.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if sys::poll(&mut fds, -1).is_err() {
            return;
        }
        // Only close() signals the eventfd, after setting `closed`: the loop's top.
        if fds[1].revents != 0 || fds[0].revents == 0 {
            continue;
        }
        // POLLIN, or POLLHUP (every writer gone: read returns 0) or POLLERR.
        if let Copied::End = copy_once(src, dst, &mut buf) {
            return;
        }
    }
}

/// Pipes for a process without a terminal. Returns the runtime's ends and ours.
pub(crate) fn pipes(
    stdin: &str,
    stdin_mode: StdinMode,
    stdout: Sink,
    stderr: Sink,
) -> io::Result<(Stdio3, ProcIo)> {
    let (tx, rx) = mpsc::channel();
    let mut io = ProcIo::default();
    let stdin_r = if stdin.is_empty() {
        Stdio::null()
    } else {
        let (r, w) = sys::pipe()?;
        let w = Stdin::new(w)?;
        copy_in(stdin, stdin_mode, Arc::clone(&w))?;
        io.stdin = Some(w);
        Stdio::from(r)
    };
    let (out_r, out_w) = sys::pipe()?;
    let (err_r, err_w) = sys::pipe()?;
    copy_out(out_r, stdout, tx.clone())?;
    copy_out(err_r, stderr, tx)?;
    io.copiers = 2;
    io.done_rx = Some(rx);
    Ok((
        Stdio3 {
            stdin: stdin_r,
            stdout: Stdio::from(out_w),
            stderr: Stdio::from(err_w),
        },
        io,
    ))
}

/// A `--console-socket` listener: runc connects and sends the pty master.
pub(crate) struct ConsoleSocket {
    path: PathBuf,
    rx: Receiver<io::Result<OwnedFd>>,
}

impl ConsoleSocket {
    pub(crate) fn new(path: PathBuf) -> io::Result<Self> {
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        let (tx, rx) = mpsc::channel();
        sys::spawn_small("console", move || {
            let r = listener.accept().and_then(|(s, _)| sys::recv_fd(&s));
            let _ = tx.send(r);
        })?;
        Ok(ConsoleSocket { path, rx })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The master, once the runtime has sent it.
    pub(crate) fn receive(self) -> io::Result<OwnedFd> {
        let r = self
            .rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| io::Error::other("runtime sent no console"))?;
        let _ = std::fs::remove_file(&self.path);
        r
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        // Unblock the accept thread if the runtime never connected.
        if std::fs::metadata(&self.path).is_ok() {
            let _ = std::os::unix::net::UnixStream::connect(&self.path);
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Wires a received pty master: output to `stdout`, the stdin FIFO into it.
pub(crate) fn console_io(
    master: OwnedFd,
    stdin: &str,
    stdin_mode: StdinMode,
    stdout: Sink,
) -> io::Result<ProcIo> {
    let (tx, rx) = mpsc::channel();
    let master = Arc::new(master);
    let reader = File::from(master.try_clone()?);
    let mut io = ProcIo::default();
    if !stdin.is_empty() {
        let w = Stdin::new(File::from(master.try_clone()?))?;
        copy_in(stdin, stdin_mode, Arc::clone(&w))?;
        io.stdin = Some(w);
    }
    copy_out(reader, stdout, tx)?;
    io.console = Some(master);
    io.copiers = 1;
    io.done_rx = Some(rx);
    Ok(io)
}

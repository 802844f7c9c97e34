//! A process's standard streams as the shim holds them.
//!
//! The shim always puts pipes (or a pty) between the container and whatever consumes
//! its output, and copies in a thread per stream, so that the container never depends on
//! a reader being present: output goes to the CRI log file (the container's init in
//! crius mode), to a FIFO or `file://` path (containerd's convention, and exec attach),
//! or nowhere.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::crilog::{CriLog, Stream};
use crate::runtime::Stdio3;
use crate::sys;

/// Where one output stream goes.
#[derive(Clone)]
pub(crate) enum Sink {
    Log(Arc<CriLog>, Stream),
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

/// The shim's side of a running process's stdio.
#[derive(Default)]
pub(crate) struct ProcIo {
    /// Write end of the container's stdin pipe (or a dup of the pty master); closed by CloseIO.
    pub(crate) stdin: Arc<Mutex<Option<File>>>,
    /// The pty master, for ResizePty.
    pub(crate) console: Option<Arc<OwnedFd>>,
    /// Each copier thread sends once when it is done.
    done_rx: Option<Receiver<()>>,
    copiers: usize,
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

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    thread::Builder::new()
        .name(name.into())
        .stack_size(128 * 1024)
        .spawn(f)
        .map(|_| ())
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
    spawn_thread("copy-out", move || {
        match sink {
            Sink::Log(log, stream) => log.copy_from(src, stream),
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

/// Copies the stdin FIFO into the container until the FIFO's writer goes away or
/// CloseIO takes the pipe.
fn copy_in(path: String, dst: Arc<Mutex<Option<File>>>) -> io::Result<()> {
    spawn_thread("copy-in", move || {
        let Ok(mut src) = sys::open_fifo(Path::new(&path), libc::O_RDONLY) else {
            return;
        };
        let mut buf = [0u8; 4096];
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut g = dst.lock().unwrap_or_else(|p| p.into_inner());
            match g.as_mut() {
                Some(w) => {
                    if w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                None => break,
            }
        }
        dst.lock().unwrap_or_else(|p| p.into_inner()).take();
    })
}

/// Pipes for a process without a terminal. Returns the runtime's ends and ours.
pub(crate) fn pipes(stdin: &str, stdout: Sink, stderr: Sink) -> io::Result<(Stdio3, ProcIo)> {
    let (tx, rx) = mpsc::channel();
    let mut io = ProcIo::default();
    let stdin_r = if stdin.is_empty() {
        Stdio::null()
    } else {
        let (r, w) = sys::pipe()?;
        *io.stdin.lock().unwrap_or_else(|p| p.into_inner()) = Some(w);
        copy_in(stdin.to_string(), io.stdin.clone())?;
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
        spawn_thread("console", move || {
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
pub(crate) fn console_io(master: OwnedFd, stdin: &str, stdout: Sink) -> io::Result<ProcIo> {
    let (tx, rx) = mpsc::channel();
    let master = Arc::new(master);
    let reader = File::from(master.try_clone()?);
    let mut io = ProcIo::default();
    if !stdin.is_empty() {
        *io.stdin.lock().unwrap_or_else(|p| p.into_inner()) = Some(File::from(master.try_clone()?));
        copy_in(stdin.to_string(), io.stdin.clone())?;
    }
    copy_out(reader, stdout, tx)?;
    io.console = Some(master);
    io.copiers = 1;
    io.done_rx = Some(rx);
    Ok(io)
}

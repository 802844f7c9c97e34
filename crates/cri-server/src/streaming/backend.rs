//! The runtime side of streaming: exec and attach through the container's shim, and
//! TCP connections inside a pod's network namespace.
//!
//! Exec: criusd makes FIFOs for the streams the client wants (in a private directory
//! under `<run_dir>/streams/`), opens its own ends first (so neither side blocks), and
//! asks the shim to run the process on them (the Task service's Exec/Start, as
//! containerd does). A client that goes away gets its process killed; the exec is
//! deleted from the shim and the FIFOs removed in every case.
//!
//! Attach: the shim tees the container's output to FIFOs it is given (crius's Attach
//! call), without the log ever waiting on an attacher. Input goes into the FIFO the
//! shim holds as the container's stdin for its whole life (`stdin: true` containers);
//! with `stdin_once`, the end of the first attacher's input closes the container's
//! stdin (CloseIO).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crius_cri_api::v1 as cri;
use crius_shim::client::{self, ProcessIo, Shim};
use tokio::io::{AsyncWriteExt, copy};
use tokio::net::TcpStream;
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::container::{Containers, stdin_fifo};
use crate::sandbox::Sandboxes;
use crius_store::ContainerRecord;
use crius_streaming::{Backend, BoxRead, BoxWrite, ConnectError, Outcome, StdStreams, TermSize};

/// How long output may keep coming after the process exited (the shim has drained
/// its side already; this only bounds a background process holding the pipe).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// Deadline for a TCP connect inside the pod.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const SIGKILL: u32 = 9;
/// How long a tty exec waits for the client's first terminal size before it starts.
const FIRST_SIZE_WAIT: Duration = Duration::from_millis(500);

/// The process JSON with `consoleSize` set (runc and crun size the new pty with it).
fn with_console_size(process: &[u8], size: TermSize) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(process) else {
        return process.to_vec();
    };
    v["consoleSize"] = serde_json::json!({"height": size.height, "width": size.width});
    serde_json::to_vec(&v).unwrap_or_else(|_| process.to_vec())
}

/// Streams served by the containers and pods criusd runs.
pub struct RuntimeBackend {
    pub containers: Arc<Containers>,
    pub sandboxes: Arc<Sandboxes>,
    /// `<run_dir>/streams`: per-session FIFO directories.
    pub dir: PathBuf,
}

/// A session's FIFO directory, removed on drop.
struct FifoDir(PathBuf);

impl FifoDir {
    fn create(parent: &Path) -> Result<FifoDir, String> {
        let id = crate::sandbox::new_id().map_err(|e| e.to_string())?;
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        let dir = parent.join(&id[..24]);
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(FifoDir(dir))
    }

    fn fifo(&self, name: &str) -> Result<PathBuf, String> {
        let p = self.0.join(name);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| format!("mkfifo {}: {e}", p.display()))?;
        Ok(p)
    }
}

impl Drop for FifoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn on_shim<T: Send + 'static>(
    c: &ContainerRecord,
    what: &'static str,
    f: impl FnOnce(&Shim) -> Result<T, client::Error> + Send + 'static,
) -> Result<T, String> {
    let socket = c.socket.clone();
    let id = c.id.clone();
    tokio::task::spawn_blocking(move || {
        let shim = client::connect(&socket, &id).map_err(|e| format!("{what}: {e}"))?;
        f(&shim).map_err(|e| format!("{what}: {e}"))
    })
    .await
    .map_err(|e| format!("{what}: {e}"))?
}

/// Copies a FIFO to a client stream, then half-closes the client stream.
fn pump_out(mut from: pipe::Receiver, mut to: BoxWrite) -> JoinHandle<()> {
    tokio::spawn(async move {
        let _ = copy(&mut from, &mut to).await;
        let _ = to.shutdown().await;
    })
}

fn abort_all(tasks: impl IntoIterator<Item = JoinHandle<()>>) {
    for t in tasks {
        t.abort();
    }
}

/// Makes the FIFO `name` in `dir` and opens our (reading) end, before the shim opens
/// the other.
fn output_fifo(dir: &FifoDir, name: &str) -> Result<(PathBuf, pipe::Receiver), String> {
    let p = dir.fifo(name)?;
    let rx = pipe::OpenOptions::new()
        .open_receiver(&p)
        .map_err(|e| format!("opening {}: {e}", p.display()))?;
    Ok((p, rx))
}

/// Applies terminal sizes as they come.
fn pump_resize(
    c: &ContainerRecord,
    exec_id: String,
    mut sizes: tokio::sync::mpsc::Receiver<TermSize>,
) -> JoinHandle<()> {
    let c = c.clone();
    tokio::spawn(async move {
        while let Some(s) = sizes.recv().await {
            let id = exec_id.clone();
            let r = on_shim(&c, "resizing the terminal", move |shim| {
                shim.resize_pty(&id, u32::from(s.width), u32::from(s.height))
            })
            .await;
            if let Err(e) = r {
                debug!("{e}");
            }
        }
    })
}

/// An exec's FIFOs, our ends open, and the [`ProcessIo`] naming them for the shim.
struct ExecFifos {
    dir: FifoDir,
    pio: ProcessIo,
    outputs: Vec<(pipe::Receiver, BoxWrite)>,
    stdin: Option<(BoxRead, pipe::Sender)>,
}

/// Makes a FIFO for each stream the client opened, our ends opening first: a reader
/// for each output, a read-write end for input (so the shim's open never waits and its
/// reads see EOF only when we close).
fn exec_fifos(
    dir: FifoDir,
    tty: bool,
    stdin: Option<BoxRead>,
    stdout: Option<BoxWrite>,
    stderr: Option<BoxWrite>,
) -> Result<ExecFifos, String> {
    let mut pio = ProcessIo {
        terminal: tty,
        ..Default::default()
    };
    let mut outputs = Vec::new();
    for (name, client, slot) in [
        ("stdout", stdout, &mut pio.stdout),
        ("stderr", if tty { None } else { stderr }, &mut pio.stderr),
    ] {
        if let Some(client) = client {
            let (p, rx) = output_fifo(&dir, name)?;
            *slot = p.display().to_string();
            outputs.push((rx, client));
        }
    }
    let stdin = match stdin {
        Some(client) => {
            let p = dir.fifo("stdin")?;
            let tx = pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(&p)
                .map_err(|e| format!("opening {}: {e}", p.display()))?;
            pio.stdin = p.display().to_string();
            Some((client, tx))
        }
        None => None,
    };
    Ok(ExecFifos {
        dir,
        pio,
        outputs,
        stdin,
    })
}

/// Pumps a started exec's streams until it exits (its output then gets
/// [`OUTPUT_GRACE`] to drain) or the client goes (the process is then killed).
async fn supervise_exec(
    c: &ContainerRecord,
    exec_id: &str,
    outputs: Vec<(pipe::Receiver, BoxWrite)>,
    stdin: Option<(BoxRead, pipe::Sender)>,
    resize: Option<tokio::sync::mpsc::Receiver<TermSize>>,
    gone: &tokio_util::sync::CancellationToken,
) -> Result<Outcome, String> {
    let mut pumps: Vec<JoinHandle<()>> = outputs
        .into_iter()
        .map(|(rx, client)| pump_out(rx, client))
        .collect();
    let stdin_pump = stdin.map(|(mut client, mut tx)| {
        tokio::spawn(async move {
            let _ = copy(&mut client, &mut tx).await;
            // Dropping our end: the shim sees EOF and closes the process's stdin.
        })
    });
    let resize_pump = resize.map(|r| pump_resize(c, exec_id.to_string(), r));
    let mut wait = {
        let id = exec_id.to_string();
        let c2 = c.clone();
        tokio::spawn(
            async move { on_shim(&c2, "waiting for the exec", move |s| s.wait(&id)).await },
        )
    };
    let exit = tokio::select! {
        r = &mut wait => Some(r),
        () = gone.cancelled() => None,
    };
    let outcome = match exit {
        Some(r) => {
            let status = r.map_err(|e| e.to_string())??;
            // Output the shim drained before reporting the exit is still in flight.
            let all = futures_util::future::join_all(pumps.iter_mut());
            if tokio::time::timeout(OUTPUT_GRACE, all).await.is_err() {
                debug!(%exec_id, "output still open after the exit; closing it");
            }
            match status.code {
                0 => Outcome::Success,
                n => Outcome::ExitCode(i32::try_from(n).unwrap_or(i32::MAX)),
            }
        }
        None => {
            // The client went away: the process goes too.
            let id = exec_id.to_string();
            if let Err(e) =
                on_shim(c, "killing the exec", move |s| s.kill(&id, SIGKILL, false)).await
            {
                warn!(%exec_id, "{e}");
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), wait).await;
            Outcome::Error("the client went away".into())
        }
    };
    abort_all(pumps.into_iter().chain(stdin_pump).chain(resize_pump));
    Ok(outcome)
}

/// Copies an attacher's input into the container's stdin, when it has one still open
/// (with `stdin_once`, the end of the input closes it); otherwise the input is read and
/// dropped.
fn attach_stdin(
    c: &ContainerRecord,
    stdin: Option<BoxRead>,
) -> Result<Option<JoinHandle<()>>, String> {
    // The container's stdin, when it has one still open. No reader (ENXIO): the
    // shim closed it already (stdin_once, or CloseIO earlier).
    let tx = if c.config.stdin && stdin.is_some() {
        match pipe::OpenOptions::new().open_sender(stdin_fifo(&c.bundle)) {
            Ok(tx) => Some(tx),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => None,
            Err(e) => return Err(format!("opening the container's stdin: {e}")),
        }
    } else {
        None
    };
    Ok(stdin.map(|mut client| {
        let once = c.config.stdin_once;
        let c2 = c.clone();
        tokio::spawn(async move {
            match tx {
                Some(mut tx) => {
                    let _ = copy(&mut client, &mut tx).await;
                    drop(tx);
                    if once {
                        let r = on_shim(&c2, "closing stdin", |s| s.close_stdin("")).await;
                        if let Err(e) = r {
                            debug!("{e}");
                        }
                    }
                }
                // No stdin to give it to: what the client sends goes nowhere.
                None => {
                    let _ = copy(&mut client, &mut tokio::io::sink()).await;
                }
            }
        })
    }))
}

impl RuntimeBackend {
    async fn exec_inner(&self, req: cri::ExecRequest, io: StdStreams) -> Result<Outcome, String> {
        let c = self
            .containers
            .running(&req.container_id)
            .await
            .map_err(|e| e.to_string())?;
        let tty = req.tty;
        let mut process = Containers::exec_process(&c, &req.cmd, tty).map_err(|e| e.to_string())?;
        let StdStreams {
            stdin,
            stdout,
            stderr,
            mut resize,
            gone,
        } = io;
        // Clients send the terminal's size as soon as the streams are up; the process
        // should start with it rather than find a 0x0 terminal.
        if let Some(sizes) = resize.as_mut() {
            if let Ok(Some(first)) = tokio::time::timeout(FIRST_SIZE_WAIT, sizes.recv()).await {
                process = with_console_size(&process, first);
            }
        }
        let dir = FifoDir::create(&self.dir)?;
        let exec_id = format!(
            "{}{}",
            crate::container::STREAM_EXEC_PREFIX,
            &crate::sandbox::new_id().map_err(|e| e.to_string())?[..16]
        );
        let ExecFifos {
            dir,
            pio,
            outputs,
            stdin,
        } = exec_fifos(dir, tty, stdin, stdout, stderr)?;
        {
            let id = exec_id.clone();
            on_shim(&c, "starting the exec", move |shim| {
                shim.exec(&id, &process, &pio)?;
                if let Err(e) = shim.start(&id) {
                    let _ = shim.delete(&id);
                    return Err(e);
                }
                Ok(())
            })
            .await?;
        }
        debug!(container = %c.id, %exec_id, "exec started");
        let outcome = supervise_exec(&c, &exec_id, outputs, stdin, resize, &gone).await?;
        let id = exec_id.clone();
        if let Err(e) = on_shim(&c, "deleting the exec", move |s| s.delete(&id)).await {
            debug!(%exec_id, "{e}");
        }
        drop(dir);
        Ok(outcome)
    }

    async fn attach_inner(
        &self,
        req: cri::AttachRequest,
        io: StdStreams,
    ) -> Result<Outcome, String> {
        let c = self
            .containers
            .running(&req.container_id)
            .await
            .map_err(|e| e.to_string())?;
        let tty = c.config.tty;
        let StdStreams {
            stdin,
            stdout,
            stderr,
            resize,
            gone,
        } = io;
        let dir = FifoDir::create(&self.dir)?;
        let mut outputs = Vec::new();
        let mut paths: [Option<PathBuf>; 2] = [None, None];
        for (i, (name, client)) in [
            ("stdout", stdout),
            ("stderr", if tty { None } else { stderr }),
        ]
        .into_iter()
        .enumerate()
        {
            if let Some(client) = client {
                let (p, rx) = output_fifo(&dir, name)?;
                paths[i] = Some(p);
                outputs.push((rx, client));
            }
        }
        if !outputs.is_empty() {
            let [out, err] = paths;
            on_shim(&c, "attaching", move |shim| {
                shim.attach(out.as_deref(), err.as_deref())
            })
            .await?;
        }
        let mut pumps: Vec<JoinHandle<()>> = outputs
            .into_iter()
            .map(|(rx, client)| pump_out(rx, client))
            .collect();
        let resize_pump = resize
            .filter(|_| tty)
            .map(|r| pump_resize(&c, String::new(), r));
        let stdin_pump = attach_stdin(&c, stdin)?;
        // Attached until the container's output ends (it exited), or, with no output
        // asked for, until the input ends; or until the client goes.
        let outcome = if pumps.is_empty() {
            match stdin_pump {
                Some(p) => {
                    tokio::select! {
                        _ = p => Outcome::Success,
                        () = gone.cancelled() => Outcome::Error("the client went away".into()),
                    }
                }
                None => Outcome::Success,
            }
        } else {
            let all = futures_util::future::join_all(pumps.iter_mut());
            let r = tokio::select! {
                _ = all => Outcome::Success,
                () = gone.cancelled() => Outcome::Error("the client went away".into()),
            };
            abort_all(pumps.into_iter().chain(stdin_pump));
            r
        };
        abort_all(resize_pump);
        drop(dir);
        Ok(outcome)
    }

    async fn connect_inner(&self, pod_id: &str, port: u16) -> Result<TcpStream, String> {
        let pod = self
            .sandboxes
            .get(pod_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("pod sandbox {pod_id} not found"))?;
        let netns = pod.namespaces.net.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // A thread of its own: it joins the pod's network namespace, and no pooled
        // thread may be left in one.
        std::thread::Builder::new()
            .name("pod-connect".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let _ = tx.send(connect_in(netns.as_deref(), port));
            })
            .map_err(|e| format!("spawning a connect thread: {e}"))?;
        let std = rx
            .await
            .map_err(|_| "the connect thread died".to_string())??;
        TcpStream::from_std(std).map_err(|e| format!("registering the connection: {e}"))
    }
}

/// Connects to `port` on loopback (IPv4, then IPv6) inside `netns` (none: the host's,
/// for a host-network pod). Runs on a thread that exits afterwards.
fn connect_in(netns: Option<&Path>, port: u16) -> Result<std::net::TcpStream, String> {
    if let Some(ns) = netns {
        let f = std::fs::File::open(ns)
            .map_err(|e| format!("opening the pod's network namespace {}: {e}", ns.display()))?;
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("entering the pod's network namespace: {e}"))?;
    }
    let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let s = match std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e4) => std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT)
            .map_err(|_| format!("connecting to localhost:{port} in the pod: {e4}"))?,
    };
    let _ = s.set_nodelay(true);
    s.set_nonblocking(true)
        .map_err(|e| format!("setting the connection non-blocking: {e}"))?;
    Ok(s)
}

/// A failed exec or attach, logged, as the outcome the client is told.
fn logged(what: &str, container: &str, r: Result<Outcome, String>) -> Outcome {
    r.unwrap_or_else(|e| {
        warn!(%container, "{what}: {e}");
        Outcome::Error(e)
    })
}

impl Backend for RuntimeBackend {
    async fn exec(&self, req: cri::ExecRequest, io: StdStreams) -> Outcome {
        let id = req.container_id.clone();
        logged("exec", &id, self.exec_inner(req, io).await)
    }

    async fn attach(&self, req: cri::AttachRequest, io: StdStreams) -> Outcome {
        let id = req.container_id.clone();
        logged("attach", &id, self.attach_inner(req, io).await)
    }

    async fn connect(&self, pod_id: &str, port: u16) -> Result<TcpStream, ConnectError> {
        Ok(self.connect_inner(pod_id, port).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_terminal_size_goes_into_the_process() {
        let p = br#"{"args":["sh"],"terminal":true}"#;
        let out = with_console_size(
            p,
            TermSize {
                width: 100,
                height: 40,
            },
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["consoleSize"]["width"], 100);
        assert_eq!(v["consoleSize"]["height"], 40);
        assert_eq!(v["args"][0], "sh");
        // Unparseable input is passed through untouched.
        assert_eq!(
            with_console_size(
                b"nope",
                TermSize {
                    width: 1,
                    height: 1
                }
            ),
            b"nope"
        );
    }
}

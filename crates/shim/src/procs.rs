//! The process table: the container's init (key `""`) and its execs, what stdio each was
//! given, its status and its exit; how a process is launched, how its exit is watched
//! and recorded, and how callers wait for it; the shim's scratch files.
//!
//! Invariants:
//! - **Who reaps.** Only the reaper thread (`reaper`) calls `waitpid`. Every launched
//!   process gets one exit-watcher thread, which waits for its pid through the reaper and
//!   is the only writer of its real exit. The only other exits in the table are made up
//!   by the shim: 255 for an exec whose launch failed (so its waiters return), and the
//!   placeholder 0 of an ExecSync id (below).
//! - **When an exit is recorded.** The watcher first lets the process's output copiers
//!   drain (at most [`DRAIN_LIMIT`]: a background process may hold a pipe open forever),
//!   then, for the init, writes `exit.json` durably (`exitfile`: temp file, fsync, rename,
//!   fsync of the directory; a failure is logged, not fatal), and only then marks the
//!   process `Stopped` with its exit and wakes the waiters. Whoever learns of an exit
//!   (Wait, State, Delete) can rely on the log holding the output and the record being
//!   on disk.
//! - **Status only moves forward**: `Created` → `Running` → `Stopped`. An exec runs from
//!   its launch (`runc exec`), the init from Start (`runc start` after `runc create`);
//!   either may go straight from `Created` to `Stopped`.
//! - **Waiting after the process is gone.** A recorded exit stays until Delete removes the
//!   entry: every Wait and State until then answers the same code and time, however late.
//!   After Delete, Wait and State answer NOT_FOUND. (Removing an entry wakes nobody: a Wait
//!   already blocked on an exec deleted before it started returns NOT_FOUND only when the
//!   next exit in the shim wakes it.)
//! - Exec ids are checked ([`check_exec_id`]) before they enter the table, so the scratch
//!   paths made from them ([`Scratch`]) stay in the bundle.
//! - ExecSync holds its id in the table for the call, as an entry already `Stopped` with
//!   exit 0, so that ids cannot collide: ListExecs lists it, Wait on it returns 0 at once.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use containerd_shim_protos::events::task::{TaskExit, TaskOOM};
use ttrpc::Code;

use crate::exitfile::{self, ExitRecord};
use crate::publisher::timestamp;
use crate::runtime::{self, Launch, Stdio3};
use crate::service::{Shim, ShimError, locked};
use crate::stdio::{self, ConsoleSocket, ProcIo, Sink, Stdin, StdinMode};
use crate::{oom, reaper, sys};

/// How long an exit waits for the process's output to drain before it is reported
/// anyway (a background process may hold the pipe open forever).
pub(crate) const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// The longest exec id.
const MAX_EXEC_ID: usize = 128;

/// A process's status.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum PStatus {
    Created,
    Running,
    Stopped,
}

/// A recorded exit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Exit {
    /// The host pid (0 for a process that never started).
    pub(crate) pid: i32,
    /// Exit code (128 + signal when a signal killed it).
    pub(crate) code: u32,
    pub(crate) at: SystemTime,
}

/// A pid as the protocol carries it (0: none).
pub(crate) fn wire_pid(pid: i32) -> u32 {
    u32::try_from(pid).unwrap_or(0)
}

/// A process's stdio as the caller asked for it: FIFO paths (or `file://` URIs), empty
/// for none, as State reports them back.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub(crate) struct IoPaths {
    pub(crate) stdin: String,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) terminal: bool,
}

impl IoPaths {
    pub(crate) fn new(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> Self {
        IoPaths {
            stdin: stdin.into(),
            stdout: stdout.into(),
            stderr: stderr.into(),
            terminal,
        }
    }
}

/// One entry of the table.
struct Proc {
    pid: i32,
    status: PStatus,
    exit: Option<(u32, SystemTime)>,
    paths: IoPaths,
    /// The shim's side of the stdio, until the exit watcher takes it to drain it.
    io: Option<ProcIo>,
    /// For CloseIO (and closed at the exit).
    stdin_w: Option<Arc<Stdin>>,
    /// The pty master, for ResizePty.
    console: Option<Arc<OwnedFd>>,
    /// For an exec: its process JSON, until Start runs it.
    spec: Option<Vec<u8>>,
}

impl Proc {
    fn new(paths: IoPaths) -> Self {
        Proc {
            pid: 0,
            status: PStatus::Created,
            exit: None,
            paths,
            io: None,
            stdin_w: None,
            console: None,
            spec: None,
        }
    }
}

/// What State reports of a process.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct ProcView {
    pub(crate) pid: i32,
    pub(crate) status: PStatus,
    pub(crate) paths: IoPaths,
    pub(crate) exit: Option<(u32, SystemTime)>,
}

/// Why the table refused an operation. Each variant's message is what the caller sees.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ProcError {
    /// No init: Create has not run (or Delete has).
    #[error("container not created")]
    NotCreated,
    /// Create ran already.
    #[error("container {0} already created")]
    AlreadyCreated(String),
    /// Start of an init that is not `Created`.
    #[error("container is {0:?}")]
    NotStartable(PStatus),
    /// The operation needs a running init.
    #[error("container is not running")]
    NotRunning,
    /// Delete of a running init.
    #[error("container is running: kill it first")]
    InitRunning,
    /// No such process (State, Kill, Wait).
    #[error("process {0:?} not found")]
    ProcessNotFound(String),
    /// No such process (ResizePty and CloseIO, which do not name it).
    #[error("process not found")]
    Unknown,
    /// No such exec (Start, Delete).
    #[error("exec {0} not found")]
    ExecNotFound(String),
    #[error("exec {0} already exists")]
    ExecExists(String),
    #[error("exec {0} already started")]
    ExecStarted(String),
    /// Delete of a running exec.
    #[error("exec is running")]
    ExecRunning,
    #[error("invalid exec id {0:?}")]
    InvalidExecId(String),
    /// ResizePty of a process without a pty.
    #[error("process has no terminal")]
    NoTerminal,
    /// A wait with a limit ran out.
    #[error("the process did not exit in time")]
    WaitTimedOut,
}

impl ProcError {
    /// The status code the caller gets.
    pub(crate) fn code(&self) -> Code {
        use ProcError::*;
        match self {
            NotCreated | ProcessNotFound(_) | Unknown | ExecNotFound(_) => Code::NOT_FOUND,
            AlreadyCreated(_) | ExecExists(_) => Code::ALREADY_EXISTS,
            NotStartable(_) | NotRunning | InitRunning | ExecStarted(_) | ExecRunning
            | NoTerminal => Code::FAILED_PRECONDITION,
            InvalidExecId(_) => Code::INVALID_ARGUMENT,
            WaitTimedOut => Code::DEADLINE_EXCEEDED,
        }
    }
}

/// An exec id may name scratch files: 1 to 128 of `[A-Za-z0-9._-]`, not starting with `.`.
pub(crate) fn check_exec_id(id: &str) -> Result<(), ProcError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_EXEC_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !id.starts_with('.');
    if valid {
        Ok(())
    } else {
        Err(ProcError::InvalidExecId(id.to_string()))
    }
}

/// The shim's short-lived files in the bundle (exec ids are checked before they get here).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scratch<'a> {
    /// The init's pid file (`runc create --pid-file`).
    InitPid,
    /// A streaming exec's process JSON and pid file.
    ExecSpec(&'a str),
    ExecPid(&'a str),
    /// An ExecSync's process JSON and pid file.
    ExecSyncSpec(&'a str),
    ExecSyncPid(&'a str),
}

impl Scratch<'_> {
    pub(crate) fn path(self, bundle: &Path) -> PathBuf {
        bundle.join(match self {
            Scratch::InitPid => "init.pid".to_string(),
            Scratch::ExecSpec(id) => format!("exec-{id}.json"),
            Scratch::ExecPid(id) => format!("exec-{id}.pid"),
            Scratch::ExecSyncSpec(id) => format!("execsync-{id}.json"),
            Scratch::ExecSyncPid(id) => format!("execsync-{id}.pid"),
        })
    }
}

/// The table, and the condition variable every recorded exit signals.
#[derive(Default)]
pub(crate) struct Procs {
    table: Mutex<HashMap<String, Proc>>,
    exited: Condvar,
}

type Table = HashMap<String, Proc>;

fn find<'a>(t: &'a Table, exec_id: &str) -> Result<&'a Proc, ProcError> {
    t.get(exec_id)
        .ok_or_else(|| ProcError::ProcessNotFound(exec_id.to_string()))
}

fn init_running(t: &Table) -> bool {
    t.get("").map(|p| p.status) == Some(PStatus::Running)
}

impl Procs {
    fn lock(&self) -> MutexGuard<'_, Table> {
        locked(&self.table)
    }

    /// Create: takes the init's slot, so that a concurrent Create fails.
    pub(crate) fn reserve_init(&self, id: &str, paths: IoPaths) -> Result<(), ProcError> {
        let mut t = self.lock();
        if t.contains_key("") {
            return Err(ProcError::AlreadyCreated(id.to_string()));
        }
        t.insert(String::new(), Proc::new(paths));
        Ok(())
    }

    /// Exec: registers an exec for Start to run. The init must be running.
    pub(crate) fn add_exec(
        &self,
        exec_id: &str,
        paths: IoPaths,
        spec: Vec<u8>,
    ) -> Result<(), ProcError> {
        let mut p = Proc::new(paths);
        p.spec = Some(spec);
        self.insert_exec(exec_id, p)
    }

    /// ExecSync: holds `exec_id` for the call (see the module docs). The init must be
    /// running.
    pub(crate) fn reserve_exec_sync(&self, exec_id: &str) -> Result<(), ProcError> {
        let mut p = Proc::new(IoPaths::default());
        p.status = PStatus::Stopped;
        p.exit = Some((0, SystemTime::now()));
        self.insert_exec(exec_id, p)
    }

    fn insert_exec(&self, exec_id: &str, p: Proc) -> Result<(), ProcError> {
        let mut t = self.lock();
        if !init_running(&t) {
            return Err(ProcError::NotRunning);
        }
        if t.contains_key(exec_id) {
            return Err(ProcError::ExecExists(exec_id.to_string()));
        }
        t.insert(exec_id.to_string(), p);
        Ok(())
    }

    /// The process is launched: `pid` and its stdio. An exec is running from now on; the
    /// init stays `Created` until Start.
    pub(crate) fn launched(&self, exec_id: &str, pid: i32, io: ProcIo) {
        if let Some(p) = self.lock().get_mut(exec_id) {
            p.pid = pid;
            if !exec_id.is_empty() {
                p.status = PStatus::Running;
            }
            p.stdin_w = io.stdin.clone();
            p.console = io.console.clone();
            p.io = Some(io);
        }
    }

    /// Start of the init: its pid, if it is `Created`.
    pub(crate) fn init_to_start(&self) -> Result<i32, ProcError> {
        let t = self.lock();
        let p = t.get("").ok_or(ProcError::NotCreated)?;
        if p.status != PStatus::Created {
            return Err(ProcError::NotStartable(p.status));
        }
        Ok(p.pid)
    }

    /// `runc start` succeeded: a still `Created` init is running.
    pub(crate) fn init_started(&self) {
        if let Some(p) = self.lock().get_mut("") {
            if p.status == PStatus::Created {
                p.status = PStatus::Running;
            }
        }
    }

    /// Start of an exec: takes its process JSON (so a second Start fails) and returns it
    /// with the exec's stdio. The init must be running (checked after the take, so a
    /// Start refused for that cannot be retried).
    pub(crate) fn take_exec_spec(&self, exec_id: &str) -> Result<(Vec<u8>, IoPaths), ProcError> {
        let mut t = self.lock();
        let running = init_running(&t);
        let p = t
            .get_mut(exec_id)
            .ok_or_else(|| ProcError::ExecNotFound(exec_id.to_string()))?;
        let spec = p
            .spec
            .take()
            .ok_or_else(|| ProcError::ExecStarted(exec_id.to_string()))?;
        if !running {
            return Err(ProcError::NotRunning);
        }
        Ok((spec, p.paths.clone()))
    }

    /// An exec's launch failed: it is stopped with code 255, and its waiters (containerd
    /// waits before it starts an exec) return.
    pub(crate) fn start_failed(&self, exec_id: &str) {
        if let Some(p) = self.lock().get_mut(exec_id) {
            p.status = PStatus::Stopped;
            p.exit = Some((255, SystemTime::now()));
        }
        self.exited.notify_all();
    }

    /// The exit watcher: takes the process's stdio to drain it.
    fn take_io(&self, exec_id: &str) -> Option<ProcIo> {
        self.lock().get_mut(exec_id).and_then(|p| p.io.take())
    }

    /// The exit watcher: records the exit (after the drain and, for the init, the durable
    /// record), closes the process's stdin and wakes every waiter.
    fn record_exit(&self, exec_id: &str, code: u32, at: SystemTime) {
        if let Some(p) = self.lock().get_mut(exec_id) {
            p.status = PStatus::Stopped;
            p.exit = Some((code, at));
            // Ends the copy-in thread (in KeepOpen mode it would wait forever).
            if let Some(w) = p.stdin_w.take() {
                w.close();
            }
        }
        self.exited.notify_all();
    }

    pub(crate) fn view(&self, exec_id: &str) -> Result<ProcView, ProcError> {
        let t = self.lock();
        let p = find(&t, exec_id)?;
        Ok(ProcView {
            pid: p.pid,
            status: p.status,
            paths: p.paths.clone(),
            exit: p.exit,
        })
    }

    pub(crate) fn init_pid(&self) -> i32 {
        self.lock().get("").map(|p| p.pid).unwrap_or(0)
    }

    pub(crate) fn init_status(&self) -> Option<PStatus> {
        self.lock().get("").map(|p| p.status)
    }

    /// Delete of the init: allowed once it is not running (a `Created` init is killed by
    /// the runtime's delete).
    pub(crate) fn check_init_deletable(&self) -> Result<(), ProcError> {
        match self.init_status() {
            None => Err(ProcError::NotCreated),
            Some(PStatus::Running) => Err(ProcError::InitRunning),
            Some(_) => Ok(()),
        }
    }

    /// Delete of an exec that is not running: removes it and returns its exit (code 0,
    /// now, for one that never started).
    pub(crate) fn remove_exec(&self, exec_id: &str) -> Result<Exit, ProcError> {
        let mut t = self.lock();
        let p = t
            .get(exec_id)
            .ok_or_else(|| ProcError::ExecNotFound(exec_id.to_string()))?;
        if p.status == PStatus::Running {
            return Err(ProcError::ExecRunning);
        }
        let (code, at) = p.exit.unwrap_or((0, SystemTime::now()));
        let exit = Exit {
            pid: p.pid,
            code,
            at,
        };
        t.remove(exec_id);
        Ok(exit)
    }

    pub(crate) fn remove(&self, exec_id: &str) {
        self.lock().remove(exec_id);
    }

    /// ResizePty: the process's pty master.
    pub(crate) fn console(&self, exec_id: &str) -> Result<Arc<OwnedFd>, ProcError> {
        let t = self.lock();
        let p = t.get(exec_id).ok_or(ProcError::Unknown)?;
        p.console.clone().ok_or(ProcError::NoTerminal)
    }

    /// CloseIO: closes the process's stdin (if it has one).
    pub(crate) fn close_stdin(&self, exec_id: &str) -> Result<(), ProcError> {
        let t = self.lock();
        let p = t.get(exec_id).ok_or(ProcError::Unknown)?;
        if let Some(w) = &p.stdin_w {
            w.close();
        }
        Ok(())
    }

    /// Attach: whether the init has a terminal, if it has not exited.
    pub(crate) fn attachable_init(&self) -> Result<bool, ProcError> {
        let t = self.lock();
        let p = t.get("").ok_or(ProcError::NotCreated)?;
        if p.status == PStatus::Stopped {
            return Err(ProcError::NotRunning);
        }
        Ok(p.paths.terminal)
    }

    /// Every exec id in the table (ExecSync's included), in no order.
    pub(crate) fn exec_ids(&self) -> Vec<String> {
        self.lock()
            .keys()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect()
    }

    /// True while any process has not exited.
    pub(crate) fn any_live(&self) -> bool {
        self.lock().values().any(|p| p.status != PStatus::Stopped)
    }

    /// Waits until the process's exit is recorded, at most `limit` (`None`: no limit).
    /// NOT_FOUND when there is no such process (any more).
    pub(crate) fn wait(&self, exec_id: &str, limit: Option<Duration>) -> Result<Exit, ProcError> {
        let deadline = limit.map(|l| Instant::now() + l);
        let mut t = self.lock();
        loop {
            let p = find(&t, exec_id)?;
            if let Some((code, at)) = p.exit {
                return Ok(Exit {
                    pid: p.pid,
                    code,
                    at,
                });
            }
            t = match deadline {
                None => self.exited.wait(t).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(ProcError::WaitTimedOut);
                    }
                    self.exited
                        .wait_timeout(t, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}

/// A process's stdio, as the shim is to set it up.
pub(crate) struct LaunchIo {
    pub(crate) stdin: String,
    pub(crate) stdin_mode: StdinMode,
    pub(crate) stdout: Sink,
    pub(crate) stderr: Sink,
    pub(crate) terminal: bool,
}

impl Shim {
    /// Sets up stdio and runs the runtime (`runc create` / `runc exec`) with it; returns
    /// the new pid and the shim's side of its stdio.
    pub(crate) fn launch(
        &self,
        io: LaunchIo,
        what: Launch<'_>,
        pid_file: &Path,
    ) -> Result<(i32, ProcIo), ShimError> {
        let _ = std::fs::remove_file(pid_file);
        let run = |console: Option<&Path>, stdio: Stdio3| {
            self.cfg
                .runtime
                .launch(&self.cfg.id, what, pid_file, console, stdio)
        };
        let io = if io.terminal {
            let sock = self.console_socket()?;
            run(Some(sock.path()), Stdio3::null())?;
            let master = sock.receive().map_err(ShimError::Console)?;
            stdio::console_io(master, &io.stdin, io.stdin_mode, io.stdout)
                .map_err(ShimError::ConsoleIo)?
        } else {
            let (s3, pio) = stdio::pipes(&io.stdin, io.stdin_mode, io.stdout, io.stderr)
                .map_err(ShimError::Stdio)?;
            run(None, s3)?;
            pio
        };
        let pid = runtime::take_pid_file(pid_file).map_err(|source| ShimError::PidFile {
            path: pid_file.to_owned(),
            source,
        })?;
        Ok((pid, io))
    }

    /// A new `--console-socket`, next to the shim's socket (`<socket>.c<n>`): that path is
    /// known to fit a unix socket address, where the bundle's may not.
    fn console_socket(&self) -> Result<ConsoleSocket, ShimError> {
        let n = self
            .consoles
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut path = self.cfg.socket.clone().into_os_string();
        path.push(format!(".c{n}"));
        ConsoleSocket::new(PathBuf::from(path)).map_err(ShimError::ConsoleSocket)
    }

    /// Remembers the init's memory cgroup `oom_kill` counter, to compare at its exit.
    pub(crate) fn note_oom_baseline(&self, pid: i32) {
        if let Some(f) = oom::counter_file(pid) {
            let base = oom::count(&f);
            *locked(&self.oom) = Some((f, base));
        }
    }

    /// Starts the exit watcher of `pid` (one thread, until the process exits).
    pub(crate) fn watch(self: &Arc<Self>, exec_id: String, pid: i32) {
        let shim = Arc::clone(self);
        let spawned = sys::spawn_small("exit-watch", move || {
            let status = reaper::wait(pid);
            shim.on_exit(&exec_id, pid, status);
        });
        if let Err(e) = spawned {
            eprintln!("crius-shim: cannot watch pid {pid}: {e}");
        }
    }

    /// `pid` exited with wait status `status`: drains its output, writes the durable
    /// record (init), records the exit and tells containerd.
    fn on_exit(&self, exec_id: &str, pid: i32, status: i32) {
        let code = sys::exit_code(status);
        let at = SystemTime::now();
        if let Some(mut io) = self.procs.take_io(exec_id) {
            io.wait_drained(DRAIN_LIMIT);
        }
        if exec_id.is_empty() {
            self.write_exit_record(pid, code, at);
        }
        self.procs.record_exit(exec_id, code, at);
        let id = if exec_id.is_empty() {
            self.cfg.id.clone()
        } else {
            exec_id.to_string()
        };
        self.cfg.publisher.publish(
            "/tasks/exit",
            "containerd.events.TaskExit",
            &TaskExit {
                container_id: self.cfg.id.clone(),
                id,
                pid: wire_pid(pid),
                exit_status: code,
                exited_at: timestamp(at),
                ..Default::default()
            },
        );
    }

    /// The init exited: did the OOM killer strike, then `exit.json`, durably.
    fn write_exit_record(&self, pid: i32, code: u32, at: SystemTime) {
        let oom = locked(&self.oom).clone();
        let oom_killed = oom.is_some_and(|(f, base)| oom::count(&f) > base);
        if oom_killed {
            self.cfg.publisher.publish(
                "/tasks/oom",
                "containerd.events.TaskOOM",
                &TaskOOM {
                    container_id: self.cfg.id.clone(),
                    ..Default::default()
                },
            );
        }
        let rec = ExitRecord::new(wire_pid(pid), code, at, oom_killed);
        if let Err(e) = exitfile::write(&self.cfg.exit_file, &rec) {
            eprintln!("crius-shim: writing {}: {e}", self.cfg.exit_file.display());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn paths(terminal: bool) -> IoPaths {
        IoPaths::new("/in", "/out", "/err", terminal)
    }

    /// A table whose init has been created with `pid` (and started when `running`).
    fn with_init(pid: i32, running: bool) -> Procs {
        let t = Procs::default();
        t.reserve_init("c1", paths(false)).unwrap();
        t.launched("", pid, ProcIo::default());
        if running {
            t.init_to_start().unwrap();
            t.init_started();
        }
        t
    }

    fn status(t: &Procs, exec_id: &str) -> PStatus {
        t.view(exec_id).unwrap().status
    }

    #[test]
    fn exec_ids() {
        for ok in ["a", "exec-1", "A_b.c", "x.", &"e".repeat(128)] {
            assert_eq!(check_exec_id(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "..",
            "a/b",
            "../x",
            "a b",
            "ü",
            &"e".repeat(129),
        ] {
            assert_eq!(
                check_exec_id(bad),
                Err(ProcError::InvalidExecId(bad.to_string())),
                "{bad}"
            );
        }
        assert_eq!(
            ProcError::InvalidExecId("a/b".into()).to_string(),
            r#"invalid exec id "a/b""#
        );
    }

    #[test]
    fn scratch_paths_stay_in_the_bundle() {
        let b = Path::new("/b");
        assert_eq!(Scratch::InitPid.path(b), Path::new("/b/init.pid"));
        assert_eq!(
            Scratch::ExecSpec("e1").path(b),
            Path::new("/b/exec-e1.json")
        );
        assert_eq!(Scratch::ExecPid("e1").path(b), Path::new("/b/exec-e1.pid"));
        assert_eq!(
            Scratch::ExecSyncSpec("e1").path(b),
            Path::new("/b/execsync-e1.json")
        );
        assert_eq!(
            Scratch::ExecSyncPid("e1").path(b),
            Path::new("/b/execsync-e1.pid")
        );
    }

    #[test]
    fn init_lifecycle() {
        let t = Procs::default();
        assert_eq!(t.init_to_start(), Err(ProcError::NotCreated));
        assert_eq!(t.check_init_deletable(), Err(ProcError::NotCreated));
        assert_eq!(t.init_pid(), 0);
        t.reserve_init("c1", paths(false)).unwrap();
        let again = t.reserve_init("c1", paths(false)).unwrap_err();
        assert_eq!(again, ProcError::AlreadyCreated("c1".into()));
        assert_eq!(again.code(), Code::ALREADY_EXISTS);
        assert_eq!(again.to_string(), "container c1 already created");

        t.launched("", 42, ProcIo::default());
        assert_eq!(t.init_pid(), 42);
        assert_eq!(status(&t, ""), PStatus::Created, "the init waits for Start");
        assert!(t.any_live());
        // A created init may be deleted (the runtime's delete kills it).
        assert_eq!(t.check_init_deletable(), Ok(()));
        assert_eq!(t.init_to_start(), Ok(42));
        t.init_started();
        assert_eq!(status(&t, ""), PStatus::Running);
        let twice = t.init_to_start().unwrap_err();
        assert_eq!(twice.to_string(), "container is Running");
        assert_eq!(twice.code(), Code::FAILED_PRECONDITION);
        assert_eq!(t.check_init_deletable(), Err(ProcError::InitRunning));

        t.record_exit("", 137, SystemTime::UNIX_EPOCH);
        let v = t.view("").unwrap();
        assert_eq!(v.status, PStatus::Stopped);
        assert_eq!(v.exit, Some((137, SystemTime::UNIX_EPOCH)));
        assert_eq!(v.paths, paths(false));
        assert!(!t.any_live());
        // Stopped is final: a late Start neither restarts nor revives it.
        t.init_started();
        assert_eq!(status(&t, ""), PStatus::Stopped);
        assert_eq!(
            t.init_to_start(),
            Err(ProcError::NotStartable(PStatus::Stopped))
        );
        assert_eq!(t.check_init_deletable(), Ok(()));
    }

    #[test]
    fn execs_need_a_running_init() {
        let t = with_init(42, false);
        assert_eq!(
            t.add_exec("e1", paths(false), b"{}".to_vec()),
            Err(ProcError::NotRunning)
        );
        assert_eq!(t.reserve_exec_sync("s1"), Err(ProcError::NotRunning));
        t.init_to_start().unwrap();
        t.init_started();
        t.add_exec("e1", paths(false), b"{}".to_vec()).unwrap();
        let dup = t.add_exec("e1", paths(false), b"{}".to_vec()).unwrap_err();
        assert_eq!(dup, ProcError::ExecExists("e1".into()));
        assert_eq!(dup.code(), Code::ALREADY_EXISTS);
        assert_eq!(
            t.reserve_exec_sync("e1"),
            Err(ProcError::ExecExists("e1".into()))
        );
        assert_eq!(status(&t, "e1"), PStatus::Created);
    }

    #[test]
    fn exec_start_takes_the_spec_once() {
        let t = with_init(42, true);
        assert_eq!(
            t.take_exec_spec("nope"),
            Err(ProcError::ExecNotFound("nope".into()))
        );
        t.add_exec("e1", paths(true), b"spec".to_vec()).unwrap();
        assert_eq!(t.take_exec_spec("e1"), Ok((b"spec".to_vec(), paths(true))));
        assert_eq!(
            t.take_exec_spec("e1"),
            Err(ProcError::ExecStarted("e1".into()))
        );
        t.launched("e1", 43, ProcIo::default());
        let v = t.view("e1").unwrap();
        assert_eq!(
            (v.pid, v.status),
            (43, PStatus::Running),
            "an exec runs at launch"
        );
        assert_eq!(t.remove_exec("e1"), Err(ProcError::ExecRunning));

        // Start after the init exited: refused, and the spec is gone.
        t.add_exec("e2", paths(false), b"spec".to_vec()).unwrap();
        t.record_exit("", 0, SystemTime::now());
        assert_eq!(t.take_exec_spec("e2"), Err(ProcError::NotRunning));
        assert_eq!(
            t.take_exec_spec("e2"),
            Err(ProcError::ExecStarted("e2".into()))
        );
    }

    #[test]
    fn failed_exec_start_wakes_its_waiters() {
        let t = Arc::new(with_init(42, true));
        t.add_exec("e1", paths(false), b"spec".to_vec()).unwrap();
        t.take_exec_spec("e1").unwrap();
        let waiter = {
            let t = Arc::clone(&t);
            std::thread::spawn(move || t.wait("e1", None))
        };
        t.start_failed("e1");
        let exit = waiter.join().unwrap().unwrap();
        assert_eq!((exit.pid, exit.code), (0, 255));
        assert_eq!(status(&t, "e1"), PStatus::Stopped);
    }

    #[test]
    fn wait_returns_the_recorded_exit_until_delete() {
        let t = Arc::new(with_init(42, true));
        t.add_exec("e1", paths(false), b"spec".to_vec()).unwrap();
        t.take_exec_spec("e1").unwrap();
        t.launched("e1", 43, ProcIo::default());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || t.wait("e1", None))
            })
            .collect();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(7);
        t.record_exit("e1", 3, at);
        let want = Exit {
            pid: 43,
            code: 3,
            at,
        };
        for w in waiters {
            assert_eq!(w.join().unwrap(), Ok(want));
        }
        // However late, and with or without a limit: the same exit.
        assert_eq!(t.wait("e1", None), Ok(want));
        assert_eq!(t.wait("e1", Some(Duration::ZERO)), Ok(want));
        assert_eq!(t.view("e1").unwrap().exit, Some((3, at)));
        assert_eq!(t.remove_exec("e1"), Ok(want));
        let gone = t.wait("e1", None).unwrap_err();
        assert_eq!(gone, ProcError::ProcessNotFound("e1".into()));
        assert_eq!(gone.code(), Code::NOT_FOUND);
        assert_eq!(gone.to_string(), r#"process "e1" not found"#);
        assert_eq!(t.view("e1"), Err(ProcError::ProcessNotFound("e1".into())));
        assert_eq!(
            t.remove_exec("e1"),
            Err(ProcError::ExecNotFound("e1".into()))
        );
    }

    #[test]
    fn wait_with_a_limit_times_out() {
        let t = with_init(42, true);
        let start = Instant::now();
        let r = t.wait("", Some(Duration::from_millis(50)));
        assert_eq!(r, Err(ProcError::WaitTimedOut));
        assert_eq!(r.unwrap_err().code(), Code::DEADLINE_EXCEEDED);
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert_eq!(
            t.wait("nope", Some(Duration::from_secs(5))),
            Err(ProcError::ProcessNotFound("nope".into()))
        );
    }

    #[test]
    fn an_unstarted_exec_deletes_with_code_zero() {
        let t = with_init(42, true);
        t.add_exec("e1", paths(false), b"spec".to_vec()).unwrap();
        let before = SystemTime::now();
        let exit = t.remove_exec("e1").unwrap();
        assert_eq!((exit.pid, exit.code), (0, 0));
        assert!(exit.at >= before);
        assert!(t.exec_ids().is_empty());
    }

    #[test]
    fn exec_sync_holds_its_id_as_stopped() {
        let t = with_init(42, true);
        t.reserve_exec_sync("s1").unwrap();
        assert_eq!(t.exec_ids(), vec!["s1".to_string()]);
        assert_eq!(status(&t, "s1"), PStatus::Stopped);
        assert_eq!(t.wait("s1", None).map(|e| e.code), Ok(0));
        assert_eq!(
            t.add_exec("s1", paths(false), b"{}".to_vec()),
            Err(ProcError::ExecExists("s1".into()))
        );
        t.remove("s1");
        assert!(t.exec_ids().is_empty());
    }

    #[test]
    fn stdio_lookups() {
        let t = with_init(42, false);
        assert_eq!(t.close_stdin("nope"), Err(ProcError::Unknown));
        assert_eq!(ProcError::Unknown.to_string(), "process not found");
        assert_eq!(t.close_stdin(""), Ok(()), "no stdin: nothing to close");
        assert_eq!(t.console("nope").unwrap_err(), ProcError::Unknown);
        assert_eq!(t.console("").unwrap_err(), ProcError::NoTerminal);
    }

    #[test]
    fn attach_needs_a_live_init() {
        let t = Procs::default();
        assert_eq!(t.attachable_init(), Err(ProcError::NotCreated));
        t.reserve_init("c1", paths(true)).unwrap();
        assert_eq!(t.attachable_init(), Ok(true), "before Start is fine");
        t.record_exit("", 0, SystemTime::now());
        assert_eq!(t.attachable_init(), Err(ProcError::NotRunning));
    }
}

//! What the shim's two ttrpc services share: the configuration it was started with, the
//! process table and the init's CRI log and attachers ([`Shim`]), and the errors they
//! answer with ([`ShimError`]).
//!
//! The services: containerd's shim v2 Task service (`task`, registered as both
//! `containerd.task.v3.Task` and `containerd.task.v2.Task`, whose messages are identical,
//! so containerd 1.6 and 1.7+/2.x can drive it) and crius's own `crius.shim.v1.Crius`
//! (`crius_service`, with ExecSync's capture in `execsync`). The processes themselves,
//! their exits and the rules for waiting on them are in `procs`; the runtime calls in
//! `runtime`.
//!
//! Invariants (detailed in `procs`):
//! - A process's exit is reported (Wait returns, State says STOPPED) only after its
//!   output copiers have drained (bounded) and, for the container's init, after the exit
//!   record is durably on disk (see `exitfile`).
//! - Only the reaper waits for children (see `reaper`).
//! - Every request names this shim's container (`Shim::serving`) before anything else.

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};

use ttrpc::Code;

use crate::attach::Tee;
use crate::crilog::CriLog;
use crate::procs::{ProcError, Procs, Scratch};
use crate::publisher::Publisher;
use crate::runtime::{Runtime, RuntimeError};

/// What the shim was started with.
pub(crate) struct Config {
    pub(crate) id: String,
    pub(crate) bundle: PathBuf,
    pub(crate) runtime: Runtime,
    pub(crate) log_path: Option<PathBuf>,
    pub(crate) exit_file: PathBuf,
    /// containerd's event sink (a no-op in crius mode).
    pub(crate) publisher: Publisher,
    /// The shim's ttrpc socket. Console sockets are made next to it (`<socket>.c<n>`):
    /// its path is known to fit a unix socket address, where the bundle's may not.
    pub(crate) socket: PathBuf,
}

/// The shim's state, shared by both services and the exit watchers.
pub(crate) struct Shim {
    pub(crate) cfg: Config,
    pub(crate) procs: Procs,
    /// The init's CRI log, in crius mode, once Create opened it.
    pub(crate) log: Mutex<Option<Arc<CriLog>>>,
    /// The attachers of the init's (stdout, stderr), in crius mode.
    pub(crate) tees: Mutex<Option<(Arc<Tee>, Arc<Tee>)>>,
    /// The init's memory cgroup `oom_kill` counter file and its value at Create.
    pub(crate) oom: Mutex<Option<(PathBuf, u64)>>,
    shutdown: Mutex<Option<Sender<Option<OwnedFd>>>>,
    /// Console sockets made so far (they are numbered).
    pub(crate) consoles: AtomicU32,
}

/// Locks `m`, carrying on with the data of a thread that panicked holding it.
pub(crate) fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shim {
    /// `shutdown` is told once, when a caller asks the shim to exit.
    pub(crate) fn new(cfg: Config, shutdown: Sender<Option<OwnedFd>>) -> Arc<Self> {
        Arc::new(Shim {
            cfg,
            procs: Procs::default(),
            log: Mutex::new(None),
            tees: Mutex::new(None),
            oom: Mutex::new(None),
            shutdown: Mutex::new(Some(shutdown)),
            consoles: AtomicU32::new(0),
        })
    }

    /// Every request names the container; this shim serves one. Each service method
    /// starts with `let shim = self.0.serving(&req.id)?;`.
    pub(crate) fn serving(self: &Arc<Self>, id: &str) -> Result<&Arc<Self>, ShimError> {
        if id == self.cfg.id {
            Ok(self)
        } else {
            Err(ShimError::OtherContainer {
                id: id.to_string(),
                served: self.cfg.id.clone(),
            })
        }
    }

    pub(crate) fn scratch(&self, file: Scratch<'_>) -> PathBuf {
        file.path(&self.cfg.bundle)
    }

    /// Removes what the init's Create left in the bundle (Delete, or a failed Create).
    pub(crate) fn cleanup_init_scratch(&self) {
        let _ = std::fs::remove_file(self.scratch(Scratch::InitPid));
        let _ = std::fs::remove_file(&self.cfg.runtime.log);
    }

    /// Asks the main thread to exit; `caller` is a duplicate of the asking
    /// connection, whose hang-up (the caller has the response) lets it go at once.
    pub(crate) fn request_shutdown(&self, caller: Option<OwnedFd>) {
        if let Some(tx) = locked(&self.shutdown).take() {
            let _ = tx.send(caller);
        }
    }
}

/// Why a call failed. The message is what the caller sees; [`ShimError::code`] is the
/// status code it gets with it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ShimError {
    /// The request names another container.
    #[error("container {id} is not served by this shim ({served})")]
    OtherContainer { id: String, served: String },
    /// The process table refused: the process's state does not allow it, or no such
    /// process.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// The runtime failed (runc's or crun's own message).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),

    // Create.
    #[error("checkpoint/restore is not supported")]
    Checkpoint,
    #[error(
        "rootfs mounts in Create are not supported: mount the rootfs and name it in config.json"
    )]
    RootfsMounts,
    #[error("bundle {given} differs from the shim's {}", ours.display())]
    OtherBundle { given: String, ours: PathBuf },
    #[error("open log {}: {source}", path.display())]
    OpenLog {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    // Setting up a process (Create, Start of an exec, ExecSync).
    #[error("console socket: {0}")]
    ConsoleSocket(#[source] io::Error),
    #[error("console: {0}")]
    Console(#[source] io::Error),
    #[error("console io: {0}")]
    ConsoleIo(#[source] io::Error),
    #[error("stdio: {0}")]
    Stdio(#[source] io::Error),
    #[error("cannot create pipes")]
    Pipes(#[source] io::Error),
    #[error("write exec spec: {0}")]
    WriteSpec(#[source] io::Error),
    #[error("pid file {}: {source}", path.display())]
    PidFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("exec pid file: {0}")]
    ExecSyncPidFile(#[source] io::Error),

    // Kill, Delete.
    /// The process has exited: nothing to signal.
    #[error("process already finished")]
    Finished,
    #[error("bad signal")]
    BadSignal,
    /// kill(2) of an exec failed (it is gone).
    #[error("kill {pid}: {source}")]
    Kill {
        pid: i32,
        #[source]
        source: io::Error,
    },
    #[error("exec not started")]
    ExecNotStarted,
    /// The runtime's delete returned, the init did not exit within the limit.
    #[error("init did not exit after delete")]
    InitLingers,

    // Exec, ResizePty, Update, Stats.
    #[error("exec without a process spec")]
    NoProcessSpec,
    #[error("resize: {0}")]
    Resize(#[source] io::Error),
    #[error("update without resources")]
    NoResources,
    #[error("the container has no process")]
    NoInit,
    /// Reading the init's cgroup (`stats` reports its failures as text).
    #[error("{0}")]
    Stats(String),

    // ReopenLog, Attach.
    #[error("this container has no CRI log")]
    NoLog,
    #[error("reopen log: {0}")]
    ReopenLog(#[source] io::Error),
    #[error(
        "attach needs crius mode (a shim started with -log-path); \
         in containerd mode the init's output goes to the FIFOs given to Create"
    )]
    AttachNeedsCriusMode,
    /// Nobody holds the attach FIFO's read end.
    #[error("{what} FIFO {path} has no reader (the caller went away?)")]
    FifoNoReader { what: &'static str, path: String },
    #[error("opening {what} FIFO {path}: {source}")]
    OpenFifo {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} path {path} is not a FIFO")]
    NotFifo { what: &'static str, path: String },
    #[error("attach: {0}")]
    Attach(#[source] io::Error),
}

impl ShimError {
    /// The status code the caller gets.
    pub(crate) fn code(&self) -> Code {
        use ShimError::*;
        match self {
            Proc(e) => e.code(),
            OtherContainer { .. } | Finished | Kill { .. } => Code::NOT_FOUND,
            Checkpoint | RootfsMounts => Code::UNIMPLEMENTED,
            OtherBundle { .. }
            | BadSignal
            | NoProcessSpec
            | NoResources
            | OpenFifo { .. }
            | NotFifo { .. } => Code::INVALID_ARGUMENT,
            ExecNotStarted | NoInit | NoLog | AttachNeedsCriusMode | FifoNoReader { .. } => {
                Code::FAILED_PRECONDITION
            }
            InitLingers => Code::DEADLINE_EXCEEDED,
            Runtime(_)
            | OpenLog { .. }
            | ConsoleSocket(_)
            | Console(_)
            | ConsoleIo(_)
            | Stdio(_)
            | Pipes(_)
            | WriteSpec(_)
            | PidFile { .. }
            | ExecSyncPidFile(_)
            | Resize(_)
            | Stats(_)
            | ReopenLog(_)
            | Attach(_) => Code::INTERNAL,
        }
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e))
    }
}

impl From<ProcError> for ttrpc::Error {
    fn from(e: ProcError) -> Self {
        ShimError::from(e).into()
    }
}

impl From<RuntimeError> for ttrpc::Error {
    fn from(e: RuntimeError) -> Self {
        ShimError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn status(e: impl Into<ttrpc::Error>) -> (Code, String) {
        match e.into() {
            ttrpc::Error::RpcStatus(s) => (s.code(), s.message().to_string()),
            other => panic!("not a status: {other:?}"),
        }
    }

    #[test]
    fn errors_answer_their_code_and_message() {
        assert_eq!(
            status(ShimError::OtherContainer {
                id: "a".into(),
                served: "b".into()
            }),
            (
                Code::NOT_FOUND,
                "container a is not served by this shim (b)".into()
            )
        );
        assert_eq!(
            status(ProcError::NotRunning),
            (Code::FAILED_PRECONDITION, "container is not running".into())
        );
        assert_eq!(
            status(ShimError::Pipes(io::Error::other("EMFILE"))),
            (Code::INTERNAL, "cannot create pipes".into())
        );
        assert_eq!(
            status(ShimError::FifoNoReader {
                what: "stdout",
                path: "/f".into()
            }),
            (
                Code::FAILED_PRECONDITION,
                "stdout FIFO /f has no reader (the caller went away?)".into()
            )
        );
        assert_eq!(
            status(ShimError::Proc(ProcError::WaitTimedOut)).0,
            Code::DEADLINE_EXCEEDED
        );
    }

    #[test]
    fn errors_keep_their_cause() {
        use std::error::Error as _;
        let e = ShimError::Pipes(io::Error::other("EMFILE"));
        assert_eq!(e.source().map(|s| s.to_string()), Some("EMFILE".into()));
    }
}

//! The shim's ttrpc services: containerd's shim v2 Task service (registered as both
//! `containerd.task.v3.Task` and `containerd.task.v2.Task`, whose messages are identical,
//! so containerd 1.6 and 1.7+/2.x can drive it) and crius's own `crius.shim.v1.Crius`.
//!
//! Invariants:
//! - A process's exit is reported (Wait returns, State says STOPPED) only after its
//!   output copiers have drained (bounded) and, for the container's init, after the exit
//!   record is durably on disk (see `exitfile`).
//! - Only the reaper waits for children (see `reaper`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use containerd_shim_protos::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, ExecProcessRequest, KillRequest, PidsRequest, PidsResponse,
    ResizePtyRequest, ShutdownRequest, StartRequest, StartResponse, StateRequest, StateResponse,
    StatsRequest, StatsResponse, Status, UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::{EnumOrUnknown, MessageField};
use containerd_shim_protos::types::task::ProcessInfo;
use ttrpc::{Code, TtrpcContext};

use crate::attach::{AttachError, Tee};
use crate::crilog::{CriLog, Stream};
use crate::exitfile::{self, ExitRecord};
use crate::proto::shim::{
    AttachRequest, AttachResponse, ExecSyncRequest, ExecSyncResponse, ListExecsRequest,
    ListExecsResponse, ReopenLogRequest, ReopenLogResponse,
};
use crate::publisher::{Publisher, timestamp};
use crate::runtime::{self, Runtime, RuntimeError, Stdio3};
use crate::stdio::{self, ConsoleSocket, ProcIo, Sink, Stdin, StdinMode};
use crate::{reaper, sys};

/// How long an exit waits for the process's output to drain before it is reported
/// anyway (a background process may hold the pipe open forever).
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
const DEFAULT_OUTPUT_LIMIT: usize = 16 << 20;

/// A process's stdio as requested.
struct LaunchIo {
    stdin: String,
    stdin_mode: StdinMode,
    stdout: Sink,
    stderr: Sink,
    terminal: bool,
}

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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PStatus {
    Created,
    Running,
    Stopped,
}

struct Proc {
    pid: i32,
    status: PStatus,
    exit: Option<(u32, SystemTime)>,
    stdin: String,
    stdout: String,
    stderr: String,
    terminal: bool,
    io: Option<ProcIo>,
    stdin_w: Option<Arc<Stdin>>,
    console: Option<Arc<std::os::fd::OwnedFd>>,
    /// For an exec: its process JSON, until Start runs it.
    spec: Option<Vec<u8>>,
}

impl Proc {
    fn new(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> Self {
        Proc {
            pid: 0,
            status: PStatus::Created,
            exit: None,
            stdin: stdin.into(),
            stdout: stdout.into(),
            stderr: stderr.into(),
            terminal,
            io: None,
            stdin_w: None,
            console: None,
            spec: None,
        }
    }
}

#[derive(Default)]
struct State {
    /// Key "" is the container's init.
    procs: HashMap<String, Proc>,
}

pub(crate) struct Shim {
    cfg: Config,
    state: Mutex<State>,
    cv: Condvar,
    log: Mutex<Option<Arc<CriLog>>>,
    /// The attachers of the init's (stdout, stderr), in crius mode.
    tees: Mutex<Option<(Arc<Tee>, Arc<Tee>)>>,
    /// The init's memory cgroup `oom_kill` counter file and its value at Create.
    oom: Mutex<Option<(PathBuf, u64)>>,
    shutdown: Mutex<Option<Sender<()>>>,
    /// Console sockets made so far (they are numbered).
    consoles: std::sync::atomic::AtomicU32,
}

fn err(code: Code, msg: impl ToString) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg))
}

fn rt_err(e: RuntimeError) -> ttrpc::Error {
    err(Code::INTERNAL, e)
}

fn valid_exec_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !id.starts_with('.')
}

impl Shim {
    pub(crate) fn new(cfg: Config, shutdown: Sender<()>) -> Arc<Self> {
        Arc::new(Shim {
            cfg,
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            log: Mutex::new(None),
            tees: Mutex::new(None),
            oom: Mutex::new(None),
            shutdown: Mutex::new(Some(shutdown)),
            consoles: std::sync::atomic::AtomicU32::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_id(&self, id: &str) -> ttrpc::Result<()> {
        if id == self.cfg.id {
            Ok(())
        } else {
            Err(err(
                Code::NOT_FOUND,
                format!(
                    "container {id} is not served by this shim ({})",
                    self.cfg.id
                ),
            ))
        }
    }

    fn scratch(&self, name: &str) -> PathBuf {
        self.cfg.bundle.join(name)
    }

    fn init_pid(&self) -> i32 {
        self.lock().procs.get("").map(|p| p.pid).unwrap_or(0)
    }

    /// Watches `pid` until it exits, then drains its output, records the exit
    /// (durably, for init) and wakes every waiter.
    fn watch(self: &Arc<Self>, exec_id: String, pid: i32) {
        let shim = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("exit-watch".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                let status = reaper::wait(pid);
                let code = sys::exit_code(status);
                let at = SystemTime::now();
                let io = shim
                    .lock()
                    .procs
                    .get_mut(&exec_id)
                    .and_then(|p| p.io.take());
                if let Some(mut io) = io {
                    io.wait_drained(DRAIN_LIMIT);
                }
                if exec_id.is_empty() {
                    let oom = shim.oom.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let oom_killed = oom.is_some_and(|(f, base)| crate::oom::count(&f) > base);
                    if oom_killed {
                        shim.cfg.publisher.publish(
                            "/tasks/oom",
                            "containerd.events.TaskOOM",
                            &TaskOOM {
                                container_id: shim.cfg.id.clone(),
                                ..Default::default()
                            },
                        );
                    }
                    let rec =
                        ExitRecord::new(u32::try_from(pid).unwrap_or(0), code, at, oom_killed);
                    if let Err(e) = exitfile::write(&shim.cfg.exit_file, &rec) {
                        eprintln!("crius-shim: writing {}: {e}", shim.cfg.exit_file.display());
                    }
                }
                let mut st = shim.lock();
                if let Some(p) = st.procs.get_mut(&exec_id) {
                    p.status = PStatus::Stopped;
                    p.exit = Some((code, at));
                    // Ends the copy-in thread (in KeepOpen mode it would wait forever).
                    if let Some(w) = p.stdin_w.take() {
                        w.close();
                    }
                }
                drop(st);
                shim.cv.notify_all();
                let id = if exec_id.is_empty() {
                    shim.cfg.id.clone()
                } else {
                    exec_id.clone()
                };
                shim.cfg.publisher.publish(
                    "/tasks/exit",
                    "containerd.events.TaskExit",
                    &TaskExit {
                        container_id: shim.cfg.id.clone(),
                        id,
                        pid: u32::try_from(pid).unwrap_or(0),
                        exit_status: code,
                        exited_at: timestamp(at),
                        ..Default::default()
                    },
                );
            });
        if let Err(e) = spawned {
            eprintln!("crius-shim: cannot watch pid {pid}: {e}");
        }
    }

    /// Sets up stdio and runs `f` (runc create / exec) with it; returns the new pid.
    fn launch(
        self: &Arc<Self>,
        io: LaunchIo,
        pid_file: &Path,
        f: impl FnOnce(Option<&Path>, Stdio3) -> Result<(), RuntimeError>,
    ) -> ttrpc::Result<(i32, ProcIo)> {
        let _ = std::fs::remove_file(pid_file);
        let LaunchIo {
            stdin,
            stdin_mode,
            stdout,
            stderr,
            terminal,
        } = io;
        let stdin = stdin.as_str();
        let io = if terminal {
            let n = self
                .consoles
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut path = self.cfg.socket.clone().into_os_string();
            path.push(format!(".c{n}"));
            let sock = ConsoleSocket::new(PathBuf::from(path))
                .map_err(|e| err(Code::INTERNAL, format!("console socket: {e}")))?;
            f(Some(sock.path()), Stdio3::null()).map_err(rt_err)?;
            let master = sock
                .receive()
                .map_err(|e| err(Code::INTERNAL, format!("console: {e}")))?;
            stdio::console_io(master, stdin, stdin_mode, stdout)
                .map_err(|e| err(Code::INTERNAL, format!("console io: {e}")))?
        } else {
            let (s3, io) = stdio::pipes(stdin, stdin_mode, stdout, stderr)
                .map_err(|e| err(Code::INTERNAL, format!("stdio: {e}")))?;
            f(None, s3).map_err(rt_err)?;
            io
        };
        let pid = runtime::read_pid_file(pid_file).map_err(|e| {
            err(
                Code::INTERNAL,
                format!("pid file {}: {e}", pid_file.display()),
            )
        })?;
        let _ = std::fs::remove_file(pid_file);
        Ok((pid, io))
    }

    fn wait_exit(&self, exec_id: &str) -> ttrpc::Result<(i32, u32, SystemTime)> {
        let mut st = self.lock();
        loop {
            match st.procs.get(exec_id) {
                None => {
                    return Err(err(
                        Code::NOT_FOUND,
                        format!("process {exec_id:?} not found"),
                    ));
                }
                Some(p) => {
                    if let Some((code, at)) = p.exit {
                        return Ok((p.pid, code, at));
                    }
                }
            }
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn cleanup_init_scratch(&self) {
        let _ = std::fs::remove_file(self.scratch("init.pid"));
        let _ = std::fs::remove_file(&self.cfg.runtime.log);
    }

    pub(crate) fn request_shutdown(&self) {
        if let Some(tx) = self
            .shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = tx.send(());
        }
    }
}

/// The Task service. Methods not listed (Pause, Resume, Checkpoint) answer with
/// ttrpc's default NOT_FOUND "not supported".
pub(crate) struct TaskService(pub(crate) Arc<Shim>);

impl containerd_shim_protos::Task for TaskService {
    fn create(
        &self,
        _: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        let shim = &self.0;
        shim.check_id(&req.id)?;
        if !req.checkpoint.is_empty() {
            return Err(err(
                Code::UNIMPLEMENTED,
                "checkpoint/restore is not supported",
            ));
        }
        if !req.rootfs.is_empty() {
            return Err(err(
                Code::UNIMPLEMENTED,
                "rootfs mounts in Create are not supported: mount the rootfs and name it in config.json",
            ));
        }
        if !req.bundle.is_empty() && Path::new(&req.bundle) != shim.cfg.bundle {
            return Err(err(
                Code::INVALID_ARGUMENT,
                format!(
                    "bundle {} differs from the shim's {}",
                    req.bundle,
                    shim.cfg.bundle.display()
                ),
            ));
        }
        {
            let mut st = shim.lock();
            if st.procs.contains_key("") {
                return Err(err(
                    Code::ALREADY_EXISTS,
                    format!("container {} already created", req.id),
                ));
            }
            // Reserve the slot so a concurrent Create fails.
            st.procs.insert(
                String::new(),
                Proc::new(&req.stdin, &req.stdout, &req.stderr, req.terminal),
            );
        }
        let (stdout, stderr) = match &shim.cfg.log_path {
            Some(path) => match CriLog::open(path) {
                Ok(log) => {
                    let log = Arc::new(log);
                    *shim.log.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&log));
                    let (out, errs) = (Arc::new(Tee::default()), Arc::new(Tee::default()));
                    *shim.tees.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((Arc::clone(&out), Arc::clone(&errs)));
                    (
                        Sink::Log(Arc::clone(&log), Stream::Stdout, out),
                        Sink::Log(log, Stream::Stderr, errs),
                    )
                }
                Err(e) => {
                    shim.lock().procs.remove("");
                    return Err(err(
                        Code::INTERNAL,
                        format!("open log {}: {e}", path.display()),
                    ));
                }
            },
            None => (Sink::from_path(&req.stdout), Sink::from_path(&req.stderr)),
        };
        let pid_file = shim.scratch("init.pid");
        let res = shim.launch(
            LaunchIo {
                stdin: req.stdin.clone(),
                // crius mode: attach sessions come and go; only CloseIO ends stdin.
                stdin_mode: if shim.cfg.log_path.is_some() {
                    StdinMode::KeepOpen
                } else {
                    StdinMode::UntilEof
                },
                stdout,
                stderr,
                terminal: req.terminal,
            },
            &pid_file,
            |console, s3| {
                shim.cfg
                    .runtime
                    .create(&shim.cfg.id, &shim.cfg.bundle, &pid_file, console, s3)
            },
        );
        let (pid, io) = match res {
            Ok(v) => v,
            Err(e) => {
                shim.lock().procs.remove("");
                let _ = shim.cfg.runtime.delete(&shim.cfg.id);
                shim.cleanup_init_scratch();
                return Err(e);
            }
        };
        {
            let mut st = shim.lock();
            if let Some(p) = st.procs.get_mut("") {
                p.pid = pid;
                p.stdin_w = io.stdin.clone();
                p.console = io.console.clone();
                p.io = Some(io);
            }
        }
        if let Some(f) = crate::oom::counter_file(pid) {
            let base = crate::oom::count(&f);
            *shim.oom.lock().unwrap_or_else(|p| p.into_inner()) = Some((f, base));
        }
        shim.watch(String::new(), pid);
        shim.cfg.publisher.publish(
            "/tasks/create",
            "containerd.events.TaskCreate",
            &TaskCreate {
                container_id: req.id.clone(),
                bundle: shim.cfg.bundle.display().to_string(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                }),
                pid: u32::try_from(pid).unwrap_or(0),
                ..Default::default()
            },
        );
        Ok(CreateTaskResponse {
            pid: u32::try_from(pid).unwrap_or(0),
            ..Default::default()
        })
    }

    fn start(&self, _: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        let shim = &self.0;
        shim.check_id(&req.id)?;
        if req.exec_id.is_empty() {
            let pid = {
                let st = shim.lock();
                let p = st
                    .procs
                    .get("")
                    .ok_or_else(|| err(Code::NOT_FOUND, "container not created"))?;
                if p.status != PStatus::Created {
                    return Err(err(
                        Code::FAILED_PRECONDITION,
                        format!("container is {:?}", p.status),
                    ));
                }
                p.pid
            };
            shim.cfg.runtime.start(&shim.cfg.id).map_err(rt_err)?;
            let mut st = shim.lock();
            if let Some(p) = st.procs.get_mut("") {
                if p.status == PStatus::Created {
                    p.status = PStatus::Running;
                }
            }
            drop(st);
            shim.cfg.publisher.publish(
                "/tasks/start",
                "containerd.events.TaskStart",
                &TaskStart {
                    container_id: shim.cfg.id.clone(),
                    pid: u32::try_from(pid).unwrap_or(0),
                    ..Default::default()
                },
            );
            return Ok(StartResponse {
                pid: u32::try_from(pid).unwrap_or(0),
                ..Default::default()
            });
        }
        // An exec registered by Exec.
        let exec_id = req.exec_id;
        let (spec, stdin, stdout, stderr, terminal) = {
            let mut st = shim.lock();
            let init_running = st.procs.get("").map(|p| p.status) == Some(PStatus::Running);
            let p = st
                .procs
                .get_mut(&exec_id)
                .ok_or_else(|| err(Code::NOT_FOUND, format!("exec {exec_id} not found")))?;
            let Some(spec) = p.spec.take() else {
                return Err(err(
                    Code::FAILED_PRECONDITION,
                    format!("exec {exec_id} already started"),
                ));
            };
            if !init_running {
                return Err(err(Code::FAILED_PRECONDITION, "container is not running"));
            }
            (
                spec,
                p.stdin.clone(),
                p.stdout.clone(),
                p.stderr.clone(),
                p.terminal,
            )
        };
        let spec_file = shim.scratch(&format!("exec-{exec_id}.json"));
        let pid_file = shim.scratch(&format!("exec-{exec_id}.pid"));
        std::fs::write(&spec_file, &spec)
            .map_err(|e| err(Code::INTERNAL, format!("write exec spec: {e}")))?;
        let res = shim.launch(
            LaunchIo {
                stdin,
                stdin_mode: StdinMode::UntilEof,
                stdout: Sink::from_path(&stdout),
                stderr: Sink::from_path(&stderr),
                terminal,
            },
            &pid_file,
            |console, s3| {
                shim.cfg
                    .runtime
                    .exec(&shim.cfg.id, &spec_file, &pid_file, console, s3)
            },
        );
        let _ = std::fs::remove_file(&spec_file);
        let (pid, io) = match res {
            Ok(v) => v,
            Err(e) => {
                // Waiters (containerd waits before it starts) learn it failed.
                if let Some(p) = shim.lock().procs.get_mut(&exec_id) {
                    p.status = PStatus::Stopped;
                    p.exit = Some((255, SystemTime::now()));
                }
                shim.cv.notify_all();
                return Err(e);
            }
        };
        {
            let mut st = shim.lock();
            if let Some(p) = st.procs.get_mut(&exec_id) {
                p.pid = pid;
                p.status = PStatus::Running;
                p.stdin_w = io.stdin.clone();
                p.console = io.console.clone();
                p.io = Some(io);
            }
        }
        shim.watch(exec_id.clone(), pid);
        shim.cfg.publisher.publish(
            "/tasks/exec-started",
            "containerd.events.TaskExecStarted",
            &TaskExecStarted {
                container_id: shim.cfg.id.clone(),
                exec_id,
                pid: u32::try_from(pid).unwrap_or(0),
                ..Default::default()
            },
        );
        Ok(StartResponse {
            pid: u32::try_from(pid).unwrap_or(0),
            ..Default::default()
        })
    }

    fn state(&self, _: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        let shim = &self.0;
        shim.check_id(&req.id)?;
        let st = shim.lock();
        let p = st.procs.get(&req.exec_id).ok_or_else(|| {
            err(
                Code::NOT_FOUND,
                format!("process {:?} not found", req.exec_id),
            )
        })?;
        let status = match p.status {
            PStatus::Created => Status::CREATED,
            PStatus::Running => Status::RUNNING,
            PStatus::Stopped => Status::STOPPED,
        };
        let mut resp = StateResponse {
            id: req.id.clone(),
            bundle: shim.cfg.bundle.display().to_string(),
            pid: u32::try_from(p.pid).unwrap_or(0),
            status: EnumOrUnknown::new(status),
            stdin: p.stdin.clone(),
            stdout: p.stdout.clone(),
            stderr: p.stderr.clone(),
            terminal: p.terminal,
            exec_id: req.exec_id.clone(),
            ..Default::default()
        };
        if let Some((code, at)) = p.exit {
            resp.exit_status = code;
            resp.exited_at = timestamp(at);
        }
        Ok(resp)
    }

    fn kill(&self, _: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        let shim = &self.0;
        shim.check_id(&req.id)?;
        let (pid, status) = {
            let st = shim.lock();
            let p = st.procs.get(&req.exec_id).ok_or_else(|| {
                err(
                    Code::NOT_FOUND,
                    format!("process {:?} not found", req.exec_id),
                )
            })?;
            (p.pid, p.status)
        };
        if status == PStatus::Stopped && !req.all {
            return Err(err(Code::NOT_FOUND, "process already finished"));
        }
        let sig =
            i32::try_from(req.signal).map_err(|_| err(Code::INVALID_ARGUMENT, "bad signal"))?;
        if req.exec_id.is_empty() {
            if let Err(e) = shim.cfg.runtime.kill(&shim.cfg.id, req.signal, req.all) {
                // The container may have exited between our check and runc's.
                if !sys::pid_alive(pid)
                    || shim.lock().procs.get("").map(|p| p.status) == Some(PStatus::Stopped)
                {
                    return Err(err(Code::NOT_FOUND, "process already finished"));
                }
                return Err(rt_err(e));
            }
        } else if pid > 0 {
            sys::kill(pid, sig).map_err(|e| err(Code::NOT_FOUND, format!("kill {pid}: {e}")))?;
        } else {
            return Err(err(Code::FAILED_PRECONDITION, "exec not started"));
        }
        Ok(Empty::new())
    }

    fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        let shim = &self.0;
        shim.check_id(&req.id)?;
        if req.exec_id.is_empty() {
            let status = shim
                .lock()
                .procs
                .get("")
                .map(|p| p.status)
                .ok_or_else(|| err(Code::NOT_FOUND, "container not created"))?;
            if status == PStatus::Running {
                return Err(err(
                    Code::FAILED_PRECONDITION,
                    "container is running: kill it first",
                ));
            }
            // `delete --force` also kills a created-but-never-started init.
            shim.cfg.runtime.delete(&shim.cfg.id).map_err(rt_err)?;
            let (pid, code, at) = match shim.wait_exit_timeout("", Duration::from_secs(10)) {
                Some(v) => v,
                None => {
                    return Err(err(
                        Code::DEADLINE_EXCEEDED,
                        "init did not exit after delete",
                    ));
                }
            };
            shim.lock().procs.remove("");
            shim.cleanup_init_scratch();
            shim.cfg.publisher.publish(
                "/tasks/delete",
                "containerd.events.TaskDelete",
                &TaskDelete {
                    container_id: shim.cfg.id.clone(),
                    pid: u32::try_from(pid).unwrap_or(0),
                    exit_status: code,
                    exited_at: timestamp(at),
                    ..Default::default()
                },
            );
            Ok(DeleteResponse {
                pid: u32::try_from(pid).unwrap_or(0),
                exit_status: code,
                exited_at: timestamp(at),
                ..Default::default()
            })
        } else {
            let mut st = shim.lock();
            let p = st
                .procs
                .get(&req.exec_id)
                .ok_or_else(|| err(Code::NOT_FOUND, format!("exec {} not found", req.exec_id)))?;
            if p.status == PStatus::Running {
                return Err(err(Code::FAILED_PRECONDITION, "exec is running"));
            }
            let (code, at) = p.exit.unwrap_or((0, SystemTime::now()));
            let pid = p.pid;
            st.procs.remove(&req.exec_id);
            Ok(DeleteResponse {
                pid: u32::try_from(pid).unwrap_or(0),
                exit_status: code,
                exited_at: timestamp(at),
                ..Default::default()
            })
        }
    }

    fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        let shim = &self.0;
        shim.check_id(&req.id)?;
        let pids = shim.cfg.runtime.ps(&shim.cfg.id).map_err(rt_err)?;
        Ok(PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn exec(&self, _: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        let shim = &self.0;
        shim.check_id(&req.id)?;
        if !valid_exec_id(&req.exec_id) {
            return Err(err(
                Code::INVALID_ARGUMENT,
                format!("invalid exec id {:?}", req.exec_id),
            ));
        }
        let spec = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .ok_or_else(|| err(Code::INVALID_ARGUMENT, "exec without a process spec"))?;
        let mut st = shim.lock();
        if st.procs.get("").map(|p| p.status) != Some(PStatus::Running) {
            return Err(err(Code::FAILED_PRECONDITION, "container is not running"));
        }
        if st.procs.contains_key(&req.exec_id) {
            return Err(err(
                Code::ALREADY_EXISTS,
                format!("exec {} already exists", req.exec_id),
            ));
        }
        let mut p = Proc::new(&req.stdin, &req.stdout, &req.stderr, req.terminal);
        p.spec = Some(spec);
        st.procs.insert(req.exec_id.clone(), p);
        drop(st);
        shim.cfg.publisher.publish(
            "/tasks/exec-added",
            "containerd.events.TaskExecAdded",
            &TaskExecAdded {
                container_id: shim.cfg.id.clone(),
                exec_id: req.exec_id,
                ..Default::default()
            },
        );
        Ok(Empty::new())
    }

    fn resize_pty(&self, _: &TtrpcContext, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        let shim = &self.0;
        shim.check_id(&req.id)?;
        let console = shim
            .lock()
            .procs
            .get(&req.exec_id)
            .ok_or_else(|| err(Code::NOT_FOUND, "process not found"))?
            .console
            .clone()
            .ok_or_else(|| err(Code::FAILED_PRECONDITION, "process has no terminal"))?;
        let w = u16::try_from(req.width).unwrap_or(u16::MAX);
        let h = u16::try_from(req.height).unwrap_or(u16::MAX);
        use std::os::fd::AsRawFd;
        sys::set_winsize(console.as_raw_fd(), w, h)
            .map_err(|e| err(Code::INTERNAL, format!("resize: {e}")))?;
        Ok(Empty::new())
    }

    fn close_io(&self, _: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        let shim = &self.0;
        shim.check_id(&req.id)?;
        let st = shim.lock();
        let p = st
            .procs
            .get(&req.exec_id)
            .ok_or_else(|| err(Code::NOT_FOUND, "process not found"))?;
        if let Some(w) = &p.stdin_w {
            w.close();
        }
        Ok(Empty::new())
    }

    fn update(&self, _: &TtrpcContext, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        let shim = &self.0;
        shim.check_id(&req.id)?;
        let res = req
            .resources
            .as_ref()
            .ok_or_else(|| err(Code::INVALID_ARGUMENT, "update without resources"))?;
        shim.cfg
            .runtime
            .update(&shim.cfg.id, &res.value)
            .map_err(rt_err)?;
        Ok(Empty::new())
    }

    fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        let shim = &self.0;
        shim.check_id(&req.id)?;
        let (_, code, at) = shim.wait_exit(&req.exec_id)?;
        Ok(WaitResponse {
            exit_status: code,
            exited_at: timestamp(at),
            ..Default::default()
        })
    }

    fn stats(&self, _: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        self.0.check_id(&req.id)?;
        let pid = self.0.init_pid();
        if pid <= 0 {
            return Err(err(
                Code::FAILED_PRECONDITION,
                "the container has no process",
            ));
        }
        let stats = crate::stats::metrics(pid).map_err(|e| err(Code::INTERNAL, &e))?;
        Ok(StatsResponse {
            stats: MessageField::some(stats),
            ..Default::default()
        })
    }

    fn connect(&self, _: &TtrpcContext, req: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        let shim = &self.0;
        shim.check_id(&req.id)?;
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: u32::try_from(shim.init_pid()).unwrap_or(0),
            version: format!("crius-shim {}", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        })
    }

    fn shutdown(&self, _: &TtrpcContext, req: ShutdownRequest) -> ttrpc::Result<Empty> {
        let shim = &self.0;
        shim.check_id(&req.id)?;
        let busy = shim
            .lock()
            .procs
            .values()
            .any(|p| p.status != PStatus::Stopped);
        if busy && !req.now {
            // As containerd's shims do: keep serving while a process lives.
            return Ok(Empty::new());
        }
        shim.request_shutdown();
        Ok(Empty::new())
    }
}

impl Shim {
    fn wait_exit_timeout(&self, exec_id: &str, limit: Duration) -> Option<(i32, u32, SystemTime)> {
        let deadline = std::time::Instant::now() + limit;
        let mut st = self.lock();
        loop {
            let p = st.procs.get(exec_id)?;
            if let Some((code, at)) = p.exit {
                return Some((p.pid, code, at));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            st = self
                .cv
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// crius's own service.
pub(crate) struct CriusService(pub(crate) Arc<Shim>);

impl crate::proto::shim_ttrpc::Crius for CriusService {
    fn reopen_log(
        &self,
        _: &TtrpcContext,
        req: ReopenLogRequest,
    ) -> ttrpc::Result<ReopenLogResponse> {
        let shim = &self.0;
        shim.check_id(&req.id)?;
        let log = shim.log.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let log =
            log.ok_or_else(|| err(Code::FAILED_PRECONDITION, "this container has no CRI log"))?;
        log.reopen()
            .map_err(|e| err(Code::INTERNAL, format!("reopen log: {e}")))?;
        Ok(ReopenLogResponse::new())
    }

    fn exec_sync(&self, _: &TtrpcContext, req: ExecSyncRequest) -> ttrpc::Result<ExecSyncResponse> {
        let shim = &self.0;
        shim.check_id(&req.id)?;
        if !valid_exec_id(&req.exec_id) {
            return Err(err(
                Code::INVALID_ARGUMENT,
                format!("invalid exec id {:?}", req.exec_id),
            ));
        }
        {
            let mut st = shim.lock();
            if st.procs.get("").map(|p| p.status) != Some(PStatus::Running) {
                return Err(err(Code::FAILED_PRECONDITION, "container is not running"));
            }
            if st.procs.contains_key(&req.exec_id) {
                return Err(err(
                    Code::ALREADY_EXISTS,
                    format!("exec {} already exists", req.exec_id),
                ));
            }
            // Reserve the id; ExecSync processes are not visible to State/Wait.
            let mut p = Proc::new("", "", "", false);
            p.status = PStatus::Stopped;
            p.exit = Some((0, SystemTime::now()));
            st.procs.insert(req.exec_id.clone(), p);
        }
        let res = exec_sync(shim, &req);
        shim.lock().procs.remove(&req.exec_id);
        res
    }

    /// See shim.proto. Attaches to the init's streams only, in crius mode; for a
    /// terminal the pty's output is `stdout` and `stderr` is ignored.
    fn list_execs(
        &self,
        _: &TtrpcContext,
        req: ListExecsRequest,
    ) -> ttrpc::Result<ListExecsResponse> {
        let shim = &self.0;
        shim.check_id(&req.id)?;
        let exec_ids = shim
            .lock()
            .procs
            .keys()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect();
        Ok(ListExecsResponse {
            exec_ids,
            ..Default::default()
        })
    }

    fn attach(&self, _: &TtrpcContext, req: AttachRequest) -> ttrpc::Result<AttachResponse> {
        let shim = &self.0;
        shim.check_id(&req.id)?;
        if shim.cfg.log_path.is_none() {
            return Err(err(
                Code::FAILED_PRECONDITION,
                "attach needs crius mode (a shim started with -log-path); \
                 in containerd mode the init's output goes to the FIFOs given to Create",
            ));
        }
        let terminal = {
            let st = shim.lock();
            let p = st
                .procs
                .get("")
                .ok_or_else(|| err(Code::NOT_FOUND, "container not created"))?;
            if p.status == PStatus::Stopped {
                return Err(err(Code::FAILED_PRECONDITION, "container is not running"));
            }
            p.terminal
        };
        let tees = shim.tees.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (out_tee, err_tee) =
            tees.ok_or_else(|| err(Code::FAILED_PRECONDITION, "container is not running"))?;
        // Open every FIFO before attaching any, so a bad path attaches nothing.
        let out = if req.stdout.is_empty() {
            None
        } else {
            Some(open_attach_fifo(&req.stdout, "stdout")?)
        };
        let errf = if req.stderr.is_empty() || terminal {
            None
        } else {
            Some(open_attach_fifo(&req.stderr, "stderr")?)
        };
        let mut attached = false;
        let mut ended = false;
        for (f, tee) in [(out, out_tee), (errf, err_tee)] {
            let Some(f) = f else { continue };
            // A stream that has just ended gets its FIFO closed at once (EOF).
            match tee.attach(f) {
                Ok(()) => attached = true,
                Err(AttachError::Ended) => ended = true,
                Err(e) => return Err(attach_err(e)),
            }
        }
        if ended && !attached {
            return Err(attach_err(AttachError::Ended));
        }
        Ok(AttachResponse::new())
    }
}

fn attach_err(e: AttachError) -> ttrpc::Error {
    match e {
        AttachError::Ended => err(Code::FAILED_PRECONDITION, "container is not running"),
        AttachError::Io(e) => err(Code::INTERNAL, format!("attach: {e}")),
    }
}

/// Opens an attach FIFO for writing without waiting: the caller must hold its read end.
fn open_attach_fifo(path: &str, what: &str) -> ttrpc::Result<std::fs::File> {
    use std::os::unix::fs::FileTypeExt;
    let f = sys::open_fifo(Path::new(path), libc::O_WRONLY | libc::O_NONBLOCK).map_err(|e| {
        if e.raw_os_error() == Some(libc::ENXIO) {
            err(
                Code::FAILED_PRECONDITION,
                format!("{what} FIFO {path} has no reader (the caller went away?)"),
            )
        } else {
            err(
                Code::INVALID_ARGUMENT,
                format!("opening {what} FIFO {path}: {e}"),
            )
        }
    })?;
    let is_fifo = f
        .metadata()
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false);
    if !is_fifo {
        return Err(err(
            Code::INVALID_ARGUMENT,
            format!("{what} path {path} is not a FIFO"),
        ));
    }
    Ok(f)
}

fn capture(src: std::fs::File, limit: usize) -> std::sync::mpsc::Receiver<(Vec<u8>, bool)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("capture".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            use std::io::Read;
            let mut src = src;
            let mut out = Vec::new();
            let mut truncated = false;
            let mut buf = [0u8; 8192];
            loop {
                match src.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let room = limit.saturating_sub(out.len());
                        if n > room {
                            truncated = true;
                        }
                        out.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
            }
            let _ = tx.send((out, truncated));
        });
    if spawned.is_err() {
        let (tx, rx) = std::sync::mpsc::channel();
        let _ = tx.send((Vec::new(), false));
        return rx;
    }
    rx
}

fn exec_sync(shim: &Arc<Shim>, req: &ExecSyncRequest) -> ttrpc::Result<ExecSyncResponse> {
    let limit = match usize::try_from(req.output_limit) {
        Ok(0) | Err(_) => DEFAULT_OUTPUT_LIMIT,
        Ok(n) => n,
    };
    let spec_file = shim.scratch(&format!("execsync-{}.json", req.exec_id));
    let pid_file = shim.scratch(&format!("execsync-{}.pid", req.exec_id));
    std::fs::write(&spec_file, &req.process_json)
        .map_err(|e| err(Code::INTERNAL, format!("write exec spec: {e}")))?;
    let pipes = (sys::pipe(), sys::pipe());
    let ((out_r, out_w), (err_r, err_w)) = match pipes {
        (Ok(o), Ok(e)) => (o, e),
        _ => {
            let _ = std::fs::remove_file(&spec_file);
            return Err(err(Code::INTERNAL, "cannot create pipes"));
        }
    };
    let out_rx = capture(out_r, limit);
    let err_rx = capture(err_r, limit);
    let s3 = Stdio3 {
        stdin: std::process::Stdio::null(),
        stdout: std::process::Stdio::from(out_w),
        stderr: std::process::Stdio::from(err_w),
    };
    let started = shim
        .cfg
        .runtime
        .exec(&shim.cfg.id, &spec_file, &pid_file, None, s3);
    let _ = std::fs::remove_file(&spec_file);
    started.map_err(rt_err)?;
    let pid = runtime::read_pid_file(&pid_file)
        .map_err(|e| err(Code::INTERNAL, format!("exec pid file: {e}")))?;
    let _ = std::fs::remove_file(&pid_file);
    let mut timed_out = false;
    let status = if req.timeout_ms == 0 {
        reaper::wait(pid)
    } else {
        match reaper::wait_timeout(pid, Duration::from_millis(req.timeout_ms)) {
            Some(s) => s,
            None => {
                timed_out = true;
                let _ = sys::kill(pid, libc::SIGKILL);
                reaper::wait(pid)
            }
        }
    };
    let (stdout, stdout_truncated) = out_rx.recv_timeout(DRAIN_LIMIT).unwrap_or_default();
    let (stderr, stderr_truncated) = err_rx.recv_timeout(DRAIN_LIMIT).unwrap_or_default();
    Ok(ExecSyncResponse {
        exit_code: i32::try_from(sys::exit_code(status)).unwrap_or(255),
        stdout,
        stderr,
        timed_out,
        stdout_truncated,
        stderr_truncated,
        ..Default::default()
    })
}

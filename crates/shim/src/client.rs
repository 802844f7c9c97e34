//! The client criusd uses to start, reconnect to and call crius-shims.
//!
//! Every call is **blocking** (ttrpc's synchronous client: one small reader thread per
//! connection, no async runtime). From tokio, wrap calls in `spawn_blocking`; a
//! [`Shim`] is `Clone + Send + Sync` and calls may run concurrently on one connection.
//!
//! Shim death is observable: when a call fails for a transport reason and the socket no
//! longer accepts connections, the error is [`Error::ShimGone`]; [`Shim::is_alive`]
//! probes without a call. The container's exit can then still be read from its exit
//! file ([`read_exit_file`]), written by the shim before it reported the exit.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use containerd_shim_protos::TaskClient;
use containerd_shim_protos::api::{
    CloseIORequest, ConnectRequest, CreateTaskRequest, DeleteRequest, ExecProcessRequest,
    KillRequest, PidsRequest, ResizePtyRequest, ShutdownRequest, StartRequest, StateRequest,
    StatsRequest, Status, UpdateTaskRequest, WaitRequest,
};
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use ttrpc::context::Context;

use crate::cli::ServerFlags;
use crate::proto::shim::{AttachRequest, ExecSyncRequest, ListExecsRequest, ReopenLogRequest};
use crate::proto::shim_ttrpc::CriusClient;

pub use crate::exitfile::{ExitRecord, read as read_exit_file};

/// How to start a shim (`crius-shim start ...`).
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// The crius-shim binary.
    pub shim_binary: PathBuf,
    /// Container id.
    pub id: String,
    /// OCI bundle directory (holds config.json; the shim's scratch files go here).
    pub bundle: PathBuf,
    /// Unix socket path the shim will serve on (keep it under 108 bytes).
    pub socket: PathBuf,
    /// OCI runtime binary (runc or crun).
    pub runtime: PathBuf,
    /// The runtime's `--root` state dir (default `<bundle>/.crius-runtime`).
    pub runtime_root: Option<PathBuf>,
    /// CRI log file for the container's stdout/stderr.
    pub log_path: Option<PathBuf>,
    /// Exit record path (default `<bundle>/exit.json`).
    pub exit_file: Option<PathBuf>,
    /// The shim's own diagnostics file.
    pub shim_log: Option<PathBuf>,
}

/// Errors from shim calls.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `crius-shim start` could not run or failed.
    #[error("starting shim: {0}")]
    Start(String),
    /// Connecting to the shim's socket failed.
    #[error("connecting to shim at {socket}: {source}")]
    Connect {
        /// The socket path.
        socket: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The shim is gone (its socket refuses connections or no longer exists).
    #[error("shim at {0} is gone")]
    ShimGone(PathBuf),
    /// The shim answered with an error status.
    #[error("{code:?}: {message}")]
    Rpc {
        /// The ttrpc (gRPC) status code.
        code: ttrpc::Code,
        /// The message.
        message: String,
    },
    /// Another transport failure.
    #[error("ttrpc: {0}")]
    Transport(String),
}

impl Error {
    /// True when the call did not get through to a shim that is still there (a
    /// connection that failed or broke): neither its answer nor its death, so the
    /// call is worth making again. (A transport failure is only reported once the
    /// shim's socket still answers: see `Shim::map`.)
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transport(_) | Error::Connect { .. })
    }

    /// True for `Rpc` errors with code NOT_FOUND (e.g. "process already finished").
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Rpc {
                code: ttrpc::Code::NOT_FOUND,
                ..
            }
        )
    }
}

/// A process's state as the shim reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessStatus {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited.
    Stopped,
    /// Anything else.
    Unknown,
}

/// State of the container's init or of an exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessState {
    /// Host pid (0 before it exists).
    pub pid: u32,
    /// Status.
    pub status: ProcessStatus,
    /// Exit code and time once stopped.
    pub exit: Option<ExitStatus>,
}

/// An exit code and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code (128 + signal when killed by a signal).
    pub code: u32,
    /// When it exited.
    pub at: SystemTime,
}

/// stdio for a process started through the Task service: FIFO paths (or `file://`
/// URIs), empty for none. For the container's init in crius mode leave stdout/stderr
/// empty: the shim writes them to the CRI log given at start.
#[derive(Debug, Clone, Default)]
pub struct ProcessIo {
    /// stdin FIFO.
    pub stdin: String,
    /// stdout FIFO or `file://` path.
    pub stdout: String,
    /// stderr FIFO or `file://` path.
    pub stderr: String,
    /// Allocate a pty (via the runtime's console socket); stderr is merged into it.
    pub terminal: bool,
}

/// Result of [`Shim::exec_sync`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSyncOutput {
    /// Exit code (137 when killed at the timeout).
    pub exit_code: i32,
    /// Captured stdout (at most the limit).
    pub stdout: Vec<u8>,
    /// Captured stderr (at most the limit).
    pub stderr: Vec<u8>,
    /// The process was killed at the timeout.
    pub timed_out: bool,
    /// Output beyond the limit was dropped (stdout or stderr).
    pub truncated: bool,
}

/// A connection to one shim.
#[derive(Clone)]
pub struct Shim {
    id: String,
    socket: PathBuf,
    task: TaskClient,
    crius: CriusClient,
}

impl std::fmt::Debug for Shim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shim")
            .field("id", &self.id)
            .field("socket", &self.socket)
            .finish()
    }
}

/// Starts a shim for a container and connects to it. Returns once the shim serves.
/// The shim is detached: it outlives the caller.
pub fn start(opts: &StartOptions) -> Result<Shim, Error> {
    let mut args = ServerFlags {
        id: &opts.id,
        bundle: &opts.bundle,
        socket: &opts.socket,
        namespace: "",
        address: "",
        runtime: Some(&opts.runtime),
        runtime_root: opts.runtime_root.as_deref(),
        log_path: opts.log_path.as_deref(),
        exit_file: opts.exit_file.as_deref(),
        shim_log: opts.shim_log.as_deref(),
    }
    .to_args();
    args.push("start".into());
    let out = Command::new(&opts.shim_binary)
        .args(&args)
        .current_dir(&opts.bundle)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Start(format!("{}: {e}", opts.shim_binary.display())))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Start(format!("{}: {}", out.status, err.trim())));
    }
    let out = String::from_utf8_lossy(&out.stdout);
    let addr = out.trim();
    let path = addr.strip_prefix("unix://").unwrap_or(addr);
    connect(Path::new(path), &opts.id)
}

/// Connects to a running shim (e.g. after criusd restarted).
pub fn connect(socket: &Path, id: &str) -> Result<Shim, Error> {
    let stream = UnixStream::connect(socket).map_err(|source| {
        if gone_kind(&source) {
            Error::ShimGone(socket.to_owned())
        } else {
            Error::Connect {
                socket: socket.to_owned(),
                source,
            }
        }
    })?;
    let client = ttrpc::Client::new(std::os::fd::IntoRawFd::into_raw_fd(stream)).map_err(|e| {
        Error::Connect {
            socket: socket.to_owned(),
            source: io::Error::other(e.to_string()),
        }
    })?;
    Ok(Shim {
        id: id.to_string(),
        socket: socket.to_owned(),
        task: TaskClient::new(client.clone()),
        crius: CriusClient::new(client),
    })
}

/// True when something accepts connections on `socket`.
pub fn is_alive(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

fn gone_kind(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

fn to_exit(code: u32, at: &MessageField<Timestamp>) -> ExitStatus {
    let at = at
        .as_ref()
        .map(|t| {
            UNIX_EPOCH
                + Duration::new(
                    u64::try_from(t.seconds).unwrap_or(0),
                    u32::try_from(t.nanos).unwrap_or(0),
                )
        })
        .unwrap_or(UNIX_EPOCH);
    ExitStatus { code, at }
}

fn ctx() -> Context {
    ttrpc::context::Context::default()
}

fn ctx_timeout(d: Duration) -> Context {
    ttrpc::context::with_duration(d)
}

/// Default deadline for calls that do not wait on the container.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A request that names the container (and no process).
trait ForContainer {
    fn for_container(id: String) -> Self;
}

/// A request that names one of the container's processes (`exec_id`; "" = the init).
trait ForProcess {
    fn for_process(id: String, exec_id: String) -> Self;
}

macro_rules! named_requests {
    (container: $($c:ident),+; process: $($p:ident),+ $(,)?) => {
        $(impl ForContainer for $c {
            fn for_container(id: String) -> Self {
                $c { id, ..Default::default() }
            }
        })+
        $(impl ForProcess for $p {
            fn for_process(id: String, exec_id: String) -> Self {
                $p { id, exec_id, ..Default::default() }
            }
        })+
    };
}

named_requests!(
    container: CreateTaskRequest, PidsRequest, StatsRequest, UpdateTaskRequest, ConnectRequest,
        ShutdownRequest, ReopenLogRequest, ListExecsRequest, AttachRequest;
    process: StartRequest, StateRequest, KillRequest, WaitRequest, DeleteRequest,
        ExecProcessRequest, ResizePtyRequest, CloseIORequest, ExecSyncRequest,
);

fn rpc_error(s: &ttrpc::proto::Status) -> Error {
    Error::Rpc {
        code: s.code(),
        message: s.message().to_string(),
    }
}

impl Shim {
    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// True when the shim still accepts connections.
    pub fn is_alive(&self) -> bool {
        is_alive(&self.socket)
    }

    fn map(&self, e: ttrpc::Error) -> Error {
        match e {
            ttrpc::Error::RpcStatus(s) => rpc_error(&s),
            other => {
                // A dying shim's listening socket can outlive its main thread by a
                // moment: probe a few times before calling it a transport error.
                for _ in 0..10 {
                    if !self.is_alive() {
                        return Error::ShimGone(self.socket.clone());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Error::Transport(other.to_string())
            }
        }
    }

    /// A request naming this shim's container.
    fn container_req<Q: ForContainer>(&self) -> Q {
        Q::for_container(self.id.clone())
    }

    /// A request naming the init (`""`) or an exec of this shim's container.
    fn process_req<Q: ForProcess>(&self, exec_id: &str) -> Q {
        Q::for_process(self.id.clone(), exec_id.to_string())
    }

    /// Sends `req` by `method` of `client` with the default deadline; maps a failure.
    fn call<C, Q, R>(
        &self,
        client: &C,
        method: impl FnOnce(&C, Context, &Q) -> ttrpc::Result<R>,
        req: &Q,
    ) -> Result<R, Error> {
        self.call_within(ctx_timeout(CALL_TIMEOUT), client, method, req)
    }

    /// [`Shim::call`] with the context `ctx` (its deadline, or none).
    fn call_within<C, Q, R>(
        &self,
        ctx: Context,
        client: &C,
        method: impl FnOnce(&C, Context, &Q) -> ttrpc::Result<R>,
        req: &Q,
    ) -> Result<R, Error> {
        method(client, ctx, req).map_err(|e| self.map(e))
    }

    /// Creates the container (`runc create`); returns the init pid.
    pub fn create(&self, io: &ProcessIo) -> Result<u32, Error> {
        let req = CreateTaskRequest {
            terminal: io.terminal,
            stdin: io.stdin.clone(),
            stdout: io.stdout.clone(),
            stderr: io.stderr.clone(),
            ..self.container_req()
        };
        self.call(&self.task, TaskClient::create, &req)
            .map(|r| r.pid)
    }

    /// Starts the container's init (empty `exec_id`) or a registered exec; returns its pid.
    pub fn start(&self, exec_id: &str) -> Result<u32, Error> {
        self.call(&self.task, TaskClient::start, &self.process_req(exec_id))
            .map(|r| r.pid)
    }

    /// State of the init (empty `exec_id`) or an exec.
    pub fn state(&self, exec_id: &str) -> Result<ProcessState, Error> {
        let r = self.call(&self.task, TaskClient::state, &self.process_req(exec_id))?;
        let status = match r.status.enum_value() {
            Ok(Status::CREATED) => ProcessStatus::Created,
            Ok(Status::RUNNING) => ProcessStatus::Running,
            Ok(Status::STOPPED) => ProcessStatus::Stopped,
            _ => ProcessStatus::Unknown,
        };
        Ok(ProcessState {
            pid: r.pid,
            status,
            exit: (status == ProcessStatus::Stopped).then(|| to_exit(r.exit_status, &r.exited_at)),
        })
    }

    /// Sends a signal to the init (`all`: to every process of the container) or an exec.
    pub fn kill(&self, exec_id: &str, signal: u32, all: bool) -> Result<(), Error> {
        let req = KillRequest {
            signal,
            all,
            ..self.process_req(exec_id)
        };
        self.call(&self.task, TaskClient::kill, &req).map(drop)
    }

    /// Waits for the init or an exec to exit (no deadline).
    pub fn wait(&self, exec_id: &str) -> Result<ExitStatus, Error> {
        let req = self.process_req(exec_id);
        self.call_within(ctx(), &self.task, TaskClient::wait, &req)
            .map(|r| to_exit(r.exit_status, &r.exited_at))
    }

    /// Deletes the container (`runc delete`; init must have exited or never started)
    /// or a finished exec.
    pub fn delete(&self, exec_id: &str) -> Result<ExitStatus, Error> {
        self.call(&self.task, TaskClient::delete, &self.process_req(exec_id))
            .map(|r| to_exit(r.exit_status, &r.exited_at))
    }

    /// Registers an exec (an OCI `process` as JSON); run it with [`Shim::start`].
    pub fn exec(&self, exec_id: &str, process_json: &[u8], io: &ProcessIo) -> Result<(), Error> {
        let mut spec = Any::new();
        spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
        spec.value = process_json.to_vec();
        let req = ExecProcessRequest {
            terminal: io.terminal,
            stdin: io.stdin.clone(),
            stdout: io.stdout.clone(),
            stderr: io.stderr.clone(),
            spec: MessageField::some(spec),
            ..self.process_req(exec_id)
        };
        self.call(&self.task, TaskClient::exec, &req).map(drop)
    }

    /// Runs a process in the container and captures its output (at most `output_limit`
    /// bytes of each stream; 0 = 16 MiB), killing it after `timeout` (zero = none).
    pub fn exec_sync(
        &self,
        exec_id: &str,
        process_json: &[u8],
        timeout: Duration,
        output_limit: u64,
    ) -> Result<ExecSyncOutput, Error> {
        let req = ExecSyncRequest {
            process_json: process_json.to_vec(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            output_limit,
            ..self.process_req(exec_id)
        };
        let c = if timeout.is_zero() {
            ctx()
        } else {
            ctx_timeout(timeout + CALL_TIMEOUT)
        };
        let r = self.call_within(c, &self.crius, CriusClient::exec_sync, &req)?;
        Ok(ExecSyncOutput {
            exit_code: r.exit_code,
            stdout: r.stdout,
            stderr: r.stderr,
            timed_out: r.timed_out,
            truncated: r.stdout_truncated || r.stderr_truncated,
        })
    }

    /// Resizes the pty of the init or an exec.
    pub fn resize_pty(&self, exec_id: &str, width: u32, height: u32) -> Result<(), Error> {
        let req = ResizePtyRequest {
            width,
            height,
            ..self.process_req(exec_id)
        };
        self.call(&self.task, TaskClient::resize_pty, &req)
            .map(drop)
    }

    /// Closes the stdin of the init or an exec.
    pub fn close_stdin(&self, exec_id: &str) -> Result<(), Error> {
        let req = CloseIORequest {
            stdin: true,
            ..self.process_req(exec_id)
        };
        self.call(&self.task, TaskClient::close_io, &req).map(drop)
    }

    /// Host pids of every process in the container.
    pub fn pids(&self) -> Result<Vec<u32>, Error> {
        self.call(&self.task, TaskClient::pids, &self.container_req())
            .map(|r| r.processes.iter().map(|p| p.pid).collect())
    }

    /// The container's cgroup metrics, decoded.
    pub fn stats(&self) -> Result<Metrics, Error> {
        let resp = self.call(&self.task, TaskClient::stats, &self.container_req())?;
        let any = resp.stats.into_option().unwrap_or_default();
        Metrics::decode(&any.type_url, &any.value).map_err(|message| Error::Rpc {
            code: ttrpc::Code::INTERNAL,
            message,
        })
    }

    /// Updates resources (`runc update --resources`; OCI `LinuxResources` as JSON).
    pub fn update(&self, resources_json: &[u8]) -> Result<(), Error> {
        let mut any = Any::new();
        any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
        any.value = resources_json.to_vec();
        let req = UpdateTaskRequest {
            resources: MessageField::some(any),
            ..self.container_req()
        };
        self.call(&self.task, TaskClient::update, &req).map(drop)
    }

    /// Reopens the CRI log file (after the kubelet renamed it).
    pub fn reopen_log(&self) -> Result<(), Error> {
        self.call(&self.crius, CriusClient::reopen_log, &self.container_req())
            .map(drop)
    }

    /// The execs the shim holds (ExecSync's included).
    pub fn list_execs(&self) -> Result<Vec<String>, Error> {
        self.call(&self.crius, CriusClient::list_execs, &self.container_req())
            .map(|r| r.exec_ids)
    }

    /// Tees the container's output to FIFOs the caller created and already holds open
    /// for reading (open the read ends O_NONBLOCK, or in another thread, before calling):
    /// from now on every chunk the container writes to stdout / stderr also goes, as raw
    /// bytes, to the given FIFO, until the stream ends (the FIFO then reads EOF). `None`:
    /// that stream is not wanted. With a terminal all output arrives on `stdout` and
    /// `stderr` is ignored. The shim drops (closes) a FIFO whose reader falls more than
    /// 1 MiB behind, so keep reading. Close the read end to detach. Only for a shim
    /// started with a log path (crius mode); FAILED_PRECONDITION once the container exited.
    ///
    /// Input goes the other way, without a call: write to the init's stdin FIFO (given to
    /// [`Shim::create`]; in crius mode the shim keeps it open, so writers may come and
    /// go) and end it with [`Shim::close_stdin`]`("")`.
    pub fn attach(&self, stdout: Option<&Path>, stderr: Option<&Path>) -> Result<(), Error> {
        let path = |p: Option<&Path>| -> Result<String, Error> {
            match p {
                None => Ok(String::new()),
                Some(p) => p.to_str().map(str::to_string).ok_or_else(|| Error::Rpc {
                    code: ttrpc::Code::INVALID_ARGUMENT,
                    message: format!("attach FIFO path {} is not UTF-8", p.display()),
                }),
            }
        };
        let req = AttachRequest {
            stdout: path(stdout)?,
            stderr: path(stderr)?,
            ..self.container_req()
        };
        self.call(&self.crius, CriusClient::attach, &req).map(drop)
    }

    /// (shim pid, init pid).
    pub fn connect_info(&self) -> Result<(u32, u32), Error> {
        self.call(&self.task, TaskClient::connect, &self.container_req())
            .map(|r| (r.shim_pid, r.task_pid))
    }

    /// Asks the shim to exit (it refuses while a process runs unless `now`) and waits up
    /// to 5 s for its socket to go away.
    pub fn shutdown(&self, now: bool) -> Result<(), Error> {
        let req = ShutdownRequest {
            now,
            ..self.container_req()
        };
        match self.task.shutdown(ctx_timeout(CALL_TIMEOUT), &req) {
            Ok(_) => {}
            Err(ttrpc::Error::RpcStatus(s)) => return Err(rpc_error(&s)),
            // The shim may close the connection as it exits.
            Err(_) => {}
        }
        // It goes within a millisecond or two: look soon, then less often.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut pace = Duration::from_micros(250);
        while Instant::now() < deadline {
            if !self.is_alive() {
                return Ok(());
            }
            std::thread::sleep(pace);
            pace = (pace * 2).min(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// The container metrics criusd reports (CRI ContainerStats), from either cgroup
/// version's Metrics message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Cumulative CPU time in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory usage in bytes.
    pub memory_usage: u64,
    /// The working set: usage less inactive file pages.
    pub memory_working_set: u64,
    /// Anonymous memory (rss).
    pub memory_rss: u64,
    /// Number of processes.
    pub pids: u64,
}

impl Metrics {
    fn decode(type_url: &str, value: &[u8]) -> Result<Metrics, String> {
        use containerd_shim_protos::protobuf::Message;
        if type_url.ends_with("cgroups.v2.Metrics") {
            let m = containerd_shim_protos::cgroups_v2::metrics::Metrics::parse_from_bytes(value)
                .map_err(|e| format!("decoding v2 metrics: {e}"))?;
            Ok(Metrics {
                cpu_usage_ns: m.cpu.usage_usec.saturating_mul(1000),
                memory_usage: m.memory.usage,
                memory_working_set: m.memory.usage.saturating_sub(m.memory.inactive_file),
                memory_rss: m.memory.anon,
                pids: m.pids.current,
            })
        } else {
            let m = containerd_shim_protos::cgroups::metrics::Metrics::parse_from_bytes(value)
                .map_err(|e| format!("decoding v1 metrics: {e}"))?;
            let usage = m.memory.usage.usage;
            Ok(Metrics {
                cpu_usage_ns: m.cpu.usage.total,
                memory_usage: usage,
                memory_working_set: usage.saturating_sub(m.memory.total_inactive_file),
                memory_rss: m.memory.total_rss.max(m.memory.rss),
                pids: m.pids.current,
            })
        }
    }
}

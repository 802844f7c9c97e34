//! containerd's shim v2 Task service: checks each request and maps it onto the process
//! table (`procs`) and the runtime (`runtime`).
//!
//! Pause, Resume and Checkpoint are not implemented: they answer with ttrpc's default
//! NOT_FOUND "not supported".

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use containerd_shim_protos::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, ExecProcessRequest, KillRequest, PidsRequest, PidsResponse,
    ResizePtyRequest, ShutdownRequest, StartRequest, StartResponse, StateRequest, StateResponse,
    StatsRequest, StatsResponse, Status, UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskIO, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::{EnumOrUnknown, MessageField};
use containerd_shim_protos::types::task::ProcessInfo;
use ttrpc::TtrpcContext;

use crate::attach::Tee;
use crate::crilog::{CriLog, Stream};
use crate::procs::{Exit, IoPaths, LaunchIo, PStatus, Scratch, check_exec_id, wire_pid};
use crate::publisher::timestamp;
use crate::runtime::Launch;
use crate::service::{Shim, ShimError, locked};
use crate::stdio::{Sink, StdinMode};
use crate::sys;

/// How long Delete waits for the init to exit after the runtime's `delete --force`.
const DELETE_LIMIT: Duration = Duration::from_secs(10);

/// The Task service.
pub(crate) struct TaskService(pub(crate) Arc<Shim>);

impl containerd_shim_protos::Task for TaskService {
    fn create(
        &self,
        _: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        let shim = self.0.serving(&req.id)?;
        check_create(shim, &req)?;
        let paths = IoPaths::new(&req.stdin, &req.stdout, &req.stderr, req.terminal);
        shim.procs.reserve_init(&req.id, paths.clone())?;
        let pid = create_init(shim, &paths)?;
        shim.cfg.publisher.publish(
            "/tasks/create",
            "containerd.events.TaskCreate",
            &TaskCreate {
                container_id: req.id.clone(),
                bundle: shim.cfg.bundle.display().to_string(),
                io: MessageField::some(TaskIO {
                    stdin: paths.stdin,
                    stdout: paths.stdout,
                    stderr: paths.stderr,
                    terminal: paths.terminal,
                    ..Default::default()
                }),
                pid: wire_pid(pid),
                ..Default::default()
            },
        );
        Ok(CreateTaskResponse {
            pid: wire_pid(pid),
            ..Default::default()
        })
    }

    fn start(&self, _: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        let shim = self.0.serving(&req.id)?;
        let pid = if req.exec_id.is_empty() {
            start_init(shim)?
        } else {
            start_exec(shim, req.exec_id)?
        };
        Ok(StartResponse {
            pid: wire_pid(pid),
            ..Default::default()
        })
    }

    fn state(&self, _: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        let shim = self.0.serving(&req.id)?;
        let p = shim.procs.view(&req.exec_id)?;
        let status = match p.status {
            PStatus::Created => Status::CREATED,
            PStatus::Running => Status::RUNNING,
            PStatus::Stopped => Status::STOPPED,
        };
        let mut resp = StateResponse {
            id: req.id,
            bundle: shim.cfg.bundle.display().to_string(),
            pid: wire_pid(p.pid),
            status: EnumOrUnknown::new(status),
            stdin: p.paths.stdin,
            stdout: p.paths.stdout,
            stderr: p.paths.stderr,
            terminal: p.paths.terminal,
            exec_id: req.exec_id,
            ..Default::default()
        };
        if let Some((code, at)) = p.exit {
            resp.exit_status = code;
            resp.exited_at = timestamp(at);
        }
        Ok(resp)
    }

    fn kill(&self, _: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        let shim = self.0.serving(&req.id)?;
        let p = shim.procs.view(&req.exec_id)?;
        if p.status == PStatus::Stopped && !req.all {
            return Err(ShimError::Finished.into());
        }
        let sig = i32::try_from(req.signal).map_err(|_| ShimError::BadSignal)?;
        if req.exec_id.is_empty() {
            kill_init(shim, p.pid, req.signal, req.all)?;
        } else if p.pid > 0 {
            sys::kill(p.pid, sig).map_err(|source| ShimError::Kill { pid: p.pid, source })?;
        } else {
            return Err(ShimError::ExecNotStarted.into());
        }
        Ok(Empty::new())
    }

    fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        let shim = self.0.serving(&req.id)?;
        let exit = if req.exec_id.is_empty() {
            delete_init(shim)?
        } else {
            shim.procs.remove_exec(&req.exec_id)?
        };
        Ok(DeleteResponse {
            pid: wire_pid(exit.pid),
            exit_status: exit.code,
            exited_at: timestamp(exit.at),
            ..Default::default()
        })
    }

    fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        let shim = self.0.serving(&req.id)?;
        let pids = shim.cfg.runtime.ps(&shim.cfg.id)?;
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
        let shim = self.0.serving(&req.id)?;
        check_exec_id(&req.exec_id)?;
        let spec = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .ok_or(ShimError::NoProcessSpec)?;
        let paths = IoPaths::new(&req.stdin, &req.stdout, &req.stderr, req.terminal);
        shim.procs.add_exec(&req.exec_id, paths, spec)?;
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
        let shim = self.0.serving(&req.id)?;
        let console = shim.procs.console(&req.exec_id)?;
        let w = u16::try_from(req.width).unwrap_or(u16::MAX);
        let h = u16::try_from(req.height).unwrap_or(u16::MAX);
        sys::set_winsize(console.as_raw_fd(), w, h).map_err(ShimError::Resize)?;
        Ok(Empty::new())
    }

    fn close_io(&self, _: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        let shim = self.0.serving(&req.id)?;
        shim.procs.close_stdin(&req.exec_id)?;
        Ok(Empty::new())
    }

    fn update(&self, _: &TtrpcContext, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        let shim = self.0.serving(&req.id)?;
        let res = req.resources.as_ref().ok_or(ShimError::NoResources)?;
        shim.cfg.runtime.update(&shim.cfg.id, &res.value)?;
        Ok(Empty::new())
    }

    fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        let shim = self.0.serving(&req.id)?;
        let exit = shim.procs.wait(&req.exec_id, None)?;
        Ok(WaitResponse {
            exit_status: exit.code,
            exited_at: timestamp(exit.at),
            ..Default::default()
        })
    }

    fn stats(&self, _: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        let shim = self.0.serving(&req.id)?;
        let pid = shim.procs.init_pid();
        if pid <= 0 {
            return Err(ShimError::NoInit.into());
        }
        let stats = crate::stats::metrics(pid).map_err(ShimError::Stats)?;
        Ok(StatsResponse {
            stats: MessageField::some(stats),
            ..Default::default()
        })
    }

    fn connect(&self, _: &TtrpcContext, req: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        let shim = self.0.serving(&req.id)?;
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: wire_pid(shim.procs.init_pid()),
            version: format!("crius-shim {}", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        })
    }

    fn shutdown(&self, ctx: &TtrpcContext, req: ShutdownRequest) -> ttrpc::Result<Empty> {
        let shim = self.0.serving(&req.id)?;
        if shim.procs.any_live() && !req.now {
            // As containerd's shims do: keep serving while a process lives.
            return Ok(Empty::new());
        }
        shim.request_shutdown(sys::dup(ctx.fd).ok());
        Ok(Empty::new())
    }
}

/// What Create does not support, and a bundle other than the shim's.
fn check_create(shim: &Shim, req: &CreateTaskRequest) -> Result<(), ShimError> {
    if !req.checkpoint.is_empty() {
        return Err(ShimError::Checkpoint);
    }
    if !req.rootfs.is_empty() {
        return Err(ShimError::RootfsMounts);
    }
    if !req.bundle.is_empty() && Path::new(&req.bundle) != shim.cfg.bundle {
        return Err(ShimError::OtherBundle {
            given: req.bundle.clone(),
            ours: shim.cfg.bundle.clone(),
        });
    }
    Ok(())
}

/// Create, once the init's slot is reserved: `runc create` with the init's stdio, then
/// the exit watcher. On failure the slot is freed again (and what the runtime may have
/// made is deleted).
fn create_init(shim: &Arc<Shim>, paths: &IoPaths) -> Result<i32, ShimError> {
    let (stdout, stderr) = match init_sinks(shim, paths) {
        Ok(sinks) => sinks,
        Err(e) => {
            shim.procs.remove("");
            return Err(e);
        }
    };
    let io = LaunchIo {
        stdin: paths.stdin.clone(),
        // crius mode: attach sessions come and go; only CloseIO ends stdin.
        stdin_mode: if shim.cfg.log_path.is_some() {
            StdinMode::KeepOpen
        } else {
            StdinMode::UntilEof
        },
        stdout,
        stderr,
        terminal: paths.terminal,
    };
    let bundle = &shim.cfg.bundle;
    let launched = shim.launch(
        io,
        Launch::Create { bundle },
        &shim.scratch(Scratch::InitPid),
    );
    let (pid, io) = match launched {
        Ok(v) => v,
        Err(e) => {
            shim.procs.remove("");
            let _ = shim.cfg.runtime.delete(&shim.cfg.id);
            shim.cleanup_init_scratch();
            return Err(e);
        }
    };
    shim.procs.launched("", pid, io);
    shim.note_oom_baseline(pid);
    shim.watch(String::new(), pid);
    Ok(pid)
}

/// Where the init's output goes: in crius mode the CRI log (opened now) and its
/// attachers, else the paths of the request.
fn init_sinks(shim: &Shim, paths: &IoPaths) -> Result<(Sink, Sink), ShimError> {
    let Some(path) = &shim.cfg.log_path else {
        return Ok((
            Sink::from_path(&paths.stdout),
            Sink::from_path(&paths.stderr),
        ));
    };
    let log = CriLog::open(path).map_err(|source| ShimError::OpenLog {
        path: path.clone(),
        source,
    })?;
    let log = Arc::new(log);
    *locked(&shim.log) = Some(Arc::clone(&log));
    let (out, errs) = (Arc::new(Tee::default()), Arc::new(Tee::default()));
    *locked(&shim.tees) = Some((Arc::clone(&out), Arc::clone(&errs)));
    Ok((
        Sink::Log(Arc::clone(&log), Stream::Stdout, out),
        Sink::Log(log, Stream::Stderr, errs),
    ))
}

/// Start of the init: `runc start`.
fn start_init(shim: &Shim) -> Result<i32, ShimError> {
    let pid = shim.procs.init_to_start()?;
    shim.cfg.runtime.start(&shim.cfg.id)?;
    shim.procs.init_started();
    shim.cfg.publisher.publish(
        "/tasks/start",
        "containerd.events.TaskStart",
        &TaskStart {
            container_id: shim.cfg.id.clone(),
            pid: wire_pid(pid),
            ..Default::default()
        },
    );
    Ok(pid)
}

/// Start of an exec registered by Exec: `runc exec` with its process JSON and stdio,
/// then its exit watcher.
fn start_exec(shim: &Arc<Shim>, exec_id: String) -> Result<i32, ShimError> {
    let (spec, paths) = shim.procs.take_exec_spec(&exec_id)?;
    let spec_file = shim.scratch(Scratch::ExecSpec(&exec_id));
    std::fs::write(&spec_file, &spec).map_err(ShimError::WriteSpec)?;
    let io = LaunchIo {
        stdin: paths.stdin,
        stdin_mode: StdinMode::UntilEof,
        stdout: Sink::from_path(&paths.stdout),
        stderr: Sink::from_path(&paths.stderr),
        terminal: paths.terminal,
    };
    let launched = shim.launch(
        io,
        Launch::Exec {
            process_file: &spec_file,
        },
        &shim.scratch(Scratch::ExecPid(&exec_id)),
    );
    let _ = std::fs::remove_file(&spec_file);
    let (pid, io) = match launched {
        Ok(v) => v,
        Err(e) => {
            shim.procs.start_failed(&exec_id);
            return Err(e);
        }
    };
    shim.procs.launched(&exec_id, pid, io);
    shim.watch(exec_id.clone(), pid);
    shim.cfg.publisher.publish(
        "/tasks/exec-started",
        "containerd.events.TaskExecStarted",
        &TaskExecStarted {
            container_id: shim.cfg.id.clone(),
            exec_id,
            pid: wire_pid(pid),
            ..Default::default()
        },
    );
    Ok(pid)
}

/// Kill of the init (`all`: every process of the container) through the runtime.
fn kill_init(shim: &Shim, pid: i32, signal: u32, all: bool) -> Result<(), ShimError> {
    // A running init is the shim's own child (it reaps it): signalled directly, without
    // a runtime process, as the runtime itself would. Every process of the container
    // (`all`), or an init not yet started, is the runtime's business.
    if !all && shim.procs.init_status() == Some(PStatus::Running) {
        if let Ok(sig) = i32::try_from(signal) {
            match sys::signal_child(pid, sig) {
                Ok(true) => return Ok(()),
                Ok(false) => return Err(ShimError::Finished),
                // Fall back to the runtime.
                Err(_) => {}
            }
        }
    }
    let Err(e) = shim.cfg.runtime.kill(&shim.cfg.id, signal, all) else {
        return Ok(());
    };
    // The container may have exited between our check and runc's.
    if !sys::pid_alive(pid) || shim.procs.init_status() == Some(PStatus::Stopped) {
        return Err(ShimError::Finished);
    }
    Err(e.into())
}

/// Delete of the init: the runtime's `delete --force` (which also kills an init that was
/// created and never started), then its exit.
fn delete_init(shim: &Shim) -> Result<Exit, ShimError> {
    shim.procs.check_init_deletable()?;
    shim.cfg.runtime.delete(&shim.cfg.id)?;
    let exit = shim
        .procs
        .wait("", Some(DELETE_LIMIT))
        .map_err(|_| ShimError::InitLingers)?;
    shim.procs.remove("");
    shim.cleanup_init_scratch();
    shim.cfg.publisher.publish(
        "/tasks/delete",
        "containerd.events.TaskDelete",
        &TaskDelete {
            container_id: shim.cfg.id.clone(),
            pid: wire_pid(exit.pid),
            exit_status: exit.code,
            exited_at: timestamp(exit.at),
            ..Default::default()
        },
    );
    Ok(exit)
}

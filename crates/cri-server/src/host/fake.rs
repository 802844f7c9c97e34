//! A recording fake of every host effect (shims, root file systems, namespaces and
//! the pod network), for unit tests that run without root.
//!
//! Every call is appended to one log as `"<trait>.<method> <subject>"`. Calls that
//! make something ("do" steps) are counted, and [`FakeHost::fail_at`] makes the N-th
//! of them (0-based) fail; calls that remove something ("undo" steps) never fail
//! unless [`FakeHost::fail_undo`] names them. The fake keeps just enough state to
//! answer plausibly: a launched shim is alive until shut down, a created init is
//! `Created`, a started one `Running`; [`FakeHost::live`] says what is held (for
//! leak checks).
// Built for the fuzz targets too (feature `fuzzing`), which use only part of it.
#![cfg_attr(not(test), allow(dead_code))]

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crius_cni::{BackendStatus, NetworkBackend, NetworkError, PodNetworkRequest, PodNetworkStatus};
use crius_shim::client::{
    ExecSyncOutput, ExitStatus, ProcessIo, ProcessState, ProcessStatus, StartOptions,
};
use futures_util::future::BoxFuture;

use super::{ExecSync, Namespaces, Rootfs, ShimAddr, ShimApi};
use crate::error::{CriError, CriResult};
use crate::pinns::PinRequest;

/// The pid the fake gives every container's init and infra process.
pub const FAKE_PID: u32 = 4242;

#[derive(Default)]
struct State {
    log: Vec<String>,
    done: usize,
    fail_at: Option<usize>,
    /// State calls still to fail as a transport error would, the shim alive.
    failing_states: usize,
    fail_undo: HashSet<&'static str>,
    alive: HashSet<String>,
    created: HashSet<String>,
    running: HashSet<String>,
    pinned: HashSet<String>,
    infra: HashSet<String>,
    /// Processes left in a container's cgroup, by bundle.
    orphans: std::collections::HashMap<String, Vec<u32>>,
    /// Processes that ignore every signal but SIGKILL.
    stubborn: HashSet<u32>,
    /// Mounted rootfs targets.
    mounted: HashSet<String>,
    /// Writable layers, by key.
    layers: HashSet<String>,
    /// Pods whose network is set up.
    networks: HashSet<String>,
    /// Shim sockets by container id.
    sockets: std::collections::HashMap<String, String>,
    /// Every signal sent through a shim: container id, signal, to every process.
    kills: Vec<(String, u32, bool)>,
    /// Run after each signal sent through a shim (outside the fake's lock).
    after_kill: Option<Arc<dyn Fn() + Send + Sync>>,
    /// The node cannot give pods their own user namespace.
    no_user_namespaces: bool,
}

/// What the fake holds now: every shim, process, mount, layer, namespace, infra
/// process and pod network that was made and not released.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Live {
    /// Sockets of shims that run.
    pub shims: HashSet<String>,
    /// Sockets of shims holding a created or running container.
    pub tasks: HashSet<String>,
    /// Rootfs mount targets.
    pub mounted: HashSet<String>,
    /// Writable layer keys.
    pub layers: HashSet<String>,
    /// Pinned namespace files.
    pub pinned: HashSet<String>,
    /// Infra process directories.
    pub infra: HashSet<String>,
    /// Pod ids with a network.
    pub networks: HashSet<String>,
    /// Bundles whose cgroup still holds processes.
    pub processes: HashSet<String>,
}

impl Live {
    /// Whether nothing at all is held.
    pub fn is_empty(&self) -> bool {
        *self == Live::default()
    }
}

/// The fake host. Share it as `Arc<FakeHost>` behind each trait.
#[derive(Default)]
pub struct FakeHost {
    state: Mutex<State>,
}

/// The undo steps, by name.
const UNDO: &[&str] = &[
    "proc.signal",
    "shim.kill",
    "shim.delete",
    "shim.shutdown",
    "shim.force_delete",
    "rootfs.unmount",
    "rootfs.remove_layer",
    "rootfs.detach",
    "ns.unpin",
    "ns.stop_infra",
    "net.teardown",
];

impl FakeHost {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the node one that cannot give pods their own user namespace.
    pub fn without_user_namespaces(&self) {
        self.lock().no_user_namespaces = true;
    }

    /// Makes the `n`-th "do" call from now on (0-based) fail.
    pub fn fail_at(&self, n: usize) {
        let mut s = self.lock();
        s.fail_at = Some(s.done + n);
    }

    /// Makes every call of the undo step `name` (e.g. `"rootfs.unmount"`) fail.
    pub fn fail_undo(&self, name: &'static str) {
        self.lock().fail_undo.insert(name);
    }

    /// Makes the next `n` state calls fail with a transport error while the shim
    /// stays alive (a connection that broke, not a shim that died).
    pub fn fail_states(&self, n: usize) {
        self.lock().failing_states = n;
    }

    /// Every signal sent through a shim so far: container id, signal, and whether to
    /// every process of the container.
    pub fn kills(&self) -> Vec<(String, u32, bool)> {
        self.lock().kills.clone()
    }

    /// Makes "do" calls succeed and undo calls stop failing again.
    pub fn clear_failures(&self) {
        let mut s = self.lock();
        s.fail_at = None;
        s.fail_undo.clear();
    }

    /// Everything made and not released.
    pub fn live(&self) -> Live {
        let s = self.lock();
        Live {
            shims: s.alive.clone(),
            tasks: s.created.union(&s.running).cloned().collect(),
            mounted: s.mounted.clone(),
            layers: s.layers.clone(),
            pinned: s.pinned.clone(),
            infra: s.infra.clone(),
            networks: s.networks.clone(),
            processes: s
                .orphans
                .iter()
                .filter(|(_, pids)| !pids.is_empty())
                .map(|(b, _)| b.clone())
                .collect(),
        }
    }

    /// Every call so far.
    pub fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    /// Forgets the log (state stays).
    pub fn clear_log(&self) {
        self.lock().log.clear();
    }

    /// Whether a step name is an undo step.
    pub fn is_undo(entry: &str) -> bool {
        UNDO.iter().any(|u| entry.split(' ').next() == Some(u))
    }

    /// Pretends the shim at `socket` died (its container keeps its other state).
    pub fn kill_shim(&self, socket: &Path) {
        self.lock().alive.remove(&socket.display().to_string());
    }

    /// Pretends the shim at `socket` died and left `pids` running in the cgroup of
    /// the container whose bundle is `bundle`.
    pub fn kill_shim_leaving(&self, socket: &Path, bundle: &Path, pids: &[u32]) {
        self.kill_shim(socket);
        let k = bundle.display().to_string();
        self.with(|s| s.orphans.insert(k, pids.to_vec()));
    }

    /// Runs `hook` after each signal sent through a shim, on the caller's thread (a
    /// test holds a stop there while something else happens).
    pub fn after_kill(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.lock().after_kill = Some(Arc::new(hook));
    }

    /// Makes `pid` survive every signal but SIGKILL.
    pub fn ignore_signals(&self, pid: u32) {
        self.with(|s| s.stubborn.insert(pid));
    }

    /// Logs a call; fails it when it is the chosen "do" call or a failing undo.
    fn call(&self, name: &'static str, subject: &str) -> CriResult<()> {
        let mut s = self.lock();
        s.log.push(format!("{name} {subject}"));
        if UNDO.contains(&name) {
            if s.fail_undo.contains(name) {
                return Err(CriError::Internal(format!("injected failure of {name}")));
            }
            return Ok(());
        }
        let n = s.done;
        s.done += 1;
        if s.fail_at == Some(n) {
            return Err(CriError::Internal(format!(
                "injected failure of {name} (call {n})"
            )));
        }
        Ok(())
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.lock())
    }
}

fn key(at: ShimAddr<'_>) -> String {
    at.socket.display().to_string()
}

impl ShimApi for FakeHost {
    fn launch(&self, opts: &StartOptions) -> CriResult<()> {
        self.call("shim.launch", &opts.id)?;
        let k = opts.socket.display().to_string();
        self.with(|s| {
            s.sockets.insert(opts.id.clone(), k.clone());
            s.alive.insert(k)
        });
        Ok(())
    }

    fn create(&self, at: ShimAddr<'_>, _io: &ProcessIo) -> CriResult<u32> {
        self.call("shim.create", at.id)?;
        self.with(|s| s.created.insert(key(at)));
        Ok(FAKE_PID)
    }

    fn start(&self, at: ShimAddr<'_>, _exec_id: &str) -> CriResult<u32> {
        self.call("shim.start", at.id)?;
        self.with(|s| s.running.insert(key(at)));
        Ok(FAKE_PID)
    }

    fn state(&self, at: ShimAddr<'_>, _exec_id: &str) -> CriResult<ProcessState> {
        let k = key(at);
        let transient = self.with(|s| {
            let fail = s.failing_states > 0 && s.alive.contains(&k);
            s.failing_states -= usize::from(fail);
            fail
        });
        if transient {
            return Err(CriError::shim("reading the process state")(
                crius_shim::client::Error::Transport("connection reset by peer".into()),
            ));
        }
        let (alive, running, created) = self.with(|s| {
            (
                s.alive.contains(&k),
                s.running.contains(&k),
                s.created.contains(&k),
            )
        });
        if !alive {
            return Err(CriError::shim("reading the process state")(
                crius_shim::client::Error::ShimGone(at.socket.to_path_buf()),
            ));
        }
        let (status, exit) = match (running, created) {
            (true, _) => (ProcessStatus::Running, None),
            (false, true) => (ProcessStatus::Created, None),
            (false, false) => (
                ProcessStatus::Stopped,
                Some(ExitStatus {
                    code: 137,
                    at: SystemTime::now(),
                }),
            ),
        };
        Ok(ProcessState {
            pid: FAKE_PID,
            status,
            exit,
        })
    }

    fn kill(&self, at: ShimAddr<'_>, _exec_id: &str, signal: u32, all: bool) -> CriResult<()> {
        self.call("shim.kill", at.id)?;
        let k = key(at);
        let hook = self.with(|s| {
            s.kills.push((at.id.to_string(), signal, all));
            s.running.remove(&k);
            s.created.remove(&k);
            s.after_kill.clone()
        });
        if let Some(hook) = hook {
            hook();
        }
        Ok(())
    }

    fn delete(&self, at: ShimAddr<'_>, _exec_id: &str) -> CriResult<()> {
        self.call("shim.delete", at.id)
    }

    fn shutdown(&self, at: ShimAddr<'_>) -> CriResult<()> {
        self.call("shim.shutdown", at.id)?;
        let k = key(at);
        self.with(|s| s.alive.remove(&k));
        Ok(())
    }

    fn exec_sync(&self, at: ShimAddr<'_>, _run: ExecSync<'_>) -> CriResult<ExecSyncOutput> {
        self.call("shim.exec_sync", at.id)?;
        Ok(ExecSyncOutput {
            exit_code: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
            timed_out: false,
            truncated: false,
        })
    }

    fn reopen_log(&self, at: ShimAddr<'_>) -> CriResult<()> {
        self.call("shim.reopen_log", at.id)
    }

    fn update(&self, at: ShimAddr<'_>, _resources_json: &[u8]) -> CriResult<()> {
        self.call("shim.update", at.id)
    }

    fn list_execs(&self, _at: ShimAddr<'_>) -> CriResult<Vec<String>> {
        Ok(Vec::new())
    }

    fn is_alive(&self, socket: &Path) -> bool {
        let k = socket.display().to_string();
        self.with(|s| s.alive.contains(&k))
    }

    fn force_delete(&self, id: &str, bundle: &Path, _runtime: &Path) -> CriResult<()> {
        self.call("shim.force_delete", id)?;
        // Like `runc delete --force`: the runtime's state of the container goes,
        // whichever shim held it, and so does every process left in its cgroup.
        self.with(|s| {
            if let Some(k) = s.sockets.get(id).cloned() {
                s.created.remove(&k);
                s.running.remove(&k);
            }
            s.orphans.remove(&bundle.display().to_string());
        });
        Ok(())
    }
}

impl super::Processes for FakeHost {
    fn pids(&self, bundle: &Path) -> CriResult<Vec<u32>> {
        let k = bundle.display().to_string();
        Ok(self.with(|s| s.orphans.get(&k).cloned().unwrap_or_default()))
    }

    fn signal(&self, pid: u32, signal: u32) -> CriResult<()> {
        self.call("proc.signal", &format!("{pid} {signal}"))?;
        self.with(|s| {
            if signal == 9 || !s.stubborn.contains(&pid) {
                for pids in s.orphans.values_mut() {
                    pids.retain(|p| *p != pid);
                }
            }
        });
        Ok(())
    }
}

impl Rootfs for FakeHost {
    fn create_layer(&self, key: &str, _parent: Option<&str>) -> CriResult<()> {
        self.call("rootfs.create_layer", key)?;
        self.with(|s| s.layers.insert(key.to_string()));
        Ok(())
    }

    fn mount(&self, key: &str, target: &Path, _idmap: Option<&super::Idmap>) -> CriResult<()> {
        self.call("rootfs.mount", key)?;
        self.with(|s| s.mounted.insert(target.display().to_string()));
        Ok(())
    }

    fn unmount(&self, target: &Path) -> CriResult<()> {
        self.call("rootfs.unmount", &container_of(target))?;
        self.with(|s| s.mounted.remove(&target.display().to_string()));
        Ok(())
    }

    fn remove_layer(&self, key: &str) -> CriResult<()> {
        self.call("rootfs.remove_layer", key)?;
        self.with(|s| s.layers.remove(key));
        Ok(())
    }

    fn usage(&self, _key: &str) -> Option<crius_snapshotter::Usage> {
        None
    }

    fn create_view(&self, key: &str, _chain: &str) -> CriResult<()> {
        self.call("rootfs.create_view", key)?;
        self.with(|s| s.layers.insert(key.to_string()));
        Ok(())
    }

    fn bind_read_only_recursive(&self, _source: &Path, target: &Path) -> CriResult<()> {
        self.call("rootfs.bind_read_only_recursive", &container_of(target))?;
        self.with(|s| s.mounted.insert(target.display().to_string()));
        Ok(())
    }

    fn bind_idmapped(
        &self,
        _source: &Path,
        target: &Path,
        _userns: &Path,
        _read_only: bool,
    ) -> CriResult<()> {
        self.call("rootfs.bind_idmapped", &container_of(target))?;
        self.with(|s| s.mounted.insert(target.display().to_string()));
        Ok(())
    }

    fn detach(&self, target: &Path) -> CriResult<()> {
        self.call("rootfs.detach", &container_of(target))?;
        self.with(|s| s.mounted.remove(&target.display().to_string()));
        Ok(())
    }
}

/// The container id of a path in its bundle (`<run_dir>/containers/<id>/...`).
fn container_of(path: &Path) -> String {
    let mut comps = path.components().map(|c| c.as_os_str().to_string_lossy());
    while let Some(c) = comps.next() {
        if c == "containers" {
            return comps.next().map(|c| c.into_owned()).unwrap_or_default();
        }
    }
    String::new()
}

/// The pod id of a pod directory path (`<run_dir>/pods/<id>/...`).
fn pod_of(path: &Path) -> String {
    let mut comps = path.components().map(|c| c.as_os_str().to_string_lossy());
    while let Some(c) = comps.next() {
        if c == "pods" {
            return comps.next().map(|c| c.into_owned()).unwrap_or_default();
        }
    }
    path.display().to_string()
}

impl Namespaces for FakeHost {
    fn pin<'a>(&'a self, req: &'a PinRequest) -> BoxFuture<'a, CriResult<()>> {
        Box::pin(async move {
            self.call("ns.pin", &pod_of(&req.dir))?;
            // Like the helper: one file per pinned namespace.
            std::fs::create_dir_all(&req.dir).map_err(CriError::io("fake pin"))?;
            for (on, kind) in [
                (req.net, "net"),
                (req.ipc, "ipc"),
                (req.uts, "uts"),
                (req.user.is_some(), "user"),
            ] {
                if on {
                    let p = req.dir.join(kind);
                    std::fs::write(&p, b"").map_err(CriError::io("fake pin"))?;
                    self.with(|s| s.pinned.insert(p.display().to_string()));
                }
            }
            Ok(())
        })
    }

    fn unpin(&self, dir: &Path) -> CriResult<()> {
        self.call("ns.unpin", &pod_of(dir))?;
        let prefix = dir.display().to_string();
        self.with(|s| s.pinned.retain(|p| !p.starts_with(&prefix)));
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(CriError::io("fake unpin")(e))
            }
            _ => Ok(()),
        }
    }

    fn user_namespaces(&self) -> bool {
        !self.with(|s| s.no_user_namespaces)
    }

    fn start_infra<'a>(
        &'a self,
        dir: &'a Path,
        _userns: Option<&'a Path>,
    ) -> BoxFuture<'a, CriResult<u32>> {
        Box::pin(async move {
            self.call("ns.start_infra", &pod_of(dir))?;
            let k = dir.display().to_string();
            self.with(|s| s.infra.insert(k));
            Ok(FAKE_PID)
        })
    }

    fn stop_infra<'a>(&'a self, _pid: u32, dir: &'a Path) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let _ = self.call("ns.stop_infra", &pod_of(dir));
            let k = dir.display().to_string();
            self.with(|s| s.infra.remove(&k));
        })
    }

    fn is_pinned(&self, path: &Path) -> bool {
        let k = path.display().to_string();
        self.with(|s| s.pinned.contains(&k))
    }

    fn infra_alive(&self, _pid: u32, dir: &Path) -> bool {
        let k = dir.display().to_string();
        self.with(|s| s.infra.contains(&k))
    }
}

impl NetworkBackend for FakeHost {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn status(&self) -> BackendStatus {
        BackendStatus {
            ready: true,
            reason: String::new(),
            message: String::new(),
        }
    }

    fn setup<'a>(
        &'a self,
        req: &'a PodNetworkRequest,
    ) -> BoxFuture<'a, Result<PodNetworkStatus, NetworkError>> {
        Box::pin(async move {
            self.call("net.setup", &req.pod_id)
                .map_err(|e| NetworkError::Setup {
                    pod_id: req.pod_id.clone(),
                    message: e.to_string(),
                })?;
            self.with(|s| s.networks.insert(req.pod_id.clone()));
            let ip: IpAddr = [10, 0, 0, 2].into();
            Ok(PodNetworkStatus { ips: vec![ip] })
        })
    }

    fn teardown<'a>(
        &'a self,
        req: &'a PodNetworkRequest,
    ) -> BoxFuture<'a, Result<(), NetworkError>> {
        Box::pin(async move {
            self.call("net.teardown", &req.pod_id)
                .map_err(|e| NetworkError::Teardown {
                    pod_id: req.pod_id.clone(),
                    message: e.to_string(),
                })?;
            self.with(|s| s.networks.remove(&req.pod_id));
            Ok(())
        })
    }
}

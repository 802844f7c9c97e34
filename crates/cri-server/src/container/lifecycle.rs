//! StartContainer, StopContainer and RemoveContainer (and the pod-wide stop and
//! remove that StopPodSandbox and RemovePodSandbox begin with). Stop and remove are
//! idempotent: a missing container is already stopped and removed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crius_shim::client::ProcessStatus;
use crius_store::ContainerState;
use tracing::info;

use super::{Containers, stop_signal};
use crate::error::{CriError, CriResult};
use crate::events::Kind;
use crate::failpoint;
use crate::host::{ShimAddr, ShimApi};
use crate::nri::api::Event;
use crate::util::now_nanos;

/// What the record says of a container stopped after its shim died.
const STOPPED_ORPHAN: &str =
    "the container's shim had died; criusd stopped its processes through its cgroup";

impl Containers {
    /// StartContainer.
    pub async fn start(self: &Arc<Self>, id: &str) -> CriResult<()> {
        let found = self.must(id).await?;
        let _guard = self.locks.lock(&found.id).await;
        let mut rec = self.must(&found.id).await?;
        if rec.state != ContainerState::Created {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is {:?}, not created",
                rec.id, rec.state
            )));
        }
        failpoint::hit("container.start.begin")?;
        self.nri_event(Event::StartContainer, &rec).await?;
        let started_at = now_nanos();
        let pid = self.on_shim(&rec, |shims, at| shims.start(at, "")).await?;
        failpoint::hit("container.start.started")?;
        rec.pid = pid;
        rec.state = ContainerState::Running;
        rec.started_at = started_at;
        self.store.update_container(&rec).await?;
        self.watch(&rec);
        info!(container_id = %rec.id, pid, "container started");
        self.event(Kind::ContainerStartedEvent, &rec).await;
        // Not under the container's lock: a plugin may update it as it hears this.
        drop(_guard);
        self.nri_event(Event::PostStartContainer, &rec).await
    }

    /// StopContainer: the stop signal (the config's, the image's or SIGTERM), then
    /// SIGKILL after `timeout` seconds (at once for a container that never started).
    pub async fn stop(self: &Arc<Self>, id: &str, timeout: i64) -> CriResult<()> {
        let Some(rec) = self.resolve(id, "container_id").await? else {
            // Idempotent: nothing is left to stop (critest checks this).
            return Ok(());
        };
        if rec.state != ContainerState::Running && rec.state != ContainerState::Created {
            return Ok(());
        }
        let signal = stop_signal(&rec);
        let grace = Duration::from_secs(u64::try_from(timeout.max(0)).unwrap_or(0));
        let kill_grace = self.kill_grace;
        let own_pid_ns = super::has_own_pid_namespace(&rec.config);
        let waited = self
            .on_shim(&rec, move |shims, at| {
                Ok(shims
                    .is_alive(at.socket)
                    .then(|| stop_init(shims, at, signal, grace, kill_grace, own_pid_ns)))
            })
            .await?;
        let (waited, note) = match waited {
            Some(exit) => (exit, None),
            None => {
                // The shim is gone: its processes (if any) are stopped through the
                // container's cgroup. A container that never started has only the
                // runtime's init, which goes at once.
                let grace = if rec.state == ContainerState::Created {
                    Duration::ZERO
                } else {
                    grace
                };
                let exit = self.stop_orphan(&rec, signal, grace).await?;
                (exit, exit.map(|_| STOPPED_ORPHAN))
            }
        };
        failpoint::hit("container.stop.signalled")?;
        let _guard = self.locks.lock(&rec.id).await;
        if rec.state == ContainerState::Created {
            let mut r = self.must(&rec.id).await?;
            if r.state == ContainerState::Exited {
                // Another stop got here first (and reported it).
                return Ok(());
            }
            r.state = ContainerState::Exited;
            r.exit_code = 137;
            r.finished_at = now_nanos();
            r.reason = "Error".into();
            self.store.update_container(&r).await?;
            self.event(Kind::ContainerStoppedEvent, &r).await;
            self.tear_down_exited(&r).await;
            drop(_guard);
            return self.nri_event(Event::StopContainer, &r).await;
        }
        self.unwatch(&rec.id);
        let recorded = self.settle(&rec.id, waited, note).await?;
        let settled = self.store.container(&rec.id).await?;
        if let Some(r) = &settled {
            self.tear_down_exited(r).await;
        }
        drop(_guard);
        // Plugins hear of the stop once: from whoever recorded the exit (the exit
        // watcher may have seen the signalled container go first).
        match settled {
            Some(r) if recorded => self.nri_event(Event::StopContainer, &r).await,
            _ => {
                self.nri_stop_told(&rec.id).await;
                Ok(())
            }
        }
    }

    /// RemoveContainer: stops it first.
    pub async fn remove(self: &Arc<Self>, id: &str) -> CriResult<()> {
        let Some(rec) = self.resolve(id, "container_id").await? else {
            return Ok(());
        };
        if rec.state == ContainerState::Running || rec.state == ContainerState::Created {
            self.stop(&rec.id, 0).await?;
        }
        let guard = self.locks.lock(&rec.id).await;
        let Some(rec) = self.store.container(&rec.id).await? else {
            return Ok(());
        };
        self.release(&rec).await?;
        failpoint::hit("container.remove.released")?;
        self.store.delete_container(&rec.id).await?;
        self.unwatch(&rec.id);
        self.cpu_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&rec.id);
        drop(guard);
        info!(container_id = %rec.id, "container removed");
        // Only a container the kubelet saw created is reported gone (not what a
        // failed creation left).
        if rec.state != ContainerState::Creating {
            self.event(Kind::ContainerDeletedEvent, &rec).await;
            self.nri_stop_told(&rec.id).await;
            self.nri_event(Event::RemoveContainer, &rec).await?;
        }
        // Its image, or an image it mounted as a volume, may have been removed while
        // it ran: the layers it kept alive are garbage now.
        let volumes = rec.config.mounts.iter().filter_map(|m| m.image.as_ref());
        let mut images = std::iter::once(rec.image_ref.as_str()).chain(
            volumes
                .map(|i| i.image_ref.as_str())
                .filter(|r| !r.is_empty()),
        );
        let mut gone = false;
        for image in &mut images {
            if self.store.image(image).await?.is_none() {
                gone = true;
                break;
            }
        }
        if gone {
            self.images.collect_garbage().await?;
        }
        Ok(())
    }

    /// StopPodSandbox: the pod's containers, then the pod.
    pub async fn stop_pod_sandbox(self: &Arc<Self>, id: &str) -> CriResult<()> {
        if let Some(pod) = self.sandboxes.get(id).await? {
            self.stop_pod(&pod.id).await?;
        }
        self.sandboxes.stop(id).await
    }

    /// RemovePodSandbox: the pod's containers, then the pod. A container created
    /// meanwhile (its CreateContainer was under way) makes the pod's removal refuse;
    /// it is removed in turn, twice at most before the refusal is returned.
    pub async fn remove_pod_sandbox(self: &Arc<Self>, id: &str) -> CriResult<()> {
        let mut attempt = 0;
        loop {
            if let Some(pod) = self.sandboxes.get(id).await? {
                self.remove_pod(&pod.id).await?;
            }
            match self.sandboxes.remove(id).await {
                Err(CriError::FailedPrecondition(m)) if attempt < 2 => {
                    tracing::debug!(pod_id = %id, "{m}; removing them");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Stops every container of a pod (StopPodSandbox).
    pub async fn stop_pod(self: &Arc<Self>, pod_id: &str) -> CriResult<()> {
        for c in self.of_pod(pod_id).await? {
            self.stop(&c.id, 0).await?;
        }
        Ok(())
    }

    /// Removes every container of a pod (RemovePodSandbox).
    pub async fn remove_pod(self: &Arc<Self>, pod_id: &str) -> CriResult<()> {
        for c in self.of_pod(pod_id).await? {
            self.remove(&c.id).await?;
        }
        Ok(())
    }
}

/// Stops a container's init through its shim: `signal`, then SIGKILL to every
/// process once `grace` has passed (and waits `kill_grace` for that). Returns the
/// init's exit when the shim reports one. A shim that is gone has nothing to stop.
/// Blocking.
///
/// In a PID namespace of its own (`own_pid_ns`), the SIGKILL goes to a running init
/// alone, which the shim sends itself: the kernel kills every other process of the
/// namespace when its init dies, so no runtime process is needed to find them.
fn stop_init(
    shims: &dyn ShimApi,
    at: ShimAddr<'_>,
    signal: u32,
    grace: Duration,
    kill_grace: Duration,
    own_pid_ns: bool,
) -> Option<crius_shim::client::ExitStatus> {
    let state = state_of(shims, at, "")?;
    let created_only = state.status == ProcessStatus::Created;
    let hearing = Hearing::before_sending(state.pid, signal);
    let stopped = !created_only
        && !grace.is_zero()
        && shims.kill(at, "", signal, false).is_ok()
        && wait_until_stopped(shims, at, "", grace, hearing);
    if !stopped {
        let init_alone = own_pid_ns && state.status == ProcessStatus::Running;
        if !(init_alone && shims.kill(at, "", 9, false).is_ok()) {
            let _ = shims.kill(at, "", 9, true);
        }
        let _ = wait_timeout(shims, at, "", kill_grace);
    }
    state_of(shims, at, "").and_then(|s| s.exit)
}

/// A process's state; `None` once the shim is gone (or does not know the process).
/// A call that did not get through to a shim still there (a connection that broke)
/// is made again, a few times: taken for the shim's death, it would record a running
/// container as exited.
fn state_of(
    shims: &dyn ShimApi,
    at: ShimAddr<'_>,
    exec_id: &str,
) -> Option<crius_shim::client::ProcessState> {
    for attempt in 0..STATE_ATTEMPTS {
        match shims.state(at, exec_id) {
            Ok(s) => return Some(s),
            Err(e) if e.is_transient_shim_failure() => {
                info!(container_id = at.id, attempt, error = %e, "reading the process state again");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => return None,
        }
    }
    None
}

/// How often [`state_of`] asks a shim that is there but did not answer.
const STATE_ATTEMPTS: u32 = 5;

/// Waits up to `grace` for a process (`""`: the container's init) to stop; true when
/// it did (or the shim no longer knows it).
pub(super) fn wait_timeout(
    shims: &dyn ShimApi,
    at: ShimAddr<'_>,
    exec_id: &str,
    grace: Duration,
) -> bool {
    wait_until_stopped(shims, at, exec_id, grace, None)
}

fn wait_until_stopped(
    shims: &dyn ShimApi,
    at: ShimAddr<'_>,
    exec_id: &str,
    grace: Duration,
    mut hearing: Option<Hearing>,
) -> bool {
    let deadline = Instant::now() + grace;
    // Most processes go within a few milliseconds of their stop signal: look soon,
    // then less and less often.
    let mut pace = Duration::from_millis(1);
    while Instant::now() < deadline {
        match shims.state(at, exec_id) {
            Ok(s) if s.status == ProcessStatus::Stopped => return true,
            // A call that did not get through to the shim says nothing: look again.
            // Any other failure: the shim is gone or no longer knows the process.
            Err(e) if !e.is_transient_shim_failure() => return true,
            _ => {}
        }
        if let Some(h) = hearing.as_mut() {
            if h.send_again() {
                info!(
                    pid = h.pid,
                    signal = h.signal,
                    "stop signal sent again: the init had not heard it"
                );
                let _ = shims.kill(at, exec_id, h.signal, false);
            }
        }
        // Watch closely while the signal may be unheard; then back off to the usual
        // pace.
        let now = if hearing.as_ref().is_some_and(|h| h.unheard) {
            pace.min(Duration::from_millis(2))
        } else {
            pace
        };
        std::thread::sleep(now);
        pace = (pace * 2).min(Duration::from_millis(20));
    }
    false
}

/// Whether a container's init has heard a stop signal. Two ways lose one: the init of
/// a PID namespace drops a signal it has no handler for, and a signal caught by the
/// runtime's own init process (runc's catches every signal) is gone once that process
/// execs the container's program. A stop right after StartContainer meets both.
struct Hearing {
    pid: u32,
    signal: u32,
    /// The init's executable when last looked at: a change is an exec.
    exe: Option<std::path::PathBuf>,
    /// The signal may not have been heard: send it again once it can be.
    unheard: bool,
}

impl Hearing {
    /// Taken just before `signal` is sent to `pid` (None for the signals that always
    /// arrive, or an init not yet known).
    fn before_sending(pid: u32, signal: u32) -> Option<Hearing> {
        if pid == 0 || signal == 9 || signal == 19 {
            return None;
        }
        // The executable first: an exec between the two reads then shows as a change.
        let exe = exe_of(pid);
        let status = proc_status(pid);
        Some(Hearing {
            pid,
            signal,
            exe,
            unheard: is_namespace_init(&status) && !catches(&status, signal),
        })
    }

    /// Whether to send the signal again now: it may be unheard, and the process
    /// would hear it (it has a handler, or it is no init, whose default is to die).
    fn send_again(&mut self) -> bool {
        let exe = exe_of(self.pid);
        if exe != self.exe {
            self.exe = exe;
            self.unheard = true;
        }
        if !self.unheard {
            return false;
        }
        let status = proc_status(self.pid);
        let hears = catches(&status, self.signal) || !is_namespace_init(&status);
        if hears {
            self.unheard = false;
        }
        hears
    }
}

/// `/proc/<pid>/status` ("" when it is gone).
fn proc_status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

/// The executable process `pid` runs (None when it is gone).
fn exe_of(pid: u32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Whether a `/proc/<pid>/status` text is of a PID namespace's init (its innermost
/// pid, the last of `NSpid`, is 1).
pub(super) fn is_namespace_init(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|pids| pids.split_whitespace().last())
        == Some("1")
}

/// Whether a `/proc/<pid>/status` text shows a handler for `signal` (its bit in
/// `SigCgt`, a hex mask with signal N at bit N-1).
pub(super) fn catches(status: &str, signal: u32) -> bool {
    let Some(mask) = status.lines().find_map(|l| l.strip_prefix("SigCgt:")) else {
        return false;
    };
    let Ok(mask) = u64::from_str_radix(mask.trim(), 16) else {
        return false;
    };
    (1..=64).contains(&signal) && mask & (1u64 << (signal - 1)) != 0
}

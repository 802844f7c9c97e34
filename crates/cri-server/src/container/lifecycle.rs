//! StartContainer, StopContainer and RemoveContainer (and the pod-wide stop and
//! remove that StopPodSandbox and RemovePodSandbox begin with). Stop and remove are
//! idempotent: a missing container is already stopped and removed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crius_shim::client::ProcessStatus;
use crius_store::ContainerState;
use tracing::info;

use super::{Containers, signal_number};
use crate::error::{CriError, CriResult};
use crate::failpoint;
use crate::host::{ShimAddr, ShimApi};
use crate::util::now_nanos;

/// What the record says of a container stopped after its shim died.
const STOPPED_ORPHAN: &str =
    "the container's shim had died; criusd stopped its processes through its cgroup";

/// How long a SIGKILLed container may take to be reaped before StopContainer gives up
/// waiting (the exit watcher records it whenever it goes).
const KILL_GRACE: Duration = Duration::from_secs(10);

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
        let started_at = now_nanos();
        let pid = self.on_shim(&rec, |shims, at| shims.start(at, "")).await?;
        failpoint::hit("container.start.started")?;
        rec.pid = pid;
        rec.state = ContainerState::Running;
        rec.started_at = started_at;
        self.store.update_container(&rec).await?;
        self.watch(&rec);
        info!(container_id = %rec.id, pid, "container started");
        Ok(())
    }

    /// StopContainer: the stop signal, then SIGKILL after `timeout` seconds (at once
    /// for a container that never started).
    pub async fn stop(self: &Arc<Self>, id: &str, timeout: i64) -> CriResult<()> {
        let Some(rec) = self.resolve(id, "container_id").await? else {
            // Idempotent: nothing is left to stop (critest checks this).
            return Ok(());
        };
        if rec.state != ContainerState::Running && rec.state != ContainerState::Created {
            return Ok(());
        }
        let signal = signal_number(&rec.stop_signal).unwrap_or(15);
        let grace = Duration::from_secs(u64::try_from(timeout.max(0)).unwrap_or(0));
        let waited = self
            .on_shim(&rec, move |shims, at| {
                Ok(shims
                    .is_alive(at.socket)
                    .then(|| stop_init(shims, at, signal, grace)))
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
            r.state = ContainerState::Exited;
            r.exit_code = 137;
            r.finished_at = now_nanos();
            r.reason = "Error".into();
            return Ok(self.store.update_container(&r).await?);
        }
        self.unwatch(&rec.id);
        self.settle(&rec.id, waited, note).await
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
        drop(guard);
        info!(container_id = %rec.id, "container removed");
        // Its image may have been removed while it ran: the layers it kept alive are
        // garbage now.
        if self.store.image(&rec.image_ref).await?.is_none() {
            self.images.collect_garbage().await?;
        }
        Ok(())
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
/// process once `grace` has passed. Returns the init's exit when the shim reports
/// one. A shim that is gone has nothing to stop. Blocking.
fn stop_init(
    shims: &dyn ShimApi,
    at: ShimAddr<'_>,
    signal: u32,
    grace: Duration,
) -> Option<crius_shim::client::ExitStatus> {
    let state = shims.state(at, "").ok()?;
    let created_only = state.status == ProcessStatus::Created;
    let stopped = !created_only
        && !grace.is_zero()
        && shims.kill(at, "", signal, false).is_ok()
        && wait_timeout(shims, at, "", grace);
    if !stopped {
        let _ = shims.kill(at, "", 9, true);
        let _ = wait_timeout(shims, at, "", KILL_GRACE);
    }
    shims.state(at, "").ok().and_then(|s| s.exit)
}

/// Waits up to `grace` for a process (`""`: the container's init) to stop; true when
/// it did (or the shim no longer knows it).
pub(super) fn wait_timeout(
    shims: &dyn ShimApi,
    at: ShimAddr<'_>,
    exec_id: &str,
    grace: Duration,
) -> bool {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match shims.state(at, exec_id) {
            Ok(s) if s.status == ProcessStatus::Stopped => return true,
            Err(_) => return true,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

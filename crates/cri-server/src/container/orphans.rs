//! Containers whose shim is gone without recording an exit. The container's
//! processes were the shim's children; they outlive it (reparented to the host's
//! init) in the container's cgroup, which is where criusd finds, counts and stops
//! them. Such a container stays `Running` until its cgroup is empty.

use std::time::{Duration, Instant, SystemTime};

use crius_shim::client::ExitStatus;
use crius_store::ContainerRecord;
use tracing::warn;

use super::Containers;
use crate::error::{CriError, CriResult};
use crate::util::blocking;

/// How often a stop of an orphaned container looks whether its processes are gone.
const POLL: Duration = Duration::from_millis(20);

/// What the record says of a running container whose shim died.
pub(super) const ORPHANED: &str =
    "the container's shim died; its processes still run and are stopped through its cgroup";

impl Containers {
    /// The processes left in a container's cgroup.
    pub(super) async fn orphan_pids(&self, rec: &ContainerRecord) -> CriResult<Vec<u32>> {
        let (procs, bundle) = (self.procs.clone(), rec.bundle.clone());
        blocking(move || procs.pids(&bundle)).await
    }

    async fn signal_all(&self, pids: Vec<u32>, signal: u32) -> CriResult<()> {
        let procs = self.procs.clone();
        blocking(move || {
            for pid in pids {
                procs.signal(pid, signal)?;
            }
            Ok(())
        })
        .await
    }

    /// Waits up to `grace` for the cgroup to empty; true when it did.
    async fn wait_empty(&self, rec: &ContainerRecord, grace: Duration) -> CriResult<bool> {
        let deadline = Instant::now() + grace;
        loop {
            if self.orphan_pids(rec).await?.is_empty() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops a container whose shim is gone: `signal` to its init (every process
    /// when the init is not among them), then, after `grace`, SIGKILL to whatever
    /// is left, until the cgroup is empty. Returns the exit to record: 128 + the
    /// signal that ended it, or `None` when nothing was running.
    pub(super) async fn stop_orphan(
        &self,
        rec: &ContainerRecord,
        signal: u32,
        grace: Duration,
    ) -> CriResult<Option<ExitStatus>> {
        let pids = self.orphan_pids(rec).await?;
        if pids.is_empty() {
            return Ok(None);
        }
        warn!(container_id = %rec.id, pids = ?pids, "stopping a container whose shim is gone, through its cgroup");
        if !grace.is_zero() {
            let targets = if pids.contains(&rec.pid) {
                vec![rec.pid]
            } else {
                pids
            };
            self.signal_all(targets, signal).await?;
            if self.wait_empty(rec, grace).await? {
                return Ok(Some(exit_by(signal)));
            }
        }
        let deadline = Instant::now() + self.kill_grace;
        loop {
            let left = self.orphan_pids(rec).await?;
            if left.is_empty() {
                return Ok(Some(exit_by(9)));
            }
            if Instant::now() >= deadline {
                return Err(CriError::FailedPrecondition(format!(
                    "container {}: processes {left:?} are still running {:?} after SIGKILL",
                    rec.id, self.kill_grace
                )));
            }
            // Again each round: a process may have forked since the last one.
            self.signal_all(left, 9).await?;
            tokio::time::sleep(POLL).await;
        }
    }
}

fn exit_by(signal: u32) -> ExitStatus {
    ExitStatus {
        code: 128 + signal,
        at: SystemTime::now(),
    }
}

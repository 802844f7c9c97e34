//! Start-up recovery of containers: undo half-made ones, re-watch running ones (and
//! kill the streaming execs a previous daemon left without a client), settle those
//! whose shims are gone.

use std::sync::Arc;
use std::time::Duration;

use crius_store::{ContainerRecord, ContainerState};
use tracing::{error, warn};

use super::Containers;
use super::lifecycle::wait_timeout;
use crate::error::CriResult;
use crate::host::{ShimAddr, ShimApi};
use crate::util::blocking;

/// The prefix of the exec ids the streaming server gives the processes it starts.
pub const STREAM_EXEC_PREFIX: &str = "s";

/// How long an orphaned exec may take to die once killed.
const EXEC_KILL_GRACE: Duration = Duration::from_secs(10);

impl Containers {
    /// Start-up recovery. Runs before the daemon serves, so nothing races it. A
    /// container whose recovery fails is logged and left as its record says, for the
    /// kubelet's RemoveContainer or the next start; it never keeps criusd from
    /// serving. Only reading the store fails recovery.
    pub async fn recover(self: &Arc<Self>) -> CriResult<()> {
        for c in self.store.containers().await? {
            if let Err(e) = self.recover_container(&c).await {
                error!(container_id = %c.id, state = ?c.state, error = %e, "recovery: could not finish this container; left for RemoveContainer or the next start");
            }
        }
        Ok(())
    }

    async fn recover_container(self: &Arc<Self>, c: &ContainerRecord) -> CriResult<()> {
        match c.state {
            ContainerState::Creating => {
                warn!(container_id = %c.id, "recovery: container was half-made when criusd stopped; removing it");
                self.release(c).await?;
                self.store.delete_container(&c.id).await?;
            }
            ContainerState::Running => {
                self.watch(c);
                // Streaming execs of a previous daemon have lost their client.
                // Listed now, before this daemon can start any; killed in the
                // background.
                tokio::spawn(self.on_shim(c, |shims, at| {
                    reap_stream_execs(shims, at);
                    Ok(())
                }));
            }
            ContainerState::Created => {
                let (shims, socket) = (self.shims.clone(), c.socket.clone());
                if !blocking(move || Ok(shims.is_alive(&socket))).await? {
                    warn!(container_id = %c.id, "recovery: the shim of a created container is gone");
                    // Only the runtime's init can be left in its cgroup: it goes.
                    self.stop_orphan(c, 9, std::time::Duration::ZERO).await?;
                    self.settle(&c.id, None, None).await?;
                    self.tear_down_settled(&c.id).await;
                }
            }
            // A previous daemon may have stopped before it tore the container down.
            ContainerState::Exited => self.tear_down_settled(&c.id).await,
        }
        Ok(())
    }
}

/// Kills and deletes a container's streaming execs. Called at start-up, when no
/// session of this daemon can own one: each is an orphan of a previous daemon whose
/// client is gone (its FIFOs were removed with the old streams directory).
fn reap_stream_execs(shims: &dyn ShimApi, at: ShimAddr<'_>) {
    let Ok(execs) = shims.list_execs(at) else {
        return;
    };
    for exec in execs.iter().filter(|e| e.starts_with(STREAM_EXEC_PREFIX)) {
        let _ = shims.kill(at, exec, 9, false);
        wait_timeout(shims, at, exec, EXEC_KILL_GRACE);
        match shims.delete(at, exec) {
            Ok(()) => {
                warn!(container_id = %at.id, exec_id = %exec, "recovery: killed a streaming exec whose client went with the previous daemon")
            }
            Err(e) => {
                warn!(container_id = %at.id, exec_id = %exec, "recovery: deleting an orphaned exec: {e}")
            }
        }
    }
}

//! StopPodSandbox and RemovePodSandbox (the pod's containers are stopped or removed
//! first, by the service). Both are idempotent: a missing sandbox is already
//! stopped and removed.

use crius_store::PodState;
use tracing::info;

use super::Sandboxes;
use crate::error::CriResult;
use crate::failpoint;

impl Sandboxes {
    /// StopPodSandbox: releases the pod's network, infra process and namespaces;
    /// keeps its directory and record (state NotReady).
    pub async fn stop(&self, id: &str) -> CriResult<()> {
        let Some(found) = self.resolve(id, "pod_sandbox_id").await? else {
            return Ok(());
        };
        let _guard = self.locks.lock(&found.id).await;
        let Some(mut rec) = self.store.pod(&found.id).await? else {
            return Ok(());
        };
        if rec.state == PodState::NotReady {
            return Ok(());
        }
        self.stop_resources(&rec).await?;
        failpoint::hit("sandbox.stop.released")?;
        rec.state = PodState::NotReady;
        self.store.update_pod(&rec).await?;
        info!(pod_id = %rec.id, "pod sandbox stopped");
        Ok(())
    }

    /// RemovePodSandbox: removes every trace of the pod.
    pub async fn remove(&self, id: &str) -> CriResult<()> {
        let Some(found) = self.resolve(id, "pod_sandbox_id").await? else {
            return Ok(());
        };
        let _guard = self.locks.lock(&found.id).await;
        let Some(rec) = self.store.pod(&found.id).await? else {
            return Ok(());
        };
        self.release(&rec).await?;
        failpoint::hit("sandbox.remove.released")?;
        self.store.delete_pod(&rec.id).await?;
        info!(pod_id = %rec.id, "pod sandbox removed");
        Ok(())
    }
}

//! StopPodSandbox and RemovePodSandbox (the pod's containers are stopped or removed
//! first, by `Containers::stop_pod_sandbox` and `remove_pod_sandbox`). Both are
//! idempotent: a missing sandbox is already stopped and removed.

use crius_store::PodState;
use tracing::info;

use super::Sandboxes;
use crate::error::{CriError, CriResult};
use crate::events::Kind;
use crate::failpoint;
use crate::nri::api::Event;

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
        let was_ready = rec.state == PodState::Ready;
        self.stop_resources(&rec).await?;
        failpoint::hit("sandbox.stop.released")?;
        rec.state = PodState::NotReady;
        self.store.update_pod(&rec).await?;
        info!(pod_id = %rec.id, "pod sandbox stopped");
        self.nri.pod_event(Event::StopPodSandbox, &rec).await?;
        if was_ready {
            self.events
                .pod(Kind::ContainerStoppedEvent, &rec.id, None)
                .await;
        }
        Ok(())
    }

    /// RemovePodSandbox: removes every trace of the pod. Refused (FailedPrecondition)
    /// while a container of the pod exists: one made while its containers were being
    /// removed would be left without its pod.
    pub async fn remove(&self, id: &str) -> CriResult<()> {
        let Some(found) = self.resolve(id, "pod_sandbox_id").await? else {
            return Ok(());
        };
        let _guard = self.locks.lock(&found.id).await;
        let Some(rec) = self.store.pod(&found.id).await? else {
            return Ok(());
        };
        let left: Vec<String> = self
            .store
            .containers_of_pod(&rec.id)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect();
        if !left.is_empty() {
            return Err(CriError::FailedPrecondition(format!(
                "pod sandbox {} still has containers {left:?}",
                rec.id
            )));
        }
        self.release(&rec).await?;
        failpoint::hit("sandbox.remove.released")?;
        self.store.delete_pod(&rec.id).await?;
        info!(pod_id = %rec.id, "pod sandbox removed");
        // A pod the kubelet saw (not one whose creation failed) is reported gone: as
        // stopped first if it was still ready, then deleted with its last status.
        if rec.state != PodState::Creating {
            self.nri.pod_event(Event::RemovePodSandbox, &rec).await?;
            let mut last = rec;
            if last.state == PodState::Ready {
                last.state = PodState::NotReady;
                self.events
                    .pod(Kind::ContainerStoppedEvent, &last.id, Some(&last))
                    .await;
            }
            self.events
                .pod(Kind::ContainerDeletedEvent, &last.id, Some(&last))
                .await;
        }
        Ok(())
    }
}

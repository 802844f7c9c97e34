//! ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats.

use k8s_cri::v1 as cri;

use super::Cri;
use crate::error::CriResult;

impl Cri {
    pub(super) async fn container_stats(
        &self,
        req: cri::ContainerStatsRequest,
    ) -> CriResult<cri::ContainerStatsResponse> {
        let stats = self.containers.stats(&req.container_id).await?;
        Ok(cri::ContainerStatsResponse { stats: Some(stats) })
    }

    pub(super) async fn list_container_stats(
        &self,
        req: cri::ListContainerStatsRequest,
    ) -> CriResult<cri::ListContainerStatsResponse> {
        let stats = self.containers.list_stats(req.filter).await?;
        Ok(cri::ListContainerStatsResponse { stats })
    }

    pub(super) async fn pod_sandbox_stats(
        &self,
        req: cri::PodSandboxStatsRequest,
    ) -> CriResult<cri::PodSandboxStatsResponse> {
        let pod = self.sandboxes.must(&req.pod_sandbox_id).await?;
        let stats = self.containers.pod_stats(&pod).await?;
        Ok(cri::PodSandboxStatsResponse { stats: Some(stats) })
    }

    /// The stats of every pod the filter selects (by id prefix and labels).
    pub(super) async fn list_pod_sandbox_stats(
        &self,
        req: cri::ListPodSandboxStatsRequest,
    ) -> CriResult<cri::ListPodSandboxStatsResponse> {
        let f = req.filter.unwrap_or_default();
        let pods = self.sandboxes.records(&f.id, &f.label_selector).await?;
        let mut stats = Vec::with_capacity(pods.len());
        for pod in &pods {
            stats.push(self.containers.pod_stats(pod).await?);
        }
        Ok(cri::ListPodSandboxStatsResponse { stats })
    }
}

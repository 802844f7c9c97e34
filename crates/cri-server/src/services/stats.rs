//! ListPodSandboxStats and StreamPodSandboxStats.

use crius_cri_api::v1 as cri;

use super::Cri;
use crate::error::CriResult;

impl Cri {
    /// The stats of every pod the filter selects (by id prefix and labels).
    pub(super) async fn list_pod_sandbox_stats(
        &self,
        filter: Option<cri::PodSandboxStatsFilter>,
    ) -> CriResult<Vec<cri::PodSandboxStats>> {
        let f = filter.unwrap_or_default();
        let pods = self.sandboxes.records(&f.id, &f.label_selector).await?;
        let mut stats = Vec::with_capacity(pods.len());
        for pod in &pods {
            stats.push(self.containers.pod_stats(pod).await?);
        }
        Ok(stats)
    }
}

//! RunPodSandbox, StopPodSandbox, RemovePodSandbox (StopPodSandbox and RemovePodSandbox
//! first stop or remove the pod's containers).

use crius_cri_api::v1 as cri;

use super::Cri;
use crate::error::CriResult;
use crate::validate;

impl Cri {
    pub(super) async fn run_pod_sandbox(
        &self,
        req: cri::RunPodSandboxRequest,
    ) -> CriResult<cri::RunPodSandboxResponse> {
        let pod = validate::pod_sandbox(req.config, &req.runtime_handler, &self.config)?;
        let md = pod.config.metadata.clone().unwrap_or_default();
        let span = tracing::Span::current();
        span.record("pod", md.name.as_str());
        let pod_sandbox_id = self.sandboxes.run(pod).await?;
        span.record("pod_id", pod_sandbox_id.as_str());
        Ok(cri::RunPodSandboxResponse { pod_sandbox_id })
    }

    /// Stops the pod's containers, then the pod.
    pub(super) async fn stop_pod_sandbox(
        &self,
        req: cri::StopPodSandboxRequest,
    ) -> CriResult<cri::StopPodSandboxResponse> {
        self.containers
            .stop_pod_sandbox(&req.pod_sandbox_id)
            .await?;
        Ok(cri::StopPodSandboxResponse {})
    }

    /// Removes the pod's containers, then the pod.
    pub(super) async fn remove_pod_sandbox(
        &self,
        req: cri::RemovePodSandboxRequest,
    ) -> CriResult<cri::RemovePodSandboxResponse> {
        self.containers
            .remove_pod_sandbox(&req.pod_sandbox_id)
            .await?;
        Ok(cri::RemovePodSandboxResponse {})
    }
}

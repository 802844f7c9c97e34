//! CreateContainer, StartContainer, StopContainer, RemoveContainer, ListContainers,
//! ContainerStatus, UpdateContainerResources, ReopenContainerLog.

use k8s_cri::v1 as cri;

use super::Cri;
use crate::error::CriResult;
use crate::validate;

impl Cri {
    pub(super) async fn create_container(
        &self,
        req: cri::CreateContainerRequest,
    ) -> CriResult<cri::CreateContainerResponse> {
        let valid = validate::create_container(req)?;
        let container_id = self.containers.create(valid).await?;
        tracing::Span::current().record("container_id", container_id.as_str());
        Ok(cri::CreateContainerResponse { container_id })
    }

    pub(super) async fn start_container(
        &self,
        req: cri::StartContainerRequest,
    ) -> CriResult<cri::StartContainerResponse> {
        self.containers.start(&req.container_id).await?;
        Ok(cri::StartContainerResponse {})
    }

    pub(super) async fn stop_container(
        &self,
        req: cri::StopContainerRequest,
    ) -> CriResult<cri::StopContainerResponse> {
        self.containers.stop(&req.container_id, req.timeout).await?;
        Ok(cri::StopContainerResponse {})
    }

    pub(super) async fn remove_container(
        &self,
        req: cri::RemoveContainerRequest,
    ) -> CriResult<cri::RemoveContainerResponse> {
        self.containers.remove(&req.container_id).await?;
        Ok(cri::RemoveContainerResponse {})
    }

    pub(super) async fn list_containers(
        &self,
        req: cri::ListContainersRequest,
    ) -> CriResult<cri::ListContainersResponse> {
        let containers = self.containers.list(req.filter).await?;
        Ok(cri::ListContainersResponse { containers })
    }

    pub(super) async fn container_status(
        &self,
        req: cri::ContainerStatusRequest,
    ) -> CriResult<cri::ContainerStatusResponse> {
        self.containers.status(&req.container_id, req.verbose).await
    }

    pub(super) async fn update_container_resources(
        &self,
        req: cri::UpdateContainerResourcesRequest,
    ) -> CriResult<cri::UpdateContainerResourcesResponse> {
        self.containers.update(&req.container_id, req.linux).await?;
        Ok(cri::UpdateContainerResourcesResponse {})
    }

    pub(super) async fn reopen_container_log(
        &self,
        req: cri::ReopenContainerLogRequest,
    ) -> CriResult<cri::ReopenContainerLogResponse> {
        self.containers.reopen_log(&req.container_id).await?;
        Ok(cri::ReopenContainerLogResponse {})
    }
}

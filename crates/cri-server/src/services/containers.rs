//! CreateContainer.

use crius_cri_api::v1 as cri;

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
}

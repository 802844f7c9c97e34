//! Exec, Attach and PortForward: they validate and hand out a URL on the streaming
//! server.

use crius_cri_api::v1 as cri;
use crius_store::PodState;

use super::Cri;
use crate::error::{CriError, CriResult};
use crate::streaming::Request as Stream;
use crate::validate;

impl Cri {
    pub(super) async fn exec(&self, mut req: cri::ExecRequest) -> CriResult<cri::ExecResponse> {
        if req.cmd.is_empty() {
            return Err(CriError::invalid("cmd", "must not be empty"));
        }
        validate::streams(req.stdin, req.stdout, req.stderr, req.tty)?;
        req.container_id = self.containers.running(&req.container_id).await?.id;
        let url = self.streaming.url(Stream::Exec(req))?;
        Ok(cri::ExecResponse { url })
    }

    pub(super) async fn attach(
        &self,
        mut req: cri::AttachRequest,
    ) -> CriResult<cri::AttachResponse> {
        validate::streams(req.stdin, req.stdout, req.stderr, req.tty)?;
        req.container_id = self.containers.running(&req.container_id).await?.id;
        let url = self.streaming.url(Stream::Attach(req))?;
        Ok(cri::AttachResponse { url })
    }

    pub(super) async fn port_forward(
        &self,
        mut req: cri::PortForwardRequest,
    ) -> CriResult<cri::PortForwardResponse> {
        validate::port_forward(&req.pod_sandbox_id, &req.port)?;
        let pod = self.sandboxes.must(&req.pod_sandbox_id).await?;
        if pod.state != PodState::Ready {
            return Err(CriError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        req.pod_sandbox_id = pod.id;
        let url = self.streaming.url(Stream::PortForward(req))?;
        Ok(cri::PortForwardResponse { url })
    }
}

//! ExecSync, ReopenContainerLog and UpdateContainerResources: calls into a
//! container's shim.

use std::time::Duration;

use crius_cri_api::v1 as cri;
use crius_store::{ContainerRecord, ContainerState};

use super::Containers;
use crate::error::{CriError, CriResult};
use crate::host::ExecSync;
use crate::util::new_id;

/// Default cap on ExecSync output per stream (the kubelet's own limit is 16 MiB).
const EXEC_SYNC_OUTPUT_LIMIT: u64 = 16 * 1024 * 1024;
/// ExecSync's timeout when the request gives none (0): a day bounds it all the same.
const EXEC_SYNC_MAX_SECS: u64 = 86_400;

impl Containers {
    /// The OCI `process` for a command run in container `c` (ExecSync, Exec): the
    /// container's own process with other arguments.
    pub fn exec_process(c: &ContainerRecord, cmd: &[String], tty: bool) -> CriResult<Vec<u8>> {
        let path = c.bundle.join("config.json");
        let bytes =
            std::fs::read(&path).map_err(CriError::io(format!("reading {}", path.display())))?;
        let process = crius_spec::exec_process(&bytes, cmd, tty)?;
        serde_json::to_vec(&process)
            .map_err(|e| CriError::Internal(format!("encoding the exec process: {e}")))
    }

    /// ExecSync.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: i64,
    ) -> CriResult<cri::ExecSyncResponse> {
        if cmd.is_empty() {
            return Err(CriError::invalid("cmd", "must not be empty"));
        }
        let c = self.running(id).await?;
        let json = Self::exec_process(&c, &cmd, false)?;
        let exec_id = format!("x{}", &new_id()?[..16]);
        let secs = if timeout <= 0 {
            EXEC_SYNC_MAX_SECS
        } else {
            u64::try_from(timeout).unwrap_or(EXEC_SYNC_MAX_SECS)
        };
        let timeout = Duration::from_secs(secs);
        let out = self
            .on_shim(&c, move |shims, at| {
                let run = ExecSync {
                    exec_id: &exec_id,
                    process: &json,
                    timeout,
                    output_limit: EXEC_SYNC_OUTPUT_LIMIT,
                };
                shims.exec_sync(at, run)
            })
            .await?;
        Ok(cri::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        })
    }

    /// ReopenContainerLog.
    pub async fn reopen_log(&self, id: &str) -> CriResult<()> {
        let c = self.must(id).await?;
        if c.state != ContainerState::Running {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        self.on_shim(&c, |shims, at| shims.reopen_log(at)).await
    }

    /// UpdateContainerResources.
    pub async fn update(
        &self,
        id: &str,
        linux: Option<cri::LinuxContainerResources>,
    ) -> CriResult<()> {
        let c = self.must(id).await?;
        let Some(mut r) = linux else {
            return Ok(());
        };
        let nri = self.sandboxes.nri();
        if nri.active() {
            if let Some(pod) = self.store.pod(&c.pod_id).await? {
                r = nri.update_container(&pod, &c, &r).await?;
            }
        }
        self.apply_resources(&c, r).await?;
        match self.store.container(&c.id).await? {
            Some(rec) => {
                self.nri_event(crate::nri::api::Event::PostUpdateContainer, &rec)
                    .await
            }
            None => Ok(()),
        }
    }

    /// The resource updates an NRI plugin asks for of container `id` (over what it
    /// has now), without telling the plugins of them again.
    pub async fn update_from_nri(
        &self,
        id: &str,
        adjust: &crius_spec::adjust::AdjustResources,
    ) -> CriResult<()> {
        let c = self.must(id).await?;
        if c.state != ContainerState::Running && c.state != ContainerState::Created {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is {:?}: its resources cannot be updated",
                c.id, c.state
            )));
        }
        let current = c
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
            .unwrap_or_default();
        let r = crate::nri::convert::cri_resources(&current, adjust);
        self.apply_resources(&c, r).await
    }

    /// Applies `r` to the running container and records it.
    async fn apply_resources(
        &self,
        c: &ContainerRecord,
        r: cri::LinuxContainerResources,
    ) -> CriResult<()> {
        let resources = crius_spec::linux_resources(&r, &self.host_facts)?;
        let json = serde_json::to_vec(&resources)
            .map_err(|e| CriError::Internal(format!("encoding resources: {e}")))?;
        self.on_shim(c, move |shims, at| shims.update(at, &json))
            .await?;
        let _guard = self.locks.lock(&c.id).await;
        let mut rec = self.must(&c.id).await?;
        if let Some(l) = rec.config.linux.as_mut() {
            l.resources = Some(r);
        }
        Ok(self.store.update_container(&rec).await?)
    }
}

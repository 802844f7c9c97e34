//! ContainerStatus and ListContainers.

use std::collections::HashMap;

use crius_cri_api::v1 as cri;
use crius_store::{ContainerRecord, ContainerState};

use super::{Containers, cri_signal, cri_state, stop_signal};
use crate::error::CriResult;

impl Containers {
    fn to_cri(&self, c: &ContainerRecord) -> cri::Container {
        cri::Container {
            id: c.id.clone(),
            pod_sandbox_id: c.pod_id.clone(),
            metadata: c.config.metadata.clone(),
            image: c.config.image.clone(),
            image_ref: c.image_ref.clone(),
            state: cri_state(c.state) as i32,
            created_at: c.created_at,
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            image_id: c.image_ref.clone(),
        }
    }

    /// ListContainers.
    pub async fn list(
        &self,
        filter: Option<cri::ContainerFilter>,
    ) -> CriResult<Vec<cri::Container>> {
        let all = self.store.containers().await?;
        let f = filter.unwrap_or_default();
        let mut out: Vec<cri::Container> = all
            .iter()
            .filter(|c| c.state != ContainerState::Creating)
            .filter(|c| f.id.is_empty() || c.id.starts_with(&f.id))
            .filter(|c| f.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&f.pod_sandbox_id))
            .filter(|c| {
                f.state
                    .as_ref()
                    .is_none_or(|s| s.state == cri_state(c.state) as i32)
            })
            .filter(|c| {
                f.label_selector
                    .iter()
                    .all(|(k, v)| c.config.labels.get(k) == Some(v))
            })
            .map(|c| self.to_cri(c))
            .collect();
        out.sort_by_key(|c| c.created_at);
        Ok(out)
    }

    /// ContainerStatus.
    pub async fn status(&self, id: &str, verbose: bool) -> CriResult<cri::ContainerStatusResponse> {
        let c = self.must(id).await?;
        // A container whose CreateContainer has not returned does not exist yet for
        // the kubelet (as in ListContainers).
        if c.state == ContainerState::Creating {
            return Err(crate::error::CriError::NotFound(format!(
                "container {id:?} not found (it is being created)"
            )));
        }
        let status = status_of(&c);
        let mut info = HashMap::new();
        if verbose {
            let spec: serde_json::Value = std::fs::read(c.bundle.join("config.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(serde_json::Value::Null);
            let detail = serde_json::json!({
                "id": c.id,
                "sandboxID": c.pod_id,
                "pid": c.pid,
                "bundle": c.bundle,
                "shimSocket": c.socket,
                "runtime": c.runtime,
                "runtimeSpec": spec,
            });
            info.insert("info".to_string(), detail.to_string());
        }
        Ok(cri::ContainerStatusResponse {
            status: Some(status),
            info,
        })
    }
}

/// The CRI status of a container record (ContainerStatus without `verbose`; the
/// statuses container events and PodSandboxStatus carry).
pub fn status_of(c: &ContainerRecord) -> cri::ContainerStatus {
    let mounts = c.config.mounts.to_vec();
    cri::ContainerStatus {
        id: c.id.clone(),
        metadata: c.config.metadata.clone(),
        state: cri_state(c.state) as i32,
        created_at: c.created_at,
        started_at: c.started_at,
        finished_at: c.finished_at,
        exit_code: c.exit_code,
        image: c.config.image.clone(),
        image_ref: c.image_ref.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        mounts,
        log_path: c
            .log_path
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        resources: c
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
            .map(|r| cri::ContainerResources {
                linux: Some(r),
                windows: None,
            }),
        image_id: c.image_ref.clone(),
        user: Some(cri::ContainerUser {
            linux: Some(cri::LinuxContainerUser {
                uid: i64::from(c.uid),
                gid: i64::from(c.gid),
                supplemental_groups: c
                    .supplemental_groups
                    .iter()
                    .map(|g| i64::from(*g))
                    .collect(),
            }),
        }),
        stop_signal: cri_signal(stop_signal(c)) as i32,
    }
}

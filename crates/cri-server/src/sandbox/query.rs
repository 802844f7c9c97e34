//! PodSandboxStatus and ListPodSandbox.

use std::collections::HashMap;

use crius_cri_api::v1 as cri;
use crius_store::{PodRecord, PodState};

use super::Sandboxes;
use crate::error::CriResult;

impl Sandboxes {
    /// PodSandboxStatus. `timestamp` and `containers_statuses` are always filled
    /// together (the kubelet's evented PLEG takes the container statuses from here
    /// whenever the timestamp is set): the statuses are read after the timestamp was
    /// taken, from the events' clock.
    pub async fn status(
        &self,
        id: &str,
        verbose: bool,
    ) -> CriResult<cri::PodSandboxStatusResponse> {
        let timestamp = self.events.now();
        let rec = self.must(id).await?;
        let containers_statuses = self.events.container_statuses(&rec.id).await?;
        let status = status_of(&rec);
        let mut info = HashMap::new();
        if verbose {
            let detail = serde_json::json!({
                "id": rec.id,
                "name": rec.name,
                "pid": rec.infra_pid.unwrap_or(0),
                "state": format!("{:?}", rec.state),
                "runtimeHandler": rec.runtime_handler,
                "podDir": rec.dir,
                "namespaces": {
                    "network": rec.namespaces.net,
                    "ipc": rec.namespaces.ipc,
                    "uts": rec.namespaces.uts,
                },
                "networkBackend": self.network_name(),
                "config": rec.config,
            });
            info.insert("info".to_string(), detail.to_string());
        }
        Ok(cri::PodSandboxStatusResponse {
            status: Some(status),
            info,
            containers_statuses,
            timestamp,
        })
    }

    /// The pods (none being created) whose id starts with `id` and whose labels
    /// hold every pair of `labels`.
    pub async fn records(
        &self,
        id: &str,
        labels: &HashMap<String, String>,
    ) -> CriResult<Vec<PodRecord>> {
        let mut pods: Vec<PodRecord> = self
            .store
            .pods()
            .await?
            .into_iter()
            .filter(|p| p.state != PodState::Creating)
            .filter(|p| p.id.starts_with(id))
            .filter(|p| {
                labels
                    .iter()
                    .all(|(k, v)| p.config.labels.get(k) == Some(v))
            })
            .collect();
        pods.sort_by_key(|p| p.created_at);
        Ok(pods)
    }

    /// ListPodSandbox with its filter.
    pub async fn list(
        &self,
        filter: Option<cri::PodSandboxFilter>,
    ) -> CriResult<Vec<cri::PodSandbox>> {
        let filter = filter.unwrap_or_default();
        let pods = self.records(&filter.id, &filter.label_selector).await?;
        Ok(pods
            .into_iter()
            .filter(|p| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|s| s.state == cri_state(p.state) as i32)
            })
            .map(|p| cri::PodSandbox {
                id: p.id.clone(),
                metadata: p.config.metadata.clone(),
                state: cri_state(p.state) as i32,
                created_at: p.created_at,
                labels: p.config.labels.clone(),
                annotations: p.config.annotations.clone(),
                runtime_handler: p.runtime_handler.clone(),
            })
            .collect())
    }
}

/// The CRI status of a pod record.
pub fn status_of(rec: &PodRecord) -> cri::PodSandboxStatus {
    let mut ips = rec.ips.iter();
    let network = cri::PodSandboxNetworkStatus {
        ip: ips.next().cloned().unwrap_or_default(),
        additional_ips: ips.map(|ip| cri::PodIp { ip: ip.clone() }).collect(),
    };
    let options = rec
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    cri::PodSandboxStatus {
        id: rec.id.clone(),
        metadata: rec.config.metadata.clone(),
        state: cri_state(rec.state) as i32,
        created_at: rec.created_at,
        network: Some(network),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(options),
            }),
        }),
        labels: rec.config.labels.clone(),
        annotations: rec.config.annotations.clone(),
        runtime_handler: rec.runtime_handler.clone(),
    }
}

fn cri_state(state: PodState) -> cri::PodSandboxState {
    match state {
        PodState::Ready => cri::PodSandboxState::SandboxReady,
        PodState::Creating | PodState::NotReady => cri::PodSandboxState::SandboxNotready,
    }
}

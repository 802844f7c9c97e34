//! What the network backend is told about a pod.

use crius_cni::PodNetworkRequest;
use crius_cri_api::v1 as cri;
use crius_store::{PodRecord, PodState};

use super::Sandboxes;
use crate::error::CriResult;

impl Sandboxes {
    /// Network requests for every pod whose network should exist (start-up reconcile).
    pub async fn live_network_requests(&self) -> CriResult<Vec<PodNetworkRequest>> {
        let pods = self.store.pods().await?;
        Ok(pods
            .iter()
            .filter(|p| p.state == PodState::Ready)
            .filter_map(network_request)
            .collect())
    }
}

/// What the network backend needs to know about a pod; `None` for host-network pods.
pub fn network_request(rec: &PodRecord) -> Option<PodNetworkRequest> {
    let netns = rec.namespaces.net.clone()?;
    let md = rec.config.metadata.clone().unwrap_or_default();
    let port_mappings = rec
        .config
        .port_mappings
        .iter()
        .filter_map(|pm| {
            Some(crius_cni::PortMapping {
                protocol: match cri::Protocol::try_from(pm.protocol).ok()? {
                    cri::Protocol::Tcp => crius_cni::Protocol::Tcp,
                    cri::Protocol::Udp => crius_cni::Protocol::Udp,
                    cri::Protocol::Sctp => crius_cni::Protocol::Sctp,
                },
                container_port: u16::try_from(pm.container_port).ok()?,
                host_port: u16::try_from(pm.host_port).ok()?,
                host_ip: pm.host_ip.parse().ok(),
            })
        })
        .collect();
    let dns = rec
        .config
        .dns_config
        .as_ref()
        .map(|d| crius_cni::DnsConfig {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        });
    Some(PodNetworkRequest {
        pod_id: rec.id.clone(),
        name: md.name,
        namespace: md.namespace,
        uid: md.uid,
        netns,
        port_mappings,
        dns,
        bandwidth: None,
    })
}

//! Version, Status, RuntimeConfig, UpdateRuntimeConfig, and the runtime RPCs crius
//! does not serve.

use std::collections::HashMap;

use k8s_cri::v1 as cri;

use super::{Cri, unimplemented};
use crate::config::CgroupDriver;
use crate::error::CriResult;
use crate::util::find_binary;

/// The runtime name reported by `Version`.
pub const RUNTIME_NAME: &str = "crius";
/// The CRI API version served.
pub const RUNTIME_API_VERSION: &str = "v1";

fn condition(kind: &str, ready: bool, reason: &str, message: &str) -> cri::RuntimeCondition {
    let unless_ready = |s: &str| if ready { String::new() } else { s.to_string() };
    cri::RuntimeCondition {
        r#type: kind.to_string(),
        status: ready,
        reason: unless_ready(reason),
        message: unless_ready(message),
    }
}

impl Cri {
    pub(super) async fn version(
        &self,
        _req: cri::VersionRequest,
    ) -> CriResult<cri::VersionResponse> {
        Ok(cri::VersionResponse {
            version: "0.1.0".to_string(),
            runtime_name: RUNTIME_NAME.to_string(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
            runtime_api_version: RUNTIME_API_VERSION.to_string(),
        })
    }

    /// RuntimeReady: the default handler's OCI runtime is installed. NetworkReady: as
    /// the network backend says.
    pub(super) async fn status(&self, req: cri::StatusRequest) -> CriResult<cri::StatusResponse> {
        let default = &self.config.default_runtime;
        let handler = self.config.runtimes.get(default);
        let runtime = match handler.and_then(|h| find_binary(&h.path)) {
            Some(_) => condition("RuntimeReady", true, "", ""),
            None => condition(
                "RuntimeReady",
                false,
                "OCIRuntimeMissing",
                &format!(
                    "the default runtime handler {default:?} needs the OCI runtime binary {:?}, which was not found",
                    handler
                        .map(|h| h.path.display().to_string())
                        .unwrap_or_default()
                ),
            ),
        };
        let net = self.network.status();
        let network = condition("NetworkReady", net.ready, &net.reason, &net.message);
        let no_features = Some(cri::RuntimeHandlerFeatures {
            recursive_read_only_mounts: false,
            user_namespaces: false,
        });
        let names = std::iter::once(String::new()).chain(self.config.runtimes.keys().cloned());
        let runtime_handlers = names
            .map(|name| cri::RuntimeHandler {
                name,
                features: no_features,
            })
            .collect();
        let mut info = HashMap::new();
        if req.verbose {
            info.insert("config".to_string(), self.verbose_config().to_string());
        }
        Ok(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![runtime, network],
            }),
            info,
            runtime_handlers,
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: false,
            }),
        })
    }

    /// The effective configuration, for verbose Status.
    fn verbose_config(&self) -> serde_json::Value {
        let handlers: HashMap<&String, serde_json::Value> = self
            .config
            .runtimes
            .iter()
            .map(|(name, h)| {
                (
                    name,
                    serde_json::json!({
                        "path": h.path,
                        "resolved": find_binary(&h.path),
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "config": &*self.config,
            "cgroupDriver": format!("{:?}", self.config.cgroup_driver()).to_lowercase(),
            "networkBackend": self.network.name(),
            "runtimeHandlers": handlers,
        })
    }

    pub(super) async fn runtime_config(
        &self,
        _req: cri::RuntimeConfigRequest,
    ) -> CriResult<cri::RuntimeConfigResponse> {
        let driver = match self.config.cgroup_driver() {
            CgroupDriver::Systemd => cri::CgroupDriver::Systemd,
            CgroupDriver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
        };
        Ok(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        })
    }

    /// The kubelet sends the node's pod CIDR here. The built-in bridge takes its
    /// subnet from the configuration and CNI plugins from theirs, so it is logged and
    /// nothing changes — the truth, not a fake.
    pub(super) async fn update_runtime_config(
        &self,
        req: cri::UpdateRuntimeConfigRequest,
    ) -> CriResult<cri::UpdateRuntimeConfigResponse> {
        let cidr = req
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        tracing::info!(pod_cidr = %cidr, "UpdateRuntimeConfig: the pod CIDR is not used (the network backend has its own)");
        Ok(cri::UpdateRuntimeConfigResponse {})
    }

    pub(super) async fn checkpoint_container(
        &self,
        _req: cri::CheckpointContainerRequest,
    ) -> CriResult<cri::CheckpointContainerResponse> {
        unimplemented("CheckpointContainer")
    }

    pub(super) async fn list_metric_descriptors(
        &self,
        _req: cri::ListMetricDescriptorsRequest,
    ) -> CriResult<cri::ListMetricDescriptorsResponse> {
        unimplemented("ListMetricDescriptors")
    }

    pub(super) async fn list_pod_sandbox_metrics(
        &self,
        _req: cri::ListPodSandboxMetricsRequest,
    ) -> CriResult<cri::ListPodSandboxMetricsResponse> {
        unimplemented("ListPodSandboxMetrics")
    }
}

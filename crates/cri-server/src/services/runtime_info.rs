//! Version, Status, RuntimeConfig, UpdateRuntimeConfig.

use std::collections::HashMap;

use crius_cri_api::v1 as cri;

use super::Cri;
use crate::config::CgroupDriver;
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

/// RuntimeReady: the default handler's OCI runtime binary is installed.
pub(crate) fn runtime_ready(config: &crate::config::Config) -> bool {
    config
        .runtimes
        .get(&config.default_runtime)
        .and_then(|h| find_binary(&h.path))
        .is_some()
}

impl Cri {
    pub(super) fn version(&self) -> cri::VersionResponse {
        cri::VersionResponse {
            version: "0.1.0".to_string(),
            runtime_name: RUNTIME_NAME.to_string(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
            runtime_api_version: RUNTIME_API_VERSION.to_string(),
        }
    }

    /// RuntimeReady: the default handler's OCI runtime is installed. NetworkReady: as
    /// the network backend says.
    pub(super) fn status(&self, verbose: bool) -> cri::StatusResponse {
        let default = &self.config.default_runtime;
        let handler = self.config.runtimes.get(default);
        let runtime = if runtime_ready(&self.config) {
            condition("RuntimeReady", true, "", "")
        } else {
            condition(
                "RuntimeReady",
                false,
                "OCIRuntimeMissing",
                &format!(
                    "the default runtime handler {default:?} needs the OCI runtime binary {:?}, which was not found",
                    handler
                        .map(|h| h.path.display().to_string())
                        .unwrap_or_default()
                ),
            )
        };
        let net = self.network.status();
        let network = condition("NetworkReady", net.ready, &net.reason, &net.message);
        let names = std::iter::once(String::new()).chain(self.config.runtimes.keys().cloned());
        let runtime_handlers = names
            .map(|name| cri::RuntimeHandler {
                features: Some(cri::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: self.containers.recursive_read_only(&name).works(),
                    user_namespaces: self.sandboxes.user_namespaces()
                        && self.containers.handler_installed(&name),
                }),
                name,
            })
            .collect();
        let mut info = HashMap::new();
        if verbose {
            info.insert("config".to_string(), self.verbose_config().to_string());
            info.insert("cdi".to_string(), self.containers.cdi_info().to_string());
            info.insert("nri".to_string(), self.sandboxes.nri().info().to_string());
        }
        cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![runtime, network],
            }),
            info,
            runtime_handlers,
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: true,
                user_namespaces_host_network: false,
                mount_options: false,
            }),
        }
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

    pub(super) fn runtime_config(&self) -> cri::RuntimeConfigResponse {
        let driver = match self.config.cgroup_driver() {
            CgroupDriver::Systemd => cri::CgroupDriver::Systemd,
            CgroupDriver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
        };
        cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }
    }

    /// The kubelet sends the node's pod CIDR here. The built-in bridge takes its
    /// subnet from the configuration and CNI plugins from theirs, so it is logged and
    /// nothing changes — the truth, not a fake.
    pub(super) fn update_runtime_config(
        &self,
        req: cri::UpdateRuntimeConfigRequest,
    ) -> cri::UpdateRuntimeConfigResponse {
        let cidr = req
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        tracing::info!(pod_cidr = %cidr, "UpdateRuntimeConfig: the pod CIDR is not used (the network backend has its own)");
        cri::UpdateRuntimeConfigResponse {}
    }
}

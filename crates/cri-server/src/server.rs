//! The CRI v1 gRPC services. Handlers validate, open a tracing span with the ids
//! involved, call into the managers and convert [`CriError`] to a status at the edge.
//! Every RPC that is not built yet answers `Unimplemented`, never a fake success.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use crius_cni::NetworkBackend;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::config::{CgroupDriver, Config};
use crate::error::CriError;
use crate::sandbox::Sandboxes;

/// The runtime name reported by `Version`.
pub const RUNTIME_NAME: &str = "crius";
/// The CRI API version served.
pub const RUNTIME_API_VERSION: &str = "v1";

/// Shared daemon state behind both services.
pub struct Cri {
    pub config: Arc<Config>,
    pub sandboxes: Arc<Sandboxes>,
    pub containers: Arc<crate::containers::Containers>,
    pub network: Arc<dyn NetworkBackend>,
    pub streaming: Arc<crate::streaming::StreamServer>,
}

/// The checks Exec and Attach share: which streams, and not tty with stderr (a
/// terminal has one output).
fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<(), CriError> {
    if !(stdin || stdout || stderr) {
        return Err(CriError::invalid(
            "stdin",
            "one of stdin, stdout and stderr must be true",
        ));
    }
    if tty && stderr {
        return Err(CriError::invalid(
            "stderr",
            "tty and stderr cannot both be true (a terminal has one output stream)",
        ));
    }
    Ok(())
}

/// Looks a binary up the way exec does: a path with a slash as is, else in PATH.
pub fn find_binary(name: &Path) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.as_os_str().to_string_lossy().contains('/') {
        return is_exec(name).then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_exec(p))
}

fn condition(kind: &str, ready: bool, reason: &str, message: &str) -> cri::RuntimeCondition {
    cri::RuntimeCondition {
        r#type: kind.to_string(),
        status: ready,
        reason: if ready {
            String::new()
        } else {
            reason.to_string()
        },
        message: if ready {
            String::new()
        } else {
            message.to_string()
        },
    }
}

macro_rules! unimplemented_rpcs {
    ($($method:ident($req:ident) -> $resp:ident, $rpc:literal;)*) => {
        $(
            // Spelled as async_trait's expansion: the attribute on the impl does not
            // reach into items that a macro produces.
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                _request: Request<cri::$req>,
            ) -> Pin<Box<dyn std::future::Future<Output = Result<Response<cri::$resp>, Status>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async {
                    Err(Status::unimplemented(concat!($rpc, " is not implemented in crius yet")))
                })
            }
        )*
    };
}

type EventStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RuntimeService for Cri {
    async fn version(
        &self,
        _request: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".to_string(),
            runtime_name: RUNTIME_NAME.to_string(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
            runtime_api_version: RUNTIME_API_VERSION.to_string(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        let req = request.into_inner();
        let md = req
            .config
            .as_ref()
            .and_then(|c| c.metadata.clone())
            .unwrap_or_default();
        let span = tracing::info_span!("RunPodSandbox", pod = %md.name, namespace = %md.namespace, uid = %md.uid, attempt = md.attempt);
        let id = self
            .sandboxes
            .run(req.config, &req.runtime_handler)
            .instrument(span)
            .await?;
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        let span = tracing::info_span!("StopPodSandbox", pod_id = %id);
        async {
            if let Some(pod) = self.sandboxes.get(&id).await? {
                self.containers.stop_pod(&pod.id).await?;
            }
            self.sandboxes.stop(&id).await
        }
        .instrument(span)
        .await?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        let span = tracing::info_span!("RemovePodSandbox", pod_id = %id);
        async {
            if let Some(pod) = self.sandboxes.get(&id).await? {
                self.containers.remove_pod(&pod.id).await?;
            }
            self.sandboxes.remove(&id).await
        }
        .instrument(span)
        .await?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::debug_span!("PodSandboxStatus", pod_id = %req.pod_sandbox_id);
        let resp = self
            .sandboxes
            .status(&req.pod_sandbox_id, req.verbose)
            .instrument(span)
            .await?;
        Ok(Response::new(resp))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        let items = self.sandboxes.list(request.into_inner().filter).await?;
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn status(
        &self,
        request: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        let verbose = request.into_inner().verbose;
        let default = &self.config.default_runtime;
        let runtime_ready = self
            .config
            .runtimes
            .get(default)
            .and_then(|h| find_binary(&h.path));
        let runtime = match (&runtime_ready, self.config.runtimes.get(default)) {
            (Some(_), _) => condition("RuntimeReady", true, "", ""),
            (None, handler) => condition(
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
        let net_status = self.network.status();
        let network = condition(
            "NetworkReady",
            net_status.ready,
            &net_status.reason,
            &net_status.message,
        );
        let no_features = Some(cri::RuntimeHandlerFeatures {
            recursive_read_only_mounts: false,
            user_namespaces: false,
        });
        let mut runtime_handlers = vec![cri::RuntimeHandler {
            name: String::new(),
            features: no_features,
        }];
        runtime_handlers.extend(self.config.runtimes.keys().map(|name| cri::RuntimeHandler {
            name: name.clone(),
            features: no_features,
        }));
        let mut info = HashMap::new();
        if verbose {
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
            let detail = serde_json::json!({
                "config": &*self.config,
                "cgroupDriver": format!("{:?}", self.config.cgroup_driver()).to_lowercase(),
                "networkBackend": self.network.name(),
                "runtimeHandlers": handlers,
            });
            info.insert("config".to_string(), detail.to_string());
        }
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![runtime, network],
            }),
            info,
            runtime_handlers,
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: false,
            }),
        }))
    }

    async fn runtime_config(
        &self,
        _request: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        let driver = match self.config.cgroup_driver() {
            CgroupDriver::Systemd => cri::CgroupDriver::Systemd,
            CgroupDriver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
        };
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }))
    }

    async fn update_runtime_config(
        &self,
        request: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        // The kubelet sends the pod CIDR here; the bridge backend (issue 5) will use it.
        // Until then there is nothing to update, which is the truth, not a fake.
        let cidr = request
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        tracing::info!(pod_cidr = %cidr, "UpdateRuntimeConfig: no network backend uses the pod CIDR yet");
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        _request: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Err(Status::unimplemented(
            "GetContainerEvents is not implemented in crius yet",
        ))
    }

    async fn create_container(
        &self,
        request: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        let req = request.into_inner();
        let name = req
            .config
            .as_ref()
            .and_then(|c| c.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let span =
            tracing::info_span!("CreateContainer", pod_id = %req.pod_sandbox_id, name = %name);
        if req.pod_sandbox_id.is_empty() {
            return Err(CriError::invalid("pod_sandbox_id", "must not be empty").into());
        }
        let id = self
            .containers
            .create(&req.pod_sandbox_id, req.config, req.sandbox_config)
            .instrument(span)
            .await?;
        Ok(Response::new(cri::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        request: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        let span = tracing::info_span!("StartContainer", container_id = %id);
        self.containers.start(&id).instrument(span).await?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("StopContainer", container_id = %req.container_id);
        self.containers
            .stop(&req.container_id, req.timeout)
            .instrument(span)
            .await?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        let span = tracing::info_span!("RemoveContainer", container_id = %id);
        self.containers.remove(&id).instrument(span).await?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        let containers = self.containers.list(request.into_inner().filter).await?;
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        let req = request.into_inner();
        let resp = self
            .containers
            .status(&req.container_id, req.verbose)
            .await?;
        Ok(Response::new(resp))
    }

    async fn update_container_resources(
        &self,
        request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        let req = request.into_inner();
        let span =
            tracing::info_span!("UpdateContainerResources", container_id = %req.container_id);
        self.containers
            .update(&req.container_id, req.linux)
            .instrument(span)
            .await?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        request: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        let id = request.into_inner().container_id;
        self.containers.reopen_log(&id).await?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        request: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("ExecSync", container_id = %req.container_id);
        let resp = self
            .containers
            .exec_sync(&req.container_id, req.cmd, req.timeout)
            .instrument(span)
            .await?;
        Ok(Response::new(resp))
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        let pod = self
            .sandboxes
            .get(&id)
            .await?
            .ok_or_else(|| CriError::NotFound(format!("pod sandbox {id:?} not found")))?;
        let stats = self.containers.pod_stats(&pod).await?;
        Ok(Response::new(cri::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        let f = request.into_inner().filter.unwrap_or_default();
        let pods = self
            .sandboxes
            .list(Some(cri::PodSandboxFilter {
                id: f.id,
                state: None,
                label_selector: f.label_selector,
            }))
            .await?;
        let mut stats = Vec::new();
        for p in pods {
            if let Some(pod) = self.sandboxes.get(&p.id).await? {
                stats.push(self.containers.pod_stats(&pod).await?);
            }
        }
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
    }

    async fn container_stats(
        &self,
        request: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        let id = request.into_inner().container_id;
        let stats = self.containers.stats(&id).await?;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        let stats = self
            .containers
            .list_stats(request.into_inner().filter)
            .await?;
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    async fn exec(
        &self,
        request: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        let req = request.into_inner();
        if req.cmd.is_empty() {
            return Err(CriError::invalid("cmd", "must not be empty").into());
        }
        check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
        let c = self.containers.running(&req.container_id).await?;
        let url = self
            .streaming
            .url(crate::streaming::Request::Exec(cri::ExecRequest {
                container_id: c.id,
                ..req
            }))?;
        Ok(Response::new(cri::ExecResponse { url }))
    }

    async fn attach(
        &self,
        request: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        let req = request.into_inner();
        check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
        let c = self.containers.running(&req.container_id).await?;
        let url = self
            .streaming
            .url(crate::streaming::Request::Attach(cri::AttachRequest {
                container_id: c.id,
                ..req
            }))?;
        Ok(Response::new(cri::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        request: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        let req = request.into_inner();
        if req.pod_sandbox_id.is_empty() {
            return Err(CriError::invalid("pod_sandbox_id", "must not be empty").into());
        }
        for (i, p) in req.port.iter().enumerate() {
            if !(1..=65535).contains(p) {
                return Err(
                    CriError::invalid(format!("port[{i}]"), format!("{p} is not 1-65535")).into(),
                );
            }
        }
        let pod = self
            .sandboxes
            .get(&req.pod_sandbox_id)
            .await?
            .ok_or_else(|| {
                CriError::NotFound(format!("pod sandbox {:?} not found", req.pod_sandbox_id))
            })?;
        if pod.state != crius_store::PodState::Ready {
            return Err(CriError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            ))
            .into());
        }
        let url = self.streaming.url(crate::streaming::Request::PortForward(
            cri::PortForwardRequest {
                pod_sandbox_id: pod.id,
                ..req
            },
        ))?;
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    unimplemented_rpcs! {
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse, "CheckpointContainer";
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse, "ListMetricDescriptors";
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse, "ListPodSandboxMetrics";
    }
}

/// The image service.
pub struct ImageApi {
    pub config: Arc<Config>,
    pub images: Arc<crius_images::Images>,
}

#[tonic::async_trait]
impl ImageService for ImageApi {
    async fn list_images(
        &self,
        request: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let images = self
            .images
            .list(request.into_inner().filter)
            .await
            .map_err(CriError::from)?;
        Ok(Response::new(cri::ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        request: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let req = request.into_inner();
        let spec = req.image.map(|i| i.image).unwrap_or_default();
        let span = tracing::debug_span!("ImageStatus", image = %spec);
        let _enter = span.enter();
        if spec.is_empty() {
            return Err(CriError::invalid("image.image", "must not be empty").into());
        }
        let Some(img) = self.images.find(&spec).await.map_err(CriError::from)? else {
            return Ok(Response::new(cri::ImageStatusResponse {
                image: None,
                info: HashMap::new(),
            }));
        };
        let mut info = HashMap::new();
        if req.verbose {
            let detail = self
                .images
                .status_detail(&img)
                .await
                .map_err(CriError::from)?;
            info.insert("info".to_string(), detail.to_string());
        }
        Ok(Response::new(cri::ImageStatusResponse {
            image: Some(self.images.to_cri(&img).await.map_err(CriError::from)?),
            info,
        }))
    }

    async fn pull_image(
        &self,
        request: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        let req = request.into_inner();
        let spec = req.image.map(|i| i.image).unwrap_or_default();
        let span = tracing::info_span!("PullImage", image = %spec);
        if spec.is_empty() {
            return Err(CriError::invalid("image.image", "must not be empty").into());
        }
        let id = self
            .images
            .pull(&spec, req.auth.as_ref())
            .instrument(span)
            .await
            .map_err(CriError::from)?;
        Ok(Response::new(cri::PullImageResponse { image_ref: id }))
    }

    async fn remove_image(
        &self,
        request: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let spec = request
            .into_inner()
            .image
            .map(|i| i.image)
            .unwrap_or_default();
        let span = tracing::info_span!("RemoveImage", image = %spec);
        if spec.is_empty() {
            return Err(CriError::invalid("image.image", "must not be empty").into());
        }
        self.images
            .remove(&spec)
            .instrument(span)
            .await
            .map_err(CriError::from)?;
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let resp = self
            .images
            .fs_info(self.config.state_dir.clone())
            .await
            .map_err(CriError::from)?;
        Ok(Response::new(resp))
    }
}

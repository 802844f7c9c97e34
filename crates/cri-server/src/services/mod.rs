//! The CRI v1 gRPC services. Every RPC goes through [`call`]: a tracing span naming
//! the RPC and the pod, container or image it is about, the one conversion of
//! [`CriError`] to a gRPC status, and a [`CallObserver`] told each call's latency and
//! outcome. One file per RPC group holds what each RPC does: its validation
//! (`crate::validate`) and the manager calls, so from an RPC's name a reader reaches
//! both in one hop:
//!
//! | RPCs | file |
//! |---|---|
//! | Version, Status, RuntimeConfig, UpdateRuntimeConfig | `runtime_info.rs` |
//! | RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox | `sandboxes.rs` |
//! | CreateContainer, StartContainer, StopContainer, RemoveContainer, ListContainers, ContainerStatus, UpdateContainerResources, ReopenContainerLog | `containers.rs` |
//! | ExecSync, Exec, Attach, PortForward | `exec.rs` |
//! | ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats | `stats.rs` |
//! | ListImages, ImageStatus, PullImage, RemoveImage, ImageFsInfo | `images.rs` |
//!
//! The RPCs crius does not serve (yet) answer `Unimplemented`, never a fake success.

mod containers;
mod exec;
mod images;
mod runtime_info;
mod sandboxes;
mod stats;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crius_cni::NetworkBackend;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

use crate::config::Config;
use crate::container::Containers;
use crate::error::{CriError, CriResult, status_message};
use crate::sandbox::Sandboxes;
use crius_images::Images;

/// Told the latency and outcome of every CRI call (the metrics endpoint implements
/// it).
pub trait CallObserver: Send + Sync {
    fn observe(&self, rpc: &'static str, elapsed: Duration, code: Code);
}

/// An observer that records nothing.
pub struct NoObserver;

impl CallObserver for NoObserver {
    fn observe(&self, _rpc: &'static str, _elapsed: Duration, _code: Code) {}
}

/// What a call is about, for its span.
#[derive(Debug, Default)]
pub struct Subject {
    pub pod_id: Option<String>,
    pub container_id: Option<String>,
    pub image: Option<String>,
}

impl Subject {
    fn pod(id: &str) -> Subject {
        Subject {
            pod_id: Some(id.to_string()),
            ..Subject::default()
        }
    }

    fn container(id: &str) -> Subject {
        Subject {
            container_id: Some(id.to_string()),
            ..Subject::default()
        }
    }

    fn image(spec: Option<&cri::ImageSpec>) -> Subject {
        Subject {
            image: Some(spec.map(|s| s.image.clone()).unwrap_or_default()),
            ..Subject::default()
        }
    }

    fn none() -> Subject {
        Subject::default()
    }
}

/// Runs one CRI call: its span, its outcome reported to `observer`, its error turned
/// into a status (and logged, with the whole cause chain).
pub async fn call<T>(
    observer: &dyn CallObserver,
    rpc: &'static str,
    subject: Subject,
    work: impl Future<Output = CriResult<T>>,
) -> Result<Response<T>, Status> {
    let span = tracing::info_span!(
        "cri",
        rpc,
        pod = tracing::field::Empty,
        pod_id = subject.pod_id.as_deref(),
        container_id = subject.container_id.as_deref(),
        image = subject.image.as_deref(),
    );
    let start = Instant::now();
    let result = work.instrument(span.clone()).await;
    let code = result.as_ref().map_or_else(CriError::code, |_| Code::Ok);
    observer.observe(rpc, start.elapsed(), code);
    match result {
        Ok(v) => Ok(Response::new(v)),
        Err(e) => {
            let message = status_message(&e);
            span.in_scope(|| match code {
                Code::NotFound | Code::AlreadyExists | Code::InvalidArgument => {
                    tracing::debug!(?code, error = %message, "call refused")
                }
                _ => tracing::warn!(?code, error = %message, "call failed"),
            });
            Err(Status::new(code, message))
        }
    }
}

/// Shared daemon state behind the runtime service.
pub struct Cri {
    pub config: Arc<Config>,
    pub sandboxes: Arc<Sandboxes>,
    pub containers: Arc<Containers>,
    pub network: Arc<dyn NetworkBackend>,
    pub streaming: Arc<crate::streaming::StreamServer>,
    pub observer: Arc<dyn CallObserver>,
}

/// The image service.
pub struct ImageApi {
    pub config: Arc<Config>,
    pub images: Arc<Images>,
    pub observer: Arc<dyn CallObserver>,
}

type EventStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>>;

/// The gRPC trait impls: each RPC is one line naming its handler (a method of the
/// service in its group's file) and what the call is about.
macro_rules! serve {
    (
        impl $trait:ident for $ty:ty {
            $( $method:ident($req:ident) -> $resp:ident, $rpc:literal, |$r:ident| $subject:expr; )*
        }
        $($extra:item)*
    ) => {
        #[tonic::async_trait]
        impl $trait for $ty {
            $(
                async fn $method(
                    &self,
                    request: Request<cri::$req>,
                ) -> Result<Response<cri::$resp>, Status> {
                    let $r = request.into_inner();
                    let subject = {
                        let _ = &$r;
                        $subject
                    };
                    call(&*self.observer, $rpc, subject, self.$method($r)).await
                }
            )*
            $($extra)*
        }
    };
}

serve! {
    impl RuntimeService for Cri {
        version(VersionRequest) -> VersionResponse, "Version", |r| Subject::none();
        status(StatusRequest) -> StatusResponse, "Status", |r| Subject::none();
        runtime_config(RuntimeConfigRequest) -> RuntimeConfigResponse, "RuntimeConfig", |r| Subject::none();
        update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse, "UpdateRuntimeConfig", |r| Subject::none();
        run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse, "RunPodSandbox", |r| Subject::none();
        stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse, "StopPodSandbox", |r| Subject::pod(&r.pod_sandbox_id);
        remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse, "RemovePodSandbox", |r| Subject::pod(&r.pod_sandbox_id);
        pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse, "PodSandboxStatus", |r| Subject::pod(&r.pod_sandbox_id);
        list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse, "ListPodSandbox", |r| Subject::none();
        create_container(CreateContainerRequest) -> CreateContainerResponse, "CreateContainer", |r| Subject::pod(&r.pod_sandbox_id);
        start_container(StartContainerRequest) -> StartContainerResponse, "StartContainer", |r| Subject::container(&r.container_id);
        stop_container(StopContainerRequest) -> StopContainerResponse, "StopContainer", |r| Subject::container(&r.container_id);
        remove_container(RemoveContainerRequest) -> RemoveContainerResponse, "RemoveContainer", |r| Subject::container(&r.container_id);
        list_containers(ListContainersRequest) -> ListContainersResponse, "ListContainers", |r| Subject::none();
        container_status(ContainerStatusRequest) -> ContainerStatusResponse, "ContainerStatus", |r| Subject::container(&r.container_id);
        update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse, "UpdateContainerResources", |r| Subject::container(&r.container_id);
        reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse, "ReopenContainerLog", |r| Subject::container(&r.container_id);
        exec_sync(ExecSyncRequest) -> ExecSyncResponse, "ExecSync", |r| Subject::container(&r.container_id);
        exec(ExecRequest) -> ExecResponse, "Exec", |r| Subject::container(&r.container_id);
        attach(AttachRequest) -> AttachResponse, "Attach", |r| Subject::container(&r.container_id);
        port_forward(PortForwardRequest) -> PortForwardResponse, "PortForward", |r| Subject::pod(&r.pod_sandbox_id);
        container_stats(ContainerStatsRequest) -> ContainerStatsResponse, "ContainerStats", |r| Subject::container(&r.container_id);
        list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse, "ListContainerStats", |r| Subject::none();
        pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse, "PodSandboxStats", |r| Subject::pod(&r.pod_sandbox_id);
        list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse, "ListPodSandboxStats", |r| Subject::none();
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse, "CheckpointContainer", |r| Subject::container(&r.container_id);
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse, "ListMetricDescriptors", |r| Subject::none();
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse, "ListPodSandboxMetrics", |r| Subject::none();
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
}

serve! {
    impl ImageService for ImageApi {
        list_images(ListImagesRequest) -> ListImagesResponse, "ListImages", |r| Subject::image(r.filter.as_ref().and_then(|f| f.image.as_ref()));
        image_status(ImageStatusRequest) -> ImageStatusResponse, "ImageStatus", |r| Subject::image(r.image.as_ref());
        pull_image(PullImageRequest) -> PullImageResponse, "PullImage", |r| Subject::image(r.image.as_ref());
        remove_image(RemoveImageRequest) -> RemoveImageResponse, "RemoveImage", |r| Subject::image(r.image.as_ref());
        image_fs_info(ImageFsInfoRequest) -> ImageFsInfoResponse, "ImageFsInfo", |r| Subject::none();
    }
}

/// The answer of an RPC crius does not serve.
fn unimplemented<T>(rpc: &str) -> CriResult<T> {
    Err(CriError::Unimplemented(format!(
        "{rpc} is not implemented in crius yet"
    )))
}

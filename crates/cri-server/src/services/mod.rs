//! The CRI v1 gRPC services. Every RPC goes through [`call`]: a tracing span naming
//! the RPC and the pod, container or image it is about, the one conversion of
//! [`CriError`] to a gRPC status, and a [`CallObserver`] told each call's latency and
//! outcome.
//!
//! The `serve!` tables below give, for each RPC, what it is about and its handler:
//! an RPC that is one manager call is written in the table; the others call a
//! handler in their group's file, which holds the validation (`crate::validate`) and
//! the manager calls. From an RPC's name a reader reaches both in one hop:
//!
//! | RPCs with a handler of their own | file |
//! |---|---|
//! | Version, Status, RuntimeConfig, UpdateRuntimeConfig | `runtime_info.rs` |
//! | RunPodSandbox, StopPodSandbox, RemovePodSandbox | `sandboxes.rs` |
//! | CreateContainer | `containers.rs` |
//! | Exec, Attach, PortForward | `exec.rs` |
//! | ListPodSandboxStats, StreamPodSandboxStats | `stats.rs` |
//! | ImageStatus (and the image name check of every image RPC) | `images.rs` |
//!
//! The Stream* RPCs (below the tables) share their List twin's code and send its
//! answer in [`STREAM_CHUNK`]-item messages. The RPCs crius does not serve (yet)
//! answer `Unimplemented`, never a fake success.

mod containers;
mod exec;
mod images;
mod runtime_info;

pub(crate) use runtime_info::runtime_ready;
mod sandboxes;
mod stats;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crius_cni::NetworkBackend;
use crius_cri_api::v1 as cri;
use crius_cri_api::v1::image_service_server::ImageService;
use crius_cri_api::v1::runtime_service_server::RuntimeService;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

use crate::config::Config;
use crate::container::Containers;
use crate::error::{CriError, CriResult, status_message};
use crate::sandbox::Sandboxes;
use crius_images::Images;
use images::named;

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
    caller: Option<opentelemetry::Context>,
    work: impl Future<Output = CriResult<T>>,
) -> Result<Response<T>, Status> {
    // `otel.*` fields: the exported span is named after the RPC, a server span,
    // marked an error when the call fails (see crate::otel).
    let span = tracing::info_span!(
        "cri",
        rpc,
        otel.name = rpc,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        pod = tracing::field::Empty,
        pod_id = subject.pod_id.as_deref(),
        container_id = subject.container_id.as_deref(),
        image = subject.image.as_deref(),
    );
    if let Some(cx) = caller {
        // Fails only when no export runs (no OpenTelemetry layer): nothing to join.
        let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(&span, cx);
    }
    let start = Instant::now();
    let result = work.instrument(span.clone()).await;
    let code = result.as_ref().map_or_else(CriError::code, |_| Code::Ok);
    observer.observe(rpc, start.elapsed(), code);
    match result {
        Ok(v) => Ok(Response::new(v)),
        Err(e) => {
            let message = status_message(&e);
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", message.as_str());
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

/// The answer of a Stream* RPC: its List twin's items, [`STREAM_CHUNK`] per message.
type Chunks<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// Items per message of a Stream* RPC: far below the 16 MiB message limit for any
/// item crius produces, few messages for a node's usual few hundred.
pub const STREAM_CHUNK: usize = 100;

/// Splits a List answer into the messages of its Stream twin, each item once, in
/// order; no items, no message (the stream just ends).
fn chunks<I, T>(items: Response<Vec<I>>, wrap: fn(Vec<I>) -> T) -> Response<Chunks<T>>
where
    I: Send + 'static,
    T: Send + 'static,
{
    let mut items = items.into_inner().into_iter().peekable();
    let mut messages = Vec::new();
    while items.peek().is_some() {
        messages.push(Ok(wrap(items.by_ref().take(STREAM_CHUNK).collect())));
    }
    Response::new(Box::pin(tokio_stream::iter(messages)))
}

type EventStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>>;

/// The gRPC trait impls, one line per RPC: its handler (`|s, r|` are the service and
/// the request) and what the call is about. An RPC that is one manager call is
/// written here; the others call their handler in the group's file. The Stream* RPCs
/// (after `@streams`) name their List twin's items and the response field they go in.
macro_rules! serve {
    (
        impl $trait:ident for $ty:ty {
            $( $method:ident($req:ident) -> $resp:ident, $rpc:literal,
               |$s:ident, $r:ident| $subject:expr => $body:expr; )*
            $( @streams {
                $( $smethod:ident($sreq:ident) -> $stream:ident of $sresp:ident { $field:ident },
                   $srpc:literal, |$ss:ident, $sr:ident| $ssubject:expr => $items:expr; )*
            } )?
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
                    let $s = self;
                    let caller = crate::otel::caller_trace(request.metadata());
                    let $r = request.into_inner();
                    let subject = {
                        let _ = (&$s, &$r);
                        $subject
                    };
                    call(&*$s.observer, $rpc, subject, caller, async move { $body }).await
                }
            )*
            $($(
                type $stream = Chunks<cri::$sresp>;

                async fn $smethod(
                    &self,
                    request: Request<cri::$sreq>,
                ) -> Result<Response<Self::$stream>, Status> {
                    let $ss = self;
                    let caller = crate::otel::caller_trace(request.metadata());
                    let $sr = request.into_inner();
                    let subject = {
                        let _ = (&$ss, &$sr);
                        $ssubject
                    };
                    let items = call(&*$ss.observer, $srpc, subject, caller, async move { $items }).await?;
                    Ok(chunks(items, |$field| cri::$sresp { $field }))
                }
            )*)?
            $($extra)*
        }
    };
}

serve! {
    impl RuntimeService for Cri {
        version(VersionRequest) -> VersionResponse, "Version",
            |s, r| Subject::none() => Ok(s.version());
        status(StatusRequest) -> StatusResponse, "Status",
            |s, r| Subject::none() => Ok(s.status(r.verbose));
        runtime_config(RuntimeConfigRequest) -> RuntimeConfigResponse, "RuntimeConfig",
            |s, r| Subject::none() => Ok(s.runtime_config());
        update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse, "UpdateRuntimeConfig",
            |s, r| Subject::none() => Ok(s.update_runtime_config(r));
        run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse, "RunPodSandbox",
            |s, r| Subject::none() => s.run_pod_sandbox(r).await;
        stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse, "StopPodSandbox",
            |s, r| Subject::pod(&r.pod_sandbox_id) => {
                // The pod's containers first, then the pod.
                s.containers.stop_pod_sandbox(&r.pod_sandbox_id).await?;
                Ok(cri::StopPodSandboxResponse {})
            };
        remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse, "RemovePodSandbox",
            |s, r| Subject::pod(&r.pod_sandbox_id) => {
                s.containers.remove_pod_sandbox(&r.pod_sandbox_id).await?;
                Ok(cri::RemovePodSandboxResponse {})
            };
        pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse, "PodSandboxStatus",
            |s, r| Subject::pod(&r.pod_sandbox_id) => s.sandboxes.status(&r.pod_sandbox_id, r.verbose).await;
        list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse, "ListPodSandbox",
            |s, r| Subject::none() => Ok(cri::ListPodSandboxResponse { items: s.sandboxes.list(r.filter).await? });
        create_container(CreateContainerRequest) -> CreateContainerResponse, "CreateContainer",
            |s, r| Subject::pod(&r.pod_sandbox_id) => s.create_container(r).await;
        start_container(StartContainerRequest) -> StartContainerResponse, "StartContainer",
            |s, r| Subject::container(&r.container_id) => s.containers.start(&r.container_id).await.map(|()| cri::StartContainerResponse {});
        stop_container(StopContainerRequest) -> StopContainerResponse, "StopContainer",
            |s, r| Subject::container(&r.container_id) => s.containers.stop(&r.container_id, r.timeout).await.map(|()| cri::StopContainerResponse {});
        remove_container(RemoveContainerRequest) -> RemoveContainerResponse, "RemoveContainer",
            |s, r| Subject::container(&r.container_id) => s.containers.remove(&r.container_id).await.map(|()| cri::RemoveContainerResponse {});
        list_containers(ListContainersRequest) -> ListContainersResponse, "ListContainers",
            |s, r| Subject::none() => Ok(cri::ListContainersResponse { containers: s.containers.list(r.filter).await? });
        container_status(ContainerStatusRequest) -> ContainerStatusResponse, "ContainerStatus",
            |s, r| Subject::container(&r.container_id) => s.containers.status(&r.container_id, r.verbose).await;
        update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse, "UpdateContainerResources",
            |s, r| Subject::container(&r.container_id) => s.containers.update(&r.container_id, r.linux).await.map(|()| cri::UpdateContainerResourcesResponse {});
        reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse, "ReopenContainerLog",
            |s, r| Subject::container(&r.container_id) => s.containers.reopen_log(&r.container_id).await.map(|()| cri::ReopenContainerLogResponse {});
        exec_sync(ExecSyncRequest) -> ExecSyncResponse, "ExecSync",
            |s, r| Subject::container(&r.container_id) => s.containers.exec_sync(&r.container_id, r.cmd, r.timeout).await;
        exec(ExecRequest) -> ExecResponse, "Exec",
            |s, r| Subject::container(&r.container_id) => s.exec(r).await;
        attach(AttachRequest) -> AttachResponse, "Attach",
            |s, r| Subject::container(&r.container_id) => s.attach(r).await;
        port_forward(PortForwardRequest) -> PortForwardResponse, "PortForward",
            |s, r| Subject::pod(&r.pod_sandbox_id) => s.port_forward(r).await;
        container_stats(ContainerStatsRequest) -> ContainerStatsResponse, "ContainerStats",
            |s, r| Subject::container(&r.container_id) => Ok(cri::ContainerStatsResponse { stats: Some(s.containers.stats(&r.container_id).await?) });
        list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse, "ListContainerStats",
            |s, r| Subject::none() => Ok(cri::ListContainerStatsResponse { stats: s.containers.list_stats(r.filter).await? });
        pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse, "PodSandboxStats",
            |s, r| Subject::pod(&r.pod_sandbox_id) => {
                let pod = s.sandboxes.must(&r.pod_sandbox_id).await?;
                Ok(cri::PodSandboxStatsResponse { stats: Some(s.containers.pod_stats(&pod).await?) })
            };
        list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse, "ListPodSandboxStats",
            |s, r| Subject::none() => Ok(cri::ListPodSandboxStatsResponse { stats: s.list_pod_sandbox_stats(r.filter).await? });
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse, "CheckpointContainer",
            |s, r| Subject::container(&r.container_id) => unimplemented("CheckpointContainer");
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse, "ListMetricDescriptors",
            |s, r| Subject::none() => Ok(cri::ListMetricDescriptorsResponse { descriptors: crate::container::metric_descriptors() });
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse, "ListPodSandboxMetrics",
            |s, r| Subject::none() => Ok(cri::ListPodSandboxMetricsResponse { pod_metrics: s.containers.pod_sandbox_metrics().await? });
        checkpoint_pod(CheckpointPodRequest) -> CheckpointPodResponse, "CheckpointPod",
            |s, r| Subject::pod(&r.pod_sandbox_id) => unimplemented("CheckpointPod");
        restore_pod(RestorePodRequest) -> RestorePodResponse, "RestorePod",
            |s, r| Subject::none() => unimplemented("RestorePod");
        update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest) -> UpdatePodSandboxResourcesResponse, "UpdatePodSandboxResources",
            |s, r| Subject::pod(&r.pod_sandbox_id) => Err(CriError::Unimplemented(
                "UpdatePodSandboxResources is not implemented in crius yet: a pod's cgroup keeps \
                 the limits it was created with; containers are resized with UpdateContainerResources".into(),
            ));
        @streams {
            stream_pod_sandboxes(StreamPodSandboxesRequest) -> StreamPodSandboxesStream
                of StreamPodSandboxesResponse { pod_sandboxes }, "StreamPodSandboxes",
                |s, r| Subject::none() => s.sandboxes.list(r.filter).await;
            stream_containers(StreamContainersRequest) -> StreamContainersStream
                of StreamContainersResponse { containers }, "StreamContainers",
                |s, r| Subject::none() => s.containers.list(r.filter).await;
            stream_container_stats(StreamContainerStatsRequest) -> StreamContainerStatsStream
                of StreamContainerStatsResponse { container_stats }, "StreamContainerStats",
                |s, r| Subject::none() => s.containers.list_stats(r.filter).await;
            stream_pod_sandbox_stats(StreamPodSandboxStatsRequest) -> StreamPodSandboxStatsStream
                of StreamPodSandboxStatsResponse { pod_sandbox_stats }, "StreamPodSandboxStats",
                |s, r| Subject::none() => s.list_pod_sandbox_stats(r.filter).await;
            stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest) -> StreamPodSandboxMetricsStream
                of StreamPodSandboxMetricsResponse { pod_sandbox_metrics }, "StreamPodSandboxMetrics",
                |s, r| Subject::none() => s.containers.pod_sandbox_metrics().await;
        }
    }

    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        _request: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        let sub = self.sandboxes.events().subscribe();
        tracing::debug!(rpc = "GetContainerEvents", "subscribed");
        let stream = futures_util::stream::unfold(sub, |mut sub| async move {
            let item = match sub.next().await? {
                Ok(ev) => Ok(ev),
                Err(o) => Err(Status::resource_exhausted(format!(
                    "this GetContainerEvents subscriber fell {} events behind and was dropped; \
                     subscribe again and list the pods and containers",
                    o.buffer
                ))),
            };
            Some((item, sub))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

serve! {
    impl ImageService for ImageApi {
        list_images(ListImagesRequest) -> ListImagesResponse, "ListImages",
            |s, r| Subject::image(r.filter.as_ref().and_then(|f| f.image.as_ref()))
            => Ok(cri::ListImagesResponse { images: s.images.list(r.filter).await? });
        image_status(ImageStatusRequest) -> ImageStatusResponse, "ImageStatus",
            |s, r| Subject::image(r.image.as_ref()) => s.image_status(r).await;
        pull_image(PullImageRequest) -> PullImageResponse, "PullImage",
            |s, r| Subject::image(r.image.as_ref()) => {
                let image_ref = s.images.pull(&named(r.image)?, r.auth.as_ref()).await?;
                Ok(cri::PullImageResponse { image_ref })
            };
        remove_image(RemoveImageRequest) -> RemoveImageResponse, "RemoveImage",
            |s, r| Subject::image(r.image.as_ref()) => {
                s.images.remove(&named(r.image)?).await?;
                Ok(cri::RemoveImageResponse {})
            };
        image_fs_info(ImageFsInfoRequest) -> ImageFsInfoResponse, "ImageFsInfo",
            |s, r| Subject::none() => Ok(s.images.fs_info(s.config.state_dir.clone()).await?);
        @streams {
            stream_images(StreamImagesRequest) -> StreamImagesStream
                of StreamImagesResponse { images }, "StreamImages",
                |s, r| Subject::image(r.filter.as_ref().and_then(|f| f.image.as_ref()))
                => Ok(s.images.list(r.filter).await?);
        }
    }
}

/// The answer of an RPC crius does not serve.
fn unimplemented<T>(rpc: &str) -> CriResult<T> {
    Err(CriError::Unimplemented(format!(
        "{rpc} is not implemented in crius yet"
    )))
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    async fn sizes(n: usize) -> Vec<usize> {
        let items: Vec<u32> = (0..n as u32).collect();
        let stream = chunks(Response::new(items), |images| images).into_inner();
        let got: Vec<Vec<u32>> = stream.map(|m| m.unwrap()).collect().await;
        let flat: Vec<u32> = got.iter().flatten().copied().collect();
        assert_eq!(
            flat,
            (0..n as u32).collect::<Vec<_>>(),
            "each item once, in order"
        );
        got.iter().map(Vec::len).collect()
    }

    #[tokio::test]
    async fn stream_answers_are_list_answers_in_chunks() {
        assert_eq!(sizes(0).await, Vec::<usize>::new());
        assert_eq!(sizes(1).await, vec![1]);
        assert_eq!(sizes(STREAM_CHUNK).await, vec![STREAM_CHUNK]);
        assert_eq!(
            sizes(2 * STREAM_CHUNK + 7).await,
            vec![STREAM_CHUNK, STREAM_CHUNK, 7]
        );
    }
}

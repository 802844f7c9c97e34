//! One CRI call each, over a client the caller holds: what tests and benchmarks
//! call again and again, without a [`Fixture`](crate::fixture::Fixture) to track it.
//! Calls whose failure a test may assert on return the status; the rest panic.

use anyhow::{Result, anyhow};
use crius_cri_api::v1 as cri;
use crius_cri_api::v1::image_service_client::ImageServiceClient;
use crius_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

/// The runtime service client tests hold.
pub type Rt = RuntimeServiceClient<Channel>;
/// The image service client tests hold.
pub type Img = ImageServiceClient<Channel>;

/// RunPodSandbox with the default handler.
pub async fn run_pod(
    rt: &mut Rt,
    config: impl Into<cri::PodSandboxConfig>,
) -> Result<String, tonic::Status> {
    run_pod_on(rt, "", config).await
}

/// RunPodSandbox with the runtime `handler` ("" for the default).
pub async fn run_pod_on(
    rt: &mut Rt,
    handler: &str,
    config: impl Into<cri::PodSandboxConfig>,
) -> Result<String, tonic::Status> {
    rt.run_pod_sandbox(cri::RunPodSandboxRequest {
        config: Some(config.into()),
        runtime_handler: handler.to_string(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

/// PullImage; returns the image ref (id).
pub async fn pull_image(
    img: &mut Img,
    image: &str,
    auth: Option<cri::AuthConfig>,
) -> Result<String, tonic::Status> {
    img.pull_image(cri::PullImageRequest {
        image: Some(image_spec(image)),
        auth,
        sandbox_config: None,
    })
    .await
    .map(|r| r.into_inner().image_ref)
}

/// An image spec naming `image`.
pub fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

/// ImageStatus: the image, if the daemon has one by that name.
pub async fn image_status(img: &mut Img, image: &str) -> Option<cri::Image> {
    img.image_status(cri::ImageStatusRequest {
        image: Some(image_spec(image)),
        verbose: false,
    })
    .await
    .expect("ImageStatus")
    .into_inner()
    .image
}

/// Removes an image by its id, as the kubelet does: every reference to it goes.
pub async fn remove_image_by_id(img: &mut Img, image: &str) {
    let id = image_status(img, image).await.expect("the image exists").id;
    img.remove_image(cri::RemoveImageRequest {
        image: Some(image_spec(&id)),
    })
    .await
    .expect("RemoveImage");
}

/// Stops and removes a pod.
pub async fn remove_pod(rt: &mut Rt, id: &str) -> Result<()> {
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id.to_string(),
    })
    .await
    .map_err(|s| anyhow!("StopPodSandbox {id}: {s}"))?;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.to_string(),
    })
    .await
    .map_err(|s| anyhow!("RemovePodSandbox {id}: {s}"))?;
    Ok(())
}

/// PodSandboxStatus.
pub async fn pod_status(
    rt: &mut Rt,
    id: &str,
    verbose: bool,
) -> Result<cri::PodSandboxStatusResponse, tonic::Status> {
    rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
        pod_sandbox_id: id.to_string(),
        verbose,
    })
    .await
    .map(|r| r.into_inner())
}

/// The pod's status (PodSandboxStatus must succeed).
pub async fn pod_state(rt: &mut Rt, id: &str) -> cri::PodSandboxStatus {
    pod_status(rt, id, false)
        .await
        .expect("PodSandboxStatus")
        .status
        .expect("a pod status")
}

/// The pod's IP in a PodSandboxStatus answer.
pub fn pod_ip(resp: &cri::PodSandboxStatusResponse) -> String {
    resp.status
        .as_ref()
        .expect("a status")
        .network
        .as_ref()
        .expect("a pod network status")
        .ip
        .clone()
}

/// ListPodSandbox with a filter.
pub async fn list_pods(rt: &mut Rt, filter: Option<cri::PodSandboxFilter>) -> Vec<cri::PodSandbox> {
    rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter })
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
}

/// CreateContainer in `pod`, with the pod's config when the caller passes it (as the
/// kubelet does).
pub async fn create_container(
    rt: &mut Rt,
    pod: &str,
    config: impl Into<cri::ContainerConfig>,
    sandbox_config: Option<cri::PodSandboxConfig>,
) -> Result<String, tonic::Status> {
    rt.create_container(cri::CreateContainerRequest {
        pod_sandbox_id: pod.to_string(),
        config: Some(config.into()),
        sandbox_config,
    })
    .await
    .map(|r| r.into_inner().container_id)
}

/// StartContainer.
pub async fn start_container(rt: &mut Rt, id: &str) -> Result<(), tonic::Status> {
    rt.start_container(cri::StartContainerRequest {
        container_id: id.to_string(),
    })
    .await
    .map(|_| ())
}

/// ListContainers with a filter.
pub async fn list_containers(
    rt: &mut Rt,
    filter: Option<cri::ContainerFilter>,
) -> Vec<cri::Container> {
    rt.list_containers(cri::ListContainersRequest { filter })
        .await
        .expect("ListContainers")
        .into_inner()
        .containers
}

/// Polls ContainerStatus of `id` (up to [`DEADLINE`](crate::DEADLINE)) until `done`
/// holds for it; returns that status. `what` names the wait in a timeout.
pub async fn status_when(
    rt: &Rt,
    id: &str,
    what: &str,
    done: impl Fn(&cri::ContainerStatus) -> bool,
) -> cri::ContainerStatus {
    let done = &done;
    crate::eventually(crate::DEADLINE, what, || {
        let mut rt = rt.clone();
        let id = id.to_string();
        async move {
            let st = rt
                .container_status(cri::ContainerStatusRequest {
                    container_id: id,
                    verbose: false,
                })
                .await
                .ok()?
                .into_inner()
                .status?;
            done(&st).then_some(st)
        }
    })
    .await
}

//! The Kubernetes Container Runtime Interface as crius speaks it: the prost
//! messages, tonic clients and tonic servers of package `runtime.v1`, generated
//! at build time from `proto/cri/runtime/v1/api.proto`.
//!
//! Paths follow the package: `crius_cri_api::v1::ListContainersRequest`,
//! `crius_cri_api::v1::runtime_service_server::RuntimeService`,
//! `crius_cri_api::v1::image_service_client::ImageServiceClient`.

/// Package `runtime.v1`: both services (`RuntimeService`, `ImageService`) and every message.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    rustdoc::all
)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

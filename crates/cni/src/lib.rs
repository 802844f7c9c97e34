//! Pod network setup and teardown for crius (see DESIGN.md, "Networking").
//!
//! criusd talks to a pod network only through [`NetworkBackend`]: `setup` after the
//! pod's network namespace is pinned, `teardown` before it is released. Teardown must
//! be idempotent and must work on a half-made pod, because it is also the undo of a
//! failed setup and the repair after a crash.
//!
//! The backend available today is [`LoopbackOnly`]: the namespace helper brings `lo`
//! up and nothing else is configured. The built-in bridge and the CNI plugin executor
//! (issue 5) will implement the same trait.
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;

/// A boxed future, so the trait stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a backend needs to know about a pod.
#[derive(Debug, Clone)]
pub struct PodNetworkRequest {
    /// The sandbox id.
    pub pod_id: String,
    /// Kubernetes pod name.
    pub name: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Kubernetes pod uid.
    pub uid: String,
    /// The pinned network namespace.
    pub netns: PathBuf,
}

/// The addresses a pod got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodNetworkStatus {
    /// The pod's addresses, primary first.
    pub ips: Vec<IpAddr>,
}

/// Whether new pods can get a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStatus {
    pub ready: bool,
    /// A CamelCase reason when not ready.
    pub reason: String,
    /// A human readable message when not ready.
    pub message: String,
}

/// A network setup failure.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network setup for pod {pod_id}: {message}")]
    Setup { pod_id: String, message: String },
    #[error("network teardown for pod {pod_id}: {message}")]
    Teardown { pod_id: String, message: String },
}

/// A pod network backend.
pub trait NetworkBackend: Send + Sync {
    /// A short name for logs and status.
    fn name(&self) -> &'static str;
    /// Whether the backend can give new pods a network.
    fn status(&self) -> BackendStatus;
    /// Connects the pod's network namespace. On error, whatever the call made is
    /// already undone.
    fn setup<'a>(
        &'a self,
        req: &'a PodNetworkRequest,
    ) -> BoxFuture<'a, Result<PodNetworkStatus, NetworkError>>;
    /// Disconnects the pod; succeeds when there is nothing left to remove.
    fn teardown<'a>(
        &'a self,
        req: &'a PodNetworkRequest,
    ) -> BoxFuture<'a, Result<(), NetworkError>>;
}

/// The backend used until the bridge backend exists: pods get loopback only.
///
/// It reports itself not ready, truthfully: the kubelet must not believe that pods
/// on this node can reach each other.
#[derive(Debug, Default)]
pub struct LoopbackOnly;

impl NetworkBackend for LoopbackOnly {
    fn name(&self) -> &'static str {
        "loopback-only"
    }

    fn status(&self) -> BackendStatus {
        BackendStatus {
            ready: false,
            reason: "NoPodNetwork".to_string(),
            message: "no pod network backend is available yet: pods get loopback only".to_string(),
        }
    }

    fn setup<'a>(
        &'a self,
        _req: &'a PodNetworkRequest,
    ) -> BoxFuture<'a, Result<PodNetworkStatus, NetworkError>> {
        Box::pin(async { Ok(PodNetworkStatus::default()) })
    }

    fn teardown<'a>(
        &'a self,
        _req: &'a PodNetworkRequest,
    ) -> BoxFuture<'a, Result<(), NetworkError>> {
        Box::pin(async { Ok(()) })
    }
}

//! NRI, the Node Resource Interface: plugins that are told of pod and container
//! lifecycle events and may adjust a container as it is created (environment,
//! mounts, annotations, hooks, devices, resources, rlimits, OOM score, cgroups path)
//! or its resources as they are updated.
//!
//! One concern per file: [`config`] (the `[nri]` table), [`mux`] (the connection
//! multiplexer), [`ttrpc`] (ttrpc calls over one of its connections), [`plugin`] (one
//! plugin: registration, configuration, calls), [`runtime`] (the socket, the
//! pre-installed plugins, event delivery), [`convert`] (pods and containers as NRI
//! messages), [`adjust`] (merging several plugins' adjustments, with conflicts),
//! [`validator`] (the node's rules for those adjustments, `[nri.validator]`).
//!
//! The managers see NRI only through the [`Nri`] trait object: with NRI off it is
//! [`NoNri`], whose calls do nothing, and unit tests give a fake.

pub mod adjust;
pub mod config;
pub mod convert;
pub mod mux;
pub mod plugin;
pub mod runtime;
pub mod ttrpc;
pub mod validator;

/// NRI's messages (proto/nri/api.proto).
#[allow(clippy::all, missing_docs)]
pub mod api {
    include!(concat!(env!("OUT_DIR"), "/nri.pkg.api.v1alpha1.rs"));
}

use std::path::PathBuf;

use crius_cri_api::v1 as cri;
use crius_spec::adjust::Adjustment;
use crius_store::{ContainerRecord, PodRecord};
use futures_util::future::BoxFuture;

pub use config::NriConfig;

use crate::error::CriResult;

/// Carries out a plugin's resource update of a container (the container manager's
/// `update_from_nri`).
pub type Updater = std::sync::Arc<
    dyn Fn(String, crius_spec::adjust::AdjustResources) -> BoxFuture<'static, CriResult<()>>
        + Send
        + Sync,
>;

/// Why NRI failed a call (or could not start).
#[derive(Debug, thiserror::Error)]
pub enum NriError {
    #[error("NRI plugin {plugin:?} refused {event}: {message}")]
    Refused {
        plugin: String,
        event: &'static str,
        message: String,
    },
    #[error("NRI adjustments: {0}")]
    Merge(#[from] adjust::MergeError),
    #[error("the NRI validator refused the creation: {}{message}", plugin.as_ref().map(|p| format!("plugin {p:?}: ")).unwrap_or_default())]
    Invalid {
        plugin: Option<String>,
        message: String,
    },
    #[error("NRI socket {}: {source}", path.display())]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the managers tell NRI, and what they get back.
pub trait Nri: Send + Sync {
    /// Whether any of this does something (false: callers need not gather anything).
    fn active(&self) -> bool;

    /// RunPodSandbox (a refusal fails it), StopPodSandbox, RemovePodSandbox.
    fn pod_event<'a>(
        &'a self,
        event: api::Event,
        pod: &'a PodRecord,
    ) -> BoxFuture<'a, CriResult<()>>;

    /// A container's lifecycle event (StartContainer's refusal fails it; the others
    /// are only logged).
    fn container_event<'a>(
        &'a self,
        event: api::Event,
        pod: &'a PodRecord,
        ctr: &'a ContainerRecord,
    ) -> BoxFuture<'a, CriResult<()>>;

    /// CreateContainer, with the generated spec as JSON: the merged adjustments.
    fn create_container<'a>(
        &'a self,
        pod: &'a PodRecord,
        ctr: &'a ContainerRecord,
        spec: &'a serde_json::Value,
    ) -> BoxFuture<'a, CriResult<Adjustment>>;

    /// UpdateContainerResources: the resources to apply (the request's, adjusted).
    fn update_container<'a>(
        &'a self,
        pod: &'a PodRecord,
        ctr: &'a ContainerRecord,
        requested: &'a cri::LinuxContainerResources,
    ) -> BoxFuture<'a, CriResult<cri::LinuxContainerResources>>;

    /// For verbose Status: the connected plugins.
    fn info(&self) -> serde_json::Value;
}

/// NRI off.
pub struct NoNri;

impl Nri for NoNri {
    fn active(&self) -> bool {
        false
    }

    fn pod_event<'a>(&'a self, _: api::Event, _: &'a PodRecord) -> BoxFuture<'a, CriResult<()>> {
        Box::pin(async { Ok(()) })
    }

    fn container_event<'a>(
        &'a self,
        _: api::Event,
        _: &'a PodRecord,
        _: &'a ContainerRecord,
    ) -> BoxFuture<'a, CriResult<()>> {
        Box::pin(async { Ok(()) })
    }

    fn create_container<'a>(
        &'a self,
        _: &'a PodRecord,
        _: &'a ContainerRecord,
        _: &'a serde_json::Value,
    ) -> BoxFuture<'a, CriResult<Adjustment>> {
        Box::pin(async { Ok(Adjustment::default()) })
    }

    fn update_container<'a>(
        &'a self,
        _: &'a PodRecord,
        _: &'a ContainerRecord,
        requested: &'a cri::LinuxContainerResources,
    ) -> BoxFuture<'a, CriResult<cri::LinuxContainerResources>> {
        Box::pin(async move { Ok(requested.clone()) })
    }

    fn info(&self) -> serde_json::Value {
        serde_json::json!({"enabled": false})
    }
}

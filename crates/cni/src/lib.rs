//! Pod network setup and teardown for crius (see docs/architecture.md, "Networking").
//!
//! criusd talks to a pod network only through [`NetworkBackend`]: `setup` after the
//! pod's network namespace is pinned, `teardown` before it is released. Teardown must
//! be idempotent and must work on a half-made pod, because it is also the undo of a
//! failed setup and the repair after a crash.
//!
//! Backends:
//! - [`BridgeBackend`], the default: a Linux bridge, one veth pair per pod, IPAM whose
//!   leases live in a [`LeaseStore`] criusd provides, and NAT / hostPort rules in
//!   iptables chains of crius's own. [`BridgeBackend::reconcile`] repairs what a crash
//!   left behind.
//! - [`CniBackend`], when the CNI config directory holds a network config: the plugin
//!   chain is executed per the CNI spec, results cached on disk for DEL.
//! - [`AutoBackend`]: what criusd uses: CNI while a usable config exists, else the bridge.
//! - [`LoopbackOnly`]: loopback only, reports not ready.
//!
//! Namespace invariant: no tokio worker thread ever enters a pod's namespace; work
//! inside one runs on a short-lived dedicated thread (see `netlink::in_netns`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod auto;
mod bridge;
mod cidr;
mod cni;
mod conntrack;
mod ipam;
mod iptables;
mod netlink;

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

pub use auto::AutoBackend;
pub use bridge::{BridgeBackend, BridgeConfig, ConfigError, ReconcileReport};
pub use cidr::{IpNet, IpNetParseError};
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use cni::fuzzing;
pub use cni::{CniBackend, CniConfig};
pub use ipam::{
    IpFamily, JsonFileLeaseStore, Lease, LeaseKey, LeaseStore, LeaseStoreError, MemoryLeaseStore,
    check_new_lease,
};

/// A boxed future, so the trait stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        })
    }
}

/// A hostPort mapping (CRI `PortMapping` with a non-zero host port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortMapping {
    /// The protocol.
    pub protocol: Protocol,
    /// The port inside the pod.
    pub container_port: u16,
    /// The port on the host.
    pub host_port: u16,
    /// The host address to bind; `None` for every address.
    pub host_ip: Option<IpAddr>,
}

/// DNS settings passed to CNI plugins that declare the `dns` capability.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    /// Name servers.
    pub servers: Vec<String>,
    /// Search domains.
    pub searches: Vec<String>,
    /// resolv.conf options.
    pub options: Vec<String>,
}

/// Traffic shaping passed to CNI plugins that declare the `bandwidth` capability
/// (from the pod's `kubernetes.io/ingress-bandwidth` / `egress-bandwidth` annotations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bandwidth {
    /// Ingress rate in bits per second.
    pub ingress_rate: Option<u64>,
    /// Ingress burst in bits.
    pub ingress_burst: Option<u64>,
    /// Egress rate in bits per second.
    pub egress_rate: Option<u64>,
    /// Egress burst in bits.
    pub egress_burst: Option<u64>,
}

/// What a backend needs to know about a pod.
#[derive(Debug, Clone, Default)]
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
    /// hostPort mappings (entries with host port 0 are ignored).
    pub port_mappings: Vec<PortMapping>,
    /// DNS settings for the CNI `dns` capability.
    pub dns: Option<DnsConfig>,
    /// Traffic shaping for the CNI `bandwidth` capability.
    pub bandwidth: Option<Bandwidth>,
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
    /// Whether new pods get a network.
    pub ready: bool,
    /// A CamelCase reason when not ready.
    pub reason: String,
    /// A human readable message when not ready.
    pub message: String,
}

impl BackendStatus {
    /// New pods get a network.
    pub fn ready() -> Self {
        Self {
            ready: true,
            reason: String::new(),
            message: String::new(),
        }
    }

    /// New pods get no network: `reason` (CamelCase) and `message` say why.
    pub fn not_ready(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            ready: false,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// A network setup or teardown failure.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// Setup failed (whatever it made is undone).
    #[error("network setup for pod {pod_id}: {message}")]
    Setup {
        /// The pod.
        pod_id: String,
        /// What failed (for CNI, includes the plugin's own message).
        message: String,
    },
    /// Teardown failed; it can be retried.
    #[error("network teardown for pod {pod_id}: {message}")]
    Teardown {
        /// The pod.
        pod_id: String,
        /// What failed.
        message: String,
    },
    /// The host port and protocol are taken by another pod (or twice in the request).
    #[error(
        "network setup for pod {pod_id}: host port {host_port}/{protocol} is already in use by {owner}"
    )]
    HostPortInUse {
        /// The pod refused.
        pod_id: String,
        /// The port.
        host_port: u16,
        /// The protocol.
        protocol: Protocol,
        /// Who holds it (a pod id).
        owner: String,
    },
    /// The request itself is wrong (e.g. a zero container port).
    #[error("network setup for pod {pod_id}: invalid request: {message}")]
    InvalidRequest {
        /// The pod.
        pod_id: String,
        /// What is wrong.
        message: String,
    },
    /// No address is left in the subnet.
    #[error("network setup for pod {pod_id}: {message}")]
    AddressesExhausted {
        /// The pod.
        pod_id: String,
        /// Which subnet.
        message: String,
    },
    /// The file system that holds the IP leases is full (nothing was set up).
    #[error("network setup for pod {pod_id}: {message}")]
    DiskFull {
        /// The pod.
        pod_id: String,
        /// What could not be written.
        message: String,
    },
    /// The backend cannot set up pods now (no usable CNI config).
    #[error("pod network not ready: {message}")]
    NotReady {
        /// Why.
        message: String,
    },
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
        BackendStatus::not_ready(
            "NoPodNetwork",
            "no pod network backend is available yet: pods get loopback only",
        )
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

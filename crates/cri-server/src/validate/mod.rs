//! Validation of what the kubelet sends, at the first RPC that receives it, before
//! anything is made.
//!
//! Every refusal is `InvalidArgument` naming the request field
//! (`config.metadata.name`) and the problem. The rules refuse what would break crius
//! or the node — a `/`, NUL or line break where a path component, file line or log
//! line is made from the value, a path that leaves its directory, a sysctl that is
//! not namespaced, a value runc would choke on — and accept everything the kubelet
//! and crictl's example configs send. What depends on state (a pod being ready, an
//! image being present) is the managers' to check.

mod container;
mod exec;
mod pod;

pub use container::{ValidContainer, create_container};
pub use exec::{port_forward, streams};
pub use pod::{ValidPod, pod_sandbox, user_namespace};

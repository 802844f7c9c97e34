//! Pod sandboxes: namespaces, pod files and network, tracked in the store. One file
//! per operation: [`run`] (RunPodSandbox), [`stop`] (StopPodSandbox, RemovePodSandbox),
//! [`query`] (PodSandboxStatus, ListPodSandbox), [`recover`] (start-up).
//!
//! Invariants (what start-up recovery relies on):
//! - A record is written in state `Creating`, with its name reserved, before anything
//!   is made on the host; it turns `Ready` only when everything exists. A `Creating`
//!   record found at start-up is therefore the remains of a crash (or of a failed
//!   creation whose undo failed) and is undone.
//! - Everything a pod owns on the host lives under `<run_dir>/pods/<id>/` or is
//!   released by the network backend's idempotent `teardown`; a release undoes it all
//!   and is safe on a half-made pod. A pod directory with no record is an orphan and
//!   is released at start-up.
//! - A failed RunPodSandbox undoes exactly the steps it made, newest first. If an
//!   undo fails, the record stays `Creating`: a retry of the same name,
//!   RemovePodSandbox or start-up recovery releases what is left.
//! - Slow work (helper process, network) runs under the pod's own lock, never a
//!   global one.
//! - RunPodSandbox work runs in its own task, so a client that gives up does not
//!   abort it half-way; its result waits for the kubelet's retry (CRI-O's
//!   resourcestore idea, see `crate::creations`).

mod network;
mod query;
mod recover;
mod run;
mod stop;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;

use crius_cni::NetworkBackend;
use crius_cri_api::v1 as cri;
use crius_store::{PodRecord, Store};
use tracing::Instrument;

use crate::config::Config;
use crate::creations::Creations;
use crate::error::{CriError, CriResult};
use crate::events::Events;
use crate::failpoint;
use crate::host::Namespaces;
use crate::nri::{NoNri, Nri};
use crate::util::Locks;

pub use crate::util::new_id;
pub use network::network_request;
pub use query::status_of;

/// The pod sandbox manager.
pub struct Sandboxes {
    config: Arc<Config>,
    store: Store,
    network: Arc<dyn NetworkBackend>,
    ns: Arc<dyn Namespaces>,
    locks: Locks,
    creations: Arc<Creations>,
    /// Container events (pods are reported too, with their id as the container id).
    events: Arc<Events>,
    /// NRI plugins (the container manager reaches them through here too).
    nri: Arc<dyn Nri>,
}

/// What a pod has on the host, in the order it is made; released newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// `<run_dir>/pods/<id>/` and the pod files in it.
    Dir,
    /// Namespaces pinned under `<dir>/ns`.
    Pinned,
    /// The infra process holding the pod's PID namespace.
    Infra(u32),
    /// The pod's network (veth, address, rules).
    Network,
}

impl Sandboxes {
    /// Whether pods may have their own user namespace on this node.
    pub fn user_namespaces(&self) -> bool {
        self.ns.user_namespaces()
    }

    pub fn new(
        config: Arc<Config>,
        store: Store,
        network: Arc<dyn NetworkBackend>,
        ns: Arc<dyn Namespaces>,
    ) -> Sandboxes {
        Sandboxes {
            config,
            events: Arc::new(Events::new(store.clone())),
            store,
            network,
            ns,
            locks: Locks::default(),
            creations: Arc::new(Creations::default()),
            nri: Arc::new(NoNri),
        }
    }

    /// The same manager telling `nri` of lifecycle events.
    pub fn with_nri(mut self, nri: Arc<dyn Nri>) -> Sandboxes {
        self.nri = nri;
        self
    }

    /// The NRI plugins of this daemon.
    pub fn nri(&self) -> &Arc<dyn Nri> {
        &self.nri
    }

    /// What the manager keeps per id in memory: held or awaited locks, creations in
    /// flight or unclaimed.
    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        (self.locks.ids_tracked(), self.creations.names_tracked())
    }

    /// The container events of this daemon (the container manager publishes there too).
    pub fn events(&self) -> &Arc<Events> {
        &self.events
    }

    fn pods_dir(&self) -> PathBuf {
        self.config.run_dir.join("pods")
    }

    /// The network backend's name (for verbose status).
    pub fn network_name(&self) -> &'static str {
        self.network.name()
    }

    /// Resolves a full id or a unique prefix of one.
    async fn resolve(&self, id: &str, field: &str) -> CriResult<Option<PodRecord>> {
        if id.is_empty() {
            return Err(CriError::invalid(field, "must not be empty"));
        }
        if let Some(rec) = self.store.pod(id).await? {
            return Ok(Some(rec));
        }
        let mut matches: Vec<PodRecord> = self
            .store
            .pods()
            .await?
            .into_iter()
            .filter(|p| p.id.starts_with(id))
            .collect();
        match matches.len() {
            0 => Ok(None),
            1 => Ok(matches.pop()),
            n => Err(CriError::invalid(
                field,
                format!("{id:?} is a prefix of {n} sandbox ids; give more of it"),
            )),
        }
    }

    /// A pod by full id or unique prefix.
    pub async fn get(&self, id: &str) -> CriResult<Option<PodRecord>> {
        self.resolve(id, "pod_sandbox_id").await
    }

    /// Runs `admit` (a container's record going into the store) while the pod is
    /// held Ready: StopPodSandbox and RemovePodSandbox wait for it, and it fails if
    /// the pod is no longer Ready or gone. So a container made concurrently with
    /// them is either seen by them or refused.
    pub async fn with_ready_pod<T>(
        &self,
        pod_id: &str,
        admit: impl std::future::Future<Output = CriResult<T>>,
    ) -> CriResult<T> {
        let _guard = self.locks.lock(pod_id).await;
        match self.store.pod(pod_id).await? {
            Some(p) if p.state == crius_store::PodState::Ready => admit.await,
            Some(p) => Err(CriError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                p.id
            ))),
            None => Err(CriError::NotFound(format!(
                "pod sandbox {pod_id:?} not found"
            ))),
        }
    }

    /// A pod by full id or unique prefix, which must exist.
    pub async fn must(&self, id: &str) -> CriResult<PodRecord> {
        self.get(id)
            .await?
            .ok_or_else(|| CriError::NotFound(format!("pod sandbox {id:?} not found")))
    }

    /// Everything the record says the pod may have on the host, in making order.
    fn steps_of(rec: &PodRecord) -> Vec<Step> {
        let mut steps = vec![Step::Dir, Step::Pinned];
        if let Some(pid) = rec.infra_pid {
            steps.push(Step::Infra(pid));
        }
        if rec.namespaces.net.is_some() {
            steps.push(Step::Network);
        }
        steps
    }

    /// Undoes `steps` newest first. Stops at the first failure (each step is
    /// idempotent, so the caller can retry the whole release).
    async fn unwind(&self, rec: &PodRecord, steps: &[Step]) -> CriResult<()> {
        for step in steps.iter().rev() {
            self.undo(rec, *step).await?;
        }
        Ok(())
    }

    async fn undo(&self, rec: &PodRecord, step: Step) -> CriResult<()> {
        failpoint::hit(match step {
            Step::Network => "sandbox.undo.network",
            Step::Infra(_) => "sandbox.undo.infra",
            Step::Pinned => "sandbox.undo.pinned",
            Step::Dir => "sandbox.undo.dir",
        })?;
        match step {
            Step::Network => match network_request(rec) {
                Some(net) => Ok(self
                    .network
                    .teardown(&net)
                    .instrument(tracing::info_span!("network.teardown"))
                    .await?),
                None => Ok(()),
            },
            Step::Infra(pid) => {
                self.ns.stop_infra(pid, &rec.dir.join("infra")).await;
                Ok(())
            }
            Step::Pinned => self.ns.unpin(&rec.dir.join("ns")),
            Step::Dir => remove_dir(&rec.dir),
        }
    }

    /// Releases what StopPodSandbox frees: the network, the infra process and the
    /// namespaces (the directory and its files stay).
    async fn stop_resources(&self, rec: &PodRecord) -> CriResult<()> {
        let steps: Vec<Step> = Self::steps_of(rec)
            .into_iter()
            .filter(|s| *s != Step::Dir)
            .collect();
        self.unwind(rec, &steps).await
    }

    /// Undoes everything a pod has on the host. Safe on a half-made pod.
    async fn release(&self, rec: &PodRecord) -> CriResult<()> {
        self.unwind(rec, &Self::steps_of(rec)).await
    }
}

fn host_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The maps of the pod's own user namespace, from the config it was created with
/// (validated then); `None`: the host's.
pub fn pod_userns(config: &cri::PodSandboxConfig) -> Option<crate::pinns::UserMaps> {
    let opts = config
        .linux
        .as_ref()?
        .security_context
        .as_ref()?
        .namespace_options
        .as_ref()?
        .userns_options
        .as_ref();
    crate::validate::user_namespace("", opts).ok().flatten()
}

/// The pod's hostname: its own, or the node's for host-network pods and pods that
/// set none.
fn pod_hostname(config: &cri::PodSandboxConfig, host_network: bool) -> String {
    if host_network || config.hostname.is_empty() {
        host_hostname()
    } else {
        config.hostname.clone()
    }
}

/// Removes a pod directory (its namespaces must already be unpinned).
fn remove_dir(dir: &std::path::Path) -> CriResult<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CriError::io(format!("removing {}", dir.display()))(e)),
    }
}

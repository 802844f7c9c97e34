//! Pod sandboxes: namespaces, pod files and network, tracked in the store.
//!
//! Invariants (what start-up recovery relies on):
//! - A record is written in state `Creating`, with its name reserved, before anything
//!   is made on the host; it turns `Ready` only when everything exists. A `Creating`
//!   record found at start-up is therefore the remains of a crash and is undone.
//! - Everything a pod owns on the host lives under `<run_dir>/pods/<id>/` or is
//!   released by the network backend's idempotent `teardown`; [`Sandboxes::release`]
//!   undoes it all and is safe on a half-made pod. A pod directory with no record is
//!   an orphan and is released at start-up.
//! - Slow work (helper process, network) runs under the pod's own lock, never a
//!   global one.
//! - RunPodSandbox work runs in its own task, so a client that gives up does not
//!   abort it half-way; its result waits in `inflight` for the kubelet's retry
//!   (CRI-O's resourcestore idea).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crius_cni::{NetworkBackend, PodNetworkRequest};
use k8s_cri::v1 as cri;
use tracing::{info, warn};

use crate::config::Config;
use crate::creations::Creations;
use crate::error::{CriError, CriResult};
use crate::pinns::{self, PinRequest};
use crate::podfiles::{self, PodFiles};
use crate::util::{Locks, blocking, now_nanos};
use crate::validate::{self, ValidPod};
use crius_store::{PinnedNamespaces, PodRecord, PodState, Reserve, Store};

/// How long the namespace helper may take.
const PIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The pod sandbox manager.
pub struct Sandboxes {
    config: Arc<Config>,
    store: Store,
    network: Arc<dyn NetworkBackend>,
    helper: PathBuf,
    locks: Locks,
    creations: Arc<Creations>,
}

/// A new 64-hex-digit id, as containerd and CRI-O make them.
pub fn new_id() -> CriResult<String> {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).map_err(|e| CriError::internal("generating an id", e))?;
    Ok(hex::encode(buf))
}

fn host_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

impl Sandboxes {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        network: Arc<dyn NetworkBackend>,
        helper: PathBuf,
    ) -> Sandboxes {
        Sandboxes {
            config,
            store,
            network,
            helper,
            locks: Locks::default(),
            creations: Arc::new(Creations::default()),
        }
    }

    fn pods_dir(&self) -> PathBuf {
        self.config.run_dir.join("pods")
    }

    fn net_request(&self, rec: &PodRecord) -> Option<PodNetworkRequest> {
        network_request(rec)
    }

    /// Network requests for every pod whose network should exist (start-up reconcile).
    pub async fn live_network_requests(&self) -> CriResult<Vec<PodNetworkRequest>> {
        let pods = self.store.pods().await.map_err(CriError::from)?;
        Ok(pods
            .iter()
            .filter(|p| p.state == PodState::Ready)
            .filter_map(network_request)
            .collect())
    }

    /// RunPodSandbox. Returns the sandbox id.
    pub async fn run(
        self: &Arc<Self>,
        config: Option<cri::PodSandboxConfig>,
        runtime_handler: &str,
    ) -> CriResult<String> {
        let pod = validate::pod_sandbox(config, runtime_handler, &self.config)?;
        let name = pod.reserved_name.clone();
        let store = self.store.clone();
        let this = self.clone();
        self.creations
            .run(
                &name,
                || match store.blocking().pod_id_by_name(&name)? {
                    Some(id) => Err(already_exists(&name, &id)),
                    None => Ok(()),
                },
                async move { this.create(pod).await },
            )
            .await
    }

    async fn create(self: &Arc<Self>, pod: ValidPod) -> CriResult<String> {
        let id = new_id()?;
        let _guard = self.locks.lock(&id).await;
        let dir = self.pods_dir().join(&id);
        let ns_dir = dir.join("ns");
        let own_ns = |on: bool, kind: &str| on.then(|| PinRequest::path(&ns_dir, kind));
        let namespaces = PinnedNamespaces {
            net: own_ns(!pod.host_network, "net"),
            ipc: own_ns(!pod.host_ipc, "ipc"),
            uts: own_ns(!pod.host_network, "uts"),
        };
        let mut rec = PodRecord {
            id: id.clone(),
            name: pod.reserved_name.clone(),
            state: PodState::Creating,
            created_at: now_nanos(),
            runtime_handler: pod.runtime_handler.clone(),
            config: pod.config.clone(),
            dir: dir.clone(),
            namespaces,
            ips: Vec::new(),
            infra_pid: None,
        };
        let first = rec.clone();
        match self
            .store
            .insert_pod(&first)
            .await
            .map_err(CriError::from)?
        {
            Reserve::Done => {}
            Reserve::Taken(existing) => return Err(already_exists(&rec.name, &existing)),
        }
        match self.build(&mut rec, &pod).await {
            Ok(()) => {
                info!(pod_id = %id, pod = %rec.name, "pod sandbox ready");
                Ok(id)
            }
            Err(e) => {
                warn!(pod_id = %id, pod = %rec.name, error = %e, "pod sandbox creation failed; undoing it");
                if let Err(undo) = self.release(&rec).await {
                    warn!(pod_id = %id, error = %undo, "undoing a failed sandbox left something behind");
                }
                let rid = id.clone();
                if let Err(undo) = self.store.delete_pod(&rid).await.map_err(CriError::from) {
                    warn!(pod_id = %id, error = %undo, "deleting the record of a failed sandbox");
                }
                Err(e)
            }
        }
    }

    /// The host-side steps of RunPodSandbox, after the record exists.
    async fn build(&self, rec: &mut PodRecord, pod: &ValidPod) -> CriResult<()> {
        let dir = rec.dir.clone();
        std::fs::create_dir_all(&dir)
            .map_err(|e| CriError::internal(format!("creating {}", dir.display()), e))?;
        let hostname = pod_hostname(&rec.config, pod.host_network);
        podfiles::write_all(
            &dir,
            &PodFiles {
                hostname: &hostname,
                dns: rec.config.dns_config.as_ref(),
                host_network: pod.host_network,
                ips: &[],
            },
        )
        .map_err(|e| CriError::internal("writing pod files", e))?;
        let req = PinRequest {
            dir: dir.join("ns"),
            net: rec.namespaces.net.is_some(),
            ipc: rec.namespaces.ipc.is_some(),
            uts: rec.namespaces.uts.is_some(),
            hostname: rec.namespaces.uts.is_some().then(|| hostname.clone()),
        };
        if req.net || req.ipc || req.uts {
            pinns::pin(&self.helper, &req, PIN_TIMEOUT)
                .await
                .map_err(|e| CriError::internal("pinning pod namespaces", e))?;
        }
        if pod.pod_pid {
            let pid = pinns::start_infra(&self.helper, &dir.join("infra"), PIN_TIMEOUT)
                .await
                .map_err(|e| CriError::internal("starting the pod's infra process", e))?;
            rec.infra_pid = Some(pid);
            // Recorded at once, so that a failure below (or a crash) still stops it.
            let r = rec.clone();
            self.store.update_pod(&r).await.map_err(CriError::from)?;
        }
        if let Some(net) = self.net_request(rec) {
            let status = self
                .network
                .setup(&net)
                .await
                .map_err(|e| CriError::Internal(e.to_string()))?;
            rec.ips = status.ips.iter().map(|ip| ip.to_string()).collect();
            if !rec.ips.is_empty() {
                podfiles::write_atomic(
                    &dir.join("hosts"),
                    podfiles::hosts(&hostname, &rec.ips).as_bytes(),
                )
                .map_err(|e| CriError::internal("writing pod hosts file", e))?;
            }
        }
        rec.state = PodState::Ready;
        let ready = rec.clone();
        self.store.update_pod(&ready).await.map_err(CriError::from)
    }

    /// Releases the pod's network, infra process and namespaces (what StopPodSandbox
    /// frees).
    async fn stop_resources(&self, rec: &PodRecord) -> CriResult<()> {
        if let Some(pid) = rec.infra_pid {
            pinns::stop_infra(pid, &rec.dir.join("infra"), Duration::from_secs(10)).await;
        }
        if let Some(net) = self.net_request(rec) {
            self.network
                .teardown(&net)
                .await
                .map_err(|e| CriError::Internal(e.to_string()))?;
        }
        pinns::unpin(&rec.dir.join("ns"))
            .map_err(|e| CriError::internal("releasing pod namespaces", e))
    }

    /// Undoes everything a pod has on the host. Safe on a half-made pod.
    async fn release(&self, rec: &PodRecord) -> CriResult<()> {
        self.stop_resources(rec).await?;
        remove_dir(&rec.dir)
    }

    /// Resolves a full id or a unique prefix of one.
    async fn resolve(&self, id: &str, field: &str) -> CriResult<Option<PodRecord>> {
        if id.is_empty() {
            return Err(CriError::invalid(field, "must not be empty"));
        }
        let store = self.store.clone();
        let want = id.to_string();
        let field = field.to_string();
        blocking(move || {
            if let Some(rec) = store.blocking().pod(&want)? {
                return Ok(Some(rec));
            }
            let mut matches: Vec<PodRecord> = store
                .blocking()
                .pods()?
                .into_iter()
                .filter(|p| p.id.starts_with(&want))
                .collect();
            match matches.len() {
                0 => Ok(None),
                1 => Ok(matches.pop()),
                n => Err(CriError::invalid(
                    field,
                    format!("{want:?} is a prefix of {n} sandbox ids; give more of it"),
                )),
            }
        })
        .await
    }

    /// A pod by full id or unique prefix.
    pub async fn get(&self, id: &str) -> CriResult<Option<PodRecord>> {
        self.resolve(id, "pod_sandbox_id").await
    }

    /// StopPodSandbox: idempotent; a missing sandbox is already stopped.
    pub async fn stop(&self, id: &str) -> CriResult<()> {
        let Some(found) = self.resolve(id, "pod_sandbox_id").await? else {
            return Ok(());
        };
        let _guard = self.locks.lock(&found.id).await;
        let fid = found.id.clone();
        let Some(mut rec) = self.store.pod(&fid).await.map_err(CriError::from)? else {
            return Ok(());
        };
        if rec.state == PodState::NotReady {
            return Ok(());
        }
        self.stop_resources(&rec).await?;
        rec.state = PodState::NotReady;
        let stopped = rec.clone();
        self.store
            .update_pod(&stopped)
            .await
            .map_err(CriError::from)?;
        info!(pod_id = %rec.id, "pod sandbox stopped");
        Ok(())
    }

    /// RemovePodSandbox: idempotent; removes every trace.
    pub async fn remove(&self, id: &str) -> CriResult<()> {
        let Some(found) = self.resolve(id, "pod_sandbox_id").await? else {
            return Ok(());
        };
        let guard = self.locks.lock(&found.id).await;
        let fid = found.id.clone();
        let Some(rec) = self.store.pod(&fid).await.map_err(CriError::from)? else {
            return Ok(());
        };
        self.release(&rec).await?;
        let rid = rec.id.clone();
        self.store.delete_pod(&rid).await.map_err(CriError::from)?;
        drop(guard);
        self.locks.forget(&rec.id);
        info!(pod_id = %rec.id, "pod sandbox removed");
        Ok(())
    }

    /// PodSandboxStatus.
    pub async fn status(
        &self,
        id: &str,
        verbose: bool,
    ) -> CriResult<cri::PodSandboxStatusResponse> {
        let rec = self
            .resolve(id, "pod_sandbox_id")
            .await?
            .ok_or_else(|| CriError::NotFound(format!("pod sandbox {id:?} not found")))?;
        let mut ips = rec.ips.iter();
        let network = cri::PodSandboxNetworkStatus {
            ip: ips.next().cloned().unwrap_or_default(),
            additional_ips: ips.map(|ip| cri::PodIp { ip: ip.clone() }).collect(),
        };
        let options = rec
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default();
        let status = cri::PodSandboxStatus {
            id: rec.id.clone(),
            metadata: rec.config.metadata.clone(),
            state: cri_state(rec.state) as i32,
            created_at: rec.created_at,
            network: Some(network),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace {
                    options: Some(options),
                }),
            }),
            labels: rec.config.labels.clone(),
            annotations: rec.config.annotations.clone(),
            runtime_handler: rec.runtime_handler.clone(),
        };
        let mut info = HashMap::new();
        if verbose {
            let detail = serde_json::json!({
                "id": rec.id,
                "name": rec.name,
                "pid": rec.infra_pid.unwrap_or(0),
                "state": format!("{:?}", rec.state),
                "runtimeHandler": rec.runtime_handler,
                "podDir": rec.dir,
                "namespaces": {
                    "network": rec.namespaces.net,
                    "ipc": rec.namespaces.ipc,
                    "uts": rec.namespaces.uts,
                },
                "networkBackend": self.network.name(),
                "config": rec.config,
            });
            info.insert("info".to_string(), detail.to_string());
        }
        Ok(cri::PodSandboxStatusResponse {
            status: Some(status),
            info,
            containers_statuses: Vec::new(),
            timestamp: now_nanos(),
        })
    }

    /// ListPodSandbox with its filter.
    pub async fn list(
        &self,
        filter: Option<cri::PodSandboxFilter>,
    ) -> CriResult<Vec<cri::PodSandbox>> {
        let pods = self.store.pods().await.map_err(CriError::from)?;
        let filter = filter.unwrap_or_default();
        let mut out: Vec<cri::PodSandbox> = pods
            .into_iter()
            .filter(|p| p.state != PodState::Creating)
            .filter(|p| filter.id.is_empty() || p.id.starts_with(&filter.id))
            .filter(|p| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|s| s.state == cri_state(p.state) as i32)
            })
            .filter(|p| {
                filter
                    .label_selector
                    .iter()
                    .all(|(k, v)| p.config.labels.get(k) == Some(v))
            })
            .map(|p| cri::PodSandbox {
                id: p.id.clone(),
                metadata: p.config.metadata.clone(),
                state: cri_state(p.state) as i32,
                created_at: p.created_at,
                labels: p.config.labels.clone(),
                annotations: p.config.annotations.clone(),
                runtime_handler: p.runtime_handler.clone(),
            })
            .collect();
        out.sort_by_key(|p| p.created_at);
        Ok(out)
    }

    /// Start-up recovery: undo half-made pods, mark pods whose namespaces are gone
    /// NotReady, restore missing pod files, release orphan pod directories.
    pub async fn recover(&self) -> CriResult<()> {
        let pods = self.store.pods().await.map_err(CriError::from)?;
        let mut known = std::collections::HashSet::new();
        for mut rec in pods {
            known.insert(rec.id.clone());
            match rec.state {
                PodState::Creating => {
                    warn!(pod_id = %rec.id, pod = %rec.name, "recovery: sandbox was half-made when criusd stopped; removing it");
                    self.release(&rec).await?;
                    let id = rec.id.clone();
                    self.store.delete_pod(&id).await.map_err(CriError::from)?;
                    known.remove(&rec.id);
                }
                PodState::Ready => {
                    let mut missing: Vec<&PathBuf> = rec
                        .namespaces
                        .paths()
                        .filter(|p| !pinns::is_pinned(p))
                        .collect();
                    let infra_dir = rec.dir.join("infra");
                    if rec
                        .infra_pid
                        .is_some_and(|pid| !pinns::infra_alive(pid, &infra_dir))
                    {
                        missing.push(&infra_dir);
                    }
                    if !missing.is_empty() {
                        warn!(pod_id = %rec.id, pod = %rec.name, missing = ?missing, "recovery: pinned namespaces are gone; marking the sandbox NotReady");
                        self.stop_resources(&rec).await?;
                        rec.state = PodState::NotReady;
                        let r = rec.clone();
                        self.store.update_pod(&r).await.map_err(CriError::from)?;
                    } else if !podfiles::all_present(&rec.dir) {
                        warn!(pod_id = %rec.id, "recovery: pod files were missing; rewriting them");
                        let host_network = rec.namespaces.net.is_none();
                        let hostname = pod_hostname(&rec.config, host_network);
                        podfiles::write_all(
                            &rec.dir,
                            &PodFiles {
                                hostname: &hostname,
                                dns: rec.config.dns_config.as_ref(),
                                host_network,
                                ips: &rec.ips,
                            },
                        )
                        .map_err(|e| CriError::internal("rewriting pod files", e))?;
                    }
                }
                PodState::NotReady => {}
            }
        }
        let dir = self.pods_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(CriError::internal(format!("reading {}", dir.display()), e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| CriError::internal("reading pod dirs", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if known.contains(&name) {
                continue;
            }
            warn!(dir = %entry.path().display(), "recovery: pod directory has no sandbox record; removing it");
            pinns::unpin(&entry.path().join("ns"))
                .map_err(|e| CriError::internal("releasing orphan namespaces", e))?;
            remove_dir(&entry.path())?;
        }
        Ok(())
    }
}

/// What the network backend needs to know about a pod; `None` for host-network pods.
pub fn network_request(rec: &PodRecord) -> Option<PodNetworkRequest> {
    let netns = rec.namespaces.net.clone()?;
    let md = rec.config.metadata.clone().unwrap_or_default();
    let port_mappings = rec
        .config
        .port_mappings
        .iter()
        .filter_map(|pm| {
            Some(crius_cni::PortMapping {
                protocol: match cri::Protocol::try_from(pm.protocol).ok()? {
                    cri::Protocol::Tcp => crius_cni::Protocol::Tcp,
                    cri::Protocol::Udp => crius_cni::Protocol::Udp,
                    cri::Protocol::Sctp => crius_cni::Protocol::Sctp,
                },
                container_port: u16::try_from(pm.container_port).ok()?,
                host_port: u16::try_from(pm.host_port).ok()?,
                host_ip: pm.host_ip.parse().ok(),
            })
        })
        .collect();
    let dns = rec
        .config
        .dns_config
        .as_ref()
        .map(|d| crius_cni::DnsConfig {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        });
    Some(PodNetworkRequest {
        pod_id: rec.id.clone(),
        name: md.name,
        namespace: md.namespace,
        uid: md.uid,
        netns,
        port_mappings,
        dns,
        bandwidth: None,
    })
}

fn already_exists(name: &str, id: &str) -> CriError {
    CriError::AlreadyExists(format!(
        "pod sandbox name {name:?} is already reserved by sandbox {id}"
    ))
}

fn pod_hostname(config: &cri::PodSandboxConfig, host_network: bool) -> String {
    if host_network || config.hostname.is_empty() {
        host_hostname()
    } else {
        config.hostname.clone()
    }
}

fn cri_state(state: PodState) -> cri::PodSandboxState {
    match state {
        PodState::Ready => cri::PodSandboxState::SandboxReady,
        PodState::Creating | PodState::NotReady => cri::PodSandboxState::SandboxNotready,
    }
}

/// Removes a pod directory (its namespaces must already be unpinned).
fn remove_dir(dir: &Path) -> CriResult<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CriError::internal(format!("removing {}", dir.display()), e)),
    }
}

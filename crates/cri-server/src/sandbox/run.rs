//! RunPodSandbox: reserve the name with a `Creating` record, then make the pod's
//! directory and files, pin its namespaces, start its infra process (shared PID
//! namespace only) and set up its network; on a failure, undo what was made.

use std::sync::Arc;

use crius_store::{PinnedNamespaces, PodRecord, PodState, Reserve};
use tracing::{Instrument, info, warn};

use super::{Sandboxes, Step, network_request, pod_hostname};
use crate::error::{CriError, CriResult};
use crate::events::Kind;
use crate::failpoint;
use crate::nri::api::Event;
use crate::pinns::PinRequest;
use crate::podfiles::{self, PodFiles};
use crate::util::{new_id, now_nanos};
use crate::validate::ValidPod;

fn already_exists(name: &str, id: &str) -> CriError {
    CriError::AlreadyExists(format!(
        "pod sandbox name {name:?} is already reserved by sandbox {id}"
    ))
}

impl Sandboxes {
    /// RunPodSandbox of a validated request. Returns the sandbox id.
    pub async fn run(self: &Arc<Self>, pod: ValidPod) -> CriResult<String> {
        let name = pod.reserved_name.clone();
        let store = self.store.clone();
        let this = self.clone();
        self.creations
            .run(
                &name,
                || {
                    let db = store.blocking();
                    match db.pod_id_by_name(&name)? {
                        // The remains of a failed creation whose undo was incomplete
                        // (no creation of this name is in flight): this one removes them.
                        Some(id) if db.pod(&id)?.is_some_and(|p| p.state == PodState::Creating) => {
                            Ok(())
                        }
                        Some(id) => Err(already_exists(&name, &id)),
                        None => Ok(()),
                    }
                },
                async move { this.create(pod).await },
            )
            .await
    }

    async fn create(self: &Arc<Self>, pod: ValidPod) -> CriResult<String> {
        if pod.userns.is_some() && !self.ns.user_namespaces() {
            return Err(CriError::FailedPrecondition(
                "config.linux.security_context.namespace_options.userns_options: this node cannot give a pod its own user namespace (the kernel or the file system of the container layers lacks idmapped mounts; criusd logs why at start-up)".into(),
            ));
        }
        let id = new_id()?;
        let _guard = self.locks.lock(&id).await;
        let dir = self.pods_dir().join(&id);
        let ns_dir = dir.join("ns");
        let own_ns = |on: bool, kind: &str| on.then(|| PinRequest::path(&ns_dir, kind));
        let mut rec = PodRecord {
            id: id.clone(),
            name: pod.reserved_name.clone(),
            state: PodState::Creating,
            created_at: now_nanos(),
            runtime_handler: pod.runtime_handler.clone(),
            config: pod.config.clone(),
            dir: dir.clone(),
            namespaces: PinnedNamespaces {
                net: own_ns(!pod.host_network, "net"),
                ipc: own_ns(!pod.host_ipc, "ipc"),
                uts: own_ns(!pod.host_network, "uts"),
                user: own_ns(pod.userns.is_some(), "user"),
            },
            ips: Vec::new(),
            infra_pid: None,
        };
        if let Reserve::Taken(existing) = self.store.insert_pod(&rec).await? {
            self.remove_leftover(&rec.name, &existing).await?;
            if let Reserve::Taken(existing) = self.store.insert_pod(&rec).await? {
                return Err(already_exists(&rec.name, &existing));
            }
        }
        failpoint::hit("sandbox.run.recorded")?;
        let mut made = Vec::new();
        match self.build(&mut rec, &pod, &mut made).await {
            Ok(()) => {
                info!(pod_id = %id, pod = %rec.name, "pod sandbox ready");
                self.events
                    .pod(Kind::ContainerCreatedEvent, &id, None)
                    .await;
                self.events
                    .pod(Kind::ContainerStartedEvent, &id, None)
                    .await;
                Ok(id)
            }
            Err(e) => {
                warn!(pod_id = %id, pod = %rec.name, error = %e, "pod sandbox creation failed; undoing it");
                if !self.undo_made(&rec, &made).await {
                    warn!(pod_id = %id, pod = %rec.name, "part of the failed sandbox is left; its record stays (Creating) for RemovePodSandbox, a retry of RunPodSandbox or start-up recovery");
                } else if let Err(undo) = self.store.delete_pod(&id).await {
                    warn!(pod_id = %id, error = %undo, "deleting the record of a failed sandbox");
                }
                Err(e)
            }
        }
    }

    /// Finishes the removal of what a failed creation of `name` left (sandbox `id`,
    /// still `Creating`), so that a retry of RunPodSandbox can take the name. Any
    /// other holder of the name is a duplicate.
    async fn remove_leftover(&self, name: &str, id: &str) -> CriResult<()> {
        let guard = self.locks.lock(id).await;
        match self.store.pod(id).await? {
            Some(old) if old.state == PodState::Creating => {
                info!(pod_id = %id, pod = %name, "removing what a failed creation of this name left");
                self.release(&old).await?;
                self.store.delete_pod(id).await?;
                drop(guard);
                Ok(())
            }
            Some(_) => Err(already_exists(name, id)),
            None => Ok(()),
        }
    }

    /// Undoes the steps of a failed creation, newest first, every one of them even
    /// when one fails. Returns whether all of them were undone: if not, the caller
    /// keeps the record (state `Creating`), so that what is left is found again (the
    /// pod directory alone does not say what was pinned or set up).
    async fn undo_made(&self, rec: &PodRecord, made: &[Step]) -> bool {
        let mut all = true;
        for step in made.iter().rev() {
            if let Err(e) = self.undo(rec, *step).await {
                warn!(pod_id = %rec.id, ?step, error = %e, "undoing a step of a failed sandbox");
                all = false;
            }
        }
        all
    }

    /// The host-side steps of RunPodSandbox, after the record exists. Each step that
    /// succeeds is pushed to `made` at once.
    async fn build(
        &self,
        rec: &mut PodRecord,
        pod: &ValidPod,
        made: &mut Vec<Step>,
    ) -> CriResult<()> {
        let dir = rec.dir.clone();
        std::fs::create_dir_all(&dir)
            .map_err(CriError::io(format!("creating {}", dir.display())))?;
        made.push(Step::Dir);
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
        .map_err(CriError::io("writing pod files"))?;
        failpoint::hit("sandbox.run.dir")?;
        let req = PinRequest {
            dir: dir.join("ns"),
            net: rec.namespaces.net.is_some(),
            ipc: rec.namespaces.ipc.is_some(),
            uts: rec.namespaces.uts.is_some(),
            hostname: rec.namespaces.uts.is_some().then(|| hostname.clone()),
            user: pod.userns.clone(),
        };
        if req.net || req.ipc || req.uts || req.user.is_some() {
            self.ns.pin(&req).await?;
            made.push(Step::Pinned);
            failpoint::hit("sandbox.run.pinned")?;
        }
        if pod.pod_pid {
            let userns = rec.namespaces.user.clone();
            let pid = self
                .ns
                .start_infra(&dir.join("infra"), userns.as_deref())
                .await?;
            made.push(Step::Infra(pid));
            rec.infra_pid = Some(pid);
            // Recorded at once, so that a crash from here on still stops it.
            self.store.update_pod(rec).await?;
            failpoint::hit("sandbox.run.infra")?;
        }
        if let Some(net) = network_request(rec) {
            let status = self
                .network
                .setup(&net)
                .instrument(tracing::info_span!("network.setup"))
                .await?;
            made.push(Step::Network);
            failpoint::hit("sandbox.run.network")?;
            rec.ips = status.ips.iter().map(|ip| ip.to_string()).collect();
            if !rec.ips.is_empty() {
                podfiles::write_atomic(
                    &dir.join("hosts"),
                    podfiles::hosts(&hostname, &rec.ips).as_bytes(),
                )
                .map_err(CriError::io("writing the pod's hosts file"))?;
            }
        }
        if let Some((uid, gid)) = pod.userns.as_ref().and_then(|u| u.root_on_host()) {
            // The container's root owns the pod's files, as the host's root owns the
            // host's (they are bound into containers without an idmap).
            podfiles::chown_all(&dir, uid, gid)
                .map_err(CriError::io("handing the pod files to the pod's root"))?;
        }
        self.nri.pod_event(Event::RunPodSandbox, rec).await?;
        rec.state = PodState::Ready;
        self.store.update_pod(rec).await?;
        failpoint::hit("sandbox.run.ready")
    }
}

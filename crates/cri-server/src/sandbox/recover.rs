//! Start-up recovery of pod sandboxes: undo half-made pods, mark pods whose
//! namespaces are gone NotReady, restore missing pod files, release orphan pod
//! directories.

use std::path::PathBuf;

use crius_store::PodState;
use tracing::{error, warn};

use super::{Sandboxes, pod_hostname, remove_dir};
use crate::error::{CriError, CriResult};
use crate::podfiles::{self, PodFiles};

impl Sandboxes {
    /// Start-up recovery: undo half-made pods, mark pods whose namespaces are gone
    /// NotReady, restore missing pod files, release orphan pod directories.
    ///
    /// A pod whose recovery fails (a namespace that will not unpin, a network that
    /// will not tear down) is logged and left as its record says, for the kubelet's
    /// StopPodSandbox or RemovePodSandbox or the next start to finish; it never keeps
    /// criusd from serving the other pods. Only reading the store fails recovery.
    pub async fn recover(&self) -> CriResult<()> {
        let pods = self.store.pods().await?;
        let mut known = std::collections::HashSet::new();
        for mut rec in pods {
            known.insert(rec.id.clone());
            match self.recover_pod(&mut rec).await {
                Ok(true) => {}
                Ok(false) => {
                    known.remove(&rec.id);
                }
                Err(e) => {
                    error!(pod_id = %rec.id, pod = %rec.name, state = ?rec.state, error = %e, "recovery: could not finish this sandbox; left for StopPodSandbox, RemovePodSandbox or the next start");
                }
            }
        }
        let dir = self.pods_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(CriError::io(format!("reading {}", dir.display()))(e)),
        };
        for entry in entries {
            let entry = entry.map_err(CriError::io(format!("reading {}", dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if known.contains(&name) {
                continue;
            }
            warn!(dir = %entry.path().display(), "recovery: pod directory has no sandbox record; removing it");
            let released = self
                .ns
                .unpin(&entry.path().join("ns"))
                .and_then(|()| remove_dir(&entry.path()));
            if let Err(e) = released {
                error!(dir = %entry.path().display(), error = %e, "recovery: could not remove an orphan pod directory; the next start tries again");
            }
        }
        Ok(())
    }

    /// Recovers one pod; false when its record is gone (a half-made pod undone).
    async fn recover_pod(&self, rec: &mut crius_store::PodRecord) -> CriResult<bool> {
        match rec.state {
            PodState::Creating => {
                warn!(pod_id = %rec.id, pod = %rec.name, "recovery: sandbox was half-made when criusd stopped; removing it");
                self.release(rec).await?;
                self.store.delete_pod(&rec.id).await?;
                return Ok(false);
            }
            PodState::Ready => {
                let mut missing: Vec<&PathBuf> = rec
                    .namespaces
                    .paths()
                    .filter(|p| !self.ns.is_pinned(p))
                    .collect();
                let infra_dir = rec.dir.join("infra");
                if rec
                    .infra_pid
                    .is_some_and(|pid| !self.ns.infra_alive(pid, &infra_dir))
                {
                    missing.push(&infra_dir);
                }
                if !missing.is_empty() {
                    warn!(pod_id = %rec.id, pod = %rec.name, missing = ?missing, "recovery: pinned namespaces are gone; marking the sandbox NotReady");
                    // NotReady is true whether or not the rest stops now; a failed
                    // stop is finished by the kubelet's StopPodSandbox.
                    let stopped = self.stop_resources(rec).await;
                    rec.state = PodState::NotReady;
                    self.store.update_pod(rec).await?;
                    stopped?;
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
                    .map_err(CriError::io("rewriting pod files"))?;
                    if let Some((uid, gid)) =
                        super::pod_userns(&rec.config).and_then(|u| u.root_on_host())
                    {
                        podfiles::chown_all(&rec.dir, uid, gid)
                            .map_err(CriError::io("handing the pod files to the pod's root"))?;
                    }
                }
            }
            PodState::NotReady => {}
        }
        Ok(true)
    }
}

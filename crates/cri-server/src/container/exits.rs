//! The exit watcher: one task for every running container. The shim writes the exit
//! record before it reports an exit, so the record appearing is the exit; a shim
//! that no longer answers is checked for less often. No thread or connection is held
//! per container.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crius_shim::client::{self, ExitStatus};
use crius_store::{ContainerRecord, ContainerState};
use tracing::{info, warn};

use super::Containers;
use crate::error::CriResult;
use crate::util::{blocking, nanos_of, now_nanos};

/// How often the exit watcher looks for exit records.
const EXIT_POLL: Duration = Duration::from_millis(100);
/// Every how many polls it also checks that each shim still answers.
pub(super) const SHIM_PROBE_EVERY: u32 = 20;

/// What the exit watcher needs to know of one running container.
pub(super) struct Watched {
    exit_file: PathBuf,
    socket: PathBuf,
    ticks: u32,
    /// The shim is gone and processes of the container still run: their cgroup is
    /// looked at every round.
    orphaned: bool,
}

impl Containers {
    /// Puts a running container under the exit watcher.
    pub(super) fn watch(&self, rec: &ContainerRecord) {
        let mut w = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        w.insert(
            rec.id.clone(),
            Watched {
                exit_file: rec.bundle.join("exit.json"),
                socket: rec.socket.clone(),
                ticks: 0,
                orphaned: false,
            },
        );
    }

    /// Takes a container from the exit watcher.
    pub(super) fn unwatch(&self, id: &str) {
        let mut w = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        w.remove(id);
    }

    /// Starts the exit watcher task.
    pub fn start_exit_watcher(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(EXIT_POLL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                this.poll_exits().await;
            }
        });
    }

    /// One round of the exit watcher.
    pub(super) async fn poll_exits(&self) {
        let candidates: Vec<(String, PathBuf, PathBuf, bool, bool)> = {
            let mut w = self.watched.lock().unwrap_or_else(|p| p.into_inner());
            w.iter_mut()
                .map(|(id, x)| {
                    x.ticks = x.ticks.wrapping_add(1);
                    let probe_shim = x.ticks % SHIM_PROBE_EVERY == 0;
                    (
                        id.clone(),
                        x.exit_file.clone(),
                        x.socket.clone(),
                        probe_shim,
                        x.orphaned,
                    )
                })
                .collect()
        };
        let mut settled = Vec::new();
        for (id, exit_file, socket, probe_shim, orphaned) in candidates {
            let exited = exit_file.exists();
            let shim_gone = orphaned
                || (!exited && probe_shim && {
                    let shims = self.shims.clone();
                    blocking(move || Ok(!shims.is_alive(&socket)))
                        .await
                        .unwrap_or(false)
                });
            if !exited && !shim_gone {
                continue;
            }
            let _guard = self.locks.lock(&id).await;
            if !exited {
                match self.still_running_without_shim(&id, orphaned).await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => {
                        warn!(container_id = %id, error = %e, "looking for the processes of a container whose shim is gone");
                        continue;
                    }
                }
            }
            match self.settle(&id, None, None).await {
                Ok(recorded) => {
                    self.unwatch(&id);
                    // A stop that recorded the exit first tells the plugins itself.
                    if recorded {
                        match self.store.container(&id).await {
                            Ok(Some(rec)) => settled.push((rec, self.nri_stop_pending(&id))),
                            Ok(None) => {}
                            Err(e) => {
                                warn!(container_id = %id, error = %e, "reading an exited container")
                            }
                        }
                    }
                }
                Err(e) => {
                    warn!(container_id = %id, error = %e, "recording the container's exit");
                }
            }
        }
        // What the exited containers held while they could run goes now, all at
        // once, so that RemoveContainer has little left to do.
        // NRI plugins hear of a container that stopped by itself as of one stopped by
        // StopContainer (outside its lock, so that a plugin may act on it).
        futures_util::future::join_all(settled.into_iter().map(|(rec, told)| async move {
            self.tear_down_settled(&rec.id).await;
            if let Err(e) = self
                .nri_event(crate::nri::api::Event::StopContainer, &rec)
                .await
            {
                warn!(container_id = %rec.id, error = %e, "NRI plugins on a container's exit");
            }
            self.nri_stops
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&rec.id);
            drop(told);
        }))
        .await;
    }

    /// Marks the NRI StopContainer of an exit the watcher recorded (under the
    /// container's lock) as on its way, until the returned sender is dropped.
    fn nri_stop_pending(&self, id: &str) -> tokio::sync::watch::Sender<bool> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        self.nri_stops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), rx);
        tx
    }

    /// Waits until plugins have heard of the exit of `id` the watcher recorded, if
    /// that is still on its way: a StopContainer it overtook, or a RemoveContainer
    /// right after the exit, returns only then, so that plugins hear of the stop
    /// before the removal.
    pub(super) async fn nri_stop_told(&self, id: &str) {
        let pending = self
            .nri_stops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned();
        if let Some(mut rx) = pending {
            // The sender is dropped once the plugins are told.
            let _ = rx.wait_for(|told| *told).await;
        }
    }

    /// Tears down an exited container (under its lock; one removed meanwhile is gone).
    pub(super) async fn tear_down_settled(&self, id: &str) {
        let _guard = self.locks.lock(id).await;
        match self.store.container(id).await {
            Ok(Some(rec)) if rec.state == ContainerState::Exited => {
                self.tear_down_exited(&rec).await;
            }
            Ok(_) => {}
            Err(e) => warn!(container_id = %id, error = %e, "reading an exited container"),
        }
    }

    /// For a container whose shim is gone: whether processes of it still run in its
    /// cgroup. The first time they are found, the record says so and the watcher
    /// looks at the cgroup every round from then on.
    async fn still_running_without_shim(&self, id: &str, known: bool) -> CriResult<bool> {
        let Some(mut rec) = self.store.container(id).await? else {
            return Ok(false);
        };
        if self.orphan_pids(&rec).await?.is_empty() {
            return Ok(false);
        }
        if !known {
            warn!(container_id = %id, "the container's shim is gone; its processes still run");
            rec.message = super::orphans::ORPHANED.to_string();
            self.store.update_container(&rec).await?;
            let mut w = self.watched.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(x) = w.get_mut(id) {
                x.orphaned = true;
            }
        }
        Ok(true)
    }

    /// Records an exit: from the exit record the shim wrote, or from the exit the
    /// shim reported (`waited`), or, with neither, as `ShimDied`.
    /// `note`, when given, becomes the record's message.
    pub(super) async fn settle(
        &self,
        id: &str,
        waited: Option<ExitStatus>,
        note: Option<&str>,
    ) -> CriResult<bool> {
        let Some(mut rec) = self.store.container(id).await? else {
            return Ok(false);
        };
        if rec.state == ContainerState::Exited {
            return Ok(false);
        }
        let exit_file = rec.bundle.join("exit.json");
        let record = blocking(move || Ok(client::read_exit_file(&exit_file).ok().flatten()))
            .await
            .ok()
            .flatten();
        match (record, waited) {
            (Some(x), _) => {
                rec.exit_code = i32::try_from(x.exit_code).unwrap_or(255);
                rec.finished_at = i64::try_from(x.exited_at_unix_nanos).unwrap_or(i64::MAX);
                rec.reason = if x.oom_killed {
                    "OOMKilled".into()
                } else if x.exit_code == 0 {
                    "Completed".into()
                } else {
                    "Error".into()
                };
            }
            (None, Some(st)) => {
                rec.exit_code = i32::try_from(st.code).unwrap_or(255);
                rec.finished_at = nanos_of(st.at);
                rec.reason = if st.code == 0 { "Completed" } else { "Error" }.into();
            }
            (None, None) => {
                rec.exit_code = 255;
                rec.finished_at = now_nanos();
                rec.reason = "ShimDied".into();
                rec.message = "the container's shim died without recording an exit".into();
            }
        }
        if let Some(note) = note {
            rec.message = note.to_string();
        }
        rec.state = ContainerState::Exited;
        info!(container_id = %rec.id, exit_code = rec.exit_code, reason = %rec.reason, "container exited");
        self.store.update_container(&rec).await?;
        // Every way a container stops comes here once (under its lock): StopContainer,
        // an exit of its own, its shim dying, recovery.
        self.event(crate::events::Kind::ContainerStoppedEvent, &rec)
            .await;
        Ok(true)
    }
}

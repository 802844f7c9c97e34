//! Containers: one crius-shim per container driving runc or crun. One file per
//! operation: [`create`] (CreateContainer), [`lifecycle`] (Start, Stop, Remove),
//! [`exits`] (the exit watcher), [`query`] (ContainerStatus, ListContainers),
//! [`stats`], [`metrics`] (the CRI metrics, from a [`sample`] of the cgroup), [`exec`] (ExecSync, ReopenContainerLog, UpdateContainerResources),
//! [`recover`] (start-up).
//!
//! Invariants (what start-up recovery relies on):
//! - A record is written in state `Creating`, with its name reserved, before anything
//!   is made on the host; it becomes `Created` only when the shim holds a created
//!   container. A `Creating` record found at start-up is undone.
//! - Everything a container owns lives in its bundle `<run_dir>/containers/<id>/`
//!   (config.json, the mounted rootfs, the exit record), its writable layer (keyed
//!   by the container id), and its shim (socket `<run_dir>/s/<id prefix>.sock`).
//!   A release undoes all of it and is safe on a half-made container; a failed
//!   CreateContainer undoes exactly the steps it made, newest first.
//! - The shim, not criusd, holds the container's stdio, writes its log and records its
//!   exit durably; criusd can die at any moment. The exit watcher turns the shim's
//!   exit record into the record's `Exited` state; at start-up the watch is
//!   re-established.
//! - A container is never reported exited while a process of it runs. When its shim
//!   is gone without an exit record, its processes are found through its cgroup
//!   ([`orphans`]): while any runs it stays `Running`, StopContainer signals them
//!   there, and it is reported exited (reason `ShimDied` unless criusd stopped it)
//!   once the cgroup is empty.

mod create;
mod exec;
mod exits;
pub mod features;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod lifecycle;
mod metrics;
mod orphans;
mod query;
mod recover;
mod sample;
mod stats;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crius_cri_api::v1 as cri;
use crius_store::{ContainerRecord, ContainerState, Store};
use tracing::warn;

use crate::config::Config;
use crate::creations::Creations;
use crate::error::{CriError, CriResult};
use crate::failpoint;
use crate::host::{Processes, Rootfs, ShimAddr, ShimApi};
use crate::sandbox::Sandboxes;
use crate::util::{Locks, blocking};
use crius_images::Images;

pub use metrics::descriptors as metric_descriptors;
pub use query::status_of;
pub use recover::STREAM_EXEC_PREFIX;

/// The container manager.
pub struct Containers {
    config: Arc<Config>,
    store: Store,
    sandboxes: Arc<Sandboxes>,
    images: Arc<Images>,
    shims: Arc<dyn ShimApi>,
    rootfs: Arc<dyn Rootfs>,
    procs: Arc<dyn Processes>,
    /// The crius-shim binary the shims are started from.
    shim_binary: PathBuf,
    /// What spec generation needs to know of the node (probed once).
    host_facts: crius_spec::HostFacts,
    locks: Locks,
    creations: Arc<Creations>,
    /// Running containers the exit watcher looks after.
    watched: std::sync::Mutex<HashMap<String, exits::Watched>>,
    /// Exits the watcher recorded whose NRI StopContainer is still on its way
    /// ([`Containers::nri_stop_told`]).
    nri_stops: std::sync::Mutex<HashMap<String, tokio::sync::watch::Receiver<bool>>>,
    /// Each running container's last CPU reading for its stats (time, nanoseconds
    /// used), to tell its rate from; forgotten when it is removed.
    cpu_seen: std::sync::Mutex<HashMap<String, (i64, u64)>>,
    /// How long SIGKILLed processes may take to go ([`KILL_GRACE`]).
    kill_grace: Duration,
    /// How each runtime handler gets recursive read-only mounts (probed at start-up,
    /// [`Containers::probe_features`]; a handler not probed cannot).
    rro: std::sync::RwLock<HashMap<String, features::RecursiveReadOnly>>,
    /// The CDI devices of the spec directories (`[cdi]`).
    cdi: Arc<crate::cdi::Cdi>,
}

/// How long a SIGKILLed container may take to be reaped before a stop gives up
/// waiting (through the shim: the exit watcher records it whenever it goes; through
/// the cgroup of an orphan: the stop fails).
const KILL_GRACE: Duration = Duration::from_secs(10);

/// The host effects the container manager is built over.
pub struct Host {
    pub shims: Arc<dyn ShimApi>,
    pub rootfs: Arc<dyn Rootfs>,
    pub procs: Arc<dyn Processes>,
    pub shim_binary: PathBuf,
}

/// What a container has on the host, in the order CreateContainer makes it;
/// released newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The bundle directory (config.json, FIFOs, exit record, shim scratch files).
    Bundle,
    /// The writable layer.
    Layer,
    /// The rootfs mount.
    Mount,
    /// The prepared request mounts: image volumes (a view of the image's layers,
    /// mounted at `<bundle>/volumes/<index>`) and recursive read-only clones crius made
    /// (`<bundle>/rro/<index>`). Found again from the record's mounts.
    Mounts,
    /// The shim process.
    Shim,
    /// The container in the shim's runtime (`runc create`).
    Task,
}

/// The file in a bundle that says the container has been torn down
/// ([`Containers::tear_down`]): its runtime state, shim and mounts are gone.
const TORN_DOWN: &str = "torn-down";

/// The FIFO a `stdin: true` container's stdin comes from. The shim holds it open
/// read-write for the container's life, so attach sessions can come and go without the
/// container seeing EOF; only CloseIO (stdin_once) ends its stdin.
pub fn stdin_fifo(bundle: &Path) -> PathBuf {
    bundle.join("stdin.fifo")
}

impl Containers {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        sandboxes: Arc<Sandboxes>,
        images: Arc<Images>,
        host: Host,
    ) -> Containers {
        Containers {
            store,
            sandboxes,
            images,
            shims: host.shims,
            rootfs: host.rootfs,
            procs: host.procs,
            shim_binary: host.shim_binary,
            host_facts: crius_spec::HostFacts::probe(),
            locks: Locks::default(),
            creations: Arc::new(Creations::default()),
            watched: std::sync::Mutex::new(HashMap::new()),
            nri_stops: std::sync::Mutex::new(HashMap::new()),
            cpu_seen: std::sync::Mutex::new(HashMap::new()),
            kill_grace: KILL_GRACE,
            rro: std::sync::RwLock::new(HashMap::new()),
            cdi: Arc::new(crate::cdi::Cdi::new(config.cdi.clone())),
            config,
        }
    }

    /// The CDI devices known and the spec files that failed, for verbose Status
    /// (blocking: may read the spec directories).
    pub fn cdi_info(&self) -> serde_json::Value {
        self.cdi.info()
    }

    /// What the manager keeps per id in memory: held or awaited locks, creations in
    /// flight or unclaimed, containers under the exit watcher (with the exits whose
    /// NRI StopContainer is on its way).
    #[cfg(test)]
    fn tracked(&self) -> (usize, usize, usize) {
        let watched = self.watched.lock().unwrap_or_else(|p| p.into_inner()).len()
            + self
                .nri_stops
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .len();
        (
            self.locks.ids_tracked(),
            self.creations.names_tracked(),
            watched,
        )
    }

    /// Probes what each configured runtime handler can do (runs `<runtime>
    /// features`). Blocking; called once at start-up.
    pub fn probe_features(&self) {
        let handlers = self
            .config
            .runtimes
            .iter()
            .map(|(name, h)| (name.clone(), h.path.clone()))
            .collect();
        let probed = features::probe(&handlers);
        *self.rro.write().unwrap_or_else(|p| p.into_inner()) = probed;
    }

    /// The configured name of runtime handler `handler` (`""`: the default).
    fn handler_name<'a>(&'a self, handler: &'a str) -> &'a str {
        if handler.is_empty() {
            self.config.default_runtime.as_str()
        } else {
            handler
        }
    }

    /// Whether runtime handler `handler` (`""`: the default) is configured and its
    /// OCI runtime installed.
    pub fn handler_installed(&self, handler: &str) -> bool {
        self.config
            .runtimes
            .get(self.handler_name(handler))
            .is_some_and(|h| crate::util::find_binary(&h.path).is_some())
    }

    /// How runtime handler `handler` gets recursive read-only mounts (`""`: the
    /// default handler).
    pub fn recursive_read_only(&self, handler: &str) -> features::RecursiveReadOnly {
        self.rro
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(self.handler_name(handler))
            .copied()
            .unwrap_or_default()
    }

    /// The same manager waiting `grace` instead of [`KILL_GRACE`] for SIGKILLed
    /// processes (the call-sequence fuzz target, whose injected kill failures would
    /// otherwise cost ten seconds each).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn with_kill_grace(mut self, grace: Duration) -> Containers {
        self.kill_grace = grace;
        self
    }

    fn bundle_of(&self, id: &str) -> PathBuf {
        self.config.run_dir.join("containers").join(id)
    }

    fn socket_of(&self, id: &str) -> PathBuf {
        self.config
            .run_dir
            .join("s")
            .join(format!("{}.sock", &id[..id.len().min(24)]))
    }

    /// Resolves a full id or a unique prefix of one.
    async fn resolve(&self, id: &str, field: &str) -> CriResult<Option<ContainerRecord>> {
        if id.is_empty() {
            return Err(CriError::invalid(field, "must not be empty"));
        }
        if let Some(rec) = self.store.container(id).await? {
            return Ok(Some(rec));
        }
        let mut m: Vec<ContainerRecord> = self
            .store
            .containers()
            .await?
            .into_iter()
            .filter(|c| c.id.starts_with(id))
            .collect();
        match m.len() {
            0 => Ok(None),
            1 => Ok(m.pop()),
            n => Err(CriError::invalid(
                field,
                format!("{id:?} is a prefix of {n} container ids; give more of it"),
            )),
        }
    }

    /// A container by full id or unique prefix, which must exist.
    async fn must(&self, id: &str) -> CriResult<ContainerRecord> {
        self.resolve(id, "container_id")
            .await?
            .ok_or_else(|| CriError::NotFound(format!("container {id:?} not found")))
    }

    /// A running container, for the exec and streaming calls.
    pub async fn running(&self, id: &str) -> CriResult<ContainerRecord> {
        let c = self.must(id).await?;
        if c.state != ContainerState::Running {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        Ok(c)
    }

    /// Runs `f` with the container's shim, on the blocking pool.
    /// The future owns what it needs (it can be spawned).
    fn on_shim<T, F>(
        &self,
        rec: &ContainerRecord,
        f: F,
    ) -> impl std::future::Future<Output = CriResult<T>> + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce(&dyn ShimApi, ShimAddr<'_>) -> CriResult<T> + Send + 'static,
    {
        let (shims, socket, id) = (self.shims.clone(), rec.socket.clone(), rec.id.clone());
        blocking(move || {
            f(
                &*shims,
                ShimAddr {
                    socket: &socket,
                    id: &id,
                },
            )
        })
    }

    /// Publishes a container event (after the change it reports is in the store).
    async fn event(&self, kind: crate::events::Kind, rec: &ContainerRecord) {
        self.sandboxes
            .events()
            .container(kind, &rec.id, &rec.pod_id)
            .await;
    }

    /// The containers of a pod.
    /// Tells NRI plugins of a container's lifecycle event (nothing when NRI is off).
    async fn nri_event(
        &self,
        event: crate::nri::api::Event,
        rec: &ContainerRecord,
    ) -> CriResult<()> {
        let nri = self.sandboxes.nri();
        if !nri.active() {
            return Ok(());
        }
        match self.store.pod(&rec.pod_id).await? {
            Some(pod) => nri.container_event(event, &pod, rec).await,
            None => Ok(()),
        }
    }

    async fn of_pod(&self, pod_id: &str) -> CriResult<Vec<ContainerRecord>> {
        Ok(self.store.containers_of_pod(pod_id).await?)
    }

    /// Undoes one step. Idempotent.
    fn undo(
        shims: &dyn ShimApi,
        rootfs: &dyn Rootfs,
        rec: &ContainerRecord,
        step: Step,
    ) -> CriResult<()> {
        failpoint::hit(match step {
            Step::Task => "container.undo.task",
            Step::Shim => "container.undo.shim",
            Step::Mount => "container.undo.mount",
            Step::Mounts => "container.undo.mounts",
            Step::Layer => "container.undo.layer",
            Step::Bundle => "container.undo.bundle",
        })?;
        let at = ShimAddr {
            socket: &rec.socket,
            id: &rec.id,
        };
        match step {
            Step::Task => {
                // Best effort, as the container may be gone already: its runtime
                // state lives in the bundle, which goes last. In a PID namespace of
                // its own, nothing outlives an init that has exited: no kill is
                // needed. A container sharing the pod's or the node's keeps its
                // other processes until they are killed.
                let exited = matches!(shims.state(at, ""),
                    Ok(s) if s.status == crius_shim::client::ProcessStatus::Stopped);
                let killed = if exited && has_own_pid_namespace(&rec.config) {
                    Ok(())
                } else {
                    shims.kill(at, "", 9, true)
                };
                if let Err(e) = &killed {
                    tracing::debug!(container_id = %rec.id, error = %e, "killing the container");
                }
                if let Err(e) = shims.delete(at, "") {
                    tracing::debug!(container_id = %rec.id, error = %e, "deleting the container");
                }
                // A container the kill did not stop would outlive its shim and its
                // record: the runtime deletes it by force, or the release stops here.
                let runs = matches!(shims.state(at, ""),
                    Ok(s) if s.status != crius_shim::client::ProcessStatus::Stopped);
                if killed.is_err() && runs {
                    shims.force_delete(&rec.id, &rec.bundle, &rec.runtime)?;
                }
                Ok(())
            }
            Step::Shim => {
                if let Err(e) = shims.shutdown(at) {
                    // A shim that is gone needs no shutdown; one that still runs would
                    // be lost with the record, so the release stops here.
                    if shims.is_alive(at.socket) {
                        return Err(e);
                    }
                    tracing::debug!(container_id = %rec.id, error = %e, "shutting the shim down");
                }
                match std::fs::remove_file(&rec.socket) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(CriError::io(format!("removing {}", rec.socket.display()))(
                            e,
                        ))
                    }
                    _ => Ok(()),
                }
            }
            Step::Mount => rootfs.unmount(&rec.bundle.join("rootfs")),
            Step::Mounts => {
                // Each one idempotent, whether it was made or not.
                for (i, m) in rec.config.mounts.iter().enumerate().rev() {
                    if is_image_volume(m) {
                        rootfs.unmount(&volume_dir(&rec.bundle, i))?;
                        rootfs.remove_layer(&volume_key(&rec.id, i))?;
                    } else if is_idmapped(m) {
                        rootfs.detach(&idmap_dir(&rec.bundle, i))?;
                    } else if m.recursive_read_only {
                        rootfs.detach(&rro_dir(&rec.bundle, i))?;
                    }
                }
                Ok(())
            }
            Step::Layer => rootfs.remove_layer(&rec.id),
            Step::Bundle => match std::fs::remove_dir_all(&rec.bundle) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CriError::io(format!(
                    "removing {}",
                    rec.bundle.display()
                ))(e)),
                _ => Ok(()),
            },
        }
    }

    /// Undoes the steps of a failed creation, newest first, every one of them even
    /// when one fails. Returns whether all of them were undone: if not, the caller
    /// keeps the record (state `Creating`), so that RemoveContainer or start-up
    /// recovery finds what is left.
    async fn undo_made(&self, rec: &ContainerRecord, made: Vec<Step>) -> bool {
        let (shims, rootfs, rec) = (self.shims.clone(), self.rootfs.clone(), rec.clone());
        blocking(move || {
            let mut all = true;
            for step in made.iter().rev() {
                if let Err(e) = Self::undo(&*shims, &*rootfs, &rec, *step) {
                    warn!(container_id = %rec.id, ?step, error = %e, "undoing a step of a failed container");
                    all = false;
                }
            }
            Ok(all)
        })
        .await
        .unwrap_or(false)
    }

    /// Undoes everything a container has on the host. Safe on a half-made one. A
    /// container whose shim is gone has its runtime state force-deleted by a one-off
    /// shim instead. Stops at the first failure (every step is idempotent: the caller
    /// can retry).
    async fn release(&self, rec: &ContainerRecord) -> CriResult<()> {
        let (shims, rootfs, rec) = (self.shims.clone(), self.rootfs.clone(), rec.clone());
        blocking(move || {
            Self::tear_down(&*shims, &*rootfs, &rec)?;
            for step in [Step::Layer, Step::Bundle] {
                Self::undo(&*shims, &*rootfs, &rec, step)?;
            }
            Ok(())
        })
        .await
    }

    /// What a container holds only while it may run: the runtime's state of it, its
    /// shim, its mounts. Undone as soon as it has exited (see [`Containers::settle`]),
    /// so that RemoveContainer is left with the writable layer and the bundle, as in
    /// containerd, whose task is deleted when it exits. Blocking; idempotent: done
    /// once, it is recorded in the bundle ([`TORN_DOWN`]) and not done again.
    fn tear_down(shims: &dyn ShimApi, rootfs: &dyn Rootfs, rec: &ContainerRecord) -> CriResult<()> {
        let marker = rec.bundle.join(TORN_DOWN);
        if marker.exists() {
            return Ok(());
        }
        if shims.is_alive(&rec.socket) {
            Self::undo(shims, rootfs, rec, Step::Task)?;
        } else {
            shims.force_delete(&rec.id, &rec.bundle, &rec.runtime)?;
        }
        for step in [Step::Shim, Step::Mounts, Step::Mount] {
            Self::undo(shims, rootfs, rec, step)?;
        }
        // Only an existing bundle is marked (a failed creation may not have made it).
        if rec.bundle.is_dir() {
            std::fs::write(&marker, b"")
                .map_err(CriError::io(format!("writing {}", marker.display())))?;
        }
        Ok(())
    }

    /// [`Containers::tear_down`] of an exited container, on the blocking pool. A
    /// failure is logged: RemoveContainer (or the next start) tries again.
    async fn tear_down_exited(&self, rec: &ContainerRecord) {
        let (shims, rootfs, r) = (self.shims.clone(), self.rootfs.clone(), rec.clone());
        if let Err(e) = blocking(move || Self::tear_down(&*shims, &*rootfs, &r)).await {
            warn!(container_id = %rec.id, error = %e, "tearing down an exited container; RemoveContainer tries again");
        }
    }
}

/// Whether a container gets a PID namespace of its own (its spec's default).
fn has_own_pid_namespace(config: &cri::ContainerConfig) -> bool {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .is_none_or(|o| o.pid == cri::NamespaceMode::Container as i32)
}

/// Whether a request mount is an image volume.
pub(crate) fn is_image_volume(m: &cri::Mount) -> bool {
    m.image.as_ref().is_some_and(|i| !i.image.is_empty())
}

/// The snapshotter key of the view behind image volume `index` of container `id`.
fn volume_key(id: &str, index: usize) -> String {
    format!("{id}-v{index}")
}

/// Where image volume `index` is mounted on the host.
fn volume_dir(bundle: &Path, index: usize) -> PathBuf {
    bundle.join("volumes").join(index.to_string())
}

/// Whether a request mount asks for an idmapped mount.
pub(crate) fn is_idmapped(m: &cri::Mount) -> bool {
    !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty()
}

/// Where crius mounts the idmapped clone of request mount `index`.
fn idmap_dir(bundle: &Path, index: usize) -> PathBuf {
    bundle.join("idmap").join(index.to_string())
}

/// Where crius mounts the recursive read-only clone of request mount `index`.
fn rro_dir(bundle: &Path, index: usize) -> PathBuf {
    bundle.join("rro").join(index.to_string())
}

/// The CRI state of a stored state.
fn cri_state(s: ContainerState) -> crius_cri_api::v1::ContainerState {
    use crius_cri_api::v1::ContainerState as Cri;
    match s {
        ContainerState::Creating | ContainerState::Created => Cri::ContainerCreated,
        ContainerState::Running => Cri::ContainerRunning,
        ContainerState::Exited => Cri::ContainerExited,
    }
}

/// Signal numbers by name (the image's STOPSIGNAL, or a CRI `Signal` without its
/// `SIGNAL_` prefix): `SIGUSR1`, `usr1`, `10`, `SIGRTMIN+3`, `RTMAX-2`.
fn signal_number(name: &str) -> Option<u32> {
    let n = name.trim().to_uppercase();
    if n.is_empty() {
        return Some(15);
    }
    if let Ok(v) = n.parse::<u32>() {
        return Some(v);
    }
    let n = n.strip_prefix("SIG").unwrap_or(&n);
    // Linux numbering; the real-time range is the C library's (34-64).
    Some(match n {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "TRAP" => 5,
        "ABRT" | "IOT" => 6,
        "BUS" => 7,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        "STKFLT" => 16,
        "CHLD" | "CLD" => 17,
        "CONT" => 18,
        "STOP" => 19,
        "TSTP" => 20,
        "TTIN" => 21,
        "TTOU" => 22,
        "URG" => 23,
        "XCPU" => 24,
        "XFSZ" => 25,
        "VTALRM" => 26,
        "PROF" => 27,
        "WINCH" => 28,
        "IO" | "POLL" => 29,
        "PWR" => 30,
        "SYS" => 31,
        "RTMIN" => 34,
        "RTMAX" => 64,
        _ => {
            let (base, offset) = if let Some(k) = n.strip_prefix("RTMIN+") {
                (34, k.parse::<i64>().ok()?)
            } else if let Some(k) = n.strip_prefix("RTMAX-") {
                (64, -k.parse::<i64>().ok()?)
            } else {
                return None;
            };
            let v = base + offset;
            if !(34..=64).contains(&v) {
                return None;
            }
            u32::try_from(v).ok()?
        }
    })
}

/// The number of a CRI `Signal` (`ContainerConfig.stop_signal`); None for
/// RUNTIME_DEFAULT and values outside the enum.
fn cri_signal_number(value: i32) -> Option<u32> {
    let signal = cri::Signal::try_from(value).ok()?;
    if signal == cri::Signal::RuntimeDefault {
        return None;
    }
    let name = signal.as_str_name().strip_prefix("SIGNAL_")?;
    signal_number(&name.replace("PLUS", "+").replace("MINUS", "-"))
}

/// The CRI `Signal` of a signal number: the first name the enum gives it
/// (SIGABRT before SIGIOT, SIGCHLD before SIGCLD, SIGIO before SIGPOLL).
fn cri_signal(number: u32) -> cri::Signal {
    (1..)
        .map_while(|v| cri::Signal::try_from(v).ok())
        .find(|s| cri_signal_number(*s as i32) == Some(number))
        .unwrap_or(cri::Signal::RuntimeDefault)
}

/// The signal StopContainer sends first: the container config's, else the image's,
/// else SIGTERM.
fn stop_signal(rec: &ContainerRecord) -> u32 {
    cri_signal_number(rec.config.stop_signal)
        .or_else(|| signal_number(&rec.stop_signal))
        .unwrap_or(15)
}

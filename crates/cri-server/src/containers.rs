//! Containers: one crius-shim per container driving runc or crun.
//!
//! Invariants (what start-up recovery relies on):
//! - A record is written in state `Creating`, with its name reserved, before anything
//!   is made on the host; it becomes `Created` only when the shim holds a created
//!   container. A `Creating` record found at start-up is undone.
//! - Everything a container owns lives in its bundle `<run_dir>/containers/<id>/`
//!   (config.json, the mounted rootfs, the exit record), its writable snapshot (keyed
//!   by the container id), and its shim (socket `<run_dir>/s/<id prefix>.sock`).
//!   [`Containers::release`] undoes all of it and is safe on a half-made container.
//! - The shim, not criusd, holds the container's stdio, writes its log and records its
//!   exit durably; criusd can die at any moment. Each running container has a waiter
//!   task that turns the shim's exit report into the record's `Exited` state; at
//!   start-up the waiters are re-established, and a container whose shim is gone is
//!   reported from its exit record, or as exited with reason `ShimDied`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crius_shim::client::{self, ProcessIo, Shim};
use crius_snapshotter::{Digest, Snapshotter};
use k8s_cri::v1 as cri;
use tracing::{info, warn};

use crate::config::Config;
use crate::container::spec::{self, PodNamespaces, SpecInput};
use crate::creations::Creations;
use crate::error::{CriError, CriResult};
use crate::sandbox::Sandboxes;
use crate::util::{Locks, blocking, nanos_of, now_nanos};
use crius_images::Images;
use crius_store::{ContainerRecord, ContainerState, PodState, Reserve, Store};

/// Default cap on ExecSync output per stream (the kubelet's own limit is 16 MiB).
const EXEC_SYNC_OUTPUT_LIMIT: u64 = 16 * 1024 * 1024;

fn shim_err(context: impl std::fmt::Display) -> impl FnOnce(client::Error) -> CriError {
    move |e| match e {
        client::Error::ShimGone(_) => CriError::FailedPrecondition(format!("{context}: {e}")),
        _ => CriError::Internal(format!("{context}: {e}")),
    }
}

/// Signal numbers by name (the image's STOPSIGNAL).
fn signal_number(name: &str) -> Option<u32> {
    let n = name.trim().to_uppercase();
    if n.is_empty() {
        return Some(15);
    }
    if let Ok(v) = n.parse::<u32>() {
        return Some(v);
    }
    let n = n.strip_prefix("SIG").unwrap_or(&n);
    Some(match n {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "WINCH" => 28,
        "PWR" => 30,
        "STOP" => 19,
        "CONT" => 18,
        _ => {
            let rt = n.strip_prefix("RTMIN+")?.parse::<u32>().ok()?;
            34 + rt
        }
    })
}

/// The FIFO a `stdin: true` container's stdin comes from. The shim holds it open
/// read-write for the container's life, so attach sessions can come and go without the
/// container seeing EOF; only CloseIO (stdin_once) ends its stdin.
pub fn stdin_fifo(bundle: &std::path::Path) -> PathBuf {
    bundle.join("stdin.fifo")
}

/// The container manager.
pub struct Containers {
    config: Arc<Config>,
    store: Store,
    sandboxes: Arc<Sandboxes>,
    images: Arc<Images>,
    snapshots: Arc<Snapshotter>,
    shim_binary: PathBuf,
    oom_floor: i64,
    /// The daemon's capability bounding set (containers cannot get more).
    cap_bounding_set: u64,
    locks: Locks,
    creations: Arc<Creations>,
    /// Running containers the exit watcher looks after.
    watched: std::sync::Mutex<HashMap<String, Watched>>,
}

/// What the exit watcher needs to know of one running container.
struct Watched {
    exit_file: PathBuf,
    socket: PathBuf,
    ticks: u32,
}

/// How often the exit watcher looks for exit records.
const EXIT_POLL: Duration = Duration::from_millis(100);
/// Every how many polls it also checks that each shim still answers.
const SHIM_PROBE_EVERY: u32 = 20;

impl Containers {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        sandboxes: Arc<Sandboxes>,
        images: Arc<Images>,
        snapshots: Arc<Snapshotter>,
        shim_binary: PathBuf,
    ) -> Containers {
        let oom_floor = if spec::host_can_set_negative_oom_score_adj() {
            i64::MIN
        } else {
            spec::own_oom_score_adj()
        };
        Containers {
            config,
            store,
            sandboxes,
            images,
            snapshots,
            shim_binary,
            oom_floor,
            cap_bounding_set: spec::own_capability_bounding_set(),
            locks: Locks::default(),
            creations: Arc::new(Creations::default()),
            watched: std::sync::Mutex::new(HashMap::new()),
        }
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

    async fn record(&self, id: &str) -> CriResult<Option<ContainerRecord>> {
        let id = id.to_string();
        self.store.container(&id).await.map_err(CriError::from)
    }

    async fn save(&self, rec: &ContainerRecord) -> CriResult<()> {
        let rec = rec.clone();
        self.store
            .update_container(&rec)
            .await
            .map_err(CriError::from)
    }

    /// Resolves a full id or a unique prefix of one.
    async fn resolve(&self, id: &str, field: &str) -> CriResult<Option<ContainerRecord>> {
        if id.is_empty() {
            return Err(CriError::invalid(field, "must not be empty"));
        }
        if let Some(rec) = self.record(id).await? {
            return Ok(Some(rec));
        }
        let store = self.store.clone();
        let want = id.to_string();
        let field = field.to_string();
        blocking(move || {
            let mut m: Vec<ContainerRecord> = store
                .blocking()
                .containers()?
                .into_iter()
                .filter(|c| c.id.starts_with(&want))
                .collect();
            match m.len() {
                0 => Ok(None),
                1 => Ok(m.pop()),
                n => Err(CriError::invalid(
                    field,
                    format!("{want:?} is a prefix of {n} container ids; give more of it"),
                )),
            }
        })
        .await
    }

    async fn must(&self, id: &str) -> CriResult<ContainerRecord> {
        self.resolve(id, "container_id")
            .await?
            .ok_or_else(|| CriError::NotFound(format!("container {id:?} not found")))
    }

    /// CreateContainer.
    pub async fn create(
        self: &Arc<Self>,
        pod_id: &str,
        config: Option<cri::ContainerConfig>,
        sandbox_config: Option<cri::PodSandboxConfig>,
    ) -> CriResult<String> {
        let config = config.ok_or_else(|| CriError::invalid("config", "is required"))?;
        let md = config
            .metadata
            .clone()
            .ok_or_else(|| CriError::invalid("config.metadata", "is required"))?;
        if md.name.is_empty() || md.name.contains(['/', '\0']) {
            return Err(CriError::invalid(
                "config.metadata.name",
                format!("{:?} must be non-empty, without '/' or NUL", md.name),
            ));
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_name.is_empty() {
            return Err(CriError::invalid("config.image.image", "must not be empty"));
        }
        if config.log_path.contains('\0') || config.log_path.split('/').any(|c| c == "..") {
            return Err(CriError::invalid(
                "config.log_path",
                format!(
                    "{:?} must stay inside the pod's log directory",
                    config.log_path
                ),
            ));
        }
        let pod = self
            .sandboxes
            .get(pod_id)
            .await?
            .ok_or_else(|| CriError::NotFound(format!("pod sandbox {pod_id:?} not found")))?;
        if pod.state != PodState::Ready {
            return Err(CriError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        let sandbox_config = sandbox_config.unwrap_or_else(|| pod.config.clone());
        let image = self.images.find(&image_name).await?.ok_or_else(|| {
            CriError::NotFound(format!(
                "image {image_name:?} is not present: pull it first"
            ))
        })?;
        let run = self.images.run_config(&image).await?;
        let pmd = pod.config.metadata.clone().unwrap_or_default();
        let name = format!(
            "{}_{}_{}_{}_{}",
            md.name, pmd.name, pmd.namespace, pmd.uid, md.attempt
        );
        let runtime = self
            .config
            .runtimes
            .get(&pod.runtime_handler)
            .map(|h| h.path.clone())
            .ok_or_else(|| {
                CriError::FailedPrecondition(format!(
                    "runtime handler {:?} of the pod is no longer configured",
                    pod.runtime_handler
                ))
            })?;
        let runtime = crate::server::find_binary(&runtime).ok_or_else(|| {
            CriError::FailedPrecondition(format!(
                "the OCI runtime {} of handler {:?} is not installed",
                runtime.display(),
                pod.runtime_handler
            ))
        })?;
        let store = self.store.clone();
        let this = self.clone();
        let reserved = name.clone();
        let key = name.clone();
        self.creations
            .run(
                &key,
                || match store.blocking().container_id_by_name(&reserved)? {
                    Some(existing) => Err(CriError::AlreadyExists(format!(
                        "container name {reserved:?} is already reserved by container {existing}"
                    ))),
                    None => Ok(()),
                },
                async move {
                    this.create_named(name, pod, config, sandbox_config, image, run, runtime)
                        .await
                },
            )
            .await
    }

    /// The work of CreateContainer once everything is validated (see [`Creations`]).
    #[allow(clippy::too_many_arguments)]
    async fn create_named(
        self: &Arc<Self>,
        name: String,
        pod: crius_store::PodRecord,
        config: cri::ContainerConfig,
        sandbox_config: cri::PodSandboxConfig,
        image: crius_store::ImageRecord,
        run: crius_images::ImageRunConfig,
        runtime: PathBuf,
    ) -> CriResult<String> {
        let md = config.metadata.clone().unwrap_or_default();
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let id = crate::sandbox::new_id()?;
        let _guard = self.locks.lock(&id).await;
        let log_path = if pod.config.log_directory.is_empty() || config.log_path.is_empty() {
            None
        } else {
            Some(PathBuf::from(&pod.config.log_directory).join(&config.log_path))
        };
        let rec = ContainerRecord {
            id: id.clone(),
            pod_id: pod.id.clone(),
            name,
            state: ContainerState::Creating,
            created_at: now_nanos(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            config: config.clone(),
            image: image_name,
            image_ref: image.id.clone(),
            log_path,
            bundle: self.bundle_of(&id),
            socket: self.socket_of(&id),
            runtime,
            pid: 0,
            stop_signal: run.stop_signal.clone(),
            uid: 0,
            gid: 0,
            supplemental_groups: Vec::new(),
        };
        let first = rec.clone();
        match self
            .store
            .insert_container(&first)
            .await
            .map_err(CriError::from)?
        {
            Reserve::Done => {}
            Reserve::Taken(existing) => {
                return Err(CriError::AlreadyExists(format!(
                    "container name {:?} is already reserved by container {existing}",
                    rec.name
                )));
            }
        }
        let mut rec = rec;
        match self.build(&mut rec, &pod, &sandbox_config, &run).await {
            Ok(()) => {
                info!(container_id = %id, pod_id = %pod.id, name = %md.name, "container created");
                Ok(id)
            }
            Err(e) => {
                warn!(container_id = %id, error = %e, "container creation failed; undoing it");
                if let Err(undo) = self.release(&rec).await {
                    warn!(container_id = %id, error = %undo, "undoing a failed container left something behind");
                }
                let cid = id.clone();
                let _ = self
                    .store
                    .delete_container(&cid)
                    .await
                    .map_err(CriError::from);
                Err(e)
            }
        }
    }

    async fn build(
        &self,
        rec: &mut ContainerRecord,
        pod: &crius_store::PodRecord,
        sandbox_config: &cri::PodSandboxConfig,
        run: &crius_images::ImageRunConfig,
    ) -> CriResult<()> {
        let bundle = rec.bundle.clone();
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs)
            .map_err(|e| CriError::internal(format!("creating {}", rootfs.display()), e))?;
        if let Some(dir) = rec.socket.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| CriError::internal(format!("creating {}", dir.display()), e))?;
        }
        if let Some(log) = &rec.log_path {
            if let Some(dir) = log.parent() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    CriError::internal(format!("creating log dir {}", dir.display()), e)
                })?;
            }
        }
        // The writable layer, mounted as the rootfs.
        let parent = match &run.top_chain_id {
            Some(c) => Some(
                Digest::parse(c).map_err(|e| CriError::Internal(format!("image chain id: {e}")))?,
            ),
            None => None,
        };
        let snapshots = self.snapshots.clone();
        let key = rec.id.clone();
        let rootfs_c = rootfs.clone();
        blocking(move || {
            let mounts = snapshots
                .prepare(&key, parent.as_ref())
                .map_err(|e| CriError::Internal(format!("preparing the writable layer: {e}")))?;
            crius_snapshotter::mount_all(&mounts, &rootfs_c)
                .map_err(|e| CriError::Internal(format!("mounting the rootfs: {e}")))
        })
        .await?;

        let namespaces = PodNamespaces {
            net: pod.namespaces.net.clone(),
            ipc: pod.namespaces.ipc.clone(),
            uts: pod.namespaces.uts.clone(),
            pid: pod
                .infra_pid
                .map(|p| PathBuf::from(format!("/proc/{p}/ns/pid"))),
            target_pid: self.target_pid_ns(&rec.config).await?,
        };
        // Spec generation reads the container's /etc/passwd and /etc/group and stats
        // devices; it runs on the blocking pool with owned copies of its inputs.
        let (container_id, sandbox_id) = (rec.id.clone(), pod.id.clone());
        let (config, sandbox) = (rec.config.clone(), sandbox_config.clone());
        let (image, pod_dir) = (run.clone(), pod.dir.clone());
        let (driver, floor, bounding) = (
            self.config.cgroup_driver(),
            self.oom_floor,
            self.cap_bounding_set,
        );
        let profiles = self.config.state_dir.join("seccomp");
        let (rootfs_c, bundle_c) = (rootfs.clone(), bundle.clone());
        let generated = blocking(move || {
            let generated = spec::generate(&SpecInput {
                container_id: &container_id,
                sandbox_id: &sandbox_id,
                config: &config,
                sandbox: &sandbox,
                image: &image,
                rootfs: &rootfs_c,
                pod_dir: &pod_dir,
                shm: None,
                namespaces: &namespaces,
                cgroup_driver: driver,
                oom_score_adj_floor: floor,
                seccomp_profile_root: &profiles,
                cap_bounding_set: bounding,
            })?;
            let json = serde_json::to_vec_pretty(&generated.spec)
                .map_err(|e| CriError::internal("serializing the OCI spec", e))?;
            std::fs::write(bundle_c.join("config.json"), json)
                .map_err(|e| CriError::internal("writing config.json", e))?;
            Ok(generated)
        })
        .await?;
        if !generated.stop_signal.is_empty() {
            rec.stop_signal = generated.stop_signal.clone();
        }
        rec.uid = generated.uid;
        rec.gid = generated.gid;
        rec.supplemental_groups = generated
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.user().additional_gids().clone())
            .unwrap_or_default();

        let opts = client::StartOptions {
            shim_binary: self.shim_binary.clone(),
            id: rec.id.clone(),
            bundle: bundle.clone(),
            socket: rec.socket.clone(),
            runtime: rec.runtime.clone(),
            runtime_root: None,
            // The shim always writes the log itself (and tees it to attachers); a
            // container without a log path has its output discarded, as containerd does.
            log_path: Some(
                rec.log_path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/dev/null")),
            ),
            exit_file: None,
            shim_log: Some(bundle.join("shim.log")),
        };
        let terminal = rec.config.tty;
        // A container that keeps stdin open (`stdin: true`) gets a FIFO the shim holds
        // for its whole life; attach sessions write into it (see `stdin_fifo`).
        let stdin = if rec.config.stdin {
            let fifo = stdin_fifo(&bundle);
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| CriError::internal(format!("mkfifo {}", fifo.display()), e))?;
            fifo.display().to_string()
        } else {
            String::new()
        };
        let pid = blocking(move || {
            let shim = client::start(&opts).map_err(shim_err("starting the shim"))?;
            shim.create(&ProcessIo {
                terminal,
                stdin,
                ..Default::default()
            })
            .map_err(shim_err("creating the container"))
        })
        .await?;
        rec.pid = pid;
        rec.state = ContainerState::Created;
        self.save(rec).await
    }

    /// The PID namespace of the container a TARGET-mode container (an ephemeral
    /// debug container) joins.
    async fn target_pid_ns(&self, config: &cri::ContainerConfig) -> CriResult<Option<PathBuf>> {
        let Some(ns) = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
        else {
            return Ok(None);
        };
        if ns.pid != cri::NamespaceMode::Target as i32 || ns.target_id.is_empty() {
            return Ok(None);
        }
        let field = "config.linux.security_context.namespace_options.target_id";
        let target = self.resolve(&ns.target_id, field).await?.ok_or_else(|| {
            CriError::NotFound(format!("{field}: container {:?} not found", ns.target_id))
        })?;
        if target.state != ContainerState::Running || target.pid == 0 {
            return Err(CriError::FailedPrecondition(format!(
                "{field}: container {} is not running",
                target.id
            )));
        }
        Ok(Some(PathBuf::from(format!("/proc/{}/ns/pid", target.pid))))
    }

    /// Undoes everything a container has on the host. Safe on a half-made one.
    async fn release(&self, rec: &ContainerRecord) -> CriResult<()> {
        let socket = rec.socket.clone();
        let id = rec.id.clone();
        let bundle = rec.bundle.clone();
        let snapshots = self.snapshots.clone();
        let shim_binary = self.shim_binary.clone();
        let runtime = rec.runtime.clone();
        blocking(move || {
            match client::connect(&socket, &id) {
                Ok(shim) => {
                    let _ = shim.kill("", 9, true);
                    let _ = shim.delete("");
                    let _ = shim.shutdown(true);
                }
                Err(_) => {
                    // The shim is gone: let a one-off shim force-delete the runtime state.
                    let _ = std::process::Command::new(&shim_binary)
                        .args(["-id", &id, "-bundle"])
                        .arg(&bundle)
                        .arg("-runtime")
                        .arg(&runtime)
                        .arg("delete")
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status();
                }
            }
            let _ = std::fs::remove_file(&socket);
            let rootfs = bundle.join("rootfs");
            if rootfs.exists() {
                crius_snapshotter::unmount(&rootfs).map_err(|e| {
                    CriError::Internal(format!("unmounting {}: {e}", rootfs.display()))
                })?;
            }
            snapshots
                .remove_snapshot(&id)
                .map_err(|e| CriError::Internal(format!("removing the writable layer: {e}")))?;
            match std::fs::remove_dir_all(&bundle) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(CriError::internal(
                    format!("removing {}", bundle.display()),
                    e,
                )),
            }
        })
        .await
    }

    /// StartContainer.
    pub async fn start(self: &Arc<Self>, id: &str) -> CriResult<()> {
        let found = self.must(id).await?;
        let _guard = self.locks.lock(&found.id).await;
        let mut rec = self.must(&found.id).await?;
        if rec.state != ContainerState::Created {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is {:?}, not created",
                rec.id, rec.state
            )));
        }
        let socket = rec.socket.clone();
        let cid = rec.id.clone();
        let started_at = now_nanos();
        let pid = blocking(move || {
            let shim =
                client::connect(&socket, &cid).map_err(shim_err("connecting to the shim"))?;
            shim.start("").map_err(shim_err("starting the container"))
        })
        .await?;
        rec.pid = pid;
        rec.state = ContainerState::Running;
        rec.started_at = started_at;
        self.save(&rec).await?;
        self.watch(rec.id.clone(), rec.bundle.clone(), rec.socket.clone());
        info!(container_id = %rec.id, pid, "container started");
        Ok(())
    }

    /// Puts a running container under the exit watcher.
    fn watch(self: &Arc<Self>, id: String, bundle: PathBuf, socket: PathBuf) {
        let mut w = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        w.insert(
            id,
            Watched {
                exit_file: bundle.join("exit.json"),
                socket,
                ticks: 0,
            },
        );
    }

    /// The exit watcher: one task for every container. The shim writes the exit
    /// record before it reports an exit, so a record appearing is the exit; a shim
    /// that no longer answers is checked for less often. No thread or connection is
    /// held per container.
    pub fn start_exit_watcher(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(EXIT_POLL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let candidates: Vec<(String, PathBuf, PathBuf, bool)> = {
                    let mut w = this.watched.lock().unwrap_or_else(|p| p.into_inner());
                    w.iter_mut()
                        .map(|(id, x)| {
                            x.ticks = x.ticks.wrapping_add(1);
                            let probe_shim = x.ticks % SHIM_PROBE_EVERY == 0;
                            (
                                id.clone(),
                                x.exit_file.clone(),
                                x.socket.clone(),
                                probe_shim,
                            )
                        })
                        .collect()
                };
                for (id, exit_file, socket, probe_shim) in candidates {
                    let exited = exit_file.exists();
                    let shim_gone = !exited && probe_shim && {
                        let socket = socket.clone();
                        tokio::task::spawn_blocking(move || !client::is_alive(&socket))
                            .await
                            .unwrap_or(false)
                    };
                    if exited || shim_gone {
                        let _guard = this.locks.lock(&id).await;
                        if let Err(e) = this.settle(&id, None).await {
                            warn!(container_id = %id, error = %e, "recording the container's exit");
                            continue;
                        }
                        let mut w = this.watched.lock().unwrap_or_else(|p| p.into_inner());
                        w.remove(&id);
                    }
                }
            }
        });
    }

    /// Records an exit: from the shim's answer, or, when the shim is gone, from the
    /// exit record it wrote, or as `ShimDied`.
    async fn settle(
        &self,
        id: &str,
        waited: Option<Result<client::ExitStatus, client::Error>>,
    ) -> CriResult<()> {
        let Some(mut rec) = self.record(id).await? else {
            return Ok(());
        };
        if rec.state == ContainerState::Exited {
            return Ok(());
        }
        let exit_file = rec.bundle.join("exit.json");
        let record = tokio::task::spawn_blocking(move || client::read_exit_file(&exit_file))
            .await
            .ok()
            .and_then(|r| r.ok())
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
            (None, Some(Ok(st))) => {
                rec.exit_code = i32::try_from(st.code).unwrap_or(255);
                rec.finished_at = nanos_of(st.at);
                rec.reason = if st.code == 0 { "Completed" } else { "Error" }.into();
            }
            (None, _) => {
                rec.exit_code = 255;
                rec.finished_at = now_nanos();
                rec.reason = "ShimDied".into();
                rec.message = "the container's shim died without recording an exit".into();
            }
        }
        rec.state = ContainerState::Exited;
        info!(container_id = %rec.id, exit_code = rec.exit_code, reason = %rec.reason, "container exited");
        self.save(&rec).await
    }

    /// StopContainer: the stop signal, then SIGKILL after `timeout` seconds.
    pub async fn stop(self: &Arc<Self>, id: &str, timeout: i64) -> CriResult<()> {
        let Some(found) = self.resolve(id, "container_id").await? else {
            // Idempotent: nothing is left to stop (critest checks this).
            return Ok(());
        };
        let rec = found;
        if rec.state != ContainerState::Running && rec.state != ContainerState::Created {
            return Ok(());
        }
        let signal = signal_number(&rec.stop_signal).unwrap_or(15);
        let socket = rec.socket.clone();
        let cid = rec.id.clone();
        let grace = Duration::from_secs(u64::try_from(timeout.max(0)).unwrap_or(0));
        // The stop signal, then SIGKILL after the grace period (at once for a
        // container that never started). A shim that is gone has nothing to stop.
        blocking(move || {
            let shim = match client::connect(&socket, &cid) {
                Ok(s) => s,
                Err(client::Error::ShimGone(_)) => return Ok(()),
                Err(e) => return Err(shim_err("connecting to the shim")(e)),
            };
            let created_only =
                matches!(shim.state(""), Ok(s) if s.status == client::ProcessStatus::Created);
            if !created_only && !grace.is_zero() {
                let _ = shim.kill("", signal, false);
                if wait_timeout(&shim, "", grace) {
                    return Ok(());
                }
            }
            let _ = shim.kill("", 9, true);
            let _ = wait_timeout(&shim, "", Duration::from_secs(10));
            Ok(())
        })
        .await?;
        let _guard = self.locks.lock(&rec.id).await;
        let socket = rec.socket.clone();
        let cid = rec.id.clone();
        let state = blocking(move || {
            Ok(client::connect(&socket, &cid)
                .and_then(|s| s.state(""))
                .ok())
        })
        .await?;
        let waited = state.and_then(|s| s.exit).map(Ok);
        if rec.state == ContainerState::Created {
            let mut r = self.must(&rec.id).await?;
            r.state = ContainerState::Exited;
            r.exit_code = 137;
            r.finished_at = now_nanos();
            r.reason = "Error".into();
            return self.save(&r).await;
        }
        self.settle(&rec.id, waited).await
    }

    /// RemoveContainer: stops it first; idempotent.
    pub async fn remove(self: &Arc<Self>, id: &str) -> CriResult<()> {
        let Some(rec) = self.resolve(id, "container_id").await? else {
            return Ok(());
        };
        if rec.state == ContainerState::Running || rec.state == ContainerState::Created {
            self.stop(&rec.id, 0).await?;
        }
        let guard = self.locks.lock(&rec.id).await;
        let Some(rec) = self.record(&rec.id).await? else {
            return Ok(());
        };
        self.release(&rec).await?;
        let cid = rec.id.clone();
        self.store
            .delete_container(&cid)
            .await
            .map_err(CriError::from)?;
        drop(guard);
        self.locks.forget(&rec.id);
        info!(container_id = %rec.id, "container removed");
        // Its image may have been removed while it ran: the layers it kept alive are
        // garbage now.
        let image_ref = rec.image_ref.clone();
        if self
            .store
            .image(&image_ref)
            .await
            .map(|i| i.is_none())
            .map_err(CriError::from)?
        {
            self.images.collect_garbage().await?;
        }
        Ok(())
    }

    /// Stops every container of a pod (StopPodSandbox).
    pub async fn stop_pod(self: &Arc<Self>, pod_id: &str) -> CriResult<()> {
        for c in self.of_pod(pod_id).await? {
            self.stop(&c.id, 0).await?;
        }
        Ok(())
    }

    /// Removes every container of a pod (RemovePodSandbox).
    pub async fn remove_pod(self: &Arc<Self>, pod_id: &str) -> CriResult<()> {
        for c in self.of_pod(pod_id).await? {
            self.remove(&c.id).await?;
        }
        Ok(())
    }

    async fn of_pod(&self, pod_id: &str) -> CriResult<Vec<ContainerRecord>> {
        let store = self.store.clone();
        let pod_id = pod_id.to_string();
        blocking(move || {
            Ok(store
                .blocking()
                .containers()?
                .into_iter()
                .filter(|c| c.pod_id == pod_id)
                .collect())
        })
        .await
    }

    fn to_cri(&self, c: &ContainerRecord) -> cri::Container {
        cri::Container {
            id: c.id.clone(),
            pod_sandbox_id: c.pod_id.clone(),
            metadata: c.config.metadata.clone(),
            image: c.config.image.clone(),
            image_ref: c.image_ref.clone(),
            state: cri_state(c.state) as i32,
            created_at: c.created_at,
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            image_id: c.image_ref.clone(),
        }
    }

    /// ListContainers.
    pub async fn list(
        &self,
        filter: Option<cri::ContainerFilter>,
    ) -> CriResult<Vec<cri::Container>> {
        let all = self.store.containers().await.map_err(CriError::from)?;
        let f = filter.unwrap_or_default();
        let mut out: Vec<cri::Container> = all
            .iter()
            .filter(|c| c.state != ContainerState::Creating)
            .filter(|c| f.id.is_empty() || c.id.starts_with(&f.id))
            .filter(|c| f.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&f.pod_sandbox_id))
            .filter(|c| {
                f.state
                    .as_ref()
                    .is_none_or(|s| s.state == cri_state(c.state) as i32)
            })
            .filter(|c| {
                f.label_selector
                    .iter()
                    .all(|(k, v)| c.config.labels.get(k) == Some(v))
            })
            .map(|c| self.to_cri(c))
            .collect();
        out.sort_by_key(|c| c.created_at);
        Ok(out)
    }

    /// ContainerStatus.
    pub async fn status(&self, id: &str, verbose: bool) -> CriResult<cri::ContainerStatusResponse> {
        let c = self.must(id).await?;
        let mounts = c.config.mounts.to_vec();
        let status = cri::ContainerStatus {
            id: c.id.clone(),
            metadata: c.config.metadata.clone(),
            state: cri_state(c.state) as i32,
            created_at: c.created_at,
            started_at: c.started_at,
            finished_at: c.finished_at,
            exit_code: c.exit_code,
            image: c.config.image.clone(),
            image_ref: c.image_ref.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            mounts,
            log_path: c
                .log_path
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            resources: c
                .config
                .linux
                .as_ref()
                .and_then(|l| l.resources.clone())
                .map(|r| cri::ContainerResources {
                    linux: Some(r),
                    windows: None,
                }),
            image_id: c.image_ref.clone(),
            user: Some(cri::ContainerUser {
                linux: Some(cri::LinuxContainerUser {
                    uid: i64::from(c.uid),
                    gid: i64::from(c.gid),
                    supplemental_groups: c
                        .supplemental_groups
                        .iter()
                        .map(|g| i64::from(*g))
                        .collect(),
                }),
            }),
        };
        let mut info = HashMap::new();
        if verbose {
            let spec: serde_json::Value = std::fs::read(c.bundle.join("config.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(serde_json::Value::Null);
            let detail = serde_json::json!({
                "id": c.id,
                "sandboxID": c.pod_id,
                "pid": c.pid,
                "bundle": c.bundle,
                "shimSocket": c.socket,
                "runtime": c.runtime,
                "runtimeSpec": spec,
            });
            info.insert("info".to_string(), detail.to_string());
        }
        Ok(cri::ContainerStatusResponse {
            status: Some(status),
            info,
        })
    }

    /// One container's stats: cgroup metrics from its shim (running containers) and
    /// its writable layer measured on disk.
    async fn stats_of(&self, c: &ContainerRecord) -> CriResult<cri::ContainerStats> {
        Ok(self.stats_and_pids(c).await?.0)
    }

    /// A container's stats, and how many processes its cgroup holds (when running).
    async fn stats_and_pids(
        &self,
        c: &ContainerRecord,
    ) -> CriResult<(cri::ContainerStats, Option<u64>)> {
        let ts = now_nanos();
        let u = |value: u64| Some(cri::UInt64Value { value });
        let metrics = if c.state == ContainerState::Running {
            let socket = c.socket.clone();
            let cid = c.id.clone();
            blocking(move || Ok(client::connect(&socket, &cid).and_then(|s| s.stats()).ok()))
                .await?
        } else {
            None
        };
        let snapshots = self.snapshots.clone();
        let key = c.id.clone();
        let layer = blocking(move || Ok(snapshots.snapshot_usage(&key).ok())).await?;
        let pids = metrics.map(|m| m.pids);
        let stats = cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: c.id.clone(),
                metadata: c.config.metadata.clone(),
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
            }),
            cpu: metrics.map(|m| cri::CpuUsage {
                timestamp: ts,
                usage_core_nano_seconds: u(m.cpu_usage_ns),
                usage_nano_cores: None,
            }),
            memory: metrics.map(|m| cri::MemoryUsage {
                timestamp: ts,
                working_set_bytes: u(m.memory_working_set),
                available_bytes: None,
                usage_bytes: u(m.memory_usage),
                rss_bytes: u(m.memory_rss),
                page_faults: None,
                major_page_faults: None,
            }),
            writable_layer: layer.map(|l| cri::FilesystemUsage {
                timestamp: ts,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: self
                        .config
                        .state_dir
                        .join("snapshots")
                        .to_string_lossy()
                        .into_owned(),
                }),
                used_bytes: u(l.bytes),
                inodes_used: u(l.inodes),
            }),
            swap: None,
        };
        Ok((stats, pids))
    }

    /// PodSandboxStats: the pod's containers' stats, and their CPU and memory summed.
    pub async fn pod_stats(&self, pod: &crius_store::PodRecord) -> CriResult<cri::PodSandboxStats> {
        let ts = now_nanos();
        let mut containers = Vec::new();
        let mut processes: Option<u64> = None;
        // A process in the pod's network namespace, to read its interfaces through.
        let mut in_netns: Option<u32> = None;
        for c in self.of_pod(&pod.id).await? {
            if c.state != ContainerState::Creating {
                let (stats, pids) = self.stats_and_pids(&c).await?;
                if let Some(n) = pids {
                    processes = Some(processes.unwrap_or(0) + n);
                    if c.pid > 0 {
                        in_netns.get_or_insert(c.pid);
                    }
                }
                containers.push(stats);
            }
        }
        // Host-network pods have the node's interfaces; the kubelet counts those itself.
        let network = match (pod.namespaces.net.is_some(), in_netns) {
            (true, Some(pid)) => {
                let text = tokio::fs::read_to_string(format!("/proc/{pid}/net/dev"))
                    .await
                    .ok();
                text.map(|t| network_usage(&t, ts))
            }
            _ => None,
        };
        let sum = |f: &dyn Fn(&cri::ContainerStats) -> Option<u64>| -> Option<cri::UInt64Value> {
            let values: Vec<u64> = containers.iter().filter_map(f).collect();
            (!values.is_empty()).then(|| cri::UInt64Value {
                value: values.iter().sum(),
            })
        };
        let cpu = sum(&|c| {
            c.cpu
                .as_ref()?
                .usage_core_nano_seconds
                .as_ref()
                .map(|v| v.value)
        });
        let working_set = sum(&|c| {
            c.memory
                .as_ref()?
                .working_set_bytes
                .as_ref()
                .map(|v| v.value)
        });
        let usage = sum(&|c| c.memory.as_ref()?.usage_bytes.as_ref().map(|v| v.value));
        let rss = sum(&|c| c.memory.as_ref()?.rss_bytes.as_ref().map(|v| v.value));
        Ok(cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: pod.id.clone(),
                metadata: pod.config.metadata.clone(),
                labels: pod.config.labels.clone(),
                annotations: pod.config.annotations.clone(),
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                cpu: cpu.map(|v| cri::CpuUsage {
                    timestamp: ts,
                    usage_core_nano_seconds: Some(v),
                    usage_nano_cores: None,
                }),
                memory: working_set.map(|v| cri::MemoryUsage {
                    timestamp: ts,
                    working_set_bytes: Some(v),
                    available_bytes: None,
                    usage_bytes: usage,
                    rss_bytes: rss,
                    page_faults: None,
                    major_page_faults: None,
                }),
                network,
                process: processes.map(|n| cri::ProcessUsage {
                    timestamp: ts,
                    process_count: Some(cri::UInt64Value { value: n }),
                }),
                containers,
            }),
            windows: None,
        })
    }

    /// ContainerStats.
    pub async fn stats(&self, id: &str) -> CriResult<cri::ContainerStats> {
        let c = self.must(id).await?;
        self.stats_of(&c).await
    }

    /// ListContainerStats.
    pub async fn list_stats(
        &self,
        filter: Option<cri::ContainerStatsFilter>,
    ) -> CriResult<Vec<cri::ContainerStats>> {
        let f = filter.unwrap_or_default();
        let all = self.store.containers().await.map_err(CriError::from)?;
        let mut out = Vec::new();
        for c in all.iter().filter(|c| c.state != ContainerState::Creating) {
            if (!f.id.is_empty() && !c.id.starts_with(&f.id))
                || (!f.pod_sandbox_id.is_empty() && !c.pod_id.starts_with(&f.pod_sandbox_id))
                || !f
                    .label_selector
                    .iter()
                    .all(|(k, v)| c.config.labels.get(k) == Some(v))
            {
                continue;
            }
            out.push(self.stats_of(c).await?);
        }
        Ok(out)
    }

    /// A running container, for the streaming calls.
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

    /// The OCI `process` for a command run in container `c` (ExecSync, Exec): the
    /// container's own process with other arguments.
    pub fn exec_process(c: &ContainerRecord, cmd: &[String], tty: bool) -> CriResult<Vec<u8>> {
        let spec: serde_json::Value = std::fs::read(c.bundle.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                CriError::Internal("the container's config.json is unreadable".into())
            })?;
        let mut process = spec["process"].clone();
        process["args"] = serde_json::json!(cmd);
        process["terminal"] = serde_json::json!(tty);
        if tty {
            let env = process["env"].as_array().cloned().unwrap_or_default();
            if !env
                .iter()
                .any(|e| e.as_str().is_some_and(|e| e.starts_with("TERM=")))
            {
                let mut env = env;
                env.push(serde_json::json!("TERM=xterm"));
                process["env"] = serde_json::Value::Array(env);
            }
        }
        serde_json::to_vec(&process).map_err(|e| CriError::internal("exec process", e))
    }

    /// ExecSync.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: i64,
    ) -> CriResult<cri::ExecSyncResponse> {
        if cmd.is_empty() {
            return Err(CriError::invalid("cmd", "must not be empty"));
        }
        let c = self.running(id).await?;
        let json = Self::exec_process(&c, &cmd, false)?;
        let exec_id = format!("x{}", &crate::sandbox::new_id()?[..16]);
        // timeout 0 means none; a day bounds it all the same.
        let t = if timeout <= 0 {
            86_400
        } else {
            u64::try_from(timeout).unwrap_or(86_400)
        };
        let socket = c.socket.clone();
        let cid = c.id.clone();
        let out = blocking(move || {
            let shim =
                client::connect(&socket, &cid).map_err(shim_err("connecting to the shim"))?;
            shim.exec_sync(
                &exec_id,
                &json,
                Duration::from_secs(t),
                EXEC_SYNC_OUTPUT_LIMIT,
            )
            .map_err(shim_err("exec"))
        })
        .await?;
        Ok(cri::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        })
    }

    /// ReopenContainerLog.
    pub async fn reopen_log(&self, id: &str) -> CriResult<()> {
        let c = self.must(id).await?;
        if c.state != ContainerState::Running {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        let socket = c.socket.clone();
        let cid = c.id.clone();
        blocking(move || {
            let shim =
                client::connect(&socket, &cid).map_err(shim_err("connecting to the shim"))?;
            shim.reopen_log().map_err(shim_err("reopening the log"))
        })
        .await
    }

    /// UpdateContainerResources.
    pub async fn update(
        &self,
        id: &str,
        linux: Option<cri::LinuxContainerResources>,
    ) -> CriResult<()> {
        let c = self.must(id).await?;
        let Some(r) = linux else {
            return Ok(());
        };
        let resources = spec::linux_resources(&r)?;
        let json =
            serde_json::to_vec(&resources).map_err(|e| CriError::internal("resources", e))?;
        let socket = c.socket.clone();
        let cid = c.id.clone();
        blocking(move || {
            let shim =
                client::connect(&socket, &cid).map_err(shim_err("connecting to the shim"))?;
            shim.update(&json).map_err(shim_err("updating resources"))
        })
        .await?;
        let _guard = self.locks.lock(&c.id).await;
        let mut rec = self.must(&c.id).await?;
        if let Some(l) = rec.config.linux.as_mut() {
            l.resources = Some(r);
        }
        self.save(&rec).await
    }

    /// Start-up recovery: undo half-made containers, re-watch running ones, settle
    /// those whose shims are gone.
    pub async fn recover(self: &Arc<Self>) -> CriResult<()> {
        let all = self.store.containers().await.map_err(CriError::from)?;
        for c in all {
            match c.state {
                ContainerState::Creating => {
                    warn!(container_id = %c.id, "recovery: container was half-made when criusd stopped; removing it");
                    self.release(&c).await?;
                    let id = c.id.clone();
                    self.store
                        .delete_container(&id)
                        .await
                        .map_err(CriError::from)?;
                }
                ContainerState::Running => {
                    self.watch(c.id.clone(), c.bundle.clone(), c.socket.clone());
                    // Streaming execs of a previous daemon have lost their client.
                    // Listed now, before this daemon can start any; killed in the
                    // background.
                    let (socket, id) = (c.socket.clone(), c.id.clone());
                    let orphans = blocking(move || Ok(stream_execs(&socket, &id))).await?;
                    if let Some((shim, execs)) = orphans {
                        let id = c.id.clone();
                        tokio::spawn(blocking(move || {
                            reap_execs(&shim, &id, &execs);
                            Ok(())
                        }));
                    }
                }
                ContainerState::Created => {
                    if !client::is_alive(&c.socket) {
                        warn!(container_id = %c.id, "recovery: the shim of a created container is gone");
                        self.settle(&c.id, None).await?;
                    }
                }
                ContainerState::Exited => {}
            }
        }
        Ok(())
    }
}

/// A pod's interfaces from its `/proc/<pid>/net/dev` (loopback left out); `eth0`, the
/// interface pods get, is the default one.
fn network_usage(net_dev: &str, ts: i64) -> cri::NetworkUsage {
    let u = |value: u64| Some(cri::UInt64Value { value });
    let interfaces: Vec<cri::NetworkInterfaceUsage> = net_dev
        .lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|v| v.parse().ok())
                .collect::<Option<_>>()?;
            if name == "lo" || f.len() < 16 {
                return None;
            }
            Some(cri::NetworkInterfaceUsage {
                name: name.to_string(),
                rx_bytes: u(f[0]),
                rx_errors: u(f[2]),
                tx_bytes: u(f[8]),
                tx_errors: u(f[10]),
            })
        })
        .collect();
    cri::NetworkUsage {
        timestamp: ts,
        default_interface: interfaces
            .iter()
            .find(|i| i.name == "eth0")
            .or(interfaces.first())
            .cloned(),
        interfaces,
    }
}

/// The prefix of the exec ids the streaming server gives the processes it starts.
pub const STREAM_EXEC_PREFIX: &str = "s";

/// A container's streaming execs, listed at start-up, when no session of this daemon
/// can own one: each is an orphan of a previous daemon whose client is gone (its FIFOs
/// were removed with the old streams directory).
fn stream_execs(socket: &std::path::Path, id: &str) -> Option<(Shim, Vec<String>)> {
    let shim = client::connect(socket, id).ok()?;
    let execs: Vec<String> = shim
        .list_execs()
        .ok()?
        .into_iter()
        .filter(|e| e.starts_with(STREAM_EXEC_PREFIX))
        .collect();
    (!execs.is_empty()).then_some((shim, execs))
}

/// Kills and deletes `execs`.
fn reap_execs(shim: &Shim, id: &str, execs: &[String]) {
    for exec in execs {
        let _ = shim.kill(exec, 9, false);
        wait_timeout(shim, exec, Duration::from_secs(10));
        match shim.delete(exec) {
            Ok(_) => {
                warn!(container_id = %id, exec_id = %exec, "recovery: killed a streaming exec whose client went with the previous daemon")
            }
            Err(e) => {
                warn!(container_id = %id, exec_id = %exec, "recovery: deleting an orphaned exec: {e}")
            }
        }
    }
}

/// Waits up to `grace` for a process (`""`: the container's init) to stop; true when it
/// did (or the shim no longer knows it).
fn wait_timeout(shim: &Shim, exec_id: &str, grace: Duration) -> bool {
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        match shim.state(exec_id) {
            Ok(s) if s.status == client::ProcessStatus::Stopped => return true,
            Err(_) => return true,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

fn cri_state(s: ContainerState) -> cri::ContainerState {
    match s {
        ContainerState::Creating | ContainerState::Created => cri::ContainerState::ContainerCreated,
        ContainerState::Running => cri::ContainerState::ContainerRunning,
        ContainerState::Exited => cri::ContainerState::ContainerExited,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_interfaces_come_from_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0:    5000      40    1    0    0     0          0         0     7000      50    3    0    0     0       0          0
";
        let n = network_usage(text, 42);
        assert_eq!(n.timestamp, 42);
        assert_eq!(n.interfaces.len(), 1, "loopback is left out");
        let eth0 = n.default_interface.unwrap();
        assert_eq!(eth0.name, "eth0");
        assert_eq!(eth0.rx_bytes.unwrap().value, 5000);
        assert_eq!(eth0.rx_errors.unwrap().value, 1);
        assert_eq!(eth0.tx_bytes.unwrap().value, 7000);
        assert_eq!(eth0.tx_errors.unwrap().value, 3);
        // Garbage lines are skipped, not fatal.
        let n = network_usage("h1\nh2\n  eth0: x y\n", 1);
        assert!(n.interfaces.is_empty() && n.default_interface.is_none());
    }

    #[test]
    fn stop_signals() {
        assert_eq!(signal_number(""), Some(15));
        assert_eq!(signal_number("SIGUSR1"), Some(10));
        assert_eq!(signal_number("usr1"), Some(10));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("SIGRTMIN+3"), Some(37));
        assert_eq!(signal_number("SIGBOGUS"), None);
    }
}

//! CreateContainer: reserve the name with a `Creating` record, then make the bundle,
//! the writable layer and its mount, the OCI spec, the shim and the container in it;
//! on a failure, undo what was made.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crius_cri_api::v1 as cri;
use crius_shim::client::{ProcessIo, StartOptions};
use crius_spec::{PodNamespaces, SpecInput};
use crius_store::{ContainerRecord, ContainerState, ImageRecord, PodRecord, PodState, Reserve};
use tracing::{info, warn};

use super::features::RecursiveReadOnly;
use super::{
    Containers, Step, idmap_dir, is_idmapped, is_image_volume, rro_dir, stdin_fifo, volume_dir,
    volume_key,
};
use crate::error::{CriError, CriResult};
use crate::events::Kind;
use crate::failpoint;
use crate::host::Idmap;
use crate::util::{blocking, find_binary, new_id, now_nanos};
use crate::validate::ValidContainer;
use crius_images::ImageRunConfig;

fn already_exists(name: &str, id: &str) -> CriError {
    CriError::AlreadyExists(format!(
        "container name {name:?} is already reserved by container {id}"
    ))
}

/// Everything CreateContainer resolved before it makes anything.
struct Plan {
    name: String,
    pod: PodRecord,
    req: ValidContainer,
    sandbox_config: cri::PodSandboxConfig,
    image: ImageRecord,
    run: ImageRunConfig,
    runtime: PathBuf,
    /// The image volumes: index in `config.mounts` and the top chain id of the image.
    volumes: Vec<(usize, String)>,
    /// How the pod's handler gets recursive read-only mounts.
    rro: RecursiveReadOnly,
    /// The edits of the CDI devices the container asks for.
    cdi: crius_spec::cdi::CdiEdits,
    /// How the container sees its layers when the pod has its own user namespace.
    idmap: Option<Idmap>,
}

impl Containers {
    /// CreateContainer of a validated request. Returns the container id.
    pub async fn create(self: &Arc<Self>, req: ValidContainer) -> CriResult<String> {
        let plan = self.plan(req).await?;
        let store = self.store.clone();
        let this = self.clone();
        let name = plan.name.clone();
        self.creations
            .run(
                &plan.name.clone(),
                || {
                    let db = store.blocking();
                    match db.container_id_by_name(&name)? {
                        // The remains of a failed creation whose undo was incomplete
                        // (no creation of this name is in flight): this one removes them.
                        Some(existing)
                            if db
                                .container(&existing)?
                                .is_some_and(|c| c.state == ContainerState::Creating) =>
                        {
                            Ok(())
                        }
                        Some(existing) => Err(already_exists(&name, &existing)),
                        None => Ok(()),
                    }
                },
                async move { this.create_planned(plan).await },
            )
            .await
    }

    /// The checks that need the pod, the image and the runtime handler.
    async fn plan(&self, mut req: ValidContainer) -> CriResult<Plan> {
        let pod = self.sandboxes.must(&req.pod_sandbox_id).await?;
        if pod.state != PodState::Ready {
            return Err(CriError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        let image = self.images.find(&req.image).await?.ok_or_else(|| {
            CriError::NotFound(format!(
                "image {:?} is not present: pull it first",
                req.image
            ))
        })?;
        let run = self.images.run_config(&image).await?;
        let handler = &pod.runtime_handler;
        let path = self
            .config
            .runtimes
            .get(handler)
            .map(|h| h.path.clone())
            .ok_or_else(|| {
                CriError::FailedPrecondition(format!(
                    "runtime handler {handler:?} of the pod is no longer configured"
                ))
            })?;
        let runtime = find_binary(&path).ok_or_else(|| {
            CriError::FailedPrecondition(format!(
                "the OCI runtime {} of handler {handler:?} is not installed",
                path.display()
            ))
        })?;
        let volumes = self.resolve_image_volumes(&mut req.config).await?;
        let (cdi, config) = (self.cdi.clone(), req.config.clone());
        let cdi = blocking(move || cdi.resolve(&config)).await?;
        let rro = self.recursive_read_only(handler);
        if let Some(i) = req.config.mounts.iter().position(|m| m.recursive_read_only) {
            if !rro.works() {
                return Err(CriError::invalid(
                    format!("config.mounts[{i}].recursive_read_only"),
                    format!(
                        "the runtime handler {handler:?} cannot make recursive read-only mounts on this node (its runtime does not declare rro and the kernel lacks mount_setattr)"
                    ),
                ));
            }
        }
        let idmap = pod_idmap(&pod, &req.config)?;
        let pmd = pod.config.metadata.clone().unwrap_or_default();
        let attempt = req.config.metadata.as_ref().map_or(0, |m| m.attempt);
        let name = format!(
            "{}_{}_{}_{}_{}",
            req.name, pmd.name, pmd.namespace, pmd.uid, attempt
        );
        let sandbox_config = req
            .sandbox_config
            .clone()
            .unwrap_or_else(|| pod.config.clone());
        Ok(Plan {
            name,
            pod,
            req,
            sandbox_config,
            image,
            run,
            runtime,
            volumes,
            rro,
            cdi,
            idmap,
        })
    }

    /// The image of each image volume, which must be present (the kubelet pulls it
    /// first): its top chain id, by index in `config.mounts`. Each volume's
    /// `image.image_ref` is set to the image's id, so the record (and
    /// ContainerStatus) says which image is mounted.
    async fn resolve_image_volumes(
        &self,
        config: &mut cri::ContainerConfig,
    ) -> CriResult<Vec<(usize, String)>> {
        let mut volumes = Vec::new();
        for (i, m) in config.mounts.iter_mut().enumerate() {
            if !is_image_volume(m) {
                continue;
            }
            let Some(spec) = m.image.as_mut() else {
                continue;
            };
            let field = format!("config.mounts[{i}].image");
            let image = self.images.find(&spec.image).await?.ok_or_else(|| {
                CriError::NotFound(format!(
                    "{field}: image {:?} is not present: pull it first",
                    spec.image
                ))
            })?;
            let run = self.images.run_config(&image).await?;
            let chain = run.top_chain_id.ok_or_else(|| {
                CriError::FailedPrecondition(format!(
                    "{field}: image {} has no layers to mount",
                    image.id
                ))
            })?;
            spec.image_ref = image.id.clone();
            volumes.push((i, chain));
        }
        Ok(volumes)
    }

    /// The work of CreateContainer once everything is resolved (see
    /// `crate::creations`): the record, then the host steps.
    async fn create_planned(self: &Arc<Self>, plan: Plan) -> CriResult<String> {
        let id = new_id()?;
        let _guard = self.locks.lock(&id).await;
        let mut rec = self.new_record(&id, &plan);
        let insert = || {
            self.sandboxes.with_ready_pod(&plan.pod.id, async {
                Ok(self.store.insert_container(&rec).await?)
            })
        };
        if let Reserve::Taken(existing) = insert().await? {
            self.remove_leftover(&rec.name, &existing).await?;
            if let Reserve::Taken(existing) = insert().await? {
                return Err(already_exists(&rec.name, &existing));
            }
        }
        failpoint::hit("container.create.recorded")?;
        let mut made = Vec::new();
        match self.build(&mut rec, &plan, &mut made).await {
            Ok(()) => {
                info!(container_id = %id, pod_id = %plan.pod.id, name = %plan.req.name, "container created");
                self.event(Kind::ContainerCreatedEvent, &rec).await;
                // Not under the container's lock: a plugin may update it as it hears this.
                drop(_guard);
                self.nri_event(crate::nri::api::Event::PostCreateContainer, &rec)
                    .await?;
                Ok(id)
            }
            Err(e) => {
                warn!(container_id = %id, error = %e, "container creation failed; undoing it");
                if !self.undo_made(&rec, made).await {
                    warn!(container_id = %id, "part of the failed container is left; its record stays (Creating) for RemoveContainer or start-up recovery");
                } else if let Err(undo) = self.store.delete_container(&id).await {
                    warn!(container_id = %id, error = %undo, "deleting the record of a failed container");
                }
                Err(e)
            }
        }
    }

    /// Finishes the removal of what a failed creation of `name` left (container
    /// `id`, still `Creating`), so that a retry of CreateContainer can take the name.
    /// Any other holder of the name is a duplicate.
    async fn remove_leftover(&self, name: &str, id: &str) -> CriResult<()> {
        let guard = self.locks.lock(id).await;
        match self.store.container(id).await? {
            Some(old) if old.state == ContainerState::Creating => {
                info!(container_id = %id, %name, "removing what a failed creation of this name left");
                self.release(&old).await?;
                self.store.delete_container(id).await?;
                drop(guard);
                Ok(())
            }
            Some(_) => Err(already_exists(name, id)),
            None => Ok(()),
        }
    }

    fn new_record(&self, id: &str, plan: &Plan) -> ContainerRecord {
        let log_dir = &plan.pod.config.log_directory;
        let log_path = (!log_dir.is_empty() && !plan.req.config.log_path.is_empty())
            .then(|| PathBuf::from(log_dir).join(&plan.req.config.log_path));
        ContainerRecord {
            id: id.to_string(),
            pod_id: plan.pod.id.clone(),
            name: plan.name.clone(),
            state: ContainerState::Creating,
            created_at: now_nanos(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            config: plan.req.config.clone(),
            image: plan.req.image.clone(),
            image_ref: plan.image.id.clone(),
            log_path,
            bundle: self.bundle_of(id),
            socket: self.socket_of(id),
            runtime: plan.runtime.clone(),
            pid: 0,
            stop_signal: plan.run.config.stop_signal.clone(),
            uid: 0,
            gid: 0,
            supplemental_groups: Vec::new(),
        }
    }

    /// The host-side steps of CreateContainer, after the record exists. Each step
    /// that succeeds is pushed to `made` at once.
    async fn build(
        &self,
        rec: &mut ContainerRecord,
        plan: &Plan,
        made: &mut Vec<Step>,
    ) -> CriResult<()> {
        let bundle = rec.bundle.clone();
        let rootfs = bundle.join("rootfs");
        mkdir(&rootfs)?;
        made.push(Step::Bundle);
        failpoint::hit("container.create.bundle")?;
        // Shared directories, never removed with one container.
        if let Some(dir) = rec.socket.parent() {
            mkdir(dir)?;
        }
        if let Some(dir) = rec.log_path.as_ref().and_then(|l| l.parent()) {
            mkdir(dir)?;
        }

        let (layers, key) = (self.rootfs.clone(), rec.id.clone());
        let parent = plan.run.top_chain_id.clone();
        blocking(move || layers.create_layer(&key, parent.as_deref())).await?;
        made.push(Step::Layer);
        failpoint::hit("container.create.layer")?;
        let (layers, key, target) = (self.rootfs.clone(), rec.id.clone(), rootfs.clone());
        let idmap = plan.idmap.clone();
        blocking(move || layers.mount(&key, &target, idmap.as_ref())).await?;
        made.push(Step::Mount);
        failpoint::hit("container.create.mount")?;

        let prepared = self.prepare_mounts(rec, plan, made).await?;

        self.write_spec(rec, plan, &prepared).await?;
        failpoint::hit("container.create.spec")?;
        // A container that keeps stdin open (`stdin: true`) gets a FIFO the shim holds
        // for its whole life; attach sessions write into it (see `stdin_fifo`).
        let stdin = if rec.config.stdin {
            let fifo = stdin_fifo(&bundle);
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(
                |e| CriError::io(format!("mkfifo {}", fifo.display()))(std::io::Error::from(e)),
            )?;
            fifo.display().to_string()
        } else {
            String::new()
        };

        let opts = StartOptions {
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
        let shims = self.shims.clone();
        blocking(move || shims.launch(&opts)).await?;
        made.push(Step::Shim);
        failpoint::hit("container.create.shim")?;
        let io = ProcessIo {
            terminal: rec.config.tty,
            stdin,
            ..Default::default()
        };
        let pid = self
            .on_shim(rec, move |shims, at| shims.create(at, &io))
            .await?;
        made.push(Step::Task);
        failpoint::hit("container.create.task")?;
        rec.pid = pid;
        rec.state = ContainerState::Created;
        self.store.update_container(rec).await?;
        failpoint::hit("container.create.created")
    }

    /// Generates the OCI spec and writes it as the bundle's config.json. Spec
    /// generation reads the container's /etc/passwd and /etc/group and stats devices,
    /// so it runs on the blocking pool with owned copies of its inputs.
    async fn write_spec(
        &self,
        rec: &mut ContainerRecord,
        plan: &Plan,
        prepared: &BTreeMap<usize, PathBuf>,
    ) -> CriResult<()> {
        let pod = &plan.pod;
        let namespaces = PodNamespaces {
            net: pod.namespaces.net.clone(),
            ipc: pod.namespaces.ipc.clone(),
            uts: pod.namespaces.uts.clone(),
            pid: pod
                .infra_pid
                .map(|p| PathBuf::from(format!("/proc/{p}/ns/pid"))),
            target_pid: self.target_pid_ns(&rec.config).await?,
            user: pod.namespaces.user.clone(),
        };
        let (container_id, sandbox_id) = (rec.id.clone(), pod.id.clone());
        let (config, sandbox) = (rec.config.clone(), plan.sandbox_config.clone());
        let image = plan.run.config.clone();
        let pod_dir = pod.dir.clone();
        let (driver, host) = (self.config.cgroup_driver(), self.host_facts.clone());
        let profiles = self.config.state_dir.join("seccomp");
        let bundle = rec.bundle.clone();
        let prepared = prepared.clone();
        let cdi = plan.cdi.clone();
        let path = bundle.join("config.json");
        let mut generated = blocking(move || {
            let rootfs = bundle.join("rootfs");
            Ok(crius_spec::generate(&SpecInput {
                container_id: &container_id,
                sandbox_id: &sandbox_id,
                config: &config,
                sandbox: &sandbox,
                image: &image,
                rootfs: &rootfs,
                pod_dir: &pod_dir,
                shm: None,
                namespaces: &namespaces,
                cgroup_driver: driver,
                seccomp_profile_root: &profiles,
                host: &host,
                prepared_mounts: &prepared,
                cdi: &cdi,
            })?)
        })
        .await?;
        self.adjust_spec(rec, plan, &mut generated.spec).await?;
        let json = serde_json::to_vec_pretty(&generated.spec)
            .map_err(|e| CriError::Internal(format!("serializing the OCI spec: {e}")))?;
        blocking(move || {
            std::fs::write(&path, json).map_err(CriError::io(format!("writing {}", path.display())))
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
        Ok(())
    }

    /// Applies what NRI plugins ask of a container being created to its spec.
    async fn adjust_spec(
        &self,
        rec: &ContainerRecord,
        plan: &Plan,
        spec: &mut crius_spec::adjust::Spec,
    ) -> CriResult<()> {
        let nri = self.sandboxes.nri();
        if !nri.active() {
            return Ok(());
        }
        let json = serde_json::to_value(&*spec)
            .map_err(|e| CriError::Internal(format!("serializing the OCI spec: {e}")))?;
        let adjustment = nri.create_container(&plan.pod, rec, &json).await?;
        Ok(crius_spec::adjust::apply(spec, &adjustment)?)
    }

    /// Prepares the request mounts the runtime cannot make from the request alone,
    /// and returns their host directories by index: each image volume (a read-only
    /// view of the image's layers mounted at `<bundle>/volumes/<index>`, at its
    /// `image_sub_path`), and, when the handler's runtime does not know `rro`, each
    /// recursive read-only mount (a read-only clone of the host path's mount tree at
    /// `<bundle>/rro/<index>`).
    async fn prepare_mounts(
        &self,
        rec: &ContainerRecord,
        plan: &Plan,
        made: &mut Vec<Step>,
    ) -> CriResult<BTreeMap<usize, PathBuf>> {
        let mut prepared = BTreeMap::new();
        let clones: Vec<usize> = if plan.rro == RecursiveReadOnly::Crius {
            let mounts = rec.config.mounts.iter().enumerate();
            mounts
                .filter(|(_, m)| m.recursive_read_only && !is_image_volume(m) && !is_idmapped(m))
                .map(|(i, _)| i)
                .collect()
        } else {
            Vec::new()
        };
        let idmapped: Vec<usize> = rec
            .config
            .mounts
            .iter()
            .enumerate()
            .filter(|(_, m)| is_idmapped(m) && !is_image_volume(m))
            .map(|(i, _)| i)
            .collect();
        if plan.volumes.is_empty() && clones.is_empty() && idmapped.is_empty() {
            return Ok(prepared);
        }
        // Undone as a whole (each part idempotent), so pushed before the first part.
        made.push(Step::Mounts);
        for (i, chain) in &plan.volumes {
            let (i, target) = (*i, volume_dir(&rec.bundle, *i));
            mkdir(&target)?;
            let (rootfs, key, chain) = (self.rootfs.clone(), volume_key(&rec.id, i), chain.clone());
            let at = target.clone();
            let idmap = plan.idmap.clone();
            blocking(move || {
                rootfs.create_view(&key, &chain)?;
                rootfs.mount(&key, &at, idmap.as_ref())
            })
            .await?;
            let sub = rec.config.mounts[i].image_sub_path.clone();
            let field = format!("config.mounts[{i}].image_sub_path");
            let source = blocking(move || sub_path(&target, &sub, &field)).await?;
            prepared.insert(i, source);
        }
        for i in clones {
            let m = &rec.config.mounts[i];
            let field = format!("config.mounts[{i}].host_path");
            let source = std::fs::canonicalize(&m.host_path)
                .map_err(|e| CriError::invalid(field.clone(), format!("{:?}: {e}", m.host_path)))?;
            let target = rro_dir(&rec.bundle, i);
            mkdir(&target)?;
            let (rootfs, at) = (self.rootfs.clone(), target.clone());
            blocking(move || rootfs.bind_read_only_recursive(&source, &at)).await?;
            prepared.insert(i, target);
        }
        for i in idmapped {
            // Validated in `plan`: the pod has its own user namespace, with these maps.
            let Some(idmap) = plan.idmap.as_ref() else {
                continue;
            };
            let m = &rec.config.mounts[i];
            let field = format!("config.mounts[{i}].host_path");
            let source = std::fs::canonicalize(&m.host_path)
                .map_err(|e| CriError::invalid(field.clone(), format!("{:?}: {e}", m.host_path)))?;
            let target = idmap_dir(&rec.bundle, i);
            if source.is_dir() {
                mkdir(&target)?;
            } else {
                if let Some(dir) = target.parent() {
                    mkdir(dir)?;
                }
                std::fs::write(&target, b"")
                    .map_err(CriError::io(format!("creating {}", target.display())))?;
            }
            let (rootfs, at, userns) = (self.rootfs.clone(), target.clone(), idmap.userns.clone());
            let read_only = m.recursive_read_only;
            blocking(move || rootfs.bind_idmapped(&source, &at, &userns, read_only)).await?;
            prepared.insert(i, target);
        }
        failpoint::hit("container.create.mounts")?;
        Ok(prepared)
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
}

/// How a container of `pod` sees its layers and idmapped mounts: `None` unless the
/// pod has its own user namespace. Each request mount that asks for an idmapped
/// mount must ask for the pod's own maps (the kubelet gives the pod's), and only a
/// pod with its own user namespace may ask.
fn pod_idmap(pod: &PodRecord, config: &cri::ContainerConfig) -> CriResult<Option<Idmap>> {
    let maps = crate::sandbox::pod_userns(&pod.config);
    let idmap = match (&pod.namespaces.user, &maps) {
        (Some(userns), Some(maps)) => {
            let owner = maps.root_on_host().ok_or_else(|| {
                CriError::FailedPrecondition(format!(
                    "pod sandbox {}: its user namespace does not map root",
                    pod.id
                ))
            })?;
            Some(Idmap {
                userns: userns.clone(),
                owner,
            })
        }
        _ => None,
    };
    let as_maps = |v: &[cri::IdMapping]| -> Vec<crate::pinns::IdMap> {
        v.iter()
            .map(|m| crate::pinns::IdMap {
                container: m.container_id,
                host: m.host_id,
                size: m.length,
            })
            .collect()
    };
    for (i, m) in config.mounts.iter().enumerate() {
        if !is_idmapped(m) {
            continue;
        }
        let field = format!("config.mounts[{i}].uid_mappings");
        let Some(maps) = maps.as_ref().filter(|_| idmap.is_some()) else {
            return Err(CriError::invalid(
                field,
                "an idmapped mount needs a pod with its own user namespace (userns_options mode POD)",
            ));
        };
        if as_maps(&m.uid_mappings) != maps.uids || as_maps(&m.gid_mappings) != maps.gids {
            return Err(CriError::invalid(
                field,
                "the mount's uid and gid mappings must be the pod's user namespace maps",
            ));
        }
    }
    Ok(idmap)
}

/// The directory `sub` (an image volume's `image_sub_path`, relative) of the mounted
/// image at `root`, resolved inside it: a symlink in the image cannot lead out of the
/// image. It must exist and be a directory.
fn sub_path(root: &Path, sub: &str, field: &str) -> CriResult<PathBuf> {
    if sub.is_empty() {
        return Ok(root.to_path_buf());
    }
    let root = std::fs::canonicalize(root)
        .map_err(CriError::io(format!("resolving {}", root.display())))?;
    let dir =
        std::fs::File::open(&root).map_err(CriError::io(format!("opening {}", root.display())))?;
    let how = nix::fcntl::OpenHow::new()
        .flags(nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC)
        .resolve(
            nix::fcntl::ResolveFlag::RESOLVE_IN_ROOT
                | nix::fcntl::ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    let fd = nix::fcntl::openat2(&dir, sub, how).map_err(|e| {
        if e == nix::errno::Errno::ENOENT || e == nix::errno::Errno::ENOTDIR {
            CriError::invalid(field, format!("{sub:?} does not exist in the image"))
        } else {
            CriError::invalid(field, format!("{sub:?}: {e}"))
        }
    })?;
    let path = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ))
    .map_err(CriError::io(format!(
        "resolving {sub:?} in {}",
        root.display()
    )))?;
    if !path.starts_with(&root) {
        return Err(CriError::invalid(
            field,
            format!("{sub:?} leads out of the image"),
        ));
    }
    if !path.is_dir() {
        return Err(CriError::invalid(
            field,
            format!("{sub:?} is not a directory in the image (only directories can be mounted)"),
        ));
    }
    Ok(path)
}

fn mkdir(dir: &std::path::Path) -> CriResult<()> {
    std::fs::create_dir_all(dir).map_err(CriError::io(format!("creating {}", dir.display())))
}

//! CreateContainer: reserve the name with a `Creating` record, then make the bundle,
//! the writable layer and its mount, the OCI spec, the shim and the container in it;
//! on a failure, undo what was made.

use std::path::PathBuf;
use std::sync::Arc;

use crius_cri_api::v1 as cri;
use crius_shim::client::{ProcessIo, StartOptions};
use crius_spec::{PodNamespaces, SpecInput};
use crius_store::{ContainerRecord, ContainerState, ImageRecord, PodRecord, PodState, Reserve};
use tracing::{info, warn};

use super::{Containers, Step, stdin_fifo};
use crate::error::{CriError, CriResult};
use crate::events::Kind;
use crate::failpoint;
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
    async fn plan(&self, req: ValidContainer) -> CriResult<Plan> {
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
        })
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
        blocking(move || layers.mount(&key, &target)).await?;
        made.push(Step::Mount);
        failpoint::hit("container.create.mount")?;

        self.write_spec(rec, plan).await?;
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
    async fn write_spec(&self, rec: &mut ContainerRecord, plan: &Plan) -> CriResult<()> {
        let pod = &plan.pod;
        let namespaces = PodNamespaces {
            net: pod.namespaces.net.clone(),
            ipc: pod.namespaces.ipc.clone(),
            uts: pod.namespaces.uts.clone(),
            pid: pod
                .infra_pid
                .map(|p| PathBuf::from(format!("/proc/{p}/ns/pid"))),
            target_pid: self.target_pid_ns(&rec.config).await?,
        };
        let (container_id, sandbox_id) = (rec.id.clone(), pod.id.clone());
        let (config, sandbox) = (rec.config.clone(), plan.sandbox_config.clone());
        let image = plan.run.config.clone();
        let pod_dir = pod.dir.clone();
        let (driver, host) = (self.config.cgroup_driver(), self.host_facts.clone());
        let profiles = self.config.state_dir.join("seccomp");
        let bundle = rec.bundle.clone();
        let generated = blocking(move || {
            let rootfs = bundle.join("rootfs");
            let generated = crius_spec::generate(&SpecInput {
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
            })?;
            let json = serde_json::to_vec_pretty(&generated.spec)
                .map_err(|e| CriError::Internal(format!("serializing the OCI spec: {e}")))?;
            let path = bundle.join("config.json");
            std::fs::write(&path, json)
                .map_err(CriError::io(format!("writing {}", path.display())))?;
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
        Ok(())
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

fn mkdir(dir: &std::path::Path) -> CriResult<()> {
    std::fs::create_dir_all(dir).map_err(CriError::io(format!("creating {}", dir.display())))
}

//! The call-sequence rig of the `cri_calls` fuzz target (feature `fuzzing`; not an
//! API): both managers over the recording fake host and a store in a directory of
//! the caller's, driven one CRI call at a time as the services drive them, with the
//! invariants that must hold between any two calls and once everything is removed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crius_cri_api::v1 as cri;
use crius_images::Images;
use crius_snapshotter::{ContentStore, Digest, Snapshotter};
use crius_store::{ContainerState, ImageRecord, PodState, Store};
use tonic::Code;

use super::{Containers, Host, exits::SHIM_PROBE_EVERY};
use crate::config::{Config, RuntimeHandler};
use crate::error::{CriError, CriResult};
use crate::host::fake::FakeHost;
use crate::sandbox::Sandboxes;
use crate::validate;

/// The undo steps a call sequence may make fail.
pub const UNDO_STEPS: &[&str] = &[
    "shim.kill",
    "shim.delete",
    "shim.shutdown",
    "shim.force_delete",
    "rootfs.unmount",
    "rootfs.remove_layer",
    "ns.unpin",
    "net.teardown",
];

/// How long the rig's managers wait for SIGKILLed processes: the fake's processes
/// go at once or (a failed kill) never.
const RIG_KILL_GRACE: std::time::Duration = std::time::Duration::from_millis(30);

/// A pod as RunPodSandbox gets it.
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub shared_pid: bool,
    pub host_network: bool,
}

/// The managers, their store and host, and what the sequence did to them. Pod
/// calls go through the same manager methods the services call.
pub struct CallRig {
    root: PathBuf,
    config: Arc<Config>,
    store: Store,
    images: Arc<Images>,
    host: Arc<FakeHost>,
    sandboxes: Arc<Sandboxes>,
    containers: Arc<Containers>,
    /// Containers whose shim the sequence killed.
    killed: HashSet<String>,
    /// Whether the sequence injected a failure since the last clean up.
    injected: bool,
}

fn fail(what: &str, e: impl std::fmt::Display) -> CriError {
    CriError::Internal(format!("setting up the call rig: {what}: {e}"))
}

impl CallRig {
    /// A rig whose store, run directory and logs live under `root`, with one
    /// layerless image (`busybox`) in the store.
    pub async fn new(root: &Path) -> CriResult<CallRig> {
        let mut config = Config {
            run_dir: root.join("run"),
            state_dir: root.join("state"),
            ..Config::default()
        };
        // The fake shim never runs it.
        config.runtimes.insert(
            "runc".into(),
            RuntimeHandler {
                path: PathBuf::from("/bin/sh"),
            },
        );
        std::fs::create_dir_all(config.run_dir.join("pods")).map_err(|e| fail("run dir", e))?;
        std::fs::create_dir_all(&config.state_dir).map_err(|e| fail("state dir", e))?;
        let store = Store::open(&config.state_dir.join("store.redb"))?;
        let content = Arc::new(
            ContentStore::open(&config.state_dir.join("content"))
                .map_err(|e| fail("content store", e))?,
        );
        let snapshots = Arc::new(
            Snapshotter::open(&config.state_dir.join("snapshots"))
                .map_err(|e| fail("snapshotter", e))?,
        );
        let images = Arc::new(Images::new(
            store.clone(),
            content.clone(),
            snapshots,
            &config.images,
        ));
        let image_config = br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"],"StopSignal":"SIGUSR1"},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let digest = Digest::sha256_of(image_config);
        content
            .ingest(&digest, Some(image_config.len() as u64), &image_config[..])
            .map_err(|e| fail("image config", e))?;
        store
            .put_image(&ImageRecord {
                id: digest.as_str().to_string(),
                repo_tags: vec!["docker.io/library/busybox:latest".into()],
                repo_digests: vec![],
                manifest_digest: digest.as_str().to_string(),
                layers: vec![],
                size: 1,
                pulled_at: 1,
            })
            .await?;
        let config = Arc::new(config);
        let host = Arc::new(FakeHost::default());
        let (sandboxes, containers) = managers(&config, &store, &images, &host);
        Ok(CallRig {
            root: root.to_path_buf(),
            config,
            store,
            images,
            host,
            sandboxes,
            containers,
            killed: HashSet::new(),
            injected: false,
        })
    }

    /// Pod and container ids in the store, for the sequence to pick from.
    pub async fn ids(&self) -> (Vec<String>, Vec<String>) {
        let pods = self.store.pods().await.unwrap_or_default();
        let containers = self.store.containers().await.unwrap_or_default();
        (
            pods.into_iter().map(|p| p.id).collect(),
            containers.into_iter().map(|c| c.id).collect(),
        )
    }

    /// RunPodSandbox.
    pub async fn run_pod(&self, p: &PodSpec) -> CriResult<String> {
        let mode = |node: bool, pod: bool| {
            if node {
                cri::NamespaceMode::Node as i32
            } else if pod {
                cri::NamespaceMode::Pod as i32
            } else {
                cri::NamespaceMode::Container as i32
            }
        };
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                uid: p.uid.clone(),
                attempt: p.attempt,
            }),
            hostname: p.name.clone(),
            log_directory: self.root.join("logs").join(&p.uid).display().to_string(),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: mode(p.host_network, true),
                        pid: mode(false, p.shared_pid),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = validate::pod_sandbox(Some(config), "", &self.config)?;
        self.sandboxes.run(pod).await
    }

    /// StopPodSandbox.
    pub async fn stop_pod(&self, id: &str) -> CriResult<()> {
        self.containers.stop_pod_sandbox(id).await
    }

    /// RemovePodSandbox.
    pub async fn remove_pod(&self, id: &str) -> CriResult<()> {
        self.containers.remove_pod_sandbox(id).await
    }

    /// CreateContainer (of `busybox`; `privileged` is refused in these pods).
    pub async fn create_container(
        &self,
        pod_id: &str,
        name: &str,
        attempt: u32,
        privileged: bool,
    ) -> CriResult<String> {
        let req = validate::create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.to_string(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: name.to_string(),
                    attempt,
                }),
                image: Some(cri::ImageSpec {
                    image: "busybox".into(),
                    ..Default::default()
                }),
                log_path: format!("{name}/{attempt}.log"),
                stdin: attempt % 2 == 0,
                linux: Some(cri::LinuxContainerConfig {
                    security_context: Some(cri::LinuxContainerSecurityContext {
                        privileged,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: None,
        })?;
        self.containers.create(req).await
    }

    /// StartContainer.
    pub async fn start_container(&self, id: &str) -> CriResult<()> {
        self.containers.start(id).await
    }

    /// StopContainer with `timeout` seconds.
    pub async fn stop_container(&self, id: &str, timeout: i64) -> CriResult<()> {
        self.containers.stop(id, timeout).await
    }

    /// RemoveContainer.
    pub async fn remove_container(&self, id: &str) -> CriResult<()> {
        self.containers.remove(id).await
    }

    /// ListPodSandbox, ListContainers and the status of each: how many there are.
    pub async fn list(&self) -> CriResult<usize> {
        let pods = self.sandboxes.list(None).await?;
        let containers = self.containers.list(None).await?;
        for p in &pods {
            self.sandboxes.status(&p.id, true).await?;
        }
        for c in &containers {
            self.containers.status(&c.id, true).await?;
        }
        Ok(pods.len() + containers.len())
    }

    /// Makes the `n`-th host "do" call from now on fail.
    pub fn fail_host_call(&mut self, n: usize) {
        self.injected = true;
        self.host.fail_at(n);
    }

    /// Makes one of [`UNDO_STEPS`] fail until [`CallRig::clear_failures`].
    pub fn fail_undo(&mut self, step: usize) {
        self.injected = true;
        self.host.fail_undo(UNDO_STEPS[step % UNDO_STEPS.len()]);
    }

    /// Lets every host call succeed again.
    pub fn clear_failures(&self) {
        self.host.clear_failures();
    }

    /// Pretends the shim of container `id` died, leaving `pids` in its cgroup.
    pub async fn kill_shim(&mut self, id: &str, pids: &[u32]) {
        if let Ok(Some(rec)) = self.store.container(id).await {
            // A shim already gone (an exited container is torn down: its shim and
            // cgroup are gone with it) cannot die leaving processes.
            if !crate::host::ShimApi::is_alive(&*self.host, &rec.socket) {
                return;
            }
            self.host.kill_shim_leaving(&rec.socket, &rec.bundle, pids);
            self.killed.insert(rec.id);
        }
    }

    /// Lets the exit watcher look at every container once.
    pub async fn poll_exits(&self) {
        for _ in 0..SHIM_PROBE_EVERY {
            self.containers.poll_exits().await;
        }
    }

    /// A daemon restart over the same store and host: new managers, recovery.
    pub async fn restart(&mut self) -> CriResult<()> {
        let (s, c) = managers(&self.config, &self.store, &self.images, &self.host);
        self.sandboxes = s;
        self.containers = c;
        self.sandboxes.recover().await?;
        self.containers.recover().await
    }

    /// Checks what a call may return: without injected failures, only the refusals
    /// a kubelet can provoke.
    pub fn check_result<T>(&self, call: &str, r: &CriResult<T>) {
        if let Err(e) = r {
            let refusal = matches!(
                e.code(),
                Code::NotFound
                    | Code::InvalidArgument
                    | Code::AlreadyExists
                    | Code::FailedPrecondition
            );
            assert!(
                self.injected || refusal,
                "{call} failed with {:?} although no failure was injected: {e}",
                e.code()
            );
        }
    }

    /// What must hold between any two calls: every container's pod exists unless the
    /// container has exited; without injected failures, every created or running
    /// container has its shim (unless the sequence killed it), and the host holds
    /// nothing that no record accounts for.
    pub async fn check(&self) {
        let pods = self.store.pods().await.unwrap_or_default();
        let containers = self.store.containers().await.unwrap_or_default();
        let pod_ids: HashSet<&str> = pods.iter().map(|p| p.id.as_str()).collect();
        for c in &containers {
            assert!(
                pod_ids.contains(c.pod_id.as_str()) || c.state == ContainerState::Exited,
                "container {} is {:?} but its pod {} is gone",
                c.id,
                c.state,
                c.pod_id
            );
        }
        if self.injected {
            return;
        }
        let live = self.host.live();
        for c in &containers {
            let socket = c.socket.display().to_string();
            if matches!(c.state, ContainerState::Created | ContainerState::Running)
                && !self.killed.contains(&c.id)
            {
                assert!(
                    live.shims.contains(&socket),
                    "container {} is {:?} without a shim",
                    c.id,
                    c.state
                );
            }
        }
        let sockets: HashSet<String> = containers
            .iter()
            .map(|c| c.socket.display().to_string())
            .collect();
        let rootfs: HashSet<String> = containers
            .iter()
            .map(|c| c.bundle.join("rootfs").display().to_string())
            .collect();
        let ids: HashSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
        for s in &live.shims {
            assert!(sockets.contains(s), "shim {s} belongs to no container");
        }
        for m in &live.mounted {
            assert!(rootfs.contains(m), "{m} is mounted for no container");
        }
        for l in &live.layers {
            assert!(
                ids.contains(l.as_str()),
                "layer {l} belongs to no container"
            );
        }
        let pod_dirs: Vec<String> = pods.iter().map(|p| p.dir.display().to_string()).collect();
        for p in live.pinned.iter().chain(&live.infra) {
            assert!(
                pod_dirs.iter().any(|d| p.starts_with(d.as_str())),
                "{p} belongs to no pod"
            );
        }
        let ready: HashSet<&str> = pods
            .iter()
            .filter(|p| p.state == PodState::Ready)
            .map(|p| p.id.as_str())
            .collect();
        for n in &live.networks {
            assert!(
                ready.contains(n.as_str()),
                "pod {n} has a network but is not ready"
            );
        }
        for (dir, known) in [("pods", &pod_ids), ("containers", &ids)] {
            for name in dir_names(&self.config.run_dir.join(dir)) {
                assert!(
                    known.contains(name.as_str()),
                    "{dir}/{name} belongs to no record"
                );
            }
        }
    }

    /// Removes every pod and container with every failure cleared, restarts, and
    /// checks that nothing is left: no record, no directory, and nothing held on the
    /// host.
    pub async fn clean_up(&mut self) {
        self.clear_failures();
        for _ in 0..2 {
            let (pods, containers) = self.ids().await;
            for c in &containers {
                let r = self.remove_container(c).await;
                assert!(r.is_ok(), "removing container {c}: {r:?}");
            }
            for p in &pods {
                let r = self.remove_pod(p).await;
                assert!(r.is_ok(), "removing pod {p}: {r:?}");
            }
            let r = self.restart().await;
            assert!(r.is_ok(), "restarting: {r:?}");
        }
        let (pods, containers) = self.ids().await;
        assert!(
            pods.is_empty() && containers.is_empty(),
            "left: {pods:?} {containers:?}"
        );
        let live = self.host.live();
        assert!(live.is_empty(), "the host still holds {live:?}");
        for dir in ["pods", "containers"] {
            let left = dir_names(&self.config.run_dir.join(dir));
            assert!(left.is_empty(), "{dir} left: {left:?}");
        }
        self.killed.clear();
        self.injected = false;
        self.host.clear_log();
    }
}

fn managers(
    config: &Arc<Config>,
    store: &Store,
    images: &Arc<Images>,
    host: &Arc<FakeHost>,
) -> (Arc<Sandboxes>, Arc<Containers>) {
    let sandboxes = Arc::new(Sandboxes::new(
        config.clone(),
        store.clone(),
        host.clone(),
        host.clone(),
    ));
    let containers = Arc::new(
        Containers::new(
            config.clone(),
            store.clone(),
            sandboxes.clone(),
            images.clone(),
            Host {
                shims: host.clone(),
                rootfs: host.clone(),
                procs: host.clone(),
                shim_binary: PathBuf::from("/nonexistent/crius-shim"),
            },
        )
        .with_kill_grace(RIG_KILL_GRACE),
    );
    (sandboxes, containers)
}

fn dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

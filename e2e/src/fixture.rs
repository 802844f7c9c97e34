//! A test's world in one value: a [`Daemon`], optionally a registry with pushed
//! images, and the images, pods and containers the test made through it, each one
//! line in a test; [`Fixture::finish`] tears all of it down and checks that nothing
//! is left.
//!
//! ```no_run
//! # use crius_e2e::*;
//! # async fn demo(runtime: Runtime) {
//! let mut f = Fixture::start("ctr-life", Options::default().with_runtime(runtime)).await;
//! let image = f.pull_busybox().await;
//! let pod = f.pod(PodBuilder::new("life").log_directory(f.logs())).await;
//! let id = f.run(&pod, ContainerBuilder::new("worker", &image).sh("exit 3")).await;
//! assert_eq!(f.wait_exited(&id).await.exit_code, 3);
//! f.finish().await;
//! # }
//! ```
//!
//! Invariants:
//! - What a fixture made it also removes at [`Fixture::finish`]: its pods (with their
//!   containers), the images it pulled, its registry (stopped, its root removed);
//!   then [`Daemon::finish`]'s leak checks run, and every container the daemon had
//!   must have left no cgroup. A test may remove things itself first; finish then
//!   has nothing left to do for them.
//! - A failed test (a panic) drops the fixture: the daemon is killed and its root
//!   cleaned by force, the registry killed and its root removed.
//! - The registry lives on a scratch root of its own, never under the daemon's
//!   root, so it can start before the daemon (whose config may name it) and the
//!   daemon's leak check never sees it.

use std::path::PathBuf;

use crius_cri_api::v1 as cri;
use crius_testkit::Runtime;

use crate::images::{Comp, ImageBuilder, Pushed};
use crate::registry::TestRegistry;
use crate::rpc::{
    create_container, image_spec, image_status, list_containers, pull_image, remove_pod,
    run_pod_on, start_container,
};
use crate::{Daemon, Options};

/// A daemon and what a test made through it.
pub struct Fixture {
    /// The daemon under test; its clients are `d.rt` and `d.img`.
    pub d: Daemon,
    tag: String,
    runtime: Runtime,
    registry: Option<TestRegistry>,
    pulled: Vec<String>,
    pods: Vec<String>,
    containers: Vec<String>,
}

impl Fixture {
    /// A daemon started with `opts` (see [`Daemon::start_with`]); pods run under
    /// `opts.runtime`.
    pub async fn start(tag: &str, opts: Options) -> Fixture {
        let runtime = opts.runtime;
        Fixture::around(tag, Daemon::start_with(tag, opts).await, runtime, None)
    }

    /// A registry first (with basic auth when `auth` is given), then a daemon whose
    /// extra config may name the registry's `host:port` as `{registry}`.
    pub async fn start_with_registry(
        tag: &str,
        auth: Option<(&str, &str)>,
        mut opts: Options,
    ) -> Fixture {
        let reg = start_registry(tag, auth).await;
        opts.extra_config = opts.extra_config.replace("{registry}", &reg.host);
        let runtime = opts.runtime;
        Fixture::around(tag, Daemon::start_with(tag, opts).await, runtime, Some(reg))
    }

    /// The usual start of a container test: a daemon started with `opts`, the busybox
    /// image pulled ([`pull_busybox`](Self::pull_busybox)) and a pod named `tag`
    /// logging to [`logs`](Self::logs); returns the fixture, the image's reference
    /// and the pod's id.
    pub async fn with_busybox_pod(tag: &str, opts: Options) -> (Fixture, String, String) {
        let mut f = Fixture::start(tag, opts).await;
        let image = f.pull_busybox().await;
        let pod = f
            .pod(crate::PodBuilder::new(tag).log_directory(f.logs()))
            .await;
        (f, image, pod)
    }

    fn around(tag: &str, d: Daemon, runtime: Runtime, reg: Option<TestRegistry>) -> Fixture {
        Fixture {
            d,
            tag: tag.to_string(),
            runtime,
            registry: reg,
            pulled: Vec::new(),
            pods: Vec::new(),
            containers: Vec::new(),
        }
    }

    /// Starts the fixture's registry, without auth, unless it has one already.
    pub async fn start_registry(&mut self) -> &TestRegistry {
        if self.registry.is_none() {
            self.registry = Some(start_registry(&self.tag, None).await);
        }
        self.registry()
    }

    /// Starts the fixture's registry behind basic auth.
    pub async fn start_registry_with_auth(&mut self, user: &str, password: &str) -> &TestRegistry {
        assert!(
            self.registry.is_none(),
            "the fixture has a registry already"
        );
        self.registry = Some(start_registry(&self.tag, Some((user, password))).await);
        self.registry()
    }

    /// The fixture's registry.
    pub fn registry(&self) -> &TestRegistry {
        self.registry
            .as_ref()
            .expect("start the fixture's registry first")
    }

    /// Pushes `image` to the fixture's registry.
    pub async fn push(&self, image: ImageBuilder) -> Pushed {
        image
            .push(self.registry())
            .await
            .expect("pushing a test image")
    }

    /// Pushes `test/busybox:v1` (see [`ImageBuilder::busybox`]), its layer `comp`ressed.
    pub async fn push_busybox(&self, comp: Comp) -> Pushed {
        self.push(ImageBuilder::busybox(comp).expect("the busybox layer"))
            .await
    }

    /// Pulls `image` (it must succeed); returns its id. The image is removed at
    /// [`finish`](Self::finish) unless the test removed it.
    pub async fn pull(&mut self, image: &str) -> String {
        let id = pull_image(&mut self.d.img, image, None)
            .await
            .unwrap_or_else(|s| panic!("PullImage {image}: {s}"));
        self.pulled.push(id.clone());
        id
    }

    /// The usual image: starts the registry unless it runs, pushes busybox (gzip) and
    /// pulls it; returns its reference.
    pub async fn pull_busybox(&mut self) -> String {
        self.start_registry().await;
        let image = self.push_busybox(Comp::Gzip).await.reference();
        self.pull(&image).await;
        image
    }

    /// `<root>/fixtures/<name>`, its parent created: a place for files the test owns
    /// (wrappers, directories to mount), which the leak check passes over.
    pub fn path(&self, name: &str) -> PathBuf {
        let dir = self.d.root.join("fixtures");
        std::fs::create_dir_all(&dir).expect("the test's fixtures directory");
        dir.join(name)
    }

    /// `<root>/fixtures/logs` (created): a log directory for the test's pods.
    pub fn logs(&self) -> PathBuf {
        let dir = self.path("logs");
        std::fs::create_dir_all(&dir).expect("the test's log directory");
        dir
    }

    /// What the container logging to `<name>.log` in [`logs`](Self::logs) wrote so far.
    pub fn log_of(&self, name: &str) -> String {
        std::fs::read_to_string(self.logs().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Runs a pod under the fixture's runtime (it must succeed); returns its id. The
    /// pod is stopped and removed at [`finish`](Self::finish).
    pub async fn pod(&mut self, config: impl Into<cri::PodSandboxConfig>) -> String {
        self.try_pod(config).await.expect("RunPodSandbox")
    }

    /// Runs a pod under the fixture's runtime.
    pub async fn try_pod(
        &mut self,
        config: impl Into<cri::PodSandboxConfig>,
    ) -> Result<String, tonic::Status> {
        let id = run_pod_on(&mut self.d.rt, self.runtime.handler(), config).await?;
        self.pods.push(id.clone());
        Ok(id)
    }

    /// Creates a container in `pod`.
    pub async fn create(
        &mut self,
        pod: &str,
        config: impl Into<cri::ContainerConfig>,
    ) -> Result<String, tonic::Status> {
        let id = create_container(&mut self.d.rt, pod, config, None).await?;
        self.containers.push(id.clone());
        Ok(id)
    }

    /// Starts a created container (it must succeed).
    pub async fn start_container(&mut self, id: &str) {
        start_container(&mut self.d.rt, id)
            .await
            .expect("StartContainer");
    }

    /// Creates and starts a container in `pod` (both must succeed); returns its id.
    pub async fn run(&mut self, pod: &str, config: impl Into<cri::ContainerConfig>) -> String {
        let id = self.create(pod, config).await.expect("CreateContainer");
        self.start_container(&id).await;
        id
    }

    /// ContainerStatus (it must succeed).
    pub async fn status(&mut self, id: &str) -> cri::ContainerStatus {
        self.d
            .rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .expect("a container status")
    }

    /// Waits (up to [`DEADLINE`](crate::DEADLINE)) until the container has exited; returns its status.
    pub async fn wait_exited(&mut self, id: &str) -> cri::ContainerStatus {
        crate::status_when(&self.d.rt, id, "the container to exit", |st| {
            st.state == cri::ContainerState::ContainerExited as i32
        })
        .await
    }

    /// ExecSync of `/bin/sh -c <script>` (20 s timeout; the call must succeed).
    pub async fn exec(&mut self, id: &str, script: &str) -> cri::ExecSyncResponse {
        self.d
            .rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.into(),
                cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
                timeout: 20,
            })
            .await
            .expect("ExecSync")
            .into_inner()
    }

    /// StopContainer with `timeout` seconds of grace (it must succeed).
    pub async fn stop_container(&mut self, id: &str, timeout: i64) {
        self.d
            .rt
            .stop_container(cri::StopContainerRequest {
                container_id: id.into(),
                timeout,
            })
            .await
            .expect("StopContainer");
    }

    /// RemoveContainer (it must succeed).
    pub async fn remove_container(&mut self, id: &str) {
        self.d
            .rt
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
            .expect("RemoveContainer");
    }

    /// Removes what the fixture made (pods, then pulled images, then the registry),
    /// runs [`Daemon::finish`]'s leak checks, and checks that no container the daemon
    /// had left a cgroup.
    pub async fn finish(mut self) {
        // Containers made through a raw client too.
        let listed = list_containers(&mut self.d.rt, None).await;
        self.containers.extend(listed.into_iter().map(|c| c.id));
        self.containers.sort();
        self.containers.dedup();
        for pod in std::mem::take(&mut self.pods) {
            remove_pod(&mut self.d.rt, &pod)
                .await
                .expect("removing the test's pod");
        }
        for id in std::mem::take(&mut self.pulled) {
            if image_status(&mut self.d.img, &id).await.is_some() {
                self.d
                    .img
                    .remove_image(cri::RemoveImageRequest {
                        image: Some(image_spec(&id)),
                    })
                    .await
                    .expect("RemoveImage");
            }
        }
        drop(self.registry.take());
        self.d.finish().await;
        for id in &self.containers {
            for ctrl in ["memory", "cpu", "pids", "systemd"] {
                let dir = PathBuf::from(format!("/sys/fs/cgroup/{ctrl}/crius/crius-{id}"));
                assert!(!dir.exists(), "cgroup left behind: {}", dir.display());
            }
        }
    }
}

async fn start_registry(tag: &str, auth: Option<(&str, &str)>) -> TestRegistry {
    TestRegistry::start_unique(&format!("{tag}-registry"), auth)
        .await
        .expect("starting the test registry")
}

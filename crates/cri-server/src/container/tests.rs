//! CreateContainer's undo, removal and start-up recovery, over the recording fake
//! host: these run as any user.

use std::path::PathBuf;
use std::sync::Arc;

use crius_cri_api::v1 as cri;
use crius_snapshotter::{ContentStore, Digest, Snapshotter};
use crius_store::{
    ContainerState, ImageRecord, PinnedNamespaces, PodRecord, PodState, Reserve, Store,
};

use super::{Containers, Host, cri_signal, cri_signal_number, signal_number, stop_signal};
use crate::config::{Config, RuntimeHandler};
use crate::error::CriError;
use crate::host::fake::FakeHost;
use crate::sandbox::Sandboxes;
use crate::validate;
use crius_images::Images;

struct Rig {
    _root: tempfile::TempDir,
    config: Arc<Config>,
    store: Store,
    images: Arc<Images>,
    pod: PodRecord,
    image: String,
}

const POD_ID: &str = "pod0";

impl Rig {
    async fn new() -> Rig {
        let root = tempfile::tempdir().unwrap();
        let mut config = Config {
            run_dir: root.path().join("run"),
            state_dir: root.path().join("state"),
            ..Config::default()
        };
        // CDI spec directories of the test's own (empty unless a test writes them).
        config.cdi.spec_dirs = vec![root.path().join("cdi")];
        // Any installed binary will do: the fake shim never runs it.
        config.runtimes.insert(
            "runc".into(),
            RuntimeHandler {
                path: PathBuf::from("/bin/sh"),
            },
        );
        std::fs::create_dir_all(&config.state_dir).unwrap();
        let store = Store::open(&config.state_dir.join("store.redb")).unwrap();
        let content = Arc::new(ContentStore::open(&config.state_dir.join("content")).unwrap());
        let snapshots = Arc::new(Snapshotter::open(&config.state_dir.join("snapshots")).unwrap());
        let images = Arc::new(Images::new(
            store.clone(),
            content.clone(),
            snapshots,
            &config.images,
        ));
        // An image with no layers: its config in the content store, its record in the
        // store.
        let image_config = br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"],"StopSignal":"SIGUSR1"},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let digest = Digest::sha256_of(image_config);
        content
            .ingest(&digest, Some(image_config.len() as u64), &image_config[..])
            .unwrap();
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
            .await
            .unwrap();
        let dir = config.run_dir.join("pods").join(POD_ID);
        std::fs::create_dir_all(&dir).unwrap();
        let pod = PodRecord {
            id: POD_ID.into(),
            name: "web_default_uid_0".into(),
            state: PodState::Ready,
            created_at: 1,
            runtime_handler: "runc".into(),
            config: cri::PodSandboxConfig {
                metadata: Some(cri::PodSandboxMetadata {
                    name: "web".into(),
                    namespace: "default".into(),
                    uid: "uid".into(),
                    attempt: 0,
                }),
                log_directory: root.path().join("logs").display().to_string(),
                ..Default::default()
            },
            dir,
            namespaces: PinnedNamespaces::default(),
            ips: vec![],
            infra_pid: None,
        };
        assert_eq!(store.insert_pod(&pod).await.unwrap(), Reserve::Done);
        Rig {
            _root: root,
            config: Arc::new(config),
            store,
            images,
            pod,
            image: "busybox".into(),
        }
    }

    fn containers(&self, host: &Arc<FakeHost>) -> Arc<Containers> {
        self.containers_with_nri(host, Arc::new(crate::nri::NoNri))
    }

    fn containers_with_nri(
        &self,
        host: &Arc<FakeHost>,
        nri: Arc<dyn crate::nri::Nri>,
    ) -> Arc<Containers> {
        let sandboxes = Arc::new(
            Sandboxes::new(
                self.config.clone(),
                self.store.clone(),
                host.clone(),
                host.clone(),
            )
            .with_nri(nri),
        );
        Arc::new(Containers::new(
            self.config.clone(),
            self.store.clone(),
            sandboxes,
            self.images.clone(),
            Host {
                shims: host.clone(),
                rootfs: host.clone(),
                procs: host.clone(),
                shim_binary: PathBuf::from("/nonexistent/crius-shim"),
            },
        ))
    }

    fn request(&self, name: &str, privileged: bool) -> validate::ValidContainer {
        validate::create_container(cri::CreateContainerRequest {
            pod_sandbox_id: self.pod.id.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: name.into(),
                    attempt: 0,
                }),
                image: Some(cri::ImageSpec {
                    image: self.image.clone(),
                    ..Default::default()
                }),
                log_path: format!("{name}/0.log"),
                stdin: true,
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
        })
        .unwrap()
    }

    fn bundles(&self) -> Vec<String> {
        match std::fs::read_dir(self.config.run_dir.join("containers")) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// The steps CreateContainer makes through the host, in order, and their undo.
const STEPS: &[(&str, &[&str])] = &[
    ("rootfs.create_layer", &["rootfs.remove_layer"]),
    ("rootfs.mount", &["rootfs.unmount"]),
    ("shim.launch", &["shim.shutdown"]),
    ("shim.create", &["shim.kill", "shim.delete"]),
];

fn names(log: &[String], undo: bool) -> Vec<String> {
    log.iter()
        .filter(|e| FakeHost::is_undo(e) == undo)
        .map(|e| e.split(' ').next().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn a_failure_at_each_step_undoes_exactly_the_steps_before_it() {
    for n in 0..STEPS.len() {
        let rig = Rig::new().await;
        let host = Arc::new(FakeHost::default());
        host.fail_at(n);
        let containers = rig.containers(&host);
        let err = containers
            .create(rig.request("app", false))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        let log = host.log();
        let made: Vec<&str> = STEPS[..=n].iter().map(|s| s.0).collect();
        assert_eq!(names(&log, false), made, "failing step {n}: {log:?}");
        let undone: Vec<&str> = STEPS[..n]
            .iter()
            .rev()
            .flat_map(|s| s.1.iter().copied())
            .collect();
        assert_eq!(names(&log, true), undone, "failing step {n}: {log:?}");
        assert!(rig.store.containers().await.unwrap().is_empty(), "step {n}");
        assert!(rig.bundles().is_empty(), "step {n}: {:?}", rig.bundles());
        // The name is free again: a retry can succeed.
        containers.create(rig.request("app", false)).await.unwrap();
    }
}

/// An image with one (fake) layer, for image volumes over the fake host.
async fn layered_image(rig: &Rig) -> String {
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:1111111111111111111111111111111111111111111111111111111111111111"]}}"#;
    let digest = Digest::sha256_of(config);
    let content = ContentStore::open(&rig.config.state_dir.join("content")).unwrap();
    content
        .ingest(&digest, Some(config.len() as u64), &config[..])
        .unwrap();
    let chain = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    rig.store
        .put_image(&ImageRecord {
            id: digest.as_str().to_string(),
            repo_tags: vec!["docker.io/library/data:v1".into()],
            repo_digests: vec![],
            manifest_digest: digest.as_str().to_string(),
            layers: vec![crius_store::LayerRecord {
                digest: chain.into(),
                diff_id: chain.into(),
                chain_id: chain.into(),
                size: 1,
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            }],
            size: 1,
            pulled_at: 1,
        })
        .await
        .unwrap();
    digest.as_str().to_string()
}

fn with_volume(mut req: validate::ValidContainer, image: &str) -> validate::ValidContainer {
    req.config.mounts.push(cri::Mount {
        container_path: "/vol".into(),
        readonly: true,
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    req
}

#[tokio::test]
async fn an_image_volume_is_a_view_undone_with_the_rest() {
    // The host steps with one image volume, and what a failure at each undoes.
    let made = [
        "rootfs.create_layer",
        "rootfs.mount",
        "rootfs.create_view",
        "rootfs.mount",
        "shim.launch",
        "shim.create",
    ];
    for n in 0..made.len() {
        let rig = Rig::new().await;
        let data = layered_image(&rig).await;
        let host = Arc::new(FakeHost::default());
        host.fail_at(n);
        let containers = rig.containers(&host);
        let err = containers
            .create(with_volume(rig.request("app", false), "data:v1"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        let log = host.log();
        assert_eq!(names(&log, false), made[..=n], "failing step {n}: {log:?}");
        let mut undone: Vec<&str> = Vec::new();
        if n == 5 {
            undone.push("shim.shutdown");
        }
        if n >= 2 {
            undone.extend(["rootfs.unmount", "rootfs.remove_layer"]);
        }
        if n >= 2 {
            undone.push("rootfs.unmount");
        }
        if n >= 1 {
            undone.push("rootfs.remove_layer");
        }
        assert_eq!(names(&log, true), undone, "failing step {n}: {log:?}");
        assert!(host.live().is_empty(), "step {n}: {:?}", host.live());
        assert!(rig.bundles().is_empty(), "step {n}");
        // The retry succeeds; the record names the image mounted, and the removal
        // releases the view too.
        let id = containers
            .create(with_volume(rig.request("app", false), "data:v1"))
            .await
            .unwrap();
        let rec = rig.store.container(&id).await.unwrap().unwrap();
        assert_eq!(rec.config.mounts[0].image.as_ref().unwrap().image_ref, data);
        let status = containers.status(&id, false).await.unwrap().status.unwrap();
        assert_eq!(status.mounts[0].image.as_ref().unwrap().image_ref, data);
        assert!(host.live().layers.contains(&format!("{id}-v0")));
        containers.remove(&id).await.unwrap();
        assert!(host.live().is_empty(), "{:?}", host.live());
    }
}

#[tokio::test]
async fn an_image_volume_of_a_missing_image_is_not_found_and_makes_nothing() {
    let rig = Rig::new().await;
    let host = Arc::new(FakeHost::default());
    let err = rig
        .containers(&host)
        .create(with_volume(rig.request("app", false), "never-pulled:v1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    assert!(err.to_string().contains("config.mounts[0].image"), "{err}");
    // An image without layers has nothing to mount.
    let err = rig
        .containers(&host)
        .create(with_volume(rig.request("app", false), "busybox"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(host.log().is_empty(), "{:?}", host.log());
    assert!(rig.store.containers().await.unwrap().is_empty());
}

#[tokio::test]
async fn cdi_devices_reach_the_spec_and_an_unknown_one_makes_nothing() {
    let rig = Rig::new().await;
    let host = Arc::new(FakeHost::default());
    let containers = rig.containers(&host);
    let with_cdi = |name: &str| {
        let mut r = rig.request(name, false);
        r.config.cdi_devices = vec![cri::CdiDevice {
            name: "v.example.com/d=a".into(),
        }];
        r
    };
    let err = containers.create(with_cdi("app")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(
        err.to_string().contains("config.cdi_devices[0].name"),
        "{err}"
    );
    assert!(err.to_string().contains("\"v.example.com/d=a\""), "{err}");
    assert!(host.log().is_empty(), "{:?}", host.log());
    assert!(rig.store.containers().await.unwrap().is_empty());
    assert!(rig.bundles().is_empty());

    // A spec file written now is read at the next request.
    let dir = &rig.config.cdi.spec_dirs[0];
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("v.json"),
        r#"{"cdiVersion": "0.7.0", "kind": "v.example.com/d", "devices": [{"name": "a",
            "containerEdits": {"env": ["CDI_A=1"], "additionalGids": [77],
            "deviceNodes": [{"path": "/dev/a", "hostPath": "/dev/null"}]}}]}"#,
    )
    .unwrap();
    let id = containers.create(with_cdi("app")).await.unwrap();
    let text = std::fs::read_to_string(
        rig.config
            .run_dir
            .join("containers")
            .join(&id)
            .join("config.json"),
    )
    .unwrap();
    let spec: serde_json::Value = serde_json::from_str(&text).unwrap();
    let env = spec["process"]["env"].as_array().unwrap();
    assert!(env.iter().any(|v| v == "CDI_A=1"), "{env:?}");
    let dev = spec["linux"]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == "/dev/a")
        .cloned();
    let dev = dev.unwrap_or_else(|| panic!("{}", spec["linux"]["devices"]));
    assert_eq!(
        (
            dev["type"].as_str(),
            dev["major"].as_i64(),
            dev["minor"].as_i64()
        ),
        (Some("c"), Some(1), Some(3))
    );
    let rules = spec["linux"]["resources"]["devices"].as_array().unwrap();
    assert!(
        rules.iter().any(|r| r["allow"] == true
            && r["major"] == 1
            && r["minor"] == 3
            && r["access"] == "rwm"),
        "{rules:?}"
    );
    // The record's supplemental groups are the process's, CDI's included.
    let rec = rig.store.container(&id).await.unwrap().unwrap();
    assert!(
        rec.supplemental_groups.contains(&77),
        "{:?}",
        rec.supplemental_groups
    );
}

#[tokio::test]
async fn a_spec_refusal_undoes_the_rootfs_and_names_the_field() {
    let rig = Rig::new().await;
    let host = Arc::new(FakeHost::default());
    // A privileged container in an unprivileged pod: refused by the spec generator,
    // after the rootfs was made (the spec reads the container's /etc/passwd).
    let err = rig
        .containers(&host)
        .create(rig.request("app", true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("privileged"), "{err}");
    assert_eq!(
        names(&host.log(), true),
        ["rootfs.unmount", "rootfs.remove_layer"]
    );
    assert!(rig.bundles().is_empty());
    assert!(rig.store.containers().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_container_made_started_stopped_and_removed_leaves_nothing() {
    let rig = Rig::new().await;
    let host = Arc::new(FakeHost::default());
    let containers = rig.containers(&host);
    let id = containers.create(rig.request("app", false)).await.unwrap();
    let rec = rig.store.container(&id).await.unwrap().unwrap();
    assert_eq!(rec.state, ContainerState::Created);
    assert_eq!(
        rec.stop_signal, "SIGUSR1",
        "the image's stop signal is kept"
    );
    assert!(rec.bundle.join("config.json").is_file());
    assert!(rec.bundle.join("stdin.fifo").exists());
    assert!(rec.log_path.as_ref().unwrap().parent().unwrap().is_dir());
    containers.start(&id).await.unwrap();
    assert_eq!(
        rig.store.container(&id).await.unwrap().unwrap().state,
        ContainerState::Running
    );
    host.clear_log();
    containers.stop(&id, 0).await.unwrap();
    let stopped = rig.store.container(&id).await.unwrap().unwrap();
    assert_eq!(stopped.state, ContainerState::Exited);
    assert_eq!(stopped.exit_code, 137);
    // The stop tears the exited container down: only its layer and bundle are left
    // for RemoveContainer.
    assert_eq!(
        names(&host.log(), true),
        [
            "shim.kill",
            "shim.delete",
            "shim.shutdown",
            "rootfs.unmount"
        ]
    );
    assert!(rec.bundle.join(super::TORN_DOWN).is_file());
    host.clear_log();
    containers.remove(&id).await.unwrap();
    containers.remove(&id).await.unwrap();
    assert_eq!(names(&host.log(), true), ["rootfs.remove_layer"]);
    assert!(rig.store.containers().await.unwrap().is_empty());
    assert!(rig.bundles().is_empty());
}

#[tokio::test]
async fn a_state_call_that_fails_with_the_shim_alive_is_not_taken_for_its_death() {
    let rig = Rig::new().await;
    let host = Arc::new(FakeHost::default());
    let containers = rig.containers(&host);
    let id = containers
        .create(rig.request("flaky", false))
        .await
        .unwrap();
    containers.start(&id).await.unwrap();
    // The first look before the signal, and the looks after it, fail as a broken
    // connection would; the shim is there all along.
    host.fail_states(3);
    containers.stop(&id, 10).await.unwrap();
    let stopped = rig.store.container(&id).await.unwrap().unwrap();
    assert_eq!(stopped.state, ContainerState::Exited);
    assert_eq!(
        (stopped.exit_code, stopped.reason.as_str()),
        (137, "Error"),
        "{stopped:?}"
    );
    // It was stopped by its stop signal, not killed (the fake's processes go at once).
    let kills = host.kills();
    assert_eq!(kills.len(), 1, "{kills:?}");
    containers.remove(&id).await.unwrap();
}

#[tokio::test]
async fn a_forced_stop_kills_the_init_alone_in_its_own_pid_namespace_and_every_process_in_the_pods()
{
    let rig = Rig::new().await;
    let host = Arc::new(FakeHost::default());
    let containers = rig.containers(&host);
    let own = containers.create(rig.request("own", false)).await.unwrap();
    let mut req = rig.request("shared", false);
    req.config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options
        .get_or_insert_with(Default::default)
        .pid = cri::NamespaceMode::Node as i32;
    let shared = containers.create(req).await.unwrap();
    for id in [&own, &shared] {
        containers.start(id).await.unwrap();
        containers.stop(id, 0).await.unwrap();
    }
    // The kernel ends a PID namespace with its init: SIGKILL to the init is enough.
    // Sharing a namespace (the host's here, or the pod's), the container's other
    // processes need their own.
    // (Teardown sweeps a shared namespace once more.)
    let kills = host.kills();
    let of = |id: &String| {
        kills
            .iter()
            .filter(|k| &k.0 == id)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(of(&own), [(own.clone(), 9, false)]);
    assert!(!of(&shared).is_empty());
    assert!(of(&shared).iter().all(|k| k.1 == 9 && k.2), "{kills:?}");
    for id in [&own, &shared] {
        containers.remove(id).await.unwrap();
    }
}

#[tokio::test]
async fn an_undo_that_fails_does_not_stop_the_others_and_removal_can_be_retried() {
    let rig = Rig::new().await;
    let host = Arc::new(FakeHost::default());
    let containers = rig.containers(&host);
    host.fail_undo("rootfs.unmount");
    host.fail_at(3);
    containers
        .create(rig.request("app", false))
        .await
        .unwrap_err();
    assert_eq!(
        names(&host.log(), true),
        ["shim.shutdown", "rootfs.unmount", "rootfs.remove_layer"],
        "every undo runs, the failing one too"
    );
    // What could not be undone stays accounted for: the record, still Creating,
    // until RemoveContainer succeeds.
    let left = rig.store.containers().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].state, ContainerState::Creating);
    host.clear_failures();
    containers.remove(&left[0].id).await.unwrap();
    assert!(rig.store.containers().await.unwrap().is_empty());
    assert!(host.live().mounted.is_empty());

    // RemoveContainer stops at the failure, keeps the record, and succeeds once the
    // host lets it.
    let rig = Rig::new().await;
    let host = Arc::new(FakeHost::default());
    let containers = rig.containers(&host);
    let id = containers.create(rig.request("app", false)).await.unwrap();
    host.fail_undo("rootfs.unmount");
    assert!(containers.remove(&id).await.is_err());
    assert!(rig.store.container(&id).await.unwrap().is_some());
    let host = Arc::new(FakeHost::default());
    rig.containers(&host).remove(&id).await.unwrap();
    assert!(rig.store.container(&id).await.unwrap().is_none());
    assert!(rig.bundles().is_empty());
}

#[tokio::test]
async fn a_retry_of_a_failed_creation_whose_undo_failed_removes_the_rest_and_takes_the_name() {
    let rig = Rig::new().await;
    let host = Arc::new(FakeHost::default());
    let containers = rig.containers(&host);
    host.fail_undo("rootfs.unmount");
    host.fail_at(3);
    containers
        .create(rig.request("app", false))
        .await
        .unwrap_err();
    let left = rig.store.containers().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].state, ContainerState::Creating);
    // While the host still fails, the retry fails too and the record stays.
    host.fail_undo("rootfs.unmount");
    assert!(containers.create(rig.request("app", false)).await.is_err());
    assert!(rig.store.container(&left[0].id).await.unwrap().is_some());
    // The kubelet retries with the same metadata once the host lets it.
    host.clear_failures();
    let id = containers.create(rig.request("app", false)).await.unwrap();
    assert_ne!(id, left[0].id);
    assert!(rig.store.container(&left[0].id).await.unwrap().is_none());
    let live = host.live();
    let bundle = rig.store.container(&id).await.unwrap().unwrap().bundle;
    assert_eq!(
        live.mounted,
        [bundle.join("rootfs").display().to_string()].into(),
        "{live:?}"
    );
    // A created container's name is still a duplicate.
    match containers.create(rig.request("app", false)).await {
        Err(CriError::AlreadyExists(m)) => assert!(m.contains(&id), "{m}"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
}

/// Creates a container and rewrites its record's state, as a crash would leave it.
async fn leave(rig: &Rig, host: &Arc<FakeHost>, name: &str, state: ContainerState) -> String {
    let containers = rig.containers(host);
    let id = containers.create(rig.request(name, false)).await.unwrap();
    if state == ContainerState::Running {
        containers.start(&id).await.unwrap();
    }
    let mut rec = rig.store.container(&id).await.unwrap().unwrap();
    rec.state = state;
    rig.store.update_container(&rec).await.unwrap();
    id
}

#[tokio::test]
async fn recovery_undoes_half_made_containers_whether_or_not_their_shim_lives() {
    let rig = Rig::new().await;
    let host = Arc::new(FakeHost::default());
    let alive = leave(&rig, &host, "alive", ContainerState::Creating).await;
    let dead = leave(&rig, &host, "dead", ContainerState::Creating).await;
    let dead_socket = rig.store.container(&dead).await.unwrap().unwrap().socket;
    host.kill_shim(&dead_socket);
    host.clear_log();
    rig.containers(&host).recover().await.unwrap();
    let log = host.log();
    let of = |id: &str| -> Vec<String> {
        log.iter()
            .filter(|e| e.ends_with(id))
            .map(|e| e.split(' ').next().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(
        of(&alive),
        [
            "shim.kill",
            "shim.delete",
            "shim.shutdown",
            "rootfs.unmount",
            "rootfs.remove_layer"
        ]
    );
    assert_eq!(
        of(&dead),
        [
            "shim.force_delete",
            "shim.shutdown",
            "rootfs.unmount",
            "rootfs.remove_layer"
        ]
    );
    assert!(rig.store.containers().await.unwrap().is_empty());
    assert!(rig.bundles().is_empty());
}

#[tokio::test]
async fn a_container_whose_recovery_fails_is_left_for_later_and_the_others_recover() {
    let rig = Rig::new().await;
    let host = Arc::new(FakeHost::default());
    let half = [
        leave(&rig, &host, "half-a", ContainerState::Creating).await,
        leave(&rig, &host, "half-b", ContainerState::Creating).await,
    ];
    host.fail_undo("rootfs.unmount");
    host.clear_log();
    rig.containers(&host).recover().await.unwrap();
    for id in &half {
        let rec = rig
            .store
            .container(id)
            .await
            .unwrap()
            .expect("kept for a retry");
        assert_eq!(rec.state, ContainerState::Creating);
    }
    let unmounts = host
        .log()
        .iter()
        .filter(|c| c.starts_with("rootfs.unmount"))
        .count();
    assert_eq!(unmounts, 2, "every container was tried: {:?}", host.log());
    host.clear_failures();
    rig.containers(&host).recover().await.unwrap();
    for id in &half {
        assert!(rig.store.container(id).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn recovery_settles_containers_whose_shim_is_gone_and_keeps_the_rest() {
    let rig = Rig::new().await;
    let host = Arc::new(FakeHost::default());
    let running = leave(&rig, &host, "running", ContainerState::Running).await;
    let created = leave(&rig, &host, "created", ContainerState::Created).await;
    let orphan = leave(&rig, &host, "orphan", ContainerState::Created).await;
    let exited = leave(&rig, &host, "exited", ContainerState::Exited).await;
    let socket = rig.store.container(&orphan).await.unwrap().unwrap().socket;
    host.kill_shim(&socket);
    host.clear_log();
    rig.containers(&host).recover().await.unwrap();
    // Only the exited containers are torn down (runtime state, shim, mounts); their
    // layers and bundles stay for RemoveContainer.
    let log = host.log();
    let undone = |id: &str| -> Vec<String> {
        log.iter()
            .filter(|e| FakeHost::is_undo(e) && e.ends_with(id))
            .map(|e| e.split(' ').next().unwrap_or_default().to_string())
            .collect()
    };
    assert!(undone(&running).is_empty(), "{log:?}");
    assert!(undone(&created).is_empty(), "{log:?}");
    // (The fake's shim still holds it as created: it is killed first.)
    assert_eq!(
        undone(&exited),
        [
            "shim.kill",
            "shim.delete",
            "shim.shutdown",
            "rootfs.unmount"
        ],
        "{log:?}"
    );
    assert_eq!(
        undone(&orphan),
        ["shim.force_delete", "shim.shutdown", "rootfs.unmount"],
        "{log:?}"
    );
    assert!(!names(&log, true).contains(&"rootfs.remove_layer".to_string()));
    let again = log.len();
    host.clear_log();
    rig.containers(&host).recover().await.unwrap();
    assert!(
        names(&host.log(), true).is_empty(),
        "a second start finds them torn down ({again} calls the first time): {:?}",
        host.log()
    );
    let state = |id: String| {
        let store = rig.store.clone();
        async move { store.container(&id).await.unwrap().unwrap() }
    };
    assert_eq!(state(running).await.state, ContainerState::Running);
    assert_eq!(state(created).await.state, ContainerState::Created);
    assert_eq!(state(exited).await.state, ContainerState::Exited);
    let settled = state(orphan).await;
    assert_eq!(settled.state, ContainerState::Exited);
    assert_eq!(settled.reason, "ShimDied");
    assert_eq!(settled.exit_code, 255);
}

/// Runs the exit watcher until it has looked at every shim once.
async fn watch_round(containers: &Containers) {
    for _ in 0..super::exits::SHIM_PROBE_EVERY {
        containers.poll_exits().await;
    }
}

#[tokio::test]
async fn a_container_whose_shim_died_runs_on_until_stopped_through_its_cgroup() {
    let rig = Rig::new().await;
    let host = Arc::new(FakeHost::default());
    let containers = rig.containers(&host);
    let id = containers.create(rig.request("app", false)).await.unwrap();
    containers.start(&id).await.unwrap();
    let rec = rig.store.container(&id).await.unwrap().unwrap();
    // The init (4242) ignores SIGTERM, as a PID 1 without a handler does; a child
    // of it (77) does not.
    host.kill_shim_leaving(&rec.socket, &rec.bundle, &[4242, 77]);
    host.ignore_signals(4242);
    watch_round(&containers).await;
    let running = rig.store.container(&id).await.unwrap().unwrap();
    assert_eq!(
        running.state,
        ContainerState::Running,
        "processes still run"
    );
    assert!(running.message.contains("shim died"), "{running:?}");
    host.clear_log();
    containers.stop(&id, 1).await.unwrap();
    let log = host.log();
    assert_eq!(
        log[0], "proc.signal 4242 10",
        "the image's stop signal to the init: {log:?}"
    );
    assert!(log.contains(&"proc.signal 4242 9".to_string()), "{log:?}");
    let stopped = rig.store.container(&id).await.unwrap().unwrap();
    assert_eq!(stopped.state, ContainerState::Exited);
    assert_eq!(stopped.exit_code, 137);
    assert!(
        stopped.message.contains("through its cgroup"),
        "{stopped:?}"
    );
    containers.remove(&id).await.unwrap();
    assert!(rig.bundles().is_empty());
}

#[tokio::test]
async fn a_container_whose_shim_died_with_it_is_reported_exited() {
    let rig = Rig::new().await;
    let host = Arc::new(FakeHost::default());
    let containers = rig.containers(&host);
    let id = containers.create(rig.request("app", false)).await.unwrap();
    containers.start(&id).await.unwrap();
    let rec = rig.store.container(&id).await.unwrap().unwrap();
    host.kill_shim_leaving(&rec.socket, &rec.bundle, &[4242]);
    watch_round(&containers).await;
    assert_eq!(
        rig.store.container(&id).await.unwrap().unwrap().state,
        ContainerState::Running
    );
    // The processes end by themselves: the next round reports the exit.
    host.kill_shim_leaving(&rec.socket, &rec.bundle, &[]);
    containers.poll_exits().await;
    let exited = rig.store.container(&id).await.unwrap().unwrap();
    assert_eq!(exited.state, ContainerState::Exited);
    assert_eq!(
        (exited.exit_code, exited.reason.as_str()),
        (255, "ShimDied")
    );
    // A stop now is a no-op that succeeds.
    containers.stop(&id, 10).await.unwrap();
}

/// Waits until the runtime runs no more tasks than `before` (aborted timers leave
/// once the runtime has run their cancellation).
async fn tasks_back_to(before: usize) {
    let metrics = tokio::runtime::Handle::current().metrics();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while metrics.num_alive_tasks() > before {
        assert!(
            std::time::Instant::now() < deadline,
            "{} tasks alive, {before} before",
            metrics.num_alive_tasks()
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn containers_made_and_removed_leave_no_lock_creation_timer_or_watch() {
    let rig = Rig::new().await;
    let host = Arc::new(FakeHost::default());
    let containers = rig.containers(&host);
    let before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    for i in 0..40 {
        let id = containers
            .create(rig.request(&format!("c{i}"), false))
            .await
            .unwrap();
        containers.start(&id).await.unwrap();
        assert_eq!(
            containers.tracked(),
            (0, 0, 1),
            "the running one is watched"
        );
        if i % 2 == 0 {
            containers.stop(&id, 0).await.unwrap();
        } else {
            // It exits by itself (shim and processes gone): the exit watcher records it.
            let rec = rig.store.container(&id).await.unwrap().unwrap();
            host.kill_shim_leaving(&rec.socket, &rec.bundle, &[]);
            watch_round(&containers).await;
            let exited = rig.store.container(&id).await.unwrap().unwrap();
            assert_eq!(exited.state, ContainerState::Exited);
        }
        containers.remove(&id).await.unwrap();
    }
    // Creations that fail, at every step.
    for (n, _) in STEPS.iter().enumerate() {
        host.fail_at(n);
        containers
            .create(rig.request(&format!("f{n}"), false))
            .await
            .unwrap_err();
    }
    assert!(rig.store.containers().await.unwrap().is_empty());
    assert_eq!(
        containers.tracked(),
        (0, 0, 0),
        "(locks, creations, watched)"
    );
    tasks_back_to(before).await;
}

#[test]
fn stop_signals() {
    assert_eq!(signal_number(""), Some(15));
    assert_eq!(signal_number("SIGUSR1"), Some(10));
    assert_eq!(signal_number("usr1"), Some(10));
    assert_eq!(signal_number("9"), Some(9));
    assert_eq!(signal_number("SIGRTMIN+3"), Some(37));
    assert_eq!(signal_number("SIGBOGUS"), None);
    assert_eq!(signal_number("SIGRTMAX-2"), Some(62));
    assert_eq!(signal_number("SIGRTMIN+31"), None);
    assert_eq!(signal_number("SIGALRM"), Some(14));

    // Every CRI Signal has a number, and maps back to itself or its first alias.
    use crius_cri_api::v1::Signal;
    assert_eq!(cri_signal_number(Signal::RuntimeDefault as i32), None);
    assert_eq!(cri_signal_number(999), None);
    assert_eq!(cri_signal_number(Signal::Sigusr1 as i32), Some(10));
    assert_eq!(cri_signal_number(Signal::Sigrtminplus1 as i32), Some(35));
    assert_eq!(cri_signal_number(Signal::Sigrtmaxminus1 as i32), Some(63));
    assert_eq!(cri_signal_number(Signal::Sigrtmax as i32), Some(64));
    for v in 1..=65 {
        let n = cri_signal_number(v).unwrap_or_else(|| panic!("signal value {v}"));
        assert_eq!(cri_signal_number(cri_signal(n) as i32), Some(n));
    }
    assert_eq!(cri_signal(6), Signal::Sigabrt);
    assert_eq!(cri_signal(17), Signal::Sigchld);
    assert_eq!(cri_signal(200), Signal::RuntimeDefault);

    // The config's stop signal wins over the image's; SIGTERM without either.
    let mut rec = crius_store::ContainerRecord {
        id: "c".into(),
        pod_id: "p".into(),
        name: "n".into(),
        state: crius_store::ContainerState::Running,
        created_at: 1,
        started_at: 0,
        finished_at: 0,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
        config: Default::default(),
        image: "busybox".into(),
        image_ref: "sha256:1".into(),
        log_path: None,
        bundle: "/b".into(),
        socket: "/s".into(),
        runtime: "runc".into(),
        pid: 0,
        stop_signal: String::new(),
        uid: 0,
        gid: 0,
        supplemental_groups: vec![],
    };
    assert_eq!(stop_signal(&rec), 15);
    rec.stop_signal = "SIGUSR1".into();
    assert_eq!(stop_signal(&rec), 10);
    rec.config.stop_signal = Signal::Sigquit as i32;
    assert_eq!(stop_signal(&rec), 3);
}

#[test]
fn a_namespace_init_without_a_handler_is_told_from_its_proc_status() {
    use super::lifecycle::{catches, is_namespace_init};
    // busybox sh before `trap ... TERM` (SIGCHLD and SIGINT caught) and after.
    let before =
        "Name:\tsh\nNSpid:\t4242\t1\nSigIgn:\t0000000000000004\nSigCgt:\t0000000000010002\n";
    let after =
        "Name:\tsh\nNSpid:\t4242\t1\nSigIgn:\t0000000000000004\nSigCgt:\t0000000000014002\n";
    assert!(is_namespace_init(before));
    assert!(!catches(before, 15), "SIGTERM caught before the trap");
    assert!(catches(before, 2) && catches(before, 17));
    assert!(catches(after, 15), "SIGTERM not caught after the trap");
    // A process of a shared or the host PID namespace is not an init.
    assert!(!is_namespace_init("NSpid:\t4242\t7\n"));
    assert!(!is_namespace_init("NSpid:\t4242\n"));
    assert!(is_namespace_init("NSpid:\t1\n"));
    // Unreadable or odd text: no handler, no init.
    assert!(!catches("", 15) && !is_namespace_init(""));
    assert!(!catches("SigCgt:\tzz\n", 15));
    assert!(!catches(after, 0) && !catches(after, 65));
    assert!(catches("SigCgt:\t8000000000000000\n", 64));
}

/// The events a subscription holds now, as (container id, type, that container's
/// state in the event's statuses).
async fn drain(
    sub: &mut crate::events::Subscription<cri::ContainerEventResponse>,
) -> Vec<(
    String,
    cri::ContainerEventType,
    Option<cri::ContainerState>,
    i64,
)> {
    let mut out = Vec::new();
    while let Ok(Some(ev)) =
        tokio::time::timeout(std::time::Duration::from_millis(50), sub.next()).await
    {
        let ev = ev.unwrap();
        assert_eq!(
            ev.pod_sandbox_status.as_ref().map(|p| p.id.as_str()),
            Some(POD_ID),
            "every event carries its pod's status"
        );
        let own = ev
            .containers_statuses
            .iter()
            .find(|s| s.id == ev.container_id)
            .map(|s| s.state());
        out.push((
            ev.container_id.clone(),
            ev.container_event_type(),
            own,
            ev.created_at,
        ));
    }
    out
}

#[tokio::test]
async fn each_change_is_one_event_carrying_the_pod_and_its_containers() {
    use cri::ContainerEventType as E;
    use cri::ContainerState as S;
    let rig = Rig::new().await;
    let host = Arc::new(FakeHost::default());
    let containers = rig.containers(&host);
    let mut sub = containers.sandboxes.events().subscribe();
    // A failed creation is never reported.
    host.fail_at(0);
    containers
        .create(rig.request("app", false))
        .await
        .unwrap_err();
    assert!(drain(&mut sub).await.is_empty());

    let id = containers.create(rig.request("app", false)).await.unwrap();
    containers.start(&id).await.unwrap();
    containers.stop(&id, 0).await.unwrap();
    containers.stop(&id, 0).await.unwrap();
    containers.remove(&id).await.unwrap();
    containers.remove(&id).await.unwrap();
    let got = drain(&mut sub).await;
    let kinds: Vec<_> = got.iter().map(|e| (e.0.as_str(), e.1, e.2)).collect();
    assert_eq!(
        kinds,
        [
            (
                id.as_str(),
                E::ContainerCreatedEvent,
                Some(S::ContainerCreated)
            ),
            (
                id.as_str(),
                E::ContainerStartedEvent,
                Some(S::ContainerRunning)
            ),
            (
                id.as_str(),
                E::ContainerStoppedEvent,
                Some(S::ContainerExited)
            ),
            (id.as_str(), E::ContainerDeletedEvent, None),
        ],
        "the second stop and remove change nothing and report nothing"
    );
    assert!(
        got.windows(2).all(|w| w[0].3 < w[1].3),
        "timestamps rise: {got:?}"
    );

    // A created container that is stopped, and one whose shim dies with it.
    let never = containers
        .create(rig.request("never", false))
        .await
        .unwrap();
    containers.stop(&never, 0).await.unwrap();
    let died = containers.create(rig.request("died", false)).await.unwrap();
    containers.start(&died).await.unwrap();
    let rec = rig.store.container(&died).await.unwrap().unwrap();
    host.kill_shim_leaving(&rec.socket, &rec.bundle, &[]);
    watch_round(&containers).await;
    let got = drain(&mut sub).await;
    let kinds: Vec<_> = got.iter().map(|e| (e.0.as_str(), e.1)).collect();
    assert_eq!(
        kinds,
        [
            (never.as_str(), E::ContainerCreatedEvent),
            (never.as_str(), E::ContainerStoppedEvent),
            (died.as_str(), E::ContainerCreatedEvent),
            (died.as_str(), E::ContainerStartedEvent),
            (died.as_str(), E::ContainerStoppedEvent),
        ]
    );

    // PodSandboxStatus: a timestamp from the same clock, above every event's, and
    // the statuses of the pod's containers with it.
    let status = containers.sandboxes.status(POD_ID, false).await.unwrap();
    assert!(status.timestamp > got.last().unwrap().3);
    let mut ids: Vec<&str> = status
        .containers_statuses
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    ids.sort_unstable();
    let mut want = vec![never.as_str(), died.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);
    assert!(
        status
            .containers_statuses
            .iter()
            .all(|s| s.state() == S::ContainerExited)
    );
}

/// NRI plugins as the managers see them: records the events, refuses CreateContainer
/// while `refuse` is set, else adds an environment variable.
#[derive(Default)]
struct FakeNri {
    refuse: std::sync::atomic::AtomicBool,
    seen: std::sync::Mutex<Vec<String>>,
    /// While set, a StopContainer is answered only once `release` is notified, and
    /// recorded as "STOP_CONTAINER answered" then.
    hold_stops: std::sync::atomic::AtomicBool,
    release: tokio::sync::Notify,
}

impl crate::nri::Nri for FakeNri {
    fn active(&self) -> bool {
        true
    }

    fn pod_event<'a>(
        &'a self,
        event: crate::nri::api::Event,
        _: &'a PodRecord,
    ) -> futures_util::future::BoxFuture<'a, crate::error::CriResult<()>> {
        self.seen
            .lock()
            .unwrap()
            .push(event.as_str_name().to_string());
        Box::pin(async { Ok(()) })
    }

    fn container_event<'a>(
        &'a self,
        event: crate::nri::api::Event,
        _: &'a PodRecord,
        _: &'a crius_store::ContainerRecord,
    ) -> futures_util::future::BoxFuture<'a, crate::error::CriResult<()>> {
        self.seen
            .lock()
            .unwrap()
            .push(event.as_str_name().to_string());
        let hold = event == crate::nri::api::Event::StopContainer
            && self.hold_stops.load(std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            if hold {
                self.release.notified().await;
                self.seen
                    .lock()
                    .unwrap()
                    .push("STOP_CONTAINER answered".into());
            }
            Ok(())
        })
    }

    fn create_container<'a>(
        &'a self,
        _: &'a PodRecord,
        _: &'a crius_store::ContainerRecord,
        spec: &'a serde_json::Value,
    ) -> futures_util::future::BoxFuture<'a, crate::error::CriResult<crius_spec::adjust::Adjustment>>
    {
        self.seen.lock().unwrap().push("CREATE_CONTAINER".into());
        assert!(
            spec["process"]["args"].is_array(),
            "the generated spec: {spec}"
        );
        let refuse = self.refuse.load(std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            if refuse {
                return Err(crate::nri::NriError::Refused {
                    plugin: "10-fake".into(),
                    event: "CreateContainer",
                    message: "no".into(),
                }
                .into());
            }
            Ok(crius_spec::adjust::Adjustment {
                env: vec![("FROM_NRI".into(), Some("yes".into()))],
                ..Default::default()
            })
        })
    }

    fn update_container<'a>(
        &'a self,
        _: &'a PodRecord,
        _: &'a crius_store::ContainerRecord,
        requested: &'a cri::LinuxContainerResources,
    ) -> futures_util::future::BoxFuture<'a, crate::error::CriResult<cri::LinuxContainerResources>>
    {
        Box::pin(async move { Ok(requested.clone()) })
    }

    fn info(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

#[tokio::test]
async fn an_nri_refusal_undoes_the_creation_and_an_adjustment_reaches_the_spec() {
    let rig = Rig::new().await;
    let host = Arc::new(FakeHost::default());
    let nri = Arc::new(FakeNri::default());
    nri.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
    let containers = rig.containers_with_nri(&host, nri.clone());
    let err = containers
        .create(rig.request("app", false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.to_string()
            .contains("\"10-fake\" refused CreateContainer"),
        "{err}"
    );
    // NRI is asked once the rootfs is mounted, before the shim: those two are undone.
    let log = host.log();
    assert_eq!(
        names(&log, false),
        ["rootfs.create_layer", "rootfs.mount"],
        "{log:?}"
    );
    assert_eq!(
        names(&log, true),
        ["rootfs.unmount", "rootfs.remove_layer"],
        "{log:?}"
    );
    assert!(rig.store.containers().await.unwrap().is_empty());
    assert!(rig.bundles().is_empty(), "{:?}", rig.bundles());

    nri.refuse.store(false, std::sync::atomic::Ordering::SeqCst);
    let id = containers.create(rig.request("app", false)).await.unwrap();
    let spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            rig.config
                .run_dir
                .join("containers")
                .join(&id)
                .join("config.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let env = spec["process"]["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e == "FROM_NRI=yes"), "{env:?}");
    assert_eq!(
        *nri.seen.lock().unwrap(),
        [
            "CREATE_CONTAINER",
            "CREATE_CONTAINER",
            "POST_CREATE_CONTAINER"
        ]
    );
}

#[tokio::test]
async fn a_container_being_created_is_neither_listed_nor_found() {
    let rig = Rig::new().await;
    let host = Arc::new(FakeHost::default());
    let id = leave(&rig, &host, "making", ContainerState::Creating).await;
    let containers = rig.containers(&host);
    assert!(containers.list(None).await.unwrap().is_empty());
    let err = containers.status(&id, false).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
}

/// A container created and started under the fake NRI.
async fn running_with_nri() -> (
    Rig,
    Arc<FakeHost>,
    Arc<FakeNri>,
    Arc<Containers>,
    crius_store::ContainerRecord,
) {
    let rig = Rig::new().await;
    let host = Arc::new(FakeHost::default());
    let nri = Arc::new(FakeNri::default());
    let containers = rig.containers_with_nri(&host, nri.clone());
    let id = containers.create(rig.request("app", false)).await.unwrap();
    containers.start(&id).await.unwrap();
    let rec = rig.store.container(&id).await.unwrap().unwrap();
    (rig, host, nri, containers, rec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_the_exit_watcher_overtakes_tells_nri_plugins_once() {
    let (rig, host, nri, containers, rec) = running_with_nri().await;
    let id = rec.id.clone();
    // The stop signal lands, the shim records the exit, and the exit watcher records
    // it before the stop gets the container's lock back.
    let (killed_tx, killed_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let killed_tx = std::sync::Mutex::new(killed_tx);
    host.after_kill(move || {
        let _ = killed_tx.lock().unwrap().send(());
        let _ = go_rx.lock().unwrap().recv();
    });
    let stop = tokio::spawn({
        let containers = containers.clone();
        let id = id.clone();
        async move { containers.stop(&id, 10).await }
    });
    tokio::task::spawn_blocking(move || killed_rx.recv())
        .await
        .unwrap()
        .unwrap();
    write_exit(&rec, 143);
    containers.poll_exits().await;
    assert_eq!(
        rig.store.container(&id).await.unwrap().unwrap().state,
        ContainerState::Exited
    );
    go_tx.send(()).unwrap();
    stop.await.unwrap().unwrap();
    let seen = nri.seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().filter(|e| *e == "STOP_CONTAINER").count(),
        1,
        "{seen:?}"
    );
    let stopped = rig.store.container(&id).await.unwrap().unwrap();
    assert_eq!((stopped.exit_code, stopped.reason.as_str()), (143, "Error"));
    containers.remove(&id).await.unwrap();
}

/// Records the exit of `rec` as its shim would.
fn write_exit(rec: &crius_store::ContainerRecord, exit_code: u32) {
    let exit = crius_shim::ExitRecord {
        pid: 4242,
        exit_code,
        exited_at: "2026-12-03T00:00:00.000000000Z".into(),
        exited_at_unix_nanos: 1,
        oom_killed: false,
    };
    std::fs::write(
        rec.bundle.join("exit.json"),
        serde_json::to_vec(&exit).unwrap(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_hear_of_an_exit_before_the_removal_that_follows_it() {
    let (rig, _host, nri, containers, rec) = running_with_nri().await;
    let id = rec.id.clone();
    write_exit(&rec, 0);
    nri.hold_stops
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let watcher = tokio::spawn({
        let containers = containers.clone();
        async move { containers.poll_exits().await }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !nri
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|e| e == "STOP_CONTAINER")
    {
        assert!(std::time::Instant::now() < deadline, "no StopContainer");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // The kubelet removes the exited container while plugins are still being told.
    let remove = tokio::spawn({
        let containers = containers.clone();
        let id = id.clone();
        async move { containers.remove(&id).await }
    });
    while rig.store.container(&id).await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "not removed");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    tokio::task::yield_now().await;
    nri.release.notify_one();
    watcher.await.unwrap();
    remove.await.unwrap().unwrap();
    let seen = nri.seen.lock().unwrap().clone();
    let tail: Vec<&str> = seen
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(
        tail,
        [
            "STOP_CONTAINER",
            "STOP_CONTAINER answered",
            "REMOVE_CONTAINER"
        ],
        "{seen:?}"
    );
}

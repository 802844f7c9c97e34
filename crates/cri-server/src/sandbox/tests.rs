//! RunPodSandbox's undo and start-up recovery, over the recording fake host: these
//! run as any user.

use std::path::Path;
use std::sync::Arc;

use crius_cri_api::v1 as cri;
use crius_store::{PodState, Store};

use super::Sandboxes;
use crate::config::Config;
use crate::error::CriError;
use crate::host::fake::FakeHost;
use crate::validate::{self, ValidPod};

struct Rig {
    _root: tempfile::TempDir,
    config: Arc<Config>,
    store: Store,
}

impl Rig {
    fn new() -> Rig {
        let root = tempfile::tempdir().unwrap();
        let config = Config {
            run_dir: root.path().join("run"),
            state_dir: root.path().join("state"),
            ..Config::default()
        };
        std::fs::create_dir_all(config.run_dir.join("pods")).unwrap();
        std::fs::create_dir_all(&config.state_dir).unwrap();
        let store = Store::open(&config.state_dir.join("store.redb")).unwrap();
        Rig {
            _root: root,
            config: Arc::new(config),
            store,
        }
    }

    /// A manager over `host`, sharing this rig's store and directories.
    fn sandboxes(&self, host: &Arc<FakeHost>) -> Arc<Sandboxes> {
        Arc::new(Sandboxes::new(
            self.config.clone(),
            self.store.clone(),
            host.clone(),
            host.clone(),
        ))
    }

    fn pod_dirs(&self) -> Vec<String> {
        std::fs::read_dir(self.config.run_dir.join("pods"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

/// A pod with its own network, IPC and UTS namespaces and, with `shared_pid`, a pod
/// PID namespace.
fn pod(name: &str, shared_pid: bool) -> ValidPod {
    let config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        hostname: name.into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    pid: if shared_pid {
                        cri::NamespaceMode::Pod as i32
                    } else {
                        cri::NamespaceMode::Container as i32
                    },
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    validate::pod_sandbox(Some(config), "", &Config::default()).unwrap()
}

/// The steps RunPodSandbox makes through the host, in order, and their undo.
const STEPS: &[(&str, &str)] = &[
    ("ns.pin", "ns.unpin"),
    ("ns.start_infra", "ns.stop_infra"),
    ("net.setup", "net.teardown"),
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
        let rig = Rig::new();
        let host = Arc::new(FakeHost::default());
        host.fail_at(n);
        let err = rig
            .sandboxes(&host)
            .run(pod("web", true))
            .await
            .unwrap_err();
        let log = host.log();
        let made: Vec<&str> = STEPS[..=n].iter().map(|s| s.0).collect();
        assert_eq!(names(&log, false), made, "failing step {n}: {log:?}");
        let undone: Vec<&str> = STEPS[..n].iter().rev().map(|s| s.1).collect();
        assert_eq!(names(&log, true), undone, "failing step {n}: {log:?}");
        assert!(err.to_string().contains("injected"), "{err}");
        assert!(rig.store.pods().await.unwrap().is_empty(), "step {n}");
        assert!(rig.pod_dirs().is_empty(), "step {n}: {:?}", rig.pod_dirs());
        // The name is free again: a retry can succeed.
        rig.sandboxes(&host).run(pod("web", true)).await.unwrap();
    }
}

/// [`pod`] with its own user namespace, root mapped to this process's ids (so the
/// pod files can be handed to it without privilege).
fn userns_pod(name: &str) -> ValidPod {
    let mut p = pod(name, true);
    let (uid, gid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let map = |host_id| cri::IdMapping {
        container_id: 0,
        host_id,
        length: 65536,
    };
    if let Some(ns) = p
        .config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.userns_options = Some(cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: vec![map(uid)],
            gids: vec![map(gid)],
        });
    }
    validate::pod_sandbox(Some(p.config), "", &Config::default()).unwrap()
}

#[tokio::test]
async fn a_pod_with_its_own_user_namespace_pins_it_and_undoes_like_any_other() {
    for n in 0..STEPS.len() {
        let rig = Rig::new();
        let host = Arc::new(FakeHost::default());
        host.fail_at(n);
        rig.sandboxes(&host)
            .run(userns_pod("web"))
            .await
            .unwrap_err();
        let log = host.log();
        let undone: Vec<&str> = STEPS[..n].iter().rev().map(|s| s.1).collect();
        assert_eq!(names(&log, true), undone, "failing step {n}: {log:?}");
        assert_eq!(host.live(), Default::default(), "step {n}");
        assert!(rig.pod_dirs().is_empty(), "step {n}: {:?}", rig.pod_dirs());
    }
    let rig = Rig::new();
    let host = Arc::new(FakeHost::default());
    let sandboxes = rig.sandboxes(&host);
    let id = sandboxes.run(userns_pod("web")).await.unwrap();
    let rec = rig.store.pod(&id).await.unwrap().unwrap();
    let user = rec
        .namespaces
        .user
        .clone()
        .expect("the user namespace is recorded");
    assert_eq!(user, rec.dir.join("ns/user"));
    assert!(host.live().pinned.contains(&user.display().to_string()));
    // The pod's files are its root's.
    use std::os::unix::fs::MetadataExt;
    let hosts = std::fs::metadata(rec.dir.join("hosts")).unwrap();
    assert_eq!(hosts.uid(), nix::unistd::getuid().as_raw());
    sandboxes.stop(&id).await.unwrap();
    sandboxes.remove(&id).await.unwrap();
    assert_eq!(host.live(), Default::default());

    // A node that cannot: refused before anything is made.
    let host = Arc::new(FakeHost::default());
    host.without_user_namespaces();
    let err = rig
        .sandboxes(&host)
        .run(userns_pod("web2"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("userns_options"), "{err}");
    assert!(host.log().is_empty(), "{:?}", host.log());
}

#[tokio::test]
async fn a_pod_made_and_removed_leaves_nothing() {
    let rig = Rig::new();
    let host = Arc::new(FakeHost::default());
    let sandboxes = rig.sandboxes(&host);
    let id = sandboxes.run(pod("web", true)).await.unwrap();
    let rec = rig.store.pod(&id).await.unwrap().unwrap();
    assert_eq!(rec.state, PodState::Ready);
    assert_eq!(rec.ips, vec!["10.0.0.2".to_string()]);
    let hosts = std::fs::read_to_string(rec.dir.join("hosts")).unwrap();
    assert!(hosts.contains("10.0.0.2\tweb"), "{hosts}");
    host.clear_log();
    sandboxes.stop(&id).await.unwrap();
    assert_eq!(
        names(&host.log(), true),
        ["net.teardown", "ns.stop_infra", "ns.unpin"]
    );
    assert!(rec.dir.join("hosts").exists(), "stop keeps the pod's files");
    sandboxes.remove(&id).await.unwrap();
    sandboxes.remove(&id).await.unwrap();
    assert!(rig.store.pods().await.unwrap().is_empty());
    assert!(rig.pod_dirs().is_empty());
}

#[tokio::test]
async fn pods_made_and_removed_leave_no_lock_creation_or_timer() {
    let rig = Rig::new();
    let host = Arc::new(FakeHost::default());
    let sandboxes = rig.sandboxes(&host);
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    for i in 0..40 {
        let id = sandboxes
            .run(pod(&format!("p{i}"), i % 2 == 0))
            .await
            .unwrap();
        sandboxes.stop(&id).await.unwrap();
        sandboxes.remove(&id).await.unwrap();
    }
    for (n, _) in STEPS.iter().enumerate() {
        host.fail_at(n);
        sandboxes
            .run(pod(&format!("f{n}"), true))
            .await
            .unwrap_err();
    }
    assert!(rig.store.pods().await.unwrap().is_empty());
    assert_eq!(sandboxes.tracked(), (0, 0), "(locks, creations)");
    // No timer of a claimed creation outlives it.
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
async fn a_duplicate_name_is_refused_naming_the_holder() {
    let rig = Rig::new();
    let host = Arc::new(FakeHost::default());
    let sandboxes = rig.sandboxes(&host);
    let id = sandboxes.run(pod("web", false)).await.unwrap();
    match sandboxes.run(pod("web", false)).await {
        Err(CriError::AlreadyExists(m)) => assert!(m.contains(&id), "{m}"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
}

/// Writes a record as a crash would have left it.
async fn leave(
    rig: &Rig,
    host: &Arc<FakeHost>,
    name: &str,
    state: PodState,
    infra: bool,
) -> String {
    let id = rig.sandboxes(host).run(pod(name, infra)).await.unwrap();
    let mut rec = rig.store.pod(&id).await.unwrap().unwrap();
    rec.state = state;
    rig.store.update_pod(&rec).await.unwrap();
    id
}

#[tokio::test]
async fn recovery_undoes_half_made_pods() {
    let rig = Rig::new();
    let before = Arc::new(FakeHost::default());
    let half = leave(&rig, &before, "half", PodState::Creating, true).await;
    // After a restart: a new daemon, whose host knows nothing of the old one.
    let host = Arc::new(FakeHost::default());
    rig.sandboxes(&host).recover().await.unwrap();
    assert_eq!(
        host.log(),
        [
            format!("net.teardown {half}"),
            format!("ns.stop_infra {half}"),
            format!("ns.unpin {half}"),
        ]
    );
    assert!(rig.store.pod(&half).await.unwrap().is_none());
    assert!(rig.pod_dirs().is_empty());
}

#[tokio::test]
async fn a_pod_whose_recovery_fails_is_left_for_later_and_the_others_recover() {
    let rig = Rig::new();
    let before = Arc::new(FakeHost::default());
    let half = [
        leave(&rig, &before, "half-a", PodState::Creating, false).await,
        leave(&rig, &before, "half-b", PodState::Creating, false).await,
    ];
    let ready = leave(&rig, &before, "ready", PodState::Ready, false).await;
    // After a reboot, namespaces will not unpin: criusd still starts.
    let host = Arc::new(FakeHost::default());
    host.fail_undo("ns.unpin");
    rig.sandboxes(&host).recover().await.unwrap();
    for id in &half {
        let rec = rig.store.pod(id).await.unwrap().expect("kept for a retry");
        assert_eq!(rec.state, PodState::Creating);
    }
    // Its namespaces are gone: NotReady, whatever its stop did.
    assert_eq!(
        rig.store.pod(&ready).await.unwrap().unwrap().state,
        PodState::NotReady
    );
    let unpins = host
        .log()
        .iter()
        .filter(|c| c.starts_with("ns.unpin"))
        .count();
    assert_eq!(unpins, 3, "every pod was tried: {:?}", host.log());
    // The next start finishes them.
    host.clear_failures();
    rig.sandboxes(&host).recover().await.unwrap();
    for id in &half {
        assert!(rig.store.pod(id).await.unwrap().is_none());
    }
    assert_eq!(
        rig.pod_dirs().len(),
        1,
        "the NotReady pod keeps its directory"
    );
}

#[tokio::test]
async fn recovery_keeps_live_pods_and_stops_those_whose_namespaces_are_gone() {
    let rig = Rig::new();
    let host = Arc::new(FakeHost::default());
    let live = leave(&rig, &host, "live", PodState::Ready, false).await;
    let stopped = leave(&rig, &host, "stopped", PodState::NotReady, false).await;
    // Same host: the namespaces are still pinned.
    host.clear_log();
    rig.sandboxes(&host).recover().await.unwrap();
    assert!(host.log().is_empty(), "{:?}", host.log());
    assert_eq!(
        rig.store.pod(&live).await.unwrap().unwrap().state,
        PodState::Ready
    );
    // A reboot: nothing is pinned any more.
    let rebooted = Arc::new(FakeHost::default());
    rig.sandboxes(&rebooted).recover().await.unwrap();
    assert_eq!(
        rebooted.log(),
        [format!("net.teardown {live}"), format!("ns.unpin {live}")],
        "the NotReady pod {stopped} is left alone"
    );
    assert_eq!(
        rig.store.pod(&live).await.unwrap().unwrap().state,
        PodState::NotReady
    );
    assert_eq!(rig.pod_dirs().len(), 2, "stopped pods keep their directory");
}

#[tokio::test]
async fn recovery_rewrites_missing_pod_files_and_removes_orphan_directories() {
    let rig = Rig::new();
    let host = Arc::new(FakeHost::default());
    let id = leave(&rig, &host, "web", PodState::Ready, false).await;
    let dir = rig.config.run_dir.join("pods").join(&id);
    std::fs::remove_file(dir.join("resolv.conf")).unwrap();
    let orphan = rig.config.run_dir.join("pods").join("orphan");
    std::fs::create_dir_all(orphan.join("ns")).unwrap();
    host.clear_log();
    rig.sandboxes(&host).recover().await.unwrap();
    assert!(dir.join("resolv.conf").is_file());
    assert!(!Path::new(&orphan).exists());
    assert_eq!(host.log(), ["ns.unpin orphan"]);
}

#[tokio::test]
async fn a_failed_creation_whose_unpin_fails_keeps_its_record_until_the_rest_is_removed() {
    for finish in ["retry", "remove", "recovery"] {
        let rig = Rig::new();
        let host = Arc::new(FakeHost::default());
        let sandboxes = rig.sandboxes(&host);
        // The network setup fails, and so does the undo of the pinned namespaces.
        host.fail_at(1);
        host.fail_undo("ns.unpin");
        let err = sandboxes.run(pod("web", false)).await.unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        let pods = rig.store.pods().await.unwrap();
        assert_eq!(pods.len(), 1, "{finish}: the record stays");
        let left = &pods[0];
        assert_eq!(left.state, PodState::Creating);
        let pinned = host.live().pinned;
        assert_eq!(pinned.len(), 3, "{finish}: {pinned:?}");
        assert!(
            sandboxes.list(None).await.unwrap().is_empty(),
            "{finish}: a half-made pod is not listed"
        );
        host.clear_failures();
        match finish {
            "retry" => {
                // The kubelet retries with the same metadata: the name is taken over.
                let id = sandboxes.run(pod("web", false)).await.unwrap();
                assert_ne!(id, left.id);
                assert!(rig.store.pod(&left.id).await.unwrap().is_none());
                let new_dir = rig.store.pod(&id).await.unwrap().unwrap().dir;
                let live = host.live().pinned;
                assert!(
                    live.iter()
                        .all(|p| p.starts_with(&new_dir.display().to_string())),
                    "{live:?}"
                );
                assert_eq!(rig.pod_dirs(), std::slice::from_ref(&id));
                sandboxes.remove(&id).await.unwrap();
            }
            "remove" => sandboxes.remove(&left.id).await.unwrap(),
            _ => rig.sandboxes(&host).recover().await.unwrap(),
        }
        assert!(rig.store.pods().await.unwrap().is_empty(), "{finish}");
        assert!(host.live().is_empty(), "{finish}: {:?}", host.live());
        assert!(rig.pod_dirs().is_empty(), "{finish}: {:?}", rig.pod_dirs());
    }
}

#[tokio::test]
async fn a_retry_does_not_take_the_name_of_a_live_pod() {
    let rig = Rig::new();
    let host = Arc::new(FakeHost::default());
    let sandboxes = rig.sandboxes(&host);
    let id = sandboxes.run(pod("web", false)).await.unwrap();
    sandboxes.stop(&id).await.unwrap();
    match sandboxes.run(pod("web", false)).await {
        Err(CriError::AlreadyExists(m)) => assert!(m.contains(&id), "{m}"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        rig.store.pod(&id).await.unwrap().unwrap().state,
        PodState::NotReady
    );
}

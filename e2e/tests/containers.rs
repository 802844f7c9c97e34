//! Containers through criusd and crius-shim, on real runc and overlay rootfs from
//! images pulled from a test registry (issue 4, first part).
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crius_e2e::images::*;
use crius_e2e::registry::*;
use crius_e2e::v1 as cri;
use crius_e2e::*;
use tonic::Code;

struct Env {
    d: Daemon,
    reg: Option<TestRegistry>,
    image: String,
    pod: String,
    logs: std::path::PathBuf,
    /// Every container made, so `done` can check their cgroups are gone.
    made: Vec<String>,
}

/// crun 1.8.1 (Debian 12) refuses this host's hybrid cgroup layout (hugetlb stays on
/// the cgroup2 mount). The test handler runs the real crun in a private mount
/// namespace without /sys/fs/cgroup/unified, so it sees a pure v1 host.
const CRUN_WRAPPER: &str = "#!/bin/sh\nexec unshare --mount --propagation private /bin/sh -c 'umount /sys/fs/cgroup/unified 2>/dev/null; exec /usr/bin/crun \"$@\"' crun \"$@\"\n";

/// An environment whose pod uses `handler` ("" for the default, runc).
async fn env_with(tag: &str, handler: &str) -> Env {
    env_opts(tag, handler, "").await
}

async fn env_opts(tag: &str, handler: &str, more: &str) -> Env {
    let extra = more.to_string()
        + &if handler == "crun" {
            "[runtimes.runc]\npath = \"runc\"\n[runtimes.crun]\npath = \"{root}/fixtures/crun-v1\"\n"
            .to_string()
        } else {
            String::new()
        };
    let mut d = Daemon::start_with(
        tag,
        Options {
            extra_config: extra,
            subnet: None,
        },
    )
    .await;
    if handler == "crun" {
        assert!(
            std::path::Path::new("/usr/bin/crun").exists(),
            "install Debian's crun"
        );
        std::fs::create_dir_all(d.root.join("fixtures")).unwrap();
        let w = d.root.join("fixtures/crun-v1");
        std::fs::write(&w, CRUN_WRAPPER).unwrap();
        std::fs::set_permissions(&w, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let reg = TestRegistry::start(&d.root.join("fixtures/registry"), None)
        .await
        .unwrap();
    let pushed = push_busybox(&reg, "test/busybox", "v1", Comp::Gzip)
        .await
        .unwrap();
    let image = pushed.reference(&reg.host);
    pull_image(&mut d.img, &image, None).await.expect("pull");
    let logs = d.root.join("fixtures/logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut pc = pod_config(tag);
    pc.log_directory = logs.display().to_string();
    let pod =
        d.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pc),
            runtime_handler: handler.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    Env {
        d,
        reg: Some(reg),
        image,
        pod,
        logs,
        made: Vec::new(),
    }
}

impl Env {
    fn config(&self, name: &str, command: &[&str], args: &[&str]) -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            linux: Some(cri::LinuxContainerConfig::default()),
            ..Default::default()
        }
    }

    async fn create(&mut self, config: cri::ContainerConfig) -> Result<String, tonic::Status> {
        self.d
            .rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: self.pod.clone(),
                config: Some(config),
                sandbox_config: None,
            })
            .await
            .map(|r| r.into_inner().container_id)
            .inspect(|id| self.made.push(id.clone()))
    }

    async fn start(&mut self, id: &str) {
        self.d
            .rt
            .start_container(cri::StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .expect("StartContainer");
    }

    async fn status(&mut self, id: &str) -> cri::ContainerStatus {
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
            .unwrap()
    }

    async fn wait_exited(&mut self, id: &str) -> cri::ContainerStatus {
        let rt = self.d.rt.clone();
        let id = id.to_string();
        eventually(DEADLINE, "the container to exit", || {
            let mut rt = rt.clone();
            let id = id.clone();
            async move {
                let st = rt
                    .container_status(cri::ContainerStatusRequest {
                        container_id: id,
                        verbose: false,
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .status?;
                (st.state == cri::ContainerState::ContainerExited as i32).then_some(st)
            }
        })
        .await
    }

    fn log_of(&self, name: &str) -> String {
        std::fs::read_to_string(self.logs.join(format!("{name}.log"))).unwrap_or_default()
    }

    async fn done(mut self) {
        // Containers made through a raw client too.
        let listed = self
            .d
            .rt
            .list_containers(cri::ListContainersRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .containers;
        self.made.extend(listed.into_iter().map(|c| c.id));
        remove_pod(&mut self.d.rt, &self.pod).await.unwrap();
        remove_image_by_id(&mut self.d.img, &self.image).await;
        drop(self.reg.take());
        self.d.finish().await;
        for id in &self.made {
            for ctrl in ["memory", "cpu", "pids", "systemd"] {
                let dir =
                    std::path::PathBuf::from(format!("/sys/fs/cgroup/{ctrl}/crius/crius-{id}"));
                assert!(!dir.exists(), "cgroup left behind: {}", dir.display());
            }
        }
    }
}

/// Checks every line against `RFC3339Nano stream P|F message`.
fn parse_cri_log(text: &str) -> Vec<(String, char, String)> {
    text.lines()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let ts = parts.next().unwrap();
            assert!(
                ts.len() >= 20 && ts.ends_with('Z') && ts.contains('T'),
                "timestamp {ts:?} in {l:?}"
            );
            let stream = parts.next().unwrap().to_string();
            assert!(stream == "stdout" || stream == "stderr", "stream in {l:?}");
            let tag = parts.next().unwrap();
            assert!(tag == "P" || tag == "F", "tag in {l:?}");
            (
                stream,
                tag.chars().next().unwrap(),
                parts.next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

async fn lifecycle_logs_and_exit_codes(handler: &str) {
    let mut e = env_with(&format!("ctr-life{handler}"), handler).await;
    let id = e
        .create(e.config(
            "worker",
            &["/bin/sh", "-c"],
            &["echo out; echo err >&2; printf tail; exit 3"],
        ))
        .await
        .expect("CreateContainer");
    let st = e.status(&id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerCreated as i32);
    assert_eq!(
        st.image_ref,
        e.d.img
            .clone()
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: e.image.clone(),
                    ..Default::default()
                }),
                verbose: false
            })
            .await
            .unwrap()
            .into_inner()
            .image
            .unwrap()
            .id
    );
    // A second container with the same name in the pod is refused.
    let err = e
        .create(e.config("worker", &["/bin/true"], &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");
    assert!(err.message().contains(&id));

    e.start(&id).await;
    let st = e.wait_exited(&id).await;
    assert_eq!(st.exit_code, 3);
    assert_eq!(st.reason, "Error");
    assert!(st.started_at > 0 && st.finished_at >= st.started_at);
    assert!(st.log_path.ends_with("worker.log"));
    let lines = parse_cri_log(&e.log_of("worker"));
    assert!(
        lines.contains(&("stdout".into(), 'F', "out".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stderr".into(), 'F', "err".into())),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|(s, _, m)| s == "stdout" && m == "tail"),
        "output without a newline is logged: {lines:?}"
    );

    // A 100 KiB line is split into 16 KiB partial records; a rename plus
    // ReopenContainerLog moves new output to a new file at the same path.
    let long = e
        .create(e.config(
            "long",
            &["/bin/sh", "-c"],
            &["head -c 102400 /dev/zero | tr '\\0' x; echo; echo done; while [ ! -f /tmp/go ]; do sleep 0.05; done; echo after-reopen; sleep 1000"],
        ))
        .await
        .unwrap();
    e.start(&long).await;
    let logs = e.logs.clone();
    eventually(DEADLINE, "the long line and 'done' to be logged", || {
        let text = std::fs::read_to_string(logs.join("long.log")).unwrap_or_default();
        async move { text.contains(" F done").then_some(()) }
    })
    .await;
    let lines = parse_cri_log(&e.log_of("long"));
    let joined: String = lines
        .iter()
        .take_while(|l| l.2 != "done")
        .map(|l| l.2.clone())
        .collect();
    assert_eq!(
        joined.len(),
        102400,
        "the long line is whole across its records"
    );
    assert!(
        lines.iter().filter(|l| l.1 == 'P').count() >= 6,
        "split into partial records"
    );
    assert!(lines.iter().all(|l| l.2.len() <= 16 * 1024));
    std::fs::rename(e.logs.join("long.log"), e.logs.join("long.log.1")).unwrap();
    e.d.rt
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: long.clone(),
        })
        .await
        .expect("ReopenContainerLog");
    exec(&mut e, &long, "touch /tmp/go").await;
    eventually(DEADLINE, "output after the reopen in the new file", || {
        let text = std::fs::read_to_string(logs.join("long.log")).unwrap_or_default();
        async move { text.contains(" F after-reopen").then_some(()) }
    })
    .await;
    assert!(
        !std::fs::read_to_string(e.logs.join("long.log.1"))
            .unwrap()
            .contains("after-reopen")
    );
    std::fs::remove_file(e.logs.join("long.log.1")).unwrap();
    e.d.rt
        .remove_container(cri::RemoveContainerRequest { container_id: long })
        .await
        .unwrap();

    // Exit 0 is Completed.
    let ok = e.create(e.config("ok", &["/bin/true"], &[])).await.unwrap();
    e.start(&ok).await;
    let st = e.wait_exited(&ok).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"));

    // List filters.
    let all =
        e.d.rt
            .list_containers(cri::ListContainersRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .containers;
    assert_eq!(all.len(), 2);
    let by_pod =
        e.d.rt
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    pod_sandbox_id: e.pod.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .containers;
    assert_eq!(by_pod.len(), 2);
    for c in [&id, &ok] {
        e.d.rt
            .remove_container(cri::RemoveContainerRequest {
                container_id: c.clone(),
            })
            .await
            .expect("remove");
        e.d.rt
            .remove_container(cri::RemoveContainerRequest {
                container_id: c.clone(),
            })
            .await
            .expect("remove is idempotent");
    }
    let err =
        e.d.rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    e.done().await;
}

async fn image_config_user_env_and_workdir(handler: &str) {
    let mut e = env_with(&format!("ctr-image{handler}"), handler).await;
    // No command or args: the image's ENTRYPOINT + CMD run, as the image's USER.
    let id = e.create(e.config("plain", &[], &[])).await.unwrap();
    e.start(&id).await;
    e.wait_exited(&id).await;
    let lines = parse_cri_log(&e.log_of("plain"));
    assert_eq!(lines[0].2, "hello", "image env and cmd: {lines:?}");
    // args replace CMD and keep ENTRYPOINT; env from the request overrides the image's.
    let mut c = e.config("who", &[], &["id -u; id -g; pwd; echo $GREETING"]);
    c.envs = vec![cri::KeyValue {
        key: "GREETING".into(),
        value: "override".into(),
    }];
    let id2 = e.create(c).await.unwrap();
    e.start(&id2).await;
    e.wait_exited(&id2).await;
    let out: Vec<String> = parse_cri_log(&e.log_of("who"))
        .into_iter()
        .map(|l| l.2)
        .collect();
    assert_eq!(out, vec!["1000", "1000", "/home", "override"]);
    let user = e.status(&id2).await.user.unwrap().linux.unwrap();
    assert_eq!((user.uid, user.gid), (1000, 1000));
    assert!(
        user.supplemental_groups.contains(&50),
        "staff lists app in /etc/group: {user:?}"
    );
    // A user by name, resolved in the container's own /etc/passwd.
    let mut c3 = e.config("named", &[], &["id -u; id -g"]);
    c3.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_username: "nobody".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id3 = e.create(c3).await.unwrap();
    e.start(&id3).await;
    e.wait_exited(&id3).await;
    let out: Vec<String> = parse_cri_log(&e.log_of("named"))
        .into_iter()
        .map(|l| l.2)
        .collect();
    assert_eq!(out, vec!["65534", "65534"]);
    e.d.rt
        .remove_container(cri::RemoveContainerRequest { container_id: id3 })
        .await
        .unwrap();
    for c in [id, id2] {
        e.d.rt
            .remove_container(cri::RemoveContainerRequest { container_id: c })
            .await
            .unwrap();
    }
    e.done().await;
}

async fn exec_sync_stop_and_restart_survival(handler: &str) {
    let mut e = env_with(&format!("ctr-exec{handler}"), handler).await;
    let id = e
        .create(e.config(
            "ticker",
            &["/bin/sh", "-c"],
            &["i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"],
        ))
        .await
        .unwrap();
    e.start(&id).await;
    let r =
        e.d.rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "echo hi; echo oops >&2; exit 2".into(),
                ],
                timeout: 10,
            })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"hi\n"[..], &b"oops\n"[..], 2)
    );
    // The timeout is honoured: the process is killed.
    let started = std::time::Instant::now();
    let r =
        e.d.rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec!["/bin/sleep".into(), "30".into()],
                timeout: 1,
            })
            .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "ExecSync honours its timeout"
    );
    if let Ok(r) = r {
        assert_ne!(r.into_inner().exit_code, 0);
    }

    // criusd killed: the container keeps running and logging; found again after.
    let before = e.log_of("ticker").lines().count();
    e.d.kill();
    let logs = e.logs.clone();
    eventually(DEADLINE, "lines logged while criusd is down", || {
        let n = std::fs::read_to_string(logs.join("ticker.log"))
            .unwrap_or_default()
            .lines()
            .count();
        async move { (n >= before + 10).then_some(()) }
    })
    .await;
    e.d.spawn().await.unwrap();
    let st = e.status(&id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    let ticks: Vec<u64> = parse_cri_log(&e.log_of("ticker"))
        .into_iter()
        .filter_map(|(_, _, m)| m.strip_prefix("tick ").and_then(|n| n.parse().ok()))
        .collect();
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "no line lost across the restart"
    );

    // A container that exits while criusd is down is reported with its real exit
    // code and finish time after the restart.
    let quick = e
        .create(e.config("quick", &["/bin/sh", "-c"], &["sleep 0.5; exit 7"]))
        .await
        .unwrap();
    e.start(&quick).await;
    e.d.kill();
    let exit_file =
        e.d.run_dir()
            .join("containers")
            .join(&quick)
            .join("exit.json");
    eventually(
        DEADLINE,
        "the container to exit while criusd is down",
        || {
            let present = exit_file.exists();
            async move { present.then_some(()) }
        },
    )
    .await;
    let restarted_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    tokio::time::sleep(Duration::from_millis(50)).await;
    e.d.spawn().await.unwrap();
    let st = e.wait_exited(&quick).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (7, "Error"));
    assert!(
        st.finished_at > st.started_at && st.finished_at < restarted_at,
        "the real finish time"
    );
    e.d.rt
        .remove_container(cri::RemoveContainerRequest {
            container_id: quick,
        })
        .await
        .unwrap();

    // Stop: SIGTERM is ignored by the shell as PID 1, so SIGKILL after the timeout.
    let started = std::time::Instant::now();
    e.d.rt
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 1,
        })
        .await
        .unwrap();
    let st = e.status(&id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 137);
    assert!(started.elapsed() >= Duration::from_millis(900));
    e.d.rt
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 1,
        })
        .await
        .expect("idempotent");
    e.d.rt
        .remove_container(cri::RemoveContainerRequest { container_id: id })
        .await
        .unwrap();
    e.done().await;
}

async fn a_dead_shim_is_noticed_and_pod_removal_cleans_up(handler: &str) {
    let mut e = env_with(&format!("ctr-shim{handler}"), handler).await;
    let id = e
        .create(e.config("sleeper", &["/bin/sleep", "1000"], &[]))
        .await
        .unwrap();
    e.start(&id).await;
    let socket = e.d.run_dir().join("s");
    let shims: Vec<i32> = processes_mentioning(&format!("-id {id}"))
        .iter()
        .filter_map(|p| p.split(':').next().and_then(|n| n.parse().ok()))
        .collect();
    assert_eq!(
        shims.len(),
        1,
        "one shim for the container: {shims:?} ({})",
        socket.display()
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shims[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The container's processes outlive their shim: it is still running, and says
    // why, until it is stopped through its cgroup.
    let pid = pid_of(&mut e, &id).await;
    let rt = e.d.rt.clone();
    let orphaned = eventually(DEADLINE, "criusd to notice the dead shim", || {
        let mut rt = rt.clone();
        let id = id.clone();
        async move {
            let st = rt
                .container_status(cri::ContainerStatusRequest {
                    container_id: id,
                    verbose: false,
                })
                .await
                .ok()?
                .into_inner()
                .status?;
            st.message.contains("shim died").then_some(st)
        }
    })
    .await;
    assert_eq!(
        orphaned.state,
        cri::ContainerState::ContainerRunning as i32,
        "never exited while its process runs: {orphaned:?}"
    );
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the container's process {pid} still runs"
    );
    e.d.rt
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 1,
        })
        .await
        .unwrap();
    let st = e.status(&id).await;
    assert_eq!(
        st.state,
        cri::ContainerState::ContainerExited as i32,
        "{st:?}"
    );
    assert_eq!(st.exit_code, 137, "sleep as PID 1 ignores SIGTERM: {st:?}");
    eventually(DEADLINE, "the orphaned process to be gone", || {
        let gone = !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true);
        async move { gone.then_some(()) }
    })
    .await;
    // A second container, running, is stopped and removed with its pod.
    let id2 = e
        .create(e.config("other", &["/bin/sleep", "1000"], &[]))
        .await
        .unwrap();
    e.start(&id2).await;
    e.done().await;
}

/// The container's cgroup (v1) directory for `controller`, from its init's
/// /proc/<pid>/cgroup.
fn cgroup_dir(pid: u32, controller: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = text
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _ = parts.next();
            let ctrls = parts.next()?;
            let p = parts.next()?;
            ctrls
                .split(',')
                .any(|c| c == controller)
                .then(|| p.to_string())
        })
        .unwrap();
    std::path::PathBuf::from(format!("/sys/fs/cgroup/{controller}{path}"))
}

async fn pid_of(e: &mut Env, id: &str) -> u32 {
    let resp =
        e.d.rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
    let info: serde_json::Value = serde_json::from_str(&resp.info["info"]).unwrap();
    info["pid"].as_u64().unwrap() as u32
}

async fn exec(e: &mut Env, id: &str, script: &str) -> cri::ExecSyncResponse {
    e.d.rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout: 20,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn mounts_security_and_resources(handler: &str) {
    let mut e = env_with(&format!("ctr-sec{handler}"), handler).await;
    let rw = e.d.root.join("fixtures/rw");
    let ro = e.d.root.join("fixtures/ro");
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("hello"), "from host").unwrap();
    let mut c = e.config("sec", &["/bin/sleep", "1000"], &[]);
    c.mounts = vec![
        cri::Mount {
            container_path: "/rw".into(),
            host_path: rw.display().to_string(),
            ..Default::default()
        },
        cri::Mount {
            container_path: "/ro".into(),
            host_path: ro.display().to_string(),
            readonly: true,
            ..Default::default()
        },
    ];
    c.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 * 1024 * 1024,
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            ..Default::default()
        }),
        security_context: Some(cri::LinuxContainerSecurityContext {
            readonly_rootfs: true,
            capabilities: Some(cri::Capability {
                drop_capabilities: vec!["NET_RAW".into()],
                ..Default::default()
            }),
            seccomp: Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            run_as_user: Some(cri::Int64Value { value: 0 }),
            ..Default::default()
        }),
    });
    let id = e.create(c).await.expect("create");
    e.start(&id).await;

    // Bind mounts: read-write reaches the host, read-only refuses writes.
    let r = exec(
        &mut e,
        &id,
        "echo written > /rw/file && cat /ro/hello && ! touch /ro/nope",
    )
    .await;
    assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(String::from_utf8_lossy(&r.stdout), "from host");
    assert_eq!(
        std::fs::read_to_string(rw.join("file")).unwrap(),
        "written\n"
    );
    assert!(!ro.join("nope").exists());
    // Read-only rootfs (while /tmp-less writes to / fail).
    let r = exec(&mut e, &id, "touch /newfile").await;
    assert_ne!(r.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("Read-only"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    // NET_RAW (bit 13) dropped from the effective set; a seccomp filter installed.
    let r = exec(
        &mut e,
        &id,
        "grep -E '^(CapEff|Seccomp):' /proc/self/status",
    )
    .await;
    let status = String::from_utf8_lossy(&r.stdout).to_string();
    let capeff = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    let mask = u64::from_str_radix(capeff.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(mask & (1 << 13), 0, "NET_RAW dropped: {status}");
    assert_ne!(mask & (1 << 0), 0, "CHOWN kept: {status}");
    let blocked = exec(&mut e, &id, "unshare -U true").await;
    assert_ne!(
        blocked.exit_code, 0,
        "RuntimeDefault blocks unshare without SYS_ADMIN"
    );
    // The same call in an Unconfined container succeeds: it was the filter.
    let mut free = e.config("unconfined", &["/bin/sleep", "1000"], &[]);
    free.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            seccomp: Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::Unconfined as i32,
                localhost_ref: String::new(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let free = e.create(free).await.unwrap();
    e.start(&free).await;
    let allowed = exec(&mut e, &free, "unshare -U true").await;
    assert_eq!(
        allowed.exit_code,
        0,
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    e.d.rt
        .remove_container(cri::RemoveContainerRequest { container_id: free })
        .await
        .unwrap();
    assert!(
        status.contains("Seccomp:\t2"),
        "RuntimeDefault installs a filter: {status}"
    );
    // Resource limits are in the container's cgroup.
    let pid = pid_of(&mut e, &id).await;
    let mem = cgroup_dir(pid, "memory");
    assert_eq!(
        std::fs::read_to_string(mem.join("memory.limit_in_bytes"))
            .unwrap()
            .trim(),
        "67108864"
    );
    let cpu = cgroup_dir(pid, "cpu");
    assert_eq!(
        std::fs::read_to_string(cpu.join("cpu.shares"))
            .unwrap()
            .trim(),
        "512"
    );
    assert_eq!(
        std::fs::read_to_string(cpu.join("cpu.cfs_quota_us"))
            .unwrap()
            .trim(),
        "50000"
    );
    // ContainerStats: CPU and memory from the cgroup (through the shim's Stats),
    // the writable layer from disk.
    exec(
        &mut e,
        &id,
        "head -c 3000000 /dev/zero > /rw/blob; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done",
    )
    .await;
    let stats =
        e.d.rt
            .container_stats(cri::ContainerStatsRequest {
                container_id: id.clone(),
            })
            .await
            .expect("ContainerStats")
            .into_inner()
            .stats
            .unwrap();
    assert_eq!(stats.attributes.as_ref().unwrap().id, id);
    assert!(stats.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
    let memory = stats.memory.unwrap();
    assert!(memory.usage_bytes.unwrap().value > 0);
    assert!(memory.working_set_bytes.unwrap().value <= memory.usage_bytes.unwrap().value);
    assert!(stats.writable_layer.unwrap().inodes_used.unwrap().value >= 1);
    let listed =
        e.d.rt
            .list_container_stats(cri::ListContainerStatsRequest {
                filter: Some(cri::ContainerStatsFilter {
                    pod_sandbox_id: e.pod.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .stats;
    assert_eq!(listed.len(), 1);
    // PodSandboxStats sums the pod's containers.
    let pod_stats =
        e.d.rt
            .pod_sandbox_stats(cri::PodSandboxStatsRequest {
                pod_sandbox_id: e.pod.clone(),
            })
            .await
            .expect("PodSandboxStats")
            .into_inner()
            .stats
            .unwrap();
    let linux = pod_stats.linux.unwrap();
    assert_eq!(linux.containers.len(), 1);
    assert!(linux.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
    assert!(linux.memory.unwrap().working_set_bytes.unwrap().value > 0);
    // The container's processes, and the pod's own interface (not the host's).
    let procs = linux.process.unwrap().process_count.unwrap().value;
    assert!(procs >= 1, "{procs}");
    let net = linux.network.unwrap();
    assert_eq!(net.default_interface.unwrap().name, "eth0");
    assert!(
        net.interfaces.iter().all(|i| i.name == "eth0"),
        "{:?}",
        net.interfaces
    );
    let all_pods =
        e.d.rt
            .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .stats;
    assert_eq!(all_pods.len(), 1);
    // UpdateContainerResources reaches the cgroup.
    e.d.rt
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 96 * 1024 * 1024,
                cpu_shares: 256,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("UpdateContainerResources");
    assert_eq!(
        std::fs::read_to_string(mem.join("memory.limit_in_bytes"))
            .unwrap()
            .trim(),
        "100663296"
    );
    assert_eq!(
        std::fs::read_to_string(cpu.join("cpu.shares"))
            .unwrap()
            .trim(),
        "256"
    );
    e.d.rt
        .remove_container(cri::RemoveContainerRequest { container_id: id })
        .await
        .unwrap();
    assert!(!mem.exists(), "the container's cgroup is removed");
    e.done().await;
}

async fn a_memory_limit_gets_oom_killed(handler: &str) {
    let mut e = env_with(&format!("ctr-oom{handler}"), handler).await;
    let mut c = e.config(
        "hog",
        &["/bin/sh", "-c"],
        &["x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"],
    );
    c.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 32 * 1024 * 1024,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = e.create(c).await.unwrap();
    e.start(&id).await;
    let st = e.wait_exited(&id).await;
    assert_eq!(st.reason, "OOMKilled", "{st:?}");
    assert_ne!(st.exit_code, 0);
    e.d.rt
        .remove_container(cri::RemoveContainerRequest { container_id: id })
        .await
        .unwrap();
    e.done().await;
}

async fn fifty_containers_in_parallel(handler: &str) {
    let mut e = env_with(&format!("ctr-par{handler}"), handler).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut rt = e.d.rt.clone();
        let pod = e.pod.clone();
        let config = e.config(&format!("p{i}"), &["/bin/sleep", "1000"], &[]);
        tasks.push(tokio::spawn(async move {
            let id = rt
                .create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: pod,
                    config: Some(config),
                    sandbox_config: None,
                })
                .await?
                .into_inner()
                .container_id;
            rt.start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await?;
            Ok::<_, tonic::Status>(id)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().expect("parallel create + start"));
    }
    let running =
        e.d.rt
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    state: Some(cri::ContainerStateValue {
                        state: cri::ContainerState::ContainerRunning as i32,
                    }),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .containers;
    assert_eq!(running.len(), 50);
    // The pod's removal stops and removes all of them.
    e.done().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn create_retry_after_a_client_timeout_gets_the_first_container() {
    // A shim launcher that is slow to start: the first CreateContainer times out.
    let mut e = env_opts(
        "ctr-retry",
        "",
        "shim_path = \"{root}/fixtures/slow-shim\"\n",
    )
    .await;
    let real = bin_dir().join("crius-shim");
    let slow = e.d.root.join("fixtures/slow-shim");
    std::fs::write(
        &slow,
        format!("#!/bin/sh\nsleep 1\nexec {} \"$@\"\n", real.display()),
    )
    .unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut req = tonic::Request::new(cri::CreateContainerRequest {
        pod_sandbox_id: e.pod.clone(),
        config: Some(e.config("slow", &["/bin/sleep", "1000"], &[])),
        sandbox_config: None,
    });
    req.set_timeout(Duration::from_millis(300));
    let err = e.d.rt.create_container(req).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err}"
    );
    // The kubelet's retry waits for the first attempt and gets its container.
    let id = e
        .create(e.config("slow", &["/bin/sleep", "1000"], &[]))
        .await
        .expect("retry");
    let all =
        e.d.rt
            .list_containers(cri::ListContainersRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .containers;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, id);
    // Answered: another identical request is a duplicate naming the container.
    let err = e
        .create(e.config("slow", &["/bin/sleep", "1000"], &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains(&id));
    e.done().await;
}

fn pid_mode(mode: cri::NamespaceMode, target: &str) -> Option<cri::LinuxContainerConfig> {
    Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: mode as i32,
                target_id: target.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_pod_pid_namespace_and_target_mode() {
    let mut d = Daemon::start("ctr-pidns").await;
    let reg = TestRegistry::start(&d.root.join("fixtures/registry"), None)
        .await
        .unwrap();
    let pushed = push_busybox(&reg, "test/busybox", "v1", Comp::Gzip)
        .await
        .unwrap();
    let image = pushed.reference(&reg.host);
    pull_image(&mut d.img, &image, None).await.expect("pull");
    // shareProcessNamespace: the sandbox asks for a pod-level PID namespace.
    let mut pc = pod_config("pidns");
    pc.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: cri::NamespaceMode::Pod as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod = run_pod(&mut d.rt, pc).await.unwrap();
    let mut e = Env {
        d,
        reg: Some(reg),
        image,
        pod,
        logs: std::path::PathBuf::new(),
        made: Vec::new(),
    };
    let mut a = e.config("a", &["/bin/sleep", "4242"], &[]);
    a.log_path = String::new();
    a.linux = pid_mode(cri::NamespaceMode::Pod, "");
    let a = e.create(a).await.unwrap();
    e.start(&a).await;
    let mut b = e.config("b", &["/bin/sleep", "1000"], &[]);
    b.log_path = String::new();
    b.linux = pid_mode(cri::NamespaceMode::Pod, "");
    let b = e.create(b).await.unwrap();
    e.start(&b).await;
    let ps = exec(&mut e, &b, "ps -o pid,args").await;
    let out = String::from_utf8_lossy(&ps.stdout).to_string();
    assert!(
        out.contains("sleep 4242"),
        "b sees a's process in the shared namespace: {out}"
    );
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("1 ")),
        "the infra process is PID 1: {out}"
    );
    // The kubelet restarts; the pod and its PID namespace are still there.
    e.d.crash_and_restart().await;
    let st = pod_status(&mut e.d.rt, &e.pod, false)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
    let ps = exec(&mut e, &b, "ps -o args").await;
    assert!(String::from_utf8_lossy(&ps.stdout).contains("sleep 4242"));

    // An ephemeral debug container targets `a` (kubectl debug --target).
    let mut dbg = e.config("debug", &["/bin/sleep", "1000"], &[]);
    dbg.log_path = String::new();
    dbg.linux = pid_mode(cri::NamespaceMode::Target, &a);
    let dbg = e.create(dbg).await.expect("TARGET mode");
    e.start(&dbg).await;
    let ps = exec(&mut e, &dbg, "ps -o args").await;
    assert!(String::from_utf8_lossy(&ps.stdout).contains("sleep 4242"));

    // A container-level PID namespace in a pod without one is refused, naming the field.
    let mut pc = pod_config("no-pidns");
    pc.log_directory = String::new();
    let other = run_pod(&mut e.d.rt, pc).await.unwrap();
    let mut c = e.config("c", &["/bin/true"], &[]);
    c.linux = pid_mode(cri::NamespaceMode::Pod, "");
    let err =
        e.d.rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: other.clone(),
                config: Some(c),
                sandbox_config: None,
            })
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("namespace_options.pid"),
        "{}",
        err.message()
    );
    remove_pod(&mut e.d.rt, &other).await.unwrap();
    e.done().await;
}

/// Every test above, under runc (the default handler) and under crun.
macro_rules! under_runc_and_crun {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread")]
                async fn runc() {
                    super::$name("").await
                }
                #[tokio::test(flavor = "multi_thread")]
                async fn crun() {
                    super::$name("crun").await
                }
            }
        )*
    };
}

under_runc_and_crun!(
    lifecycle_logs_and_exit_codes,
    image_config_user_env_and_workdir,
    exec_sync_stop_and_restart_survival,
    a_dead_shim_is_noticed_and_pod_removal_cleans_up,
    mounts_security_and_resources,
    a_memory_limit_gets_oom_killed,
    fifty_containers_in_parallel,
);

#[tokio::test(flavor = "multi_thread")]
async fn privileged_gets_every_capability_the_node_has_and_stop_of_unknown_is_ok() {
    let mut e = env_with("ctr-priv", "").await;
    // StopContainer is idempotent: an unknown id has nothing left to stop.
    e.d.rt
        .stop_container(cri::StopContainerRequest {
            container_id: "0".repeat(64),
            timeout: 0,
        })
        .await
        .expect("stop of an unknown container");
    // A privileged pod and container: all capabilities of the daemon's bounding set
    // (this VM's root lacks CAP_SYS_RESOURCE; asking runc for it would fail).
    let mut pc = pod_config("priv-pod");
    pc.log_directory = String::new();
    pc.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod = run_pod(&mut e.d.rt, pc).await.unwrap();
    let mut c = e.config("priv", &["/bin/sleep", "1000"], &[]);
    c.log_path = String::new();
    c.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            privileged: true,
            // The image's USER is 1000: root holds the capabilities.
            run_as_user: Some(cri::Int64Value { value: 0 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id =
        e.d.rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(c),
                sandbox_config: None,
            })
            .await
            .expect("privileged create")
            .into_inner()
            .container_id;
    e.start(&id).await;
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let bnd = own
        .lines()
        .find(|l| l.starts_with("CapBnd:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let r = exec(&mut e, &id, "grep CapEff /proc/self/status").await;
    let eff = String::from_utf8_lossy(&r.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        u64::from_str_radix(&eff, 16).unwrap(),
        u64::from_str_radix(&bnd, 16).unwrap() & ((1u64 << 41) - 1),
        "a privileged container has the daemon's whole bounding set"
    );
    // Adding a capability the node does not have is refused, naming the field.
    let own_caps = u64::from_str_radix(&bnd, 16).unwrap();
    if own_caps & (1 << 24) == 0 {
        let mut c = e.config("nores", &["/bin/true"], &[]);
        c.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: vec!["SYS_RESOURCE".into()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let err = e.create(c).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(
            err.message().contains("add_capabilities[0]"),
            "{}",
            err.message()
        );
    }
    remove_pod(&mut e.d.rt, &pod).await.unwrap();
    e.done().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_an_image_in_use_keeps_its_layers_until_the_container_goes() {
    let mut e = env_with("ctr-imgrm", "").await;
    let id = e
        .create(e.config("user", &["/bin/sleep", "1000"], &[]))
        .await
        .unwrap();
    e.start(&id).await;
    let image_id =
        e.d.img
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: e.image.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .image
            .unwrap()
            .id;
    e.d.img
        .remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: image_id.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("RemoveImage of an image a container uses");
    let listed =
        e.d.img
            .list_images(cri::ListImagesRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .images;
    assert!(listed.is_empty(), "the image is gone from the list");
    // The container keeps running on its layers.
    let r = exec(&mut e, &id, "echo still here").await;
    assert_eq!(String::from_utf8_lossy(&r.stdout), "still here\n");
    let snaps = crius_snapshotter::Snapshotter::open(&e.d.state_dir().join("snapshots")).unwrap();
    assert_eq!(
        snaps.layers().unwrap().len(),
        1,
        "the layer stays while the container uses it"
    );
    // Removing the container frees the layer.
    e.d.rt
        .remove_container(cri::RemoveContainerRequest { container_id: id })
        .await
        .unwrap();
    assert!(
        snaps.layers().unwrap().is_empty(),
        "the layer is collected with the container"
    );
    let blobs = std::fs::read_dir(e.d.state_dir().join("content/blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0);
    remove_pod(&mut e.d.rt, &e.pod).await.unwrap();
    drop(e.reg.take());
    e.d.finish().await;
}

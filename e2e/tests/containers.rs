//! Containers through criusd and crius-shim, on real runc and crun and overlay rootfs
//! from images pulled from a test registry.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crius_e2e::v1 as cri;
use crius_e2e::*;
use tonic::Code;

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

/// The messages of a CRI log, in order.
fn messages(text: &str) -> Vec<String> {
    parse_cri_log(text).into_iter().map(|l| l.2).collect()
}

/// A daemon for `runtime` with the busybox image and a pod.
async fn busybox_pod(tag: &str, runtime: Runtime) -> (Fixture, String, String) {
    Fixture::with_busybox_pod(tag, Options::default().with_runtime(runtime)).await
}

async fn lifecycle_logs_and_exit_codes(runtime: Runtime) {
    let (mut f, image, pod) = busybox_pod("ctr-life", runtime).await;
    let worker = ContainerBuilder::new("worker", &image)
        .command(["/bin/sh", "-c"])
        .args(["echo out; echo err >&2; printf tail; exit 3"]);
    let id = f.create(&pod, worker).await.expect("CreateContainer");
    let st = f.status(&id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerCreated as i32);
    assert_eq!(
        st.image_ref,
        image_status(&mut f.d.img, &image).await.unwrap().id
    );
    // A second container with the same name in the pod is refused.
    let again = ContainerBuilder::new("worker", &image).command(["/bin/true"]);
    let err = f.create(&pod, again).await.unwrap_err();
    assert_refused(&err, Code::AlreadyExists, &id);

    f.start_container(&id).await;
    let st = f.wait_exited(&id).await;
    assert_eq!(st.exit_code, 3);
    assert_eq!(st.reason, "Error");
    assert!(st.started_at > 0 && st.finished_at >= st.started_at);
    assert!(st.log_path.ends_with("worker.log"));
    let lines = parse_cri_log(&f.log_of("worker"));
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
    let long = ContainerBuilder::new("long", &image)
        .command(["/bin/sh", "-c"])
        .args(["head -c 102400 /dev/zero | tr '\\0' x; echo; echo done; while [ ! -f /tmp/go ]; do sleep 0.05; done; echo after-reopen; sleep 1000"]);
    let long = f.run(&pod, long).await;
    let logs = f.logs();
    eventually(DEADLINE, "the long line and 'done' to be logged", || {
        let text = std::fs::read_to_string(logs.join("long.log")).unwrap_or_default();
        async move { text.contains(" F done").then_some(()) }
    })
    .await;
    let lines = parse_cri_log(&f.log_of("long"));
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
    std::fs::rename(logs.join("long.log"), logs.join("long.log.1")).unwrap();
    f.d.rt
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: long.clone(),
        })
        .await
        .expect("ReopenContainerLog");
    f.exec(&long, "touch /tmp/go").await;
    eventually(DEADLINE, "output after the reopen in the new file", || {
        let text = std::fs::read_to_string(logs.join("long.log")).unwrap_or_default();
        async move { text.contains(" F after-reopen").then_some(()) }
    })
    .await;
    assert!(
        !std::fs::read_to_string(logs.join("long.log.1"))
            .unwrap()
            .contains("after-reopen")
    );
    std::fs::remove_file(logs.join("long.log.1")).unwrap();
    f.remove_container(&long).await;

    // Exit 0 is Completed.
    let ok = ContainerBuilder::new("ok", &image).command(["/bin/true"]);
    let ok = f.run(&pod, ok).await;
    let st = f.wait_exited(&ok).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"));

    // List filters.
    assert_eq!(list_containers(&mut f.d.rt, None).await.len(), 2);
    let by_pod = cri::ContainerFilter {
        pod_sandbox_id: pod.clone(),
        ..Default::default()
    };
    assert_eq!(list_containers(&mut f.d.rt, Some(by_pod)).await.len(), 2);
    for c in [&id, &ok] {
        f.remove_container(c).await;
        // Idempotent.
        f.remove_container(c).await;
    }
    let err =
        f.d.rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    f.finish().await;
}

async fn image_config_user_env_and_workdir(runtime: Runtime) {
    let (mut f, image, pod) = busybox_pod("ctr-image", runtime).await;
    // No command or args: the image's ENTRYPOINT + CMD run, as the image's USER.
    let id = f.run(&pod, ContainerBuilder::new("plain", &image)).await;
    f.wait_exited(&id).await;
    let lines = parse_cri_log(&f.log_of("plain"));
    assert_eq!(lines[0].2, "hello", "image env and cmd: {lines:?}");
    // args replace CMD and keep ENTRYPOINT; env from the request overrides the image's.
    let who = ContainerBuilder::new("who", &image)
        .args(["id -u; id -g; pwd; echo $GREETING"])
        .env("GREETING", "override");
    let id2 = f.run(&pod, who).await;
    f.wait_exited(&id2).await;
    assert_eq!(
        messages(&f.log_of("who")),
        vec!["1000", "1000", "/home", "override"]
    );
    let user = f.status(&id2).await.user.unwrap().linux.unwrap();
    assert_eq!((user.uid, user.gid), (1000, 1000));
    assert!(
        user.supplemental_groups.contains(&50),
        "staff lists app in /etc/group: {user:?}"
    );
    // A user by name, resolved in the container's own /etc/passwd.
    let named = ContainerBuilder::new("named", &image)
        .args(["id -u; id -g"])
        .run_as_username("nobody");
    let id3 = f.run(&pod, named).await;
    f.wait_exited(&id3).await;
    assert_eq!(messages(&f.log_of("named")), vec!["65534", "65534"]);
    for c in [id3, id, id2] {
        f.remove_container(&c).await;
    }
    f.finish().await;
}

async fn exec_sync_stop_and_restart_survival(runtime: Runtime) {
    let (mut f, image, pod) = busybox_pod("ctr-exec", runtime).await;
    let ticker = ContainerBuilder::new("ticker", &image)
        .command(["/bin/sh", "-c"])
        .args(["i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"]);
    let id = f.run(&pod, ticker).await;
    let r =
        f.d.rt
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
        f.d.rt
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
    let before = f.log_of("ticker").lines().count();
    f.d.kill();
    let logs = f.logs();
    eventually(DEADLINE, "lines logged while criusd is down", || {
        let n = std::fs::read_to_string(logs.join("ticker.log"))
            .unwrap_or_default()
            .lines()
            .count();
        async move { (n >= before + 10).then_some(()) }
    })
    .await;
    f.d.spawn().await.unwrap();
    let st = f.status(&id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    let ticks: Vec<u64> = messages(&f.log_of("ticker"))
        .into_iter()
        .filter_map(|m| m.strip_prefix("tick ").and_then(|n| n.parse().ok()))
        .collect();
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "no line lost across the restart"
    );

    // A container that exits while criusd is down is reported with its real exit
    // code and finish time after the restart.
    let quick = ContainerBuilder::new("quick", &image)
        .command(["/bin/sh", "-c"])
        .args(["sleep 0.5; exit 7"]);
    let quick = f.run(&pod, quick).await;
    f.d.kill();
    let exit_file =
        f.d.run_dir()
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
    f.d.spawn().await.unwrap();
    let st = f.wait_exited(&quick).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (7, "Error"));
    assert!(
        st.finished_at > st.started_at && st.finished_at < restarted_at,
        "the real finish time"
    );
    f.remove_container(&quick).await;

    // Stop: SIGTERM is ignored by the shell as PID 1, so SIGKILL after the timeout.
    let stop = cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 1,
    };
    let started = std::time::Instant::now();
    f.d.rt.stop_container(stop.clone()).await.unwrap();
    let st = f.status(&id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 137);
    assert!(started.elapsed() >= Duration::from_millis(900));
    f.d.rt.stop_container(stop).await.expect("idempotent");
    f.remove_container(&id).await;
    f.finish().await;
}

async fn a_dead_shim_is_noticed_and_pod_removal_cleans_up(runtime: Runtime) {
    let (mut f, image, pod) = busybox_pod("ctr-shim", runtime).await;
    let sleeper = ContainerBuilder::new("sleeper", &image).command(["/bin/sleep", "1000"]);
    let id = f.run(&pod, sleeper).await;
    let socket = f.d.run_dir().join("s");
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
    let pid = pid_of(&mut f, &id).await;
    let orphaned = status_when(&f.d.rt, &id, "criusd to notice the dead shim", |st| {
        st.message.contains("shim died")
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
    f.d.rt
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 1,
        })
        .await
        .unwrap();
    let st = f.status(&id).await;
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
    let other = ContainerBuilder::new("other", &image).command(["/bin/sleep", "1000"]);
    f.run(&pod, other).await;
    f.finish().await;
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

async fn pid_of(f: &mut Fixture, id: &str) -> u32 {
    let resp =
        f.d.rt
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

/// A cgroup file's content, trimmed.
fn cgroup_value(dir: &std::path::Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap()
        .trim()
        .to_string()
}

async fn mounts_security_and_resources(runtime: Runtime) {
    let (mut f, image, pod) = busybox_pod("ctr-sec", runtime).await;
    let (rw, ro) = (f.path("rw"), f.path("ro"));
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("hello"), "from host").unwrap();
    let sec = ContainerBuilder::new("sec", &image)
        .command(["/bin/sleep", "1000"])
        .bind(&rw, "/rw")
        .bind_readonly(&ro, "/ro")
        .resources(cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 * 1024 * 1024,
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            ..Default::default()
        })
        .readonly_rootfs()
        .drop_capability("NET_RAW")
        .seccomp(cri::security_profile::ProfileType::RuntimeDefault)
        .run_as_user(0);
    let id = f.create(&pod, sec).await.expect("create");
    f.start_container(&id).await;

    // Bind mounts: read-write reaches the host, read-only refuses writes.
    let r = f
        .exec(
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
    let r = f.exec(&id, "touch /newfile").await;
    assert_ne!(r.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("Read-only"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    // NET_RAW (bit 13) dropped from the effective set; a seccomp filter installed.
    let r = f
        .exec(&id, "grep -E '^(CapEff|Seccomp):' /proc/self/status")
        .await;
    let status = String::from_utf8_lossy(&r.stdout).to_string();
    let capeff = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    let mask = u64::from_str_radix(capeff.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(mask & (1 << 13), 0, "NET_RAW dropped: {status}");
    assert_ne!(mask & (1 << 0), 0, "CHOWN kept: {status}");
    let blocked = f.exec(&id, "unshare -U true").await;
    assert_ne!(
        blocked.exit_code, 0,
        "RuntimeDefault blocks unshare without SYS_ADMIN"
    );
    // The same call in an Unconfined container succeeds: it was the filter.
    let unconfined = ContainerBuilder::new("unconfined", &image)
        .command(["/bin/sleep", "1000"])
        .seccomp(cri::security_profile::ProfileType::Unconfined);
    let free = f.run(&pod, unconfined).await;
    let allowed = f.exec(&free, "unshare -U true").await;
    assert_eq!(
        allowed.exit_code,
        0,
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    f.remove_container(&free).await;
    assert!(
        status.contains("Seccomp:\t2"),
        "RuntimeDefault installs a filter: {status}"
    );
    // Resource limits are in the container's cgroup.
    let pid = pid_of(&mut f, &id).await;
    let mem = cgroup_dir(pid, "memory");
    assert_eq!(cgroup_value(&mem, "memory.limit_in_bytes"), "67108864");
    let cpu = cgroup_dir(pid, "cpu");
    assert_eq!(cgroup_value(&cpu, "cpu.shares"), "512");
    assert_eq!(cgroup_value(&cpu, "cpu.cfs_quota_us"), "50000");
    // ContainerStats: CPU and memory from the cgroup (read by criusd), the
    // writable layer from disk.
    f.exec(
        &id,
        "head -c 3000000 /dev/zero > /rw/blob; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done",
    )
    .await;
    let stats =
        f.d.rt
            .container_stats(cri::ContainerStatsRequest {
                container_id: id.clone(),
            })
            .await
            .expect("ContainerStats")
            .into_inner()
            .stats
            .unwrap();
    assert_eq!(stats.attributes.as_ref().unwrap().id, id);
    let cpu_stats = stats.cpu.unwrap();
    assert!(cpu_stats.usage_core_nano_seconds.unwrap().value > 0);
    // The rate since the start on a first reading: the busy loop made it more than 0,
    // and 2 cores at most.
    let cores = cpu_stats.usage_nano_cores.unwrap().value;
    assert!(cores > 0 && cores <= 2_000_000_000, "{cores}");
    let memory = stats.memory.unwrap();
    assert!(memory.usage_bytes.unwrap().value > 0);
    let working_set = memory.working_set_bytes.unwrap().value;
    assert!(working_set <= memory.usage_bytes.unwrap().value);
    // The 64 MiB limit less the working set; the page faults of the cgroup's
    // memory.stat (cgroup v1 here: no swap or pressure of its own).
    assert_eq!(
        memory.available_bytes.unwrap().value,
        67108864 - working_set
    );
    assert!(memory.page_faults.unwrap().value > 0);
    assert!(memory.major_page_faults.is_some());
    assert!(stats.swap.is_none() && stats.io.is_none());
    assert!(stats.writable_layer.unwrap().inodes_used.unwrap().value >= 1);
    let listed =
        f.d.rt
            .list_container_stats(cri::ListContainerStatsRequest {
                filter: Some(cri::ContainerStatsFilter {
                    pod_sandbox_id: pod.clone(),
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
        f.d.rt
            .pod_sandbox_stats(cri::PodSandboxStatsRequest {
                pod_sandbox_id: pod.clone(),
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
        f.d.rt
            .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .stats;
    assert_eq!(all_pods.len(), 1);
    // UpdateContainerResources reaches the cgroup.
    f.d.rt
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
    assert_eq!(cgroup_value(&mem, "memory.limit_in_bytes"), "100663296");
    assert_eq!(cgroup_value(&cpu, "cpu.shares"), "256");
    f.remove_container(&id).await;
    assert!(!mem.exists(), "the container's cgroup is removed");
    f.finish().await;
}

async fn a_memory_limit_gets_oom_killed(runtime: Runtime) {
    let (mut f, image, pod) = busybox_pod("ctr-oom", runtime).await;
    let hog = ContainerBuilder::new("hog", &image)
        .command(["/bin/sh", "-c"])
        .args(["x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"])
        .memory_limit(32 * 1024 * 1024);
    let id = f.run(&pod, hog).await;
    let st = f.wait_exited(&id).await;
    assert_eq!(st.reason, "OOMKilled", "{st:?}");
    assert_ne!(st.exit_code, 0);
    f.remove_container(&id).await;
    f.finish().await;
}

async fn fifty_containers_in_parallel(runtime: Runtime) {
    let (mut f, image, pod) = busybox_pod("ctr-par", runtime).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut rt = f.d.rt.clone();
        let pod = pod.clone();
        let config =
            ContainerBuilder::new(&format!("p{i}"), &image).command(["/bin/sleep", "1000"]);
        tasks.push(tokio::spawn(async move {
            let id = create_container(&mut rt, &pod, config, None).await?;
            start_container(&mut rt, &id).await?;
            Ok::<_, tonic::Status>(id)
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("parallel create + start");
    }
    let running = cri::ContainerFilter {
        state: Some(cri::ContainerStateValue {
            state: cri::ContainerState::ContainerRunning as i32,
        }),
        ..Default::default()
    };
    assert_eq!(list_containers(&mut f.d.rt, Some(running)).await.len(), 50);
    // The pod's removal stops and removes all of them.
    f.finish().await;
}

crius_testkit::runtime_matrix!(
    tokio: lifecycle_logs_and_exit_codes,
    image_config_user_env_and_workdir,
    exec_sync_stop_and_restart_survival,
    a_dead_shim_is_noticed_and_pod_removal_cleans_up,
    mounts_security_and_resources,
    a_memory_limit_gets_oom_killed,
    fifty_containers_in_parallel,
);

#[tokio::test(flavor = "multi_thread")]
async fn create_retry_after_a_client_timeout_gets_the_first_container() {
    // A shim launcher that is slow to start: the first CreateContainer times out.
    let mut f = Fixture::start(
        "ctr-retry",
        Options::config("shim_path = \"{root}/fixtures/slow-shim\"\n"),
    )
    .await;
    let real = bin_dir().join("crius-shim");
    let slow = f.path("slow-shim");
    std::fs::write(
        &slow,
        format!("#!/bin/sh\nsleep 1\nexec {} \"$@\"\n", real.display()),
    )
    .unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let image = f.pull_busybox().await;
    let pod = f
        .pod(PodBuilder::new("ctr-retry").log_directory(f.logs()))
        .await;
    let slow = ContainerBuilder::new("slow", &image).command(["/bin/sleep", "1000"]);
    let mut req = tonic::Request::new(cri::CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(slow.clone().build()),
        sandbox_config: None,
    });
    req.set_timeout(Duration::from_millis(300));
    let err = f.d.rt.create_container(req).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err}"
    );
    // The kubelet's retry waits for the first attempt and gets its container.
    let id = f.create(&pod, slow.clone()).await.expect("retry");
    let all = list_containers(&mut f.d.rt, None).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, id);
    // Answered: another identical request is a duplicate naming the container.
    let err = f.create(&pod, slow).await.unwrap_err();
    assert_refused(&err, Code::AlreadyExists, &id);
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_pod_pid_namespace_and_target_mode() {
    let mut f = Fixture::start("ctr-pidns", Options::default()).await;
    let image = f.pull_busybox().await;
    // shareProcessNamespace: the sandbox asks for a pod-level PID namespace.
    let pod = f
        .pod(PodBuilder::new("pidns").pid_mode(cri::NamespaceMode::Pod))
        .await;
    let sleeper = |name: &str, secs: &str| {
        ContainerBuilder::new(name, &image)
            .command(["/bin/sleep", secs])
            .no_log()
    };
    let a = f
        .run(
            &pod,
            sleeper("a", "4242").pid_mode(cri::NamespaceMode::Pod, ""),
        )
        .await;
    let b = f
        .run(
            &pod,
            sleeper("b", "1000").pid_mode(cri::NamespaceMode::Pod, ""),
        )
        .await;
    let ps = f.exec(&b, "ps -o pid,args").await;
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
    f.d.crash_and_restart().await;
    let st = pod_state(&mut f.d.rt, &pod).await;
    assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
    let ps = f.exec(&b, "ps -o args").await;
    assert!(String::from_utf8_lossy(&ps.stdout).contains("sleep 4242"));

    // An ephemeral debug container targets `a` (kubectl debug --target).
    let debug = sleeper("debug", "1000").pid_mode(cri::NamespaceMode::Target, &a);
    let debug = f.create(&pod, debug).await.expect("TARGET mode");
    f.start_container(&debug).await;
    let ps = f.exec(&debug, "ps -o args").await;
    assert!(String::from_utf8_lossy(&ps.stdout).contains("sleep 4242"));

    // A container-level PID namespace in a pod without one is refused, naming the field.
    let other = f.pod(PodBuilder::new("no-pidns").log_directory("")).await;
    let c = ContainerBuilder::new("c", &image)
        .command(["/bin/true"])
        .pid_mode(cri::NamespaceMode::Pod, "");
    let err = f.create(&other, c).await.unwrap_err();
    assert_refused(&err, Code::FailedPrecondition, "namespace_options.pid");
    remove_pod(&mut f.d.rt, &other).await.unwrap();
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn privileged_gets_every_capability_the_node_has_and_stop_of_unknown_is_ok() {
    let (mut f, image, pod) = busybox_pod("ctr-priv", Runtime::Runc).await;
    // StopContainer is idempotent: an unknown id has nothing left to stop.
    f.d.rt
        .stop_container(cri::StopContainerRequest {
            container_id: "0".repeat(64),
            timeout: 0,
        })
        .await
        .expect("stop of an unknown container");
    // A privileged pod and container: all capabilities of the daemon's bounding set
    // (this VM's root lacks CAP_SYS_RESOURCE; asking runc for it would fail).
    let priv_pod = f
        .pod(PodBuilder::new("priv-pod").log_directory("").privileged())
        .await;
    let privileged = ContainerBuilder::new("priv", &image)
        .command(["/bin/sleep", "1000"])
        .no_log()
        .privileged()
        // The image's USER is 1000: root holds the capabilities.
        .run_as_user(0);
    let id = f
        .create(&priv_pod, privileged)
        .await
        .expect("privileged create");
    f.start_container(&id).await;
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let bnd = own
        .lines()
        .find(|l| l.starts_with("CapBnd:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let r = f.exec(&id, "grep CapEff /proc/self/status").await;
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
        let c = ContainerBuilder::new("nores", &image)
            .command(["/bin/true"])
            .add_capability("SYS_RESOURCE");
        let err = f.create(&pod, c).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(
            err.message().contains("add_capabilities[0]"),
            "{}",
            err.message()
        );
    }
    remove_pod(&mut f.d.rt, &priv_pod).await.unwrap();
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_an_image_in_use_keeps_its_layers_until_the_container_goes() {
    let (mut f, image, pod) = busybox_pod("ctr-imgrm", Runtime::Runc).await;
    let user = ContainerBuilder::new("user", &image).command(["/bin/sleep", "1000"]);
    let id = f.run(&pod, user).await;
    let image_id = image_status(&mut f.d.img, &image).await.unwrap().id;
    f.d.img
        .remove_image(cri::RemoveImageRequest {
            image: Some(image_spec(&image_id)),
        })
        .await
        .expect("RemoveImage of an image a container uses");
    let listed =
        f.d.img
            .list_images(cri::ListImagesRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .images;
    assert!(listed.is_empty(), "the image is gone from the list");
    // The container keeps running on its layers.
    let r = f.exec(&id, "echo still here").await;
    assert_eq!(String::from_utf8_lossy(&r.stdout), "still here\n");
    let snaps = crius_snapshotter::Snapshotter::open(&f.d.state_dir().join("snapshots")).unwrap();
    assert_eq!(
        snaps.layers().unwrap().len(),
        1,
        "the layer stays while the container uses it"
    );
    // Removing the container frees the layer.
    f.remove_container(&id).await;
    assert!(
        snaps.layers().unwrap().is_empty(),
        "the layer is collected with the container"
    );
    let blobs = std::fs::read_dir(f.d.state_dir().join("content/blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0);
    f.finish().await;
}

/// A PID namespace's init drops a signal it has no handler for, so a stop that comes
/// before the init installed its handler would be lost and wait out its whole grace
/// period. Stopped 0 ms after StartContainer returns, 200 times, each init hears it:
/// at once, or when it installs its handler (here after 0 to 80 ms of `sleep`). The
/// test image's stop signal is SIGUSR1.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_right_after_start_reaches_an_init_that_installs_its_handler_late() {
    let (mut f, image, pod) = busybox_pod("ctr-stop0", Runtime::Runc).await;
    for i in 0..200 {
        let delay = (i % 5) * 2;
        let script = format!("sleep 0.0{delay}; trap 'exit 0' USR1; while :; do sleep 0.05; done");
        let c = ContainerBuilder::new(&format!("stop0-{i}"), &image)
            .command(["/bin/sh", "-c"])
            .args([script])
            .no_log();
        let id = f.create(&pod, c).await.expect("CreateContainer");
        f.start_container(&id).await;
        f.d.rt
            .stop_container(cri::StopContainerRequest {
                container_id: id.clone(),
                timeout: 30,
            })
            .await
            .expect("StopContainer");
        let st = f.status(&id).await;
        assert_eq!(
            (st.state, st.exit_code),
            (cri::ContainerState::ContainerExited as i32, 0),
            "iteration {i} (handler after {delay}0 ms): the init did not hear the stop \
             signal (reason {:?})",
            st.reason
        );
        f.remove_container(&id).await;
    }
    f.finish().await;
}

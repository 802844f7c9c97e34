//! The failpoint walk: criusd with its failure points compiled in
//! (`criusd-failpoints`) runs a whole lifecycle — PullImage, RunPodSandbox with a
//! hostPort, CreateContainer, StartContainer, StopContainer, RemoveContainer,
//! StopPodSandbox, RemovePodSandbox — once to list the points it passes, then once
//! per point and mode: the call fails there (`error`) or the daemon crashes there
//! (`abort`, then a restart). Each time the node must converge: what is listed is
//! consistent, every stop and remove works, and nothing is left — no mount, pinned
//! namespace, shim, runtime state, cgroup, veth, iptables chain, file or blob — and
//! a clean lifecycle works afterwards.
//!
//! Also: a fake OCI runtime and a fake CNI plugin (wrappers around the real ones)
//! that fail or die at a chosen step, or hang (the CNI plugin; its calls time out).
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crius_e2e::images::Comp;
use crius_e2e::registry::free_port;
use crius_e2e::v1 as cri;
use crius_e2e::*;
use tonic::Status;

/// The daemon of this suite: `criusd-failpoints`, reading the failpoint file.
fn options(fp: &Path, extra: &str) -> Options {
    Options {
        binary: Some("criusd-failpoints".into()),
        env: vec![("CRIUS_FAILPOINTS".into(), fp.display().to_string())],
        ..Options::config(extra)
    }
}

/// One whole lifecycle; stops at the first failing call.
async fn lifecycle(d: &mut Daemon, image: &str, logs: &Path, attempt: u32) -> Result<(), Status> {
    lifecycle_on(d, "", image, logs, attempt).await
}

/// One whole lifecycle under the runtime `handler`.
async fn lifecycle_on(
    d: &mut Daemon,
    handler: &str,
    image: &str,
    logs: &Path,
    attempt: u32,
) -> Result<(), Status> {
    pull_image(&mut d.img, image, None).await?;
    let pod_config = PodBuilder::new("walk")
        .attempt(attempt)
        .log_directory(logs)
        .tcp_port(80, i32::from(free_port()))
        .pid_mode(cri::NamespaceMode::Pod)
        .build();
    let pod = run_pod_on(&mut d.rt, handler, pod_config.clone()).await?;
    let c = create_container(
        &mut d.rt,
        &pod,
        ContainerBuilder::new("sleeper", image)
            .attempt(attempt)
            .command(["/bin/sleep", "1000"]),
        Some(pod_config),
    )
    .await?;
    start_container(&mut d.rt, &c).await?;
    d.rt.stop_container(cri::StopContainerRequest {
        container_id: c.clone(),
        timeout: 0,
    })
    .await?;
    d.rt.remove_container(cri::RemoveContainerRequest { container_id: c })
        .await?;
    d.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await?;
    d.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;
    Ok(())
}

/// What is listed is consistent: every container's pod is listed, every status
/// answers.
async fn check_consistent(d: &mut Daemon) {
    let pods: BTreeSet<String> = list_pods(&mut d.rt, None)
        .await
        .into_iter()
        .map(|p| p.id)
        .collect();
    for p in &pods {
        pod_status(&mut d.rt, p, false)
            .await
            .expect("PodSandboxStatus of a listed pod");
    }
    for c in list_containers(&mut d.rt, None).await {
        assert!(
            pods.contains(&c.pod_sandbox_id),
            "container {} of a pod that is not listed",
            c.id
        );
        let st =
            d.rt.container_status(cri::ContainerStatusRequest {
                container_id: c.id.clone(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus of a listed container")
            .into_inner()
            .status
            .unwrap();
        // A running container has the cgroup the leak check looks for.
        if st.state == cri::ContainerState::ContainerRunning as i32 {
            let cgroup = PathBuf::from(format!("/sys/fs/cgroup/pids/crius/crius-{}", c.id));
            assert!(cgroup.is_dir(), "{} is missing", cgroup.display());
        }
    }
}

/// Stops and removes everything listed, and the images.
async fn remove_everything(d: &mut Daemon) {
    for c in list_containers(&mut d.rt, None).await {
        d.rt.stop_container(cri::StopContainerRequest {
            container_id: c.id.clone(),
            timeout: 0,
        })
        .await
        .expect("StopContainer converges");
        d.rt.remove_container(cri::RemoveContainerRequest {
            container_id: c.id.clone(),
        })
        .await
        .expect("RemoveContainer converges");
    }
    for p in list_pods(&mut d.rt, None).await {
        remove_pod(&mut d.rt, &p.id)
            .await
            .expect("pod removal converges");
    }
    let images = d
        .img
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    for i in images {
        remove_image_by_id(&mut d.img, &i.id).await;
    }
}

/// What a converged node must not have: anything under the daemon's roots but its
/// own files, a process mentioning them other than criusd, a pod's veth or chains,
/// a container's cgroup.
fn leftovers(d: &Daemon, containers: &BTreeSet<String>) -> Vec<String> {
    // The live daemon itself and its socket are no leftovers.
    let daemon = d.pid().map(|p| format!("process: {p}:"));
    let socket = format!("file: {}", d.socket().display());
    let mut out: Vec<String> = leaks(&d.root)
        .into_iter()
        .filter(|l| !daemon.as_ref().is_some_and(|p| l.starts_with(p.as_str())))
        .filter(|l| *l != socket)
        .collect();
    out.extend(d.net.pod_leftovers());
    for id in containers {
        for ctrl in ["pids", "memory", "cpu", "freezer"] {
            let dir = PathBuf::from(format!("/sys/fs/cgroup/{ctrl}/crius/crius-{id}"));
            if dir.exists() {
                out.push(format!("cgroup: {}", dir.display()));
            }
        }
    }
    out
}

/// `ignore`: test-owned files under the daemon's root.
async fn converge(d: &mut Daemon, seen: &mut BTreeSet<String>, what: &str, ignore: &[PathBuf]) {
    for c in list_containers(&mut d.rt, None).await {
        seen.insert(c.id);
    }
    check_consistent(d).await;
    remove_everything(d).await;
    let d: &Daemon = d;
    let seen: &BTreeSet<String> = seen;
    let ignored: Vec<String> = ignore
        .iter()
        .map(|p| format!("file: {}", p.display()))
        .collect();
    let left = eventually_quiet(|| {
        leftovers(d, seen)
            .into_iter()
            .filter(|l| !ignored.contains(l))
            .collect()
    })
    .await;
    assert!(
        left.is_empty(),
        "{what}: left behind:\n{}\n--- criusd log ---\n{}",
        left.join("\n"),
        d.log()
    );
}

/// Polls until `check` reports nothing (exits settle asynchronously), returning what
/// it last reported.
async fn eventually_quiet(check: impl Fn() -> Vec<String>) -> Vec<String> {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let left = check();
        if left.is_empty() || std::time::Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hits(fp: &Path) -> Vec<String> {
    let mut path = fp.as_os_str().to_owned();
    path.push(".hits");
    std::fs::read_to_string(PathBuf::from(path))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn clear_hits(fp: &Path) {
    let mut path = fp.as_os_str().to_owned();
    path.push(".hits");
    let _ = std::fs::remove_file(PathBuf::from(path));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_failpoint_fails_or_crashes_and_the_node_converges() {
    let fp_dir = unique_root("fp-ctl");
    let fp = fp_dir.join("failpoints");
    // A crash in a pull keeps its verified blobs for the retry; here they must go
    // at the restart, so that the leak check sees any other blob left behind.
    let mut f = Fixture::start(
        "fp-walk",
        options(&fp, "[images]\ninterrupted_pull_expiry_secs = 0\n"),
    )
    .await;
    f.start_registry().await;
    let image = f.push_busybox(Comp::Gzip).await.reference();
    let logs = f.logs();
    std::fs::create_dir_all(&logs).unwrap();
    let mut seen = BTreeSet::new();

    // The points a clean lifecycle passes, in order.
    lifecycle(&mut f.d, &image, &logs, 0)
        .await
        .expect("a clean lifecycle");
    let mut points: Vec<String> = Vec::new();
    for h in hits(&fp) {
        if !points.contains(&h) {
            points.push(h);
        }
    }
    for must in [
        "image.pull.recorded",
        "sandbox.run.network",
        "container.create.task",
        "container.start.started",
        "container.stop.signalled",
        "container.remove.released",
        "sandbox.remove.released",
        "container.undo.mount",
        "sandbox.undo.pinned",
        "sandbox.run.infra",
        "sandbox.undo.infra",
    ] {
        assert!(
            points.iter().any(|p| p == must),
            "{must} not passed: {points:?}"
        );
    }
    converge(&mut f.d, &mut seen, "the clean lifecycle", &[]).await;

    let mut attempt = 1;
    let mut outcomes = Vec::new();
    for point in &points {
        for mode in ["error", "abort"] {
            attempt += 1;
            std::fs::write(&fp, format!("{point}={mode}\n")).unwrap();
            clear_hits(&fp);
            let result = lifecycle(&mut f.d, &image, &logs, attempt).await;
            std::fs::remove_file(&fp).unwrap();
            assert!(
                hits(&fp).iter().any(|h| h == point),
                "{point}={mode}: the point was not reached"
            );
            let err = result.expect_err(&format!("{point}={mode} must make a call fail"));
            if mode == "abort" {
                assert!(
                    f.d.pid().is_some(),
                    "the child handle is kept until the restart"
                );
                f.d.crash_and_restart().await;
            } else {
                // An injected error reaches the kubelet as Internal, with the point's
                // name, and the daemon lives on.
                assert_eq!(err.code(), tonic::Code::Internal, "{point}: {err}");
                assert!(err.message().contains(point.as_str()), "{point}: {err}");
            }
            converge(&mut f.d, &mut seen, &format!("{point}={mode}"), &[]).await;
            outcomes.push(format!("{point}={mode}: {:?}", err.code()));
        }
    }
    // The node still works.
    lifecycle(&mut f.d, &image, &logs, attempt + 1)
        .await
        .expect("a clean lifecycle after the walk");
    converge(&mut f.d, &mut seen, "the last lifecycle", &[]).await;
    println!(
        "walked {} failpoints:\n{}",
        points.len(),
        outcomes.join("\n")
    );
    f.finish().await;
    let _ = std::fs::remove_dir_all(&fp_dir);
}

/// A wrapper around runc that fails (`<ctl>/<subcommand>.fail`) or is killed right
/// after the real call (`<ctl>/<subcommand>.die`) at the subcommand chosen.
fn fake_runtime(ctl: &Path) -> PathBuf {
    let path = ctl.join("fake-runc");
    let script = format!(
        r#"#!/bin/sh
ctl={ctl}
sub=""
skip=0
for a in "$@"; do
    if [ "$skip" = 1 ]; then skip=0; continue; fi
    case "$a" in
        --root|--log|--log-format|--criu) skip=1 ;;
        -*) ;;
        *) sub="$a"; break ;;
    esac
done
if [ -f "$ctl/$sub.fail" ]; then echo "fake runtime: $sub fails" >&2; exit 1; fi
if [ -f "$ctl/$sub.die" ]; then runc "$@"; kill -9 $$; fi
exec runc "$@"
"#,
        ctl = ctl.display()
    );
    std::fs::write(&path, script).unwrap();
    run_cmd("chmod", &["755", &path.display().to_string()]).unwrap();
    path
}

/// A CNI `bridge` plugin that wraps Debian's: fails (`<ctl>/<COMMAND>.fail`), hangs
/// (`.hang`) or dies right after the real call (`.die`) for the CNI command chosen.
fn fake_cni_bridge(ctl: &Path, bin: &Path) {
    std::fs::create_dir_all(bin).unwrap();
    let path = bin.join("bridge");
    let script = format!(
        r#"#!/bin/sh
ctl={ctl}
in=$(cat)
if [ -f "$ctl/$CNI_COMMAND.fail" ]; then
    echo '{{"cniVersion":"0.4.0","code":11,"msg":"fake bridge: '"$CNI_COMMAND"' fails"}}'
    exit 1
fi
if [ -f "$ctl/$CNI_COMMAND.hang" ]; then sleep 3600; fi
if [ -f "$ctl/$CNI_COMMAND.die" ]; then
    echo "$in" | /usr/lib/cni/bridge >/dev/null
    kill -9 $$
fi
echo "$in" | exec /usr/lib/cni/bridge
"#,
        ctl = ctl.display()
    );
    std::fs::write(&path, script).unwrap();
    run_cmd("chmod", &["755", &path.display().to_string()]).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_dying_or_hanging_runtime_or_cni_plugin_leaves_nothing() {
    assert!(
        Path::new("/usr/lib/cni/bridge").exists(),
        "install Debian's containernetworking-plugins"
    );
    let ctl = unique_root("fp-fakes");
    let runtime = fake_runtime(&ctl);
    let bin = ctl.join("cni-bin");
    fake_cni_bridge(&ctl, &bin);
    let fp = ctl.join("failpoints");
    let extra = format!(
        "[runtimes.runc]\npath = \"runc\"\n[runtimes.fault]\npath = \"{}\"\n",
        runtime.display()
    );
    let mut opts = options(&fp, &extra);
    opts.cni_bin_dir = Some(bin.clone());
    opts.cni_timeout_secs = Some(3);
    let mut f = Fixture::start("fp-fakes", opts).await;
    f.start_registry().await;
    let image = f.push_busybox(Comp::Gzip).await.reference();
    let logs = f.logs();
    std::fs::create_dir_all(&logs).unwrap();
    // Pods get their network from the wrapped plugin chain.
    let cni = TestNetwork::unique();
    let cni_bridge = format!("cf{}", &cni.bridge[2..]);
    let ipam = f.d.root.join("fixtures/cni-ipam");
    let conflist = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": format!("crius-fakes-{}", &cni.bridge[2..]),
        "plugins": [
            {"type": "bridge", "bridge": cni_bridge, "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": cni.subnet}]], "dataDir": ipam.display().to_string()}},
            {"type": "loopback"}
        ]
    });
    std::fs::write(
        f.d.root.join("cni-conf/10-fakes.conflist"),
        serde_json::to_vec_pretty(&conflist).unwrap(),
    )
    .unwrap();
    let cni_leftovers = |d: &Daemon| -> Vec<String> {
        let mut out: Vec<String> = run_cmd("ip", &["-o", "link", "show", "master", &cni_bridge])
            .unwrap_or_default()
            .lines()
            .map(|l| format!("veth on {cni_bridge}: {l}"))
            .collect();
        let prefix = cni.subnet.trim_end_matches("0/24").to_string();
        for net in std::fs::read_dir(&ipam).into_iter().flatten().flatten() {
            for lease in std::fs::read_dir(net.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = lease.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) {
                    out.push(format!("host-local lease {name}"));
                }
            }
        }
        let _ = d;
        out
    };

    // The leak check's idea of where a container's cgroup is, checked on a live one.
    pull_image(&mut f.d.img, &image, None).await.unwrap();
    let probe_pod = PodBuilder::new("probe").log_directory(&logs).build();
    let probe_pod = run_pod_on(&mut f.d.rt, "fault", probe_pod).await.unwrap();
    let probe = ContainerBuilder::new("probe", &image).command(["/bin/sleep", "1000"]);
    let probe = create_container(&mut f.d.rt, &probe_pod, probe, None)
        .await
        .unwrap();
    start_container(&mut f.d.rt, &probe).await.unwrap();
    check_consistent(&mut f.d).await;
    let ignore = [f.d.root.join("cni-conf/10-fakes.conflist")];
    let mut seen = BTreeSet::new();
    let cases = [
        "create.fail",
        "create.die",
        "start.fail",
        "start.die",
        "kill.fail",
        "delete.fail",
        "delete.die",
        "ADD.fail",
        "ADD.hang",
        "ADD.die",
        "DEL.fail",
        "DEL.hang",
        "DEL.die",
    ];
    let mut outcomes = Vec::new();
    for (i, fault) in cases.iter().enumerate() {
        let marker = ctl.join(fault);
        std::fs::write(&marker, b"").unwrap();
        let result = lifecycle_on(&mut f.d, "fault", &image, &logs, 100 + i as u32).await;
        outcomes.push(format!(
            "{fault}: {}",
            result
                .as_ref()
                .err()
                .map_or("no call failed".into(), |e| format!("{:?}", e.code()))
        ));
        std::fs::remove_file(&marker).unwrap();
        converge(&mut f.d, &mut seen, fault, &ignore).await;
        let left = eventually_quiet(|| cni_leftovers(&f.d)).await;
        assert!(left.is_empty(), "{fault}: left behind: {left:?}");
    }
    println!("faults:\n{}", outcomes.join("\n"));
    let _ = run_cmd("ip", &["link", "del", &cni_bridge]);
    let _ = std::fs::remove_dir_all(&ipam);
    let _ = std::fs::remove_file(f.d.root.join("cni-conf/10-fakes.conflist"));
    f.finish().await;
    let _ = std::fs::remove_dir_all(&ctl);
}

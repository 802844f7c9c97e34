//! NRI against a real criusd: the test plugin (e2e/src/bin/nri-test-plugin.rs)
//! connects to the daemon's NRI socket (one per test, in the test's root), records
//! what it is told, adjusts containers, and refuses, hangs or crashes on demand.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crius_e2e::v1 as cri;
use crius_e2e::*;
use serde_json::Value;

/// The `[nri]` table of a test daemon: everything in the test's fixtures directory.
fn nri_options(request_timeout_ms: u64) -> Options {
    nri_options_and(request_timeout_ms, "")
}

/// [`nri_options`] with `extra` (more `[nri.*]` tables) after the `[nri]` table.
fn nri_options_and(request_timeout_ms: u64, extra: &str) -> Options {
    Options::config(format!(
        "[nri]\nenabled = true\nsocket_path = \"{{root}}/fixtures/nri/nri.sock\"\nplugin_path = \"{{root}}/fixtures/nri/plugins\"\nplugin_config_path = \"{{root}}/fixtures/nri/conf.d\"\nplugin_request_timeout_ms = {request_timeout_ms}\nplugin_registration_timeout_ms = 5000\n{extra}"
    ))
}

fn socket_of(f: &Fixture) -> PathBuf {
    f.d.root.join("fixtures/nri/nri.sock")
}

/// One test plugin process, its record and control files.
struct Plugin {
    child: Child,
    record: PathBuf,
    control: PathBuf,
}

impl Plugin {
    fn start(f: &Fixture, name: &str, index: &str, env: &[(&str, String)]) -> Plugin {
        let record = f.path(&format!("{index}-{name}.record"));
        let control = f.path(&format!("{index}-{name}.control"));
        std::fs::write(&control, "").unwrap();
        let mut cmd = Command::new(bin_dir().join("nri-test-plugin"));
        cmd.env_clear()
            .env("NRI_TEST_SOCKET", socket_of(f))
            .env("NRI_TEST_NAME", name)
            .env("NRI_TEST_INDEX", index)
            .env("NRI_TEST_RECORD", &record)
            .env("NRI_TEST_CONTROL", &control);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .expect("starting nri-test-plugin (build the binaries first)");
        Plugin {
            child,
            record,
            control,
        }
    }

    fn control(&self, what: &str) {
        std::fs::write(&self.control, what).unwrap();
    }

    fn records(&self) -> Vec<Value> {
        records(&self.record)
    }

    fn events(&self) -> Vec<String> {
        self.records()
            .iter()
            .map(|r| r["event"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    /// Waits for the process to end (it must, within the deadline).
    async fn wait_gone(&mut self) {
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < DEADLINE, "the test plugin did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// After a refused creation: no bundle and no shim of it is left.
fn nothing_left(f: &Fixture) {
    let bundles: Vec<_> = std::fs::read_dir(f.d.run_dir().join("containers"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(bundles.is_empty(), "no bundle is left: {bundles:?}");
    let shims = processes_mentioning(&f.d.root.to_string_lossy())
        .into_iter()
        .filter(|p| p.contains("crius-shim"))
        .collect::<Vec<_>>();
    assert!(shims.is_empty(), "no shim is left: {shims:?}");
}

/// The plugins verbose Status lists: (name, index, events).
async fn listed(rt: &Rt) -> Vec<(String, String, Vec<String>)> {
    let resp = rt
        .clone()
        .status(cri::StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    let info: Value = serde_json::from_str(resp.info.get("nri").expect("info has nri")).unwrap();
    info["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let events = p["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap().to_string())
                .collect();
            (
                p["name"].as_str().unwrap().to_string(),
                p["index"].as_str().unwrap().to_string(),
                events,
            )
        })
        .collect()
}

async fn wait_listed(rt: &Rt, names: &[&str]) {
    let want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    eventually(
        DEADLINE,
        &format!("NRI plugins {want:?} listed"),
        || async {
            let got: Vec<String> = listed(rt).await.into_iter().map(|p| p.0).collect();
            (got == want).then_some(())
        },
    )
    .await;
}

/// The records of `events` about container `id`, in order.
fn about<'a>(recs: &'a [Value], id: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["container"]["id"] == id).collect()
}

#[tokio::test]
async fn nri_plugin_sees_events_in_order_and_adjusts_containers() {
    let mut f = Fixture::start("nri-events", nri_options(2000)).await;
    let image = f.pull_busybox().await;
    let early = f
        .pod(PodBuilder::new("nri-early").log_directory(f.logs()))
        .await;

    let shared = f.path("nri-shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("hello"), "from the plugin's mount\n").unwrap();
    let mut plugin = Plugin::start(
        &f,
        "recorder",
        "10",
        &[
            ("NRI_TEST_ENV", "NRI_ADDED=hello-nri".to_string()),
            ("NRI_TEST_MOUNT", format!("{}:/nri-mount", shared.display())),
        ],
    );
    wait_listed(&f.d.rt, &["recorder"]).await;
    let info = listed(&f.d.rt).await;
    assert_eq!(info[0].1, "10");
    assert!(
        info[0].2.contains(&"CREATE_CONTAINER".to_string()),
        "{info:?}"
    );

    // Synchronize told it of the pod that existed before it connected.
    // (The plugin records its registration once the answer is back, which may be
    // after Configure has come.)
    let recs: Vec<Value> = plugin
        .records()
        .into_iter()
        .filter(|r| r["event"] != "Registered")
        .collect();
    assert_eq!(recs[0]["event"], "Configure");
    assert_eq!(recs[0]["runtime"], "crius");
    assert_eq!(recs[0]["request_timeout"], 2000);
    assert_eq!(recs[1]["event"], "Synchronize");
    assert_eq!(recs[1]["pods"], serde_json::json!([early]));

    let pod = f
        .pod(
            PodBuilder::new("nri-pod")
                .namespace("nri-ns")
                .label("tier", "test")
                .annotation("note", "pod-note")
                .log_directory(f.logs()),
        )
        .await;
    plugin.control("update PostStartContainer");
    let id = f
        .run(
            &pod,
            ContainerBuilder::new("worker", &image)
                .label("role", "worker")
                .sh("sleep 3600"),
        )
        .await;
    let out = f
        .exec(&id, "echo \"$NRI_ADDED\"; cat /nri-mount/hello")
        .await;
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello-nri\nfrom the plugin's mount\n",
        "the plugin's environment variable and mount are in the container"
    );
    let out = f.exec(&id, "touch /nri-mount/x").await;
    assert_ne!(out.exit_code, 0, "the plugin's mount is read-only");

    // The plugin asked, unsolicited, for a 128 MiB memory limit once it started.
    let result = eventually(DEADLINE, "the plugin's UpdateContainers answer", || async {
        plugin
            .records()
            .into_iter()
            .find(|r| r["event"] == "UpdateContainersResult" && r["container"]["id"] == id.as_str())
    })
    .await;
    assert_eq!(result["failed"], 0, "{result}");
    let out = f
        .exec(&id, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
        .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        (128u64 << 20).to_string()
    );

    f.d.rt
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 256 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("UpdateContainerResources");
    f.d.rt
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .expect("StopContainer");
    f.remove_container(&id).await;
    remove_pod(&mut f.d.rt, &pod)
        .await
        .expect("removing the pod");

    let recs = plugin.records();
    let pod_events: Vec<&str> = recs
        .iter()
        .filter(|r| r["pod"]["id"] == pod.as_str() && r["container"].is_null())
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        pod_events,
        ["RunPodSandbox", "StopPodSandbox", "RemovePodSandbox"]
    );
    let run = recs.iter().find(|r| r["event"] == "RunPodSandbox").unwrap();
    assert_eq!(run["pod"]["name"], "nri-pod");
    assert_eq!(run["pod"]["namespace"], "nri-ns");
    assert_eq!(run["pod"]["labels"]["tier"], "test");
    assert_eq!(run["pod"]["annotations"]["note"], "pod-note");
    assert!(
        run["pod"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network"),
        "the pod's network namespace: {run}"
    );

    let mine: Vec<&Value> = about(&recs, &id)
        .into_iter()
        .filter(|r| r["event"] != "UpdateContainersResult")
        .collect();
    let seq: Vec<&str> = mine.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(
        seq,
        [
            "CreateContainer",
            "PostCreateContainer",
            "StartContainer",
            "PostStartContainer",
            "UpdateContainer",
            "PostUpdateContainer",
            "StopContainer",
            "RemoveContainer"
        ]
    );
    for r in &mine {
        assert_eq!(r["container"]["name"], "worker", "{r}");
        assert_eq!(r["container"]["pod_sandbox_id"], pod.as_str());
        assert_eq!(r["container"]["labels"]["role"], "worker");
        assert_eq!(r["pod"]["name"], "nri-pod");
    }
    let create = mine[0];
    assert!(
        create["container"]["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "sleep 3600"),
        "{create}"
    );
    assert!(
        !create["container"]["cgroups_path"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "CreateContainer carries the cgroups path: {create}"
    );
    assert_eq!(mine[2]["container"]["state"], "CONTAINER_CREATED");
    assert_eq!(mine[3]["container"]["state"], "CONTAINER_RUNNING");
    assert!(mine[3]["container"]["pid"].as_u64().unwrap() > 0);
    assert_eq!(mine[4]["memory_limit"], 256 << 20);
    assert_eq!(mine[6]["container"]["state"], "CONTAINER_STOPPED");
    assert!(
        mine[6]["container"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "NRI_ADDED=hello-nri"),
        "the container as NRI sees it has the adjusted spec: {}",
        mine[6]
    );

    // criusd stopping closes the plugin's connection and removes the socket; a
    // restarted criusd listens again.
    let socket = socket_of(&f);
    f.d.stop().await.expect("stopping criusd");
    plugin.wait_gone().await;
    assert_eq!(
        plugin.events().last().map(String::as_str),
        Some("Disconnected")
    );
    assert!(
        !socket.exists(),
        "the NRI socket is removed when criusd stops"
    );
    f.d.spawn().await.expect("restarting criusd");
    assert!(
        socket.exists(),
        "the restarted criusd listens on the NRI socket"
    );
    f.finish().await;
}

#[tokio::test]
async fn nri_refusals_and_conflicts_fail_create_cleanly_and_a_retry_works() {
    let (mut f, image, pod) = Fixture::with_busybox_pod("nri-refuse", nri_options(2000)).await;
    let one = Plugin::start(
        &f,
        "first",
        "10",
        &[("NRI_TEST_ENV", "SHARED=1".to_string())],
    );
    let two = Plugin::start(&f, "second", "20", &[]);
    wait_listed(&f.d.rt, &["first", "second"]).await;
    let ctr = || ContainerBuilder::new("refused", &image).sh("sleep 3600");

    two.control("refuse CreateContainer");
    let err = f.create(&pod, ctr()).await.expect_err("a plugin refused");
    assert_refused(
        &err,
        tonic::Code::FailedPrecondition,
        "\"20-second\" refused CreateContainer",
    );
    assert!(
        err.message()
            .contains("nri-test-plugin refuses CreateContainer"),
        "{err}"
    );
    assert!(
        list_containers(&mut f.d.rt, None).await.is_empty(),
        "no container record is left"
    );
    nothing_left(&f);

    // Two plugins setting one variable conflict.
    two.control("");
    drop(two);
    wait_listed(&f.d.rt, &["first"]).await;
    let three = Plugin::start(
        &f,
        "third",
        "30",
        &[("NRI_TEST_ENV", "SHARED=3".to_string())],
    );
    wait_listed(&f.d.rt, &["first", "third"]).await;
    let err = f
        .create(&pod, ctr())
        .await
        .expect_err("the plugins conflict");
    assert_refused(
        &err,
        tonic::Code::FailedPrecondition,
        "plugins \"10-first\" and \"30-third\" both tried to set environment variable \"SHARED\"",
    );
    assert!(list_containers(&mut f.d.rt, None).await.is_empty());
    nothing_left(&f);
    drop(three);
    wait_listed(&f.d.rt, &["first"]).await;

    // The retry, with nobody objecting, works.
    let id = f.run(&pod, ctr()).await;
    let out = f.exec(&id, "echo $SHARED").await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n");
    assert_eq!(
        about(&one.records(), &id).len(),
        4,
        "create, post-create, start, post-start"
    );
    f.finish().await;
}

#[tokio::test]
async fn nri_validator_requires_its_plugin_and_keeps_bind_mounts_to_the_allowed_sources() {
    let (mut f, image, pod) = Fixture::with_busybox_pod(
        "nri-validator",
        nri_options_and(
            2000,
            "[nri.validator]\nenabled = true\nrequired_plugins = [\"guard\"]\nallowed_mount_sources = [\"{root}/fixtures/allowed\"]\n",
        ),
    )
    .await;
    let allowed = f.path("allowed");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::write(allowed.join("x"), "from the allowed source\n").unwrap();
    let ctr = |name: &str| ContainerBuilder::new(name, &image).sh("sleep 3600");

    // No plugin connected: the required one is missing.
    let err = f
        .create(&pod, ctr("early"))
        .await
        .expect_err("guard missing");
    assert_refused(
        &err,
        tonic::Code::FailedPrecondition,
        "required plugin \"guard\" is not connected",
    );
    assert!(list_containers(&mut f.d.rt, None).await.is_empty());
    nothing_left(&f);
    // A pod that tolerates it gets its container.
    let tolerant = f
        .pod(
            PodBuilder::new("tolerant")
                .annotation("validator.nri.io/tolerate-missing-plugins", "true"),
        )
        .await;
    let ok = f.create(&tolerant, ctr("tolerated")).await.unwrap();
    f.remove_container(&ok).await;

    // The guard connects, but bind-mounts a host directory outside the allowed ones.
    let guard = Plugin::start(
        &f,
        "guard",
        "10",
        &[("NRI_TEST_MOUNT", "/etc:/host-etc".to_string())],
    );
    wait_listed(&f.d.rt, &["guard"]).await;
    let err = f.create(&pod, ctr("etc")).await.expect_err("/etc refused");
    assert_refused(
        &err,
        tonic::Code::FailedPrecondition,
        "plugin \"10-guard\": its bind mount of \"/etc\" at \"/host-etc\" is outside the allowed sources",
    );
    assert!(list_containers(&mut f.d.rt, None).await.is_empty());
    nothing_left(&f);
    drop(guard);

    // From the allowed directory, the mount is made.
    let _guard = Plugin::start(
        &f,
        "guard",
        "10",
        &[("NRI_TEST_MOUNT", format!("{}:/data", allowed.display()))],
    );
    wait_listed(&f.d.rt, &["guard"]).await;
    let id = f.run(&pod, ctr("allowed")).await;
    let out = f.exec(&id, "cat /data/x").await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from the allowed source\n"
    );
    f.finish().await;
}

#[tokio::test]
async fn nri_hung_and_crashed_plugins_are_dropped_and_the_call_goes_on() {
    let timeout_ms = 1500;
    let (mut f, image, pod) = Fixture::with_busybox_pod("nri-hang", nri_options(timeout_ms)).await;
    let mut hung = Plugin::start(&f, "hangs", "10", &[]);
    let mut crashed = Plugin::start(&f, "crashes", "20", &[]);
    let ok = Plugin::start(
        &f,
        "stays",
        "30",
        &[("NRI_TEST_ENV", "STAYED=yes".to_string())],
    );
    wait_listed(&f.d.rt, &["hangs", "crashes", "stays"]).await;
    hung.control("hang CreateContainer");
    crashed.control("crash CreateContainer");

    let started = Instant::now();
    let id = f
        .run(
            &pod,
            ContainerBuilder::new("survivor", &image).sh("sleep 3600"),
        )
        .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(timeout_ms),
        "CreateContainer waited for the hung plugin's timeout ({took:?})"
    );
    assert_eq!(
        listed(&f.d.rt)
            .await
            .into_iter()
            .map(|p| p.0)
            .collect::<Vec<_>>(),
        ["stays"],
        "the hung and the crashed plugins are dropped"
    );
    let out = f.exec(&id, "echo $STAYED").await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "yes\n",
        "the remaining plugin's adjustment applies"
    );
    crashed.wait_gone().await;
    assert!(crashed.events().contains(&"crash".to_string()));
    // The hung one was disconnected: its connection ended, so it exits.
    hung.wait_gone().await;
    // Other calls are not held up by what happened.
    let second = f
        .run(
            &pod,
            ContainerBuilder::new("second", &image).sh("sleep 3600"),
        )
        .await;
    assert_eq!(about(&ok.records(), &second).len(), 4);
    f.finish().await;
}

#[tokio::test]
async fn nri_preinstalled_plugin_is_started_with_its_config_and_stopped() {
    // The daemon's root is made when it starts, after the plugin must be in place:
    // the plugin directory is a root of the test's own.
    let plugins = unique_root("nri-pre-plugins");
    std::fs::create_dir_all(plugins.join("conf.d")).unwrap();
    let record = plugins.join("record");
    std::os::unix::fs::symlink(
        bin_dir().join("nri-test-plugin"),
        plugins.join("05-preinstalled"),
    )
    .unwrap();
    std::fs::write(
        plugins.join("conf.d/05-preinstalled.conf"),
        format!("record={}\nenv=PRE=installed\n", record.display()),
    )
    .unwrap();
    let opts = Options::config(format!(
        "[nri]\nenabled = true\ndisable_connections = true\nsocket_path = \"{{root}}/fixtures/nri.sock\"\nplugin_path = \"{}\"\nplugin_config_path = \"{}\"\n",
        plugins.display(),
        plugins.join("conf.d").display()
    ));
    let (mut f, image, pod) = Fixture::with_busybox_pod("nri-pre", opts).await;
    wait_listed(&f.d.rt, &["preinstalled"]).await;
    assert!(
        !socket_of(&f).exists() && !f.d.root.join("fixtures/nri.sock").exists(),
        "no socket with connections disabled"
    );
    let recs = records(&record);
    let configure = recs
        .iter()
        .find(|r| r["event"] == "Configure")
        .expect("configured");
    assert!(
        configure["config"]
            .as_str()
            .unwrap()
            .contains("env=PRE=installed"),
        "{configure}"
    );
    let id = f
        .run(&pod, ContainerBuilder::new("pre", &image).sh("sleep 3600"))
        .await;
    let out = f.exec(&id, "echo $PRE").await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "installed\n");
    f.finish().await;
    // criusd stopped the plugin it started.
    let left = processes_mentioning(&plugins.join("05-preinstalled").to_string_lossy());
    assert!(
        left.is_empty(),
        "the pre-installed plugin is stopped with criusd: {left:?}"
    );
    std::fs::remove_dir_all(&plugins).unwrap();
}

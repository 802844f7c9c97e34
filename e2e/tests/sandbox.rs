//! Pod sandbox lifecycle against a real criusd.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crius_e2e::v1 as cri;
use crius_e2e::*;
use tonic::Code;

fn ns_of(info: &serde_json::Value, kind: &str) -> Option<String> {
    info["namespaces"][kind].as_str().map(str::to_string)
}

fn verbose_info(resp: &cri::PodSandboxStatusResponse) -> serde_json::Value {
    serde_json::from_str(resp.info.get("info").expect("verbose info")).expect("info is JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_lifecycle() {
    let mut d = Daemon::start("lifecycle").await;
    let config = PodBuilder::new("web-0")
        .hostname("web-0-host")
        .annotation("a", "b")
        .dns(
            &["10.96.0.10"],
            &["default.svc.cluster.local"],
            &["ndots:5"],
        )
        .build();
    let before = now_nanos();
    let id = run_pod(&mut d.rt, config.clone())
        .await
        .expect("RunPodSandbox");
    assert_eq!(id.len(), 64);

    let resp = pod_status(&mut d.rt, &id, true).await.expect("status");
    let st = resp.status.clone().unwrap();
    assert_eq!(st.id, id);
    assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(st.metadata, config.metadata);
    assert!(st.created_at >= before && st.created_at <= now_nanos());
    assert_eq!(st.labels, config.labels);
    assert_eq!(st.annotations, config.annotations);
    assert_eq!(st.runtime_handler, "runc");
    let opts = st.linux.unwrap().namespaces.unwrap().options.unwrap();
    assert_eq!(opts.network, cri::NamespaceMode::Pod as i32);

    // The namespaces are real, pinned, and set up as asked.
    let info = verbose_info(&resp);
    let netns = ns_of(&info, "network").expect("network namespace path");
    let utsns = ns_of(&info, "uts").expect("uts namespace path");
    let ipcns = ns_of(&info, "ipc").expect("ipc namespace path");
    for p in [&netns, &utsns, &ipcns] {
        assert!(
            mounts_under(&d.root).contains(p),
            "{p} is not a mount point"
        );
    }
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let pod_net = run_cmd(
        "nsenter",
        &[&format!("--net={netns}"), "readlink", "/proc/self/ns/net"],
    )
    .unwrap();
    assert_ne!(pod_net.trim(), host_net.to_string_lossy());
    let hostname = run_cmd("nsenter", &[&format!("--uts={utsns}"), "hostname"]).unwrap();
    assert_eq!(hostname.trim(), "web-0-host");
    let lo = run_cmd(
        "nsenter",
        &[&format!("--net={netns}"), "ip", "-o", "link", "show", "lo"],
    )
    .unwrap();
    assert!(lo.contains("UP"), "lo is not up in the pod: {lo}");
    let links = run_cmd("nsenter", &[&format!("--net={netns}"), "ip", "-o", "link"]).unwrap();
    assert_eq!(
        links.lines().count(),
        2,
        "the pod netns holds lo and eth0: {links}"
    );
    // The built-in bridge gave it an address of the test subnet, reported as the pod IP.
    let ip = pod_ip(&resp);
    let prefix = d.net.subnet.trim_end_matches("0/24");
    assert!(ip.starts_with(prefix), "pod ip {ip} in {}", d.net.subnet);
    let addrs = run_cmd(
        "nsenter",
        &[
            &format!("--net={netns}"),
            "ip",
            "-o",
            "-4",
            "addr",
            "show",
            "eth0",
        ],
    )
    .unwrap();
    assert!(addrs.contains(&format!(" {ip}/")), "{addrs}");
    assert!(
        std::fs::read_to_string(
            std::path::Path::new(info["podDir"].as_str().unwrap()).join("hosts")
        )
        .unwrap()
        .contains(&format!("{ip}\tweb-0-host"))
    );

    let dir = std::path::PathBuf::from(info["podDir"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(dir.join("resolv.conf")).unwrap(),
        "search default.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("hostname")).unwrap(),
        "web-0-host\n"
    );
    assert!(
        std::fs::read_to_string(dir.join("hosts"))
            .unwrap()
            .contains("localhost")
    );

    // The socket and its directory have the promised modes.
    let sock_mode = std::fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(sock_mode, 0o660);
    let dir_mode = std::fs::metadata(d.run_dir()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o711);

    // Stop: NotReady, namespaces released, status still answers.
    d.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .expect("stop");
    let st = pod_state(&mut d.rt, &id).await;
    assert_eq!(st.state, cri::PodSandboxState::SandboxNotready as i32);
    assert!(
        mounts_under(&d.root).is_empty(),
        "namespaces still pinned after stop"
    );

    d.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .expect("remove");
    let err = pod_status(&mut d.rt, &id, false).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert!(!dir.exists());
    assert!(list_pods(&mut d.rt, None).await.is_empty());
    d.finish().await;
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn host_namespaces_are_honoured() {
    let mut d = Daemon::start("hostns").await;
    let config = PodBuilder::new("hostnet")
        .network_mode(cri::NamespaceMode::Node)
        .ipc_mode(cri::NamespaceMode::Node)
        .pid_mode(cri::NamespaceMode::Node);
    let id = run_pod(&mut d.rt, config).await.expect("RunPodSandbox");
    let resp = pod_status(&mut d.rt, &id, true).await.unwrap();
    let info = verbose_info(&resp);
    assert!(ns_of(&info, "network").is_none());
    assert!(ns_of(&info, "ipc").is_none());
    assert!(ns_of(&info, "uts").is_none());
    assert!(mounts_under(&d.root).is_empty());
    let opts = resp
        .status
        .unwrap()
        .linux
        .unwrap()
        .namespaces
        .unwrap()
        .options
        .unwrap();
    assert_eq!(opts.network, cri::NamespaceMode::Node as i32);
    assert_eq!(opts.pid, cri::NamespaceMode::Node as i32);
    assert_eq!(opts.ipc, cri::NamespaceMode::Node as i32);
    let dir = std::path::PathBuf::from(info["podDir"].as_str().unwrap());
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("hostname")).unwrap(),
        format!("{host}\n")
    );

    // Only the IPC namespace of the host: network and UTS are the pod's own.
    let config = PodBuilder::new("hostipc").ipc_mode(cri::NamespaceMode::Node);
    let id2 = run_pod(&mut d.rt, config).await.expect("RunPodSandbox");
    let info = verbose_info(&pod_status(&mut d.rt, &id2, true).await.unwrap());
    assert!(ns_of(&info, "network").is_some());
    assert!(ns_of(&info, "uts").is_some());
    assert!(ns_of(&info, "ipc").is_none());
    assert_eq!(mounts_under(&d.root).len(), 2);

    remove_pod(&mut d.rt, &id).await.unwrap();
    remove_pod(&mut d.rt, &id2).await.unwrap();
    d.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn list_filters() {
    let mut d = Daemon::start("filters").await;
    let mut ids = Vec::new();
    for (name, tier) in [("a", "front"), ("b", "front"), ("c", "back")] {
        let config = PodBuilder::new(name).label("tier", tier);
        ids.push(run_pod(&mut d.rt, config).await.expect("run"));
    }
    d.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: ids[2].clone(),
    })
    .await
    .unwrap();

    let all = list_pods(&mut d.rt, None).await;
    assert_eq!(all.len(), 3);
    let ids_of = |v: Vec<cri::PodSandbox>| {
        let mut v: Vec<String> = v.into_iter().map(|p| p.id).collect();
        v.sort();
        v
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let by_id = |id: &str| cri::PodSandboxFilter {
        id: id.into(),
        ..Default::default()
    };
    assert_eq!(
        ids_of(list_pods(&mut d.rt, Some(by_id(&ids[0]))).await),
        vec![ids[0].clone()]
    );
    // A prefix that only one id has.
    let prefix = unique_prefix(&ids, 0);
    assert_eq!(
        ids_of(list_pods(&mut d.rt, Some(by_id(&prefix))).await),
        vec![ids[0].clone()]
    );
    assert!(list_pods(&mut d.rt, Some(by_id("zzzz"))).await.is_empty());

    let state = |s: cri::PodSandboxState| cri::PodSandboxFilter {
        state: Some(cri::PodSandboxStateValue { state: s as i32 }),
        ..Default::default()
    };
    assert_eq!(
        ids_of(list_pods(&mut d.rt, Some(state(cri::PodSandboxState::SandboxReady))).await),
        sorted(vec![ids[0].clone(), ids[1].clone()])
    );
    assert_eq!(
        ids_of(
            list_pods(
                &mut d.rt,
                Some(state(cri::PodSandboxState::SandboxNotready))
            )
            .await
        ),
        vec![ids[2].clone()]
    );
    let labels = |pairs: &[(&str, &str)]| cri::PodSandboxFilter {
        label_selector: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    assert_eq!(
        ids_of(list_pods(&mut d.rt, Some(labels(&[("tier", "front")]))).await),
        sorted(vec![ids[0].clone(), ids[1].clone()])
    );
    assert_eq!(
        ids_of(list_pods(&mut d.rt, Some(labels(&[("tier", "front"), ("app", "b")]))).await),
        vec![ids[1].clone()]
    );
    assert!(
        list_pods(&mut d.rt, Some(labels(&[("tier", "none")])))
            .await
            .is_empty()
    );
    // Everything combined.
    let mut f = labels(&[("tier", "back")]);
    f.state = Some(cri::PodSandboxStateValue {
        state: cri::PodSandboxState::SandboxReady as i32,
    });
    assert!(list_pods(&mut d.rt, Some(f)).await.is_empty());

    // Status and stop accept a unique prefix, as crictl sends them.
    let st = pod_state(&mut d.rt, &prefix).await;
    assert_eq!(st.id, ids[0]);

    for id in &ids {
        remove_pod(&mut d.rt, id).await.unwrap();
    }
    d.finish().await;
}

fn unique_prefix(ids: &[String], i: usize) -> String {
    (4..64)
        .map(|n| ids[i][..n].to_string())
        .find(|p| ids.iter().filter(|id| id.starts_with(p.as_str())).count() == 1)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_and_remove_are_idempotent() {
    let mut d = Daemon::start("idem").await;
    let id = run_pod(&mut d.rt, PodBuilder::new("idem")).await.unwrap();
    for _ in 0..2 {
        d.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .expect("stop is idempotent");
    }
    // Remove without a stop first also works (and frees everything).
    let id2 = run_pod(&mut d.rt, PodBuilder::new("idem2")).await.unwrap();
    for pid in [&id, &id, &id2, &id2] {
        d.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pid.clone(),
        })
        .await
        .expect("remove is idempotent");
    }
    // Unknown ids: stop and remove succeed (nothing left to reclaim), status is NotFound.
    let unknown = "0".repeat(64);
    d.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: unknown.clone(),
    })
    .await
    .expect("stop of an unknown sandbox");
    d.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: unknown.clone(),
    })
    .await
    .expect("remove of an unknown sandbox");
    assert_eq!(
        pod_status(&mut d.rt, &unknown, false)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    // An empty id names the field.
    let err =
        d.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "pod_sandbox_id");
    // The name is free again after removal.
    let id3 = run_pod(&mut d.rt, PodBuilder::new("idem"))
        .await
        .expect("name reusable after removal");
    remove_pod(&mut d.rt, &id3).await.unwrap();
    d.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_metadata_is_refused_naming_the_existing_sandbox() {
    let mut d = Daemon::start("dup").await;
    let id = run_pod(&mut d.rt, PodBuilder::new("dup")).await.unwrap();
    let err = run_pod(&mut d.rt, PodBuilder::new("dup"))
        .await
        .unwrap_err();
    assert_refused(&err, Code::AlreadyExists, &id);
    // A new attempt is a different pod.
    let next = PodBuilder::new("dup").attempt(2);
    let id2 = run_pod(&mut d.rt, next).await.expect("attempt 2");
    assert_ne!(id, id2);
    assert_eq!(list_pods(&mut d.rt, None).await.len(), 2);
    remove_pod(&mut d.rt, &id).await.unwrap();
    remove_pod(&mut d.rt, &id2).await.unwrap();
    d.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_input_names_the_field() {
    let mut d = Daemon::start("invalid").await;
    type Mutate = fn(&mut cri::PodSandboxConfig);
    let cases: Vec<(Mutate, &str)> = vec![
        (
            |c| c.metadata.as_mut().unwrap().name.clear(),
            "config.metadata.name",
        ),
        (
            |c| c.metadata.as_mut().unwrap().namespace.clear(),
            "config.metadata.namespace",
        ),
        (
            |c| c.metadata.as_mut().unwrap().uid.clear(),
            "config.metadata.uid",
        ),
        (
            |c| c.metadata.as_mut().unwrap().name = "a/b".into(),
            "config.metadata.name",
        ),
        (
            |c| c.metadata.as_mut().unwrap().namespace = "../etc".into(),
            "config.metadata.namespace",
        ),
        (
            |c| c.metadata.as_mut().unwrap().uid = "x\0y".into(),
            "config.metadata.uid",
        ),
        (|c| c.metadata = None, "config.metadata"),
        (|c| c.hostname = "evil\nhost".into(), "config.hostname"),
        (
            |c| c.log_directory = "var/log".into(),
            "config.log_directory",
        ),
        (
            |c| {
                c.dns_config = Some(cri::DnsConfig {
                    servers: vec!["not-an-ip".into()],
                    ..Default::default()
                })
            },
            "config.dns_config.servers[0]",
        ),
        (
            |c| {
                c.port_mappings = vec![cri::PortMapping {
                    container_port: 0,
                    ..Default::default()
                }]
            },
            "config.port_mappings[0].container_port",
        ),
    ];
    for (mutate, field) in cases {
        let mut config = PodBuilder::new("bad").build();
        mutate(&mut config);
        let err = run_pod(&mut d.rt, config).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err}");
        assert!(
            err.message().contains(field),
            "message {:?} should name {field}",
            err.message()
        );
    }
    let err =
        d.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: None,
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "config");
    let err = run_pod_on(&mut d.rt, "no-such-handler", PodBuilder::new("bad"))
        .await
        .unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "runtime_handler");
    assert!(
        err.message().contains("no-such-handler"),
        "{}",
        err.message()
    );

    // Nothing was made, the daemon is alive, and the name was never reserved.
    assert!(list_pods(&mut d.rt, None).await.is_empty());
    let id = run_pod(&mut d.rt, PodBuilder::new("bad"))
        .await
        .expect("valid config after bad ones");
    // The crun handler is configured out of the box.
    let crun_id = run_pod_on(&mut d.rt, "crun", PodBuilder::new("with-crun"))
        .await
        .expect("crun handler");
    let st = pod_state(&mut d.rt, &crun_id).await;
    assert_eq!(st.runtime_handler, "crun");
    remove_pod(&mut d.rt, &id).await.unwrap();
    remove_pod(&mut d.rt, &crun_id).await.unwrap();
    d.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubelet_shaped_request_is_accepted() {
    let mut d = Daemon::start("kubelet").await;
    let uid = "0b1c1d2e-3f40-4152-9364-758697a8b9ca";
    let name = "coredns-7db6d8ff4d-abcde";
    let config = PodBuilder::new(name)
        .namespace("kube-system")
        .uid(uid)
        .attempt(0)
        .log_directory(format!("/var/log/pods/kube-system_{name}_{uid}"))
        .dns(
            &["10.96.0.10"],
            &[
                "kube-system.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
            ],
            &["ndots:5"],
        )
        .port(cri::Protocol::Udp, 53, 0)
        .port(cri::Protocol::Tcp, 9153, 0)
        .labels(&[
            ("io.kubernetes.pod.name", name),
            ("io.kubernetes.pod.namespace", "kube-system"),
            ("io.kubernetes.pod.uid", uid),
            ("k8s-app", "kube-dns"),
        ])
        .annotation(
            "kubernetes.io/config.seen",
            "2026-11-22T10:00:00.000000000Z",
        )
        .annotation("kubernetes.io/config.source", "api")
        .cgroup_parent(&format!("/kubepods/burstable/pod{uid}"))
        .network_mode(cri::NamespaceMode::Pod)
        .pid_mode(cri::NamespaceMode::Container)
        .ipc_mode(cri::NamespaceMode::Pod)
        .seccomp(cri::security_profile::ProfileType::RuntimeDefault)
        .resources(
            cri::LinuxContainerResources {
                cpu_period: 100000,
                cpu_quota: 0,
                cpu_shares: 102,
                memory_limit_in_bytes: 178257920,
                ..Default::default()
            },
            cri::LinuxContainerResources::default(),
        );
    let id = run_pod(&mut d.rt, config)
        .await
        .expect("kubelet-shaped config is accepted");
    let st = pod_state(&mut d.rt, &id).await;
    assert_eq!(st.metadata.unwrap().attempt, 0);
    remove_pod(&mut d.rt, &id).await.unwrap();
    d.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn version_status_runtime_config_and_unimplemented() {
    let mut d = Daemon::start("status").await;
    let v =
        d.rt.version(cri::VersionRequest::default())
            .await
            .unwrap()
            .into_inner();
    assert_eq!(v.runtime_name, "crius");
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));

    let st =
        d.rt.status(cri::StatusRequest { verbose: true })
            .await
            .unwrap()
            .into_inner();
    let conds = st.status.unwrap().conditions;
    let get = |t: &str| conds.iter().find(|c| c.r#type == t).cloned().unwrap();
    assert!(
        get("RuntimeReady").status,
        "runc is installed, so the runtime is ready"
    );
    let net = get("NetworkReady");
    assert!(net.status, "the built-in bridge is ready: {net:?}");
    let names: Vec<&str> = st
        .runtime_handlers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(names, vec!["", "crun", "runc"]);
    assert!(st.info.contains_key("config"));

    let rc =
        d.rt.runtime_config(cri::RuntimeConfigRequest {})
            .await
            .unwrap()
            .into_inner();
    let expected = if std::path::Path::new("/run/systemd/system").is_dir() {
        cri::CgroupDriver::Systemd
    } else {
        cri::CgroupDriver::Cgroupfs
    };
    assert_eq!(rc.linux.unwrap().cgroup_driver, expected as i32);

    let err =
        d.rt.create_container(cri::CreateContainerRequest::default())
            .await
            .unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "pod_sandbox_id");
    let err = d.rt.exec(cri::ExecRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("cmd"), "{}", err.message());
    let err =
        d.rt.checkpoint_container(cri::CheckpointContainerRequest::default())
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(
        err.message().contains("CheckpointContainer"),
        "{}",
        err.message()
    );
    // An empty image spec names the field.
    let err = d
        .img
        .pull_image(cri::PullImageRequest::default())
        .await
        .unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "image.image");
    // An RPC newer than crius's bindings is Unimplemented too, from the router (an
    // empty request message encodes the same whatever its type).
    for path in [
        "/runtime.v1.RuntimeService/SomeFutureRpc",
        "/runtime.v1.ImageService/SomeFutureRpc",
    ] {
        let channel = connect(&d.socket()).await.unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let codec: tonic_prost::ProstCodec<cri::VersionRequest, cri::VersionResponse> =
            tonic_prost::ProstCodec::default();
        let err = grpc
            .unary(
                tonic::Request::new(cri::VersionRequest::default()),
                tonic::codegen::http::uri::PathAndQuery::from_static(path),
                codec,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented, "{path}: {err}");
    }
    d.finish().await;

    // A daemon whose runtime binary is missing says so; the systemd driver is reported.
    let mut d = Daemon::start_with(
        "status-missing",
        Options::config(
            "cgroup_driver = \"systemd\"\n[runtimes.runc]\npath = \"/nonexistent/runc\"\n",
        ),
    )
    .await;
    let rr = condition(&mut d, "RuntimeReady").await;
    assert!(!rr.status);
    assert_eq!(rr.reason, "OCIRuntimeMissing");
    assert!(rr.message.contains("/nonexistent/runc"), "{}", rr.message);
    let rc =
        d.rt.runtime_config(cri::RuntimeConfigRequest {})
            .await
            .unwrap()
            .into_inner();
    assert_eq!(
        rc.linux.unwrap().cgroup_driver,
        cri::CgroupDriver::Systemd as i32
    );
    d.finish().await;

    // NetworkReady is false, with a reason, when no usable network exists: the "cni"
    // backend with an empty config directory, and the loopback-only "none" backend.
    for (backend, reason) in [("cni", "NetworkPluginNotReady"), ("none", "NoPodNetwork")] {
        let mut d = Daemon::start_with(
            "status-net",
            Options::config(format!(
                "[network]\nbackend = \"{backend}\"\ncni_conf_dir = \"{{root}}/empty-cni\"\n"
            )),
        )
        .await;
        let nr = condition(&mut d, "NetworkReady").await;
        assert!(!nr.status, "{backend}");
        assert_eq!(nr.reason, reason, "{backend}: {nr:?}");
        assert!(!nr.message.is_empty());
        d.finish().await;
    }
}

/// The daemon's status condition of `kind`.
async fn condition(d: &mut Daemon, kind: &str) -> cri::RuntimeCondition {
    d.rt.status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == kind)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_of_a_live_daemon_is_refused_and_a_stale_one_replaced() {
    let mut d = Daemon::start("socket").await;
    // A second daemon on the same config must refuse, and leave the first serving.
    let out = std::process::Command::new(criusd_bin())
        .arg("--config")
        .arg(&d.config_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another daemon is serving"), "{stderr}");
    d.rt.version(cri::VersionRequest::default())
        .await
        .expect("first daemon still serves");
    // A crash leaves the socket file; the next start replaces it.
    d.kill();
    assert!(
        d.socket().exists(),
        "a killed daemon leaves its socket behind"
    );
    d.spawn().await.expect("restart over a stale socket");
    d.finish().await;
}

#[test]
fn config_commands_and_errors() {
    require_root();
    let out = std::process::Command::new(criusd_bin())
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for key in [
        "state_dir",
        "run_dir",
        "socket",
        "log_level",
        "cgroup_driver",
        "default_runtime",
        "[runtimes.runc]",
        "[runtimes.crun]",
    ] {
        assert!(text.contains(key), "default config lacks {key}");
    }
    let root = unique_root("config");
    for (content, key) in [
        ("stat_dir = \"/x\"\n", "stat_dir"),
        ("cgroup_driver = \"cgroupv3\"\n", "cgroup_driver"),
        ("run_dir = \"relative\"\n", "run_dir"),
        ("default_runtime = \"kata\"\n", "default_runtime"),
    ] {
        let path = root.join("bad.toml");
        std::fs::write(&path, content).unwrap();
        let out = std::process::Command::new(criusd_bin())
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{content}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(key),
            "error for {content:?} should name {key}: {stderr}"
        );
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_recovers_sandboxes_and_repairs_half_made_state() {
    let mut d = Daemon::start("restart").await;
    let a = run_pod(&mut d.rt, PodBuilder::new("keep-ready"))
        .await
        .unwrap();
    let b = run_pod(&mut d.rt, PodBuilder::new("keep-stopped"))
        .await
        .unwrap();
    let c = run_pod(&mut d.rt, PodBuilder::new("lose-netns"))
        .await
        .unwrap();
    d.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: b.clone(),
    })
    .await
    .unwrap();
    let before: Vec<cri::PodSandbox> = list_pods(&mut d.rt, None).await;
    let c_info = verbose_info(&pod_status(&mut d.rt, &c, true).await.unwrap());
    let c_netns = ns_of(&c_info, "network").unwrap();

    d.kill();
    // While it is down: c's network namespace disappears (a store record with no
    // namespace), and an orphan pod directory with a pinned namespace appears (a
    // namespace with no store record), as a crash mid-RunPodSandbox would leave.
    nix::mount::umount2(c_netns.as_str(), nix::mount::MntFlags::MNT_DETACH).unwrap();
    let orphan = d.run_dir().join("pods").join("f".repeat(64));
    run_cmd(
        criusd_bin().to_str().unwrap(),
        &[
            "pinns",
            "--dir",
            orphan.join("ns").to_str().unwrap(),
            "--net",
            "--uts",
            "--hostname",
            "orphan",
        ],
    )
    .unwrap();
    assert!(mounts_under(&orphan).len() == 2);

    d.spawn().await.expect("restart");
    let after = list_pods(&mut d.rt, None).await;
    assert_eq!(after.len(), 3);
    let state_of = |v: &[cri::PodSandbox], id: &str| v.iter().find(|p| p.id == id).unwrap().state;
    for p in &before {
        let q = after.iter().find(|q| q.id == p.id).unwrap();
        assert_eq!(q.metadata, p.metadata);
        assert_eq!(q.created_at, p.created_at);
        assert_eq!(q.labels, p.labels);
    }
    assert_eq!(
        state_of(&after, &a),
        cri::PodSandboxState::SandboxReady as i32
    );
    assert_eq!(
        state_of(&after, &b),
        cri::PodSandboxState::SandboxNotready as i32
    );
    assert_eq!(
        state_of(&after, &c),
        cri::PodSandboxState::SandboxNotready as i32
    );
    assert!(!orphan.exists(), "orphan pod directory removed");
    assert!(mounts_under(&orphan).is_empty());
    let log = d.log();
    assert!(
        log.contains("pinned namespaces are gone"),
        "recovery of c is logged"
    );
    assert!(
        log.contains("has no sandbox record"),
        "orphan removal is logged"
    );
    // a still has its namespaces.
    let a_info = verbose_info(&pod_status(&mut d.rt, &a, true).await.unwrap());
    assert!(mounts_under(&d.root).contains(&ns_of(&a_info, "network").unwrap()));
    for id in [&a, &b, &c] {
        remove_pod(&mut d.rt, id).await.unwrap();
    }
    d.finish().await;
}

/// A daemon whose namespace helper is a wrapper around the real one that delays or
/// fails as the test says, through files in the returned control directory.
async fn start_with_wrapper(tag: &str) -> (Daemon, std::path::PathBuf) {
    let d = Daemon::start_with(
        tag,
        Options::config("pinns_path = \"{root}/fixtures/pinns-wrapper.sh\"\n"),
    )
    .await;
    let ctl = d.root.join("fixtures");
    std::fs::create_dir_all(&ctl).unwrap();
    let script = ctl.join("pinns-wrapper.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             ctl={ctl}\n\
             if [ -f $ctl/delay ]; then sleep $(cat $ctl/delay); fi\n\
             if [ -f $ctl/fail-after ]; then\n\
               {criusd} \"$@\" || exit $?\n\
               echo 'injected failure after pinning' >&2; exit 1\n\
             fi\n\
             exec {criusd} \"$@\"\n",
            ctl = ctl.display(),
            criusd = criusd_bin().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (d, ctl)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_half_way_undoes_every_step() {
    let (mut d, ctl) = start_with_wrapper("undo").await;
    std::fs::write(ctl.join("fail-after"), "").unwrap();
    let err = run_pod(&mut d.rt, PodBuilder::new("undo"))
        .await
        .unwrap_err();
    assert_refused(&err, Code::Internal, "injected failure");
    assert!(list_pods(&mut d.rt, None).await.is_empty());
    assert!(mounts_under(&d.root).is_empty(), "pinned namespaces undone");
    assert_eq!(
        std::fs::read_dir(d.run_dir().join("pods")).unwrap().count(),
        0
    );
    // The name was released with everything else.
    std::fs::remove_file(ctl.join("fail-after")).unwrap();
    let id = run_pod(&mut d.rt, PodBuilder::new("undo"))
        .await
        .expect("retry after the failure");
    remove_pod(&mut d.rt, &id).await.unwrap();
    d.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_client_timeout_gets_the_first_sandbox() {
    let (mut d, ctl) = start_with_wrapper("retry").await;
    std::fs::write(ctl.join("delay"), "2").unwrap();
    // The kubelet's first call gives up ("context deadline exceeded").
    let mut req = tonic::Request::new(cri::RunPodSandboxRequest {
        config: Some(PodBuilder::new("slow").build()),
        runtime_handler: String::new(),
    });
    req.set_timeout(Duration::from_millis(300));
    let err = d.rt.run_pod_sandbox(req).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "first call should time out: {err}"
    );
    // The retry waits for the sandbox the first call is still making and gets it.
    let id = run_pod(&mut d.rt, PodBuilder::new("slow"))
        .await
        .expect("retry gets the sandbox");
    let pods = list_pods(&mut d.rt, None).await;
    assert_eq!(pods.len(), 1, "exactly one sandbox was made");
    assert_eq!(pods[0].id, id);
    // Answered now: the next identical request is a duplicate.
    let err = run_pod(&mut d.rt, PodBuilder::new("slow"))
        .await
        .unwrap_err();
    assert_refused(&err, Code::AlreadyExists, &id);

    // Same again, but the retry comes after the first attempt has finished.
    let mut req = tonic::Request::new(cri::RunPodSandboxRequest {
        config: Some(PodBuilder::new("slow2").build()),
        runtime_handler: String::new(),
    });
    req.set_timeout(Duration::from_millis(300));
    assert!(d.rt.run_pod_sandbox(req).await.is_err());
    std::fs::remove_file(ctl.join("delay")).unwrap();
    let mut rt = d.rt.clone();
    let done = eventually(DEADLINE, "the abandoned sandbox to become ready", || {
        let mut rt = rt.clone();
        async move {
            let pods = list_pods(&mut rt, None).await;
            pods.iter()
                .find(|p| {
                    p.metadata.as_ref().unwrap().name == "slow2"
                        && p.state == cri::PodSandboxState::SandboxReady as i32
                })
                .map(|p| p.id.clone())
        }
    })
    .await;
    let id2 = run_pod(&mut rt, PodBuilder::new("slow2"))
        .await
        .expect("late retry gets the finished sandbox");
    assert_eq!(id2, done);
    for id in [&id, &id2] {
        remove_pod(&mut d.rt, id).await.unwrap();
    }
    d.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_parallel_sandboxes() {
    let mut d = Daemon::start("parallel").await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut rt = d.rt.clone();
        tasks.push(tokio::spawn(async move {
            run_pod(&mut rt, PodBuilder::new(&format!("p{i}"))).await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().expect("parallel RunPodSandbox"));
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 50);
    assert_eq!(list_pods(&mut d.rt, None).await.len(), 50);
    assert_eq!(mounts_under(&d.root).len(), 150);
    let mut tasks = Vec::new();
    for id in ids {
        let mut rt = d.rt.clone();
        tasks.push(tokio::spawn(async move { remove_pod(&mut rt, &id).await }));
    }
    for t in tasks {
        t.await.unwrap().expect("parallel removal");
    }
    assert!(list_pods(&mut d.rt, None).await.is_empty());
    d.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_mid_create_then_restart_leaves_nothing() {
    let (mut d, ctl) = start_with_wrapper("midcrash").await;
    std::fs::write(ctl.join("delay"), "3").unwrap();
    let mut rt = d.rt.clone();
    let call = tokio::spawn(async move { run_pod(&mut rt, PodBuilder::new("midcrash")).await });
    // The record and pod directory exist and the helper is running: crash now.
    let pods_dir = d.run_dir().join("pods");
    eventually(DEADLINE, "the pod directory to appear", || {
        let pods_dir = pods_dir.clone();
        async move { (std::fs::read_dir(&pods_dir).ok()?.count() == 1).then_some(()) }
    })
    .await;
    // The helper is spawned just after the directory is made: wait for it (it
    // sleeps in the wrapper long enough to be seen).
    let wrapper = ctl.join("pinns-wrapper.sh").display().to_string();
    eventually(DEADLINE, "the helper to be running", || {
        let running = !processes_mentioning(&wrapper).is_empty();
        async move { running.then_some(()) }
    })
    .await;
    d.kill();
    assert!(
        call.await.unwrap().is_err(),
        "the call died with the daemon"
    );
    d.spawn().await.expect("restart");
    // The orphaned helper wakes up after the restart and must not pin anything.
    eventually(DEADLINE, "the orphaned helper to exit", || {
        let wrapper = wrapper.clone();
        async move { processes_mentioning(&wrapper).is_empty().then_some(()) }
    })
    .await;
    assert!(list_pods(&mut d.rt, None).await.is_empty());
    assert!(
        mounts_under(&d.root).is_empty(),
        "{:?}",
        mounts_under(&d.root)
    );
    assert_eq!(std::fs::read_dir(&pods_dir).unwrap().count(), 0);
    assert!(d.log().contains("half-made"), "the repair is logged");
    // The name is free: the kubelet's next attempt succeeds.
    std::fs::remove_file(ctl.join("delay")).unwrap();
    let id = run_pod(&mut d.rt, PodBuilder::new("midcrash"))
        .await
        .expect("run after repair");
    remove_pod(&mut d.rt, &id).await.unwrap();
    d.finish().await;
}

//! Bad input, systematically: every request field that reaches a path, a cgroup
//! file, a sysctl, a log line or a registry is sent hostile values. Each must be
//! refused at the first RPC that receives it, with the right code and a message
//! naming the field; the daemon must live on; nothing outside its roots may change;
//! and nothing may be left behind (the fixture's leak check at the end).
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use crius_e2e::v1 as cri;
use crius_e2e::*;
use tonic::Code;

/// Files outside the daemon's roots that hostile values aim at; each must be
/// unchanged at the end (a host sysctl, an existing file, a file that must not come
/// to exist).
struct Victims {
    dir: PathBuf,
    before: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl Victims {
    fn new(f: &Fixture) -> Victims {
        let dir = f.path("victims");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("victim.txt"), b"keep me\n").unwrap();
        let watched = [
            dir.join("victim.txt"),
            dir.join("new.log"),
            PathBuf::from("/proc/sys/kernel/panic"),
            PathBuf::from("/proc/sys/kernel/hostname"),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward"),
        ];
        let before = watched
            .iter()
            .map(|p| (p.clone(), std::fs::read(p).ok()))
            .collect();
        Victims { dir, before }
    }

    fn assert_unchanged(&self) {
        for (path, before) in &self.before {
            assert_eq!(
                &std::fs::read(path).ok(),
                before,
                "{} changed",
                path.display()
            );
        }
    }
}

async fn assert_alive(f: &mut Fixture) {
    f.d.rt
        .version(cri::VersionRequest::default())
        .await
        .expect("criusd still answers");
}

/// A hostile change to a request, the code it must get, and the field the message
/// must name.
struct Case<T> {
    what: String,
    change: Box<dyn Fn(&mut T)>,
    code: Code,
    field: &'static str,
}

fn case<T>(
    what: &str,
    code: Code,
    field: &'static str,
    change: impl Fn(&mut T) + 'static,
) -> Case<T> {
    Case {
        what: what.to_string(),
        change: Box::new(change),
        code,
        field,
    }
}

fn pcase(
    what: &str,
    code: Code,
    field: &'static str,
    change: impl Fn(&mut cri::PodSandboxConfig) + 'static,
) -> Case<cri::PodSandboxConfig> {
    case(what, code, field, change)
}

fn ccase(
    what: &str,
    code: Code,
    field: &'static str,
    change: impl Fn(&mut cri::ContainerConfig) + 'static,
) -> Case<cri::ContainerConfig> {
    case(what, code, field, change)
}

fn linux(c: &mut cri::PodSandboxConfig) -> &mut cri::LinuxPodSandboxConfig {
    c.linux.get_or_insert_with(Default::default)
}

fn pod_cases() -> Vec<Case<cri::PodSandboxConfig>> {
    let inv = Code::InvalidArgument;
    let mut cases: Vec<Case<cri::PodSandboxConfig>> = Vec::new();
    for (what, value) in [
        ("a slash", "a/b"),
        ("dot-dot", ".."),
        (
            "a line break (a forged log line)",
            "web\n2026-01-01T00:00:00Z INFO forged",
        ),
        ("a NUL", "a\0b"),
        ("a carriage return", "a\rb"),
    ] {
        let v = value.to_string();
        cases.push(pcase(
            &format!("name with {what}"),
            inv,
            "config.metadata.name",
            move |c| c.metadata.as_mut().unwrap().name = v.clone(),
        ));
        let v = value.to_string();
        cases.push(pcase(
            &format!("namespace with {what}"),
            inv,
            "config.metadata.namespace",
            move |c| c.metadata.as_mut().unwrap().namespace = v.clone(),
        ));
        let v = value.to_string();
        cases.push(pcase(
            &format!("uid with {what}"),
            inv,
            "config.metadata.uid",
            move |c| c.metadata.as_mut().unwrap().uid = v.clone(),
        ));
    }
    cases.push(pcase("a 300-byte name", inv, "config.metadata.name", |c| {
        c.metadata.as_mut().unwrap().name = "n".repeat(300)
    }));
    cases.push(pcase(
        "a hostname with a space",
        inv,
        "config.hostname",
        |c| c.hostname = "a b".into(),
    ));
    cases.push(pcase("a 65-byte hostname", inv, "config.hostname", |c| {
        c.hostname = "h".repeat(65)
    }));
    cases.push(pcase(
        "a relative log directory",
        inv,
        "config.log_directory",
        |c| c.log_directory = "relative/logs".into(),
    ));
    cases.push(pcase(
        "a log directory with a line break",
        inv,
        "config.log_directory",
        |c| c.log_directory = "/tmp/a\nb".into(),
    ));
    cases.push(pcase(
        "a DNS server that is a name",
        inv,
        "config.dns_config.servers[0]",
        |c| {
            c.dns_config = Some(cri::DnsConfig {
                servers: vec!["dns.example".into()],
                ..Default::default()
            })
        },
    ));
    cases.push(pcase(
        "a DNS option that injects a line",
        inv,
        "config.dns_config.options[0]",
        |c| {
            c.dns_config = Some(cri::DnsConfig {
                options: vec!["ndots:5\nnameserver 6.6.6.6".into()],
                ..Default::default()
            })
        },
    ));
    cases.push(pcase(
        "a container port over 65535",
        inv,
        "config.port_mappings[0].container_port",
        |c| {
            c.port_mappings = vec![cri::PortMapping {
                container_port: 70000,
                ..Default::default()
            }]
        },
    ));
    cases.push(pcase(
        "a negative host port",
        inv,
        "config.port_mappings[0].host_port",
        |c| {
            c.port_mappings = vec![cri::PortMapping {
                container_port: 80,
                host_port: -1,
                ..Default::default()
            }]
        },
    ));
    cases.push(pcase(
        "an unknown protocol",
        inv,
        "config.port_mappings[0].protocol",
        |c| {
            c.port_mappings = vec![cri::PortMapping {
                container_port: 80,
                protocol: 9,
                ..Default::default()
            }]
        },
    ));
    cases.push(pcase(
        "a host IP that is not one",
        inv,
        "config.port_mappings[0].host_ip",
        |c| {
            c.port_mappings = vec![cri::PortMapping {
                container_port: 80,
                host_ip: "nope".into(),
                ..Default::default()
            }]
        },
    ));
    for (name, value) in [
        ("kernel.panic", "1"),
        ("foo.bar", "1"),
        ("net/../../kernel/panic", "1"),
        ("net.ipv4.ip_forward", "1\nkernel.panic=1"),
    ] {
        let (n, v) = (name.to_string(), value.to_string());
        cases.push(pcase(
            &format!("sysctl {name:?}={value:?}"),
            inv,
            "config.linux.sysctls",
            move |c| {
                linux(c).sysctls.insert(n.clone(), v.clone());
            },
        ));
    }
    cases.push(pcase(
        "an unknown network mode",
        inv,
        "namespace_options.network",
        |c| {
            linux(c).security_context = Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: 9,
                    ..Default::default()
                }),
                ..Default::default()
            })
        },
    ));
    cases
}

fn sc(c: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerSecurityContext {
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

fn res(c: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerResources {
    c.linux
        .get_or_insert_with(Default::default)
        .resources
        .get_or_insert_with(Default::default)
}

fn container_cases(victims: &std::path::Path) -> Vec<Case<cri::ContainerConfig>> {
    let inv = Code::InvalidArgument;
    let victim = victims.join("victim.txt").display().to_string();
    let new_log = victims.join("new.log").display().to_string();
    let mut cases: Vec<Case<cri::ContainerConfig>> = Vec::new();
    for (what, value) in [("a slash", "a/b"), ("a line break", "a\nb")] {
        let v = value.to_string();
        cases.push(ccase(
            &format!("name with {what}"),
            inv,
            "config.metadata.name",
            move |c| c.metadata.as_mut().unwrap().name = v.clone(),
        ));
    }
    for (what, value) in [
        ("an absolute log path onto a host file", victim),
        ("an absolute log path to a new host file", new_log),
        (
            "a log path that climbs out",
            "../../victims/new.log".to_string(),
        ),
    ] {
        cases.push(ccase(what, inv, "config.log_path", move |c| {
            c.log_path = value.clone()
        }));
    }
    cases.push(ccase(
        "a relative working dir",
        inv,
        "config.working_dir",
        |c| c.working_dir = "relative".into(),
    ));
    cases.push(ccase(
        "an env key with '='",
        inv,
        "config.envs[0].key",
        |c| {
            c.envs = vec![cri::KeyValue {
                key: "A=B".into(),
                value: "x".into(),
            }]
        },
    ));
    cases.push(ccase(
        "an env value with a NUL",
        inv,
        "config.envs[0].value",
        |c| {
            c.envs = vec![cri::KeyValue {
                key: "A".into(),
                value: "x\0y".into(),
            }]
        },
    ));
    cases.push(ccase(
        "a relative mount target",
        inv,
        "config.mounts[0].container_path",
        |c| {
            c.mounts = vec![cri::Mount {
                container_path: "relative".into(),
                host_path: "/tmp".into(),
                ..Default::default()
            }]
        },
    ));
    cases.push(ccase(
        "a mount of a missing host path",
        inv,
        "config.mounts[0].host_path",
        |c| {
            c.mounts = vec![cri::Mount {
                container_path: "/m".into(),
                host_path: "/nonexistent/crius-hostile".into(),
                ..Default::default()
            }]
        },
    ));
    cases.push(ccase(
        "an unknown mount propagation",
        inv,
        "config.mounts[0].propagation",
        |c| {
            c.mounts = vec![cri::Mount {
                container_path: "/m".into(),
                host_path: "/tmp".into(),
                propagation: 9,
                ..Default::default()
            }]
        },
    ));
    cases.push(ccase(
        "a device that is a plain file",
        inv,
        "config.devices[0].host_path",
        |c| {
            c.devices = vec![cri::Device {
                container_path: "/dev/x".into(),
                host_path: "/etc/passwd".into(),
                permissions: "rw".into(),
            }]
        },
    ));
    cases.push(ccase(
        "device permissions outside rwm",
        inv,
        "config.devices[0].permissions",
        |c| {
            c.devices = vec![cri::Device {
                container_path: "/dev/null2".into(),
                host_path: "/dev/null".into(),
                permissions: "rwz".into(),
            }]
        },
    ));
    cases.push(ccase(
        "a 1-byte memory limit",
        inv,
        "memory_limit_in_bytes",
        |c| res(c).memory_limit_in_bytes = 1,
    ));
    cases.push(ccase("cpu_shares of 2^62", inv, "cpu_shares", |c| {
        res(c).cpu_shares = 1 << 62
    }));
    cases.push(ccase("a negative cpu_quota", inv, "cpu_quota", |c| {
        res(c).cpu_quota = -5
    }));
    cases.push(ccase(
        "a cpuset of CPUs the node lacks",
        inv,
        "cpuset_cpus",
        |c| res(c).cpuset_cpus = "9999".into(),
    ));
    cases.push(ccase(
        "a cpuset that does not parse",
        inv,
        "cpuset_cpus",
        |c| res(c).cpuset_cpus = "3-1,x".into(),
    ));
    cases.push(ccase(
        "a unified key that climbs out",
        inv,
        "unified",
        |c| {
            res(c)
                .unified
                .insert("../../cgroup.procs".into(), "1".into());
        },
    ));
    cases.push(ccase(
        "an oom_score_adj outside its range",
        inv,
        "oom_score_adj",
        |c| res(c).oom_score_adj = 5000,
    ));
    cases.push(ccase(
        "an unknown capability",
        inv,
        "add_capabilities[0]",
        |c| {
            sc(c).capabilities = Some(cri::Capability {
                add_capabilities: vec!["CAP_BOGUS".into()],
                ..Default::default()
            })
        },
    ));
    cases.push(ccase(
        "a user the image does not know",
        inv,
        "run_as_username",
        |c| sc(c).run_as_username = "nosuchuser".into(),
    ));
    cases.push(ccase("a group without a user", inv, "run_as_group", |c| {
        sc(c).run_as_group = Some(cri::Int64Value { value: 5 })
    }));
    cases.push(ccase(
        "a negative supplemental group",
        inv,
        "supplemental_groups[0]",
        |c| sc(c).supplemental_groups = vec![-1],
    ));
    cases
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_values_are_refused_at_the_first_rpc_naming_the_field() {
    let (mut f, image, pod) = Fixture::with_busybox_pod("hostile", Options::default()).await;
    let victims = Victims::new(&f);

    // RunPodSandbox.
    let base = PodBuilder::new("hostile-pod")
        .log_directory(f.logs())
        .build();
    for c in pod_cases() {
        let mut config = base.clone();
        (c.change)(&mut config);
        let err = run_pod(&mut f.d.rt, config).await.expect_err(&c.what);
        assert_refused(&err, c.code, c.field);
        assert_alive(&mut f).await;
    }
    let err = run_pod_on(&mut f.d.rt, "kata", base.clone())
        .await
        .unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "runtime_handler");

    // CreateContainer, in a ready pod.
    let base = ContainerBuilder::new("hostile", &image)
        .command(["/bin/sleep", "1000"])
        .build();
    for c in container_cases(&victims.dir) {
        let mut config = base.clone();
        (c.change)(&mut config);
        let err = create_container(&mut f.d.rt, &pod, config, None)
            .await
            .expect_err(&c.what);
        assert_refused(&err, c.code, c.field);
        assert_alive(&mut f).await;
    }
    assert!(
        list_containers(&mut f.d.rt, None).await.is_empty(),
        "no refused container is listed"
    );

    // UpdateContainerResources gets the same resource checks as CreateContainer.
    let ok = ContainerBuilder::new("updated", &image).command(["/bin/sleep", "1000"]);
    let id = f.run(&pod, ok).await;
    let err =
        f.d.rt
            .update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: id.clone(),
                linux: Some(cri::LinuxContainerResources {
                    memory_limit_in_bytes: 1,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "memory_limit_in_bytes");

    // The streaming calls and ExecSync.
    let err =
        f.d.rt
            .exec(cri::ExecRequest {
                container_id: id.clone(),
                cmd: vec!["sh".into()],
                tty: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            })
            .await
            .unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "stderr");
    let err =
        f.d.rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec![],
                timeout: 5,
            })
            .await
            .unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "cmd");
    let err =
        f.d.rt
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod.clone(),
                port: vec![0],
            })
            .await
            .unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "port[0]");
    f.remove_container(&id).await;

    // PullImage: refused before any registry is asked.
    for bad in [
        format!("{}/{}:v1", f.registry().host, "a".repeat(300)),
        "busy box".to_string(),
        "busybox\n:latest".to_string(),
        String::new(),
    ] {
        let err = pull_image(&mut f.d.img, &bad, None).await.unwrap_err();
        assert_refused(&err, Code::InvalidArgument, "image.image");
    }
    assert_alive(&mut f).await;

    victims.assert_unchanged();
    let log = f.d.log();
    assert!(
        !log.lines()
            .any(|l| l.starts_with("2026-01-01T00:00:00Z INFO forged")),
        "a name with a line break forged a line in criusd's log"
    );
    f.finish().await;
}

//! CRI request validation (crates/cri-server `validate`): RunPodSandbox and
//! CreateContainer requests as the kubelet sends them (protobuf, decoded as tonic
//! decodes them) go through `validate::pod_sandbox` and `validate::create_container`;
//! nothing panics, and an accepted request keeps the promises validation makes
//! (checked in `crius_cri_server::fuzzing`): names usable as path components and
//! file lines, a log path that stays in the pod's log directory, pod files with
//! exactly the lines asked for.
//!
//! Mutation is structure-aware half the time: decode, set one field to a value
//! from a list of awkward ones (or random text), encode.

use crius_cri_api::v1 as cri;
use crius_cri_server::fuzzing::{self, CriError};
use crius_fuzz::{Harness, Rng, Target};
use prost::Message;

use super::{PARSE_BOUND, shape, tag};

const DICTIONARY: &[&[u8]] = &[
    b"/",
    b"..",
    b"\0",
    b"\n",
    b"\xc2\x85",
    b"default",
    b"kube-system",
    b"net.ipv4.ip_forward",
    b"kernel.shm_rmid_forced",
    b"/var/log/pods/",
];

pub const POD_SANDBOX: Target = Target {
    name: "pod_sandbox",
    make: || Box::new(PodSandboxes),
    dictionary: DICTIONARY,
    max_len: 4096,
    time_bound: PARSE_BOUND,
    ci_iterations: 2000,
};

pub const CREATE_CONTAINER: Target = Target {
    name: "create_container",
    make: || Box::new(CreateContainers),
    dictionary: DICTIONARY,
    max_len: 4096,
    time_bound: PARSE_BOUND,
    ci_iterations: 2000,
};

/// Values that sit on the edges of what validation allows.
const AWKWARD: &[&str] = &[
    "",
    ".",
    "..",
    "/",
    "a/b",
    "../x",
    "x/..",
    "a/../b",
    "/abs/path",
    "./rel",
    "a//b",
    "ok",
    "web-0",
    "default",
    "\0",
    "a\0b",
    "a\nb",
    "a\rb",
    "tab\there",
    "space here",
    "\u{85}",
    "\u{2028}",
    "\u{a0}",
    "\u{7f}",
    "ünïcödé",
    "10.96.0.10",
    "fd00::a",
    "fe80::1%eth0",
    "256.0.0.1",
    "::",
    "ndots:5",
    "cluster.local",
    "net.ipv4.ip_forward",
    "net/ipv4/conf/all/rp_filter",
    "kernel.shm_rmid_forced",
    "kernel.hostname",
    "fs.mqueue.msg_max",
    "kernel.pid_max",
    "net..x",
    "1",
    "runc",
    "crun",
    "busybox",
    "app/0.log",
    "/var/log/pods/ns_pod_uid",
];

fn awkward(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => {
            let n = rng.below(80);
            let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        1 => {
            let n = [63, 64, 65, 253, 254, 300][rng.below(6)];
            "x".repeat(n)
        }
        _ => AWKWARD[rng.below(AWKWARD.len())].to_string(),
    }
}

fn int(rng: &mut Rng) -> i32 {
    [0, 1, -1, 53, 65535, 65536, i32::MAX, i32::MIN, 2, 3][rng.below(10)]
}

fn code_of(e: &CriError) -> u64 {
    shape(&format!("{:?} {e}", e.code()))
}

fn mutate_pod(c: &mut cri::PodSandboxConfig, rng: &mut Rng) {
    let md = c.metadata.get_or_insert_with(Default::default);
    let linux = c.linux.get_or_insert_with(Default::default);
    match rng.below(14) {
        0 => md.name = awkward(rng),
        1 => md.namespace = awkward(rng),
        2 => md.uid = awkward(rng),
        3 => md.attempt = rng.next_u64() as u32,
        4 => c.hostname = awkward(rng),
        5 => c.log_directory = awkward(rng),
        6 => {
            let d = c.dns_config.get_or_insert_with(Default::default);
            match rng.below(3) {
                0 => d.servers.push(awkward(rng)),
                1 => d.searches.push(awkward(rng)),
                _ => d.options.push(awkward(rng)),
            }
        }
        7 => c.port_mappings.push(cri::PortMapping {
            protocol: int(rng),
            container_port: int(rng),
            host_port: int(rng),
            host_ip: awkward(rng),
        }),
        8 => linux.cgroup_parent = awkward(rng),
        9 => {
            linux.sysctls.insert(awkward(rng), awkward(rng));
        }
        10 => {
            let ns = linux
                .security_context
                .get_or_insert_with(Default::default)
                .namespace_options
                .get_or_insert_with(Default::default);
            let v = rng.below(5) as i32 - 1;
            match rng.below(3) {
                0 => ns.network = v,
                1 => ns.pid = v,
                _ => ns.ipc = v,
            }
        }
        11 => {
            c.labels.insert(awkward(rng), awkward(rng));
        }
        12 => c.dns_config = None,
        _ => c.metadata = None,
    }
}

fn mutate_container(r: &mut cri::CreateContainerRequest, rng: &mut Rng) {
    let c = r.config.get_or_insert_with(Default::default);
    match rng.below(9) {
        0 => r.pod_sandbox_id = awkward(rng),
        1 => c.metadata.get_or_insert_with(Default::default).name = awkward(rng),
        2 => c.metadata.get_or_insert_with(Default::default).attempt = rng.next_u64() as u32,
        3 => c.image.get_or_insert_with(Default::default).image = awkward(rng),
        4 | 5 => c.log_path = awkward(rng),
        6 => c.log_path = format!("{}/{}", awkward(rng), awkward(rng)),
        7 => c.metadata = None,
        _ => {
            r.sandbox_config = match r.sandbox_config {
                Some(_) => None,
                None => Some(pod_config()),
            }
        }
    }
}

struct PodSandboxes;

impl Harness for PodSandboxes {
    fn run(&mut self, input: &[u8]) -> u64 {
        let Ok(req) = cri::RunPodSandboxRequest::decode(input) else {
            return tag(&["undecodable"]);
        };
        match fuzzing::pod_sandbox(req) {
            Ok(s) => tag(&["ok", &s]),
            Err(e) => code_of(&e),
        }
    }

    fn mutate(&mut self, input: &mut Vec<u8>, rng: &mut Rng) -> bool {
        let Ok(mut req) = cri::RunPodSandboxRequest::decode(&input[..]) else {
            return false;
        };
        if rng.one_in(8) {
            req.runtime_handler = awkward(rng);
        } else {
            mutate_pod(req.config.get_or_insert_with(Default::default), rng);
        }
        *input = req.encode_to_vec();
        true
    }
}

struct CreateContainers;

impl Harness for CreateContainers {
    fn run(&mut self, input: &[u8]) -> u64 {
        let Ok(req) = cri::CreateContainerRequest::decode(input) else {
            return tag(&["undecodable"]);
        };
        match fuzzing::create_container(req) {
            Ok(s) => tag(&["ok", &s]),
            Err(e) => code_of(&e),
        }
    }

    fn mutate(&mut self, input: &mut Vec<u8>, rng: &mut Rng) -> bool {
        let Ok(mut req) = cri::CreateContainerRequest::decode(&input[..]) else {
            return false;
        };
        mutate_container(&mut req, rng);
        *input = req.encode_to_vec();
        true
    }
}

/// A pod config as the kubelet sends it.
fn pod_config() -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "web-0".into(),
            namespace: "default".into(),
            uid: "0b1c6e2a-5d4f-4c1e-9a8b-7f6e5d4c3b2a".into(),
            attempt: 0,
        }),
        hostname: "web-0".into(),
        log_directory: "/var/log/pods/default_web-0_0b1c6e2a-5d4f-4c1e-9a8b-7f6e5d4c3b2a".into(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
                "cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        }),
        port_mappings: vec![cri::PortMapping {
            protocol: 0,
            container_port: 8080,
            host_port: 30080,
            host_ip: String::new(),
        }],
        labels: [
            ("app".to_string(), "web".to_string()),
            ("io.kubernetes.pod.name".to_string(), "web-0".to_string()),
        ]
        .into_iter()
        .collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods/besteffort/pod0b1c6e2a".into(),
            sysctls: [(
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "0".to_string(),
            )]
            .into_iter()
            .collect(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: 0,
                    pid: 0,
                    ipc: 0,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Seeds: a kubelet-shaped pod, crictl's example pod, a host-network pod; a
/// kubelet-shaped container request and crictl's example container.
pub fn pod_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let kubelet = cri::RunPodSandboxRequest {
        config: Some(pod_config()),
        runtime_handler: String::new(),
    };
    let crictl = cri::RunPodSandboxRequest {
        config: Some(cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "nginx-sandbox".into(),
                namespace: "default".into(),
                uid: "hdishd83djaidwnduwk28bcsb".into(),
                attempt: 1,
            }),
            log_directory: "/tmp".into(),
            linux: Some(cri::LinuxPodSandboxConfig::default()),
            ..Default::default()
        }),
        runtime_handler: "runc".into(),
    };
    let mut host = pod_config();
    host.metadata = Some(cri::PodSandboxMetadata {
        name: "kube-proxy-x7k2p".into(),
        namespace: "kube-system".into(),
        uid: "8e2f".into(),
        attempt: 2,
    });
    host.dns_config = None;
    if let Some(l) = host.linux.as_mut() {
        l.sysctls = [("kernel.shm_rmid_forced".to_string(), "1".to_string())]
            .into_iter()
            .collect();
        l.security_context = Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: 2,
                pid: 1,
                ipc: 0,
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let host = cri::RunPodSandboxRequest {
        config: Some(host),
        runtime_handler: "crun".into(),
    };
    vec![
        ("kubelet-pod", kubelet.encode_to_vec()),
        ("crictl-pod", crictl.encode_to_vec()),
        ("host-network-pod", host.encode_to_vec()),
    ]
}

pub fn container_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let kubelet = cri::CreateContainerRequest {
        pod_sandbox_id: "5f2c0e7d9a1b4c3e8f6a2d1b0c9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e".into(),
        config: Some(cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "web".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: "docker.io/library/nginx:1.25".into(),
                ..Default::default()
            }),
            command: vec!["nginx".into()],
            args: vec!["-g".into(), "daemon off;".into()],
            working_dir: "/srv".into(),
            envs: vec![cri::KeyValue {
                key: "PORT".into(),
                value: "8080".into(),
            }],
            log_path: "web/0.log".into(),
            stdin: false,
            tty: false,
            labels: [(
                "io.kubernetes.container.name".to_string(),
                "web".to_string(),
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        }),
        sandbox_config: Some(pod_config()),
    };
    let crictl = cri::CreateContainerRequest {
        pod_sandbox_id: "5f2c0e7d".into(),
        config: Some(cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "busybox".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            command: vec!["top".into()],
            log_path: "busybox.log".into(),
            linux: Some(cri::LinuxContainerConfig::default()),
            ..Default::default()
        }),
        sandbox_config: None,
    };
    vec![
        ("kubelet-container", kubelet.encode_to_vec()),
        ("crictl-container", crictl.encode_to_vec()),
    ]
}

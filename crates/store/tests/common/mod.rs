//! The records of the version-1 fixture `fixtures/store-v1.redb`, as the tests
//! build them. The fixture was written from exactly these values by the version-1
//! store (`insert_pod`, `insert_container`, `put_image`, `LeaseStore::insert`, then
//! redb's `compact`, in the commit that added it), so what it reads back must equal
//! them. It is not regenerated: today's store writes the current version.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crius_cni::{IpFamily, Lease};
use crius_cri_api::v1 as cri;
use crius_store::{
    ContainerRecord, ContainerState, ImageRecord, LayerRecord, PinnedNamespaces, PodRecord,
    PodState,
};

/// The committed version-1 store.
pub fn fixture_v1() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1.redb")
}

/// A copy of the fixture in `dir`, so a test can change it.
pub fn copy_fixture(dir: &Path) -> PathBuf {
    let to = dir.join("store.redb");
    std::fs::copy(fixture_v1(), &to).expect("copying the fixture");
    to
}

pub const POD_ID: &str = "5f1c0a9e3b2d4c6f8a7e9d1b3c5a7e9f0d2b4c6e8a1f3d5b7c9e1a3f5d7b9c1e";
pub const CONTAINER_ID: &str = "a3e5c7b9d1f3a5c7e9b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f1a3c5";
pub const IMAGE_ID: &str =
    "sha256:0c9e4a1b7d3f5e8a2c6b9d1f4e7a3c5b8d2f6e9a1c4b7d3f5e8a2c6b9d1f4e7a";
pub const NETWORK: &str = "crius0";

/// A Ready pod with its own network, IPC and UTS namespaces and one address.
pub fn pod() -> PodRecord {
    let dir = PathBuf::from(format!("/run/crius/pods/{POD_ID}"));
    PodRecord {
        id: POD_ID.into(),
        name: "web_default_uid-web-1_1".into(),
        state: PodState::Ready,
        created_at: 1_736_000_000_123_456_789,
        runtime_handler: "runc".into(),
        config: cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                uid: "uid-web-1".into(),
                namespace: "default".into(),
                attempt: 1,
            }),
            hostname: "web".into(),
            log_directory: "/var/log/pods/default_web_uid-web-1".into(),
            dns_config: Some(cri::DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec!["default.svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            port_mappings: vec![cri::PortMapping {
                protocol: cri::Protocol::Tcp as i32,
                container_port: 80,
                host_port: 8080,
                host_ip: String::new(),
            }],
            labels: HashMap::from([("app".into(), "web".into())]),
            annotations: HashMap::from([("kubernetes.io/config.seen".into(), "now".into())]),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: "/kubepods/besteffort/poduid-web-1".into(),
                ..Default::default()
            }),
            windows: None,
        },
        namespaces: PinnedNamespaces {
            net: Some(dir.join("ns/net")),
            ipc: Some(dir.join("ns/ipc")),
            uts: Some(dir.join("ns/uts")),
            user: None,
        },
        dir,
        ips: vec!["10.88.0.7".into()],
        infra_pid: None,
    }
}

/// A running container of [`pod`].
pub fn container() -> ContainerRecord {
    let bundle = PathBuf::from(format!("/run/crius/containers/{CONTAINER_ID}"));
    ContainerRecord {
        id: CONTAINER_ID.into(),
        pod_id: POD_ID.into(),
        name: "nginx_web_default_uid-web-1_0".into(),
        state: ContainerState::Running,
        created_at: 1_736_000_001_000_000_000,
        started_at: 1_736_000_002_000_000_000,
        finished_at: 0,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
        config: cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "nginx".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: "registry.local/library/nginx:1.27".into(),
                ..Default::default()
            }),
            command: vec!["nginx".into()],
            args: vec!["-g".into(), "daemon off;".into()],
            working_dir: "/".into(),
            envs: vec![cri::KeyValue {
                key: "PATH".into(),
                value: "/usr/sbin:/usr/bin:/sbin:/bin".into(),
            }],
            labels: HashMap::from([("io.kubernetes.container.name".into(), "nginx".into())]),
            log_path: "nginx/0.log".into(),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(cri::LinuxContainerResources {
                    cpu_shares: 2,
                    memory_limit_in_bytes: 128 << 20,
                    oom_score_adj: 1000,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        image: "registry.local/library/nginx:1.27".into(),
        image_ref: IMAGE_ID.into(),
        log_path: Some(PathBuf::from(
            "/var/log/pods/default_web_uid-web-1/nginx/0.log",
        )),
        socket: PathBuf::from(format!("/run/crius/s/{}.sock", &CONTAINER_ID[..24])),
        bundle,
        runtime: PathBuf::from("/usr/sbin/runc"),
        pid: 4242,
        stop_signal: "SIGQUIT".into(),
        uid: 101,
        gid: 101,
        supplemental_groups: vec![101, 65534],
    }
}

/// An image with two tags, a digest reference and two layers.
pub fn image() -> ImageRecord {
    ImageRecord {
        id: IMAGE_ID.into(),
        repo_tags: vec![
            "registry.local/library/nginx:1.27".into(),
            "registry.local/library/nginx:latest".into(),
        ],
        repo_digests: vec![
            "registry.local/library/nginx@sha256:6e2f4a8c1b3d5f7a9c2e4b6d8f1a3c5e7b9d2f4a6c8e1b3d5f7a9c2e4b6d8f1a"
                .into(),
        ],
        manifest_digest: "sha256:6e2f4a8c1b3d5f7a9c2e4b6d8f1a3c5e7b9d2f4a6c8e1b3d5f7a9c2e4b6d8f1a"
            .into(),
        layers: vec![
            LayerRecord {
                digest: digest("1"),
                diff_id: digest("2"),
                chain_id: digest("2"),
                size: 28_000_000,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            },
            LayerRecord {
                digest: digest("3"),
                diff_id: digest("4"),
                chain_id: digest("5"),
                size: 640,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            },
        ],
        size: 28_001_200,
        pulled_at: 1_735_999_000_000_000_000,
    }
}

fn digest(hex: &str) -> String {
    format!("sha256:{}", hex.repeat(64))
}

/// The pod's lease in the built-in bridge's network.
pub fn lease() -> Lease {
    Lease {
        network: NETWORK.into(),
        pod_id: POD_ID.into(),
        family: IpFamily::V4,
        address: "10.88.0.7".parse().unwrap(),
    }
}

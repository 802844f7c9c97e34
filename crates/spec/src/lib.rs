//! crius-spec: the OCI runtime spec (config.json) of a container, generated from its
//! CRI `ContainerConfig`, its pod's `PodSandboxConfig`, what its image sets
//! ([`ImageConfig`]) and facts about the node ([`HostFacts`]), with containerd's
//! semantics wherever Kubernetes leaves a choice. The spec is built with oci-spec's
//! typed builders, so every field it holds is one the runtime reads.
//!
//! Pure logic apart from reading: the container's /etc/passwd and /etc/group (resolved
//! inside the rootfs, symlinks never leaving it), the host paths of mounts and devices
//! (stat), the pod's files (exist?), seccomp profile files, for privileged containers
//! the host's /dev, for a host-network pod without a hostname the host's hostname, and
//! CDI spec files and the host device nodes they name ([`cdi`], called by the daemon
//! before generation).
//!
//! Invariants:
//! - Every refusal names the CRI field at fault ([`SpecError::InvalidField`],
//!   [`SpecError::Unsupported`]); field paths start with `config.` for the container's
//!   config and `sandbox_config.` for the pod's.
//! - The same request, files and host facts give the same spec (capability sets and
//!   annotations are unordered in the typed spec).
//! - Resources are checked by one function for CreateContainer and
//!   UpdateContainerResources alike ([`linux_resources`]).
//!
//! Choices, where containerd's are host-dependent or out of reach:
//! - A new cgroup namespace for every unprivileged container (containerd: on cgroup v2).
//! - No rlimits: the container inherits the shim's (containerd 2.x).
//! - Image VOLUMEs are not mounted here (the container manager decides).
//! - Privileged: all capabilities, every host device under /dev (containerd's
//!   `HostDevices` skip list), the allow-all device rule, writable /sys and
//!   /sys/fs/cgroup, no masked or read-only paths, no seccomp.
//! - A config without `namespace_options` (crictl's minimal configs) gets a
//!   per-container PID namespace; an explicit `POD` or `TARGET` PID mode is refused
//!   unless there is a PID namespace to join.

pub mod adjust;
mod capabilities;
pub mod cdi;
mod devices;
mod error;
mod host;
mod mounts;
mod namespaces;
mod process;
mod resources;
mod seccomp;
mod sysctl;
mod user;

use std::collections::HashMap;
use std::path::Path;

use crius_cri_api::v1 as cri;
use oci_spec::runtime::{Linux, LinuxBuilder, RootBuilder, Spec, SpecBuilder};

pub use capabilities::DEFAULT_CAPABILITIES;
pub use error::SpecError;
pub use host::{HostFacts, IdListError, IdSet};
pub use namespaces::PodNamespaces;
pub use process::exec_process;
pub use resources::{CgroupDriver, MIN_MEMORY_LIMIT, linux_resources};
pub use sysctl::{OwnNamespaces, check_sysctl};

use error::{Result, build, unsupported};

/// PATH when neither the image nor the request sets one.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's default masked paths.
const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

/// containerd's default read-only paths.
const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// containerd's annotation keys.
const ANN_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const ANN_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
const ANN_SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
const ANN_SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
const ANN_SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
const ANN_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
const ANN_IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

/// The field path of the container's security context.
const SC: &str = "config.linux.security_context";

/// What a container's spec takes from its image's config, as the image writes it
/// (crius-images reads it; serialised with camelCase names for the verbose image
/// status).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageConfig {
    /// ENTRYPOINT: replaced by the request's command.
    pub entrypoint: Vec<String>,
    /// CMD: replaced by the request's args, dropped by its command.
    pub cmd: Vec<String>,
    /// ENV (`KEY=value`): under the request's variables.
    pub env: Vec<String>,
    /// WORKDIR ("" for none): unless the request sets one.
    pub working_dir: String,
    /// USER as written (`user[:group]`, names or ids; "" for none): unless the
    /// security context sets one.
    pub user: String,
    /// STOPSIGNAL as written, or "".
    pub stop_signal: String,
}

/// Everything a container's spec is made from.
pub struct SpecInput<'a> {
    pub container_id: &'a str,
    pub sandbox_id: &'a str,
    pub config: &'a cri::ContainerConfig,
    pub sandbox: &'a cri::PodSandboxConfig,
    pub image: &'a ImageConfig,
    /// The container's mounted rootfs.
    pub rootfs: &'a Path,
    /// Holds `hostname`, `hosts` and `resolv.conf` (each mounted when present).
    pub pod_dir: &'a Path,
    /// The pod's /dev/shm; `None`: a private 64 MiB tmpfs.
    pub shm: Option<&'a Path>,
    pub namespaces: &'a PodNamespaces,
    pub cgroup_driver: CgroupDriver,
    /// Where relative `Localhost` seccomp profiles are found.
    pub seccomp_profile_root: &'a Path,
    pub host: &'a HostFacts,
    /// Host directories the container manager prepared for request mounts, by index
    /// in `config.mounts`: every image volume's (the mounted image, at its
    /// `image_sub_path`), and a recursive read-only mount's when the runtime cannot
    /// make one itself (a read-only clone of `host_path` and all its submounts). Such a
    /// mount is bound from here, read-only.
    pub prepared_mounts: &'a std::collections::BTreeMap<usize, std::path::PathBuf>,
    /// The edits of the container's CDI devices (resolved by the caller), applied
    /// last.
    pub cdi: &'a cdi::CdiEdits,
}

/// A generated spec and what the container manager needs beside it.
#[derive(Debug, Clone)]
pub struct Generated {
    pub spec: Spec,
    /// The process's user and primary group.
    pub uid: u32,
    pub gid: u32,
    /// The image's stop signal, or "".
    pub stop_signal: String,
}

/// Generates the OCI spec of a container. Blocking (reads files): call it from a
/// blocking context.
pub fn generate(input: &SpecInput) -> std::result::Result<Generated, SpecError> {
    let config = input.config;
    let linux = config.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let sandbox_linux = input.sandbox.linux.clone().unwrap_or_default();
    let sandbox_privileged = sandbox_linux
        .security_context
        .as_ref()
        .is_some_and(|s| s.privileged);
    let privileged = sc.privileged;
    if privileged && !sandbox_privileged {
        return Err(unsupported(
            format!("{SC}.privileged"),
            "a privileged container needs a privileged pod sandbox",
        ));
    }

    let args = process::command(config, input.image)?;
    let user = user::resolve_user(input.rootfs, &sc, input.image)?;
    let hostname = pod_hostname(input);
    let env = process::environment(config, input.image, &hostname, &user.home)?;
    let cwd = process::working_dir(config, input.image)?;
    let caps = capabilities::capabilities(&sc, input.host.cap_bounding_set)?;
    let ambient = capabilities::ambient_capabilities(&sc)?;
    let mut bounding = caps.clone();
    bounding.extend(ambient.iter().cloned());
    let oom = resources::oom_score_adj(linux.resources.as_ref(), input.host.oom_score_adj_floor)?;

    let mut process = oci_spec::runtime::ProcessBuilder::default()
        .terminal(config.tty)
        .user(user.oci()?)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(capabilities::linux_capabilities(&bounding, &ambient)?)
        .no_new_privileges(sc.no_new_privs)
        .oom_score_adj(oom)
        .build()
        .map_err(build("process"))?;
    // The builder starts from oci-spec's default process, which has an RLIMIT_NOFILE.
    process.set_rlimits(None);

    let (mounts, rootfs_propagation) = mounts::mounts(input, &sc)?;
    let linux = linux_section(input, &sc, &sandbox_linux, &bounding, rootfs_propagation)?;
    let root = RootBuilder::default()
        .path(input.rootfs)
        .readonly(sc.readonly_rootfs)
        .build()
        .map_err(build("root"))?;
    let mut spec = SpecBuilder::default()
        .version("1.1.0")
        .process(process)
        .root(root)
        .mounts(mounts)
        .annotations(annotations(input))
        .linux(linux)
        .build()
        .map_err(build("spec"))?;
    // The builder starts from oci-spec's default spec, which names a hostname.
    spec.set_hostname(None);
    input.cdi.apply(&mut spec)?;
    Ok(Generated {
        spec,
        uid: user.uid,
        gid: user.gid,
        stop_signal: input.image.stop_signal.clone(),
    })
}

/// The spec's `linux` section; `bounding` is the process's bounding set.
fn linux_section(
    input: &SpecInput,
    sc: &cri::LinuxContainerSecurityContext,
    sandbox_linux: &cri::LinuxPodSandboxConfig,
    bounding: &std::collections::BTreeSet<String>,
    rootfs_propagation: Option<String>,
) -> Result<Linux> {
    let privileged = sc.privileged;
    let requested = input
        .config
        .linux
        .as_ref()
        .and_then(|l| l.resources.as_ref());
    let (devices, device_rules) = devices::devices(input.config, privileged, Path::new("/dev"))?;
    let mut resources = resources::resources(requested, input.host)?;
    resources.set_devices(Some(device_rules));
    let cgroups_path = resources::cgroups_path(
        input.cgroup_driver,
        &sandbox_linux.cgroup_parent,
        input.container_id,
    )?;
    let namespaces = namespaces::namespaces(sc, input.namespaces, privileged)?;
    let seccomp = seccomp::seccomp_profile(sc, privileged, bounding, input.seccomp_profile_root)?;
    let mut linux = LinuxBuilder::default()
        .cgroups_path(cgroups_path)
        .resources(resources)
        .namespaces(namespaces)
        .devices(devices)
        .build()
        .map_err(build("linux section"))?;
    linux.set_rootfs_propagation(rootfs_propagation);
    if input.namespaces.user.is_some() {
        // The runtime joins the pinned namespace; it is told the maps as well (runc
        // works out the host ids of the container's root from them).
        let (uids, gids) = user_maps(sandbox_linux)?;
        linux.set_uid_mappings(Some(uids));
        linux.set_gid_mappings(Some(gids));
    }
    let (masked, readonly) = if privileged {
        (None, None)
    } else {
        let or_default = |paths: &[String], default: &[&str]| {
            if paths.is_empty() {
                default.iter().map(|s| s.to_string()).collect()
            } else {
                paths.to_vec()
            }
        };
        (
            Some(or_default(&sc.masked_paths, DEFAULT_MASKED_PATHS)),
            Some(or_default(&sc.readonly_paths, DEFAULT_READONLY_PATHS)),
        )
    };
    linux.set_masked_paths(masked);
    linux.set_readonly_paths(readonly);
    linux.set_sysctl(Some(sandbox_linux.sysctls.clone()).filter(|s| !s.is_empty()));
    linux.set_seccomp(seccomp);
    Ok(linux)
}

/// The OCI uid and gid maps of the pod's user namespace, from its config.
fn user_maps(
    sandbox_linux: &cri::LinuxPodSandboxConfig,
) -> Result<(
    Vec<oci_spec::runtime::LinuxIdMapping>,
    Vec<oci_spec::runtime::LinuxIdMapping>,
)> {
    let opts = sandbox_linux
        .security_context
        .as_ref()
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|n| n.userns_options.as_ref())
        .ok_or_else(|| {
            unsupported(
                "sandbox_config.linux.security_context.namespace_options.userns_options",
                "the pod has its own user namespace but its config gives no maps",
            )
        })?;
    let conv = |maps: &[cri::IdMapping]| {
        maps.iter()
            .map(|m| {
                oci_spec::runtime::LinuxIdMappingBuilder::default()
                    .container_id(m.container_id)
                    .host_id(m.host_id)
                    .size(m.length)
                    .build()
                    .map_err(build("user namespace maps"))
            })
            .collect::<Result<Vec<_>>>()
    };
    Ok((conv(&opts.uids)?, conv(&opts.gids)?))
}

/// The pod's hostname; the host's for a host-network pod that sets none.
fn pod_hostname(input: &SpecInput) -> String {
    if input.sandbox.hostname.is_empty() && input.namespaces.net.is_none() {
        return std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
    }
    input.sandbox.hostname.clone()
}

/// The spec's annotations: the request's plus containerd's.
fn annotations(input: &SpecInput) -> HashMap<String, String> {
    let mut a = input.config.annotations.clone();
    let meta = input.sandbox.metadata.clone().unwrap_or_default();
    let name = input.config.metadata.clone().unwrap_or_default().name;
    let image = input.config.image.clone().unwrap_or_default().image;
    for (k, v) in [
        (ANN_CONTAINER_TYPE, "container".to_string()),
        (ANN_SANDBOX_ID, input.sandbox_id.to_string()),
        (ANN_SANDBOX_NAME, meta.name),
        (ANN_SANDBOX_NAMESPACE, meta.namespace),
        (ANN_SANDBOX_UID, meta.uid),
        (ANN_CONTAINER_NAME, name),
        (ANN_IMAGE_NAME, image),
    ] {
        a.insert(k.to_string(), v);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::ALL_CAPABILITIES;
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use serde_json::Value;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        rootfs: PathBuf,
        pod: PathBuf,
        profiles: PathBuf,
        shm: Option<PathBuf>,
        ns: PodNamespaces,
        sandbox: cri::PodSandboxConfig,
        image: ImageConfig,
        config: cri::ContainerConfig,
        driver: CgroupDriver,
        host: HostFacts,
        prepared: std::collections::BTreeMap<usize, PathBuf>,
        cdi: cdi::CdiEdits,
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nwheel:x:10:app,other\n";

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().to_path_buf();
            let rootfs = root.join("rootfs");
            std::fs::create_dir_all(rootfs.join("etc")).unwrap();
            std::fs::write(rootfs.join("etc/passwd"), PASSWD).unwrap();
            std::fs::write(rootfs.join("etc/group"), GROUP).unwrap();
            let pod = root.join("pod");
            std::fs::create_dir_all(&pod).unwrap();
            for f in ["hostname", "hosts", "resolv.conf"] {
                std::fs::write(pod.join(f), "x\n").unwrap();
            }
            let profiles = root.join("seccomp");
            std::fs::create_dir_all(&profiles).unwrap();
            Fixture {
                _dir: dir,
                root,
                rootfs,
                pod,
                profiles,
                shm: None,
                ns: PodNamespaces {
                    net: Some("/run/crius/pods/p/net".into()),
                    ipc: Some("/run/crius/pods/p/ipc".into()),
                    uts: Some("/run/crius/pods/p/uts".into()),
                    ..Default::default()
                },
                sandbox: cri::PodSandboxConfig {
                    metadata: Some(cri::PodSandboxMetadata {
                        name: "web".into(),
                        uid: "uid-1".into(),
                        namespace: "default".into(),
                        attempt: 0,
                    }),
                    hostname: "web-0".into(),
                    linux: Some(cri::LinuxPodSandboxConfig {
                        cgroup_parent: "/kubepods/besteffort/pod123".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                image: ImageConfig {
                    entrypoint: vec!["/ep".into()],
                    cmd: vec!["c1".into(), "c2".into()],
                    env: vec!["PATH=/img/bin".into(), "A=1".into(), "B=2".into()],
                    stop_signal: "SIGQUIT".into(),
                    ..Default::default()
                },
                config: cri::ContainerConfig {
                    metadata: Some(cri::ContainerMetadata {
                        name: "ctr".into(),
                        attempt: 0,
                    }),
                    image: Some(cri::ImageSpec {
                        image: "busybox:latest".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                driver: CgroupDriver::Cgroupfs,
                prepared: Default::default(),
                cdi: Default::default(),
                host: HostFacts {
                    oom_score_adj_floor: i64::MIN,
                    cap_bounding_set: u64::MAX,
                    swap_accounting: true,
                    online_cpus: IdSet::parse("0-3").unwrap(),
                    online_mems: IdSet::parse("0").unwrap(),
                },
            }
        }

        fn sc(&mut self) -> &mut cri::LinuxContainerSecurityContext {
            self.config
                .linux
                .get_or_insert_with(Default::default)
                .security_context
                .get_or_insert_with(Default::default)
        }

        fn res(&mut self) -> &mut cri::LinuxContainerResources {
            self.config
                .linux
                .get_or_insert_with(Default::default)
                .resources
                .get_or_insert_with(Default::default)
        }

        fn privileged_sandbox(&mut self) {
            self.sandbox
                .linux
                .get_or_insert_with(Default::default)
                .security_context
                .get_or_insert_with(Default::default)
                .privileged = true;
        }

        fn generate(&self) -> std::result::Result<Generated, SpecError> {
            generate(&SpecInput {
                container_id: "c0ffee",
                sandbox_id: "5a4d",
                config: &self.config,
                sandbox: &self.sandbox,
                image: &self.image,
                rootfs: &self.rootfs,
                pod_dir: &self.pod,
                shm: self.shm.as_deref(),
                namespaces: &self.ns,
                cgroup_driver: self.driver,
                seccomp_profile_root: &self.profiles,
                host: &self.host,
                prepared_mounts: &self.prepared,
                cdi: &self.cdi,
            })
        }

        fn json(&self) -> Value {
            serde_json::to_value(self.generate().unwrap().spec).unwrap()
        }

        fn err(&self) -> String {
            self.generate().unwrap_err().to_string()
        }
    }

    fn strings(v: &Value) -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn mount<'a>(spec: &'a Value, dest: &str) -> Option<&'a Value> {
        spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == dest)
    }

    fn env_of(spec: &Value, key: &str) -> Option<String> {
        strings(&spec["process"]["env"])
            .into_iter()
            .find_map(|e| e.strip_prefix(&format!("{key}=")).map(str::to_string))
    }

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn env_is_merged_over_the_image() {
        let mut f = Fixture::new();
        f.config.envs = vec![
            cri::KeyValue {
                key: "A".into(),
                value: "override".into(),
            },
            cri::KeyValue {
                key: "C".into(),
                value: "3".into(),
            },
        ];
        let spec = f.json();
        assert_eq!(env_of(&spec, "PATH").unwrap(), "/img/bin");
        assert_eq!(env_of(&spec, "A").unwrap(), "override");
        assert_eq!(env_of(&spec, "B").unwrap(), "2");
        assert_eq!(env_of(&spec, "C").unwrap(), "3");
        assert_eq!(env_of(&spec, "HOSTNAME").unwrap(), "web-0");
        assert_eq!(env_of(&spec, "HOME").unwrap(), "/root");
        assert!(env_of(&spec, "TERM").is_none());
        let env = strings(&spec["process"]["env"]);
        assert_eq!(env.iter().filter(|e| e.starts_with("A=")).count(), 1);

        f.image.env.clear();
        f.config.tty = true;
        f.config.envs.push(cri::KeyValue {
            key: "HOME".into(),
            value: "/h".into(),
        });
        let spec = f.json();
        assert_eq!(env_of(&spec, "PATH").unwrap(), DEFAULT_PATH);
        assert_eq!(env_of(&spec, "HOME").unwrap(), "/h");
        assert_eq!(env_of(&spec, "TERM").unwrap(), "xterm");
        assert_eq!(spec["process"]["terminal"], true);

        f.config.envs.push(cri::KeyValue {
            key: "".into(),
            value: "x".into(),
        });
        assert!(f.err().starts_with("config.envs[3].key:"), "{}", f.err());
        f.config.envs[3] = cri::KeyValue {
            key: "K".into(),
            value: "a\0b".into(),
        };
        assert!(f.err().starts_with("config.envs[3].value:"), "{}", f.err());
    }

    #[test]
    fn pod_files_shm_and_defaults() {
        let mut f = Fixture::new();
        let spec = f.json();
        for (dest, file) in [
            ("/etc/hostname", "hostname"),
            ("/etc/hosts", "hosts"),
            ("/etc/resolv.conf", "resolv.conf"),
        ] {
            let m = mount(&spec, dest).unwrap();
            assert_eq!(m["type"], "bind");
            assert_eq!(m["source"], f.pod.join(file).to_str().unwrap());
            assert_eq!(strings(&m["options"]), v(&["rbind", "rprivate", "rw"]));
        }
        for d in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
        ] {
            assert!(mount(&spec, d).is_some(), "{d}");
        }
        let shm = mount(&spec, "/dev/shm").unwrap();
        assert_eq!(shm["type"], "tmpfs");
        assert!(strings(&shm["options"]).contains(&"size=65536k".to_string()));
        assert!(strings(&mount(&spec, "/sys").unwrap()["options"]).contains(&"ro".to_string()));
        assert!(
            strings(&mount(&spec, "/sys/fs/cgroup").unwrap()["options"])
                .contains(&"ro".to_string())
        );

        // The pod's /dev/shm; read-only rootfs makes the pod files read-only.
        f.shm = Some(f.root.join("shm"));
        f.sc().readonly_rootfs = true;
        std::fs::remove_file(f.pod.join("hostname")).unwrap();
        let spec = f.json();
        let shm = mount(&spec, "/dev/shm").unwrap();
        assert_eq!(shm["type"], "bind");
        assert_eq!(shm["source"], f.root.join("shm").to_str().unwrap());
        assert_eq!(
            spec["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["destination"] == "/dev/shm")
                .count(),
            1
        );
        assert!(strings(&mount(&spec, "/etc/hosts").unwrap()["options"]).contains(&"ro".into()));
        assert!(
            mount(&spec, "/etc/hostname").is_none(),
            "absent file mounted"
        );
        assert_eq!(spec["root"]["readonly"], true);
    }

    #[test]
    fn cri_mounts() {
        let mut f = Fixture::new();
        let data = f.root.join("data");
        let hosts = f.root.join("myhosts");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(&hosts, "1.2.3.4 x\n").unwrap();
        f.config.mounts = vec![
            cri::Mount {
                container_path: "/data/".into(),
                host_path: data.to_str().unwrap().into(),
                readonly: true,
                ..Default::default()
            },
            cri::Mount {
                container_path: "/etc/hosts".into(),
                host_path: hosts.to_str().unwrap().into(),
                propagation: cri::MountPropagation::PropagationHostToContainer as i32,
                ..Default::default()
            },
            cri::Mount {
                container_path: "/a/b/c".into(),
                host_path: data.to_str().unwrap().into(),
                propagation: cri::MountPropagation::PropagationBidirectional as i32,
                ..Default::default()
            },
        ];
        let spec = f.json();
        let d = mount(&spec, "/data").unwrap();
        assert_eq!(strings(&d["options"]), v(&["rbind", "rprivate", "ro"]));
        let h = mount(&spec, "/etc/hosts").unwrap();
        assert_eq!(h["source"], hosts.to_str().unwrap());
        assert_eq!(strings(&h["options"]), v(&["rbind", "rslave", "rw"]));
        let c = mount(&spec, "/a/b/c").unwrap();
        assert_eq!(strings(&c["options"]), v(&["rbind", "rshared", "rw"]));
        assert_eq!(spec["linux"]["rootfsPropagation"], "rshared");
        // Only one /etc/hosts: the request's.
        let dests: Vec<String> = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(dests.iter().filter(|d| *d == "/etc/hosts").count(), 1);
        // Shallow before deep after the defaults.
        let pos = |p: &str| dests.iter().position(|d| d == p).unwrap();
        assert!(pos("/data") < pos("/etc/hosts") && pos("/etc/hosts") < pos("/a/b/c"));

        f.config.mounts[2].propagation = cri::MountPropagation::PropagationPrivate as i32;
        assert_eq!(f.json()["linux"]["rootfsPropagation"], "rslave");

        f.config.mounts[1].host_path = f.root.join("missing").to_str().unwrap().into();
        assert!(
            f.err().starts_with("config.mounts[1].host_path:"),
            "{}",
            f.err()
        );
        f.config.mounts[1].host_path = hosts.to_str().unwrap().into();
        f.config.mounts[0].container_path = "rel".into();
        assert!(f.err().starts_with("config.mounts[0].container_path:"));
        f.config.mounts[0].container_path = "/data".into();
        f.config.mounts[0].recursive_read_only = true;
        assert!(strings(&mount(&f.json(), "/data").unwrap()["options"]).contains(&"rro".into()));
        f.config.mounts[0].readonly = false;
        assert!(
            f.err().starts_with("config.mounts[0].readonly:"),
            "{}",
            f.err()
        );
    }

    #[test]
    fn a_dev_mount_replaces_the_default_dev_mounts() {
        let mut f = Fixture::new();
        f.config.mounts = vec![cri::Mount {
            container_path: "/dev".into(),
            host_path: "/dev".into(),
            ..Default::default()
        }];
        let spec = f.json();
        assert!(mount(&spec, "/dev/pts").is_none());
        assert!(mount(&spec, "/dev/mqueue").is_none());
        assert_eq!(mount(&spec, "/dev").unwrap()["type"], "bind");
    }

    fn caps(spec: &Value) -> BTreeSet<String> {
        strings(&spec["process"]["capabilities"]["bounding"])
            .into_iter()
            .collect()
    }

    #[test]
    fn capabilities_add_drop_all() {
        let mut f = Fixture::new();
        let defaults: BTreeSet<String> =
            DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
        let spec = f.json();
        assert_eq!(caps(&spec), defaults);
        assert_eq!(
            strings(&spec["process"]["capabilities"]["effective"]).len(),
            defaults.len()
        );
        assert!(spec["process"]["capabilities"]["inheritable"].is_null());
        f.sc().capabilities = Some(cri::Capability {
            add_capabilities: v(&["NET_ADMIN", "cap_sys_time"]),
            drop_capabilities: v(&["CAP_CHOWN", "kill"]),
            ..Default::default()
        });
        let c = caps(&f.json());
        assert!(c.contains("CAP_NET_ADMIN") && c.contains("CAP_SYS_TIME"));
        assert!(!c.contains("CAP_CHOWN") && !c.contains("CAP_KILL"));
        assert!(c.contains("CAP_SETUID"));
        f.sc().capabilities = Some(cri::Capability {
            add_capabilities: v(&["ALL"]),
            drop_capabilities: v(&["SYS_ADMIN"]),
            ..Default::default()
        });
        let c = caps(&f.json());
        assert_eq!(c.len(), ALL_CAPABILITIES.len() - 1);
        assert!(!c.contains("CAP_SYS_ADMIN"));
        f.sc().capabilities = Some(cri::Capability {
            add_capabilities: v(&["NET_BIND_SERVICE"]),
            drop_capabilities: v(&["all"]),
            add_ambient_capabilities: v(&["NET_RAW"]),
        });
        let spec = f.json();
        assert_eq!(
            caps(&spec),
            ["CAP_NET_BIND_SERVICE", "CAP_NET_RAW"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        );
        assert_eq!(
            strings(&spec["process"]["capabilities"]["ambient"]),
            v(&["CAP_NET_RAW"])
        );
        f.sc().capabilities = Some(cri::Capability {
            drop_capabilities: v(&["CHOWN", "NOT_A_CAP"]),
            ..Default::default()
        });
        assert!(
            f.err()
                .starts_with("config.linux.security_context.capabilities.drop_capabilities[1]:"),
            "{}",
            f.err()
        );
    }

    #[test]
    fn privileged_lifts_masks_seccomp_and_device_rules() {
        let mut f = Fixture::new();
        let spec = f.json();
        assert_eq!(
            strings(&spec["linux"]["maskedPaths"]),
            v(DEFAULT_MASKED_PATHS)
        );
        assert_eq!(
            strings(&spec["linux"]["readonlyPaths"]),
            v(DEFAULT_READONLY_PATHS)
        );
        assert_eq!(spec["linux"]["resources"]["devices"][0]["allow"], false);
        f.sc().privileged = true;
        f.sc().seccomp = Some(cri::SecurityProfile::default()); // RuntimeDefault
        assert!(
            f.err()
                .starts_with("config.linux.security_context.privileged:")
        );
        f.privileged_sandbox();
        let spec = f.json();
        assert!(spec["linux"]["maskedPaths"].is_null());
        assert!(spec["linux"]["readonlyPaths"].is_null());
        assert!(spec["linux"]["seccomp"].is_null());
        assert_eq!(caps(&spec).len(), ALL_CAPABILITIES.len());
        let rules = spec["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0]["allow"], true);
        assert!(!strings(&mount(&spec, "/sys").unwrap()["options"]).contains(&"ro".into()));
        assert!(
            !strings(&mount(&spec, "/sys/fs/cgroup").unwrap()["options"]).contains(&"ro".into())
        );
        let devs = spec["linux"]["devices"].as_array().unwrap();
        assert!(
            devs.iter().any(|d| d["path"] == "/dev/null"),
            "host devices"
        );
        assert!(
            !devs
                .iter()
                .any(|d| d["path"].as_str().unwrap().starts_with("/dev/pts/"))
        );
        let ns = spec["linux"]["namespaces"].to_string();
        assert!(!ns.contains("cgroup"));
    }

    #[test]
    fn custom_masked_and_readonly_paths() {
        let mut f = Fixture::new();
        f.sc().masked_paths = v(&["/proc/x"]);
        f.sc().readonly_paths = v(&["/proc/y"]);
        let spec = f.json();
        assert_eq!(strings(&spec["linux"]["maskedPaths"]), v(&["/proc/x"]));
        assert_eq!(strings(&spec["linux"]["readonlyPaths"]), v(&["/proc/y"]));
        f.sc().no_new_privs = true;
        assert_eq!(f.json()["process"]["noNewPrivileges"], true);
    }

    fn refused(spec: &Value) -> Vec<String> {
        strings(&spec["linux"]["seccomp"]["syscalls"][0]["names"])
    }

    #[test]
    #[allow(deprecated)]
    fn seccomp_profiles() {
        let mut f = Fixture::new();
        assert!(
            f.json()["linux"]["seccomp"].is_null(),
            "no profile: unconfined"
        );
        f.sc().seccomp = Some(cri::SecurityProfile::default());
        let spec = f.json();
        assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        assert!(refused(&spec).contains(&"mount".to_string()));
        assert!(refused(&spec).contains(&"ptrace".to_string()));
        f.sc().capabilities = Some(cri::Capability {
            add_capabilities: v(&["SYS_ADMIN"]),
            ..Default::default()
        });
        let spec = f.json();
        assert!(!refused(&spec).contains(&"mount".to_string()));
        assert!(refused(&spec).contains(&"ptrace".to_string()));

        f.sc().seccomp = Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Unconfined as i32,
            ..Default::default()
        });
        assert!(f.json()["linux"]["seccomp"].is_null());

        std::fs::write(
            f.profiles.join("mine.json"),
            r#"{"defaultAction":"SCMP_ACT_LOG","syscalls":[]}"#,
        )
        .unwrap();
        f.sc().seccomp = Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Localhost as i32,
            localhost_ref: "mine.json".into(),
        });
        assert_eq!(
            f.json()["linux"]["seccomp"]["defaultAction"],
            "SCMP_ACT_LOG"
        );
        f.sc().seccomp.as_mut().unwrap().localhost_ref = "nope.json".into();
        assert!(
            f.err()
                .starts_with("config.linux.security_context.seccomp.localhost_ref:"),
            "{}",
            f.err()
        );

        // The deprecated string field.
        f.sc().seccomp = None;
        f.sc().seccomp_profile_path = "runtime/default".into();
        assert_eq!(
            f.json()["linux"]["seccomp"]["defaultAction"],
            "SCMP_ACT_ALLOW"
        );
        f.sc().seccomp_profile_path =
            format!("localhost/{}", f.profiles.join("mine.json").display());
        assert_eq!(
            f.json()["linux"]["seccomp"]["defaultAction"],
            "SCMP_ACT_LOG"
        );
        f.sc().seccomp_profile_path = "unconfined".into();
        assert!(f.json()["linux"]["seccomp"].is_null());
        f.sc().seccomp_profile_path = "weird".into();
        assert!(
            f.err()
                .starts_with("config.linux.security_context.seccomp_profile_path:")
        );
    }

    #[test]
    fn sysctls_annotations_and_stop_signal() {
        let mut f = Fixture::new();
        f.sandbox
            .linux
            .as_mut()
            .unwrap()
            .sysctls
            .insert("net.ipv4.ip_forward".into(), "1".into());
        f.config.annotations.insert("mine".into(), "yes".into());
        let g = f.generate().unwrap();
        assert_eq!(g.stop_signal, "SIGQUIT");
        let spec = serde_json::to_value(g.spec).unwrap();
        assert_eq!(spec["linux"]["sysctl"]["net.ipv4.ip_forward"], "1");
        let a = &spec["annotations"];
        assert_eq!(a["mine"], "yes");
        assert_eq!(a[ANN_CONTAINER_TYPE], "container");
        assert_eq!(a[ANN_SANDBOX_ID], "5a4d");
        assert_eq!(a[ANN_SANDBOX_NAME], "web");
        assert_eq!(a[ANN_SANDBOX_NAMESPACE], "default");
        assert_eq!(a[ANN_SANDBOX_UID], "uid-1");
        assert_eq!(a[ANN_CONTAINER_NAME], "ctr");
        assert_eq!(a[ANN_IMAGE_NAME], "busybox:latest");
    }

    #[test]
    fn cdi_edits_apply_last_also_to_privileged_containers() {
        let mut f = Fixture::new();
        f.config.envs.push(cri::KeyValue {
            key: "GPU".into(),
            value: b"request".to_vec(),
        });
        f.cdi = cdi::CdiEdits {
            devices: vec!["v.com/gpu=0".into()],
            edits: vec![cdi::ContainerEdits {
                env: vec!["GPU=cdi".into()],
                device_nodes: vec![cdi::DeviceNode {
                    path: "/dev/gpu0".into(),
                    typ: "c".into(),
                    major: 195,
                    minor: 0,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let spec = f.json();
        assert_eq!(env_of(&spec, "GPU").as_deref(), Some("cdi"));
        let rules = spec["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(rules[0]["allow"], false, "deny all first");
        assert_eq!(rules.last().unwrap()["major"], 195);
        f.privileged_sandbox();
        f.sc().privileged = true;
        let spec = f.json();
        let devices = spec["linux"]["devices"].as_array().unwrap();
        assert!(devices.iter().any(|d| d["path"] == "/dev/gpu0"));
        assert_eq!(spec["linux"]["resources"]["devices"][0]["allow"], true);
    }

    #[test]
    fn spec_json_has_what_runc_needs() {
        let f = Fixture::new();
        let g = f.generate().unwrap();
        assert_eq!((g.uid, g.gid), (0, 0));
        let text = serde_json::to_string(&g.spec).unwrap();
        let spec: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(spec["ociVersion"], "1.1.0");
        assert_eq!(spec["root"]["path"], f.rootfs.to_str().unwrap());
        assert_eq!(spec["root"]["readonly"], false);
        assert!(spec["process"]["args"].is_array());
        assert!(spec["process"]["env"].is_array());
        assert_eq!(spec["process"]["cwd"], "/");
        assert_eq!(spec["process"]["user"]["uid"], 0);
        assert!(spec["process"]["capabilities"]["bounding"].is_array());
        assert!(spec["mounts"].as_array().unwrap().len() >= 7);
        assert!(spec["linux"]["namespaces"].is_array());
        assert!(spec["linux"]["cgroupsPath"].is_string());
        assert!(spec["linux"]["resources"]["devices"].is_array());
        // It round-trips through the typed spec.
        let back: oci_spec::runtime::Spec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, g.spec);
    }

    #[test]
    fn host_network_pod_without_hostname_gets_the_hosts() {
        let mut f = Fixture::new();
        f.sandbox.hostname.clear();
        f.ns.net = None;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(env_of(&f.json(), "HOSTNAME").unwrap(), host.trim());
    }

    #[test]
    fn privileged_container_in_unprivileged_pod_is_unsupported() {
        let mut f = Fixture::new();
        f.sc().privileged = true;
        let e = f.generate().unwrap_err();
        assert!(matches!(e, SpecError::Unsupported { .. }), "{e:?}");
        assert_eq!(e.field(), Some("config.linux.security_context.privileged"));
    }

    #[test]
    fn cgroups_path_oom_score_adj_and_typed_resources() {
        let mut f = Fixture::new();
        let spec = f.json();
        assert_eq!(
            spec["linux"]["cgroupsPath"],
            "/kubepods/besteffort/pod123/crius-c0ffee"
        );
        assert_eq!(spec["process"]["oomScoreAdj"], 0);
        assert!(spec["hostname"].is_null());
        assert!(spec["process"]["rlimits"].is_null(), "no rlimits");
        f.driver = CgroupDriver::Systemd;
        f.sandbox.linux.as_mut().unwrap().cgroup_parent = "kubepods-pod1.slice".into();
        assert_eq!(
            f.json()["linux"]["cgroupsPath"],
            "kubepods-pod1.slice:crius:c0ffee"
        );
        f.res().oom_score_adj = -997;
        f.host.oom_score_adj_floor = -500;
        assert_eq!(f.json()["process"]["oomScoreAdj"], -500);
        f.res().cpu_shares = 512;
        f.res().memory_limit_in_bytes = 64 << 20;
        let g = f.generate().unwrap();
        let res = g
            .spec
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap();
        assert_eq!(res.cpu().as_ref().unwrap().shares(), Some(512));
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some(64 << 20));
        // The same checks as UpdateContainerResources.
        f.res().memory_limit_in_bytes = 1;
        assert!(
            f.err()
                .starts_with("config.linux.resources.memory_limit_in_bytes:"),
            "{}",
            f.err()
        );
        f.res().memory_limit_in_bytes = 0;
        f.res().cpuset_cpus = "4".into();
        assert!(
            f.err().starts_with("config.linux.resources.cpuset_cpus:"),
            "{}",
            f.err()
        );
    }
}

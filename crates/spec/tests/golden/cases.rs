//! Golden cases: representative inputs of the spec generator, described with CRI types
//! and plain values only, so that the same cases drive the golden test of crius-spec
//! and (while it existed) the harness that recorded the fixtures from the generator
//! crius-spec replaced.
//!
//! Every case runs against a directory laid out by [`layout`]; paths under it are
//! written as `<root>` in the fixtures (see [`normalise`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crius_cri_api::v1 as cri;
use serde_json::Value;

/// What the generator takes from the image.
#[derive(Clone, Default)]
pub struct Image {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stop_signal: String,
}

/// The pod's namespaces a container joins.
#[derive(Clone, Default)]
pub struct Ns {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub pid: Option<PathBuf>,
    pub target_pid: Option<PathBuf>,
    pub user: Option<PathBuf>,
}

/// One input of the generator.
#[derive(Clone)]
pub struct Case {
    pub name: &'static str,
    pub config: cri::ContainerConfig,
    pub sandbox: cri::PodSandboxConfig,
    pub image: Image,
    pub ns: Ns,
    pub rootfs: PathBuf,
    pub pod_dir: PathBuf,
    pub profiles: PathBuf,
    pub shm: Option<PathBuf>,
    pub systemd: bool,
    pub floor: i64,
    pub bounding: u64,
    /// The seccomp architectures come from the case's profile file, not the host.
    pub keep_arch: bool,
}

pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    # a comment\n\
    app:x:1000:1000:App:/home/app:/bin/sh\n\
    nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
pub const GROUP: &str = "root:x:0:\napp:x:1000:\nwheel:x:10:app,other\nvideo:x:44:app\n\
    audio:x:29:other\nnogroup:x:65534:\n";

const OCI_PROFILE: &str = r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,
    "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_AARCH64"],
    "flags":["SECCOMP_FILTER_FLAG_LOG"],
    "archMap":[{"architecture":"SCMP_ARCH_X86_64"}],
    "syscalls":[
        {"names":["read","write"],"action":"SCMP_ACT_ALLOW"},
        {"names":["clone"],"action":"SCMP_ACT_ERRNO","errnoRet":38,
         "args":[{"index":0,"value":2080505856,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
        {"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[]}
    ]}"#;

const DOCKER_PROFILE: &str = r#"{"defaultAction":"SCMP_ACT_ERRNO",
    "archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86","SCMP_ARCH_X32"]},
               {"architecture":"SCMP_ARCH_AARCH64","subArchitectures":["SCMP_ARCH_ARM"]}],
    "syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","comment":"x"},
                {"name":"mount","action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}},
                {"name":"umount2","names":["umount2","umount"],"action":"SCMP_ACT_ALLOW"},
                {"names":["write"],"action":"SCMP_ACT_ALLOW","excludes":{"caps":["CAP_SYS_ADMIN"]}},
                {"names":["ptrace"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["amd64","arm64"]}},
                {"names":["vm86"],"action":"SCMP_ACT_ALLOW","excludes":{"arches":["x86_64","aarch64"]}}]}"#;

/// Creates the rootfs, pod directories, seccomp profiles and bind sources the cases use.
pub fn layout(root: &Path) {
    let rootfs = root.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/passwd"), PASSWD).unwrap();
    std::fs::write(rootfs.join("etc/group"), GROUP).unwrap();
    for (dir, files) in [
        ("pod", &["hostname", "hosts", "resolv.conf"][..]),
        ("pod-no-hostname", &["hosts", "resolv.conf"][..]),
    ] {
        let pod = root.join(dir);
        std::fs::create_dir_all(&pod).unwrap();
        for f in files {
            std::fs::write(pod.join(f), "x\n").unwrap();
        }
    }
    let profiles = root.join("seccomp");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(
        profiles.join("mine.json"),
        r#"{"defaultAction":"SCMP_ACT_LOG","syscalls":[]}"#,
    )
    .unwrap();
    std::fs::write(profiles.join("oci.json"), OCI_PROFILE).unwrap();
    std::fs::write(profiles.join("docker.json"), DOCKER_PROFILE).unwrap();
    std::fs::write(profiles.join("bad.json"), "{").unwrap();
    std::fs::write(profiles.join("invalid.json"), r#"{"syscalls":[]}"#).unwrap();
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::write(root.join("myhosts"), "1.2.3.4 x\n").unwrap();
    std::fs::create_dir_all(root.join("shm")).unwrap();
}

fn v(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn base(root: &Path, name: &'static str) -> Case {
    Case {
        name,
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
        image: Image {
            entrypoint: v(&["/ep"]),
            cmd: v(&["c1", "c2"]),
            env: v(&["PATH=/img/bin", "A=1", "B=2"]),
            stop_signal: "SIGQUIT".into(),
            ..Default::default()
        },
        ns: Ns {
            net: Some("/run/crius/pods/p/net".into()),
            ipc: Some("/run/crius/pods/p/ipc".into()),
            uts: Some("/run/crius/pods/p/uts".into()),
            ..Default::default()
        },
        rootfs: root.join("rootfs"),
        pod_dir: root.join("pod"),
        profiles: root.join("seccomp"),
        shm: None,
        systemd: false,
        floor: i64::MIN,
        bounding: u64::MAX,
        keep_arch: false,
    }
}

impl Case {
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

    fn sandbox_linux(&mut self) -> &mut cri::LinuxPodSandboxConfig {
        self.sandbox.linux.get_or_insert_with(Default::default)
    }

    fn privileged_pod(&mut self) {
        self.sandbox_linux()
            .security_context
            .get_or_insert_with(Default::default)
            .privileged = true;
    }

    fn caps(&mut self, add: &[&str], drop: &[&str], ambient: &[&str]) {
        self.sc().capabilities = Some(cri::Capability {
            add_capabilities: v(add),
            drop_capabilities: v(drop),
            add_ambient_capabilities: v(ambient),
        });
    }

    fn seccomp(&mut self, typ: cri::security_profile::ProfileType, reference: &str) {
        self.sc().seccomp = Some(cri::SecurityProfile {
            profile_type: typ as i32,
            localhost_ref: reference.into(),
        });
    }

    fn pid(&mut self, mode: cri::NamespaceMode) {
        self.sc()
            .namespace_options
            .get_or_insert_with(Default::default)
            .pid = mode as i32;
    }

    fn mount(&mut self, container: &str, host: &Path, ro: bool, prop: cri::MountPropagation) {
        self.config.mounts.push(cri::Mount {
            container_path: container.into(),
            host_path: host.to_str().unwrap().into(),
            readonly: ro,
            propagation: prop as i32,
            ..Default::default()
        });
    }

    fn device(&mut self, container: &str, host: &str, perms: &str) {
        self.config.devices.push(cri::Device {
            container_path: container.into(),
            host_path: host.into(),
            permissions: perms.into(),
        });
    }
}

fn kv(key: &str, value: &str) -> cri::KeyValue {
    cri::KeyValue {
        key: key.into(),
        value: value.into(),
    }
}

fn full_resources() -> cri::LinuxContainerResources {
    cri::LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 64 << 20,
        oom_score_adj: 3,
        cpuset_cpus: "0-1".into(),
        cpuset_mems: "0".into(),
        hugepage_limits: vec![
            cri::HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            },
            cri::HugepageLimit {
                page_size: "1GB".into(),
                limit: 0,
            },
        ],
        unified: [
            ("memory.high".to_string(), "1000000".to_string()),
            ("pids.max".to_string(), "100".to_string()),
        ]
        .into(),
        ..Default::default()
    }
}

/// The cases whose generated spec is compared with a fixture.
#[allow(deprecated)] // seccomp_profile_path
pub fn cases(root: &Path) -> Vec<Case> {
    use cri::MountPropagation::*;
    use cri::security_profile::ProfileType;
    let mut out = vec![base(root, "default")];
    let mut add = |name: &'static str, f: &dyn Fn(&mut Case)| {
        let mut c = base(root, name);
        f(&mut c);
        out.push(c);
    };
    add("command_and_args", &|c| {
        c.config.command = v(&["/cmd"]);
        c.config.args = v(&["a1", "a2"]);
    });
    add("args_replace_cmd", &|c| c.config.args = v(&["a1"]));
    add("command_drops_cmd", &|c| c.config.command = v(&["/cmd"]));
    add("image_cmd_only", &|c| c.image.entrypoint.clear());
    add("env_merge_tty", &|c| {
        c.config.tty = true;
        c.config.envs = vec![kv("A", "override"), kv("C", "3"), kv("HOME", "/h")];
    });
    add("env_default_path_term_kept", &|c| {
        c.image.env = v(&["TERM=vt100", "=ignored", "NOVALUE"]);
        c.config.tty = true;
    });
    add("working_dir_image_relative", &|c| {
        c.image.working_dir = "srv".into()
    });
    add("working_dir_request", &|c| {
        c.image.working_dir = "/srv".into();
        c.config.working_dir = "/work".into();
    });
    add("user_run_as_user", &|c| {
        c.sc().run_as_user = Some(cri::Int64Value { value: 1000 })
    });
    add("user_run_as_user_and_group", &|c| {
        c.sc().run_as_user = Some(cri::Int64Value { value: 1000 });
        c.sc().run_as_group = Some(cri::Int64Value { value: 44 });
    });
    add("user_unknown_uid", &|c| {
        c.sc().run_as_user = Some(cri::Int64Value { value: 4321 })
    });
    add("user_run_as_username", &|c| {
        c.sc().run_as_username = "app".into();
        c.sc().run_as_group = Some(cri::Int64Value { value: 29 });
    });
    add("user_image_names", &|c| c.image.user = "app:video".into());
    add("user_image_numeric", &|c| c.image.user = "5000:6000".into());
    add("user_image_name_numeric_group", &|c| {
        c.image.user = "nobody:29".into()
    });
    add("user_security_context_wins", &|c| {
        c.image.user = "app".into();
        c.sc().run_as_user = Some(cri::Int64Value { value: 0 });
    });
    add("supplemental_groups_merge", &|c| {
        c.image.user = "app".into();
        c.sc().supplemental_groups = vec![5000, 10];
    });
    add("supplemental_groups_strict", &|c| {
        c.image.user = "app".into();
        c.sc().supplemental_groups = vec![5000, 10];
        c.sc().supplemental_groups_policy = cri::SupplementalGroupsPolicy::Strict as i32;
    });
    add("readonly_rootfs_pod_shm", &|c| {
        c.shm = Some(c.rootfs.parent().unwrap().join("shm"));
        c.pod_dir = c.rootfs.parent().unwrap().join("pod-no-hostname");
        c.sc().readonly_rootfs = true;
    });
    add("mounts_each_propagation", &|c| {
        let root = c.rootfs.parent().unwrap().to_path_buf();
        c.mount("/data/", &root.join("data"), true, PropagationPrivate);
        c.mount(
            "/etc/hosts",
            &root.join("myhosts"),
            false,
            PropagationHostToContainer,
        );
        c.mount(
            "/a/b/c",
            &root.join("data"),
            false,
            PropagationBidirectional,
        );
        c.mount("/x/./y/../z", &root.join("data"), false, PropagationPrivate);
        c.mount("/rro", &root.join("data"), true, PropagationPrivate);
        c.config.mounts[4].recursive_read_only = true;
    });
    add("mounts_host_to_container_only", &|c| {
        let root = c.rootfs.parent().unwrap().to_path_buf();
        c.mount(
            "/data",
            &root.join("data"),
            false,
            PropagationHostToContainer,
        );
        c.mount("/data2", &root.join("data"), false, PropagationPrivate);
    });
    add("mounts_shm_and_resolv_from_request", &|c| {
        let root = c.rootfs.parent().unwrap().to_path_buf();
        c.shm = Some(root.join("shm"));
        c.mount("/dev/shm", &root.join("data"), false, PropagationPrivate);
        c.mount(
            "/etc/resolv.conf",
            &root.join("myhosts"),
            true,
            PropagationPrivate,
        );
    });
    add("mounts_dev_replaces_defaults", &|c| {
        c.mount("/dev", Path::new("/dev"), false, PropagationPrivate);
    });
    add("devices", &|c| {
        c.device("/dev/mynull", "/dev/null", "rw");
        c.device("/dev/myzero", "/dev/zero", "");
        c.device("/dev/null", "/dev/null", "r");
        c.device("/dev/mynull", "/dev/zero", "m");
    });
    add("privileged", &|c| {
        c.privileged_pod();
        c.sc().privileged = true;
        c.seccomp(ProfileType::RuntimeDefault, "");
        c.device("/dev/extra-null", "/dev/null", "rw");
    });
    add("privileged_bounded", &|c| {
        c.privileged_pod();
        c.sc().privileged = true;
        c.bounding = !(1 << 24);
    });
    add("privileged_pod_unprivileged_container", &|c| {
        c.privileged_pod()
    });
    add("caps_add_drop", &|c| {
        c.caps(&["NET_ADMIN", "cap_sys_time"], &["CAP_CHOWN", "kill"], &[])
    });
    add("caps_all_drop_one", &|c| {
        c.caps(&["ALL"], &["SYS_ADMIN"], &[])
    });
    add("caps_drop_all_add_ambient", &|c| {
        c.caps(&["NET_BIND_SERVICE"], &["all"], &["NET_RAW"])
    });
    add("caps_all_within_bounding", &|c| {
        c.bounding = !(1 << 24);
        c.caps(&[" all "], &[], &[]);
    });
    add("seccomp_runtime_default", &|c| {
        c.seccomp(ProfileType::RuntimeDefault, "")
    });
    add("seccomp_runtime_default_admin", &|c| {
        c.seccomp(ProfileType::RuntimeDefault, "");
        c.caps(&["SYS_ADMIN", "SYS_PTRACE", "BPF"], &[], &[]);
    });
    add("seccomp_runtime_default_no_caps", &|c| {
        c.seccomp(ProfileType::RuntimeDefault, "");
        c.caps(&[], &["ALL"], &[]);
    });
    add("seccomp_localhost_relative", &|c| {
        c.seccomp(ProfileType::Localhost, "mine.json")
    });
    add("seccomp_localhost_oci", &|c| {
        let p = c.profiles.join("oci.json");
        c.seccomp(ProfileType::Localhost, p.to_str().unwrap());
        c.keep_arch = true;
    });
    add("seccomp_localhost_docker", &|c| {
        c.seccomp(ProfileType::Localhost, "docker.json")
    });
    add("seccomp_localhost_docker_admin", &|c| {
        c.seccomp(ProfileType::Localhost, "localhost/docker.json");
        c.caps(&["SYS_ADMIN"], &[], &[]);
    });
    add("seccomp_unconfined", &|c| {
        c.seccomp(ProfileType::Unconfined, "")
    });
    add("seccomp_path_runtime_default", &|c| {
        c.sc().seccomp_profile_path = "runtime/default".into()
    });
    add("seccomp_path_docker_default", &|c| {
        c.sc().seccomp_profile_path = "docker/default".into()
    });
    add("seccomp_path_localhost", &|c| {
        let p = c.profiles.join("mine.json");
        c.sc().seccomp_profile_path = format!("localhost/{}", p.display());
    });
    add("seccomp_path_unconfined", &|c| {
        c.sc().seccomp_profile_path = "unconfined".into()
    });
    add("resources_full", &|c| *c.res() = full_resources());
    add("resources_swap_limit", &|c| {
        c.res().memory_limit_in_bytes = 64 << 20;
        c.res().memory_swap_limit_in_bytes = 128 << 20;
    });
    add("resources_unlimited", &|c| {
        c.res().memory_limit_in_bytes = 64 << 20;
        c.res().memory_swap_limit_in_bytes = -1;
        c.res().cpu_quota = -1;
    });
    add("resources_empty", &|c| *c.res() = Default::default());
    add("oom_score_adj_clamped", &|c| {
        c.res().oom_score_adj = -997;
        c.floor = -500;
    });
    add("oom_score_adj_negative", &|c| c.res().oom_score_adj = -998);
    add("cgroupfs_default_parent", &|c| {
        c.sandbox_linux().cgroup_parent.clear()
    });
    add("cgroupfs_relative_parent", &|c| {
        c.sandbox_linux().cgroup_parent = "kubepods/".into()
    });
    add("systemd_slice", &|c| {
        c.systemd = true;
        c.sandbox_linux().cgroup_parent =
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2.slice".into();
    });
    add("systemd_default_slice", &|c| {
        c.systemd = true;
        c.sandbox_linux().cgroup_parent.clear();
    });
    add("host_network_and_ipc", &|c| {
        c.ns = Ns {
            uts: Some("/x/uts".into()),
            ..Default::default()
        };
    });
    add("pid_node", &|c| c.pid(cri::NamespaceMode::Node));
    add("pid_container", &|c| c.pid(cri::NamespaceMode::Container));
    add("pid_pod", &|c| {
        c.ns.pid = Some("/proc/42/ns/pid".into());
        c.pid(cri::NamespaceMode::Pod);
    });
    add("pid_target", &|c| {
        c.ns.target_pid = Some("/proc/43/ns/pid".into());
        c.pid(cri::NamespaceMode::Target);
    });
    add("userns_node", &|c| {
        c.pid(cri::NamespaceMode::Container);
        c.sc()
            .namespace_options
            .get_or_insert_with(Default::default)
            .userns_options = Some(cri::UserNamespace {
            mode: cri::NamespaceMode::Node as i32,
            ..Default::default()
        });
    });
    add("userns_pod_joined", &|c| {
        // The pod's own user namespace: joined by path, its maps told to the runtime.
        let ns = cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: vec![cri::IdMapping {
                container_id: 0,
                host_id: 100000,
                length: 65536,
            }],
            gids: vec![cri::IdMapping {
                container_id: 0,
                host_id: 200000,
                length: 65536,
            }],
        };
        c.ns.user = Some("/run/crius/pods/p/ns/user".into());
        c.sandbox_linux()
            .security_context
            .get_or_insert_with(Default::default)
            .namespace_options
            .get_or_insert_with(Default::default)
            .userns_options = Some(ns.clone());
        c.pid(cri::NamespaceMode::Container);
        c.sc()
            .namespace_options
            .get_or_insert_with(Default::default)
            .userns_options = Some(ns);
    });
    add("sysctls_and_annotations", &|c| {
        let l = c.sandbox_linux();
        l.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
        l.sysctls
            .insert("kernel.shm_rmid_forced".into(), "1".into());
        c.config.annotations = HashMap::from([
            ("mine".to_string(), "yes".to_string()),
            (
                "io.kubernetes.cri.container-type".to_string(),
                "sandbox".to_string(),
            ),
        ]);
        c.config.image = None;
        c.sandbox.metadata = None;
    });
    add("masked_readonly_nnp", &|c| {
        c.sc().masked_paths = v(&["/proc/x"]);
        c.sc().readonly_paths = v(&["/proc/y", "/proc/z"]);
        c.sc().no_new_privs = true;
    });
    out
}

/// The cases the generator refuses; their messages are compared with a fixture.
#[allow(deprecated)] // seccomp_profile_path
pub fn error_cases(root: &Path) -> Vec<Case> {
    use cri::MountPropagation::*;
    use cri::security_profile::ProfileType;
    let mut out = Vec::new();
    let mut add = |name: &'static str, f: &dyn Fn(&mut Case)| {
        let mut c = base(root, name);
        f(&mut c);
        out.push(c);
    };
    add("no_command", &|c| {
        c.image.entrypoint.clear();
        c.image.cmd.clear();
    });
    add("env_empty_key", &|c| c.config.envs = vec![kv("", "x")]);
    add("env_key_with_equals", &|c| {
        c.config.envs = vec![kv("A", "1"), kv("B=C", "x")]
    });
    add("env_value_nul", &|c| c.config.envs = vec![kv("K", "a\0b")]);
    add("working_dir_relative", &|c| {
        c.config.working_dir = "rel".into()
    });
    add("unknown_username", &|c| {
        c.sc().run_as_username = "ghost".into()
    });
    add("group_without_user", &|c| {
        c.sc().run_as_group = Some(cri::Int64Value { value: 5 })
    });
    add("negative_uid", &|c| {
        c.sc().run_as_user = Some(cri::Int64Value { value: -1 })
    });
    add("negative_gid", &|c| {
        c.sc().run_as_user = Some(cri::Int64Value { value: 1 });
        c.sc().run_as_group = Some(cri::Int64Value { value: -1 });
    });
    add("image_user_unknown", &|c| c.image.user = "ghost".into());
    add("image_group_unknown", &|c| {
        c.image.user = "app:ghosts".into()
    });
    add("negative_supplemental_group", &|c| {
        c.sc().supplemental_groups = vec![1, -3]
    });
    add("privileged_without_privileged_pod", &|c| {
        c.sc().privileged = true
    });
    add("unknown_capability_drop", &|c| {
        c.caps(&[], &["CHOWN", "NOT_A_CAP"], &[])
    });
    add("unknown_capability_add", &|c| c.caps(&["BOGUS"], &[], &[]));
    add("unknown_ambient_capability", &|c| {
        c.caps(&[], &[], &["BOGUS"])
    });
    add("capability_outside_bounding", &|c| {
        c.bounding = !(1 << 24);
        c.caps(&["SYS_RESOURCE"], &[], &[]);
    });
    add("seccomp_localhost_missing", &|c| {
        c.seccomp(ProfileType::Localhost, "nope.json")
    });
    add("seccomp_localhost_empty", &|c| {
        c.seccomp(ProfileType::Localhost, "")
    });
    add("seccomp_localhost_not_json", &|c| {
        c.seccomp(ProfileType::Localhost, "bad.json")
    });
    add("seccomp_localhost_invalid", &|c| {
        c.seccomp(ProfileType::Localhost, "invalid.json")
    });
    add("seccomp_unknown_type", &|c| {
        c.sc().seccomp = Some(cri::SecurityProfile {
            profile_type: 7,
            ..Default::default()
        })
    });
    add("seccomp_path_unknown", &|c| {
        c.sc().seccomp_profile_path = "weird".into()
    });
    add("seccomp_path_localhost_empty", &|c| {
        c.sc().seccomp_profile_path = "localhost/".into()
    });
    add("mount_image_volume", &|c| {
        c.config.mounts.push(cri::Mount {
            container_path: "/v".into(),
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    });
    add("mount_id_mapped", &|c| {
        c.config.mounts.push(cri::Mount {
            container_path: "/v".into(),
            host_path: "/tmp".into(),
            gid_mappings: vec![cri::IdMapping {
                host_id: 1,
                container_id: 0,
                length: 1,
            }],
            ..Default::default()
        })
    });
    add("mount_relative_container_path", &|c| {
        let root = c.rootfs.parent().unwrap().to_path_buf();
        c.mount("/ok", &root.join("data"), false, PropagationPrivate);
        c.mount("rel", &root.join("data"), false, PropagationPrivate);
    });
    add("mount_empty_host_path", &|c| {
        c.mount("/x", Path::new(""), false, PropagationPrivate)
    });
    add("mount_missing_host_path", &|c| {
        let root = c.rootfs.parent().unwrap().to_path_buf();
        c.mount("/x", &root.join("missing"), false, PropagationPrivate);
    });
    add("mount_unknown_propagation", &|c| {
        let root = c.rootfs.parent().unwrap().to_path_buf();
        c.mount("/x", &root.join("data"), false, PropagationPrivate);
        c.config.mounts[0].propagation = 9;
    });
    add("mount_rro_not_readonly", &|c| {
        let root = c.rootfs.parent().unwrap().to_path_buf();
        c.mount("/x", &root.join("data"), false, PropagationPrivate);
        c.config.mounts[0].recursive_read_only = true;
    });
    add("mount_rro_not_private", &|c| {
        let root = c.rootfs.parent().unwrap().to_path_buf();
        c.mount("/x", &root.join("data"), true, PropagationHostToContainer);
        c.config.mounts[0].recursive_read_only = true;
    });
    add("device_bad_permissions", &|c| {
        c.device("/dev/n", "/dev/null", "rwx")
    });
    add("device_relative_container_path", &|c| {
        c.device("dev/n", "/dev/null", "")
    });
    add("device_missing_host_path", &|c| {
        c.device("/dev/n", "/dev/does-not-exist", "")
    });
    add("device_not_a_device", &|c| {
        let p = c.rootfs.join("etc/passwd");
        c.device("/dev/n", p.to_str().unwrap(), "");
    });
    add("negative_cpu_shares", &|c| c.res().cpu_shares = -1);
    add("negative_cpu_period", &|c| c.res().cpu_period = -5);
    add("negative_memory_limit", &|c| {
        c.res().memory_limit_in_bytes = -1
    });
    add("hugepage_empty_page_size", &|c| {
        c.res().hugepage_limits = vec![cri::HugepageLimit {
            page_size: String::new(),
            limit: 1,
        }]
    });
    add("hugepage_limit_too_large", &|c| {
        c.res().hugepage_limits = vec![cri::HugepageLimit {
            page_size: "2MB".into(),
            limit: u64::MAX,
        }]
    });
    add("oom_score_adj_out_of_range", &|c| {
        c.res().oom_score_adj = 1001
    });
    add("oom_score_adj_too_low", &|c| c.res().oom_score_adj = -1001);
    add("cgroup_parent_dotdot", &|c| {
        c.sandbox_linux().cgroup_parent = "/a/../b".into()
    });
    add("systemd_parent_not_a_slice", &|c| {
        c.systemd = true;
        c.sandbox_linux().cgroup_parent = "/kubepods/pod1".into();
    });
    add("userns_pod", &|c| {
        c.sc()
            .namespace_options
            .get_or_insert_with(Default::default)
            .userns_options = Some(cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            ..Default::default()
        });
    });
    add("pid_pod_without_namespace", &|c| {
        c.pid(cri::NamespaceMode::Pod)
    });
    add("pid_target_without_target", &|c| {
        c.pid(cri::NamespaceMode::Target)
    });
    add("pid_unknown_mode", &|c| {
        c.sc()
            .namespace_options
            .get_or_insert_with(Default::default)
            .pid = 9
    });
    out
}

/// Makes a generated spec comparable across hosts and runs: paths under `root` become
/// `<root>`; capability sets (unordered in the typed spec) are sorted; device numbers,
/// modes and owners of host devices, the host's /dev of a privileged container, and the
/// host's seccomp architectures (unless `keep_arch`) are replaced by placeholders.
pub fn normalise(spec: &mut Value, root: &Path, keep_arch: bool) {
    replace_root(spec, root.to_str().unwrap());
    if let Some(caps) = spec
        .pointer_mut("/process/capabilities")
        .and_then(Value::as_object_mut)
    {
        for set in caps.values_mut() {
            if let Some(a) = set.as_array_mut() {
                a.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
            }
        }
    }
    let privileged = spec
        .pointer("/linux/resources/devices/0/allow")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let Some(devs) = spec.pointer_mut("/linux/devices") {
        if privileged {
            *devs = Value::String("<the host's /dev>".into());
        } else if let Some(devs) = devs.as_array_mut() {
            for d in devs {
                for k in ["major", "minor", "fileMode", "uid", "gid"] {
                    if let Some(x) = d.get_mut(k) {
                        *x = Value::String("<host>".into());
                    }
                }
            }
        }
    }
    if let Some(rules) = spec
        .pointer_mut("/linux/resources/devices")
        .and_then(Value::as_array_mut)
    {
        for r in rules {
            for k in ["major", "minor"] {
                if let Some(x) = r.get_mut(k) {
                    *x = Value::String("<host>".into());
                }
            }
        }
    }
    if let Some(a) = spec
        .pointer_mut("/linux/seccomp/architectures")
        .filter(|_| !keep_arch)
    {
        *a = Value::String("<host>".into());
    }
}

/// An error message with paths under `root` written as `<root>`.
pub fn normalise_message(message: &str, root: &Path) -> String {
    message.replace(root.to_str().unwrap(), "<root>")
}

fn replace_root(v: &mut Value, root: &str) {
    match v {
        Value::String(s) if s.contains(root) => *s = s.replace(root, "<root>"),
        Value::Array(a) => a.iter_mut().for_each(|x| replace_root(x, root)),
        Value::Object(o) => o.values_mut().for_each(|x| replace_root(x, root)),
        _ => {}
    }
}

/// Inputs of UpdateContainerResources; their linux.resources are compared with a fixture.
pub fn update_cases() -> Vec<(&'static str, cri::LinuxContainerResources)> {
    vec![
        ("full", full_resources()),
        ("empty", cri::LinuxContainerResources::default()),
        (
            "memory_and_swap",
            cri::LinuxContainerResources {
                memory_limit_in_bytes: 96 << 20,
                memory_swap_limit_in_bytes: 192 << 20,
                cpu_shares: 256,
                ..Default::default()
            },
        ),
        (
            "memory_only",
            cri::LinuxContainerResources {
                memory_limit_in_bytes: 32 << 20,
                ..Default::default()
            },
        ),
    ]
}

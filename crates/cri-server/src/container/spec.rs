//! The OCI runtime spec (config.json) of a container, generated from its CRI
//! `ContainerConfig`, its pod's `PodSandboxConfig` and its image's config, with
//! containerd's semantics wherever Kubernetes leaves a choice.
//!
//! Pure logic apart from reading: the container's /etc/passwd and /etc/group (resolved
//! inside the rootfs, symlinks never leaving it), the host paths of mounts and devices
//! (stat), the pod's files (exist?), seccomp profile files, and, for privileged
//! containers, the host's /dev.
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
//!   until the pod keeps a PID namespace of its own.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use k8s_cri::v1 as cri;
use serde_json::{Map, Value, json};

use crate::config::CgroupDriver;
use crate::error::CriError;
use crius_images::ImageRunConfig;

use super::seccomp;

/// PATH when neither the image nor the request sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's default capability set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability the OCI spec (and so runc) knows.
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_AUDIT_CONTROL",
    "CAP_AUDIT_READ",
    "CAP_AUDIT_WRITE",
    "CAP_BLOCK_SUSPEND",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_KILL",
    "CAP_LEASE",
    "CAP_LINUX_IMMUTABLE",
    "CAP_MAC_ADMIN",
    "CAP_MAC_OVERRIDE",
    "CAP_MKNOD",
    "CAP_NET_ADMIN",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_RAW",
    "CAP_PERFMON",
    "CAP_SETGID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_CHROOT",
    "CAP_SYS_MODULE",
    "CAP_SYS_NICE",
    "CAP_SYS_PACCT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
];

/// The kernel's number of a capability (its bit in the capability sets).
pub fn cap_number(name: &str) -> Option<u32> {
    const ORDER: [&str; 41] = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_MKNOD",
        "CAP_LEASE",
        "CAP_AUDIT_WRITE",
        "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP",
        "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND",
        "CAP_AUDIT_READ",
        "CAP_PERFMON",
        "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE",
    ];
    ORDER
        .iter()
        .position(|c| *c == name)
        .and_then(|i| u32::try_from(i).ok())
}

/// This process's capability bounding set: what any container it starts can hold.
pub fn own_capability_bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("CapBnd:"))?.to_string();
            u64::from_str_radix(line.trim_start_matches("CapBnd:").trim(), 16).ok()
        })
        .unwrap_or(u64::MAX)
}

fn in_bounding_set(name: &str, bounding: u64) -> bool {
    cap_number(name).is_none_or(|n| n < 64 && bounding & (1u64 << n) != 0)
}

/// containerd's default masked paths.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
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
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// containerd's annotation keys.
pub const ANN_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const ANN_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
pub const ANN_SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
pub const ANN_SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
pub const ANN_SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
pub const ANN_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
pub const ANN_IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

/// Size of a private /dev/shm (and of /dev), containerd's 64 MiB.
const TMPFS_SIZE: &str = "size=65536k";
/// Largest /etc/passwd or /etc/group read from a rootfs.
const MAX_ID_FILE: u64 = 4 << 20;
/// Symlinks followed while resolving a path inside the rootfs.
const MAX_SYMLINKS: usize = 40;

const SC: &str = "config.linux.security_context";

/// The pod's namespaces a container joins; `None`: the host's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// The pod's shared PID namespace (held by its infra process), when it has one.
    pub pid: Option<PathBuf>,
    /// The PID namespace of the container named by `namespace_options.target_id`.
    pub target_pid: Option<PathBuf>,
}

/// Everything a container's spec is made from.
pub struct SpecInput<'a> {
    pub container_id: &'a str,
    pub sandbox_id: &'a str,
    pub config: &'a cri::ContainerConfig,
    pub sandbox: &'a cri::PodSandboxConfig,
    pub image: &'a ImageRunConfig,
    /// The container's mounted rootfs.
    pub rootfs: &'a Path,
    /// Holds `hostname`, `hosts` and `resolv.conf`.
    pub pod_dir: &'a Path,
    /// The pod's /dev/shm; `None`: a private 64 MiB tmpfs.
    pub shm: Option<&'a Path>,
    pub namespaces: &'a PodNamespaces,
    pub cgroup_driver: CgroupDriver,
    /// The lowest oom_score_adj the daemon may set; `i64::MIN`: anything.
    pub oom_score_adj_floor: i64,
    /// Where relative `Localhost` seccomp profiles are found.
    pub seccomp_profile_root: &'a Path,
    /// The daemon's capability bounding set (see [`own_capability_bounding_set`]):
    /// privileged and "ALL" mean every capability in it, and adding one outside it
    /// is refused (runc could not grant it).
    pub cap_bounding_set: u64,
}

/// A generated spec and what the container manager needs beside it.
#[derive(Debug, Clone)]
pub struct Generated {
    pub spec: oci_spec::runtime::Spec,
    pub uid: u32,
    pub gid: u32,
    /// The image's stop signal, or "".
    pub stop_signal: String,
}

/// Whether this process may lower oom_score_adj (holds CAP_SYS_RESOURCE).
pub fn host_can_set_negative_oom_score_adj() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| cap_eff_has(&s, 24)) // CAP_SYS_RESOURCE
        .unwrap_or(false)
}

fn cap_eff_has(status: &str, bit: u32) -> Option<bool> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    let mask = u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()?;
    Some(mask & (1u64 << bit) != 0)
}

/// This process's oom_score_adj (0 when unreadable).
pub fn own_oom_score_adj() -> i64 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Generates the OCI spec of a container. Blocking (reads files): call it from
/// `spawn_blocking`. Every refusal names the CRI field (`config.…` for the container
/// config, `sandbox_config.…` for the pod's).
pub fn generate(input: &SpecInput) -> Result<Generated, CriError> {
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
        return Err(CriError::invalid(
            format!("{SC}.privileged"),
            "a privileged container needs a privileged pod sandbox",
        ));
    }

    let args = command(config, input.image)?;
    let user = resolve_user(input.rootfs, &sc, input.image)?;
    let hostname = pod_hostname(input);
    let env = environment(config, input.image, &hostname, &user.home)?;
    let cwd = working_dir(config, input.image)?;
    let caps = capabilities(&sc, input.cap_bounding_set)?;
    let ambient = ambient_capabilities(&sc)?;
    let mut bounding = caps.clone();
    bounding.extend(ambient.iter().cloned());

    let oom = oom_score_adj(linux.resources.as_ref(), input.oom_score_adj_floor)?;
    let mut process = json!({
        "terminal": config.tty,
        "user": {
            "uid": user.uid,
            "gid": user.gid,
            "additionalGids": user.additional_gids,
        },
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {
            "bounding": bounding,
            "effective": bounding,
            "permitted": bounding,
        },
        "noNewPrivileges": sc.no_new_privs,
        "oomScoreAdj": oom,
    });
    if !ambient.is_empty() {
        process["capabilities"]["inheritable"] = json!(ambient);
        process["capabilities"]["ambient"] = json!(ambient);
    }

    let (mounts, rootfs_propagation) = mounts(input, &sc)?;
    let (devices, device_rules) = devices(config, privileged, Path::new("/dev"))?;
    let mut resources = resources(linux.resources.as_ref(), swap_accounting())?;
    resources.insert("devices".to_string(), Value::Array(device_rules));

    let mut linux_json = Map::new();
    linux_json.insert(
        "cgroupsPath".to_string(),
        json!(cgroups_path(
            input.cgroup_driver,
            &sandbox_linux.cgroup_parent,
            input.container_id
        )?),
    );
    linux_json.insert("resources".to_string(), Value::Object(resources));
    linux_json.insert(
        "namespaces".to_string(),
        Value::Array(namespaces(&sc, input.namespaces, privileged)?),
    );
    linux_json.insert("devices".to_string(), Value::Array(devices));
    if let Some(p) = rootfs_propagation {
        linux_json.insert("rootfsPropagation".to_string(), json!(p));
    }
    if !privileged {
        let masked: Vec<String> = if sc.masked_paths.is_empty() {
            DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect()
        } else {
            sc.masked_paths.clone()
        };
        let readonly: Vec<String> = if sc.readonly_paths.is_empty() {
            DEFAULT_READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            sc.readonly_paths.clone()
        };
        linux_json.insert("maskedPaths".to_string(), json!(masked));
        linux_json.insert("readonlyPaths".to_string(), json!(readonly));
    }
    if !sandbox_linux.sysctls.is_empty() {
        linux_json.insert("sysctl".to_string(), json!(sandbox_linux.sysctls));
    }
    let seccomp = seccomp_profile(&sc, privileged, &bounding, input.seccomp_profile_root)?;

    let spec = json!({
        "ociVersion": "1.1.0",
        "process": process,
        "root": {
            "path": input.rootfs,
            "readonly": sc.readonly_rootfs,
        },
        "mounts": mounts,
        "annotations": annotations(input),
        "linux": Value::Object(linux_json),
    });
    let mut spec: oci_spec::runtime::Spec =
        serde_json::from_value(spec).map_err(|e| CriError::internal("building the OCI spec", e))?;
    if let (Some(profile), Some(l)) = (seccomp, spec.linux_mut().as_mut()) {
        l.set_seccomp(Some(profile));
    }
    Ok(Generated {
        spec,
        uid: user.uid,
        gid: user.gid,
        stop_signal: input.image.stop_signal.clone(),
    })
}

/// process.args: CRI command replaces ENTRYPOINT (and drops CMD); CRI args replace CMD.
fn command(config: &cri::ContainerConfig, image: &ImageRunConfig) -> Result<Vec<String>, CriError> {
    let mut args = if !config.command.is_empty() {
        config.command.clone()
    } else {
        image.entrypoint.clone()
    };
    if !config.args.is_empty() {
        args.extend(config.args.iter().cloned());
    } else if config.command.is_empty() {
        args.extend(image.cmd.iter().cloned());
    }
    if args.is_empty() {
        return Err(CriError::invalid(
            "config.command",
            "no command: neither the request nor the image sets an entrypoint, command or args",
        ));
    }
    Ok(args)
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

fn set_env(env: &mut Vec<String>, key: &str, entry: String) {
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
    {
        Some(e) => *e = entry,
        None => env.push(entry),
    }
}

fn has_env(env: &[String], key: &str) -> bool {
    env.iter()
        .any(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
}

/// process.env: PATH default, HOSTNAME, the image's, the request's (by key), HOME.
fn environment(
    config: &cri::ContainerConfig,
    image: &ImageRunConfig,
    hostname: &str,
    home: &str,
) -> Result<Vec<String>, CriError> {
    let mut env = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={hostname}"),
    ];
    for entry in &image.env {
        let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
        if key.is_empty() {
            continue;
        }
        set_env(&mut env, key, entry.clone());
    }
    for (i, kv) in config.envs.iter().enumerate() {
        if kv.key.is_empty() || kv.key.contains(['=', '\0']) {
            return Err(CriError::invalid(
                format!("config.envs[{i}].key"),
                format!(
                    "{:?} is not a usable variable name (empty, or holds '=' or NUL)",
                    kv.key
                ),
            ));
        }
        if kv.value.contains('\0') {
            return Err(CriError::invalid(
                format!("config.envs[{i}].value"),
                "must not contain a NUL byte",
            ));
        }
        set_env(&mut env, &kv.key, format!("{}={}", kv.key, kv.value));
    }
    if config.tty && !has_env(&env, "TERM") {
        env.push("TERM=xterm".to_string());
    }
    if !has_env(&env, "HOME") {
        env.push(format!("HOME={home}"));
    }
    Ok(env)
}

/// process.cwd: the request's, the image's, or "/".
fn working_dir(config: &cri::ContainerConfig, image: &ImageRunConfig) -> Result<String, CriError> {
    if !config.working_dir.is_empty() {
        if !config.working_dir.starts_with('/') {
            return Err(CriError::invalid(
                "config.working_dir",
                format!("{:?} is not an absolute path", config.working_dir),
            ));
        }
        return Ok(config.working_dir.clone());
    }
    if image.working_dir.is_empty() {
        return Ok("/".to_string());
    }
    if image.working_dir.starts_with('/') {
        Ok(image.working_dir.clone())
    } else {
        Ok(format!("/{}", image.working_dir))
    }
}

// ---------------------------------------------------------------------------
// Users and groups

/// The resolved process user.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ResolvedUser {
    uid: u32,
    gid: u32,
    additional_gids: Vec<u32>,
    home: String,
}

#[derive(Debug)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolves `rel` inside `root` as if `root` were `/`: `..` stops at the root and
/// symlinks (absolute or relative) are resolved against the root, never the host.
fn resolve_in_root(root: &Path, rel: &Path) -> std::io::Result<PathBuf> {
    let mut todo: Vec<OsString> = Vec::new();
    let push_front = |todo: &mut Vec<OsString>, p: &Path| {
        let mut comps: Vec<OsString> = p
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some(OsString::from("..")),
                _ => None,
            })
            .collect();
        comps.reverse();
        todo.extend(comps);
    };
    push_front(&mut todo, rel);
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&c);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(std::io::Error::other("too many symlinks"));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                push_front(&mut todo, &target);
            }
            Ok(_) => resolved.push(c),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => resolved.push(c),
            Err(e) => return Err(e),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

/// Reads a file of the rootfs (`None` when absent), never following a symlink out of it.
fn read_rootfs_file(root: &Path, rel: &str) -> Result<Option<String>, CriError> {
    let path = resolve_in_root(root, Path::new(rel))
        .map_err(|e| CriError::internal(format!("resolving {rel} in the rootfs"), e))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CriError::internal(
                format!("opening {rel} in the rootfs"),
                e,
            ));
        }
    };
    let mut text = String::new();
    file.take(MAX_ID_FILE)
        .read_to_string(&mut text)
        .map_err(|e| CriError::internal(format!("reading {rel} in the rootfs"), e))?;
    Ok(Some(text))
}

enum Id {
    Num(u32),
    Name(String),
}

fn parse_id(s: &str) -> Id {
    match s.parse::<u32>() {
        Ok(n) => Id::Num(n),
        Err(_) => Id::Name(s.to_string()),
    }
}

fn id_from_i64(field: &str, v: i64) -> Result<u32, CriError> {
    u32::try_from(v).map_err(|_| CriError::invalid(field, format!("{v} is not a valid id")))
}

/// The process user from the security context, else the image's USER.
fn resolve_user(
    rootfs: &Path,
    sc: &cri::LinuxContainerSecurityContext,
    image: &ImageRunConfig,
) -> Result<ResolvedUser, CriError> {
    // (user, its field, group, its field)
    let (user, user_field, group, group_field): (Id, String, Option<Id>, String) =
        if !sc.run_as_username.is_empty() {
            (
                parse_id(&sc.run_as_username),
                format!("{SC}.run_as_username"),
                sc.run_as_group
                    .as_ref()
                    .map(|g| id_from_i64(&format!("{SC}.run_as_group"), g.value))
                    .transpose()?
                    .map(Id::Num),
                format!("{SC}.run_as_group"),
            )
        } else if let Some(u) = &sc.run_as_user {
            (
                Id::Num(id_from_i64(&format!("{SC}.run_as_user"), u.value)?),
                format!("{SC}.run_as_user"),
                sc.run_as_group
                    .as_ref()
                    .map(|g| id_from_i64(&format!("{SC}.run_as_group"), g.value))
                    .transpose()?
                    .map(Id::Num),
                format!("{SC}.run_as_group"),
            )
        } else if sc.run_as_group.is_some() {
            return Err(CriError::invalid(
                format!("{SC}.run_as_group"),
                "a group is given without a user (run_as_user or run_as_username)",
            ));
        } else {
            let (u, g) = match image.user.split_once(':') {
                Some((u, g)) => (u, Some(g)),
                None => (image.user.as_str(), None),
            };
            let u = if u.is_empty() { "0" } else { u };
            (
                parse_id(u),
                "config.image (the image's USER)".to_string(),
                g.filter(|g| !g.is_empty()).map(parse_id),
                "config.image (the image's USER group)".to_string(),
            )
        };
    let passwd = read_rootfs_file(rootfs, "etc/passwd")?
        .map(|t| parse_passwd(&t))
        .unwrap_or_default();
    let (uid, mut gid, name, home) = match user {
        Id::Num(uid) => match passwd.iter().find(|e| e.uid == uid) {
            Some(e) => (uid, e.gid, Some(e.name.clone()), e.home.clone()),
            None => (uid, 0, None, String::new()),
        },
        Id::Name(n) => match passwd.iter().find(|e| e.name == n) {
            Some(e) => (e.uid, e.gid, Some(n), e.home.clone()),
            None => {
                return Err(CriError::invalid(
                    user_field,
                    format!("user {n:?} is not in the container's /etc/passwd"),
                ));
            }
        },
    };
    let groups = read_rootfs_file(rootfs, "etc/group")?
        .map(|t| parse_group(&t))
        .unwrap_or_default();
    match group {
        Some(Id::Num(g)) => gid = g,
        Some(Id::Name(g)) => match groups.iter().find(|e| e.name == g) {
            Some(e) => gid = e.gid,
            None => {
                return Err(CriError::invalid(
                    group_field,
                    format!("group {g:?} is not in the container's /etc/group"),
                ));
            }
        },
        None => {}
    }
    let mut additional = vec![gid];
    let strict = sc.supplemental_groups_policy == cri::SupplementalGroupsPolicy::Strict as i32;
    if !strict {
        if let Some(name) = &name {
            for g in &groups {
                if g.name != *name && g.members.iter().any(|m| m == name) {
                    additional.push(g.gid);
                }
            }
        }
    }
    for (i, g) in sc.supplemental_groups.iter().enumerate() {
        additional.push(id_from_i64(&format!("{SC}.supplemental_groups[{i}]"), *g)?);
    }
    let mut seen = BTreeSet::new();
    additional.retain(|g| seen.insert(*g));
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
        home: if home.is_empty() {
            "/".to_string()
        } else {
            home
        },
    })
}

// ---------------------------------------------------------------------------
// Capabilities and seccomp

fn cap_name(field: &str, raw: &str) -> Result<String, CriError> {
    let upper = raw.trim().to_ascii_uppercase();
    let name = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPABILITIES.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(CriError::invalid(
            field,
            format!("{raw:?} is not a known capability"),
        ))
    }
}

fn is_all(s: &str) -> bool {
    s.trim().eq_ignore_ascii_case("ALL")
}

/// The capability set: containerd's order — add ALL, drop ALL, add each, drop each.
fn capabilities(
    sc: &cri::LinuxContainerSecurityContext,
    bounding: u64,
) -> Result<BTreeSet<String>, CriError> {
    let all = || {
        ALL_CAPABILITIES
            .iter()
            .filter(|c| in_bounding_set(c, bounding))
            .map(|s| s.to_string())
            .collect()
    };
    if sc.privileged {
        return Ok(all());
    }
    let mut caps: BTreeSet<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
    let Some(c) = &sc.capabilities else {
        return Ok(caps);
    };
    if c.add_capabilities.iter().any(|s| is_all(s)) {
        caps = all();
    }
    if c.drop_capabilities.iter().any(|s| is_all(s)) {
        caps.clear();
    }
    for (i, a) in c.add_capabilities.iter().enumerate() {
        if !is_all(a) {
            let field = format!("{SC}.capabilities.add_capabilities[{i}]");
            let name = cap_name(&field, a)?;
            if !in_bounding_set(&name, bounding) {
                return Err(CriError::invalid(
                    field,
                    format!(
                        "{name} is not in the runtime's capability bounding set: this node cannot grant it"
                    ),
                ));
            }
            caps.insert(name);
        }
    }
    for (i, d) in c.drop_capabilities.iter().enumerate() {
        if !is_all(d) {
            caps.remove(&cap_name(
                &format!("{SC}.capabilities.drop_capabilities[{i}]"),
                d,
            )?);
        }
    }
    Ok(caps)
}

fn ambient_capabilities(
    sc: &cri::LinuxContainerSecurityContext,
) -> Result<BTreeSet<String>, CriError> {
    let mut out = BTreeSet::new();
    if let Some(c) = &sc.capabilities {
        for (i, a) in c.add_ambient_capabilities.iter().enumerate() {
            out.insert(cap_name(
                &format!("{SC}.capabilities.add_ambient_capabilities[{i}]"),
                a,
            )?);
        }
    }
    Ok(out)
}

/// The seccomp profile; `None`: unconfined.
#[allow(deprecated)] // seccomp_profile_path: still sent by older kubelets
fn seccomp_profile(
    sc: &cri::LinuxContainerSecurityContext,
    privileged: bool,
    caps: &BTreeSet<String>,
    root: &Path,
) -> Result<Option<oci_spec::runtime::LinuxSeccomp>, CriError> {
    if privileged {
        return Ok(None);
    }
    if let Some(p) = &sc.seccomp {
        let field = format!("{SC}.seccomp");
        return match cri::security_profile::ProfileType::try_from(p.profile_type) {
            Ok(cri::security_profile::ProfileType::RuntimeDefault) => {
                seccomp::default_profile(caps).map(Some)
            }
            Ok(cri::security_profile::ProfileType::Unconfined) => Ok(None),
            Ok(cri::security_profile::ProfileType::Localhost) => seccomp::load_localhost(
                &format!("{field}.localhost_ref"),
                &p.localhost_ref,
                root,
                caps,
            )
            .map(Some),
            Err(_) => Err(CriError::invalid(
                format!("{field}.profile_type"),
                format!("unknown profile type {}", p.profile_type),
            )),
        };
    }
    let path = sc.seccomp_profile_path.as_str();
    let field = format!("{SC}.seccomp_profile_path");
    match path {
        "" | "unconfined" => Ok(None),
        "runtime/default" | "docker/default" => seccomp::default_profile(caps).map(Some),
        p if p.starts_with("localhost/") => {
            seccomp::load_localhost(&field, p, root, caps).map(Some)
        }
        p => Err(CriError::invalid(
            field,
            format!("unknown seccomp profile {p:?}"),
        )),
    }
}

// ---------------------------------------------------------------------------
// Mounts and devices

/// `path` made lexically clean ("/a/./b/" → "/a/b").
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn depth(path: &str) -> usize {
    path.split('/').filter(|s| !s.is_empty()).count()
}

fn default_mounts(privileged: bool) -> Vec<Value> {
    let sys_ro: &[&str] = if privileged { &[] } else { &["ro"] };
    let mut sys = vec!["nosuid", "noexec", "nodev"];
    sys.extend_from_slice(sys_ro);
    let mut cgroup = vec!["nosuid", "noexec", "nodev", "relatime"];
    cgroup.extend_from_slice(sys_ro);
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", TMPFS_SIZE]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", TMPFS_SIZE]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": cgroup}),
    ]
}

/// A bind mount to add: destination (clean), source, options.
struct Bind {
    dest: String,
    source: PathBuf,
    options: Vec<String>,
}

/// The spec's mounts and the rootfs propagation they need.
fn mounts(
    input: &SpecInput,
    sc: &cri::LinuxContainerSecurityContext,
) -> Result<(Vec<Value>, Option<String>), CriError> {
    let config = input.config;
    let cri_dests: BTreeSet<String> = config
        .mounts
        .iter()
        .map(|m| clean(&m.container_path))
        .collect();
    let ro_rw = |ro: bool| if ro { "ro" } else { "rw" }.to_string();
    let mut binds: Vec<Bind> = Vec::new();
    // The pod's files (containerd mounts them read-only with a read-only rootfs).
    for (dest, file) in [
        ("/etc/hostname", "hostname"),
        ("/etc/hosts", "hosts"),
        ("/etc/resolv.conf", "resolv.conf"),
    ] {
        let source = input.pod_dir.join(file);
        if !cri_dests.contains(dest) && source.exists() {
            binds.push(Bind {
                dest: dest.to_string(),
                source,
                options: vec![
                    "rbind".to_string(),
                    "rprivate".to_string(),
                    ro_rw(sc.readonly_rootfs),
                ],
            });
        }
    }
    if let Some(shm) = input.shm {
        if !cri_dests.contains("/dev/shm") {
            binds.push(Bind {
                dest: "/dev/shm".to_string(),
                source: shm.to_path_buf(),
                options: vec!["rbind".into(), "rprivate".into(), "rw".into()],
            });
        }
    }
    let mut propagation: Option<String> = None;
    for (i, m) in config.mounts.iter().enumerate() {
        let field = |f: &str| format!("config.mounts[{i}].{f}");
        if m.image.as_ref().is_some_and(|s| !s.image.is_empty()) {
            return Err(CriError::FailedPrecondition(format!(
                "{}: image volumes are not supported yet",
                field("image")
            )));
        }
        if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            return Err(CriError::FailedPrecondition(format!(
                "{}: id-mapped mounts are not supported yet",
                field("uid_mappings")
            )));
        }
        if !m.container_path.starts_with('/') {
            return Err(CriError::invalid(
                field("container_path"),
                format!("{:?} is not an absolute path", m.container_path),
            ));
        }
        if m.host_path.is_empty() {
            return Err(CriError::invalid(field("host_path"), "must not be empty"));
        }
        let source = std::fs::canonicalize(&m.host_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                CriError::invalid(
                    field("host_path"),
                    format!("{:?} does not exist", m.host_path),
                )
            } else {
                CriError::invalid(field("host_path"), format!("{:?}: {e}", m.host_path))
            }
        })?;
        let mut options = vec!["rbind".to_string()];
        let mode = cri::MountPropagation::try_from(m.propagation).map_err(|_| {
            CriError::invalid(
                field("propagation"),
                format!("unknown propagation {}", m.propagation),
            )
        })?;
        match mode {
            cri::MountPropagation::PropagationPrivate => options.push("rprivate".into()),
            cri::MountPropagation::PropagationHostToContainer => {
                options.push("rslave".into());
                if propagation.as_deref() != Some("rshared") {
                    propagation = Some("rslave".into());
                }
            }
            cri::MountPropagation::PropagationBidirectional => {
                options.push("rshared".into());
                propagation = Some("rshared".into());
            }
        }
        if m.recursive_read_only {
            if !m.readonly || mode != cri::MountPropagation::PropagationPrivate {
                return Err(CriError::invalid(
                    field("recursive_read_only"),
                    "needs readonly and private propagation",
                ));
            }
            options.push("rro".into());
        } else {
            options.push(ro_rw(m.readonly));
        }
        binds.push(Bind {
            dest: clean(&m.container_path),
            source,
            options,
        });
    }
    let supplied: BTreeSet<&str> = binds.iter().map(|b| b.dest.as_str()).collect();
    let mut out: Vec<Value> = default_mounts(sc.privileged)
        .into_iter()
        .filter(|m| {
            let dest = m["destination"].as_str().unwrap_or_default();
            let under_dev = supplied.contains("/dev") && dest.starts_with("/dev/");
            !supplied.contains(dest) && !under_dev
        })
        .collect();
    binds.sort_by_key(|b| depth(&b.dest));
    for b in binds {
        out.push(json!({
            "destination": b.dest,
            "type": "bind",
            "source": b.source,
            "options": b.options,
        }));
    }
    Ok((out, propagation))
}

/// A device node: the spec entry and its cgroup rule, or `None` for other files.
fn device_entry(
    host: &Path,
    container: &str,
    access: &str,
) -> std::io::Result<Option<(Value, Value)>> {
    let meta = std::fs::metadata(host)?;
    let ft = meta.file_type();
    let typ = if ft.is_char_device() {
        "c"
    } else if ft.is_block_device() {
        "b"
    } else {
        return Ok(None);
    };
    let rdev = meta.rdev();
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    Ok(Some((
        json!({
            "path": container,
            "type": typ,
            "major": major,
            "minor": minor,
            "fileMode": meta.mode() & 0o7777,
            "uid": meta.uid(),
            "gid": meta.gid(),
        }),
        json!({"allow": true, "type": typ, "major": major, "minor": minor, "access": access}),
    )))
}

/// Directories of /dev a privileged container does not get (containerd's list).
const HOST_DEV_SKIP: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

fn walk_devices(
    host: &Path,
    container: &str,
    access: &str,
    top: bool,
    out: &mut Vec<(Value, Value)>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(host)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let ft = entry.file_type()?;
        let cpath = format!("{}/{name}", container.trim_end_matches('/'));
        if ft.is_dir() {
            if top && HOST_DEV_SKIP.contains(&name.as_str()) {
                continue;
            }
            walk_devices(&entry.path(), &cpath, access, false, out)?;
        } else if ft.is_char_device() || ft.is_block_device() {
            if top && name == "console" {
                continue;
            }
            if let Some(d) = device_entry(&entry.path(), &cpath, access)? {
                out.push(d);
            }
        }
    }
    Ok(())
}

/// linux.devices and linux.resources.devices.
fn devices(
    config: &cri::ContainerConfig,
    privileged: bool,
    host_dev: &Path,
) -> Result<(Vec<Value>, Vec<Value>), CriError> {
    let mut found: Vec<(Value, Value)> = Vec::new();
    if privileged {
        walk_devices(host_dev, "/dev", "rwm", true, &mut found)
            .map_err(|e| CriError::internal("listing the host's devices", e))?;
    }
    for (i, d) in config.devices.iter().enumerate() {
        let field = |f: &str| format!("config.devices[{i}].{f}");
        let access = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(CriError::invalid(
                field("permissions"),
                format!("{access:?}: only r, w and m are allowed"),
            ));
        }
        if !d.container_path.starts_with('/') {
            return Err(CriError::invalid(
                field("container_path"),
                format!("{:?} is not an absolute path", d.container_path),
            ));
        }
        let host = std::fs::canonicalize(&d.host_path).map_err(|e| {
            CriError::invalid(field("host_path"), format!("{:?}: {e}", d.host_path))
        })?;
        let io = |e: std::io::Error| {
            CriError::invalid(field("host_path"), format!("{:?}: {e}", d.host_path))
        };
        if host.is_dir() {
            walk_devices(&host, &d.container_path, access, false, &mut found).map_err(io)?;
        } else {
            match device_entry(&host, &d.container_path, access).map_err(io)? {
                Some(dev) => found.push(dev),
                None => {
                    return Err(CriError::invalid(
                        field("host_path"),
                        format!("{:?} is not a device", d.host_path),
                    ));
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    let mut devs = Vec::new();
    let mut rules = if privileged {
        vec![json!({"allow": true, "access": "rwm"})]
    } else {
        vec![json!({"allow": false, "access": "rwm"})]
    };
    for (dev, rule) in found {
        if seen.insert(dev["path"].as_str().unwrap_or_default().to_string()) {
            devs.push(dev);
            if !privileged {
                rules.push(rule);
            }
        }
    }
    Ok((devs, rules))
}

// ---------------------------------------------------------------------------
// Resources, cgroups, namespaces

/// Whether the host accounts swap, as containerd checks it: on cgroup v2, whether this
/// process's own cgroup has `memory.swap.max` (the root cgroup has none); on v1, whether
/// the memory hierarchy has the memsw files.
fn swap_accounting() -> bool {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        return match own.lines().find_map(|l| l.strip_prefix("0::")) {
            Some("/") | None => Path::new("/sys/fs/cgroup/memory.swap.max").exists(),
            Some(path) => Path::new("/sys/fs/cgroup")
                .join(path.trim_start_matches('/'))
                .join("memory.swap.max")
                .exists(),
        };
    }
    Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
}

fn non_negative(field: &str, v: i64) -> Result<u64, CriError> {
    u64::try_from(v).map_err(|_| CriError::invalid(field, format!("{v} must not be negative")))
}

/// linux.resources (without devices), as containerd maps them. With swap accounting and
/// a memory limit but no swap limit, swap is set equal to the limit (no swapping).
fn resources(
    r: Option<&cri::LinuxContainerResources>,
    swap_ok: bool,
) -> Result<Map<String, Value>, CriError> {
    let mut out = Map::new();
    let Some(r) = r else {
        return Ok(out);
    };
    const F: &str = "config.linux.resources";
    let mut cpu = Map::new();
    if r.cpu_period != 0 {
        cpu.insert(
            "period".into(),
            json!(non_negative(&format!("{F}.cpu_period"), r.cpu_period)?),
        );
    }
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), json!(r.cpu_quota));
    }
    if r.cpu_shares != 0 {
        cpu.insert(
            "shares".into(),
            json!(non_negative(&format!("{F}.cpu_shares"), r.cpu_shares)?),
        );
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(r.cpuset_cpus));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(r.cpuset_mems));
    }
    if !cpu.is_empty() {
        out.insert("cpu".into(), Value::Object(cpu));
    }
    let mut memory = Map::new();
    if r.memory_limit_in_bytes != 0 {
        let limit = non_negative(
            &format!("{F}.memory_limit_in_bytes"),
            r.memory_limit_in_bytes,
        )?;
        memory.insert("limit".into(), json!(limit));
        if r.memory_swap_limit_in_bytes == 0 && swap_ok {
            memory.insert("swap".into(), json!(limit));
        }
    }
    if r.memory_swap_limit_in_bytes != 0 && swap_ok {
        memory.insert("swap".into(), json!(r.memory_swap_limit_in_bytes));
    }
    if !memory.is_empty() {
        out.insert("memory".into(), Value::Object(memory));
    }
    if !r.hugepage_limits.is_empty() {
        let mut pages = Vec::new();
        for (i, h) in r.hugepage_limits.iter().enumerate() {
            let limit = i64::try_from(h.limit).map_err(|_| {
                CriError::invalid(format!("{F}.hugepage_limits[{i}].limit"), "is too large")
            })?;
            if h.page_size.is_empty() {
                return Err(CriError::invalid(
                    format!("{F}.hugepage_limits[{i}].page_size"),
                    "must not be empty",
                ));
            }
            pages.push(json!({"pageSize": h.page_size, "limit": limit}));
        }
        out.insert("hugepageLimits".into(), Value::Array(pages));
    }
    if !r.unified.is_empty() {
        out.insert("unified".into(), json!(r.unified));
    }
    Ok(out)
}

/// linux.resources for UpdateContainerResources (the shim passes them to `runc update`).
pub fn linux_resources(r: &cri::LinuxContainerResources) -> Result<Value, CriError> {
    Ok(Value::Object(resources(Some(r), swap_accounting())?))
}

/// process.oomScoreAdj: the request's, never below what the daemon may set.
fn oom_score_adj(r: Option<&cri::LinuxContainerResources>, floor: i64) -> Result<i32, CriError> {
    let adj = r.map_or(0, |r| r.oom_score_adj);
    if !(-1000..=1000).contains(&adj) {
        return Err(CriError::invalid(
            "config.linux.resources.oom_score_adj",
            format!("{adj} is outside [-1000, 1000]"),
        ));
    }
    let clamped = adj.max(floor).min(1000);
    i32::try_from(clamped).map_err(|_| {
        CriError::invalid(
            "config.linux.resources.oom_score_adj",
            format!("{clamped} is out of range"),
        )
    })
}

/// linux.cgroupsPath for the driver: cgroupfs `<parent>/crius-<id>` (parent "/crius"
/// by default); systemd `<slice>:crius:<id>` (slice "system.slice" by default).
pub fn cgroups_path(driver: CgroupDriver, parent: &str, id: &str) -> Result<String, CriError> {
    const FIELD: &str = "sandbox_config.linux.cgroup_parent";
    if parent.split('/').any(|c| c == "..") {
        return Err(CriError::invalid(FIELD, format!("{parent:?} holds '..'")));
    }
    match driver {
        CgroupDriver::Cgroupfs => {
            let parent = if parent.is_empty() { "/crius" } else { parent };
            let parent = clean(parent);
            if parent == "/" {
                Ok(format!("/crius-{id}"))
            } else {
                Ok(format!("{parent}/crius-{id}"))
            }
        }
        CgroupDriver::Systemd => {
            let slice = parent
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .filter(|s| !s.is_empty())
                .unwrap_or("system.slice");
            if !slice.ends_with(".slice") {
                return Err(CriError::invalid(
                    FIELD,
                    format!(
                        "{parent:?} is not a systemd slice (the systemd cgroup driver is in use)"
                    ),
                ));
            }
            Ok(format!("{slice}:crius:{id}"))
        }
    }
}

/// linux.namespaces.
fn namespaces(
    sc: &cri::LinuxContainerSecurityContext,
    pod: &PodNamespaces,
    privileged: bool,
) -> Result<Vec<Value>, CriError> {
    let field = format!("{SC}.namespace_options");
    let mut out = vec![json!({"type": "mount"})];
    let pid = match &sc.namespace_options {
        None => cri::NamespaceMode::Container,
        Some(ns) => {
            if let Some(u) = &ns.userns_options {
                if u.mode != cri::NamespaceMode::Node as i32 {
                    return Err(CriError::FailedPrecondition(format!(
                        "{field}.userns_options: user namespaces are not supported yet"
                    )));
                }
            }
            cri::NamespaceMode::try_from(ns.pid).map_err(|_| {
                CriError::invalid(format!("{field}.pid"), format!("unknown mode {}", ns.pid))
            })?
        }
    };
    match pid {
        cri::NamespaceMode::Container => out.push(json!({"type": "pid"})),
        cri::NamespaceMode::Node => {}
        cri::NamespaceMode::Pod => match &pod.pid {
            Some(p) => out.push(json!({"type": "pid", "path": p})),
            None => {
                return Err(CriError::FailedPrecondition(format!(
                    "{field}.pid: POD, but the pod sandbox was not created with a pod-level PID namespace"
                )));
            }
        },
        cri::NamespaceMode::Target => match &pod.target_pid {
            Some(p) => out.push(json!({"type": "pid", "path": p})),
            None => {
                return Err(CriError::FailedPrecondition(format!(
                    "{field}.target_id: TARGET needs a running target container"
                )));
            }
        },
    }
    let join =
        |typ: &str, path: &Option<PathBuf>| path.as_ref().map(|p| json!({"type": typ, "path": p}));
    out.extend(join("network", &pod.net));
    out.extend(join("ipc", &pod.ipc));
    // Host network implies the host's UTS namespace.
    if pod.net.is_some() {
        out.extend(join("uts", &pod.uts));
    }
    if !privileged {
        out.push(json!({"type": "cgroup"}));
    }
    Ok(out)
}

/// The spec's annotations: the request's plus containerd's.
fn annotations(input: &SpecInput) -> HashMap<String, String> {
    let mut a = input.config.annotations.clone();
    let meta = input.sandbox.metadata.clone().unwrap_or_default();
    let name = input
        .config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let image = input
        .config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
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
    use std::os::unix::fs::symlink;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        rootfs: PathBuf,
        pod: PathBuf,
        profiles: PathBuf,
        shm: Option<PathBuf>,
        ns: PodNamespaces,
        sandbox: cri::PodSandboxConfig,
        image: ImageRunConfig,
        config: cri::ContainerConfig,
        driver: CgroupDriver,
        floor: i64,
        bounding: u64,
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n\
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nwheel:x:10:app,other\nvideo:x:44:app\n\
        audio:x:29:other\nnogroup:x:65534:\n";

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
                image: ImageRunConfig {
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
                floor: i64::MIN,
                bounding: u64::MAX,
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

        fn generate(&self) -> Result<Generated, CriError> {
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
                oom_score_adj_floor: self.floor,
                seccomp_profile_root: &self.profiles,
                cap_bounding_set: self.bounding,
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
    fn command_and_args_follow_kubernetes() {
        let mut f = Fixture::new();
        assert_eq!(
            strings(&f.json()["process"]["args"]),
            v(&["/ep", "c1", "c2"])
        );
        f.config.args = v(&["a1"]);
        assert_eq!(strings(&f.json()["process"]["args"]), v(&["/ep", "a1"]));
        f.config.command = v(&["/cmd"]);
        assert_eq!(strings(&f.json()["process"]["args"]), v(&["/cmd", "a1"]));
        f.config.args.clear();
        // A command drops the image's CMD too.
        assert_eq!(strings(&f.json()["process"]["args"]), v(&["/cmd"]));
        f.config.command.clear();
        f.image.entrypoint.clear();
        assert_eq!(strings(&f.json()["process"]["args"]), v(&["c1", "c2"]));
        f.image.cmd.clear();
        assert!(f.err().starts_with("config.command:"), "{}", f.err());
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
    fn working_dir_request_image_default() {
        let mut f = Fixture::new();
        assert_eq!(f.json()["process"]["cwd"], "/");
        f.image.working_dir = "/srv".into();
        assert_eq!(f.json()["process"]["cwd"], "/srv");
        f.config.working_dir = "/work".into();
        assert_eq!(f.json()["process"]["cwd"], "/work");
        f.config.working_dir = "rel".into();
        assert!(f.err().starts_with("config.working_dir:"));
    }

    fn user(spec: &Value) -> (u64, u64, Vec<u64>) {
        let u = &spec["process"]["user"];
        (
            u["uid"].as_u64().unwrap(),
            u["gid"].as_u64().unwrap(),
            u["additionalGids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g.as_u64().unwrap())
                .collect(),
        )
    }

    #[test]
    fn user_from_the_security_context() {
        let mut f = Fixture::new();
        assert_eq!(user(&f.json()), (0, 0, vec![0]));
        f.sc().run_as_user = Some(cri::Int64Value { value: 1000 });
        let spec = f.json();
        assert_eq!(user(&spec), (1000, 1000, vec![1000, 10, 44]));
        assert_eq!(env_of(&spec, "HOME").unwrap(), "/home/app");
        f.sc().run_as_group = Some(cri::Int64Value { value: 44 });
        assert_eq!(user(&f.json()), (1000, 44, vec![44, 10]));
        // A uid with no passwd entry: gid 0, HOME /.
        f.sc().run_as_group = None;
        f.sc().run_as_user = Some(cri::Int64Value { value: 4321 });
        let spec = f.json();
        assert_eq!(user(&spec), (4321, 0, vec![0]));
        assert_eq!(env_of(&spec, "HOME").unwrap(), "/");
        f.sc().run_as_user = None;
        f.sc().run_as_username = "app".into();
        let g = f.generate().unwrap();
        assert_eq!((g.uid, g.gid), (1000, 1000));
        f.sc().run_as_username = "ghost".into();
        assert!(
            f.err()
                .starts_with("config.linux.security_context.run_as_username:"),
            "{}",
            f.err()
        );
        f.sc().run_as_username.clear();
        f.sc().run_as_group = Some(cri::Int64Value { value: 5 });
        assert!(
            f.err()
                .starts_with("config.linux.security_context.run_as_group:")
        );
        f.sc().run_as_user = Some(cri::Int64Value { value: -1 });
        assert!(
            f.err()
                .starts_with("config.linux.security_context.run_as_user:")
        );
    }

    #[test]
    fn user_from_the_image() {
        let mut f = Fixture::new();
        for (u, want) in [
            ("1000", (1000, 1000)),
            ("1000:44", (1000, 44)),
            ("app", (1000, 1000)),
            ("app:video", (1000, 44)),
            ("nobody:29", (65534, 29)),
            ("5000:6000", (5000, 6000)),
        ] {
            f.image.user = u.into();
            let g = f.generate().unwrap();
            assert_eq!((g.uid, g.gid), want, "USER {u}");
        }
        f.image.user = "ghost".into();
        assert!(f.err().starts_with("config.image"), "{}", f.err());
        f.image.user = "app:ghosts".into();
        assert!(f.err().contains("ghosts"), "{}", f.err());
        // The security context wins over the image.
        f.sc().run_as_user = Some(cri::Int64Value { value: 0 });
        assert_eq!(f.generate().unwrap().uid, 0);
    }

    #[test]
    fn passwd_symlink_out_of_the_rootfs_is_not_followed() {
        let mut f = Fixture::new();
        let outside = f.root.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("passwd"), "evil:x:4242:4242::/evil:/bin/sh\n").unwrap();
        let passwd = f.rootfs.join("etc/passwd");
        std::fs::remove_file(&passwd).unwrap();
        symlink(outside.join("passwd"), &passwd).unwrap();
        f.image.user = "evil".into();
        assert!(f.err().contains("not in the container's /etc/passwd"));
        // A relative escape is clamped at the rootfs too.
        std::fs::remove_file(&passwd).unwrap();
        symlink("../../../../../../outside/passwd", &passwd).unwrap();
        assert!(f.err().contains("not in the container's /etc/passwd"));
        // A symlink inside the rootfs is followed (resolved against the rootfs).
        std::fs::remove_file(&passwd).unwrap();
        std::fs::create_dir_all(f.rootfs.join("lib")).unwrap();
        std::fs::write(f.rootfs.join("lib/passwd"), "evil:x:7:7::/:/bin/sh\n").unwrap();
        symlink("/lib/passwd", &passwd).unwrap();
        assert_eq!(f.generate().unwrap().uid, 7);
    }

    #[test]
    fn supplemental_groups_merge_and_strict() {
        let mut f = Fixture::new();
        f.image.user = "app".into();
        f.sc().supplemental_groups = vec![5000, 10];
        assert_eq!(user(&f.json()).2, vec![1000, 10, 44, 5000]);
        f.sc().supplemental_groups_policy = cri::SupplementalGroupsPolicy::Strict as i32;
        assert_eq!(user(&f.json()).2, vec![1000, 5000, 10]);
        f.sc().supplemental_groups = vec![-3];
        assert!(
            f.err()
                .starts_with("config.linux.security_context.supplemental_groups[0]:")
        );
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
        assert!(f.err().starts_with("config.mounts[0].recursive_read_only:"));
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
    fn capabilities_stay_within_the_bounding_set() {
        let mut f = Fixture::new();
        // A node whose root lacks CAP_SYS_RESOURCE (bit 24), like the dev VMs.
        f.bounding = !(1 << 24);
        f.sc().privileged = true;
        f.privileged_sandbox();
        let c = caps(&f.json());
        assert!(!c.contains("CAP_SYS_RESOURCE"));
        assert_eq!(c.len(), ALL_CAPABILITIES.len() - 1);
        f.sc().privileged = false;
        f.sc().capabilities = Some(cri::Capability {
            add_capabilities: vec!["ALL".into()],
            ..Default::default()
        });
        assert!(!caps(&f.json()).contains("CAP_SYS_RESOURCE"));
        f.sc().capabilities = Some(cri::Capability {
            add_capabilities: vec!["SYS_RESOURCE".into()],
            ..Default::default()
        });
        let e = f.generate().unwrap_err();
        assert!(
            e.to_string()
                .starts_with("config.linux.security_context.capabilities.add_capabilities[0]"),
            "{e}"
        );
        assert_eq!(cap_number("CAP_CHOWN"), Some(0));
        assert_eq!(cap_number("CAP_SYS_RESOURCE"), Some(24));
        assert_eq!(cap_number("CAP_CHECKPOINT_RESTORE"), Some(40));
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
    fn oom_score_adj_is_clamped_to_the_floor() {
        let mut f = Fixture::new();
        assert_eq!(f.json()["process"]["oomScoreAdj"], 0);
        f.res().oom_score_adj = -997;
        assert_eq!(f.json()["process"]["oomScoreAdj"], -997);
        f.floor = -500;
        assert_eq!(f.json()["process"]["oomScoreAdj"], -500);
        f.res().oom_score_adj = 1000;
        assert_eq!(f.json()["process"]["oomScoreAdj"], 1000);
        f.floor = 0;
        f.res().oom_score_adj = 0;
        assert_eq!(f.json()["process"]["oomScoreAdj"], 0);
        f.res().oom_score_adj = 1001;
        assert!(f.err().starts_with("config.linux.resources.oom_score_adj:"));
    }

    #[test]
    fn cgroups_paths_for_both_drivers() {
        use CgroupDriver::*;
        assert_eq!(
            cgroups_path(Cgroupfs, "/kubepods/burstable/pod1", "abc").unwrap(),
            "/kubepods/burstable/pod1/crius-abc"
        );
        assert_eq!(
            cgroups_path(Cgroupfs, "", "abc").unwrap(),
            "/crius/crius-abc"
        );
        assert_eq!(
            cgroups_path(Cgroupfs, "kubepods/", "abc").unwrap(),
            "/kubepods/crius-abc"
        );
        assert_eq!(cgroups_path(Cgroupfs, "/", "abc").unwrap(), "/crius-abc");
        assert!(cgroups_path(Cgroupfs, "/a/../b", "abc").is_err());
        assert_eq!(
            cgroups_path(Systemd, "kubepods-besteffort-pod1.slice", "abc").unwrap(),
            "kubepods-besteffort-pod1.slice:crius:abc"
        );
        assert_eq!(
            cgroups_path(
                Systemd,
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2.slice",
                "abc"
            )
            .unwrap(),
            "kubepods-burstable-pod2.slice:crius:abc"
        );
        assert_eq!(
            cgroups_path(Systemd, "", "abc").unwrap(),
            "system.slice:crius:abc"
        );
        let e = cgroups_path(Systemd, "/kubepods/pod1", "abc")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("sandbox_config.linux.cgroup_parent:"), "{e}");

        let mut f = Fixture::new();
        assert_eq!(
            f.json()["linux"]["cgroupsPath"],
            "/kubepods/besteffort/pod123/crius-c0ffee"
        );
        f.driver = Systemd;
        f.sandbox.linux.as_mut().unwrap().cgroup_parent = "kubepods-pod1.slice".into();
        assert_eq!(
            f.json()["linux"]["cgroupsPath"],
            "kubepods-pod1.slice:crius:c0ffee"
        );
    }

    fn ns(spec: &Value) -> Vec<(String, Option<String>)> {
        spec["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["type"].as_str().unwrap().to_string(),
                    n["path"].as_str().map(str::to_string),
                )
            })
            .collect()
    }

    #[test]
    fn namespaces_joined_and_pid_modes() {
        let mut f = Fixture::new();
        let got = ns(&f.json());
        let has = |got: &[(String, Option<String>)], t: &str, p: Option<&str>| {
            got.iter().any(|(gt, gp)| gt == t && gp.as_deref() == p)
        };
        assert!(has(&got, "network", Some("/run/crius/pods/p/net")));
        assert!(has(&got, "ipc", Some("/run/crius/pods/p/ipc")));
        assert!(has(&got, "uts", Some("/run/crius/pods/p/uts")));
        assert!(has(&got, "mount", None));
        assert!(has(&got, "pid", None));
        assert!(has(&got, "cgroup", None));
        assert!(f.json()["hostname"].is_null());

        // Host network (and so host UTS), host IPC.
        f.ns = PodNamespaces {
            net: None,
            ipc: None,
            uts: Some("/x/uts".into()),
            ..Default::default()
        };
        let got = ns(&f.json());
        assert!(
            !got.iter()
                .any(|(t, _)| t == "network" || t == "uts" || t == "ipc")
        );

        f.sc().namespace_options = Some(cri::NamespaceOption {
            pid: cri::NamespaceMode::Node as i32,
            ..Default::default()
        });
        assert!(!ns(&f.json()).iter().any(|(t, _)| t == "pid"));
        f.sc().namespace_options.as_mut().unwrap().pid = cri::NamespaceMode::Container as i32;
        assert!(ns(&f.json()).iter().any(|(t, _)| t == "pid"));
        // POD and TARGET without a namespace to join are refused, naming the field.
        for (mode, field) in [
            (cri::NamespaceMode::Pod, "pid:"),
            (cri::NamespaceMode::Target, "target_id:"),
        ] {
            f.sc().namespace_options.as_mut().unwrap().pid = mode as i32;
            let e = f.generate().unwrap_err();
            assert!(matches!(e, CriError::FailedPrecondition(_)));
            assert!(
                e.to_string().starts_with(&format!(
                    "config.linux.security_context.namespace_options.{field}"
                )),
                "{e}"
            );
        }
        // With the pod's (or the target's) PID namespace, the container joins it.
        f.ns.pid = Some("/proc/42/ns/pid".into());
        f.ns.target_pid = Some("/proc/43/ns/pid".into());
        f.sc().namespace_options.as_mut().unwrap().pid = cri::NamespaceMode::Pod as i32;
        assert!(has(&ns(&f.json()), "pid", Some("/proc/42/ns/pid")));
        f.sc().namespace_options.as_mut().unwrap().pid = cri::NamespaceMode::Target as i32;
        assert!(has(&ns(&f.json()), "pid", Some("/proc/43/ns/pid")));
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
    fn resources_mapping() {
        let r = cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![cri::HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            unified: [("memory.high".to_string(), "1000000".to_string())].into(),
            ..Default::default()
        };
        let out = Value::Object(resources(Some(&r), true).unwrap());
        assert_eq!(out["cpu"]["period"], 100_000);
        assert_eq!(out["cpu"]["quota"], 50_000);
        assert_eq!(out["cpu"]["shares"], 512);
        assert_eq!(out["cpu"]["cpus"], "0-1");
        assert_eq!(out["cpu"]["mems"], "0");
        assert_eq!(out["memory"]["limit"], 64 << 20);
        assert_eq!(out["memory"]["swap"], 64 << 20, "no swapping by default");
        assert_eq!(out["hugepageLimits"][0]["pageSize"], "2MB");
        assert_eq!(out["hugepageLimits"][0]["limit"], 4 << 20);
        assert_eq!(out["unified"]["memory.high"], "1000000");
        let out = Value::Object(resources(Some(&r), false).unwrap());
        assert!(out["memory"]["swap"].is_null());
        let r2 = cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 128 << 20,
            ..Default::default()
        };
        let out = Value::Object(resources(Some(&r2), true).unwrap());
        assert_eq!(out["memory"]["swap"], 128 << 20);
        assert!(resources(None, true).unwrap().is_empty());
        let bad = cri::LinuxContainerResources {
            cpu_shares: -1,
            ..Default::default()
        };
        let e = resources(Some(&bad), true).unwrap_err().to_string();
        assert!(e.starts_with("config.linux.resources.cpu_shares:"), "{e}");

        // Through generate: the typed spec holds them.
        let mut f = Fixture::new();
        *f.res() = r;
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
    }

    #[test]
    fn devices_from_host_paths() {
        let mut f = Fixture::new();
        f.config.devices = vec![cri::Device {
            container_path: "/dev/mynull".into(),
            host_path: "/dev/null".into(),
            permissions: "rw".into(),
        }];
        let spec = f.json();
        let d = &spec["linux"]["devices"][0];
        assert_eq!(d["path"], "/dev/mynull");
        assert_eq!(d["type"], "c");
        assert_eq!(
            (d["major"].as_i64(), d["minor"].as_i64()),
            (Some(1), Some(3))
        );
        let rules = spec["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(rules[0]["allow"], false);
        assert_eq!(rules[1]["allow"], true);
        assert_eq!(rules[1]["access"], "rw");
        assert_eq!(
            (rules[1]["major"].as_i64(), rules[1]["minor"].as_i64()),
            (Some(1), Some(3))
        );

        f.config.devices[0].permissions = "rwx".into();
        assert!(f.err().starts_with("config.devices[0].permissions:"));
        f.config.devices[0].permissions = String::new();
        f.config.devices[0].host_path = "/dev/does-not-exist".into();
        assert!(f.err().starts_with("config.devices[0].host_path:"));
        f.config.devices[0].host_path = f.rootfs.join("etc/passwd").to_str().unwrap().into();
        assert!(f.err().contains("is not a device"));
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
    fn id_files_tolerate_garbage_and_symlink_loops() {
        let p = parse_passwd("bad\n:x:y:z\nok:x:5:6:g:/h:/bin/sh\nshort:x:7:8\n");
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].uid, p[0].gid, p[0].home.as_str()), (5, 6, "/h"));
        assert_eq!((p[1].uid, p[1].home.as_str()), (7, ""));
        let g = parse_group("g:x:9:a, b,,c\nbad\nh:x:10\n");
        assert_eq!(g[0].members, v(&["a", "b", "c"]));
        assert!(g[1].members.is_empty());

        let mut f = Fixture::new();
        let passwd = f.rootfs.join("etc/passwd");
        std::fs::remove_file(&passwd).unwrap();
        symlink("/etc/passwd", &passwd).unwrap();
        f.image.user = "app".into();
        let e = f.generate().unwrap_err();
        assert!(matches!(e, CriError::Internal(_)), "{e}");
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
    fn host_probes() {
        assert_eq!(
            cap_eff_has("Name:\tx\nCapEff:\t0000000001000000\n", 24),
            Some(true)
        );
        assert_eq!(cap_eff_has("CapEff:\t0000000000000000\n", 24), Some(false));
        assert_eq!(cap_eff_has("nothing", 24), None);
        let own = own_oom_score_adj();
        assert!((-1000..=1000).contains(&own));
        let _ = host_can_set_negative_oom_score_adj();
    }
}

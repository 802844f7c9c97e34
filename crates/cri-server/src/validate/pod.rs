//! RunPodSandbox: the checks of a pod sandbox request, before anything is made.

use std::net::IpAddr;

use crius_cri_api::v1::{
    DnsConfig, LinuxPodSandboxConfig, NamespaceMode, PodSandboxConfig, PortMapping, Protocol,
};

use crate::config::Config;
use crate::error::{CriError, CriResult};
use crate::pinns::{IdMap, UserMaps};

/// Longest accepted metadata value (Kubernetes object names are at most 253).
const MAX_NAME: usize = 253;
/// Linux HOST_NAME_MAX.
const MAX_HOSTNAME: usize = 64;

/// A pod sandbox request that passed validation.
#[derive(Debug, Clone)]
pub struct ValidPod {
    pub config: PodSandboxConfig,
    /// `name_namespace_uid_attempt`.
    pub reserved_name: String,
    /// The handler to use (the default when the request named none).
    pub runtime_handler: String,
    pub host_network: bool,
    pub host_ipc: bool,
    /// The pod shares one PID namespace among its containers.
    pub pod_pid: bool,
    /// The maps of the pod's own user namespace (`hostUsers: false`); `None`: the
    /// host's.
    pub userns: Option<UserMaps>,
}

fn component(field: &str, value: &str, may_be_empty: bool) -> CriResult<()> {
    if value.is_empty() {
        if may_be_empty {
            return Ok(());
        }
        return Err(CriError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_NAME {
        return Err(CriError::invalid(
            field,
            format!(
                "is {} bytes long; at most {MAX_NAME} are allowed",
                value.len()
            ),
        ));
    }
    if value.contains(char::is_control) {
        return Err(CriError::invalid(
            field,
            format!("{value:?} must not contain control characters (NUL, line breaks, ...)"),
        ));
    }
    if value.contains('/') {
        return Err(CriError::invalid(
            field,
            format!("{value:?} must not contain '/': it becomes a path component"),
        ));
    }
    if value == "." || value == ".." {
        return Err(CriError::invalid(
            field,
            format!("{value:?} is not a usable path component"),
        ));
    }
    Ok(())
}

fn no_line_breaks(field: &str, value: &str) -> CriResult<()> {
    if value.contains(['\0', '\n', '\r']) {
        return Err(CriError::invalid(
            field,
            format!("{value:?} must not contain NUL or line breaks"),
        ));
    }
    Ok(())
}

fn namespace_mode(field: &str, value: i32) -> CriResult<NamespaceMode> {
    NamespaceMode::try_from(value)
        .map_err(|_| CriError::invalid(field, format!("unknown namespace mode {value}")))
}

/// Checks a RunPodSandbox request.
pub fn pod_sandbox(
    config: Option<PodSandboxConfig>,
    runtime_handler: &str,
    cfg: &Config,
) -> CriResult<ValidPod> {
    let config = config.ok_or_else(|| CriError::invalid("config", "is required"))?;
    let metadata = config
        .metadata
        .clone()
        .ok_or_else(|| CriError::invalid("config.metadata", "is required"))?;
    component("config.metadata.name", &metadata.name, false)?;
    component("config.metadata.namespace", &metadata.namespace, false)?;
    component("config.metadata.uid", &metadata.uid, false)?;
    hostname(&config.hostname)?;
    if !config.log_directory.is_empty() {
        no_line_breaks("config.log_directory", &config.log_directory)?;
        if !config.log_directory.starts_with('/') {
            return Err(CriError::invalid(
                "config.log_directory",
                format!("{:?} must be an absolute path", config.log_directory),
            ));
        }
    }
    if let Some(dns) = &config.dns_config {
        dns_config(dns)?;
    }
    for (i, pm) in config.port_mappings.iter().enumerate() {
        port_mapping(i, pm)?;
    }
    let modes = match &config.linux {
        Some(linux) => linux_config(linux)?,
        None => Modes::default(),
    };
    let runtime_handler = handler(runtime_handler, cfg)?;
    let reserved_name = format!(
        "{}_{}_{}_{}",
        metadata.name, metadata.namespace, metadata.uid, metadata.attempt
    );
    Ok(ValidPod {
        config,
        reserved_name,
        runtime_handler,
        host_network: modes.host_network,
        host_ipc: modes.host_ipc,
        pod_pid: modes.pod_pid,
        userns: modes.userns,
    })
}

fn hostname(hostname: &str) -> CriResult<()> {
    if hostname.len() > MAX_HOSTNAME {
        return Err(CriError::invalid(
            "config.hostname",
            format!(
                "is {} bytes long; at most {MAX_HOSTNAME} are allowed",
                hostname.len()
            ),
        ));
    }
    if hostname.contains(|c: char| c == '\0' || c == '/' || c.is_whitespace()) {
        return Err(CriError::invalid(
            "config.hostname",
            format!("{hostname:?} must not contain NUL, '/' or white space"),
        ));
    }
    Ok(())
}

fn dns_config(dns: &DnsConfig) -> CriResult<()> {
    for (i, server) in dns.servers.iter().enumerate() {
        if server.parse::<IpAddr>().is_err() {
            return Err(CriError::invalid(
                format!("config.dns_config.servers[{i}]"),
                format!("{server:?} is not an IP address"),
            ));
        }
    }
    for (i, search) in dns.searches.iter().enumerate() {
        if search.is_empty() || search.contains(|c: char| c == '\0' || c.is_whitespace()) {
            return Err(CriError::invalid(
                format!("config.dns_config.searches[{i}]"),
                format!("{search:?} must be a non-empty domain without white space"),
            ));
        }
    }
    for (i, option) in dns.options.iter().enumerate() {
        no_line_breaks(&format!("config.dns_config.options[{i}]"), option)?;
    }
    Ok(())
}

fn port_mapping(i: usize, pm: &PortMapping) -> CriResult<()> {
    let field = |f: &str| format!("config.port_mappings[{i}].{f}");
    if Protocol::try_from(pm.protocol).is_err() {
        return Err(CriError::invalid(
            field("protocol"),
            format!("unknown protocol {}", pm.protocol),
        ));
    }
    if !(1..=65535).contains(&pm.container_port) {
        return Err(CriError::invalid(
            field("container_port"),
            format!("{} is not a port number (1-65535)", pm.container_port),
        ));
    }
    if !(0..=65535).contains(&pm.host_port) {
        return Err(CriError::invalid(
            field("host_port"),
            format!("{} is not a port number (0-65535)", pm.host_port),
        ));
    }
    if !pm.host_ip.is_empty() && pm.host_ip.parse::<IpAddr>().is_err() {
        return Err(CriError::invalid(
            field("host_ip"),
            format!("{:?} is not an IP address", pm.host_ip),
        ));
    }
    Ok(())
}

/// Which of the host's namespaces a pod shares.
#[derive(Debug, Default)]
struct Modes {
    host_network: bool,
    host_ipc: bool,
    pod_pid: bool,
    userns: Option<UserMaps>,
}

/// The user namespace a pod asks for: `NODE` (or none) is the host's; `POD` a new
/// one with exactly one uid and one gid mapping, each mapping the container's root
/// (id 0), within the 32-bit id space. `CONTAINER` and `TARGET` are not modes a
/// user namespace has.
pub fn user_namespace(
    field: &str,
    opts: Option<&crius_cri_api::v1::UserNamespace>,
) -> CriResult<Option<UserMaps>> {
    let Some(u) = opts else {
        return Ok(None);
    };
    let mode = namespace_mode(&format!("{field}.mode"), u.mode)?;
    match mode {
        NamespaceMode::Node => {
            if !u.uids.is_empty() || !u.gids.is_empty() {
                return Err(CriError::invalid(
                    format!("{field}.uids"),
                    "mode NODE uses the host's user namespace: no mappings may be given",
                ));
            }
            Ok(None)
        }
        NamespaceMode::Pod => {
            let one = |name: &str, maps: &[crius_cri_api::v1::IdMapping]| -> CriResult<IdMap> {
                let f = format!("{field}.{name}");
                let [m] = maps else {
                    return Err(CriError::invalid(
                        f,
                        format!("mode POD needs exactly one mapping; {} given", maps.len()),
                    ));
                };
                if m.container_id != 0 {
                    return Err(CriError::invalid(
                        format!("{f}[0].container_id"),
                        format!(
                            "is {}: the mapping must start at container id 0 (the container's root must be mapped)",
                            m.container_id
                        ),
                    ));
                }
                if m.length == 0 {
                    return Err(CriError::invalid(format!("{f}[0].length"), "must not be 0"));
                }
                if u64::from(m.host_id) + u64::from(m.length) > u64::from(u32::MAX) {
                    return Err(CriError::invalid(
                        format!("{f}[0]"),
                        format!(
                            "host ids {}..{} leave the 32-bit id space",
                            m.host_id,
                            u64::from(m.host_id) + u64::from(m.length)
                        ),
                    ));
                }
                Ok(IdMap {
                    container: m.container_id,
                    host: m.host_id,
                    size: m.length,
                })
            };
            Ok(Some(UserMaps {
                uids: vec![one("uids", &u.uids)?],
                gids: vec![one("gids", &u.gids)?],
            }))
        }
        other => Err(CriError::invalid(
            format!("{field}.mode"),
            format!(
                "{}: a user namespace is the host's (NODE) or the pod's own (POD)",
                other.as_str_name()
            ),
        )),
    }
}

/// The cgroup parent, the namespace modes, and the sysctls (which depend on the
/// modes: only namespaced ones the pod owns are allowed).
fn linux_config(linux: &LinuxPodSandboxConfig) -> CriResult<Modes> {
    if linux.cgroup_parent.contains('\0') {
        return Err(CriError::invalid(
            "config.linux.cgroup_parent",
            "must not contain a NUL byte",
        ));
    }
    let mut modes = Modes::default();
    if let Some(ns) = linux
        .security_context
        .as_ref()
        .and_then(|s| s.namespace_options.as_ref())
    {
        let prefix = "config.linux.security_context.namespace_options";
        let mode = |f: &str, v: i32| namespace_mode(&format!("{prefix}.{f}"), v);
        modes.host_network = mode("network", ns.network)? == NamespaceMode::Node;
        modes.host_ipc = mode("ipc", ns.ipc)? == NamespaceMode::Node;
        modes.pod_pid = mode("pid", ns.pid)? == NamespaceMode::Pod;
        modes.userns = user_namespace(
            &format!("{prefix}.userns_options"),
            ns.userns_options.as_ref(),
        )?;
        if modes.userns.is_some() && modes.host_network {
            return Err(CriError::invalid(
                format!("{prefix}.userns_options"),
                "a pod with its own user namespace cannot use the host's network (the runtime does not support user namespaces with host network)",
            ));
        }
    }
    // A host-network pod has the host's UTS namespace too.
    let own = crius_spec::OwnNamespaces {
        network: !modes.host_network,
        ipc: !modes.host_ipc,
        uts: !modes.host_network,
    };
    for (key, value) in &linux.sysctls {
        let field = format!("config.linux.sysctls[{key}]");
        crius_spec::check_sysctl(&field, key, value, own)?;
    }
    Ok(modes)
}

/// The handler to use: the request's, or the default; it must be configured.
fn handler(requested: &str, cfg: &Config) -> CriResult<String> {
    let name = if requested.is_empty() {
        cfg.default_runtime.clone()
    } else {
        requested.to_string()
    };
    if !cfg.runtimes.contains_key(&name) {
        return Err(CriError::invalid(
            "runtime_handler",
            format!(
                "{name:?} is not a configured runtime handler (configured: {})",
                cfg.runtimes.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crius_cri_api::v1::{
        DnsConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceOption,
        PodSandboxMetadata, PortMapping,
    };

    fn base() -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "nginx-sandbox".into(),
                namespace: "default".into(),
                uid: "hdishd83djaidwnduwk28bcsb".into(),
                attempt: 1,
            }),
            log_directory: "/tmp".into(),
            ..Default::default()
        }
    }

    fn field_of(r: CriResult<ValidPod>) -> String {
        match r {
            Err(CriError::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn crictl_example_is_accepted() {
        let v = pod_sandbox(Some(base()), "", &Config::default()).unwrap();
        assert_eq!(
            v.reserved_name,
            "nginx-sandbox_default_hdishd83djaidwnduwk28bcsb_1"
        );
        assert_eq!(v.runtime_handler, "runc");
        assert!(!v.host_network);
    }

    #[test]
    fn kubelet_shaped_config_is_accepted() {
        let mut c = base();
        c.hostname = "web-0".into();
        c.log_directory = "/var/log/pods/default_web-0_0b1c".into();
        c.dns_config = Some(DnsConfig {
            servers: vec!["10.96.0.10".into(), "fd00::a".into()],
            searches: vec!["default.svc.cluster.local".into(), "cluster.local".into()],
            options: vec!["ndots:5".into()],
        });
        c.port_mappings = vec![PortMapping {
            protocol: 1,
            container_port: 53,
            host_port: 0,
            host_ip: String::new(),
        }];
        c.linux = Some(LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods/besteffort/pod0b1c".into(),
            // A host-network pod (network: NODE) may set IPC sysctls only: its own IPC
            // namespace (ipc: POD) is the pod's, its network namespace the host's.
            sysctls: [("kernel.shm_rmid_forced".to_string(), "1".to_string())]
                .into_iter()
                .collect(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: 2,
                    pid: 1,
                    ipc: 0,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let v = pod_sandbox(Some(c), "crun", &Config::default()).unwrap();
        assert!(v.host_network);
        assert!(!v.host_ipc);
        assert_eq!(v.runtime_handler, "crun");
    }

    #[test]
    fn bad_metadata_names_the_field() {
        for (mutate, want) in [
            (
                (|m: &mut PodSandboxMetadata| m.name.clear()) as fn(&mut PodSandboxMetadata),
                "config.metadata.name",
            ),
            (|m| m.namespace.clear(), "config.metadata.namespace"),
            (|m| m.uid.clear(), "config.metadata.uid"),
            (|m| m.name = "a/b".into(), "config.metadata.name"),
            (|m| m.namespace = "a\0b".into(), "config.metadata.namespace"),
            // A line break would forge lines in criusd's own log.
            (
                |m| m.name = "web\n2026-01-01T00:00:00Z INFO forged".into(),
                "config.metadata.name",
            ),
            (|m| m.uid = "u\r1".into(), "config.metadata.uid"),
            (|m| m.uid = "..".into(), "config.metadata.uid"),
        ] {
            let mut c = base();
            mutate(c.metadata.as_mut().unwrap());
            assert_eq!(field_of(pod_sandbox(Some(c), "", &Config::default())), want);
        }
        let mut c = base();
        c.metadata = None;
        assert_eq!(
            field_of(pod_sandbox(Some(c), "", &Config::default())),
            "config.metadata"
        );
        assert_eq!(
            field_of(pod_sandbox(None, "", &Config::default())),
            "config"
        );
    }

    fn with_sysctl(name: &str, value: &str, host_network: bool) -> PodSandboxConfig {
        let mut c = base();
        c.linux = Some(LinuxPodSandboxConfig {
            sysctls: [(name.to_string(), value.to_string())]
                .into_iter()
                .collect(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: if host_network { 2 } else { 0 },
                    pid: 1,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        c
    }

    #[test]
    fn namespaced_sysctls_are_accepted() {
        for name in [
            "net.ipv4.ip_unprivileged_port_start",
            "kernel.shm_rmid_forced",
            "net/ipv4/ping_group_range",
        ] {
            let c = with_sysctl(name, "0", false);
            pod_sandbox(Some(c), "", &Config::default()).unwrap();
        }
        // IPC sysctls need only the pod's own IPC namespace.
        let c = with_sysctl("kernel.shm_rmid_forced", "1", true);
        pod_sandbox(Some(c), "", &Config::default()).unwrap();
    }

    #[test]
    fn other_sysctls_are_refused_naming_them() {
        for (name, value, host_network) in [
            ("kernel.panic", "1", false),
            ("foo.bar", "1", false),
            ("net/../../kernel/panic", "1", false),
            ("net.ipv4.ip_forward", "1\n", false),
            ("net.ipv4.ip_forward", "1", true),
        ] {
            let c = with_sysctl(name, value, host_network);
            assert_eq!(
                field_of(pod_sandbox(Some(c), "", &Config::default())),
                format!("config.linux.sysctls[{name}]"),
                "{name:?}={value:?}"
            );
        }
    }

    #[test]
    fn other_bad_fields_are_named() {
        let mut c = base();
        c.hostname = "a b".into();
        assert_eq!(
            field_of(pod_sandbox(Some(c), "", &Config::default())),
            "config.hostname"
        );
        let mut c = base();
        c.log_directory = "relative/dir".into();
        assert_eq!(
            field_of(pod_sandbox(Some(c), "", &Config::default())),
            "config.log_directory"
        );
        let mut c = base();
        c.dns_config = Some(DnsConfig {
            servers: vec!["1.1.1.1".into(), "dns.example".into()],
            ..Default::default()
        });
        assert_eq!(
            field_of(pod_sandbox(Some(c), "", &Config::default())),
            "config.dns_config.servers[1]"
        );
        let mut c = base();
        c.dns_config = Some(DnsConfig {
            options: vec!["ndots:5\nnameserver 6.6.6.6".into()],
            ..Default::default()
        });
        assert_eq!(
            field_of(pod_sandbox(Some(c), "", &Config::default())),
            "config.dns_config.options[0]"
        );
        let mut c = base();
        c.port_mappings = vec![PortMapping {
            container_port: 70000,
            ..Default::default()
        }];
        assert_eq!(
            field_of(pod_sandbox(Some(c), "", &Config::default())),
            "config.port_mappings[0].container_port"
        );
        assert_eq!(
            field_of(pod_sandbox(Some(base()), "kata", &Config::default())),
            "runtime_handler"
        );
        let mut c = base();
        c.linux = Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: 9,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(
            field_of(pod_sandbox(Some(c), "", &Config::default())),
            "config.linux.security_context.namespace_options.network"
        );
    }

    #[test]
    fn user_namespaces_pod_with_one_root_mapping_node_without() {
        use crius_cri_api::v1::{IdMapping, UserNamespace};
        let f = "config.linux.security_context.namespace_options.userns_options";
        let map = |c, h, l| IdMapping {
            container_id: c,
            host_id: h,
            length: l,
        };
        let with = |u: UserNamespace, mode: NamespaceMode| {
            let mut c = base();
            c.linux = Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: mode as i32,
                        userns_options: Some(u),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
            pod_sandbox(Some(c), "", &Config::default())
        };
        let pod = |uids: Vec<IdMapping>, gids: Vec<IdMapping>| UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids,
            gids,
        };
        let ok = with(
            pod(vec![map(0, 1000, 100000)], vec![map(0, 2000, 100000)]),
            NamespaceMode::Pod,
        )
        .unwrap();
        let maps = ok.userns.unwrap();
        assert_eq!(maps.root_on_host(), Some((1000, 2000)));
        assert_eq!(
            maps.uids,
            vec![IdMap {
                container: 0,
                host: 1000,
                size: 100000
            }]
        );
        let node = UserNamespace {
            mode: NamespaceMode::Node as i32,
            ..Default::default()
        };
        assert!(
            with(node.clone(), NamespaceMode::Pod)
                .unwrap()
                .userns
                .is_none()
        );
        for (u, mode, field) in [
            (
                pod(
                    vec![map(0, 1000, 100000), map(0, 2000, 100000)],
                    vec![map(0, 1000, 100000)],
                ),
                NamespaceMode::Pod,
                format!("{f}.uids"),
            ),
            (
                pod(vec![map(0, 1000, 10)], vec![]),
                NamespaceMode::Pod,
                format!("{f}.gids"),
            ),
            (
                pod(vec![map(1, 1000, 100000)], vec![map(0, 1000, 100000)]),
                NamespaceMode::Pod,
                format!("{f}.uids[0].container_id"),
            ),
            (
                pod(vec![map(0, 1000, 0)], vec![map(0, 1000, 1)]),
                NamespaceMode::Pod,
                format!("{f}.uids[0].length"),
            ),
            (
                pod(vec![map(0, u32::MAX - 5, 10)], vec![map(0, 1000, 1)]),
                NamespaceMode::Pod,
                format!("{f}.uids[0]"),
            ),
            (
                UserNamespace {
                    mode: NamespaceMode::Container as i32,
                    ..Default::default()
                },
                NamespaceMode::Pod,
                format!("{f}.mode"),
            ),
            (
                UserNamespace {
                    mode: NamespaceMode::Target as i32,
                    ..Default::default()
                },
                NamespaceMode::Pod,
                format!("{f}.mode"),
            ),
            (
                UserNamespace {
                    uids: vec![map(0, 0, 1)],
                    ..node.clone()
                },
                NamespaceMode::Pod,
                format!("{f}.uids"),
            ),
            (
                pod(vec![map(0, 1000, 10)], vec![map(0, 1000, 10)]),
                NamespaceMode::Node,
                f.to_string(),
            ),
        ] {
            assert_eq!(field_of(with(u, mode)), field);
        }
    }
}

//! Pod sysctls: only those the kernel namespaces (as runc allows them), and only when
//! the pod has the namespace of its own, so that a pod cannot change the node.
//!
//! - `kernel.shm_rmid_forced`, `kernel.shmall`, `kernel.shmmax`, `kernel.shmmni`,
//!   `kernel.msgmax`, `kernel.msgmnb`, `kernel.msgmni`, `kernel.sem`, `fs.mqueue.*`:
//!   the pod's own IPC namespace;
//! - `net.*`: the pod's own network namespace;
//! - `kernel.hostname`, `kernel.domainname`: the pod's own UTS namespace.
//!
//! Names use `.` or `/` as separators (`/` is read as `.`), without empty or `..`
//! components, NUL or white space; values are non-empty, without NUL or newline.

use crate::error::{SpecError, invalid};

/// The IPC sysctls of the `kernel.` tree.
const IPC_KERNEL: &[&str] = &[
    "kernel.shm_rmid_forced",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
];

/// Which namespaces a pod has of its own (not the host's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnNamespaces {
    pub network: bool,
    pub ipc: bool,
    pub uts: bool,
}

/// Checks one pod sysctl `name` = `value`; `field` names it in the request (e.g.
/// `config.linux.sysctls[net.ipv4.ip_forward]`). Returns the name with `.` separators.
pub fn check_sysctl(
    field: &str,
    name: &str,
    value: &str,
    own: OwnNamespaces,
) -> Result<String, SpecError> {
    if name.is_empty() || name.contains(|c: char| c == '\0' || c.is_whitespace()) {
        return Err(invalid(
            field,
            format!("{name:?} is not a sysctl name (empty, or holds NUL or white space)"),
        ));
    }
    let dotted = name.replace('/', ".");
    if dotted.split('.').any(|c| c.is_empty() || c == "..") {
        return Err(invalid(
            field,
            format!("{name:?} is not a sysctl name (an empty or '..' component)"),
        ));
    }
    let (needs, has) = if IPC_KERNEL.contains(&dotted.as_str()) || dotted.starts_with("fs.mqueue.")
    {
        ("IPC", own.ipc)
    } else if dotted.starts_with("net.") {
        ("network", own.network)
    } else if dotted == "kernel.hostname" || dotted == "kernel.domainname" {
        ("UTS", own.uts)
    } else {
        return Err(invalid(
            field,
            format!("{name:?} is not a namespaced sysctl: a pod cannot set it"),
        ));
    };
    if !has {
        return Err(invalid(
            field,
            format!("{name:?} needs the pod's own {needs} namespace; this pod uses the host's"),
        ));
    }
    if value.is_empty() || value.contains(['\0', '\n']) {
        return Err(invalid(
            field,
            format!("{value:?} is not a sysctl value (empty, or holds NUL or a newline)"),
        ));
    }
    Ok(dotted)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: OwnNamespaces = OwnNamespaces {
        network: true,
        ipc: true,
        uts: true,
    };

    fn check(name: &str, value: &str, own: OwnNamespaces) -> Result<String, SpecError> {
        check_sysctl(&format!("config.linux.sysctls[{name}]"), name, value, own)
    }

    #[test]
    fn namespaced_sysctls_are_accepted() {
        for (name, dotted) in [
            (
                "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.ip_unprivileged_port_start",
            ),
            ("net/ipv4/ping_group_range", "net.ipv4.ping_group_range"),
            ("kernel.shm_rmid_forced", "kernel.shm_rmid_forced"),
            ("kernel/sem", "kernel.sem"),
            ("fs.mqueue.msg_max", "fs.mqueue.msg_max"),
            ("kernel.hostname", "kernel.hostname"),
            ("kernel.domainname", "kernel.domainname"),
        ] {
            assert_eq!(check(name, "1", ALL).unwrap(), dotted, "{name}");
        }
        check("net.ipv4.ping_group_range", "0 2147483647", ALL).unwrap();
    }

    #[test]
    fn other_sysctls_and_bad_names_are_refused() {
        for name in [
            "kernel.panic",
            "foo.bar",
            "net/../../kernel/panic",
            "net..ipv4",
            "net.",
            ".net.ipv4",
            "net",
            "fs.mqueue",
            "kernel.shm",
            "vm.overcommit_memory",
            "",
            "net.ipv4.a b",
            "net.ipv4\0x",
        ] {
            let e = check(name, "1", ALL).unwrap_err();
            assert!(matches!(e, SpecError::InvalidField { .. }), "{name:?}");
            assert_eq!(
                e.field(),
                Some(format!("config.linux.sysctls[{name}]").as_str())
            );
        }
    }

    #[test]
    fn bad_values_are_refused() {
        for value in ["", "1\n2", "1\0"] {
            assert!(
                check("net.ipv4.ip_forward", value, ALL).is_err(),
                "{value:?}"
            );
        }
    }

    #[test]
    fn each_sysctl_needs_its_own_namespace() {
        let host_net = OwnNamespaces {
            network: false,
            uts: false,
            ..ALL
        };
        let e = check("net.ipv4.ip_forward", "1", host_net).unwrap_err();
        assert!(e.to_string().contains("network namespace"), "{e}");
        assert!(check("kernel.hostname", "x", host_net).is_err());
        check("kernel.shm_rmid_forced", "1", host_net).unwrap();
        let host_ipc = OwnNamespaces { ipc: false, ..ALL };
        assert!(check("kernel.msgmax", "1", host_ipc).is_err());
        assert!(check("fs.mqueue.queues_max", "1", host_ipc).is_err());
        check("net.core.somaxconn", "1", host_ipc).unwrap();
    }
}

//! process.capabilities: containerd's default set, changed by the security context's
//! add/drop lists in containerd's order, and never beyond the daemon's bounding set.

use std::collections::BTreeSet;

use crius_cri_api::v1 as cri;
use oci_spec::OciSpecError;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, LinuxCapabilitiesBuilder};

use crate::SC;
use crate::error::{Result, build, invalid};

/// containerd's default capability set: what an unprivileged container holds unless
/// its security context adds or drops some.
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
pub(crate) const ALL_CAPABILITIES: &[&str] = &[
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

/// The capabilities in the kernel's order: index n is capability number n (its bit in
/// the capability sets).
const KERNEL_ORDER: [(&str, Capability); 41] = [
    ("CAP_CHOWN", Capability::Chown),
    ("CAP_DAC_OVERRIDE", Capability::DacOverride),
    ("CAP_DAC_READ_SEARCH", Capability::DacReadSearch),
    ("CAP_FOWNER", Capability::Fowner),
    ("CAP_FSETID", Capability::Fsetid),
    ("CAP_KILL", Capability::Kill),
    ("CAP_SETGID", Capability::Setgid),
    ("CAP_SETUID", Capability::Setuid),
    ("CAP_SETPCAP", Capability::Setpcap),
    ("CAP_LINUX_IMMUTABLE", Capability::LinuxImmutable),
    ("CAP_NET_BIND_SERVICE", Capability::NetBindService),
    ("CAP_NET_BROADCAST", Capability::NetBroadcast),
    ("CAP_NET_ADMIN", Capability::NetAdmin),
    ("CAP_NET_RAW", Capability::NetRaw),
    ("CAP_IPC_LOCK", Capability::IpcLock),
    ("CAP_IPC_OWNER", Capability::IpcOwner),
    ("CAP_SYS_MODULE", Capability::SysModule),
    ("CAP_SYS_RAWIO", Capability::SysRawio),
    ("CAP_SYS_CHROOT", Capability::SysChroot),
    ("CAP_SYS_PTRACE", Capability::SysPtrace),
    ("CAP_SYS_PACCT", Capability::SysPacct),
    ("CAP_SYS_ADMIN", Capability::SysAdmin),
    ("CAP_SYS_BOOT", Capability::SysBoot),
    ("CAP_SYS_NICE", Capability::SysNice),
    ("CAP_SYS_RESOURCE", Capability::SysResource),
    ("CAP_SYS_TIME", Capability::SysTime),
    ("CAP_SYS_TTY_CONFIG", Capability::SysTtyConfig),
    ("CAP_MKNOD", Capability::Mknod),
    ("CAP_LEASE", Capability::Lease),
    ("CAP_AUDIT_WRITE", Capability::AuditWrite),
    ("CAP_AUDIT_CONTROL", Capability::AuditControl),
    ("CAP_SETFCAP", Capability::Setfcap),
    ("CAP_MAC_OVERRIDE", Capability::MacOverride),
    ("CAP_MAC_ADMIN", Capability::MacAdmin),
    ("CAP_SYSLOG", Capability::Syslog),
    ("CAP_WAKE_ALARM", Capability::WakeAlarm),
    ("CAP_BLOCK_SUSPEND", Capability::BlockSuspend),
    ("CAP_AUDIT_READ", Capability::AuditRead),
    ("CAP_PERFMON", Capability::Perfmon),
    ("CAP_BPF", Capability::Bpf),
    ("CAP_CHECKPOINT_RESTORE", Capability::CheckpointRestore),
];

/// The kernel's number of a capability (its bit in the capability sets).
pub(crate) fn cap_number(name: &str) -> Option<u32> {
    KERNEL_ORDER
        .iter()
        .position(|(c, _)| *c == name)
        .and_then(|i| u32::try_from(i).ok())
}

fn in_bounding_set(name: &str, bounding: u64) -> bool {
    cap_number(name).is_none_or(|n| n < 64 && bounding & (1u64 << n) != 0)
}

/// A capability name as the request gives it (`net_admin`, `CAP_NET_ADMIN`), checked
/// and in the canonical `CAP_` form.
fn cap_name(field: &str, raw: &str) -> Result<String> {
    let upper = raw.trim().to_ascii_uppercase();
    let name = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPABILITIES.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(invalid(field, format!("{raw:?} is not a known capability")))
    }
}

fn is_all(s: &str) -> bool {
    s.trim().eq_ignore_ascii_case("ALL")
}

/// The capability set: containerd's order — add ALL, drop ALL, add each, drop each.
pub(crate) fn capabilities(
    sc: &cri::LinuxContainerSecurityContext,
    bounding: u64,
) -> Result<BTreeSet<String>> {
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
                return Err(invalid(
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

/// The ambient capabilities the security context adds.
pub(crate) fn ambient_capabilities(
    sc: &cri::LinuxContainerSecurityContext,
) -> Result<BTreeSet<String>> {
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

fn oci_set(names: &BTreeSet<String>) -> Result<Capabilities> {
    names
        .iter()
        .map(|n| {
            KERNEL_ORDER
                .iter()
                .find(|(c, _)| c == n)
                .map(|(_, cap)| *cap)
                .ok_or_else(|| {
                    build("capabilities")(OciSpecError::Other(format!(
                        "{n} is not a capability oci-spec knows"
                    )))
                })
        })
        .collect()
}

/// process.capabilities: `bounding` as the bounding, effective and permitted sets;
/// `ambient` (when any) as the inheritable and ambient sets.
pub(crate) fn linux_capabilities(
    bounding: &BTreeSet<String>,
    ambient: &BTreeSet<String>,
) -> Result<LinuxCapabilities> {
    let set = oci_set(bounding)?;
    let mut caps = LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set)
        .build()
        .map_err(build("capabilities"))?;
    // The builder starts from oci-spec's default sets; only what is set here stays.
    if ambient.is_empty() {
        caps.set_inheritable(None);
        caps.set_ambient(None);
    } else {
        let ambient = oci_set(ambient)?;
        caps.set_inheritable(Some(ambient.clone()));
        caps.set_ambient(Some(ambient));
    }
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SpecError;

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn sc(add: &[&str], drop: &[&str]) -> cri::LinuxContainerSecurityContext {
        cri::LinuxContainerSecurityContext {
            capabilities: Some(cri::Capability {
                add_capabilities: v(add),
                drop_capabilities: v(drop),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn capabilities_add_drop_all() {
        let defaults: BTreeSet<String> =
            DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
        let none = cri::LinuxContainerSecurityContext::default();
        assert_eq!(capabilities(&none, u64::MAX).unwrap(), defaults);
        let c = capabilities(
            &sc(&["NET_ADMIN", "cap_sys_time"], &["CAP_CHOWN", "kill"]),
            u64::MAX,
        )
        .unwrap();
        assert!(c.contains("CAP_NET_ADMIN") && c.contains("CAP_SYS_TIME"));
        assert!(!c.contains("CAP_CHOWN") && !c.contains("CAP_KILL"));
        assert!(c.contains("CAP_SETUID"));
        let c = capabilities(&sc(&["ALL"], &["SYS_ADMIN"]), u64::MAX).unwrap();
        assert_eq!(c.len(), ALL_CAPABILITIES.len() - 1);
        assert!(!c.contains("CAP_SYS_ADMIN"));
        let c = capabilities(&sc(&["NET_BIND_SERVICE"], &["all"]), u64::MAX).unwrap();
        assert_eq!(c, ["CAP_NET_BIND_SERVICE".to_string()].into());
        let e = capabilities(&sc(&[], &["CHOWN", "NOT_A_CAP"]), u64::MAX).unwrap_err();
        assert_eq!(
            e.field(),
            Some("config.linux.security_context.capabilities.drop_capabilities[1]")
        );
    }

    #[test]
    fn capabilities_stay_within_the_bounding_set() {
        // A node whose root lacks CAP_SYS_RESOURCE (bit 24), like the dev VMs.
        let bounding = !(1 << 24);
        let privileged = cri::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        };
        let c = capabilities(&privileged, bounding).unwrap();
        assert!(!c.contains("CAP_SYS_RESOURCE"));
        assert_eq!(c.len(), ALL_CAPABILITIES.len() - 1);
        let c = capabilities(&sc(&["ALL"], &[]), bounding).unwrap();
        assert!(!c.contains("CAP_SYS_RESOURCE"));
        let e = capabilities(&sc(&["SYS_RESOURCE"], &[]), bounding).unwrap_err();
        assert_eq!(
            e.field(),
            Some("config.linux.security_context.capabilities.add_capabilities[0]")
        );
        assert!(matches!(e, SpecError::InvalidField { .. }));
        assert_eq!(cap_number("CAP_CHOWN"), Some(0));
        assert_eq!(cap_number("CAP_SYS_RESOURCE"), Some(24));
        assert_eq!(cap_number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(cap_number("CAP_NOPE"), None);
    }

    #[test]
    fn every_capability_converts_to_its_oci_name() {
        assert_eq!(KERNEL_ORDER.len(), ALL_CAPABILITIES.len());
        let all: BTreeSet<String> = ALL_CAPABILITIES.iter().map(|s| s.to_string()).collect();
        let set = oci_set(&all).unwrap();
        assert_eq!(set.len(), ALL_CAPABILITIES.len());
        for cap in set {
            let name = serde_json::to_value(cap).unwrap();
            assert!(all.contains(name.as_str().unwrap()), "{name}");
        }
        for name in DEFAULT_CAPABILITIES {
            assert!(ALL_CAPABILITIES.contains(name), "{name}");
        }
    }

    #[test]
    fn ambient_sets_are_present_only_when_asked() {
        let bounding: BTreeSet<String> = ["CAP_KILL".to_string()].into();
        let c = linux_capabilities(&bounding, &BTreeSet::new()).unwrap();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["bounding"], serde_json::json!(["CAP_KILL"]));
        assert_eq!(v["effective"], v["bounding"]);
        assert_eq!(v["permitted"], v["bounding"]);
        assert!(v.get("inheritable").is_none() && v.get("ambient").is_none());
        let ambient: BTreeSet<String> = ["CAP_NET_RAW".to_string()].into();
        let c = linux_capabilities(&bounding, &ambient).unwrap();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["ambient"], serde_json::json!(["CAP_NET_RAW"]));
        assert_eq!(v["inheritable"], v["ambient"]);
    }
}

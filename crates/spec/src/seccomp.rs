//! linux.seccomp: the security context's profile — none (unconfined, and always for a
//! privileged container), the built-in `RuntimeDefault` profile, or a `Localhost`
//! profile read from a JSON file.
//!
//! # The built-in profile
//!
//! Docker's and containerd's default profiles are allowlists (default `SCMP_ACT_ERRNO`,
//! about 350 syscalls allowed). crius ships a blocklist instead: the default action is
//! `SCMP_ACT_ALLOW` and the syscalls those profiles refuse to an unprivileged container
//! return `EPERM`. Both policies refuse the same dangerous calls; the difference is that a
//! syscall newer than this list is allowed here and refused there. The exceptions follow
//! Docker's profile: a syscall guarded by a capability is allowed when the container's
//! bounding set holds that capability (e.g. `CAP_SYS_ADMIN` allows `mount`, `umount2`,
//! `unshare`, `setns`, ...; `CAP_SYS_PTRACE` allows `ptrace`, `process_vm_readv`, ...).
//!
//! Argument filters, as in Docker's profile when `CAP_SYS_ADMIN` is absent:
//! - `clone` with any `CLONE_NEW*` namespace flag → `EPERM` (one rule per flag: the OCI
//!   profile ANDs the conditions of one rule and ORs rules);
//! - `clone3` → `ENOSYS`, so that libc falls back to `clone`, whose flags can be checked;
//! - `personality` with a flag that weakens the address space (`ADDR_NO_RANDOMIZE`,
//!   `READ_IMPLIES_EXEC`, ...) → `EPERM`; the query value `0xffffffff` stays allowed;
//! - `socket(AF_VSOCK, ...)` → `EPERM` always.
//!
//! `architectures` lists the native ABI and its compat ABIs (x86_64 + x86 + x32,
//! aarch64 + arm), so that a 32-bit syscall cannot bypass the list.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crius_cri_api::v1 as cri;
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
    LinuxSyscallBuilder,
};
use serde::Deserialize;
use serde_json::Value;

use crate::SC;
use crate::error::{Result, build, invalid};

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// Syscalls refused unless the container holds one of the capabilities listed.
/// An empty capability list: refused always.
const GUARDED: &[(&[&str], &[&str])] = &[
    // Not namespaced at all, or obsolete: refused even with every capability.
    (
        &[
            "add_key",
            "keyctl",
            "request_key",
            "create_module",
            "get_kernel_syms",
            "query_module",
            "nfsservctl",
            "sysfs",
            "_sysctl",
            "uselib",
            "ustat",
            "vm86",
            "vm86old",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
        ],
        &[],
    ),
    (&["acct"], &["CAP_SYS_PACCT"]),
    (
        &["bpf"],
        &["CAP_SYS_ADMIN", "CAP_BPF"], // either one
    ),
    (
        &["clock_adjtime", "clock_settime", "settimeofday", "stime"],
        &["CAP_SYS_TIME"],
    ),
    (
        &["delete_module", "finit_module", "init_module"],
        &["CAP_SYS_MODULE"],
    ),
    (
        &["get_mempolicy", "mbind", "set_mempolicy", "move_pages"],
        &["CAP_SYS_NICE"],
    ),
    (&["ioperm", "iopl"], &["CAP_SYS_RAWIO"]),
    (
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
            "userfaultfd",
        ],
        &["CAP_SYS_PTRACE"],
    ),
    (
        &["kexec_file_load", "kexec_load", "reboot"],
        &["CAP_SYS_BOOT"],
    ),
    (
        &[
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "pivot_root",
            "quotactl",
            "quotactl_fd",
            "setns",
            "swapoff",
            "swapon",
            "umount",
            "umount2",
            "unshare",
        ],
        &["CAP_SYS_ADMIN"],
    ),
    (&["open_by_handle_at"], &["CAP_DAC_READ_SEARCH"]),
    (&["perf_event_open"], &["CAP_SYS_ADMIN", "CAP_PERFMON"]),
    (&["syslog"], &["CAP_SYSLOG"]),
    (&["chroot"], &["CAP_SYS_CHROOT"]),
    (&["vhangup"], &["CAP_SYS_TTY_CONFIG"]),
];

/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
/// CLONE_NEWPID | CLONE_NEWNET`, one bit each (Docker's mask 0x7E020000).
const CLONE_NS_FLAGS: &[u64] = &[
    0x0002_0000,
    0x0200_0000,
    0x0400_0000,
    0x0800_0000,
    0x1000_0000,
    0x2000_0000,
    0x4000_0000,
];

/// personality(2) flags Docker's profile does not allow.
const PERSONALITY_FLAGS: &[u64] = &[
    0x0004_0000, // ADDR_NO_RANDOMIZE
    0x0008_0000, // FDPIC_FUNCPTRS
    0x0010_0000, // MMAP_PAGE_ZERO
    0x0020_0000, // ADDR_COMPAT_LAYOUT
    0x0040_0000, // READ_IMPLIES_EXEC
    0x0080_0000, // ADDR_LIMIT_32BIT
    0x0100_0000, // SHORT_INODE
    0x0200_0000, // WHOLE_SECONDS
    0x0400_0000, // STICKY_TIMEOUTS
    0x0800_0000, // ADDR_LIMIT_3GB
];

/// AF_VSOCK.
const AF_VSOCK: u64 = 40;

/// A seccomp architecture by its libseccomp name.
fn arch(name: &str) -> Option<Arch> {
    Some(match name {
        "SCMP_ARCH_X86_64" => Arch::ScmpArchX86_64,
        "SCMP_ARCH_X86" => Arch::ScmpArchX86,
        "SCMP_ARCH_X32" => Arch::ScmpArchX32,
        "SCMP_ARCH_AARCH64" => Arch::ScmpArchAarch64,
        "SCMP_ARCH_ARM" => Arch::ScmpArchArm,
        "SCMP_ARCH_RISCV64" => Arch::ScmpArchRiscv64,
        "SCMP_ARCH_S390X" => Arch::ScmpArchS390x,
        "SCMP_ARCH_S390" => Arch::ScmpArchS390,
        "SCMP_ARCH_PPC64LE" => Arch::ScmpArchPpc64le,
        "SCMP_ARCH_PPC64" => Arch::ScmpArchPpc64,
        _ => return None,
    })
}

/// The seccomp architectures for the host: the native ABI and its compat ABIs.
fn architectures() -> Vec<Arch> {
    let names: &[&str] = match std::env::consts::ARCH {
        "x86_64" => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "x86" => &["SCMP_ARCH_X86"],
        "arm" => &["SCMP_ARCH_ARM"],
        "riscv64" => &["SCMP_ARCH_RISCV64"],
        "s390x" => &["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
        "powerpc64" => &["SCMP_ARCH_PPC64LE", "SCMP_ARCH_PPC64"],
        _ => &[],
    };
    names.iter().filter_map(|n| arch(n)).collect()
}

/// A rule returning `errno` for `names`, when every condition of `args` holds.
fn errno_rule(names: &[&str], errno: u32, args: Vec<LinuxSeccompArg>) -> Result<LinuxSyscall> {
    let b = LinuxSyscallBuilder::default()
        .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(errno);
    let b = if args.is_empty() { b } else { b.args(args) };
    b.build().map_err(build("seccomp profile"))
}

/// The condition "argument `index` masked with `mask` equals `value`".
fn masked_eq(index: usize, mask: u64, value: u64) -> Result<LinuxSeccompArg> {
    LinuxSeccompArgBuilder::default()
        .index(index)
        .value(mask)
        .value_two(value)
        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
        .build()
        .map_err(build("seccomp profile"))
}

/// The built-in `RuntimeDefault` profile for a container whose bounding set is `caps`
/// (names with the `CAP_` prefix).
pub(crate) fn default_profile(caps: &BTreeSet<String>) -> Result<LinuxSeccomp> {
    let has = |c: &str| caps.contains(c);
    let mut refused: Vec<&str> = Vec::new();
    for (names, needs) in GUARDED {
        if needs.is_empty() || !needs.iter().any(|c| has(c)) {
            refused.extend_from_slice(names);
        }
    }
    let mut syscalls = vec![errno_rule(&refused, EPERM, vec![])?];
    if !has("CAP_SYS_ADMIN") {
        // On s390x the flags are the second argument.
        let index = if std::env::consts::ARCH == "s390x" {
            1
        } else {
            0
        };
        for flag in CLONE_NS_FLAGS {
            syscalls.push(errno_rule(
                &["clone"],
                EPERM,
                vec![masked_eq(index, *flag, *flag)?],
            )?);
        }
        syscalls.push(errno_rule(&["clone3"], ENOSYS, vec![])?);
    }
    for flag in PERSONALITY_FLAGS {
        // MASKED_EQ with bit 31 in the mask: the flag is set and bit 31 is clear, which
        // keeps the query value 0xffffffff allowed.
        syscalls.push(errno_rule(
            &["personality"],
            EPERM,
            vec![masked_eq(0, flag | 0x8000_0000, *flag)?],
        )?);
    }
    let vsock = LinuxSeccompArgBuilder::default()
        .index(0usize)
        .value(AF_VSOCK)
        .op(LinuxSeccompOperator::ScmpCmpEq)
        .build()
        .map_err(build("seccomp profile"))?;
    syscalls.push(errno_rule(&["socket"], EPERM, vec![vsock])?);
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(architectures())
        .syscalls(syscalls)
        .build()
        .map_err(build("seccomp profile"))
}

/// The Docker/libseccomp names of the host architecture, as `archMap` lists them.
fn host_arch_names() -> &'static [&'static str] {
    match std::env::consts::ARCH {
        "x86_64" => &["SCMP_ARCH_X86_64"],
        "aarch64" => &["SCMP_ARCH_AARCH64"],
        "x86" => &["SCMP_ARCH_X86"],
        "arm" => &["SCMP_ARCH_ARM"],
        "riscv64" => &["SCMP_ARCH_RISCV64"],
        "s390x" => &["SCMP_ARCH_S390X"],
        "powerpc64" => &["SCMP_ARCH_PPC64LE"],
        _ => &[],
    }
}

fn string_list(filter: &Value, key: &str) -> Vec<String> {
    filter
        .get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a Docker-format architecture name is the host's.
fn is_host_arch(name: &str) -> bool {
    let a = name.to_ascii_uppercase();
    host_arch_names()
        .iter()
        .any(|h| *h == a || h.trim_start_matches("SCMP_ARCH_") == a)
        || (a == "AMD64" && std::env::consts::ARCH == "x86_64")
        || (a == "ARM64" && std::env::consts::ARCH == "aarch64")
}

/// Docker's `includes`: every listed capability held and (when listed) the host arch.
fn includes_match(filter: &Value, caps: &BTreeSet<String>) -> bool {
    let arches = string_list(filter, "arches");
    string_list(filter, "caps").iter().all(|c| caps.contains(c))
        && (arches.is_empty() || arches.iter().any(|a| is_host_arch(a)))
}

/// Docker's `excludes`: any listed capability held, or the host arch listed.
fn excludes_match(filter: &Value, caps: &BTreeSet<String>) -> bool {
    string_list(filter, "caps").iter().any(|c| caps.contains(c))
        || string_list(filter, "arches")
            .iter()
            .any(|a| is_host_arch(a))
}

/// Converts a Docker-format profile document (archMap, includes/excludes, `name`) into
/// the OCI form; an OCI-form document passes through unchanged.
fn normalize(mut v: Value, caps: &BTreeSet<String>) -> Value {
    let Some(obj) = v.as_object_mut() else {
        return v;
    };
    if !obj.contains_key("architectures") {
        if let Some(Value::Array(map)) = obj.remove("archMap") {
            let host = host_arch_names();
            let mut arches = Vec::new();
            for entry in map {
                let Some(arch) = entry.get("architecture").and_then(Value::as_str) else {
                    continue;
                };
                if host.contains(&arch) {
                    arches.push(Value::String(arch.to_string()));
                    if let Some(Value::Array(subs)) = entry.get("subArchitectures") {
                        arches.extend(subs.iter().cloned());
                    }
                }
            }
            obj.insert("architectures".to_string(), Value::Array(arches));
        }
    } else {
        obj.remove("archMap");
    }
    if let Some(Value::Array(syscalls)) = obj.get_mut("syscalls") {
        let mut kept = Vec::new();
        for mut sc in std::mem::take(syscalls) {
            if sc.get("includes").is_some_and(|f| !includes_match(f, caps))
                || sc.get("excludes").is_some_and(|f| excludes_match(f, caps))
            {
                continue;
            }
            if let Some(o) = sc.as_object_mut() {
                o.remove("includes");
                o.remove("excludes");
                o.remove("comment");
                if let Some(name) = o.remove("name") {
                    if !o.contains_key("names") {
                        o.insert("names".to_string(), Value::Array(vec![name]));
                    }
                }
            }
            kept.push(sc);
        }
        *syscalls = kept;
    }
    v
}

/// An OCI-form profile document, as runc reads one.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileDoc {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<Arch>>,
    #[serde(default)]
    flags: Option<Vec<LinuxSeccompFilterFlag>>,
    #[serde(default)]
    listener_path: Option<PathBuf>,
    #[serde(default)]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Option<Vec<SyscallDoc>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SyscallDoc {
    names: Vec<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<ArgDoc>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArgDoc {
    index: usize,
    value: u64,
    #[serde(default)]
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
}

impl ProfileDoc {
    fn build(self) -> Result<LinuxSeccomp> {
        let mut syscalls = None;
        if let Some(list) = self.syscalls {
            let mut out = Vec::with_capacity(list.len());
            for s in list {
                let mut rule = LinuxSyscallBuilder::default()
                    .names(s.names)
                    .action(s.action)
                    .build()
                    .map_err(build("seccomp profile"))?;
                rule.set_errno_ret(s.errno_ret);
                if let Some(args) = s.args {
                    let mut built = Vec::with_capacity(args.len());
                    for a in args {
                        let b = LinuxSeccompArgBuilder::default()
                            .index(a.index)
                            .value(a.value)
                            .op(a.op);
                        let b = match a.value_two {
                            Some(v) => b.value_two(v),
                            None => b,
                        };
                        built.push(b.build().map_err(build("seccomp profile"))?);
                    }
                    rule.set_args(Some(built));
                }
                out.push(rule);
            }
            syscalls = Some(out);
        }
        let mut profile = LinuxSeccompBuilder::default()
            .default_action(self.default_action)
            .build()
            .map_err(build("seccomp profile"))?;
        profile.set_default_errno_ret(self.default_errno_ret);
        profile.set_architectures(self.architectures);
        profile.set_flags(self.flags);
        profile.set_listener_path(self.listener_path);
        profile.set_listener_metadata(self.listener_metadata);
        profile.set_syscalls(syscalls);
        Ok(profile)
    }
}

/// Reads a `Localhost` profile. `field` names the CRI field for errors; `reference` is
/// an absolute path or one relative to `root`. Docker-format profiles are accepted.
fn load_localhost(
    field: &str,
    reference: &str,
    root: &Path,
    caps: &BTreeSet<String>,
) -> Result<LinuxSeccomp> {
    let reference = reference.strip_prefix("localhost/").unwrap_or(reference);
    if reference.is_empty() {
        return Err(invalid(field, "a Localhost seccomp profile needs a path"));
    }
    let path = if Path::new(reference).is_absolute() {
        Path::new(reference).to_path_buf()
    } else {
        root.join(reference)
    };
    let text = std::fs::read(&path).map_err(|e| {
        invalid(
            field,
            format!("reading seccomp profile {}: {e}", path.display()),
        )
    })?;
    let value: Value = serde_json::from_slice(&text).map_err(|e| {
        invalid(
            field,
            format!("seccomp profile {} is not JSON: {e}", path.display()),
        )
    })?;
    let doc: ProfileDoc = serde_json::from_value(normalize(value, caps)).map_err(|e| {
        invalid(
            field,
            format!(
                "seccomp profile {} is not a valid profile: {e}",
                path.display()
            ),
        )
    })?;
    doc.build()
}

/// linux.seccomp from the security context; `None`: unconfined. `caps` is the
/// container's bounding set; relative `Localhost` references are found under `root`.
#[allow(deprecated)] // seccomp_profile_path: still sent by older kubelets
pub(crate) fn seccomp_profile(
    sc: &cri::LinuxContainerSecurityContext,
    privileged: bool,
    caps: &BTreeSet<String>,
    root: &Path,
) -> Result<Option<LinuxSeccomp>> {
    use cri::security_profile::ProfileType;
    if privileged {
        return Ok(None);
    }
    if let Some(p) = &sc.seccomp {
        let field = format!("{SC}.seccomp");
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => default_profile(caps).map(Some),
            Ok(ProfileType::Unconfined) => Ok(None),
            Ok(ProfileType::Localhost) => load_localhost(
                &format!("{field}.localhost_ref"),
                &p.localhost_ref,
                root,
                caps,
            )
            .map(Some),
            Err(_) => Err(invalid(
                format!("{field}.profile_type"),
                format!("unknown profile type {}", p.profile_type),
            )),
        };
    }
    let path = sc.seccomp_profile_path.as_str();
    let field = format!("{SC}.seccomp_profile_path");
    match path {
        "" | "unconfined" => Ok(None),
        "runtime/default" | "docker/default" => default_profile(caps).map(Some),
        p if p.starts_with("localhost/") => load_localhost(&field, p, root, caps).map(Some),
        p => Err(invalid(field, format!("unknown seccomp profile {p:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &LinuxSeccomp) -> Value {
        serde_json::to_value(p).unwrap()
    }

    fn refused(p: &LinuxSeccomp) -> Vec<String> {
        let v = names(p);
        v["syscalls"][0]["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn default_profile_refuses_the_blocklist_without_caps() {
        let p = default_profile(&BTreeSet::new()).unwrap();
        let v = names(&p);
        assert_eq!(v["defaultAction"], "SCMP_ACT_ALLOW");
        let r = refused(&p);
        for s in [
            "acct",
            "add_key",
            "bpf",
            "clock_adjtime",
            "clock_settime",
            "create_module",
            "delete_module",
            "finit_module",
            "get_kernel_syms",
            "get_mempolicy",
            "init_module",
            "ioperm",
            "iopl",
            "kcmp",
            "kexec_file_load",
            "kexec_load",
            "keyctl",
            "lookup_dcookie",
            "mbind",
            "mount",
            "move_pages",
            "name_to_handle_at",
            "nfsservctl",
            "open_by_handle_at",
            "perf_event_open",
            "pivot_root",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
            "query_module",
            "quotactl",
            "reboot",
            "request_key",
            "set_mempolicy",
            "setns",
            "settimeofday",
            "stime",
            "swapoff",
            "swapon",
            "sysfs",
            "_sysctl",
            "umount",
            "umount2",
            "unshare",
            "uselib",
            "userfaultfd",
            "ustat",
            "vm86",
            "vm86old",
        ] {
            assert!(r.iter().any(|x| x == s), "{s} not refused");
        }
        let text = v.to_string();
        assert!(text.contains("\"clone3\""));
        assert!(text.contains("\"personality\""));
    }

    #[test]
    fn default_profile_is_relaxed_by_capabilities() {
        let caps: BTreeSet<String> = ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = default_profile(&caps).unwrap();
        let r = refused(&p);
        for s in ["mount", "umount2", "unshare", "setns", "ptrace", "bpf"] {
            assert!(!r.iter().any(|x| x == s), "{s} still refused");
        }
        // Still refused: not granted by these capabilities.
        for s in ["reboot", "keyctl", "init_module"] {
            assert!(r.iter().any(|x| x == s), "{s} allowed");
        }
        let text = names(&p).to_string();
        assert!(
            !text.contains("\"clone3\""),
            "clone3 allowed with SYS_ADMIN"
        );
    }

    #[test]
    fn localhost_profile_relative_and_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let body = r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"}]}"#;
        std::fs::write(dir.path().join("p.json"), body).unwrap();
        let caps = BTreeSet::new();
        let p = load_localhost("f", "p.json", dir.path(), &caps).unwrap();
        assert_eq!(names(&p)["defaultAction"], "SCMP_ACT_ERRNO");
        let abs = dir.path().join("p.json");
        let p2 = load_localhost("f", abs.to_str().unwrap(), Path::new("/nope"), &caps).unwrap();
        assert_eq!(p, p2);
        let p3 = load_localhost("f", "localhost/p.json", dir.path(), &caps).unwrap();
        assert_eq!(p, p3);
    }

    #[test]
    fn localhost_profile_missing_or_bad_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let caps = BTreeSet::new();
        let e = load_localhost("config.x.seccomp", "missing.json", dir.path(), &caps)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("config.x.seccomp:"), "{e}");
        std::fs::write(dir.path().join("bad.json"), "{").unwrap();
        let e = load_localhost("config.x.seccomp", "bad.json", dir.path(), &caps)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not JSON"), "{e}");
    }

    #[test]
    fn architectures_are_the_hosts_abis() {
        for name in [
            "SCMP_ARCH_X86_64",
            "SCMP_ARCH_X86",
            "SCMP_ARCH_X32",
            "SCMP_ARCH_AARCH64",
            "SCMP_ARCH_ARM",
            "SCMP_ARCH_RISCV64",
            "SCMP_ARCH_S390X",
            "SCMP_ARCH_S390",
            "SCMP_ARCH_PPC64LE",
            "SCMP_ARCH_PPC64",
        ] {
            let a = arch(name).unwrap();
            assert_eq!(serde_json::to_value(a).unwrap(), name);
        }
        let v = names(&default_profile(&BTreeSet::new()).unwrap());
        let want: &[&str] = match std::env::consts::ARCH {
            "x86_64" => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "aarch64" => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
            _ => return,
        };
        assert_eq!(v["architectures"], serde_json::json!(want));
    }

    #[test]
    fn default_profile_argument_filters() {
        let v = names(&default_profile(&BTreeSet::new()).unwrap());
        let rules = v["syscalls"].as_array().unwrap();
        let clone: Vec<&Value> = rules.iter().filter(|r| r["names"][0] == "clone").collect();
        assert_eq!(clone.len(), CLONE_NS_FLAGS.len());
        assert_eq!(clone[0]["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone[0]["args"][0]["value"], 0x0002_0000);
        assert_eq!(clone[0]["args"][0]["valueTwo"], 0x0002_0000);
        assert_eq!(clone[0]["errnoRet"], EPERM);
        let p = rules
            .iter()
            .find(|r| r["names"][0] == "personality")
            .unwrap();
        assert_eq!(p["args"][0]["value"], 0x8004_0000u64);
        assert_eq!(p["args"][0]["valueTwo"], 0x0004_0000);
        let s = rules.iter().find(|r| r["names"][0] == "socket").unwrap();
        assert_eq!(
            s["args"],
            serde_json::json!([{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_EQ"}])
        );
        let c3 = rules.iter().find(|r| r["names"][0] == "clone3").unwrap();
        assert_eq!(c3["errnoRet"], ENOSYS);
        assert!(c3.get("args").is_none());
    }

    #[test]
    #[allow(deprecated)]
    fn the_security_context_picks_the_profile() {
        use cri::security_profile::ProfileType;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mine.json"),
            r#"{"defaultAction":"SCMP_ACT_LOG","syscalls":[]}"#,
        )
        .unwrap();
        let caps = BTreeSet::new();
        let pick = |sc: &cri::LinuxContainerSecurityContext, privileged| {
            seccomp_profile(sc, privileged, &caps, dir.path())
                .map(|p| p.map(|p| names(&p)["defaultAction"].clone()))
        };
        let mut sc = cri::LinuxContainerSecurityContext::default();
        assert_eq!(pick(&sc, false).unwrap(), None, "no profile: unconfined");
        sc.seccomp = Some(cri::SecurityProfile::default()); // RuntimeDefault
        assert_eq!(pick(&sc, false).unwrap().unwrap(), "SCMP_ACT_ALLOW");
        assert_eq!(pick(&sc, true).unwrap(), None, "privileged: unconfined");
        sc.seccomp = Some(cri::SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: "mine.json".into(),
        });
        assert_eq!(pick(&sc, false).unwrap().unwrap(), "SCMP_ACT_LOG");
        sc.seccomp = Some(cri::SecurityProfile {
            profile_type: ProfileType::Unconfined as i32,
            ..Default::default()
        });
        assert_eq!(pick(&sc, false).unwrap(), None);
        sc.seccomp = Some(cri::SecurityProfile {
            profile_type: 7,
            ..Default::default()
        });
        let e = pick(&sc, false).unwrap_err();
        assert_eq!(
            e.field(),
            Some(format!("{SC}.seccomp.profile_type").as_str())
        );
        // The deprecated string field.
        sc.seccomp = None;
        for (path, want) in [
            ("runtime/default", Some("SCMP_ACT_ALLOW")),
            ("docker/default", Some("SCMP_ACT_ALLOW")),
            ("unconfined", None),
            ("localhost/mine.json", Some("SCMP_ACT_LOG")),
        ] {
            sc.seccomp_profile_path = path.into();
            let got = pick(&sc, false).unwrap();
            assert_eq!(got.as_ref().and_then(Value::as_str), want, "{path}");
        }
        sc.seccomp_profile_path = "weird".into();
        let e = pick(&sc, false).unwrap_err();
        assert_eq!(
            e.field(),
            Some(format!("{SC}.seccomp_profile_path").as_str())
        );
    }

    #[test]
    fn oci_profile_fields_pass_through() {
        let dir = tempfile::tempdir().unwrap();
        let body = serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "listenerPath": "/run/agent.sock",
            "listenerMetadata": "meta",
            "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
                 "args": [{"index": 1, "value": 5, "valueTwo": 4, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": []}
            ]
        });
        std::fs::write(dir.path().join("p.json"), body.to_string()).unwrap();
        let p = load_localhost("f", "p.json", dir.path(), &BTreeSet::new()).unwrap();
        assert_eq!(names(&p), body);
        std::fs::write(
            dir.path().join("q.json"),
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["x"]}]}"#,
        )
        .unwrap();
        let e = load_localhost("f", "q.json", dir.path(), &BTreeSet::new()).unwrap_err();
        assert!(e.to_string().contains("not a valid profile"), "{e}");
    }

    #[test]
    fn docker_format_profile_is_normalized() {
        let dir = tempfile::tempdir().unwrap();
        let body = r#"{"defaultAction":"SCMP_ACT_ERRNO",
            "archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86","SCMP_ARCH_X32"]},
                       {"architecture":"SCMP_ARCH_AARCH64","subArchitectures":["SCMP_ARCH_ARM"]}],
            "syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","comment":"x"},
                        {"name":"mount","action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}},
                        {"names":["write"],"action":"SCMP_ACT_ALLOW","excludes":{"caps":["CAP_SYS_ADMIN"]}}]}"#;
        std::fs::write(dir.path().join("d.json"), body).unwrap();
        let p = load_localhost("f", "d.json", dir.path(), &BTreeSet::new()).unwrap();
        let v = names(&p);
        let text = v.to_string();
        assert!(text.contains("read") && text.contains("write"));
        assert!(!text.contains("mount"), "{text}");
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(v["architectures"].as_array().unwrap().len(), 3);
        }
        let admin: BTreeSet<String> = ["CAP_SYS_ADMIN".to_string()].into();
        let p = load_localhost("f", "d.json", dir.path(), &admin).unwrap();
        let text = names(&p).to_string();
        assert!(text.contains("mount") && !text.contains("write"), "{text}");
    }
}

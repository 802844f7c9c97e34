//! `criusd check`: the host prerequisites as a table, each `ok`, `warn` or `FAIL`.
//! Exit code 0 only when crius can run here (no `FAIL`). The installer runs it before
//! it starts criusd.
//!
//! The kernel is read through a root directory (`/` on a node) so that the checks of
//! /proc and /sys are tested on fixture trees. The files crius will use (the OCI
//! runtimes, iptables, the roots' free space) are looked up under a host root (`/`,
//! or `--host-root`: an installer in a container checks the node it installs onto,
//! mounted at /host, while the kernel it shares is read as usual).

use std::path::{Path, PathBuf};

use crate::config::{Config, NetworkBackendKind};
use crate::util::{DEFAULT_PATH, find_binary};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub check: &'static str,
    pub verdict: Verdict,
    pub detail: String,
}

fn row(check: &'static str, verdict: Verdict, detail: impl Into<String>) -> Row {
    Row {
        check,
        verdict,
        detail: detail.into(),
    }
}

/// The controllers crius puts limits in.
const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];
/// Below this much free space under a root, criusd cannot work.
const MIN_FREE: u64 = 64 << 20;
/// Below this much, pulls will soon fail.
const LOW_FREE: u64 = 1 << 30;
/// The capability's bit (linux/capability.h).
const CAP_SYS_RESOURCE: u32 = 24;

/// Every check: the kernel under `root`, the files of `host`, the configuration.
pub fn run(root: &Path, host: &Path, config: &Config) -> Vec<Row> {
    let mut rows = vec![kernel(root), overlay(root), cgroups(root)];
    rows.extend(runtimes(host, config));
    rows.push(iptables(host, config));
    rows.push(privileges(root));
    for (name, dir) in [
        ("free space: state_dir", &config.state_dir),
        ("free space: run_dir", &config.run_dir),
    ] {
        rows.push(free_space(name, &under(host, dir)));
    }
    rows
}

/// `path` of the host as seen from here: below `host` unless that is `/`.
fn under(host: &Path, path: &Path) -> PathBuf {
    if host == Path::new("/") {
        return path.to_path_buf();
    }
    host.join(path.strip_prefix("/").unwrap_or(path))
}

/// A binary of the host: an absolute path under `host`, a bare name on the default
/// search path under it (another host's PATH is not ours to read).
fn host_binary(host: &Path, name: &Path) -> Option<PathBuf> {
    if host == Path::new("/") {
        return find_binary(name);
    }
    if name.is_absolute() {
        return find_binary(&under(host, name));
    }
    std::env::split_paths(DEFAULT_PATH).find_map(|dir| find_binary(&under(host, &dir.join(name))))
}

fn kernel(root: &Path) -> Row {
    match std::fs::read_to_string(root.join("proc/sys/kernel/osrelease")) {
        Ok(v) => row("kernel", Verdict::Ok, format!("Linux {}", v.trim())),
        Err(e) => row(
            "kernel",
            Verdict::Warn,
            format!("cannot read the kernel release: {e}"),
        ),
    }
}

fn overlay(root: &Path) -> Row {
    let listed = std::fs::read_to_string(root.join("proc/filesystems"))
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false);
    if listed {
        row("overlayfs", Verdict::Ok, "overlay is a known file system")
    } else if root.join("sys/module/overlay").exists() {
        row("overlayfs", Verdict::Ok, "the overlay module is loaded")
    } else {
        row(
            "overlayfs",
            Verdict::Fail,
            "overlay is not in /proc/filesystems: load it (modprobe overlay); crius's snapshots are overlay mounts",
        )
    }
}

/// cgroup v2 (a unified hierarchy with the controllers enabled) or v1 (one
/// hierarchy per controller).
fn cgroups(root: &Path) -> Row {
    let fs = root.join("sys/fs/cgroup");
    let unified: Vec<String> = std::fs::read_to_string(fs.join("cgroup.controllers"))
        .map(|t| t.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let missing_v2: Vec<&str> = CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !unified.iter().any(|u| u == c))
        .collect();
    if fs.join("cgroup.controllers").exists() && missing_v2.is_empty() {
        return row(
            "cgroups",
            Verdict::Ok,
            format!("v2, controllers: {}", unified.join(" ")),
        );
    }
    let v1: Vec<&str> = CONTROLLERS
        .iter()
        .copied()
        .filter(|c| fs.join(c).join("tasks").exists() || fs.join(c).join("cgroup.procs").exists())
        .collect();
    if v1.len() == CONTROLLERS.len() {
        let hybrid = if fs.join("unified").exists() {
            " (hybrid)"
        } else {
            ""
        };
        return row(
            "cgroups",
            Verdict::Ok,
            format!("v1{hybrid}, controllers: {}", v1.join(" ")),
        );
    }
    row(
        "cgroups",
        Verdict::Fail,
        format!(
            "need the {} controllers, as cgroup v2 (found: {}) or v1 hierarchies under {} (found: {})",
            CONTROLLERS.join(", "),
            if unified.is_empty() {
                "none".to_string()
            } else {
                unified.join(" ")
            },
            fs.display(),
            if v1.is_empty() {
                "none".to_string()
            } else {
                v1.join(" ")
            }
        ),
    )
}

fn version_of(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "version unknown".into())
}

fn runtimes(host: &Path, config: &Config) -> Vec<Row> {
    config
        .runtimes
        .iter()
        .map(|(name, handler)| {
            let default = *name == config.default_runtime;
            match host_binary(host, &handler.path) {
                Some(bin) => row(
                    "OCI runtime",
                    Verdict::Ok,
                    format!("{name}: {} ({})", bin.display(), version_of(&bin)),
                ),
                None => row(
                    "OCI runtime",
                    if default {
                        Verdict::Fail
                    } else {
                        Verdict::Warn
                    },
                    format!(
                        "{name}: {} not found{}",
                        handler.path.display(),
                        if default {
                            " (the default handler: no pod can run)"
                        } else {
                            ""
                        }
                    ),
                ),
            }
        })
        .collect()
}

fn iptables(host: &Path, config: &Config) -> Row {
    let needed = matches!(
        config.network.backend,
        NetworkBackendKind::Auto | NetworkBackendKind::Bridge
    );
    match host_binary(host, Path::new("iptables")) {
        Some(bin) => row("iptables", Verdict::Ok, version_of(&bin)),
        None if needed => row(
            "iptables",
            Verdict::Fail,
            "iptables not found: the built-in bridge needs it for NAT and hostPorts",
        ),
        None => row(
            "iptables",
            Verdict::Ok,
            "not found; not needed by this network backend",
        ),
    }
}

/// Root, and CAP_SYS_RESOURCE (without it negative OOM score adjustments are clamped).
fn privileges(root: &Path) -> Row {
    if !nix::unistd::geteuid().is_root() {
        return row("privileges", Verdict::Fail, "criusd must run as root");
    }
    let status = std::fs::read_to_string(root.join("proc/self/status")).unwrap_or_default();
    match cap_eff(&status) {
        Some(caps) if caps & (1 << CAP_SYS_RESOURCE) != 0 => {
            row("privileges", Verdict::Ok, "root with CAP_SYS_RESOURCE")
        }
        Some(_) => row(
            "privileges",
            Verdict::Warn,
            "root without CAP_SYS_RESOURCE: negative oom_score_adj values are raised to 0",
        ),
        None => row("privileges", Verdict::Warn, "cannot read the capabilities"),
    }
}

fn cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Free space on the file system that holds `dir` (or its nearest existing parent).
fn free_space(check: &'static str, dir: &Path) -> Row {
    let mut at: PathBuf = dir.to_path_buf();
    while !at.exists() {
        match at.parent() {
            Some(p) => at = p.to_path_buf(),
            None => break,
        }
    }
    match nix::sys::statvfs::statvfs(&at) {
        Ok(s) => {
            let free = s.blocks_available().saturating_mul(s.fragment_size());
            let verdict = if free < MIN_FREE {
                Verdict::Fail
            } else if free < LOW_FREE {
                Verdict::Warn
            } else {
                Verdict::Ok
            };
            row(
                check,
                verdict,
                format!("{} MiB free at {}", free >> 20, at.display()),
            )
        }
        Err(e) => row(check, Verdict::Fail, format!("{}: {e}", at.display())),
    }
}

/// The table as text, and whether crius can run (no `FAIL`).
pub fn report(rows: &[Row]) -> (String, bool) {
    let width = rows.iter().map(|r| r.check.len()).max().unwrap_or(0);
    let mut out = String::new();
    for r in rows {
        let v = match r.verdict {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        out.push_str(&format!("{:<width$}  {v:<4}  {}\n", r.check, r.detail));
    }
    let can_run = rows.iter().all(|r| r.verdict != Verdict::Fail);
    out.push_str(if can_run {
        "crius can run on this host\n"
    } else {
        "crius cannot run on this host: fix the FAIL rows\n"
    });
    (out, can_run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = d.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        d
    }

    #[test]
    fn cgroup_v2_v1_hybrid_and_missing_controllers() {
        let v2 = tree(&[(
            "sys/fs/cgroup/cgroup.controllers",
            "cpuset cpu io memory pids\n",
        )]);
        let r = cgroups(v2.path());
        assert_eq!(r.verdict, Verdict::Ok, "{r:?}");
        assert!(r.detail.starts_with("v2"), "{r:?}");
        // This host's shape: v1 controllers, an empty unified hierarchy beside them.
        let hybrid = tree(&[
            ("sys/fs/cgroup/unified/cgroup.controllers", ""),
            ("sys/fs/cgroup/cpu/tasks", ""),
            ("sys/fs/cgroup/memory/tasks", ""),
            ("sys/fs/cgroup/pids/tasks", ""),
        ]);
        let r = cgroups(hybrid.path());
        assert_eq!(
            (r.verdict, r.detail.as_str()),
            (Verdict::Ok, "v1 (hybrid), controllers: cpu memory pids")
        );
        let lacking = tree(&[("sys/fs/cgroup/cgroup.controllers", "cpu io\n")]);
        let r = cgroups(lacking.path());
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(r.detail.contains("found: cpu io"), "{r:?}");
    }

    #[test]
    fn overlay_from_proc_filesystems_or_the_module() {
        let yes = tree(&[("proc/filesystems", "nodev\tsysfs\nnodev\toverlay\n")]);
        assert_eq!(overlay(yes.path()).verdict, Verdict::Ok);
        let module = tree(&[
            ("proc/filesystems", "nodev\tsysfs\n"),
            ("sys/module/overlay/refcnt", "0"),
        ]);
        assert_eq!(overlay(module.path()).verdict, Verdict::Ok);
        let no = tree(&[("proc/filesystems", "nodev\tsysfs\n")]);
        let r = overlay(no.path());
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(r.detail.contains("modprobe overlay"));
    }

    #[test]
    fn capabilities_and_the_verdict() {
        assert_eq!(
            cap_eff("Name:\tx\nCapEff:\t000001ffffffffff\n"),
            Some(0x1ff_ffff_ffff)
        );
        assert_eq!(cap_eff("CapEff:\tzz\n"), None);
        let rows = [
            row("a", Verdict::Ok, "fine"),
            row("bb", Verdict::Warn, "hm"),
        ];
        let (text, ok) = report(&rows);
        assert!(ok, "{text}");
        assert!(text.contains("bb  warn  hm"), "{text}");
        let (text, ok) = report(&[row("c", Verdict::Fail, "no")]);
        assert!(!ok);
        assert!(
            text.contains("FAIL") && text.contains("cannot run"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_default_runtime_fails_and_another_warns() {
        let mut config = Config::default();
        for h in config.runtimes.values_mut() {
            h.path = PathBuf::from("/nonexistent/runtime");
        }
        let rows = runtimes(Path::new("/"), &config);
        let verdicts: Vec<Verdict> = rows.iter().map(|r| r.verdict).collect();
        // crun (not the default) warns, runc (the default) fails.
        assert_eq!(verdicts, [Verdict::Warn, Verdict::Fail], "{rows:?}");
    }

    #[test]
    fn a_host_root_is_where_runtimes_iptables_and_the_roots_are_looked_up() {
        use std::os::unix::fs::PermissionsExt;
        let host = tree(&[
            ("usr/sbin/runc", "#!/bin/sh\necho runc version 9.9\n"),
            ("usr/sbin/iptables", "#!/bin/sh\necho iptables v9\n"),
        ]);
        for bin in ["usr/sbin/runc", "usr/sbin/iptables"] {
            let p = host.path().join(bin);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut config = Config {
            default_runtime: "runc".into(),
            ..Config::default()
        };
        for (name, h) in config.runtimes.iter_mut() {
            h.path = PathBuf::from(format!("/usr/sbin/{name}"));
        }
        let rows = runtimes(host.path(), &config);
        let runc = rows.iter().find(|r| r.detail.starts_with("runc")).unwrap();
        assert_eq!(runc.verdict, Verdict::Ok, "{rows:?}");
        assert!(
            runc.detail.contains(&*host.path().to_string_lossy()),
            "{runc:?}"
        );
        assert!(runc.detail.contains("runc version 9.9"), "{runc:?}");
        // crun is not on this host root, though it may be on the machine.
        let crun = rows.iter().find(|r| r.detail.starts_with("crun")).unwrap();
        assert_eq!(crun.verdict, Verdict::Warn, "{rows:?}");
        assert_eq!(iptables(host.path(), &config).detail, "iptables v9");
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(iptables(empty.path(), &config).verdict, Verdict::Fail);
        let rows = runtimes(empty.path(), &config);
        assert!(rows.iter().any(|r| r.verdict == Verdict::Fail), "{rows:?}");
        assert_eq!(
            under(host.path(), Path::new("/var/lib/crius")),
            host.path().join("var/lib/crius")
        );
        assert_eq!(under(Path::new("/"), Path::new("/run")), Path::new("/run"));
    }
}

//! Did the OOM killer strike in the container's memory cgroup?
//!
//! At Create the shim finds the init's memory cgroup from `/proc/PID/cgroup` (so it works
//! for the cgroupfs and systemd drivers, v1 and v2 alike) and reads its `oom_kill`
//! counter (v1 `memory.oom_control`, v2 `memory.events`); at exit it reads it again,
//! before the runtime's delete removes the cgroup.

use std::path::{Path, PathBuf};

/// The counter file of `pid`'s memory cgroup, if it has one.
pub(crate) fn counter_file(pid: i32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if ctrls.split(',').any(|c| c == "memory") {
            return Some(
                Path::new("/sys/fs/cgroup/memory")
                    .join(rel)
                    .join("memory.oom_control"),
            );
        }
        if ctrls.is_empty() {
            v2 = Some(rel.to_string());
        }
    }
    let rel = v2?;
    let root = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Path::new("/sys/fs/cgroup")
    } else {
        Path::new("/sys/fs/cgroup/unified")
    };
    let f = root.join(rel).join("memory.events");
    f.exists().then_some(f)
}

/// The `oom_kill` count in a counter file (0 when unreadable).
pub(crate) fn count(file: &Path) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("oom_kill ").map(|n| n.trim().parse().ok()))
                .flatten()
        })
        .unwrap_or(0)
}

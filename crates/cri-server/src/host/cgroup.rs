//! A container's processes, found through its cgroup: what criusd uses when the
//! container's shim is gone, so that it can still account for, signal and stop them.
//!
//! The cgroup comes from the container's own spec (`linux.cgroupsPath` in the
//! bundle's config.json), in either driver's form: a cgroupfs path
//! (`/kubepods/pod1/crius-<id>`) or systemd's `slice:prefix:name`
//! (`kubepods-pod1.slice:crius:<id>`, the unit `crius-<id>.scope` inside the nested
//! slices). On cgroup v2 the directory is under the unified root; on v1 (and hybrid
//! hosts) under each controller's hierarchy, of which the first that holds it is
//! read.

use std::path::{Path, PathBuf};

use super::Processes;
use crate::error::{CriError, CriResult};

/// The v1 hierarchies looked in, in order (runc puts a container in all of them).
const V1_HIERARCHIES: &[&str] = &[
    "pids",
    "memory",
    "cpu,cpuacct",
    "cpu",
    "freezer",
    "devices",
    "systemd",
    "unified",
];

/// Processes through the cgroup file system mounted at `root`.
pub struct CgroupProcesses {
    /// `/sys/fs/cgroup`, or a fixture tree in tests.
    pub root: PathBuf,
}

/// The cgroup directory, relative to a hierarchy's root, of a `cgroupsPath`.
pub fn relative_dir(cgroups_path: &str) -> Option<PathBuf> {
    let parts: Vec<&str> = cgroups_path.split(':').collect();
    let rel = match parts.as_slice() {
        [slice, prefix, name] if !cgroups_path.starts_with('/') => {
            let mut dir = expand_slice(if slice.is_empty() {
                "system.slice"
            } else {
                slice
            })?;
            let unit = if prefix.is_empty() {
                format!("{name}.scope")
            } else {
                format!("{prefix}-{name}.scope")
            };
            dir.push(unit);
            dir
        }
        [path] => PathBuf::from(path.trim_start_matches('/')),
        _ => return None,
    };
    // Never leave the hierarchy.
    rel.components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
        .then_some(rel)
}

/// systemd's slice nesting: `a-b-c.slice` lives in `a.slice/a-b.slice/a-b-c.slice`;
/// `-.slice` is the root.
fn expand_slice(slice: &str) -> Option<PathBuf> {
    let name = slice.strip_suffix(".slice")?;
    let mut dir = PathBuf::new();
    if name == "-" {
        return Some(dir);
    }
    if name.is_empty() || name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return None;
    }
    let mut prefix = String::new();
    for part in name.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        dir.push(format!("{prefix}.slice"));
    }
    Some(dir)
}

/// The cgroup directory, relative to a hierarchy's root, of the container whose
/// bundle is `bundle` (from its spec's `linux.cgroupsPath`); None without a spec.
pub fn relative_dir_of(bundle: &Path) -> CriResult<Option<PathBuf>> {
    let spec = bundle.join("config.json");
    let bytes = match std::fs::read(&spec) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CriError::io(format!("reading {}", spec.display()))(e)),
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| CriError::Internal(format!("{} is unreadable: {e}", spec.display())))?;
    Ok(value["linux"]["cgroupsPath"]
        .as_str()
        .and_then(relative_dir))
}

impl CgroupProcesses {
    /// The directory holding the container's `cgroup.procs`, if it still exists.
    fn dir_of(&self, bundle: &Path) -> CriResult<Option<PathBuf>> {
        let Some(rel) = relative_dir_of(bundle)? else {
            return Ok(None);
        };
        let unified = self.root.join("cgroup.controllers").exists();
        let candidates: Vec<PathBuf> = if unified {
            vec![self.root.join(&rel)]
        } else {
            V1_HIERARCHIES
                .iter()
                .map(|h| self.root.join(h).join(&rel))
                .collect()
        };
        Ok(candidates
            .into_iter()
            .find(|d| d.join("cgroup.procs").is_file()))
    }
}

impl Processes for CgroupProcesses {
    fn pids(&self, bundle: &Path) -> CriResult<Vec<u32>> {
        let Some(dir) = self.dir_of(bundle)? else {
            return Ok(Vec::new());
        };
        let procs = dir.join("cgroup.procs");
        match std::fs::read_to_string(&procs) {
            Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
            // The cgroup went between the look and the read: nothing runs in it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(CriError::io(format!("reading {}", procs.display()))(e)),
        }
    }

    fn signal(&self, pid: u32, signal: u32) -> CriResult<()> {
        let (Ok(pid), Ok(sig)) = (i32::try_from(pid), i32::try_from(signal)) else {
            return Ok(());
        };
        let sig = nix::sys::signal::Signal::try_from(sig)
            .map_err(|e| CriError::invalid("signal", format!("{signal}: {e}")))?;
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(CriError::io(format!("signalling {pid}"))(e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_and_systemd_paths() {
        assert_eq!(
            relative_dir("/kubepods/besteffort/pod1/crius-abc"),
            Some(PathBuf::from("kubepods/besteffort/pod1/crius-abc"))
        );
        assert_eq!(
            relative_dir("kubepods-besteffort-pod1.slice:crius:abc"),
            Some(PathBuf::from(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/crius-abc.scope"
            ))
        );
        assert_eq!(
            relative_dir("system.slice:crius:abc"),
            Some(PathBuf::from("system.slice/crius-abc.scope"))
        );
        assert_eq!(
            relative_dir("-.slice:crius:abc"),
            Some(PathBuf::from("crius-abc.scope"))
        );
        assert_eq!(relative_dir("/a/../../etc"), None);
        assert_eq!(relative_dir("bad--name.slice:crius:abc"), None);
        assert_eq!(relative_dir("a:b"), None);
    }

    fn fixture(root: &Path, dir: &Path, pids: &str) -> PathBuf {
        let d = root.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cgroup.procs"), pids).unwrap();
        d
    }

    fn bundle_with(root: &Path, cgroups_path: &str) -> PathBuf {
        let b = root.join("bundle");
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(
            b.join("config.json"),
            serde_json::json!({"linux": {"cgroupsPath": cgroups_path}}).to_string(),
        )
        .unwrap();
        b
    }

    #[test]
    fn pids_on_a_v2_tree_with_the_systemd_driver() {
        let t = tempfile::tempdir().unwrap();
        let cg = t.path().join("cg");
        std::fs::create_dir_all(&cg).unwrap();
        std::fs::write(cg.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        fixture(
            &cg,
            Path::new("kubepods.slice/kubepods-pod1.slice/crius-abc.scope"),
            "12\n34\n",
        );
        let procs = CgroupProcesses { root: cg };
        let bundle = bundle_with(t.path(), "kubepods-pod1.slice:crius:abc");
        assert_eq!(procs.pids(&bundle).unwrap(), vec![12, 34]);
    }

    #[test]
    fn pids_on_a_v1_tree_with_cgroupfs_and_a_gone_cgroup() {
        let t = tempfile::tempdir().unwrap();
        let cg = t.path().join("cg");
        // Only the memory hierarchy holds it here: the first that does is read.
        fixture(&cg, Path::new("memory/crius/crius-abc"), "7\n");
        std::fs::create_dir_all(cg.join("pids")).unwrap();
        let procs = CgroupProcesses { root: cg };
        let bundle = bundle_with(t.path(), "/crius/crius-abc");
        assert_eq!(procs.pids(&bundle).unwrap(), vec![7]);
        let gone = bundle_with(t.path(), "/crius/crius-other");
        assert!(procs.pids(&gone).unwrap().is_empty());
        assert!(procs.pids(&t.path().join("no-bundle")).unwrap().is_empty());
    }
}

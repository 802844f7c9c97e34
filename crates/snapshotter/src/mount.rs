//! Mount specs and the helper that carries them out.
//!
//! Overlay mount data must fit in one page (4095 bytes plus NUL). Layer directories have
//! short numeric names, so most chains fit with absolute paths. When they do not,
//! [`mount_all`] mounts from a short-lived thread that has unshared its filesystem context
//! (`unshare(CLONE_FS)`) and `chdir`ed into the common parent of the lower directories, so
//! the lowerdirs can be given relative (`12/fs:11/fs:...`) — containerd's trick, without
//! forking and without touching the working directory of the rest of the process.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};

use crate::error::{Error, Result};

/// Largest mount data the kernel accepts (a page, including the terminating NUL).
pub const MAX_MOUNT_DATA: usize = 4095;

/// One mount: `kind` is `"overlay"` or `"bind"`; for overlay, `options` are the overlay
/// options (`lowerdir=`, `upperdir=`, `workdir=`, `index=off`, ...); for bind, `rbind` or
/// `bind` and `ro`/`rw`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mount {
    /// Filesystem type: `"overlay"` or `"bind"`.
    pub kind: String,
    /// Mount source: `"overlay"` or the directory to bind.
    pub source: String,
    /// Mount options.
    pub options: Vec<String>,
}

impl Mount {
    /// Whether this mount is read-only.
    pub fn is_read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}

fn flag_option(o: &str) -> Option<MountFlags> {
    Some(match o {
        "ro" => MountFlags::RDONLY,
        "rw" | "bind" | "rbind" => MountFlags::empty(),
        "nosuid" => MountFlags::NOSUID,
        "nodev" => MountFlags::NODEV,
        "noexec" => MountFlags::NOEXEC,
        "noatime" => MountFlags::NOATIME,
        "relatime" => MountFlags::RELATIME,
        _ => return None,
    })
}

/// Mounts every mount of `mounts`, in order, on `target` (an existing directory).
/// On failure, the mounts already made are undone.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = mount_one(m, target) {
            for _ in 0..i {
                let _ = unmount(target);
            }
            return Err(e);
        }
    }
    Ok(())
}

fn mount_one(m: &Mount, target: &Path) -> Result<()> {
    let ctx = |e: Errno| {
        Error::io(
            format!("mount {} {} on {}", m.kind, m.source, target.display()),
            e,
        )
    };
    let mut flags = MountFlags::empty();
    let mut data = Vec::new();
    for o in &m.options {
        match flag_option(o) {
            Some(f) => flags |= f,
            None => data.push(o.as_str()),
        }
    }
    match m.kind.as_str() {
        "bind" => {
            let recursive = m.options.iter().any(|o| o == "rbind");
            if recursive {
                rustix::mount::mount_bind_recursive(m.source.as_str(), target).map_err(ctx)?;
            } else {
                rustix::mount::mount_bind(m.source.as_str(), target).map_err(ctx)?;
            }
            if !flags.is_empty() {
                if let Err(e) = rustix::mount::mount_remount(target, flags | MountFlags::BIND, "") {
                    let _ = unmount(target);
                    return Err(ctx(e));
                }
            }
            Ok(())
        }
        "overlay" => {
            let joined = data.join(",");
            if joined.len() <= MAX_MOUNT_DATA {
                let c = cstring(&joined, m)?;
                return rustix::mount::mount(
                    m.source.as_str(),
                    target,
                    "overlay",
                    flags,
                    c.as_c_str(),
                )
                .map_err(ctx);
            }
            mount_overlay_relative(m, target, flags, &data)
        }
        other => Err(Error::InvalidMount {
            kind: other.to_owned(),
            source_path: m.source.clone(),
            reason: "unsupported mount type (expected overlay or bind)".into(),
        }),
    }
}

fn cstring(s: &str, m: &Mount) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidMount {
        kind: m.kind.clone(),
        source_path: m.source.clone(),
        reason: "options contain a NUL byte".into(),
    })
}

/// The overlay options are too long: mount from a thread whose cwd is the lowerdirs'
/// common parent, naming the lowerdirs relative to it.
fn mount_overlay_relative(
    m: &Mount,
    target: &Path,
    flags: MountFlags,
    data: &[&str],
) -> Result<()> {
    let invalid = |reason: String| Error::InvalidMount {
        kind: m.kind.clone(),
        source_path: m.source.clone(),
        reason,
    };
    let lowers: Vec<&str> = data
        .iter()
        .find_map(|o| o.strip_prefix("lowerdir="))
        .ok_or_else(|| invalid("options longer than a page and no lowerdir to shorten".into()))?
        .split(':')
        .collect();
    let common = common_parent(&lowers)
        .ok_or_else(|| invalid("lowerdirs are not absolute paths with a common parent".into()))?;
    let mut rel_data = Vec::with_capacity(data.len());
    for o in data {
        if o.starts_with("lowerdir=") {
            let rel: Vec<&str> = lowers
                .iter()
                .map(|l| {
                    Path::new(l)
                        .strip_prefix(&common)
                        .ok()
                        .and_then(|p| p.to_str())
                        .unwrap_or(l)
                })
                .collect();
            rel_data.push(format!("lowerdir={}", rel.join(":")));
        } else {
            rel_data.push((*o).to_owned());
        }
    }
    let joined = rel_data.join(",");
    if joined.len() > MAX_MOUNT_DATA {
        return Err(invalid(format!(
            "overlay options are {} bytes even with relative lowerdirs (limit {MAX_MOUNT_DATA}); too many layers ({})",
            joined.len(),
            lowers.len()
        )));
    }
    let c = cstring(&joined, m)?;
    let target = absolute(target)?;
    let source = m.source.clone();
    let ctx = format!(
        "mount {} {} on {} (relative lowerdirs from {})",
        m.kind,
        m.source,
        target.display(),
        common.display()
    );
    let handle = std::thread::Builder::new()
        .name("crius-mount".into())
        .spawn(move || -> std::io::Result<()> {
            // This thread gets its own cwd; the rest of the process keeps its own.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).map_err(std::io::Error::from)?;
            std::env::set_current_dir(&common)?;
            rustix::mount::mount(source.as_str(), &target, "overlay", flags, c.as_c_str())?;
            Ok(())
        })
        .map_err(|e| Error::io("spawn mount thread", e))?;
    match handle.join() {
        Ok(r) => r.map_err(|e| Error::io(ctx, e)),
        Err(_) => Err(Error::io(
            ctx,
            std::io::Error::other("mount thread panicked"),
        )),
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::io_path("make path absolute", p, e))
}

/// The deepest directory that is a parent of every path (all must be absolute).
fn common_parent(paths: &[&str]) -> Option<PathBuf> {
    let first = Path::new(paths.first()?);
    if !first.is_absolute() {
        return None;
    }
    let mut common = first.parent()?.to_path_buf();
    for p in &paths[1..] {
        let p = Path::new(p);
        if !p.is_absolute() {
            return None;
        }
        while !p.starts_with(&common) {
            common = common.parent()?.to_path_buf();
        }
    }
    Some(common)
}

/// Unmounts `target`. Not being mounted (or not existing) is Ok.
pub fn unmount(target: &Path) -> Result<()> {
    match rustix::mount::unmount(target, UnmountFlags::empty()) {
        Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(Error::io_path("unmount", target, e)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn common_parents() {
        assert_eq!(
            common_parent(&["/a/l/1/fs", "/a/l/22/fs", "/a/l/3/fs"]).unwrap(),
            PathBuf::from("/a/l")
        );
        assert_eq!(common_parent(&["/a/b/fs"]).unwrap(), PathBuf::from("/a/b"));
        assert_eq!(
            common_parent(&["/x/1", "/y/2"]).unwrap(),
            PathBuf::from("/")
        );
        assert!(common_parent(&["rel/1"]).is_none());
    }

    #[test]
    fn unknown_kind_refused() {
        let m = Mount {
            kind: "nfs".into(),
            source: "x".into(),
            options: vec![],
        };
        assert!(matches!(
            mount_all(&[m], Path::new("/nonexistent")),
            Err(Error::InvalidMount { .. })
        ));
    }
}

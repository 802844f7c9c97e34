//! [`Rootfs`] over the snapshotter: writable snapshots keyed by container id, mounted
//! as overlayfs; read-only views for image volumes; recursive read-only clones.

use std::path::Path;
use std::sync::Arc;

use crius_snapshotter::{Digest, Snapshotter};

use super::{Idmap, Rootfs};
use crate::error::{CriError, CriResult};

/// The real root file systems.
pub struct SnapshotRootfs {
    pub snapshots: Arc<Snapshotter>,
}

impl Rootfs for SnapshotRootfs {
    fn create_layer(&self, key: &str, parent: Option<&str>) -> CriResult<()> {
        let parent = parent
            .map(Digest::parse)
            .transpose()
            .map_err(CriError::snapshot("the image's top chain id"))?;
        self.snapshots
            .prepare(key, parent.as_ref())
            .map(drop)
            .map_err(CriError::snapshot("preparing the writable layer"))
    }

    fn mount(&self, key: &str, target: &Path, idmap: Option<&Idmap>) -> CriResult<()> {
        let mounts = self
            .snapshots
            .mounts(key)
            .map_err(CriError::snapshot("reading the rootfs mounts"))?;
        let Some(idmap) = idmap else {
            return crius_snapshotter::mount_all(&mounts, target).map_err(CriError::snapshot(
                format!("mounting the rootfs at {}", target.display()),
            ));
        };
        mount_idmapped(&mounts, target, idmap)
    }

    fn unmount(&self, target: &Path) -> CriResult<()> {
        // What an idmapped mount cut short by a crash left beside it.
        remove_staging(&staging_of(target))?;
        if !target.exists() {
            return Ok(());
        }
        crius_snapshotter::unmount(target).map_err(CriError::snapshot(format!(
            "unmounting {}",
            target.display()
        )))
    }

    fn remove_layer(&self, key: &str) -> CriResult<()> {
        self.snapshots
            .remove_snapshot(key)
            .map_err(CriError::snapshot("removing the writable layer"))
    }

    fn usage(&self, key: &str) -> Option<crius_snapshotter::Usage> {
        self.snapshots.snapshot_usage(key).ok()
    }

    fn create_view(&self, key: &str, chain: &str) -> CriResult<()> {
        let chain = Digest::parse(chain).map_err(CriError::snapshot("the image's top chain id"))?;
        match self.snapshots.prepare_view(key, &chain) {
            Ok(_) | Err(crius_snapshotter::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(CriError::snapshot(format!(
                "preparing the image volume view {key}"
            ))(e)),
        }
    }

    fn bind_read_only_recursive(&self, source: &Path, target: &Path) -> CriResult<()> {
        crate::sys::bind_read_only_recursive(source, target).map_err(CriError::io(format!(
            "mounting a recursive read-only clone of {} at {}",
            source.display(),
            target.display()
        )))
    }

    fn bind_idmapped(
        &self,
        source: &Path,
        target: &Path,
        userns: &Path,
        read_only: bool,
    ) -> CriResult<()> {
        let ns = std::fs::File::open(userns).map_err(CriError::io(format!(
            "opening the user namespace {}",
            userns.display()
        )))?;
        crate::sys::bind_idmapped(source, target, std::os::fd::AsFd::as_fd(&ns), read_only)
            .map_err(CriError::io(format!(
                "mounting an idmapped clone of {} at {} (the file system must support idmapped mounts)",
                source.display(),
                target.display()
            )))
    }

    fn detach(&self, target: &Path) -> CriResult<()> {
        match nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(CriError::io(format!("detaching {}", target.display()))(
                std::io::Error::from(e),
            )),
        }
    }
}

/// The directory beside `target` where the idmapped clones of its lower layers are
/// attached while the overlay is mounted.
fn staging_of(target: &Path) -> std::path::PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".idmap");
    target.with_file_name(name)
}

/// Mounts `mounts` (the snapshotter's, for one layer) at `target` as a pod with its
/// own user namespace sees it (see [`Idmap`]). overlayfs cannot be idmapped itself,
/// but its layers can: each lowerdir is replaced by an idmapped clone attached under
/// [`staging_of`], the upper and work directories are handed to the pod's root,
/// and once the overlay is mounted (overlayfs holds private clones of its layers)
/// the staging clones are detached and their directories removed, whatever happened.
fn mount_idmapped(
    mounts: &[crius_snapshotter::Mount],
    target: &Path,
    idmap: &Idmap,
) -> CriResult<()> {
    let staging = staging_of(target);
    let result = mount_idmapped_in(mounts, target, idmap, &staging);
    let cleaned = remove_staging(&staging);
    match (result, cleaned) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => {
            let _ = crius_snapshotter::unmount(target);
            Err(e)
        }
        (Ok(()), Ok(())) => Ok(()),
    }
}

fn mount_idmapped_in(
    mounts: &[crius_snapshotter::Mount],
    target: &Path,
    idmap: &Idmap,
    staging: &Path,
) -> CriResult<()> {
    let io = |what: String| CriError::io(what);
    let ns = std::fs::File::open(&idmap.userns).map_err(io(format!(
        "opening the user namespace {}",
        idmap.userns.display()
    )))?;
    let ns = std::os::fd::AsFd::as_fd(&ns);
    let mut mapped = Vec::with_capacity(mounts.len());
    let mut n = 0usize;
    let mut clone = |source: &str, read_only: bool| -> CriResult<String> {
        let at = staging.join(n.to_string());
        n += 1;
        std::fs::create_dir_all(&at).map_err(io(format!("creating {}", at.display())))?;
        crate::sys::bind_idmapped(Path::new(source), &at, ns, read_only).map_err(io(format!(
            "mounting an idmapped clone of the layer {source} (the file system of the layers must support idmapped mounts)"
        )))?;
        Ok(at.display().to_string())
    };
    for m in mounts {
        let mut m = m.clone();
        match m.kind.as_str() {
            "bind" => {
                // A single read-only layer: its idmapped clone is the mount.
                m.source = clone(&m.source, m.is_read_only())?;
            }
            _ => {
                let mut options = Vec::with_capacity(m.options.len());
                for o in &m.options {
                    if let Some(lowers) = o.strip_prefix("lowerdir=") {
                        let cloned = lowers
                            .split(':')
                            .map(|l| clone(l, true))
                            .collect::<CriResult<Vec<_>>>()?;
                        options.push(format!("lowerdir={}", cloned.join(":")));
                    } else {
                        if let Some(dir) = o
                            .strip_prefix("upperdir=")
                            .or_else(|| o.strip_prefix("workdir="))
                        {
                            let (uid, gid) = idmap.owner;
                            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                                .map_err(io(format!("handing {dir} to the pod's root")))?;
                        }
                        options.push(o.clone());
                    }
                }
                m.options = options;
            }
        }
        mapped.push(m);
    }
    crius_snapshotter::mount_all(&mapped, target).map_err(CriError::snapshot(format!(
        "mounting the idmapped rootfs at {}",
        target.display()
    )))
}

/// Detaches every clone under `staging` and removes it; none there is fine.
fn remove_staging(staging: &Path) -> CriResult<()> {
    let entries = match std::fs::read_dir(staging) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(CriError::io(format!("reading {}", staging.display()))(e)),
    };
    for entry in entries {
        let path = entry
            .map_err(CriError::io(format!("reading {}", staging.display())))?
            .path();
        match nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                return Err(CriError::io(format!("detaching {}", path.display()))(
                    std::io::Error::from(e),
                ));
            }
        }
        std::fs::remove_dir(&path).map_err(CriError::io(format!("removing {}", path.display())))?;
    }
    std::fs::remove_dir(staging).map_err(CriError::io(format!("removing {}", staging.display())))
}

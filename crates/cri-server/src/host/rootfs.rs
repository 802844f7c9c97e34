//! [`Rootfs`] over the snapshotter: writable snapshots keyed by container id, mounted
//! as overlayfs; read-only views for image volumes; recursive read-only clones.

use std::path::Path;
use std::sync::Arc;

use crius_snapshotter::{Digest, Snapshotter};

use super::Rootfs;
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

    fn mount(&self, key: &str, target: &Path) -> CriResult<()> {
        let mounts = self
            .snapshots
            .mounts(key)
            .map_err(CriError::snapshot("reading the rootfs mounts"))?;
        crius_snapshotter::mount_all(&mounts, target).map_err(CriError::snapshot(format!(
            "mounting the rootfs at {}",
            target.display()
        )))
    }

    fn unmount(&self, target: &Path) -> CriResult<()> {
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

    fn detach(&self, target: &Path) -> CriResult<()> {
        match nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(CriError::io(format!("detaching {}", target.display()))(
                std::io::Error::from(e),
            )),
        }
    }
}

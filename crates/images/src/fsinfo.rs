//! ImageFsInfo: what the image stores use, measured on disk.

use std::path::PathBuf;

use crius_cri_api::v1 as cri;

use crate::error::{ImageError, Result};
use crate::{Images, blocking, now_nanos};

impl Images {
    /// ImageFsInfo numbers, measured on disk: blobs and committed layers as the
    /// image file system at `state_dir`, writable snapshots as the container file
    /// system at `state_dir/snapshots`.
    pub async fn fs_info(&self, state_dir: PathBuf) -> Result<cri::ImageFsInfoResponse> {
        let content = self.content.clone();
        let snapshots = self.snapshots.clone();
        blocking("measuring the image stores", move || {
            let blobs = content.disk_usage().map_err(|e| {
                ImageError::snapshotter("measuring the content store", content.root(), e)
            })?;
            let snap_err = |what: &str, e| ImageError::snapshotter(what, snapshots.root(), e);
            let layers = snapshots
                .layers_usage()
                .map_err(|e| snap_err("measuring layers", e))?;
            let writable = snapshots
                .snapshots_usage()
                .map_err(|e| snap_err("measuring writable layers", e))?;
            let ts = now_nanos();
            let fs = |path: PathBuf, bytes: u64, inodes: u64| cri::FilesystemUsage {
                timestamp: ts,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: path.to_string_lossy().into_owned(),
                }),
                used_bytes: Some(cri::UInt64Value { value: bytes }),
                inodes_used: Some(cri::UInt64Value { value: inodes }),
            };
            Ok(cri::ImageFsInfoResponse {
                image_filesystems: vec![fs(
                    state_dir.clone(),
                    blobs.bytes + layers.bytes,
                    blobs.inodes + layers.inodes,
                )],
                container_filesystems: vec![fs(
                    state_dir.join("snapshots"),
                    writable.bytes,
                    writable.inodes,
                )],
            })
        })
        .await
    }
}

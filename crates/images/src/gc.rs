//! RemoveImage and garbage collection.
//!
//! RemoveImage removes the image a spec names (by tag, digest reference, id or id
//! prefix) with every reference to it, as the CRI defines it: removing an image
//! by its tag does not leave it behind under its digest. Garbage collection then
//! removes every layer and blob no image references. A layer a container's
//! writable snapshot still sits on cannot be removed (the snapshotter refuses);
//! it stays until that container goes, and the container's removal collects again.

use std::collections::HashSet;

use tracing::info;

use crate::error::{ImageError, Result};
use crate::{Images, blocking};

impl Images {
    /// RemoveImage: removes the image `spec` names, with all its references, then
    /// collects garbage. An unknown image is already removed.
    pub async fn remove(&self, spec: &str) -> Result<()> {
        let Some(img) = self.find(spec).await? else {
            return Ok(());
        };
        self.store.delete_image(&img.id).await.map_err(|e| {
            ImageError::store(format!("removing image {}", img.id), self.store.path(), e)
        })?;
        info!(id = %img.id, references = ?img.refs().collect::<Vec<_>>(), "image removed");
        self.collect_garbage().await
    }

    /// Removes layers and blobs that no image references (waiting for pulls in
    /// progress to finish first). A layer that a container's writable snapshot still
    /// uses stays until that container goes.
    pub async fn collect_garbage(&self) -> Result<()> {
        let _exclusive = self.gc.write().await;
        let store = self.store.clone();
        let content = self.content.clone();
        let snapshots = self.snapshots.clone();
        blocking("collecting garbage", move || {
            let images = store
                .blocking()
                .images()
                .map_err(|e| ImageError::store("listing images", store.path(), e))?;
            let mut live_chains = HashSet::new();
            let mut live_blobs = HashSet::new();
            for img in &images {
                live_blobs.insert(img.id.clone());
                live_blobs.insert(img.manifest_digest.clone());
                for d in &img.repo_digests {
                    if let Some((_, dg)) = d.split_once('@') {
                        live_blobs.insert(dg.to_string());
                    }
                }
                for l in &img.layers {
                    live_chains.insert(l.chain_id.clone());
                    live_blobs.insert(l.digest.clone());
                }
            }
            let snap_err = |what: &str, e| ImageError::snapshotter(what, snapshots.root(), e);
            // Top layers first, so parents are free when their children go.
            let mut layers = snapshots
                .layers()
                .map_err(|e| snap_err("listing layers", e))?;
            let mut removed_any = true;
            while removed_any {
                removed_any = false;
                layers.retain(|l| {
                    if live_chains.contains(l.chain_id.as_str()) {
                        return false;
                    }
                    match snapshots.remove_layer(&l.chain_id) {
                        Ok(()) => {
                            removed_any = true;
                            false
                        }
                        // In use by a child layer (removed in a later round) or by a
                        // container's writable snapshot (kept until it goes).
                        Err(_) => true,
                    }
                });
            }
            let root = content.root();
            let blobs = content
                .list()
                .map_err(|e| ImageError::snapshotter("listing blobs", root, e))?;
            for (d, _) in blobs {
                if !live_blobs.contains(d.as_str()) {
                    content.delete(&d).map_err(|e| {
                        ImageError::snapshotter(format!("deleting blob {d}"), root, e)
                    })?;
                }
            }
            Ok(())
        })
        .await
    }
}

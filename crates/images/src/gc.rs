//! RemoveImage and garbage collection.
//!
//! Garbage collection removes every layer and blob no image references. A layer a container's
//! writable snapshot still sits on cannot be removed (the snapshotter refuses);
//! it stays until that container goes, and the container's removal collects again.

use std::collections::HashSet;

use tracing::info;

use crate::error::{ImageError, Result};
use crate::{Images, blocking};

impl Images {
    /// RemoveImage: by id removes the image; by tag or digest removes that reference
    /// and the image once none is left. Unknown images are already removed.
    pub async fn remove(&self, spec: &str) -> Result<()> {
        let Some(img) = self.find(spec).await? else {
            return Ok(());
        };
        let by_ref = crate::reference::Reference::parse(spec).ok().and_then(|r| {
            let keys: Vec<String> = r
                .digest
                .as_ref()
                .map(|d| r.with_digest(d))
                .into_iter()
                .chain(r.tagged())
                .collect();
            keys.into_iter().find(|k| img.refs().any(|x| x == k))
        });
        let store = self.store.clone();
        let id = img.id.clone();
        let gone = blocking("removing an image", move || {
            let failed = |e| ImageError::store("removing an image", store.path(), e);
            if let Some(reference) = by_ref {
                let left = store
                    .blocking()
                    .remove_image_ref(&reference)
                    .map_err(failed)?;
                if left.is_some_and(|l| l.repo_tags.is_empty() && l.repo_digests.is_empty()) {
                    store.blocking().delete_image(&id).map_err(failed)?;
                    return Ok(true);
                }
                Ok(false)
            } else {
                store.blocking().delete_image(&id).map_err(failed)?;
                Ok(true)
            }
        })
        .await?;
        if gone {
            info!(id = %img.id, "image removed");
            self.collect_garbage().await?;
        }
        Ok(())
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

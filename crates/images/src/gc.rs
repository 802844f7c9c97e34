//! RemoveImage and garbage collection.
//!
//! RemoveImage removes the image a spec names (by tag, digest reference, id or id
//! prefix) with every reference to it, as the CRI defines it: removing an image
//! by its tag does not leave it behind under its digest. Garbage collection then
//! removes every layer and blob no image references. A layer a container's
//! writable snapshot still sits on cannot be removed (the snapshotter refuses);
//! it stays until that container goes, and the container's removal collects again.
//!
//! After a crash, the verified blobs of a pull cut short are kept for
//! `images.interrupted_pull_expiry_secs`, so that the kubelet's retry reuses them
//! instead of downloading them again (containerd keeps them under the pull's lease
//! until it expires); [`Images::collect_after_restart`] says when to collect them.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

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
        self.sweep(None).await.map(|_| ())
    }

    /// Start-up collection: like [`Images::collect_garbage`], but a blob no image
    /// references that was written less than `expiry` ago is kept (a pull the crash
    /// cut short). Returns how long until the youngest kept blob expires, when the
    /// caller should collect again.
    pub async fn collect_after_restart(&self, expiry: Duration) -> Result<Option<Duration>> {
        self.sweep(Some(expiry)).await
    }

    async fn sweep(&self, expiry: Option<Duration>) -> Result<Option<Duration>> {
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
            let now = SystemTime::now();
            let mut next = None;
            for (d, _) in blobs {
                if live_blobs.contains(d.as_str()) {
                    continue;
                }
                if let Some(expiry) = expiry {
                    let age = std::fs::metadata(content.path(&d))
                        .and_then(|m| m.modified())
                        .map(|t| now.duration_since(t).unwrap_or_default())
                        .unwrap_or(Duration::MAX);
                    if let Some(left) = expiry.checked_sub(age).filter(|l| !l.is_zero()) {
                        next = next.max(Some(left));
                        continue;
                    }
                }
                content
                    .delete(&d)
                    .map_err(|e| ImageError::snapshotter(format!("deleting blob {d}"), root, e))?;
            }
            if next.is_some() {
                info!(expires_in = ?next, "kept the verified blobs of an interrupted pull");
            }
            Ok(next)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    // Test code: a failed expectation is a failed test.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use crius_snapshotter::{ContentStore, Digest, Snapshotter};

    use crate::{Images, ImagesConfig};

    fn blob(content: &ContentStore, data: &[u8], age: Duration) -> Digest {
        let d = Digest::sha256_of(data);
        content.ingest(&d, None, data).unwrap();
        let f = std::fs::File::options()
            .write(true)
            .open(content.path(&d))
            .unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
        d
    }

    #[tokio::test]
    async fn a_restart_keeps_young_unreferenced_blobs_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = crius_store::Store::open(&dir.path().join("meta.redb")).unwrap();
        let content = Arc::new(ContentStore::open(&dir.path().join("content")).unwrap());
        let snapshots = Arc::new(Snapshotter::open(&dir.path().join("snapshots")).unwrap());
        let images = Images::new(store, content.clone(), snapshots, &ImagesConfig::default());
        let old = blob(&content, b"old", Duration::from_secs(7200));
        let young = blob(&content, b"young", Duration::from_secs(600));

        let again = images
            .collect_after_restart(Duration::from_secs(3600))
            .await
            .unwrap()
            .expect("a blob is kept");
        assert!(!content.has(&old), "an expired blob goes at once");
        assert!(content.has(&young), "a young one is kept for the retry");
        assert!(
            again > Duration::from_secs(2900) && again <= Duration::from_secs(3000),
            "{again:?}"
        );

        // Nothing kept: nothing to collect later.
        assert_eq!(
            images.collect_after_restart(Duration::ZERO).await.unwrap(),
            None
        );
        assert!(!content.has(&young));

        let young = blob(&content, b"young", Duration::ZERO);
        images.collect_garbage().await.unwrap();
        assert!(!content.has(&young), "an explicit collection keeps nothing");
    }
}

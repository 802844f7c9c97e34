//! PullImage: resolve the reference, store the manifests and config, fetch and
//! unpack every layer at once (each committed only after the one below it), and
//! write the image record last.

use std::sync::Arc;
use std::time::Instant;

use crius_cri_api::v1 as cri;
use crius_snapshotter::Digest;
use crius_store::{ImageRecord, LayerRecord};
use tokio::sync::watch;
use tracing::{Instrument, info};

use crate::error::{ImageError, Result};
use crate::layers::{Committed, digest};
use crate::manifest::{Descriptor, ImageConfigFile};
use crate::reference::Reference;
use crate::registry::{Resolved, Source};
use crate::{Images, blocking, now_nanos};

/// The layer records of an image: chain ids are known before any download, from
/// the config's diff ids.
pub(crate) fn layer_records(
    layers: &[Descriptor],
    diff_ids: &[String],
) -> Result<Vec<LayerRecord>> {
    if diff_ids.len() != layers.len() {
        return Err(ImageError::InvalidImage {
            context: "reading the image config".into(),
            reason: format!(
                "the manifest has {} layers but the config lists {} diff ids",
                layers.len(),
                diff_ids.len()
            ),
            source: None,
        });
    }
    let mut records = Vec::new();
    let mut parent: Option<Digest> = None;
    for (desc, diff) in layers.iter().zip(diff_ids) {
        let diff_id = digest(diff, "diff id")?;
        let chain = crius_snapshotter::chain_id(parent.as_ref(), &diff_id);
        records.push(LayerRecord {
            digest: desc.digest.clone(),
            diff_id: diff_id.to_string(),
            chain_id: chain.to_string(),
            size: desc.size,
            media_type: desc.media_type.clone(),
        });
        parent = Some(chain);
    }
    Ok(records)
}

/// The size ImageStatus reports: the config and every layer, as the manifest
/// gives their sizes.
pub(crate) fn image_size(config: &Descriptor, records: &[LayerRecord]) -> u64 {
    config.size + records.iter().map(|l| l.size).sum::<u64>()
}

/// `new` with the references `old` already had from earlier pulls, and its first
/// pull time.
fn merged(new: &ImageRecord, old: Option<ImageRecord>) -> ImageRecord {
    let mut merged = new.clone();
    if let Some(old) = old {
        for t in old.repo_tags {
            if !merged.repo_tags.contains(&t) {
                merged.repo_tags.push(t);
            }
        }
        for d in old.repo_digests {
            if !merged.repo_digests.contains(&d) {
                merged.repo_digests.push(d);
            }
        }
        merged.pulled_at = old.pulled_at;
    }
    merged
}

impl Images {
    /// PullImage: returns the image id (the config digest). An unusable reference
    /// is refused before anything is sent to a registry.
    pub async fn pull(
        self: &Arc<Self>,
        image: &str,
        auth: Option<&cri::AuthConfig>,
    ) -> Result<String> {
        let r = Reference::parse(image)?;
        let span = tracing::info_span!("image.pull", image = %r);
        let result = self.pull_parsed(&r, auth).instrument(span).await;
        match &result {
            Ok((_, bytes, took)) => self.count_pull(&r.registry, Some((*bytes, *took))),
            Err(_) => self.count_pull(&r.registry, None),
        }
        let result = result.map(|(id, _, _)| id);
        if result.is_err() {
            // What the failed pull stored (manifests, verified blobs and layers) has no
            // image record: collect it once no other pull is under way (a retry would
            // have reused it, but a pull that is never retried must leave nothing).
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.collect_garbage().await {
                    tracing::warn!(error = %e.report(), "collecting what a failed pull left");
                }
            });
        }
        result.map_err(|e| e.context(format!("pulling {r}")))
    }

    /// The pull; its image id, the bytes it downloaded and how long it took.
    async fn pull_parsed(
        self: &Arc<Self>,
        r: &Reference,
        auth: Option<&cri::AuthConfig>,
    ) -> Result<(String, u64, std::time::Duration)> {
        let start = Instant::now();
        let _no_gc = self.gc.read().await;
        let Resolved {
            source,
            top_digest,
            top_bytes,
            manifest_digest,
            manifest_bytes,
            config: config_desc,
            layers,
        } = self.registry.resolve(r, auth).await?;
        let source = Arc::new(source);
        let image_id = digest(&config_desc.digest, "config digest")?.to_string();

        // Keep the manifests too: ImageStatus and GC read them from the content store.
        self.put_small_blob(&top_digest, &top_bytes).await?;
        self.put_small_blob(&manifest_digest, &manifest_bytes)
            .await?;
        failpoint("image.pull.manifests")?;
        let mut fetched = self.fetch_config(&source, &config_desc).await?;
        failpoint("image.pull.config")?;
        let config_bytes = self.config_bytes(&image_id).await?;
        let config =
            ImageConfigFile::parse(&config_bytes).map_err(|reason| ImageError::InvalidImage {
                context: format!("reading the image config {image_id}"),
                reason,
                source: None,
            })?;
        let records = layer_records(&layers, &config.rootfs.diff_ids)?;
        fetched += self.fetch_layers(&source, &layers, &records).await?;
        failpoint("image.pull.layers")?;

        let size = image_size(&config_desc, &records);
        let record = ImageRecord {
            id: image_id.clone(),
            repo_tags: r.tagged().into_iter().collect(),
            repo_digests: vec![r.with_digest(&top_digest)],
            manifest_digest,
            layers: records,
            size,
            pulled_at: now_nanos(),
        };
        let layers = record.layers.len();
        self.write_record(record).await?;
        failpoint("image.pull.recorded")?;
        info!(
            image = %r,
            id = %image_id,
            endpoint = %source.endpoint,
            layers,
            bytes_fetched = fetched,
            image_bytes = size,
            elapsed_ms = start.elapsed().as_millis() as u64,
            "pulled image"
        );
        Ok((image_id, fetched, start.elapsed()))
    }

    /// Downloads the config blob unless it is stored; returns the bytes fetched.
    async fn fetch_config(
        self: &Arc<Self>,
        source: &Arc<Source>,
        desc: &Descriptor,
    ) -> Result<u64> {
        if self.content.has(&digest(&desc.digest, "config digest")?) {
            return Ok(0);
        }
        let this = self.clone();
        let src = source.clone();
        let d = desc.clone();
        let lost = ImageError::Internal {
            context: format!(
                "fetching config {}: the download task vanished",
                desc.digest
            ),
            source: None,
        };
        self.blobs
            .run(&desc.digest, Arc::new(lost), async move {
                this.fetch_blob_to_store(&src, &d).await.map_err(Arc::new)
            })
            .await?;
        Ok(desc.size)
    }

    /// Makes every layer exist: all fetched and unpacked at once, each on top of
    /// the chain below it. Returns the bytes fetched.
    async fn fetch_layers(
        self: &Arc<Self>,
        source: &Arc<Source>,
        layers: &[Descriptor],
        records: &[LayerRecord],
    ) -> Result<u64> {
        let mut fetched = 0;
        // A layer may only be committed once its parent is: each layer publishes
        // whether it committed, and its child waits for that before committing.
        let signals: Vec<(Committed, watch::Receiver<Option<bool>>)> =
            records.iter().map(|_| watch::channel(None)).collect();
        let mut tasks = Vec::new();
        for (i, (desc, rec)) in layers.iter().zip(records).enumerate() {
            let chain = digest(&rec.chain_id, "chain id")?;
            let done = signals[i].0.clone();
            if self.snapshots.has_layer(&chain) {
                let _ = done.send(Some(true));
                continue;
            }
            if !self.content.has(&digest(&desc.digest, "layer digest")?) {
                fetched += desc.size;
            }
            let parent = match i {
                0 => None,
                _ => Some(digest(&records[i - 1].chain_id, "chain id")?),
            };
            let parent_committed = (i > 0).then(|| signals[i - 1].1.clone());
            let work = self
                .clone()
                .ensure_layer(
                    source.clone(),
                    desc.clone(),
                    rec.clone(),
                    parent,
                    parent_committed,
                )
                .instrument(tracing::info_span!("image.layer", digest = %desc.digest));
            let lost = ImageError::Internal {
                context: format!("layer {}: the unpack task vanished", desc.digest),
                source: None,
            };
            let key = rec.chain_id.clone();
            tasks.push(async move {
                let result = self
                    .layers
                    .run(
                        &key,
                        Arc::new(lost),
                        async move { work.await.map_err(Arc::new) },
                    )
                    .await;
                let _ = done.send(Some(result.is_ok()));
                result
            });
        }
        // In layer order: a parent's own failure comes before its children's.
        for result in futures_util::future::join_all(tasks).await {
            result?;
        }
        Ok(fetched)
    }

    /// Writes the image record, keeping references the image already had from
    /// earlier pulls (one read and one write, on one blocking thread).
    async fn write_record(&self, record: ImageRecord) -> Result<()> {
        let store = self.store.clone();
        blocking("writing the image record", move || {
            let path = store.path().to_path_buf();
            let context = format!("writing the record of image {}", record.id);
            let db = store.blocking();
            let old = db
                .image(&record.id)
                .map_err(|e| ImageError::store(&context, &path, e))?;
            db.put_image(&merged(&record, old))
                .map_err(|e| ImageError::store(&context, &path, e))
        })
        .await
    }
}

/// A failure point of a pull (see `crius_failpoints`; no-op unless compiled in).
pub(crate) fn failpoint(name: &'static str) -> Result<()> {
    crius_failpoints::hit(name).map_err(|e| ImageError::Internal {
        context: e.to_string(),
        source: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(digest: &str) -> Descriptor {
        Descriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            digest: digest.into(),
            size: 10,
            platform: None,
            urls: vec![],
        }
    }

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn chain_ids_follow_the_diff_ids() {
        let recs = layer_records(&[desc(A), desc(B)], &[A.into(), B.into()]).unwrap();
        assert_eq!(recs[0].chain_id, A, "the first chain id is its diff id");
        let a = Digest::parse(A).unwrap();
        let b = Digest::parse(B).unwrap();
        assert_eq!(
            recs[1].chain_id,
            crius_snapshotter::chain_id(Some(&a), &b).to_string()
        );
        let e = layer_records(&[desc(A)], &[A.into(), B.into()]).unwrap_err();
        assert!(matches!(e, ImageError::InvalidImage { .. }), "{e}");
        let e = layer_records(&[desc(A)], &["sha256:nope".into()]).unwrap_err();
        assert!(matches!(e, ImageError::InvalidImage { .. }), "{e}");
    }

    #[test]
    fn a_repeated_pull_keeps_earlier_references() {
        let new = ImageRecord {
            id: A.into(),
            repo_tags: vec!["r:2".into()],
            repo_digests: vec![format!("r@{B}")],
            manifest_digest: B.into(),
            layers: vec![],
            size: 1,
            pulled_at: 20,
        };
        let old = ImageRecord {
            repo_tags: vec!["r:1".into(), "r:2".into()],
            pulled_at: 10,
            ..new.clone()
        };
        let m = merged(&new, Some(old));
        assert_eq!(m.repo_tags, vec!["r:2", "r:1"]);
        assert_eq!(m.repo_digests.len(), 1);
        assert_eq!(m.pulled_at, 10);
        assert_eq!(merged(&new, None), new);
    }
}

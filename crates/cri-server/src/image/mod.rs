//! Images: pulls into the content store and snapshotter, and the image records the
//! ImageService answers from.
//!
//! Invariants:
//! - A blob is visible in the content store only after its size and digest were
//!   verified; a layer is visible in the snapshotter only after its blob verified
//!   and its diff id matched the image config. Both stores clean their own
//!   half-written files when opened, so a crash mid-pull leaves nothing visible.
//! - The image record (and so every reference) is written last, in one
//!   transaction: an interrupted pull leaves no image, and a repeated pull reuses
//!   every blob and layer that was already verified.
//! - Concurrent pulls share work per blob (config) and per layer (chain id).

pub mod manifest;
pub mod reference;
pub mod registry;

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use crius_snapshotter::{Compression, ContentStore, Digest, LayerExtraction, Snapshotter};
use futures_util::StreamExt;
use k8s_cri::v1 as cri;
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{info, warn};

use crate::config::ImagesConfig;
use crate::error::{CriError, CriResult};
use crate::singleflight::SingleFlight;
use crate::util::{blocking, now_nanos};
use crius_store::{ImageRecord, LayerRecord, Store};
use manifest::{Descriptor, ImageConfigFile};
use reference::Reference;
use registry::{Registry, Source};

/// What a container needs from its image (issue 4 uses it).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stop_signal: String,
    pub volumes: Vec<String>,
    pub labels: HashMap<String, String>,
    /// The top layer's chain id: the parent of a container's writable snapshot.
    pub top_chain_id: Option<String>,
}

/// The image manager.
pub struct Images {
    store: Store,
    content: Arc<ContentStore>,
    snapshots: Arc<Snapshotter>,
    registry: Arc<Registry>,
    downloads: Arc<Semaphore>,
    layers: SingleFlight<(), Arc<CriError>>,
    blobs: SingleFlight<(), Arc<CriError>>,
    pinned: HashSet<String>,
    /// Most bytes one layer may unpack to (0: no limit).
    max_layer_bytes: u64,
    /// Pulls hold it shared, garbage collection exclusively: GC never deletes the
    /// blobs and layers of a pull that has not written its image record yet.
    gc: tokio::sync::RwLock<()>,
}

fn snap_err(context: impl std::fmt::Display) -> impl FnOnce(crius_snapshotter::Error) -> CriError {
    move |e| CriError::Internal(format!("{context}: {e}"))
}

fn digest(s: &str, what: &str) -> CriResult<Digest> {
    Digest::parse(s).map_err(|e| CriError::Internal(format!("{what}: {e}")))
}

/// Publishes whether a layer got committed (`Some(true)`) or failed (`Some(false)`).
type Committed = watch::Sender<Option<bool>>;

/// How to unpack one layer: where it goes and what it must hash to.
#[derive(Clone)]
struct UnpackPlan {
    chain: Digest,
    parent: Option<Digest>,
    compression: Compression,
    expected_diff: Digest,
    /// `images.max_layer_bytes` (0: none).
    max_bytes: u64,
}

impl UnpackPlan {
    /// Unpacks `reader` into a new (uncommitted) extraction and checks its diff id.
    fn unpack(
        &self,
        snapshots: &Snapshotter,
        blob: &Digest,
        reader: impl Read,
    ) -> CriResult<LayerExtraction> {
        let mut ext = snapshots
            .begin_layer(&self.chain, self.parent.as_ref())
            .map_err(snap_err(format!("layer {blob}")))?;
        if self.max_bytes > 0 {
            ext.set_size_limit(self.max_bytes);
        }
        let stats = ext
            .unpack(reader, self.compression)
            .map_err(snap_err(format!(
                "unpacking layer {blob}{}",
                if self.max_bytes > 0 {
                    " (images.max_layer_bytes applies)"
                } else {
                    ""
                }
            )))?;
        if stats.diff_id != self.expected_diff {
            return Err(CriError::Internal(format!(
                "layer {blob}: uncompressed digest {} does not match the config's diff id {}",
                stats.diff_id, self.expected_diff
            )));
        }
        Ok(ext)
    }
}

/// A `Read` over chunks sent from the async download task.
struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

/// Copies everything read into the blob writer as well.
struct Tee<'a, R: Read, W: std::io::Write> {
    inner: R,
    copy: &'a mut W,
}

impl<R: Read, W: std::io::Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

impl Images {
    pub fn new(
        store: Store,
        content: Arc<ContentStore>,
        snapshots: Arc<Snapshotter>,
        cfg: &ImagesConfig,
    ) -> Images {
        let pinned = cfg
            .pinned_images
            .iter()
            .filter_map(|p| Reference::parse(p).ok())
            .flat_map(|r| [r.tagged(), r.digest.as_ref().map(|d| r.with_digest(d))])
            .flatten()
            .collect();
        Images {
            store,
            content,
            snapshots,
            downloads: Arc::new(Semaphore::new(cfg.max_concurrent_downloads)),
            max_layer_bytes: cfg.max_layer_bytes,
            registry: Arc::new(Registry::new(cfg.clone())),
            layers: SingleFlight::default(),
            blobs: SingleFlight::default(),
            pinned,
            gc: tokio::sync::RwLock::new(()),
        }
    }

    /// PullImage: returns the image id (config digest).
    pub async fn pull(
        self: &Arc<Self>,
        image: &str,
        auth: Option<&cri::AuthConfig>,
    ) -> CriResult<String> {
        let r =
            Reference::parse(image).map_err(|e| CriError::invalid("image.image", e.to_string()))?;
        let start = Instant::now();
        let _no_gc = self.gc.read().await;
        let resolved = self.registry.resolve(&r, auth).await?;
        let source = Arc::new(resolved.source);
        let config_desc = resolved.config.clone();
        let config_digest = digest(&config_desc.digest, "config digest")?;
        let image_id = config_digest.to_string();

        // Keep the manifests too: ImageStatus and GC read them from the content store.
        for (d, bytes) in [
            (&resolved.top_digest, &resolved.top_bytes),
            (&resolved.manifest_digest, &resolved.manifest_bytes),
        ] {
            self.put_small_blob(d, bytes).await?;
        }
        let mut fetched: u64 = 0;
        if !self.content.has(&config_digest) {
            fetched += config_desc.size;
            let this = self.clone();
            let src = source.clone();
            let desc = config_desc.clone();
            self.blobs
                .run(
                    &desc.digest.clone(),
                    Arc::new(CriError::Internal("config download task vanished".into())),
                    async move {
                        this.fetch_blob_to_store(&src, &desc)
                            .await
                            .map_err(Arc::new)
                    },
                )
                .await
                .map_err(CriError::Shared)?;
        }
        let config_bytes = self.config_bytes(&image_id).await?;
        let config = ImageConfigFile::parse(&config_bytes)
            .map_err(|e| CriError::Internal(format!("pulling {r}: {e}")))?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != resolved.layers.len() {
            return Err(CriError::Internal(format!(
                "pulling {r}: the manifest has {} layers but the config lists {} diff ids",
                resolved.layers.len(),
                diff_ids.len()
            )));
        }

        // Chain ids are known before any download: every layer can be fetched and
        // unpacked at once, each on top of the chain below it.
        let mut records = Vec::new();
        let mut parent: Option<Digest> = None;
        for (desc, diff) in resolved.layers.iter().zip(diff_ids) {
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
        // A layer may only be committed once its parent is: each layer publishes
        // whether it committed, and its child waits for that before committing.
        let signals: Vec<(Committed, watch::Receiver<Option<bool>>)> =
            records.iter().map(|_| watch::channel(None)).collect();
        let mut tasks = Vec::new();
        for (i, (desc, rec)) in resolved.layers.iter().zip(&records).enumerate() {
            let chain = digest(&rec.chain_id, "chain id")?;
            let done = signals[i].0.clone();
            if self.snapshots.has_layer(&chain) {
                let _ = done.send(Some(true));
                continue;
            }
            if !self.content.has(&digest(&desc.digest, "layer digest")?) {
                fetched += desc.size;
            }
            let parent = if i == 0 {
                None
            } else {
                Some(digest(&records[i - 1].chain_id, "chain id")?)
            };
            let parent_committed = (i > 0).then(|| signals[i - 1].1.clone());
            let this = self.clone();
            let src = source.clone();
            let desc = desc.clone();
            let rec = rec.clone();
            let key = rec.chain_id.clone();
            tasks.push(async move {
                let this2 = this.clone();
                let result = this
                    .layers
                    .run(
                        &key,
                        Arc::new(CriError::Internal("layer task vanished".into())),
                        async move {
                            this2
                                .ensure_layer(&src, &desc, &rec, parent, parent_committed)
                                .await
                                .map_err(Arc::new)
                        },
                    )
                    .await
                    .map_err(CriError::Shared);
                let _ = done.send(Some(result.is_ok()));
                result
            });
        }
        let results = futures_util::future::join_all(tasks).await;
        for r in results {
            r?;
        }

        let size = config_desc.size + records.iter().map(|l| l.size).sum::<u64>();
        let mut record = ImageRecord {
            id: image_id.clone(),
            repo_tags: Vec::new(),
            repo_digests: vec![r.with_digest(&resolved.top_digest)],
            manifest_digest: resolved.manifest_digest.clone(),
            layers: records,
            size,
            pulled_at: now_nanos(),
        };
        if let Some(t) = r.tagged() {
            record.repo_tags.push(t);
        }
        let store = self.store.clone();
        let layers = record.layers.len();
        let rec = record.clone();
        blocking(move || {
            // Keep references the image already had from earlier pulls.
            if let Some(old) = store.blocking().image(&rec.id)? {
                let mut merged = rec.clone();
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
                store.blocking().put_image(&merged)?;
            } else {
                store.blocking().put_image(&rec)?;
            }
            Ok(())
        })
        .await?;
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
        Ok(image_id)
    }

    async fn put_small_blob(&self, d: &str, bytes: &bytes::Bytes) -> CriResult<()> {
        let d = digest(d, "manifest digest")?;
        if self.content.has(&d) {
            return Ok(());
        }
        let content = self.content.clone();
        let bytes = bytes.clone();
        blocking(move || {
            let mut w = content
                .writer(&d, Some(bytes.len() as u64))
                .map_err(snap_err("storing a manifest"))?;
            std::io::Write::write_all(&mut w, &bytes)
                .map_err(|e| CriError::internal("storing a manifest", e))?;
            w.commit().map_err(snap_err("storing a manifest"))
        })
        .await
    }

    /// Downloads one blob into the content store (verified), with retries.
    async fn fetch_blob_to_store(&self, source: &Source, desc: &Descriptor) -> CriResult<()> {
        let d = digest(&desc.digest, "blob digest")?;
        let _permit = self
            .downloads
            .acquire()
            .await
            .map_err(|e| CriError::internal("download limit", e))?;
        let mut attempt = 1;
        loop {
            let result = self.download_once(source, desc, &d, None).await;
            match result {
                Ok(_) => return Ok(()),
                Err((e, true)) if attempt < self.registry.config().pull_attempts => {
                    warn!(blob = %desc.digest, attempt, error = %e, "blob download failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500 << attempt)).await;
                    attempt += 1;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Makes sure the layer with `rec.chain_id` exists: unpacks it from the content
    /// store if the blob is there, else downloads it and unpacks it while it streams
    /// in; then waits for its parent layer to be committed, and commits it.
    async fn ensure_layer(
        &self,
        source: &Source,
        desc: &Descriptor,
        rec: &LayerRecord,
        parent: Option<Digest>,
        parent_committed: Option<watch::Receiver<Option<bool>>>,
    ) -> CriResult<()> {
        let chain = digest(&rec.chain_id, "chain id")?;
        if self.snapshots.has_layer(&chain) {
            return Ok(());
        }
        let compression = Compression::from_media_type(&desc.media_type).ok_or_else(|| {
            CriError::Internal(format!(
                "layer {}: media type {:?} is not a layer type crius can unpack",
                desc.digest, desc.media_type
            ))
        })?;
        let blob = digest(&desc.digest, "layer digest")?;
        let plan = UnpackPlan {
            chain: chain.clone(),
            parent,
            compression,
            expected_diff: digest(&rec.diff_id, "diff id")?,
            max_bytes: self.max_layer_bytes,
        };
        let extraction = if self.content.has(&blob) {
            let content = self.content.clone();
            let snapshots = self.snapshots.clone();
            blocking(move || {
                let file = std::fs::File::open(content.path(&blob))
                    .map_err(|e| CriError::internal(format!("opening blob {blob}"), e))?;
                plan.unpack(
                    &snapshots,
                    &blob,
                    std::io::BufReader::with_capacity(256 * 1024, file),
                )
            })
            .await?
        } else {
            let _permit = self
                .downloads
                .acquire()
                .await
                .map_err(|e| CriError::internal("download limit", e))?;
            let mut attempt = 1;
            loop {
                match self
                    .download_once(source, desc, &blob, Some(plan.clone()))
                    .await
                {
                    Ok(Some(ext)) => break ext,
                    Ok(None) => return Err(CriError::Internal("layer was not unpacked".into())),
                    Err((e, true)) if attempt < self.registry.config().pull_attempts => {
                        warn!(layer = %desc.digest, attempt, error = %e, "layer download failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(500 << attempt)).await;
                        attempt += 1;
                    }
                    Err((e, _)) => return Err(e),
                }
            }
        };
        if let Some(mut rx) = parent_committed {
            let ok = rx
                .wait_for(|v| v.is_some())
                .await
                .map(|v| *v == Some(true))
                .unwrap_or(false);
            if !ok {
                return Err(CriError::Internal(format!(
                    "layer {}: its parent layer could not be made",
                    desc.digest
                )));
            }
        }
        let what = format!("committing layer {}", desc.digest);
        blocking(move || extraction.commit().map_err(snap_err(what))).await
    }

    /// One download attempt of a blob into the content store, unpacking it as it
    /// streams when `unpack` says how. Errors say whether a retry may help.
    async fn download_once(
        &self,
        source: &Source,
        desc: &Descriptor,
        blob: &Digest,
        unpack: Option<UnpackPlan>,
    ) -> Result<Option<LayerExtraction>, (CriError, bool)> {
        let timeout = self.registry.config().progress_timeout_secs;
        let mut stream = match self
            .registry
            .retry("opening blob", || self.registry.blob_stream(source, desc))
            .await
        {
            Ok(s) => s,
            Err(e) => {
                return Err((
                    CriError::Unavailable(format!(
                        "fetching blob {} from {}: {}",
                        desc.digest,
                        source.endpoint,
                        registry::chain(&e)
                    )),
                    false,
                ));
            }
        };
        let (tx, rx) = mpsc::channel::<std::io::Result<bytes::Bytes>>(32);
        let content = self.content.clone();
        let snapshots = self.snapshots.clone();
        let blob_c = blob.clone();
        let size = desc.size;
        let consumer =
            tokio::task::spawn_blocking(move || -> CriResult<Option<LayerExtraction>> {
                let mut writer = content
                    .writer(&blob_c, Some(size))
                    .map_err(snap_err(format!("storing blob {blob_c}")))?;
                let mut reader = ChannelReader {
                    rx,
                    current: bytes::Bytes::new(),
                };
                match unpack {
                    None => {
                        std::io::copy(&mut reader, &mut writer).map_err(|e| {
                            CriError::Unavailable(format!("downloading blob {blob_c}: {e}"))
                        })?;
                        writer
                            .commit()
                            .map_err(snap_err(format!("blob {blob_c}")))?;
                        Ok(None)
                    }
                    Some(plan) => {
                        let ext = {
                            let mut tee = Tee {
                                inner: &mut reader,
                                copy: &mut writer,
                            };
                            let ext = plan.unpack(&snapshots, &blob_c, &mut tee)?;
                            // The archive may end before the blob does (padding):
                            // the whole blob must still be stored and verified.
                            std::io::copy(&mut tee, &mut std::io::sink()).map_err(|e| {
                                CriError::Unavailable(format!("downloading blob {blob_c}: {e}"))
                            })?;
                            ext
                        };
                        writer
                            .commit()
                            .map_err(snap_err(format!("blob {blob_c}")))?;
                        Ok(Some(ext))
                    }
                }
            });
        let mut transient_failure = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => {
                    if tx.send(Ok(chunk)).await.is_err() {
                        break; // the consumer failed; its error is reported below
                    }
                }
                Err(e) => {
                    let stalled = e.kind() == std::io::ErrorKind::TimedOut
                        || registry::chain(&e).to_lowercase().contains("timed out");
                    let msg = if stalled {
                        format!(
                            "fetching blob {} from {}: the registry sent no data for {timeout}s (images.progress_timeout_secs)",
                            desc.digest, source.endpoint
                        )
                    } else {
                        format!(
                            "fetching blob {} from {}: {}",
                            desc.digest,
                            source.endpoint,
                            registry::chain(&e)
                        )
                    };
                    let _ = tx.send(Err(std::io::Error::other(msg.clone()))).await;
                    transient_failure = Some(msg);
                    break;
                }
            }
        }
        drop(tx);
        let consumed = consumer
            .await
            .map_err(|e| (CriError::internal("unpack task", e), false))?;
        match (consumed, transient_failure) {
            (_, Some(msg)) => Err((CriError::Unavailable(msg), true)),
            (Ok(ext), None) => Ok(ext),
            (Err(e), None) => Err((e, false)),
        }
    }

    /// Resolves an image spec (id, id prefix, tag or digest reference) to a record.
    pub async fn find(&self, spec: &str) -> CriResult<Option<ImageRecord>> {
        let spec = spec.trim().to_string();
        if spec.is_empty() {
            return Ok(None);
        }
        let store = self.store.clone();
        blocking(move || {
            let as_id = if spec.starts_with("sha256:") {
                spec.clone()
            } else {
                format!("sha256:{spec}")
            };
            if let Some(img) = store.blocking().image(&as_id)? {
                return Ok(Some(img));
            }
            if let Ok(r) = Reference::parse(&spec) {
                let mut keys = Vec::new();
                if let Some(d) = &r.digest {
                    keys.push(r.with_digest(d));
                }
                if let Some(t) = r.tagged() {
                    if r.digest.is_none() || spec.contains(':') {
                        keys.push(t);
                    }
                }
                for k in keys {
                    if let Some(id) = store.blocking().image_id_by_ref(&k)? {
                        return Ok(store.blocking().image(&id)?);
                    }
                }
            }
            // A unique id prefix, as crictl shortens ids.
            let hex = spec.trim_start_matches("sha256:");
            if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                let mut found: Vec<ImageRecord> = store
                    .blocking()
                    .images()?
                    .into_iter()
                    .filter(|i| i.id.trim_start_matches("sha256:").starts_with(hex))
                    .collect();
                if found.len() == 1 {
                    return Ok(found.pop());
                }
            }
            Ok(None)
        })
        .await
    }

    /// The CRI view of an image.
    pub async fn to_cri(&self, img: &ImageRecord) -> CriResult<cri::Image> {
        let cfg = self.config_of(img).await?;
        let (uid, username) = manifest::user_of(&cfg.run().user);
        Ok(cri::Image {
            id: img.id.clone(),
            repo_tags: img.repo_tags.clone(),
            repo_digests: img.repo_digests.clone(),
            size: img.size,
            uid: uid.map(|value| cri::Int64Value { value }),
            username,
            spec: Some(cri::ImageSpec {
                image: img.id.clone(),
                annotations: HashMap::new(),
                user_specified_image: String::new(),
                runtime_handler: String::new(),
            }),
            pinned: img.refs().any(|r| self.pinned.contains(r)),
        })
    }

    /// The config blob of an image (its id is the config's digest), verified.
    async fn config_bytes(&self, id: &str) -> CriResult<Vec<u8>> {
        let content = self.content.clone();
        let id = digest(id, "image id")?;
        blocking(move || {
            content
                .read(&id)
                .map_err(snap_err("reading the image config"))
        })
        .await
    }

    async fn config_of(&self, img: &ImageRecord) -> CriResult<ImageConfigFile> {
        let bytes = self.config_bytes(&img.id).await?;
        ImageConfigFile::parse(&bytes).map_err(CriError::Internal)
    }

    /// The raw config JSON (for verbose ImageStatus).
    pub async fn config_json(&self, img: &ImageRecord) -> CriResult<serde_json::Value> {
        let bytes = self.config_bytes(&img.id).await?;
        serde_json::from_slice(&bytes).map_err(|e| CriError::internal("image config", e))
    }

    /// What a container of this image runs with.
    pub async fn run_config(&self, img: &ImageRecord) -> CriResult<ImageRunConfig> {
        let cfg = self.config_of(img).await?;
        let run = cfg.run();
        let mut volumes: Vec<String> = run.volumes.unwrap_or_default().into_keys().collect();
        volumes.sort();
        Ok(ImageRunConfig {
            entrypoint: run.entrypoint.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
            env: run.env.unwrap_or_default(),
            working_dir: run.working_dir,
            user: run.user,
            stop_signal: run.stop_signal,
            volumes,
            labels: run.labels.unwrap_or_default(),
            top_chain_id: img.layers.last().map(|l| l.chain_id.clone()),
        })
    }

    /// ListImages.
    pub async fn list(&self, filter: Option<cri::ImageFilter>) -> CriResult<Vec<cri::Image>> {
        let wanted = filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let records = match wanted {
            Some(spec) => self.find(&spec).await?.into_iter().collect::<Vec<_>>(),
            None => {
                let store = self.store.clone();
                let mut all = blocking(move || Ok(store.blocking().images()?)).await?;
                all.sort_by_key(|i| i.pulled_at);
                all
            }
        };
        let mut out = Vec::new();
        for r in &records {
            out.push(self.to_cri(r).await?);
        }
        Ok(out)
    }

    /// RemoveImage: by id removes the image; by tag or digest removes that reference
    /// and the image once none is left. Unknown images are already removed.
    pub async fn remove(&self, spec: &str) -> CriResult<()> {
        let Some(img) = self.find(spec).await? else {
            return Ok(());
        };
        let by_ref = Reference::parse(spec).ok().and_then(|r| {
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
        let gone = blocking(move || {
            if let Some(reference) = by_ref {
                let left = store.blocking().remove_image_ref(&reference)?;
                if left.is_some_and(|l| l.repo_tags.is_empty() && l.repo_digests.is_empty()) {
                    store.blocking().delete_image(&id)?;
                    return Ok(true);
                }
                Ok(false)
            } else {
                store.blocking().delete_image(&id)?;
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
    pub async fn collect_garbage(&self) -> CriResult<()> {
        let _exclusive = self.gc.write().await;
        let store = self.store.clone();
        let content = self.content.clone();
        let snapshots = self.snapshots.clone();
        blocking(move || {
            let images = store.blocking().images()?;
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
            // Top layers first, so parents are free when their children go.
            let mut layers = snapshots.layers().map_err(snap_err("listing layers"))?;
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
                        Err(_) => true,
                    }
                });
            }
            for (d, _) in content.list().map_err(snap_err("listing blobs"))? {
                if !live_blobs.contains(d.as_str()) {
                    content
                        .delete(&d)
                        .map_err(snap_err(format!("deleting blob {d}")))?;
                }
            }
            Ok(())
        })
        .await
    }

    /// ImageFsInfo numbers, measured on disk.
    pub async fn fs_info(
        &self,
        state_dir: std::path::PathBuf,
    ) -> CriResult<cri::ImageFsInfoResponse> {
        let content = self.content.clone();
        let snapshots = self.snapshots.clone();
        blocking(move || {
            let blobs = content
                .disk_usage()
                .map_err(snap_err("measuring the content store"))?;
            let layers = snapshots
                .layers_usage()
                .map_err(snap_err("measuring layers"))?;
            let writable = snapshots
                .snapshots_usage()
                .map_err(snap_err("measuring writable layers"))?;
            let ts = now_nanos();
            let fs = |path: std::path::PathBuf, bytes: u64, inodes: u64| cri::FilesystemUsage {
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

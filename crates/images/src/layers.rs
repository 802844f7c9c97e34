//! One blob into the content store, one layer into the snapshotter: downloaded
//! with retries under the download limit, and a layer unpacked while it streams
//! in (its bytes go to the content store and the unpacker at once).
//!
//! A failed attempt leaves nothing: the blob writer removes its ingest file and
//! the extraction its temporary directory when dropped uncommitted. A write that
//! fails because the disk is full is reported as [`ImageError::DiskFull`] naming
//! the store it was writing, whichever of the two copies hit it first.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use crius_snapshotter::{BlobWriter, Compression, Digest, LayerExtraction, Snapshotter};
use crius_store::LayerRecord;
use futures_util::StreamExt;
use oci_client::errors::DigestError;
use tokio::sync::{mpsc, watch};
use tracing::warn;

use crate::error::{ImageError, Mismatched, Result, io_disk_full, write_failed};
use crate::manifest::Descriptor;
use crate::registry::{Source, classify, is_timeout};
use crate::{Images, blocking};

/// Publishes whether a layer got committed (`Some(true)`) or failed (`Some(false)`).
pub(crate) type Committed = watch::Sender<Option<bool>>;

/// A digest from a manifest or config: malformed means the image is.
pub(crate) fn digest(s: &str, what: &str) -> Result<Digest> {
    Digest::parse(s).map_err(|e| ImageError::InvalidImage {
        context: format!("reading the {what}"),
        reason: format!("{s:?} is not a sha256 digest"),
        source: Some(Box::new(e)),
    })
}

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
    ) -> Result<LayerExtraction> {
        let context = format!("unpacking layer {blob}");
        let failed = |e| ImageError::snapshotter(&context, snapshots.root(), e);
        let mut ext = snapshots
            .begin_layer(&self.chain, self.parent.as_ref())
            .map_err(failed)?;
        if self.max_bytes > 0 {
            ext.set_size_limit(self.max_bytes);
        }
        let stats = ext.unpack(reader, self.compression).map_err(failed)?;
        if stats.diff_id != self.expected_diff {
            return Err(ImageError::Mismatch {
                context,
                source: Box::new(Mismatched {
                    what: "uncompressed digest (the config's diff id)",
                    expected: self.expected_diff.to_string(),
                    actual: stats.diff_id.to_string(),
                }),
            });
        }
        Ok(ext)
    }
}

/// A `Read` over chunks sent from the async download task.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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

/// Copies everything read into the blob writer as well, keeping the writer's
/// error (the unpacker only sees that reading failed).
struct Tee<'a, R: Read> {
    inner: R,
    copy: &'a mut BlobWriter,
    write_error: Option<io::Error>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(e) = self.copy.write_all(&buf[..n]) {
            let kind = e.kind();
            self.write_error = Some(e);
            return Err(io::Error::new(kind, "storing the blob failed"));
        }
        Ok(n)
    }
}

/// Why a download attempt failed, and whether another attempt may help.
struct Failed {
    error: ImageError,
    retry: bool,
}

impl From<ImageError> for Failed {
    fn from(error: ImageError) -> Failed {
        Failed {
            error,
            retry: false,
        }
    }
}

/// Where one download goes.
struct Target<'a> {
    desc: &'a Descriptor,
    blob: &'a Digest,
    /// "blob" or "layer", for messages.
    what: &'static str,
    unpack: Option<UnpackPlan>,
}

impl Images {
    /// Downloads one blob into the content store (verified), with retries.
    pub(crate) async fn fetch_blob_to_store(
        &self,
        source: &Source,
        desc: &Descriptor,
    ) -> Result<()> {
        let d = digest(&desc.digest, "config digest")?;
        let _permit = self
            .downloads
            .acquire()
            .await
            .map_err(|e| ImageError::internal(format!("waiting to download blob {d}"), e))?;
        let target = Target {
            desc,
            blob: &d,
            what: "blob",
            unpack: None,
        };
        self.download(source, &target).await.map(|_| ())
    }

    /// Downloads with up to `pull_attempts` attempts, backing off between them.
    async fn download(
        &self,
        source: &Source,
        target: &Target<'_>,
    ) -> Result<Option<LayerExtraction>> {
        let mut attempt = 1;
        loop {
            match self.download_once(source, target).await {
                Ok(ext) => return Ok(ext),
                Err(f) if f.retry && attempt < self.registry.config().pull_attempts => {
                    warn!(digest = %target.desc.digest, attempt, error = %f.error.report(), "download failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                    attempt += 1;
                }
                Err(f) => return Err(f.error),
            }
        }
    }

    /// Stores a small blob held in memory (a manifest), unless it is there already.
    pub(crate) async fn put_small_blob(&self, d: &str, bytes: &bytes::Bytes) -> Result<()> {
        let d = digest(d, "manifest digest")?;
        if self.content.has(&d) {
            return Ok(());
        }
        let content = self.content.clone();
        let bytes = bytes.clone();
        blocking("storing a manifest", move || {
            let context = format!("storing manifest {d}");
            let root = content.root();
            let mut w = content
                .writer(&d, Some(bytes.len() as u64))
                .map_err(|e| ImageError::snapshotter(&context, root, e))?;
            w.write_all(&bytes)
                .map_err(|e| write_failed(&context, root, e))?;
            w.commit()
                .map_err(|e| ImageError::snapshotter(&context, root, e))
        })
        .await
    }

    /// Makes sure the layer with `rec.chain_id` exists: unpacks it from the content
    /// store if the blob is there, else downloads it and unpacks it while it streams
    /// in; then waits for its parent layer to be committed, and commits it.
    pub(crate) async fn ensure_layer(
        self: Arc<Self>,
        source: Arc<Source>,
        desc: Descriptor,
        rec: LayerRecord,
        parent: Option<Digest>,
        parent_committed: Option<watch::Receiver<Option<bool>>>,
    ) -> Result<()> {
        let chain = digest(&rec.chain_id, "chain id")?;
        if self.snapshots.has_layer(&chain) {
            return Ok(());
        }
        let compression = Compression::from_media_type(&desc.media_type).ok_or_else(|| {
            ImageError::InvalidImage {
                context: format!("layer {}", desc.digest),
                reason: format!(
                    "media type {:?} is not a layer type crius can unpack",
                    desc.media_type
                ),
                source: None,
            }
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
            let blob = blob.clone();
            blocking("unpacking a stored layer", move || {
                let file = content.open_blob(&blob).map_err(|e| {
                    ImageError::snapshotter(format!("opening blob {blob}"), content.root(), e)
                })?;
                plan.unpack(
                    &snapshots,
                    &blob,
                    io::BufReader::with_capacity(256 * 1024, file),
                )
            })
            .await?
        } else {
            let _permit = self.downloads.acquire().await.map_err(|e| {
                ImageError::internal(format!("waiting to download layer {blob}"), e)
            })?;
            let target = Target {
                desc: &desc,
                blob: &blob,
                what: "layer",
                unpack: Some(plan),
            };
            self.download(&source, &target).await?.ok_or_else(|| {
                ImageError::internal(
                    format!("layer {blob}"),
                    io::Error::other("the download did not unpack it"),
                )
            })?
        };
        if let Some(mut rx) = parent_committed {
            let ok = rx
                .wait_for(|v| v.is_some())
                .await
                .map(|v| *v == Some(true))
                .unwrap_or(false);
            if !ok {
                return Err(ImageError::Internal {
                    context: format!("layer {}: its parent layer could not be made", desc.digest),
                    source: None,
                });
            }
        }
        // Unpacked and verified, not yet committed: a crash here leaves an
        // extraction the snapshotter cleans when it is next opened.
        crate::pull::failpoint("image.pull.layer_unpacked")?;
        let snapshots = self.snapshots.clone();
        blocking("committing a layer", move || {
            extraction.commit().map_err(|e| {
                ImageError::snapshotter(format!("committing layer {blob}"), snapshots.root(), e)
            })
        })
        .await
    }

    /// What a failed chunk of the registry's stream means.
    fn stream_failed(&self, context: String, e: io::Error) -> Failed {
        let corrupt = e
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<DigestError>().is_some());
        if corrupt {
            return ImageError::Mismatch {
                context,
                source: Box::new(e),
            }
            .into();
        }
        let error = if is_timeout(&e) {
            ImageError::Stalled {
                context,
                secs: self.registry.config().progress_timeout_secs,
                source: Some(Box::new(e)),
            }
        } else {
            ImageError::Unavailable {
                context,
                source: Box::new(e),
            }
        };
        Failed { error, retry: true }
    }

    /// One download attempt of a blob into the content store, unpacking it as it
    /// streams when the target says how.
    async fn download_once(
        &self,
        source: &Source,
        target: &Target<'_>,
    ) -> std::result::Result<Option<LayerExtraction>, Failed> {
        let desc = target.desc;
        let context = format!(
            "fetching {} {} from {}",
            target.what, desc.digest, source.endpoint
        );
        let mut stream = self
            .registry
            .retry("opening blob", || self.registry.blob_stream(source, desc))
            .await
            .map_err(|e| {
                classify(
                    context.clone(),
                    e,
                    self.registry.config().progress_timeout_secs,
                )
            })?;
        let (tx, rx) = mpsc::channel::<io::Result<bytes::Bytes>>(32);
        let consumer = {
            let this = self.clone_handles();
            let blob = target.blob.clone();
            let size = desc.size;
            let unpack = target.unpack.clone();
            let span = tracing::info_span!(
                "image.fetch",
                digest = %desc.digest,
                size,
                unpack = unpack.is_some()
            );
            tokio::task::spawn_blocking(move || {
                span.in_scope(|| this.consume(rx, &blob, size, unpack))
            })
        };
        let mut stream_failure = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => {
                    if tx.send(Ok(chunk)).await.is_err() {
                        break; // the consumer failed; its error is reported below
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(io::Error::other("the download failed"))).await;
                    stream_failure = Some(self.stream_failed(context.clone(), e));
                    break;
                }
            }
        }
        drop(tx);
        let consumed = consumer
            .await
            .map_err(|e| ImageError::internal(format!("{context}: the unpack task was lost"), e))?;
        match (consumed, stream_failure) {
            (_, Some(failed)) => Err(failed),
            (Ok(ext), None) => Ok(ext),
            (Err(e), None) => Err(e.into()),
        }
    }

    fn clone_handles(&self) -> Stores {
        Stores {
            content: self.content.clone(),
            snapshots: self.snapshots.clone(),
        }
    }
}

/// The two stores a download writes, for its blocking half.
struct Stores {
    content: Arc<crius_snapshotter::ContentStore>,
    snapshots: Arc<Snapshotter>,
}

impl Stores {
    /// The blocking half of a download: the blob into the content store, and the
    /// layer into a new extraction when `unpack` says how.
    fn consume(
        &self,
        rx: mpsc::Receiver<io::Result<bytes::Bytes>>,
        blob: &Digest,
        size: u64,
        unpack: Option<UnpackPlan>,
    ) -> Result<Option<LayerExtraction>> {
        let root = self.content.root();
        let store_context = format!("storing blob {blob}");
        let mut writer = self
            .content
            .writer(blob, Some(size))
            .map_err(|e| ImageError::snapshotter(&store_context, root, e))?;
        let mut reader = ChannelReader {
            rx,
            current: bytes::Bytes::new(),
        };
        let ext = match unpack {
            None => {
                if let Err(e) = io::copy(&mut reader, &mut writer) {
                    return Err(self.write_error(blob, writer.written(), size, e));
                }
                None
            }
            Some(plan) => {
                let mut tee = Tee {
                    inner: &mut reader,
                    copy: &mut writer,
                    write_error: None,
                };
                let unpacked = plan
                    .unpack(&self.snapshots, blob, &mut tee)
                    .and_then(|ext| {
                        // The archive may end before the blob does (padding): the whole
                        // blob must still be stored and verified.
                        io::copy(&mut tee, &mut io::sink())
                            .map(|_| ext)
                            .map_err(|e| ImageError::internal(format!("reading blob {blob}"), e))
                    });
                if let Some(e) = tee.write_error.take() {
                    // The unpacker saw a read failure; the cause was storing the copy.
                    return Err(self.write_error(blob, writer.written(), size, e));
                }
                Some(unpacked?)
            }
        };
        writer
            .commit()
            .map_err(|e| ImageError::snapshotter(&store_context, root, e))?;
        Ok(ext)
    }

    /// A failed copy into the blob writer: the disk is full, the registry sent more
    /// than the manifest's size, or reading failed (the download half reports why).
    fn write_error(&self, blob: &Digest, written: u64, size: u64, e: io::Error) -> ImageError {
        let context = format!("storing blob {blob}");
        if io_disk_full(&e) {
            return write_failed(context, self.content.root(), e);
        }
        if written > size {
            return ImageError::Mismatch {
                context,
                source: Box::new(Mismatched {
                    what: "blob size",
                    expected: format!("{size} bytes"),
                    actual: format!("more ({written} bytes and counting)"),
                }),
            };
        }
        ImageError::internal(context, e)
    }
}

//! The image service of criusd: pulls from registries into the content store and
//! snapshotter, and the image records the CRI ImageService answers from.
//!
//! [`Images`] is the whole API: [`Images::pull`], [`Images::find`] (by id, id
//! prefix, tag or digest reference), [`Images::list`], [`Images::to_cri`],
//! [`Images::status_detail`], [`Images::run_config`], [`Images::remove`],
//! [`Images::collect_garbage`] and [`Images::fs_info`]. It is configured by
//! [`ImagesConfig`] (the `[images]` table) and fails with [`ImageError`], whose
//! variants say which gRPC code the kubelet should get.
//!
//! Invariants:
//! - A blob is visible in the content store only after its size and digest were
//!   verified; a layer is visible in the snapshotter only after its blob verified
//!   and its diff id matched the image config. Both stores clean their own
//!   half-written files when a write fails and when they are opened, so a failed
//!   or crashed pull (a full disk included) leaves nothing half-made visible.
//! - The image record (and so every reference) is written last, in one
//!   transaction: an interrupted pull leaves no image, and a repeated pull reuses
//!   every blob and layer that was already verified.
//! - Concurrent pulls share work per blob (config) and per layer (chain id).
//! - Removing an image, by any of its references or its id, removes the record and
//!   every reference at once; garbage collection then removes every layer and blob
//!   no image references, except layers a container's writable snapshot still
//!   sits on. No image without a reference is ever listed.
//! - Garbage collection never runs while a pull holds blobs and layers whose image
//!   record is not written yet.

mod auth;
mod config;
mod error;
mod fsinfo;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod gc;
mod hosts;
mod layers;
mod manifest;
mod pull;
mod query;
mod reference;
mod registry;
mod singleflight;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crius_snapshotter::{ContentStore, Snapshotter};
use crius_store::Store;
use tokio::sync::Semaphore;

pub use config::{Credential, ImagesConfig, InvalidConfig};
pub use error::{BoxError, ImageError, Result};
pub use query::ImageRunConfig;

use reference::Reference;
use registry::Registry;
use singleflight::SingleFlight;

/// The image manager. One per daemon; share it behind an `Arc`.
pub struct Images {
    store: Store,
    content: Arc<ContentStore>,
    snapshots: Arc<Snapshotter>,
    registry: Arc<Registry>,
    downloads: Arc<Semaphore>,
    layers: SingleFlight<(), Arc<ImageError>>,
    blobs: SingleFlight<(), Arc<ImageError>>,
    pinned: HashSet<String>,
    /// Most bytes one layer may unpack to (0: no limit).
    max_layer_bytes: u64,
    /// Pulls hold it shared, garbage collection exclusively: GC never deletes the
    /// blobs and layers of a pull that has not written its image record yet.
    gc: tokio::sync::RwLock<()>,
    /// Pull outcomes by registry host, for the metrics endpoint.
    pulls: std::sync::Mutex<std::collections::BTreeMap<String, PullCounts>>,
}

/// What the pulls from one registry came to since criusd started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PullCounts {
    /// Pulls that ended with an image.
    pub succeeded: u64,
    /// Pulls that failed (after their reference parsed).
    pub failed: u64,
    /// Bytes downloaded by the pulls that succeeded (blobs already stored not counted).
    pub bytes: u64,
    /// Seconds the pulls that succeeded took, summed.
    pub seconds: f64,
}

impl Images {
    /// The image manager over the metadata store, the content store and the
    /// snapshotter (shared with the containers' writable snapshots). `cfg` should
    /// have passed [`ImagesConfig::validate`].
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
            pulls: Default::default(),
        }
    }
}

impl Images {
    /// Pull outcomes by the registry of the image pulled (mirrors count for it).
    pub fn pull_counts(&self) -> Vec<(String, PullCounts)> {
        let pulls = self
            .pulls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pulls.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn count_pull(&self, registry: &str, outcome: Option<(u64, std::time::Duration)>) {
        let mut pulls = self
            .pulls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let c = pulls.entry(registry.to_string()).or_default();
        match outcome {
            Some((bytes, took)) => {
                c.succeeded += 1;
                c.bytes += bytes;
                c.seconds += took.as_secs_f64();
            }
            None => c.failed += 1,
        }
    }
}

/// Nanoseconds since the epoch, as the CRI reports times.
fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Runs blocking work (file system work, multi-step store transactions) off the
/// async workers, inside the caller's span.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| ImageError::internal(format!("{what}: the worker task was lost"), e))?
}

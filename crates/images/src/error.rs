//! What can go wrong in the image service, by what the caller can do about it.
//!
//! Each variant's message says only its own step ("fetching layer sha256:… from
//! host"); the cause is its `source`. [`ImageError::report`] joins the whole chain
//! into one line ("pulling host/app:v1: fetching layer sha256:…: connection
//! refused"), which is what the kubelet should see.

use std::path::PathBuf;
use std::sync::Arc;

use crius_store::StoreError;
use oci_client::errors::OciDistributionError;

/// An underlying error of any type, kept as a `source`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A failed image operation.
///
/// The variants follow what a caller can do: fix the request
/// ([`InvalidReference`](Self::InvalidReference), [`InvalidAuth`](Self::InvalidAuth)),
/// fix the credentials ([`Unauthorized`](Self::Unauthorized)), try again later
/// ([`Unavailable`](Self::Unavailable), [`Stalled`](Self::Stalled)), free space
/// ([`DiskFull`](Self::DiskFull)), or nothing at all because the image itself is
/// wrong or absent. [`Context`](Self::Context) wraps any of them in the operation
/// it failed ("pulling …") and [`Shared`](Self::Shared) marks one that concurrent
/// pulls share; classify by [`ImageError::root`].
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The image reference cannot be used: malformed, too long, or with white space
    /// or control characters. Nothing was sent to a registry.
    #[error("image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// A credential field of the request cannot be used; `field` is its request path
    /// (`auth.auth`, `auth.identity_token`).
    #[error("{field}: {reason}")]
    InvalidAuth {
        field: &'static str,
        reason: &'static str,
    },
    /// The registry does not know the repository, tag or manifest.
    #[error("{context}: not found")]
    NotFound {
        context: String,
        #[source]
        source: Box<OciDistributionError>,
    },
    /// The image has no manifest for this node's platform.
    #[error("{context}: the image has no manifest for {platform} (it has: {available})")]
    NoMatchingPlatform {
        context: String,
        platform: String,
        available: String,
    },
    /// The registry refused the credentials that were sent, or wants some.
    #[error("{context}: the registry refused the credentials (or needs some)")]
    Unauthorized {
        context: String,
        #[source]
        source: Box<OciDistributionError>,
    },
    /// The registry could not be reached or kept failing (connection errors, 5xx,
    /// 429) through every attempt.
    #[error("{context}")]
    Unavailable {
        context: String,
        #[source]
        source: BoxError,
    },
    /// The registry stopped sending data for `images.progress_timeout_secs`, on every
    /// attempt.
    #[error("{context}: the registry sent no data for {secs}s (images.progress_timeout_secs)")]
    Stalled {
        context: String,
        secs: u64,
        #[source]
        source: Option<BoxError>,
    },
    /// What the registry sent does not match its digest or size (or a layer's
    /// uncompressed digest its diff id): corrupt in transit or at the source.
    #[error("{context}")]
    Mismatch {
        context: String,
        #[source]
        source: BoxError,
    },
    /// A layer unpacks to more than `images.max_layer_bytes`.
    #[error("{context}: the layer unpacks to more than {limit} bytes (images.max_layer_bytes)")]
    LayerTooLarge { context: String, limit: u64 },
    /// The file system holding `path` is full (ENOSPC) or its quota used up (EDQUOT).
    /// What was half-written has been removed; the same call works once space is freed.
    #[error("{context}: no space left for {}", path.display())]
    DiskFull {
        context: String,
        path: PathBuf,
        #[source]
        source: BoxError,
    },
    /// The image is not one crius can use: an unsupported manifest schema or layer
    /// media type, a config that contradicts its manifest, a layer that is not a valid
    /// or safe tar. Pulling again does not help until the image is fixed.
    #[error("{context}: {reason}")]
    InvalidImage {
        context: String,
        reason: String,
        #[source]
        source: Option<BoxError>,
    },
    /// A registry host file (hosts.toml, or a CA it names) cannot be used.
    #[error("{}: {reason}", path.display())]
    HostsConfig {
        path: std::path::PathBuf,
        reason: String,
    },
    /// No endpoint may serve a pull from `registry`.
    #[error("no endpoint for {registry}: {reason}")]
    NoEndpoint {
        registry: String,
        reason: &'static str,
    },
    /// The metadata store failed.
    #[error("{context}")]
    Store {
        context: String,
        #[source]
        source: Box<StoreError>,
    },
    /// The content store or the snapshotter failed.
    #[error("{context}")]
    Snapshotter {
        context: String,
        #[source]
        source: Box<crius_snapshotter::Error>,
    },
    /// Something of criusd's own failed (a worker task was lost).
    #[error("{context}")]
    Internal {
        context: String,
        #[source]
        source: Option<BoxError>,
    },
    /// `source` in the context of the operation that failed (`pulling <image>`).
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<ImageError>,
    },
    /// The failure of work that concurrent pulls shared (one blob or layer): each
    /// of them reports it.
    #[error(transparent)]
    Shared(Arc<ImageError>),
}

/// Shorthand for results of this crate.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

impl ImageError {
    /// This error and all its causes on one line, each once:
    /// `pulling host/app:v1: fetching layer sha256:…: connection refused`.
    pub fn report(&self) -> String {
        chain(self)
    }

    /// The innermost error that is not a [`Context`](Self::Context) or
    /// [`Shared`](Self::Shared) wrapper: the one
    /// that says what kind of failure this is.
    pub fn root(&self) -> &ImageError {
        match self {
            ImageError::Context { source, .. } => source.root(),
            ImageError::Shared(source) => source.root(),
            other => other,
        }
    }

    /// Wraps `self` in the operation it failed.
    pub(crate) fn context(self, context: impl Into<String>) -> ImageError {
        ImageError::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// A snapshotter or content-store failure while doing `context`: disk full
    /// when it is one (naming `path`), the image's fault when the layer is bad or
    /// too large or a blob does not verify, internal otherwise.
    pub(crate) fn snapshotter(
        context: impl Into<String>,
        path: &std::path::Path,
        e: crius_snapshotter::Error,
    ) -> ImageError {
        use crius_snapshotter::Error as S;
        let context = context.into();
        match e {
            e if e.is_disk_full() => ImageError::DiskFull {
                context,
                path: path.to_path_buf(),
                source: Box::new(e),
            },
            S::LayerTooLarge { limit } => ImageError::LayerTooLarge { context, limit },
            e @ (S::DigestMismatch { .. } | S::SizeMismatch { .. }) => ImageError::Mismatch {
                context,
                source: Box::new(e),
            },
            e @ (S::InvalidLayer { .. } | S::UnsafeEntry { .. }) => ImageError::InvalidImage {
                context,
                reason: "the layer cannot be unpacked".into(),
                source: Some(Box::new(e)),
            },
            e => ImageError::Snapshotter {
                context,
                source: Box::new(e),
            },
        }
    }

    /// A metadata store failure: disk full when it is one, internal otherwise.
    pub(crate) fn store(context: impl Into<String>, path: &std::path::Path, e: StoreError) -> Self {
        let context = context.into();
        if e.is_disk_full() {
            ImageError::DiskFull {
                context,
                path: path.to_path_buf(),
                source: Box::new(e),
            }
        } else {
            ImageError::Store {
                context,
                source: Box::new(e),
            }
        }
    }

    /// An internal failure with a cause.
    pub(crate) fn internal(context: impl Into<String>, source: impl Into<BoxError>) -> ImageError {
        ImageError::Internal {
            context: context.into(),
            source: Some(source.into()),
        }
    }
}

/// Two digests (or sizes) that should have been equal: the source of a
/// [`ImageError::Mismatch`] that no lower layer reported.
#[derive(Debug, thiserror::Error)]
#[error("{what} mismatch: expected {expected}, got {actual}")]
pub(crate) struct Mismatched {
    pub(crate) what: &'static str,
    pub(crate) expected: String,
    pub(crate) actual: String,
}

impl From<Arc<ImageError>> for ImageError {
    fn from(e: Arc<ImageError>) -> ImageError {
        ImageError::Shared(e)
    }
}

/// A failed write to a file of `path`'s store: disk full when it is one, internal
/// otherwise.
pub(crate) fn write_failed(
    context: impl Into<String>,
    path: &std::path::Path,
    e: std::io::Error,
) -> ImageError {
    if io_disk_full(&e) {
        ImageError::DiskFull {
            context: context.into(),
            path: path.to_path_buf(),
            source: Box::new(e),
        }
    } else {
        ImageError::internal(context, e)
    }
}

/// Whether an I/O error says the disk is full (ENOSPC) or the quota used up (EDQUOT).
pub(crate) fn io_disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// An error and its sources on one line, skipping a cause whose text the line
/// already holds (many errors repeat their source in their own message).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !t.is_empty() && !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_keeps_the_cause_chain_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e = ImageError::Unavailable {
            context: "fetching layer sha256:ab from 127.0.0.1:5000".into(),
            source: Box::new(io),
        }
        .context("pulling 127.0.0.1:5000/app:v1");
        let shared = ImageError::from(Arc::new(e)).context("pulling again");
        assert_eq!(
            shared.report(),
            "pulling again: pulling 127.0.0.1:5000/app:v1: fetching layer sha256:ab from 127.0.0.1:5000: connection refused"
        );
        assert!(matches!(shared.root(), ImageError::Unavailable { .. }));
        let ImageError::Context { source, .. } = shared else {
            panic!("a context")
        };
        let ImageError::Shared(e) = *source else {
            panic!("shared")
        };
        assert_eq!(
            e.report(),
            "pulling 127.0.0.1:5000/app:v1: fetching layer sha256:ab from 127.0.0.1:5000: connection refused"
        );
        assert!(matches!(e.root(), ImageError::Unavailable { .. }));
    }

    #[test]
    fn snapshotter_errors_are_classified() {
        let p = std::path::Path::new("/state/content");
        let full = crius_snapshotter::Error::Io {
            context: "write blob".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        let e = ImageError::snapshotter("storing blob", p, full);
        assert!(
            matches!(&e, ImageError::DiskFull { path, .. } if path == p),
            "{e:?}"
        );
        assert!(e.report().contains("/state/content"), "{}", e.report());
        let e = ImageError::snapshotter(
            "unpacking",
            p,
            crius_snapshotter::Error::LayerTooLarge { limit: 7 },
        );
        assert!(matches!(e, ImageError::LayerTooLarge { limit: 7, .. }));
        let other = crius_snapshotter::Error::NotFound {
            what: "blob".into(),
        };
        assert!(matches!(
            ImageError::snapshotter("reading", p, other),
            ImageError::Snapshotter { .. }
        ));
        assert!(io_disk_full(&std::io::Error::from_raw_os_error(
            libc::EDQUOT
        )));
        assert!(!io_disk_full(&std::io::Error::other("disk full")));
    }
}

//! The crate's error type: every variant says what was being done and to what.

use std::io;
use std::path::{Path, PathBuf};

use crate::Digest;

/// Errors from the content store, layer unpacking, the snapshotter and mounting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A digest string is malformed or uses an algorithm other than sha256.
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        /// The string as given.
        digest: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Content did not hash to the digest it was expected to have.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the caller expected.
        expected: Digest,
        /// The digest of the bytes actually written or read.
        actual: Digest,
    },
    /// Content did not have the size it was expected to have.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob concerned.
        digest: Digest,
        /// The size the caller expected.
        expected: u64,
        /// The number of bytes actually written.
        actual: u64,
    },
    /// A blob, layer or snapshot does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `layer sha256:...`.
        what: String,
    },
    /// A snapshot with this key already exists.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What already exists, e.g. `snapshot "abc"`.
        what: String,
    },
    /// A layer cannot be removed while something is built on it.
    #[error("{what} is in use by {by}")]
    InUse {
        /// The layer that was to be removed.
        what: String,
        /// Who uses it (a child layer or a writable snapshot).
        by: String,
    },
    /// A snapshot key is not `[a-zA-Z0-9_.-]{1,128}` (or is `.`/`..`).
    #[error("invalid snapshot key {key:?}: must match [a-zA-Z0-9_.-]{{1,128}} and not be . or ..")]
    InvalidKey {
        /// The key as given.
        key: String,
    },
    /// A tar entry tried to write outside the layer or through a symlink; nothing was written.
    #[error("unsafe layer entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The entry's name as it appears in the tar.
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// The layer is not a valid (compressed) tar stream: truncated, corrupt, unsupported entry.
    #[error("invalid layer{}: {reason}", entry.as_ref().map(|e| format!(" at entry {e:?}")).unwrap_or_default())]
    InvalidLayer {
        /// The entry being read when it failed, if any.
        entry: Option<String>,
        /// What was wrong.
        reason: String,
    },
    /// The layer unpacked to more than the extraction's size limit
    /// ([`crate::LayerExtraction::set_size_limit`]): a decompression bomb, or a limit set too low.
    #[error("invalid layer: the layer unpacks to more than {limit} bytes, the configured limit")]
    LayerTooLarge {
        /// The limit, in uncompressed bytes.
        limit: u64,
    },
    /// On-disk metadata of the store is unreadable.
    #[error("corrupt metadata {path}: {reason}")]
    Corrupt {
        /// The file concerned.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A mount request cannot be carried out as specified.
    #[error("invalid mount {kind} {source_path:?}: {reason}")]
    InvalidMount {
        /// The mount type.
        kind: String,
        /// The mount source.
        source_path: String,
        /// What was wrong.
        reason: String,
    },
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, including the path.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Error {
        Error::Io {
            context: context.into(),
            source: source.into(),
        }
    }

    pub(crate) fn io_path(what: &str, path: &Path, source: impl Into<io::Error>) -> Error {
        Error::Io {
            context: format!("{what} {}", path.display()),
            source: source.into(),
        }
    }

    /// True for I/O errors that say the file system is full or the quota used up
    /// (`ENOSPC`, `EDQUOT`): freeing space, not retrying, is what helps.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => is_disk_full(source),
            _ => false,
        }
    }

    /// True for [`Error::NotFound`] and for I/O errors of kind `NotFound`.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound { .. } => true,
            Error::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

/// Whether an I/O error is `ENOSPC` or `EDQUOT`.
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    use rustix::io::Errno;
    Errno::from_io_error(e).is_some_and(|n| n == Errno::NOSPC || n == Errno::DQUOT)
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn disk_full_is_recognised() {
        // /dev/full fails every write with ENOSPC: a real one, not a made-up code.
        let mut full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full must exist");
        let e = io::Write::write_all(&mut full, b"x").unwrap_err();
        let err = Error::io_path("write", Path::new("/dev/full"), e);
        assert!(err.is_disk_full(), "{err}");
        let quota = Error::io("write", io::Error::from_raw_os_error(122));
        assert!(
            quota.is_disk_full(),
            "EDQUOT is {}",
            rustix::io::Errno::DQUOT.raw_os_error()
        );
        for other in [
            Error::io("write", io::Error::from_raw_os_error(5)),
            Error::io("write", io::Error::other("no space left on device")),
            Error::NotFound {
                what: "blob".into(),
            },
            Error::LayerTooLarge { limit: 1 },
        ] {
            assert!(!other.is_disk_full(), "{other}");
        }
    }
}

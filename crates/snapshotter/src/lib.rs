//! Content store and overlayfs snapshotter for crius (see docs/architecture.md, "Images").
//!
//! - [`ContentStore`]: blobs by digest, verified before they become visible.
//! - [`Snapshotter`]: layers unpacked once ([`LayerExtraction`]) and committed under their
//!   chain id, shared by every image that has them; writable snapshots per container;
//!   overlayfs [`Mount`] specs and [`mount_all`] / [`unmount`].
//! - Layer unpacking is safe against hostile tars: see the `unpack` module docs for the
//!   exact rules (no `..`, no writes through symlinks, hardlinks only within the layer).
//!
//! Everything here is synchronous and `Send + Sync`; criusd calls it from blocking threads.
//! On-disk state is safe to share with other processes and survives a crash at any point
//! (see the module docs of `content` and `snapshot` for layout and recovery).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod content;
mod digest;
mod error;
mod mount;
mod snapshot;
mod unpack;
mod util;

pub use content::{BlobWriter, ContentStore, Tee};
pub use digest::{Digest, chain_id};
pub use error::{Error, Result};
pub use mount::{MAX_MOUNT_DATA, Mount, mount_all, unmount};
pub use snapshot::{LayerExtraction, LayerInfo, Options, SnapshotInfo, Snapshotter};
pub use unpack::UnpackStats;

/// Bytes and inodes used on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Bytes of allocated blocks.
    pub bytes: u64,
    /// Number of inodes (each hardlinked inode counted once).
    pub inodes: u64,
}

impl std::ops::Add for Usage {
    type Output = Usage;
    fn add(self, o: Usage) -> Usage {
        Usage {
            bytes: self.bytes + o.bytes,
            inodes: self.inodes + o.inodes,
        }
    }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (one or more members).
    Gzip,
    /// zstd (one or more frames).
    Zstd,
}

impl Compression {
    /// The compression of an OCI or Docker layer media type, including the
    /// non-distributable/foreign ones; None for anything that is not a layer type.
    pub fn from_media_type(mt: &str) -> Option<Compression> {
        let mt = mt.trim().to_ascii_lowercase();
        let rest = mt
            .strip_prefix("application/vnd.oci.image.layer.")
            .or_else(|| mt.strip_prefix("application/vnd.docker.image.rootfs."))?;
        if !(rest.starts_with("v1.tar")
            || rest.starts_with("nondistributable.v1.tar")
            || rest.starts_with("diff.tar")
            || rest.starts_with("foreign.diff.tar"))
        {
            return None;
        }
        let comp = rest.split_once(".tar").map(|(_, c)| c).unwrap_or_default();
        match comp {
            "" => Some(Compression::None),
            "+gzip" | ".gzip" | ".gz" => Some(Compression::Gzip),
            "+zstd" | ".zstd" | ".zst" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// Guesses the compression from the first bytes of a blob (gzip and zstd magic numbers).
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn media_types() {
        use Compression::*;
        for (mt, c) in [
            ("application/vnd.oci.image.layer.v1.tar", Some(None)),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Some(Gzip)),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Some(Zstd)),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Some(Gzip),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar",
                Some(None),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                Some(Zstd),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Some(Gzip),
            ),
            ("application/vnd.docker.image.rootfs.diff.tar", Some(None)),
            ("application/vnd.oci.image.layer.v1.tar+bzip2", Option::None),
            ("application/vnd.oci.image.config.v1+json", Option::None),
            ("application/vnd.oci.image.manifest.v1+json", Option::None),
            ("text/plain", Option::None),
        ] {
            assert_eq!(Compression::from_media_type(mt), c, "{mt}");
        }
    }

    #[test]
    fn detect() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"ustar"), Compression::None);
    }

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn thread_safe_types() {
        assert_send_sync::<ContentStore>();
        assert_send_sync::<Snapshotter>();
        assert_send_sync::<LayerExtraction>();
        assert_send_sync::<BlobWriter>();
        assert_send_sync::<Error>();
    }
}

//! Content store and overlayfs snapshotter for crius (see DESIGN.md, "Images").
//!
//! Blobs by digest, verified layer unpacking, committed layers keyed by chain id,
//! writable snapshots and overlayfs mount specs arrive with the images work
//! (issue 3). The crate exists now so the workspace has its final shape.
#![forbid(unsafe_code)]

//! Helpers shared by the integration tests: layer tars built in memory (including
//! malicious ones the `tar` crate's safe API refuses to write), compression, and temp
//! directories that check no mount is left under them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_arguments,
    dead_code
)]

use std::io::Write;
use std::path::{Path, PathBuf};

use crius_snapshotter::{Compression, Digest, Snapshotter, UnpackStats, chain_id};
use tar::{EntryType, Header};

pub const MTIME: u64 = 1_600_000_000;

/// Builds a layer tar in memory.
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    pub fn new() -> Layer {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Complete);
        Layer { b }
    }

    /// Appends an entry with a raw name (no validation, so `..` and absolute names work).
    pub fn raw(
        &mut self,
        name: &str,
        kind: EntryType,
        link: Option<&str>,
        mode: u32,
        data: &[u8],
    ) -> &mut Self {
        let mut h = Header::new_ustar();
        {
            let old = h.as_old_mut();
            assert!(name.len() < 100 && link.map_or(0, str::len) < 100);
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                old.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn entry(
        &mut self,
        name: &str,
        kind: EntryType,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        data: &[u8],
    ) -> &mut Self {
        let mut h = Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        h.set_size(data.len() as u64);
        self.b.append_data(&mut h, name, data).unwrap();
        self
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(name, EntryType::Directory, 0o755, 0, 0, MTIME, b"")
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name, EntryType::Regular, 0o644, 0, 0, MTIME, data)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name, EntryType::Symlink, Some(target), 0o777, b"")
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name, EntryType::Link, Some(target), 0o644, b"")
    }

    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.b
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .unwrap();
        self
    }

    pub fn device(&mut self, name: &str, kind: EntryType, major: u32, minor: u32) -> &mut Self {
        let mut h = Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(0o640);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_size(0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.b.append_data(&mut h, name, &b""[..]).unwrap();
        self
    }

    pub fn build(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

pub fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::stream::encode_all(tar, 3).unwrap(),
    }
}

/// A unique temp dir; on drop asserts that nothing is mounted under it.
pub struct TestDir {
    pub dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> TestDir {
        TestDir {
            dir: tempfile::Builder::new()
                .prefix("crius-snap-test")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let left = mounts_under(self.path());
        if !left.is_empty() && !std::thread::panicking() {
            for m in &left {
                let _ = crius_snapshotter::unmount(Path::new(m));
            }
            panic!("mounts left under {}: {left:?}", self.path().display());
        }
    }
}

/// Mount points under `dir` according to /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let d = dir.to_string_lossy().into_owned();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|mp| mp.starts_with(&d))
        .map(str::to_owned)
        .collect()
}

/// Unmounts on drop.
pub struct Mounted(pub PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        crius_snapshotter::unmount(&self.0).unwrap();
    }
}

/// Unpacks and commits a layer; returns its chain id and stats.
pub fn add_layer(
    sn: &Snapshotter,
    parent: Option<&Digest>,
    tar: &[u8],
    c: Compression,
) -> (Digest, UnpackStats) {
    let diff_id = Digest::sha256_of(tar);
    let chain = chain_id(parent, &diff_id);
    let mut x = sn.begin_layer(&chain, parent).unwrap();
    let blob = compress(tar, c);
    let stats = x.unpack(&blob[..], c).unwrap();
    assert_eq!(stats.diff_id, diff_id);
    assert_eq!(stats.uncompressed_bytes, tar.len() as u64);
    x.commit().unwrap();
    (chain, stats)
}

/// The single directory `layers/<n>/fs` of a committed layer, found through view_mounts.
pub fn layer_fs(sn: &Snapshotter, chain: &Digest) -> PathBuf {
    let m = sn.view_mounts(chain).unwrap();
    let m = &m[0];
    if m.kind == "bind" {
        return PathBuf::from(&m.source);
    }
    let lower = m
        .options
        .iter()
        .find_map(|o| o.strip_prefix("lowerdir="))
        .unwrap();
    PathBuf::from(lower.split(':').next().unwrap())
}

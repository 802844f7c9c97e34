//! Committed layers keyed by chain id, and writable snapshots keyed by container id.
//!
//! # On-disk layout (under the root)
//! - `lock` — `flock`ed for the short critical sections that publish or remove something
//!   (never across unpacking or tree removal).
//! - `layers/<n>/fs` — a committed layer's files (an overlay lowerdir); `n` is a small
//!   decimal id, so that long chains still fit in the mount options' page.
//! - `layers/<n>/meta.json` — `{chain_id, parent, lowers, size, inodes}`; `lowers` lists the
//!   ids of the layer and all its ancestors, topmost first (ancestors cannot be removed while
//!   a child exists, so the ids stay valid).
//! - `chains/<hex>` — a symlink to `<n>`: the index, and the commit point. A layer exists
//!   exactly when its chain symlink does.
//! - `snapshots/<key>/{fs,work,meta.json}` — writable snapshots (upperdir, workdir,
//!   `{key, parent}`).
//! - `snapshots/<key>/meta.json` alone, with `"view": true` — a read-only view of a
//!   committed chain (an image volume): no files of its own, mounted as an overlay of the
//!   chain's layers without an upper directory. Like a writable snapshot it holds its
//!   chain: the layers cannot be removed while it exists.
//! - `empty/` — an empty directory, the bottom lowerdir of a one-layer view (overlayfs
//!   wants two lowerdirs when there is no upperdir).
//! - `tmp/<pid>-<n>-<nanos>` — layers being unpacked, snapshots being made, trees being
//!   deleted.
//!
//! # Invariants and recovery
//! Everything is built in `tmp/` and renamed into place under the lock; a layer becomes
//! visible only when its chain symlink is created, after its files are synced. A crash can
//! leave: entries in `tmp/` (removed by [`Snapshotter::open`] once their process is gone), a
//! `layers/<n>` with no chain symlink (removed by `open`), a chain symlink to a missing
//! layer (removed by `open`). Nothing half-made is ever visible under a chain id or key.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{CWD, RenameFlags};

use crate::error::{Error, Result};
use crate::mount::Mount;
use crate::unpack::{self, UnpackStats};
use crate::util::{self, Lock};
use crate::{Compression, Digest, Usage};

/// A committed layer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerInfo {
    /// The layer's chain id.
    pub chain_id: Digest,
    /// The chain id of the layer below, if any.
    pub parent: Option<Digest>,
    /// Bytes used on disk by the layer's files (measured at commit).
    pub size: u64,
    /// Inodes used by the layer's files (measured at commit).
    pub inodes: u64,
}

/// A writable snapshot, or a read-only view of a chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotInfo {
    /// The snapshot's key (the container id).
    pub key: String,
    /// The chain id of the committed layer it sits on, if any.
    pub parent: Option<Digest>,
    /// A read-only view ([`Snapshotter::prepare_view`]): no files of its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub view: bool,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct LayerMeta {
    chain_id: Digest,
    parent: Option<Digest>,
    lowers: Vec<u64>,
    size: u64,
    inodes: u64,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    layers: PathBuf,
    chains: PathBuf,
    snapshots: PathBuf,
    tmp: PathBuf,
    lock: PathBuf,
    empty: PathBuf,
    index_off: bool,
    options: Options,
}

/// Tunables of a [`Snapshotter`]; `Options::default()` is what [`Snapshotter::open`] uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `syncfs` the filesystem before a layer is published, so that a power loss can never
    /// leave a committed layer with missing data (default true). containerd's default is
    /// not to sync; turning it off trades that guarantee for commit latency on busy disks.
    pub sync_on_commit: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            sync_on_commit: true,
        }
    }
}

/// Committed layers by chain id and writable snapshots by key, under one root directory.
///
/// Cheap to clone; safe to use from many threads and from several processes at once.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    inner: Arc<Inner>,
}

fn valid_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidKey {
            key: key.to_owned(),
        })
    }
}

fn read_meta<T: serde::de::DeserializeOwned>(p: &Path) -> Result<T> {
    let bytes = fs::read(p).map_err(|e| Error::io_path("read", p, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
        path: p.to_path_buf(),
        reason: e.to_string(),
    })
}

fn write_meta<T: serde::Serialize>(p: &Path, v: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(v).map_err(|e| Error::Corrupt {
        path: p.to_path_buf(),
        reason: e.to_string(),
    })?;
    let f = fs::File::create(p).map_err(|e| Error::io_path("create", p, e))?;
    io::Write::write_all(&mut &f, &bytes).map_err(|e| Error::io_path("write", p, e))?;
    f.sync_all().map_err(|e| Error::io_path("fsync", p, e))
}

fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    rustix::fs::renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE).map_err(io::Error::from)
}

impl Snapshotter {
    /// Opens (creating if needed) a snapshotter at `root`, removing what a crash left
    /// half-made (see the module docs).
    pub fn open(root: &Path) -> Result<Snapshotter> {
        Snapshotter::open_with(root, Options::default())
    }

    /// [`Snapshotter::open`] with explicit [`Options`].
    pub fn open_with(root: &Path, options: Options) -> Result<Snapshotter> {
        let root = std::path::absolute(root).map_err(|e| Error::io_path("resolve", root, e))?;
        let s = root.to_string_lossy();
        if s.contains([',', ':', '\\']) || s.contains('\n') {
            return Err(Error::InvalidMount {
                kind: "overlay".into(),
                source_path: s.into_owned(),
                reason: "the snapshotter root must not contain ',', ':', '\\' or newlines (they would break overlay options)".into(),
            });
        }
        let inner = Inner {
            layers: root.join("layers"),
            chains: root.join("chains"),
            snapshots: root.join("snapshots"),
            tmp: root.join("tmp"),
            lock: root.join("lock"),
            empty: root.join("empty"),
            root: root.clone(),
            index_off: Path::new("/sys/module/overlay/parameters/index").exists(),
            options,
        };
        for d in [
            &inner.layers,
            &inner.chains,
            &inner.snapshots,
            &inner.tmp,
            &inner.empty,
        ] {
            util::create_dir_all(d)?;
        }
        let sn = Snapshotter {
            inner: Arc::new(inner),
        };
        sn.repair()?;
        Ok(sn)
    }

    /// The snapshotter's root directory (as an absolute path).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    fn repair(&self) -> Result<()> {
        let i = &self.inner;
        let _lock = Lock::acquire(&i.lock)?;
        util::clean_stale(&i.tmp)?;
        // Chain symlinks whose layer is missing.
        let mut referenced = std::collections::HashSet::new();
        for ent in util::read_dir(&i.chains, "list")? {
            let ent = ent?;
            let p = ent.path();
            let id = fs::read_link(&p)
                .ok()
                .and_then(|t| t.to_str().and_then(|t| t.parse::<u64>().ok()));
            match id {
                Some(id) if i.layers.join(id.to_string()).join("meta.json").is_file() => {
                    referenced.insert(id);
                }
                _ => {
                    tracing::warn!(path = %p.display(), "removing chain index entry without a layer");
                    util::remove_any(&p)?;
                }
            }
        }
        // Layer directories no chain symlink points at (crash between rename and publish).
        for ent in util::read_dir(&i.layers, "list")? {
            let ent = ent?;
            let keep = ent
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|id| referenced.contains(&id));
            if !keep {
                tracing::warn!(path = %ent.path().display(), "removing unpublished layer directory");
                self.discard(&ent.path())?;
            }
        }
        // Snapshots are renamed into place complete; one without metadata is junk.
        for ent in util::read_dir(&i.snapshots, "list")? {
            let ent = ent?;
            if !ent.path().join("meta.json").is_file() {
                self.discard(&ent.path())?;
            }
        }
        Ok(())
    }

    /// Moves a tree into tmp/ (quick, atomic) and removes it there.
    fn discard(&self, p: &Path) -> Result<()> {
        let dst = self.inner.tmp.join(util::temp_name());
        match fs::rename(p, &dst) {
            Ok(()) => util::remove_any(&dst),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io_path("move aside", p, e)),
        }
    }

    fn chain_link(&self, chain_id: &Digest) -> PathBuf {
        self.inner.chains.join(chain_id.hex())
    }

    fn layer_dir(&self, id: u64) -> PathBuf {
        self.inner.layers.join(id.to_string())
    }

    fn lower_path(&self, id: u64) -> String {
        self.layer_dir(id).join("fs").to_string_lossy().into_owned()
    }

    /// The numeric id of a committed layer, or None.
    fn layer_id(&self, chain_id: &Digest) -> Option<u64> {
        fs::read_link(self.chain_link(chain_id))
            .ok()
            .and_then(|t| t.to_str().and_then(|t| t.parse().ok()))
    }

    fn layer_meta(&self, chain_id: &Digest) -> Result<(u64, LayerMeta)> {
        let id = self.layer_id(chain_id).ok_or_else(|| Error::NotFound {
            what: format!("layer {chain_id}"),
        })?;
        let meta: LayerMeta = read_meta(&self.layer_dir(id).join("meta.json")).map_err(|e| {
            if e.is_not_found() {
                Error::NotFound {
                    what: format!("layer {chain_id}"),
                }
            } else {
                e
            }
        })?;
        Ok((id, meta))
    }

    /// Whether a layer with this chain id is committed.
    pub fn has_layer(&self, chain_id: &Digest) -> bool {
        self.layer_id(chain_id).is_some()
    }

    /// Starts unpacking a layer whose chain id is `chain_id` on top of `parent` (None for
    /// the base layer). The layer unpacks into a hidden temporary directory; the parent need
    /// only be committed by the time [`LayerExtraction::commit`] is called, so the layers of
    /// an image may be unpacked in parallel.
    pub fn begin_layer(
        &self,
        chain_id: &Digest,
        parent: Option<&Digest>,
    ) -> Result<LayerExtraction> {
        let dir = self.inner.tmp.join(util::temp_name());
        util::create_dir_all(&dir.join("fs"))?;
        fs::set_permissions(
            dir.join("fs"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .map_err(|e| Error::io_path("chmod", &dir, e))?;
        Ok(LayerExtraction {
            sn: self.clone(),
            chain_id: chain_id.clone(),
            parent: parent.cloned(),
            dir,
            state: State::Empty,
            size_limit: None,
        })
    }

    fn overlay_options(&self, lowers: &[u64], upper: Option<&Path>) -> Vec<String> {
        let mut opts = Vec::new();
        if self.inner.index_off {
            opts.push("index=off".to_owned());
        }
        if let Some(u) = upper {
            opts.push(format!("workdir={}", u.join("work").display()));
            opts.push(format!("upperdir={}", u.join("fs").display()));
        }
        let l: Vec<String> = lowers.iter().map(|&id| self.lower_path(id)).collect();
        opts.push(format!("lowerdir={}", l.join(":")));
        opts
    }

    /// Creates a writable snapshot `key` (a container id, `[a-zA-Z0-9_.-]{1,128}`) on top of
    /// the committed chain `parent` and returns its mounts. An existing key is
    /// [`Error::AlreadyExists`].
    pub fn prepare(&self, key: &str, parent: Option<&Digest>) -> Result<Vec<Mount>> {
        let info = SnapshotInfo {
            key: key.to_owned(),
            parent: parent.cloned(),
            view: false,
        };
        self.create(key, info, |tmp| {
            let top = match parent {
                Some(p) => Some(self.layer_meta(p)?.0),
                None => None,
            };
            util::create_dir_all(&tmp.join("fs"))?;
            util::create_dir_all(&tmp.join("work"))?;
            // The upper root decides the merged root's owner and mode: take the top
            // layer's (as containerd does), else 0755 root.
            let fs_dir = tmp.join("fs");
            let (mode, uid, gid) = match top {
                Some(id) => {
                    let p = self.layer_dir(id).join("fs");
                    let m = fs::metadata(&p).map_err(|e| Error::io_path("stat", &p, e))?;
                    (m.mode() & 0o7777, m.uid(), m.gid())
                }
                None => (0o755, 0, 0),
            };
            std::os::unix::fs::chown(&fs_dir, Some(uid), Some(gid))
                .map_err(|e| Error::io_path("chown", &fs_dir, e))?;
            fs::set_permissions(&fs_dir, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(|e| Error::io_path("chmod", &fs_dir, e))
        })
    }

    /// Makes snapshot `key` under the lock: `fill` populates its directory in a
    /// temporary place, its metadata is written, and it is renamed into place at once
    /// (a crash leaves only a temporary directory, a failure nothing); returns its
    /// mounts. An existing key is [`Error::AlreadyExists`].
    fn create(
        &self,
        key: &str,
        info: SnapshotInfo,
        fill: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Vec<Mount>> {
        valid_key(key)?;
        let i = &self.inner;
        let dst = i.snapshots.join(key);
        {
            let _lock = Lock::acquire(&i.lock)?;
            if dst.exists() {
                return Err(Error::AlreadyExists {
                    what: format!("snapshot {key:?}"),
                });
            }
            let tmp = i.tmp.join(util::temp_name());
            let what = if info.view {
                "create view"
            } else {
                "create snapshot"
            };
            let built = (|| -> Result<()> {
                util::create_dir_all(&tmp)?;
                fill(&tmp)?;
                write_meta(&tmp.join("meta.json"), &info)?;
                rename_noreplace(&tmp, &dst).map_err(|e| Error::io_path(what, &dst, e))?;
                util::fsync_dir(&i.snapshots)
            })();
            if let Err(e) = built {
                let _ = util::remove_any(&tmp);
                return Err(e);
            }
        }
        self.mounts(key)
    }

    /// Read-only mounts of a committed chain.
    pub fn view_mounts(&self, chain_id: &Digest) -> Result<Vec<Mount>> {
        let (_, meta) = self.layer_meta(chain_id)?;
        if let [only] = meta.lowers[..] {
            return Ok(vec![Mount {
                kind: "bind".into(),
                source: self.lower_path(only),
                options: vec!["rbind".into(), "ro".into()],
            }]);
        }
        let mut options = self.overlay_options(&meta.lowers, None);
        options.push("ro".into());
        Ok(vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options,
        }])
    }

    /// Creates a read-only view `key` of the committed chain `chain_id` and returns its
    /// mounts: one overlay of the chain's layers with no upper directory, so neither the
    /// mount nor a remount of it can write to a layer. Nothing is copied or unpacked;
    /// the view only records its chain, which holds the layers (like a writable
    /// snapshot, it makes [`Snapshotter::remove_layer`] refuse them) until
    /// [`Snapshotter::remove_snapshot`]. An existing key is [`Error::AlreadyExists`].
    pub fn prepare_view(&self, key: &str, chain_id: &Digest) -> Result<Vec<Mount>> {
        let info = SnapshotInfo {
            key: key.to_owned(),
            parent: Some(chain_id.clone()),
            view: true,
        };
        self.create(key, info, |_| self.layer_meta(chain_id).map(|_| ()))
    }

    /// The mounts of snapshot `key` (writable, or a view).
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        valid_key(key)?;
        let dir = self.inner.snapshots.join(key);
        let info: SnapshotInfo = read_meta(&dir.join("meta.json")).map_err(|e| {
            if e.is_not_found() {
                Error::NotFound {
                    what: format!("snapshot {key:?}"),
                }
            } else {
                e
            }
        })?;
        if info.view {
            let Some(p) = info.parent else {
                return Err(Error::Corrupt {
                    path: dir.join("meta.json"),
                    reason: "a view without a chain".into(),
                });
            };
            let (_, meta) = self.layer_meta(&p)?;
            let mut options = self.overlay_options(&meta.lowers, None);
            if let [_] = meta.lowers[..] {
                if let Some(l) = options.last_mut() {
                    l.push(':');
                    l.push_str(&self.inner.empty.to_string_lossy());
                }
            }
            options.push("ro".into());
            return Ok(vec![Mount {
                kind: "overlay".into(),
                source: "overlay".into(),
                options,
            }]);
        }
        match info.parent {
            None => Ok(vec![Mount {
                kind: "bind".into(),
                source: dir.join("fs").to_string_lossy().into_owned(),
                options: vec!["rbind".into(), "rw".into()],
            }]),
            Some(p) => {
                let (_, meta) = self.layer_meta(&p)?;
                Ok(vec![Mount {
                    kind: "overlay".into(),
                    source: "overlay".into(),
                    options: self.overlay_options(&meta.lowers, Some(&dir)),
                }])
            }
        }
    }

    /// Removes writable snapshot `key` (unmount it first). A missing snapshot is Ok.
    pub fn remove_snapshot(&self, key: &str) -> Result<()> {
        valid_key(key)?;
        let dst = self.inner.tmp.join(util::temp_name());
        {
            let _lock = Lock::acquire(&self.inner.lock)?;
            let src = self.inner.snapshots.join(key);
            match fs::rename(&src, &dst) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(Error::io_path("remove snapshot", &src, e)),
            }
            util::fsync_dir(&self.inner.snapshots)?;
        }
        util::remove_any(&dst)
    }

    /// Removes a committed layer. Refused with [`Error::InUse`] while a child layer or a
    /// writable snapshot is built on it. A missing layer is Ok.
    pub fn remove_layer(&self, chain_id: &Digest) -> Result<()> {
        let dst = self.inner.tmp.join(util::temp_name());
        {
            let _lock = Lock::acquire(&self.inner.lock)?;
            let id = match self.layer_meta(chain_id) {
                Ok((id, _)) => id,
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e),
            };
            let in_use = |by: String| Error::InUse {
                what: format!("layer {chain_id}"),
                by,
            };
            for l in self.layers()? {
                if l.parent.as_ref() == Some(chain_id) {
                    return Err(in_use(format!("layer {}", l.chain_id)));
                }
            }
            for s in self.snapshots()? {
                if s.parent.as_ref() == Some(chain_id) {
                    return Err(in_use(format!("snapshot {:?}", s.key)));
                }
            }
            let link = self.chain_link(chain_id);
            fs::remove_file(&link).map_err(|e| Error::io_path("unpublish layer", &link, e))?;
            util::fsync_dir(&self.inner.chains)?;
            let dir = self.layer_dir(id);
            fs::rename(&dir, &dst).map_err(|e| Error::io_path("remove layer", &dir, e))?;
        }
        util::remove_any(&dst)
    }

    /// Garbage collection: removes every committed layer whose chain id is not in `keep` and
    /// that no writable snapshot or kept layer is built on, topmost first. Returns the chain
    /// ids removed. The caller passes every chain id it still references, including those of
    /// pulls in progress.
    pub fn prune_layers(&self, keep: &std::collections::HashSet<Digest>) -> Result<Vec<Digest>> {
        let mut removed = Vec::new();
        loop {
            let layers = self.layers()?;
            let used: std::collections::HashSet<Digest> = layers
                .iter()
                .filter_map(|l| l.parent.clone())
                .chain(self.snapshots()?.into_iter().filter_map(|s| s.parent))
                .collect();
            let victims: Vec<Digest> = layers
                .into_iter()
                .map(|l| l.chain_id)
                .filter(|c| !keep.contains(c) && !used.contains(c))
                .collect();
            if victims.is_empty() {
                return Ok(removed);
            }
            let mut progress = false;
            for c in victims {
                match self.remove_layer(&c) {
                    Ok(()) => {
                        removed.push(c);
                        progress = true;
                    }
                    // Someone built on it meanwhile: keep it.
                    Err(Error::InUse { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            if !progress {
                return Ok(removed);
            }
        }
    }

    /// Every committed layer, sorted by chain id.
    pub fn layers(&self) -> Result<Vec<LayerInfo>> {
        let mut out = Vec::new();
        for ent in util::read_dir(&self.inner.chains, "list")? {
            let ent = ent?;
            let Ok(d) = Digest::parse(&format!("sha256:{}", ent.file_name().to_string_lossy()))
            else {
                continue;
            };
            match self.layer_meta(&d) {
                Ok((_, m)) => out.push(LayerInfo {
                    chain_id: m.chain_id,
                    parent: m.parent,
                    size: m.size,
                    inodes: m.inodes,
                }),
                Err(e) if e.is_not_found() => {} // removed meanwhile
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.chain_id.cmp(&b.chain_id));
        Ok(out)
    }

    /// Every writable snapshot, sorted by key.
    pub fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        let mut out = Vec::new();
        for ent in util::read_dir(&self.inner.snapshots, "list")? {
            let ent = ent?;
            match read_meta::<SnapshotInfo>(&ent.path().join("meta.json")) {
                Ok(s) => out.push(s),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Disk usage of one committed layer's files (measured when it was committed; layers
    /// never change afterwards).
    pub fn layer_usage(&self, chain_id: &Digest) -> Result<Usage> {
        let (_, m) = self.layer_meta(chain_id)?;
        Ok(Usage {
            bytes: m.size,
            inodes: m.inodes,
        })
    }

    /// Disk usage of a writable snapshot's upper directory, measured now.
    pub fn snapshot_usage(&self, key: &str) -> Result<Usage> {
        valid_key(key)?;
        let dir = self.inner.snapshots.join(key);
        if !dir.join("meta.json").is_file() {
            return Err(Error::NotFound {
                what: format!("snapshot {key:?}"),
            });
        }
        let fs_dir = dir.join("fs");
        if !fs_dir.exists() {
            return Ok(Usage::default()); // a view has no files of its own
        }
        util::disk_usage(&fs_dir)
    }

    /// Total disk usage of all committed layers: the sum of what each measured on disk when
    /// it was committed (layers never change afterwards, so this is exact and cheap, which
    /// matters since the kubelet asks for it every few seconds).
    pub fn layers_usage(&self) -> Result<Usage> {
        Ok(self.layers()?.iter().fold(Usage::default(), |u, l| {
            u + Usage {
                bytes: l.size,
                inodes: l.inodes,
            }
        }))
    }

    /// Total disk usage of all writable snapshots, measured now.
    pub fn snapshots_usage(&self) -> Result<Usage> {
        util::disk_usage(&self.inner.snapshots)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Empty,
    Unpacked,
    Failed,
    Done,
}

/// A layer being unpacked into a hidden temporary directory. Dropping it without
/// [`LayerExtraction::commit`] removes the directory.
#[derive(Debug)]
pub struct LayerExtraction {
    sn: Snapshotter,
    chain_id: Digest,
    parent: Option<Digest>,
    dir: PathBuf,
    state: State,
    size_limit: Option<u64>,
}

impl LayerExtraction {
    /// The chain id this extraction will be committed as.
    pub fn chain_id(&self) -> &Digest {
        &self.chain_id
    }

    /// Fails [`LayerExtraction::unpack`] once the layer has produced more than `bytes`
    /// uncompressed (a decompression bomb), with [`Error::LayerTooLarge`].
    pub fn set_size_limit(&mut self, bytes: u64) {
        self.size_limit = Some(bytes);
    }

    /// Decompresses and unpacks a layer tar from `reader` (streamed as it arrives) and returns
    /// the diff id (sha256 of the uncompressed tar) and size. Callable once. On error the
    /// half-unpacked files are removed at once and the extraction can only be dropped.
    pub fn unpack(&mut self, reader: impl Read, compression: Compression) -> Result<UnpackStats> {
        if self.state != State::Empty {
            return Err(Error::io(
                format!("unpack layer {}", self.chain_id),
                io::Error::other("unpack may be called once per extraction"),
            ));
        }
        match unpack::unpack(&self.dir.join("fs"), reader, compression, self.size_limit) {
            Ok(s) => {
                self.state = State::Unpacked;
                Ok(s)
            }
            Err(e) => {
                self.state = State::Failed;
                if let Err(re) = util::remove_any(&self.dir) {
                    tracing::warn!(error = %re, "removing failed extraction");
                }
                Err(e)
            }
        }
    }

    /// Atomically makes the layer visible under its chain id. If another thread or process
    /// committed the same chain id first, ours is discarded and this returns Ok. The parent
    /// must be committed by now.
    pub fn commit(mut self) -> Result<()> {
        if self.state == State::Failed {
            return Err(Error::io(
                format!("commit layer {}", self.chain_id),
                io::Error::other("the unpack failed; nothing to commit"),
            ));
        }
        let i = self.sn.inner.clone();
        let fs_dir = self.dir.join("fs");
        if self.sn.has_layer(&self.chain_id) {
            return Ok(()); // Drop discards ours.
        }
        let usage = util::disk_usage(&fs_dir)?;
        if i.options.sync_on_commit {
            // Make the files durable before the layer becomes visible.
            let dirfd = fs::File::open(&fs_dir).map_err(|e| Error::io_path("open", &fs_dir, e))?;
            rustix::fs::syncfs(&dirfd).map_err(|e| Error::io_path("syncfs", &fs_dir, e))?;
        }

        let _lock = Lock::acquire(&i.lock)?;
        if self.sn.has_layer(&self.chain_id) {
            return Ok(());
        }
        let mut lowers = Vec::new();
        if let Some(p) = &self.parent {
            let (_, pm) = self.sn.layer_meta(p).map_err(|e| {
                if e.is_not_found() {
                    Error::NotFound {
                        what: format!("parent layer {p} of {}", self.chain_id),
                    }
                } else {
                    e
                }
            })?;
            lowers = pm.lowers;
        }
        let mut next = 1;
        for ent in util::read_dir(&i.layers, "list")? {
            let ent = ent?;
            if let Some(n) = ent.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
                next = next.max(n + 1);
            }
        }
        lowers.insert(0, next);
        write_meta(
            &self.dir.join("meta.json"),
            &LayerMeta {
                chain_id: self.chain_id.clone(),
                parent: self.parent.clone(),
                lowers,
                size: usage.bytes,
                inodes: usage.inodes,
            },
        )?;
        let dst = self.sn.layer_dir(next);
        rename_noreplace(&self.dir, &dst)
            .map_err(|e| Error::io_path("commit layer into", &dst, e))?;
        self.state = State::Done;
        let link = self.sn.chain_link(&self.chain_id);
        let published = util::fsync_dir(&i.layers).and_then(|()| {
            rustix::fs::symlinkat(next.to_string().as_str(), CWD, &link)
                .map_err(|e| Error::io_path("publish layer", &link, e))
        });
        if let Err(e) = published {
            // Unpublishable: take the layer back out so nothing half-made stays.
            let _ = self.sn.discard(&dst);
            return Err(e);
        }
        util::fsync_dir(&i.chains)?;
        tracing::debug!(chain_id = %self.chain_id, id = next, "layer committed");
        Ok(())
    }
}

impl Drop for LayerExtraction {
    fn drop(&mut self) {
        if self.state != State::Done {
            if let Err(e) = util::remove_any(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "removing abandoned extraction");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn keys() {
        for ok in ["a", "abc-DEF_1.2", &"x".repeat(128)] {
            valid_key(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(129), "ä"] {
            assert!(
                matches!(valid_key(bad), Err(Error::InvalidKey { .. })),
                "{bad}"
            );
        }
    }
}

//! Unpacking an OCI/Docker layer tar into a plain directory that becomes an overlayfs
//! lower (or upper) directory.
//!
//! # Semantics
//! - `.wh.NAME` becomes an overlay whiteout (a 0:0 character device `NAME`);
//!   `.wh..wh..opq` marks its directory opaque (`trusted.overlay.opaque=y`); other
//!   `.wh..wh.*` entries (aufs bookkeeping) are skipped.
//! - Modes (incl. setuid/setgid/sticky), uid/gid, mtimes (PAX sub-second ones too), xattrs
//!   (`SCHILY.xattr.*` PAX records), symlinks, hardlinks within the layer, character and
//!   block devices, fifos are kept. Files are written sparsely: runs of zero blocks become
//!   holes, so GNU sparse entries (and any zero-filled file) stay sparse.
//! - Directory mtimes are applied after the last entry, since adding children changes them.
//!
//! # Security
//! The tar is untrusted. Every name is split into components; empty and `.` components are
//! dropped and a leading `/` is ignored (absolute names are relative to the layer root, as
//! in containerd and the OCI spec), but any `..` component is refused outright — no
//! legitimate layer needs one. Parent directories are opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`
//! relative to the layer root, and the last component is always created with `O_EXCL` /
//! `O_NOFOLLOW` semantics (anything already there is removed first, never followed). So no
//! write ever traverses a symlink, whether it points outside or inside: symlinks are data,
//! never a path to write through. A hardlink target is resolved the same way and must
//! already exist in this layer. `trusted.overlay.*` xattrs in the tar are refused (they would
//! steer overlayfs: redirects, metacopy), except `trusted.overlay.opaque`, which only
//! says what `.wh..wh..opq` says. Every refusal is [`Error::UnsafeEntry`] naming the entry; the caller
//! removes the half-unpacked directory.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::{
    AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};
use tar::EntryType;

use crate::error::{Error, Result};
use crate::{Compression, Digest};

/// What unpacking a layer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// sha256 of the uncompressed tar stream (the layer's diff id).
    pub diff_id: Digest,
    /// Length of the uncompressed tar stream.
    pub uncompressed_bytes: u64,
    /// Number of tar entries applied (including whiteouts and hardlinks).
    pub entries: u64,
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
const BLOCK: usize = 4096;

/// Reads `reader` through the decompressor, hashing the uncompressed stream.
struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    n: u64,
    /// Most uncompressed bytes allowed; reading past it fails and sets `exceeded`.
    limit: u64,
    exceeded: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.n += n as u64;
        if self.n > self.limit {
            self.exceeded.set(true);
            return Err(io::Error::other("uncompressed size limit exceeded"));
        }
        Ok(n)
    }
}

/// Unpacks a (compressed) layer tar from `reader` into the existing, empty directory `dest`;
/// fails once more than `limit` uncompressed bytes have come (a decompression bomb).
pub(crate) fn unpack(
    dest: &Path,
    reader: impl Read,
    compression: Compression,
    limit: Option<u64>,
) -> Result<UnpackStats> {
    let exceeded = std::rc::Rc::new(std::cell::Cell::new(false));
    let limit = limit.unwrap_or(u64::MAX);
    match unpack_limited(dest, reader, compression, limit, exceeded.clone()) {
        Err(_) if exceeded.get() => Err(Error::LayerTooLarge { limit }),
        r => r,
    }
}

fn unpack_limited(
    dest: &Path,
    reader: impl Read,
    compression: Compression,
    limit: u64,
    exceeded: std::rc::Rc<std::cell::Cell<bool>>,
) -> Result<UnpackStats> {
    let decompressed: Box<dyn Read> = match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => {
            Box::new(
                zstd::stream::read::Decoder::new(reader).map_err(|e| Error::InvalidLayer {
                    entry: None,
                    reason: format!("zstd: {e}"),
                })?,
            )
        }
    };
    let hashed = HashReader {
        inner: decompressed,
        hasher: Sha256::new(),
        n: 0,
        limit,
        exceeded,
    };
    let root = rustix::fs::open(dest, DIR_FLAGS, Mode::empty())
        .map_err(|e| Error::io_path("open unpack directory", dest, e))?;
    let mut u = Unpacker {
        root,
        cache: None,
        dir_times: Vec::new(),
        buf: vec![0u8; 128 * 1024],
        compression,
    };
    let mut archive = tar::Archive::new(hashed);
    let mut entries: u64 = 0;
    let mut last: Option<String> = None;
    {
        let iter = archive.entries().map_err(|e| u.read_err(None, &e))?;
        for entry in iter {
            let mut entry = entry.map_err(|e| u.read_err(last.as_deref(), &e))?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            u.apply(&mut entry, &name)?;
            entries += 1;
            last = Some(name);
        }
    }
    // Read what follows the end-of-archive blocks, so the diff id covers the whole stream
    // (and a corrupt compressed tail is noticed).
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| u.read_err(None, &e))?;
    u.finish()?;
    Ok(UnpackStats {
        diff_id: Digest::from_hasher(rest.hasher),
        uncompressed_bytes: rest.n,
        entries,
    })
}

/// Metadata of one entry, from its header and PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timespec,
    atime: Option<Timespec>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct Unpacker {
    root: OwnedFd,
    /// The last parent directory opened: (components joined by '/', fd).
    cache: Option<(Vec<u8>, OwnedFd)>,
    /// Directories whose times are set at the end (relative path, times).
    dir_times: Vec<(Vec<u8>, Timestamps)>,
    buf: Vec<u8>,
    compression: Compression,
}

fn unsafe_entry(entry: &str, reason: impl Into<String>) -> Error {
    Error::UnsafeEntry {
        entry: entry.to_owned(),
        reason: reason.into(),
    }
}

/// The target of a symlink or hardlink entry (`what`), which it must have.
fn link_target<R: Read>(entry: &tar::Entry<'_, R>, name: &str, what: &str) -> Result<Vec<u8>> {
    entry
        .link_name_bytes()
        .map(std::borrow::Cow::into_owned)
        .ok_or_else(|| Error::InvalidLayer {
            entry: Some(name.to_owned()),
            reason: format!("{what} without a target"),
        })
}

/// Splits a tar name into components, refusing `..`.
fn components<'a>(entry: &str, raw: &'a [u8], what: &str) -> Result<Vec<&'a [u8]>> {
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(unsafe_entry(
                    entry,
                    format!("{what} has a '..' component; refusing to leave the layer"),
                ));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let tv_sec: i64 = secs.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    while digits.len() < 9 {
        digits.push('0');
    }
    let mut tv_nsec: i64 = digits.parse().ok()?;
    if tv_sec < 0 && tv_nsec > 0 {
        // "-1.5" means 1.5 s before the epoch.
        tv_nsec = 1_000_000_000 - tv_nsec;
        return Some(Timespec {
            tv_sec: tv_sec - 1,
            tv_nsec,
        });
    }
    Some(Timespec { tv_sec, tv_nsec })
}

fn is_zero(b: &[u8]) -> bool {
    // An OR-fold (no early exit) vectorises well; blocks are at most 4 KiB.
    b.iter().fold(0u8, |a, &x| a | x) == 0
}

impl Unpacker {
    fn read_err(&self, entry: Option<&str>, e: &io::Error) -> Error {
        let what = match self.compression {
            Compression::None => "tar",
            Compression::Gzip => "gzip/tar",
            Compression::Zstd => "zstd/tar",
        };
        Error::InvalidLayer {
            entry: entry.map(str::to_owned),
            reason: format!("reading the {what} stream failed: {e}"),
        }
    }

    fn meta<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Meta> {
        let h = entry.header();
        let bad = |what: &str, e: io::Error| Error::InvalidLayer {
            entry: Some(name.to_owned()),
            reason: format!("bad {what} in header: {e}"),
        };
        let mode = h.mode().map_err(|e| bad("mode", e))? & 0o7777;
        let uid = h.uid().map_err(|e| bad("uid", e))?;
        let gid = h.gid().map_err(|e| bad("gid", e))?;
        let mtime = h.mtime().map_err(|e| bad("mtime", e))?;
        let mut m = Meta {
            mode,
            uid: u32::try_from(uid).map_err(|_| bad("uid", io::Error::other("out of range")))?,
            gid: u32::try_from(gid).map_err(|_| bad("gid", io::Error::other("out of range")))?,
            mtime: Timespec {
                tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
                tv_nsec: 0,
            },
            atime: None,
            xattrs: Vec::new(),
        };
        if let Some(exts) = entry.pax_extensions().map_err(|e| bad("PAX header", e))? {
            for ext in exts {
                let ext = ext.map_err(|e| bad("PAX record", e))?;
                let key = ext.key_bytes();
                let val = ext.value_bytes();
                if let Some(x) = key.strip_prefix(b"SCHILY.xattr.") {
                    if x.starts_with(b"trusted.overlay.") && x != b"trusted.overlay.opaque" {
                        return Err(unsafe_entry(
                            name,
                            format!("xattr {} would steer overlayfs", String::from_utf8_lossy(x)),
                        ));
                    }
                    m.xattrs.push((x.to_vec(), val.to_vec()));
                } else {
                    let num = || {
                        std::str::from_utf8(val)
                            .ok()
                            .and_then(|s| s.parse::<u32>().ok())
                    };
                    match key {
                        b"mtime" => {
                            m.mtime = parse_pax_time(val).ok_or_else(|| {
                                bad("PAX mtime", io::Error::other("not a number"))
                            })?;
                        }
                        b"atime" => m.atime = parse_pax_time(val),
                        b"uid" => {
                            m.uid = num()
                                .ok_or_else(|| bad("PAX uid", io::Error::other("not a u32")))?
                        }
                        b"gid" => {
                            m.gid = num()
                                .ok_or_else(|| bad("PAX gid", io::Error::other("not a u32")))?
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(m)
    }

    /// Opens (creating missing directories, mode 0755 root) the parent directory given as
    /// components, never traversing a symlink.
    fn parent(&mut self, entry: &str, comps: &[&[u8]], create: bool) -> Result<OwnedFd> {
        let rel = comps.join(&b'/');
        if rel.is_empty() {
            return rustix::io::fcntl_dupfd_cloexec(&self.root, 0)
                .map_err(|e| Error::io(format!("dup layer root fd for {entry:?}"), e));
        }
        if let Some((p, fd)) = &self.cache {
            if *p == rel {
                return rustix::io::fcntl_dupfd_cloexec(fd, 0)
                    .map_err(|e| Error::io(format!("dup fd for {entry:?}"), e));
            }
        }
        let fd = match rustix::fs::openat2(
            &self.root,
            OsStr::from_bytes(&rel),
            DIR_FLAGS,
            Mode::empty(),
            RESOLVE,
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if create => self.make_parents(entry, comps)?,
            Err(e) => return Err(self.resolve_err(entry, &rel, e)),
        };
        let dup = rustix::io::fcntl_dupfd_cloexec(&fd, 0)
            .map_err(|e| Error::io(format!("dup fd for {entry:?}"), e))?;
        self.cache = Some((rel, dup));
        Ok(fd)
    }

    fn resolve_err(&self, entry: &str, rel: &[u8], e: Errno) -> Error {
        let rel = String::from_utf8_lossy(rel);
        match e {
            Errno::LOOP | Errno::XDEV | Errno::NOTDIR => unsafe_entry(
                entry,
                format!(
                    "path {rel:?} traverses a symlink or a non-directory; writing through symlinks is refused"
                ),
            ),
            Errno::NOENT => unsafe_entry(entry, format!("{rel:?} does not exist in this layer")),
            e => Error::io(format!("open {rel:?} for entry {entry:?}"), e),
        }
    }

    fn make_parents(&mut self, entry: &str, comps: &[&[u8]]) -> Result<OwnedFd> {
        let mut cur = rustix::io::fcntl_dupfd_cloexec(&self.root, 0)
            .map_err(|e| Error::io(format!("dup layer root fd for {entry:?}"), e))?;
        for (i, c) in comps.iter().enumerate() {
            let c = OsStr::from_bytes(c);
            let created = match rustix::fs::mkdirat(&cur, c, Mode::from_raw_mode(0o755)) {
                Ok(()) => true,
                Err(Errno::EXIST) => false,
                Err(e) => {
                    return Err(Error::io(
                        format!("create parent directory for entry {entry:?}"),
                        e,
                    ));
                }
            };
            cur = rustix::fs::openat2(&cur, c, DIR_FLAGS, Mode::empty(), RESOLVE)
                .map_err(|e| self.resolve_err(entry, &comps[..=i].join(&b'/'), e))?;
            if created {
                // Not subject to the process umask.
                rustix::fs::fchmod(&cur, Mode::from_raw_mode(0o755)).map_err(|e| {
                    Error::io(format!("chmod parent directory for entry {entry:?}"), e)
                })?;
            }
        }
        Ok(cur)
    }

    /// Removes whatever is at `name` in `dir`, unless it is a directory and `keep_dir`.
    /// Returns whether a directory was kept.
    fn clear(&mut self, entry: &str, dir: &OwnedFd, name: &OsStr, keep_dir: bool) -> Result<bool> {
        let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(Error::io(format!("stat target of entry {entry:?}"), e)),
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            if keep_dir {
                return Ok(true);
            }
            // The directory (and anything cached under it) goes away.
            self.cache = None;
            let p = Path::new("/proc/self/fd")
                .join(dir.as_raw_fd().to_string())
                .join(name);
            std::fs::remove_dir_all(&p)
                .map_err(|e| Error::io(format!("replace directory for entry {entry:?}"), e))?;
        } else {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())
                .map_err(|e| Error::io(format!("replace file for entry {entry:?}"), e))?;
        }
        Ok(false)
    }

    /// Writes one tar entry into the layer directory.
    ///
    /// One piece on purpose: the path is resolved once (components, whiteouts, the
    /// parent opened beneath the root without following links) and then one `match`
    /// over the entry type creates it; every arm relies on that same resolved parent
    /// and name, and the order of the checks is what keeps an entry inside the root.
    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, name: &str) -> Result<()> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let comps = components(name, &raw, "name")?;
        let Some((last, parents)) = comps.split_last() else {
            // The root itself ("./"): take its metadata if it is a directory.
            if kind == EntryType::Directory {
                let meta = Self::meta(entry, name)?;
                let fd = self.parent(name, &[], false)?;
                self.set_meta(name, &fd, None, &meta, FileType::Directory)?;
                self.dir_times.push((Vec::new(), times(&meta)));
            }
            return Ok(());
        };
        let last: &[u8] = last;

        // Whiteouts.
        if let Some(target) = last.strip_prefix(WHITEOUT_PREFIX) {
            let dir = self.parent(name, parents, true)?;
            if last == OPAQUE {
                return rustix::fs::fsetxattr(
                    &dir,
                    "trusted.overlay.opaque",
                    b"y",
                    XattrFlags::empty(),
                )
                .map_err(|e| Error::io(format!("mark directory opaque for entry {name:?}"), e));
            }
            if target.starts_with(WHITEOUT_PREFIX) {
                return Ok(()); // aufs bookkeeping (.wh..wh.plnk etc.)
            }
            if target.is_empty() || target == b"." || target == b".." {
                return Err(unsafe_entry(name, "whiteout names no file"));
            }
            let target = OsStr::from_bytes(target);
            self.clear(name, &dir, target, false)?;
            return rustix::fs::mknodat(
                &dir,
                target,
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
            .map_err(|e| Error::io(format!("create whiteout for entry {name:?}"), e));
        }

        let meta = Self::meta(entry, name)?;
        let dir = self.parent(name, parents, true)?;
        let nm = OsStr::from_bytes(last);
        match kind {
            EntryType::Directory => {
                let kept = self.clear(name, &dir, nm, true)?;
                if !kept {
                    rustix::fs::mkdirat(&dir, nm, Mode::from_raw_mode(0o700))
                        .map_err(|e| Error::io(format!("create directory {name:?}"), e))?;
                }
                let fd = rustix::fs::openat2(&dir, nm, DIR_FLAGS, Mode::empty(), RESOLVE)
                    .map_err(|e| self.resolve_err(name, &raw, e))?;
                self.set_meta(name, &fd, None, &meta, FileType::Directory)?;
                self.dir_times.push((comps.join(&b'/'), times(&meta)));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.clear(name, &dir, nm, false)?;
                let fd = rustix::fs::openat(
                    &dir,
                    nm,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| Error::io(format!("create file {name:?}"), e))?;
                let file = File::from(fd);
                self.write_data(entry, name, &file)?;
                self.set_meta(name, &file, None, &meta, FileType::RegularFile)?;
            }
            EntryType::Symlink => {
                let target = link_target(entry, name, "symlink")?;
                self.clear(name, &dir, nm, false)?;
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &dir, nm)
                    .map_err(|e| Error::io(format!("create symlink {name:?}"), e))?;
                self.set_meta(name, &dir, Some(nm), &meta, FileType::Symlink)?;
            }
            EntryType::Link => {
                let target = link_target(entry, name, "hardlink")?;
                let tcomps = components(name, &target, "hardlink target")?;
                let Some((tlast, tparents)) = tcomps.split_last() else {
                    return Err(unsafe_entry(name, "hardlink target is the layer root"));
                };
                let tdir = self.parent(name, tparents, false)?;
                let tname = OsStr::from_bytes(tlast);
                match rustix::fs::statat(&tdir, tname, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                        return Err(unsafe_entry(name, "hardlink target is a directory"));
                    }
                    Ok(_) => {}
                    Err(Errno::NOENT) => {
                        return Err(unsafe_entry(
                            name,
                            format!(
                                "hardlink target {:?} does not exist in this layer",
                                String::from_utf8_lossy(&target)
                            ),
                        ));
                    }
                    Err(e) => {
                        return Err(Error::io(format!("stat hardlink target of {name:?}"), e));
                    }
                }
                if tcomps == comps {
                    return Ok(()); // a link to itself: nothing to do
                }
                self.clear(name, &dir, nm, false)?;
                rustix::fs::linkat(&tdir, tname, &dir, nm, AtFlags::empty())
                    .map_err(|e| Error::io(format!("create hardlink {name:?}"), e))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let ft = match kind {
                    EntryType::Char => FileType::CharacterDevice,
                    EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let h = entry.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                self.clear(name, &dir, nm, false)?;
                rustix::fs::mknodat(
                    &dir,
                    nm,
                    ft,
                    Mode::from_raw_mode(0o600),
                    rustix::fs::makedev(major, minor),
                )
                .map_err(|e| Error::io(format!("create device node {name:?}"), e))?;
                self.set_meta(name, &dir, Some(nm), &meta, ft)?;
            }
            other => {
                return Err(Error::InvalidLayer {
                    entry: Some(name.to_owned()),
                    reason: format!("unsupported tar entry type {other:?}"),
                });
            }
        }
        Ok(())
    }

    /// Copies an entry's data into `file`, leaving zero blocks as holes.
    fn write_data<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        file: &File,
    ) -> Result<()> {
        let mut off: u64 = 0;
        loop {
            // Fill the buffer as far as the stream allows.
            let mut filled = 0;
            while filled < self.buf.len() {
                match entry.read(&mut self.buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(self.read_err(Some(name), &e)),
                }
            }
            if filled == 0 {
                break;
            }
            let data = &self.buf[..filled];
            let mut i = 0;
            while i < data.len() {
                let end = (i + BLOCK).min(data.len());
                if is_zero(&data[i..end]) {
                    i = end;
                    continue;
                }
                // Extend the run of non-zero blocks.
                let mut j = end;
                while j < data.len() {
                    let e = (j + BLOCK).min(data.len());
                    if is_zero(&data[j..e]) {
                        break;
                    }
                    j = e;
                }
                file.write_all_at(&data[i..j], off + i as u64)
                    .map_err(|e| Error::io(format!("write file {name:?}"), e))?;
                i = j;
            }
            off += filled as u64;
        }
        file.set_len(off)
            .map_err(|e| Error::io(format!("set length of file {name:?}"), e))
    }

    /// Ownership, mode, xattrs and (except for directories) times. With `name`, `fd` is the
    /// parent directory and the object is not followed if it is a symlink.
    fn set_meta(
        &mut self,
        entry: &str,
        fd: &impl AsFd,
        name: Option<&OsStr>,
        m: &Meta,
        ft: FileType,
    ) -> Result<()> {
        let err = |what: &str, e: Errno| Error::io(format!("set {what} of {entry:?}"), e);
        let (uid, gid) = (Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid)));
        match name {
            None => rustix::fs::fchown(fd, uid, gid).map_err(|e| err("owner", e))?,
            Some(n) => rustix::fs::chownat(fd, n, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| err("owner", e))?,
        }
        // chown clears setuid/setgid, so the mode comes after it; symlinks have no mode.
        match (name, ft) {
            (_, FileType::Symlink) => {}
            (None, _) => {
                rustix::fs::fchmod(fd, Mode::from_raw_mode(m.mode)).map_err(|e| err("mode", e))?
            }
            (Some(n), _) => {
                rustix::fs::chmodat(fd, n, Mode::from_raw_mode(m.mode), AtFlags::empty())
                    .map_err(|e| err("mode", e))?
            }
        }
        for (k, v) in &m.xattrs {
            let k = OsStr::from_bytes(k);
            let r = match name {
                None => rustix::fs::fsetxattr(fd, k, v, XattrFlags::empty()),
                Some(n) => {
                    let p = Path::new("/proc/self/fd")
                        .join(fd.as_fd().as_raw_fd().to_string())
                        .join(n);
                    rustix::fs::lsetxattr(&p, k, v, XattrFlags::empty())
                }
            };
            match r {
                Ok(()) => {}
                Err(Errno::OPNOTSUPP | Errno::PERM) => {
                    tracing::warn!(entry, xattr = %k.to_string_lossy(), "xattr not supported here; skipped");
                }
                Err(e) => return Err(err(&format!("xattr {}", k.to_string_lossy()), e)),
            }
        }
        if ft != FileType::Directory {
            let t = times(m);
            match name {
                None => rustix::fs::futimens(fd, &t).map_err(|e| err("times", e))?,
                Some(n) => rustix::fs::utimensat(fd, n, &t, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| err("times", e))?,
            }
        }
        Ok(())
    }

    /// Applies the deferred directory times, deepest first.
    fn finish(&mut self) -> Result<()> {
        self.cache = None;
        let mut dirs = std::mem::take(&mut self.dir_times);
        dirs.reverse();
        for (rel, t) in dirs {
            let fd = if rel.is_empty() {
                rustix::io::fcntl_dupfd_cloexec(&self.root, 0)
            } else {
                rustix::fs::openat2(
                    &self.root,
                    OsStr::from_bytes(&rel),
                    DIR_FLAGS,
                    Mode::empty(),
                    RESOLVE,
                )
            };
            // Replaced or removed by a later entry: nothing to do.
            let Ok(fd) = fd else { continue };
            rustix::fs::futimens(&fd, &t).map_err(|e| {
                Error::io(
                    format!("set times of directory {:?}", String::from_utf8_lossy(&rel)),
                    e,
                )
            })?;
        }
        Ok(())
    }
}

fn times(m: &Meta) -> Timestamps {
    Timestamps {
        last_access: m.atime.unwrap_or(m.mtime),
        last_modification: m.mtime,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn component_rules() {
        assert_eq!(
            components("e", b"/a//./b/", "n").unwrap(),
            vec![&b"a"[..], b"b"]
        );
        assert!(components("e", b"", "n").unwrap().is_empty());
        for bad in [&b"../x"[..], b"a/../../x", b"/abs/../../x", b".."] {
            assert!(matches!(
                components("e", bad, "n"),
                Err(Error::UnsafeEntry { .. })
            ));
        }
    }

    #[test]
    fn pax_times() {
        let t = parse_pax_time(b"1700000000.123456789").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 123_456_789));
        let t = parse_pax_time(b"5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (5, 0));
        let t = parse_pax_time(b"1.5").unwrap();
        assert_eq!(t.tv_nsec, 500_000_000);
        assert!(parse_pax_time(b"x").is_none());
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 4096]));
        let mut b = [0u8; 4097];
        b[4096] = 1;
        assert!(!is_zero(&b));
        b[4096] = 0;
        b[3] = 1;
        assert!(!is_zero(&b));
    }
}

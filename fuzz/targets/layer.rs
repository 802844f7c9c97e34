//! Layer tar entries and whiteouts (crates/snapshotter unpacking). Whatever the tar
//! holds (`..`, absolute names, symlinks out of the layer and writes through them,
//! hardlinks to outside, whiteouts of anything, devices), unpacking never panics
//! and never writes outside its target directory: the extraction's own directory
//! holds nothing but the target, and everything else under the test root (a canary
//! directory that symlinks in the seeds point at, the snapshotter's other
//! directories) is exactly as it was. A failed unpack leaves nothing behind.
//!
//! Seeds name the test root as `@ROOT@` in symlink and hardlink targets; the
//! harness writes the real root in before unpacking. Half the mutations are of tar
//! header fields (name, type, link name) with the checksum fixed, so that they
//! reach the unpacker rather than the tar reader's checksum test.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crius_fuzz::{Harness, Rng, Target};
use crius_snapshotter::{Compression, Digest, Error, Snapshotter};

use super::{IO_BOUND, shape, tag, temp_root};

pub const TARGET: Target = Target {
    name: "layer",
    make: || Box::new(Layers::new()),
    dictionary: TOKENS,
    max_len: 64 << 10,
    time_bound: IO_BOUND,
    ci_iterations: 600,
};

const TOKENS: &[&[u8]] = &[
    b"../",
    b"/",
    b"..",
    b".wh.",
    b".wh..wh..opq",
    b".wh..wh.plnk",
    b"./",
    b"a/",
    b"\0",
    b"//",
    b"../../canary/",
    b"@ROOT@/canary/",
    b"@ROOT@/",
    b"/proc/self/",
    b"ustar\0",
    b"ustar  \0",
    b"SCHILY.xattr.",
    b"trusted.overlay.opaque",
    b"trusted.overlay.redirect",
    b"GNU.sparse.",
    b"path=",
    b"linkpath=",
];

const PLACEHOLDER: &[u8] = b"@ROOT@";

struct Layers {
    root: tempfile::TempDir,
    sn: Snapshotter,
    before: BTreeMap<PathBuf, String>,
    n: u64,
}

/// Everything under `dir` except the extractions in `snap/tmp`: path to type,
/// mode, size, link target and content digest.
fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap_or(&p).to_path_buf();
            if rel.starts_with("snap/tmp") && rel != Path::new("snap/tmp") {
                continue;
            }
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let link = std::fs::read_link(&p).map(|l| l.display().to_string());
            let content = if md.is_file() {
                std::fs::read(&p)
                    .map(|c| Digest::sha256_of(&c).to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            };
            out.insert(
                rel,
                format!(
                    "{:?} {:o} {} {link:?} {content}",
                    md.file_type(),
                    md.mode(),
                    md.len()
                ),
            );
            if md.is_dir() {
                todo.push(p);
            }
        }
    }
    out
}

impl Layers {
    fn new() -> Layers {
        let root = temp_root("crius-fuzz-layer-");
        let canary = root.path().join("canary");
        let made = std::fs::create_dir_all(canary.join("dir"))
            .and_then(|()| std::fs::write(canary.join("secret"), b"keep"))
            .and_then(|()| std::os::unix::fs::symlink("secret", canary.join("link")));
        if let Err(e) = made {
            panic!("making the canary: {e}");
        }
        let sn = match Snapshotter::open(&root.path().join("snap")) {
            Ok(s) => s,
            Err(e) => panic!("opening the snapshotter: {e}"),
        };
        let before = tree(root.path());
        Layers {
            root,
            sn,
            before,
            n: 0,
        }
    }

    fn tmp(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.root.path().join("snap/tmp"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

/// Offsets of the header blocks of a tar.
fn headers(tar: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 512 <= tar.len() {
        let block = &tar[off..off + 512];
        if block.iter().all(|&b| b == 0) {
            break;
        }
        out.push(off);
        let h = tar::Header::from_byte_slice(block);
        let size = h.entry_size().unwrap_or(0).min(tar.len() as u64) as usize;
        off += 512 + size.div_ceil(512) * 512;
    }
    out
}

fn fix_checksum(tar: &mut [u8], h: usize) {
    let mut hdr = tar::Header::new_old();
    hdr.as_mut_bytes().copy_from_slice(&tar[h..h + 512]);
    hdr.set_cksum();
    tar[h..h + 512].copy_from_slice(hdr.as_bytes());
}

/// Writes `root` over `@ROOT@` in the name and link name fields (where it fits).
fn patch_root(tar: &mut [u8], root: &[u8]) {
    for h in headers(tar) {
        let mut changed = false;
        for (start, len) in [(0, 100), (157, 100)] {
            let field = &tar[h + start..h + start + len];
            let end = field.iter().position(|&b| b == 0).unwrap_or(len);
            let text = &field[..end];
            let Some(at) = text
                .windows(PLACEHOLDER.len())
                .position(|w| w == PLACEHOLDER)
            else {
                continue;
            };
            let mut v = text[..at].to_vec();
            v.extend_from_slice(root);
            v.extend_from_slice(&text[at + PLACEHOLDER.len()..]);
            if v.len() <= len {
                let f = &mut tar[h + start..h + start + len];
                f.fill(0);
                f[..v.len()].copy_from_slice(&v);
                changed = true;
            }
        }
        if changed {
            fix_checksum(tar, h);
        }
    }
}

impl Harness for Layers {
    fn run(&mut self, input: &[u8]) -> u64 {
        let mut tar = input.to_vec();
        patch_root(&mut tar, self.root.path().as_os_str().as_encoded_bytes());
        self.n += 1;
        let chain = Digest::sha256_of(&self.n.to_le_bytes());
        let mut x = match self.sn.begin_layer(&chain, None) {
            Ok(x) => x,
            Err(e) => panic!("begin_layer: {e}"),
        };
        x.set_size_limit(16 << 20);
        let dirs = self.tmp();
        assert_eq!(dirs.len(), 1, "extractions: {dirs:?}");
        let result = x.unpack(&tar[..], Compression::None);
        if result.is_ok() {
            let names: Vec<_> = std::fs::read_dir(&dirs[0])
                .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            assert_eq!(names, ["fs"], "the extraction's directory holds {names:?}");
        } else {
            assert!(
                !dirs[0].exists(),
                "a failed unpack left {}",
                dirs[0].display()
            );
        }
        drop(x);
        assert!(self.tmp().is_empty(), "left in tmp: {:?}", self.tmp());
        let after = tree(self.root.path());
        if after != self.before {
            let changed: Vec<_> = after
                .iter()
                .filter(|(k, v)| self.before.get(*k) != Some(v))
                .map(|(k, _)| k)
                .chain(self.before.keys().filter(|k| !after.contains_key(*k)))
                .collect();
            panic!("unpacking wrote outside its directory: {changed:?}");
        }
        match result {
            Ok(s) => tag(&["ok", &s.entries.min(8).to_string()]),
            Err(Error::UnsafeEntry { reason, .. }) => tag(&["unsafe", &shape(&reason).to_string()]),
            Err(e) => shape(&e.to_string()),
        }
    }

    fn mutate(&mut self, tar: &mut Vec<u8>, rng: &mut Rng) -> bool {
        let hs = headers(tar);
        if hs.is_empty() {
            return false;
        }
        for _ in 0..rng.small(4) {
            let Some(&h) = rng.pick(&hs) else { break };
            // name (0..100), typeflag (156), linkname (157..257)
            let field = match rng.below(3) {
                0 => h + rng.below(100),
                1 => h + 156,
                _ => h + 157 + rng.below(100),
            };
            if rng.one_in(2) {
                let tok = TOKENS[rng.below(TOKENS.len())];
                let end = (field + tok.len()).min(h + 257);
                tar[field..end].copy_from_slice(&tok[..end - field]);
            } else if field == h + 156 {
                tar[field] = b"0123456xgLKS"[rng.below(12)];
            } else {
                tar[field] = rng.byte();
            }
            fix_checksum(tar, h);
        }
        true
    }
}

/// A tar with raw names (the `tar` crate's safe API refuses `..` and absolute
/// names); `entries` are (name, type, link target, data).
fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in entries {
        let mut h = tar::Header::new_ustar();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(*kind);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        if let Err(e) = b.append(&h, *data) {
            panic!("building a seed tar: {e}");
        }
    }
    b.into_inner().unwrap_or_default()
}

/// Device nodes (which an unprivileged unpack cannot make, and a 0:0 character
/// device, overlayfs's own whiteout) beside a whiteout of one of them.
fn devices_tar() -> Vec<u8> {
    use tar::EntryType as E;
    let mut b = tar::Builder::new(Vec::new());
    let nodes: [(&str, E, u32, u32); 4] = [
        ("dev/null", E::Char, 1, 3),
        ("dev/whiteout", E::Char, 0, 0),
        ("dev/sda", E::Block, 8, 0),
        ("dev/fifo", E::Fifo, 0, 0),
    ];
    let mut add = |name: &str, kind: E, major: u32, minor: u32| {
        let mut h = tar::Header::new_ustar();
        let set = h
            .set_path(name)
            .and_then(|()| h.set_device_major(major))
            .and_then(|()| h.set_device_minor(minor));
        h.set_entry_type(kind);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_mtime(1_600_000_000);
        h.set_size(0);
        h.set_cksum();
        if let Err(e) = set.and_then(|()| b.append(&h, &[][..])) {
            panic!("building the devices seed: {e}");
        }
    };
    add("dev/", E::Directory, 0, 0);
    for (name, kind, major, minor) in nodes {
        add(name, kind, major, minor);
    }
    add("dev/.wh.sda", E::Regular, 0, 0);
    b.into_inner().unwrap_or_default()
}

/// A tar made by GNU tar (`format`: gnu, posix) of a tree with whiteouts, an
/// opaque directory, symlinks, a hardlink and a fifo.
fn gnu_tar(format: &str) -> Vec<u8> {
    let dir = temp_root("crius-fuzz-seed-");
    let d = dir.path().join("t");
    let made = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(d.join("etc/ssl"))?;
        std::fs::create_dir_all(d.join("usr/lib/opaque"))?;
        std::fs::create_dir_all(d.join("var/cache"))?;
        std::fs::write(d.join("etc/hostname"), b"layer\n")?;
        std::fs::write(d.join("etc/ssl/cert.pem"), b"-----BEGIN CERTIFICATE-----\n")?;
        std::fs::write(d.join("etc/.wh.passwd-"), b"")?;
        std::fs::write(d.join("usr/lib/opaque/.wh..wh..opq"), b"")?;
        std::fs::write(d.join("usr/lib/opaque/kept.so"), vec![0u8; 5000])?;
        std::fs::write(d.join("var/cache/.wh.apt"), b"")?;
        std::os::unix::fs::symlink("../etc/hostname", d.join("usr/hostname"))?;
        std::os::unix::fs::symlink("@ROOT@/canary", d.join("var/canary"))?;
        std::fs::hard_link(d.join("etc/hostname"), d.join("etc/hostname.bak"))?;
        Ok(())
    })();
    if let Err(e) = made {
        panic!("making the seed tree: {e}");
    }
    let _ = std::process::Command::new("mkfifo")
        .arg(d.join("var/fifo"))
        .status();
    let out = std::process::Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0"])
        .arg(format!("--format={format}"))
        // Without atime and ctime the pax records are the same on every run.
        .args((format == "posix").then_some("--pax-option=delete=atime,delete=ctime"))
        .args(["--sort=name", "--mtime=@1600000000", "-C"])
        .arg(&d)
        .args(["-cf", "-", "."])
        .output();
    match out {
        Ok(o) if o.status.success() => o.stdout,
        Ok(o) => panic!("tar failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("GNU tar is needed to make the layer seeds: {e}"),
    }
}

/// Seeds: tars from GNU tar (gnu and pax formats), and hand-made hostile ones.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use tar::EntryType as E;
    vec![
        ("gnu-whiteouts", gnu_tar("gnu")),
        ("pax-whiteouts", gnu_tar("posix")),
        ("devices", devices_tar()),
        (
            "escape-symlink-then-write",
            raw_tar(&[
                ("a/", E::Directory, "", b""),
                ("a/f", E::Regular, "", b"data"),
                ("a/s", E::Symlink, "../../../../canary", b""),
                ("a/s/planted", E::Regular, "", b"x"),
                ("a/h", E::Link, "a/f", b""),
                ("a/.wh.x", E::Regular, "", b""),
            ]),
        ),
        (
            "absolute-and-dotdot",
            raw_tar(&[
                ("s", E::Symlink, "@ROOT@/canary", b""),
                ("s/secret", E::Regular, "", b"overwritten"),
                ("../canary/planted", E::Regular, "", b"x"),
                ("/canary/planted", E::Regular, "", b"x"),
                ("d/", E::Directory, "", b""),
                ("d/.wh..wh..opq", E::Regular, "", b""),
                ("d/.wh.s", E::Regular, "", b""),
                ("h", E::Link, "@ROOT@/canary/secret", b""),
            ]),
        ),
    ]
}

//! Layer unpacking: metadata kept, compressions, sparse files, broken input, and every
//! escape attempt refused with nothing written outside.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::{Layer, MTIME, TestDir, add_layer, compress, layer_fs};
use crius_snapshotter::{Compression, Digest, Error, Snapshotter, chain_id};
use tar::EntryType;

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(p, name, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

#[test]
fn metadata_is_kept() {
    let t = TestDir::new();
    let sn = Snapshotter::open(&t.join("snap")).unwrap();
    let mut l = Layer::new();
    l.entry("./", EntryType::Directory, 0o755, 0, 0, MTIME, b"")
        .entry(
            "bin/",
            EntryType::Directory,
            0o750,
            1000,
            1001,
            MTIME + 1,
            b"",
        )
        .entry(
            "bin/suid",
            EntryType::Regular,
            0o4755,
            0,
            0,
            MTIME + 2,
            b"#!/bin/sh\n",
        )
        .entry(
            "bin/owned",
            EntryType::Regular,
            0o600,
            1234,
            5678,
            MTIME + 3,
            b"data",
        )
        .entry("tmp/", EntryType::Directory, 0o1777, 0, 0, MTIME, b"")
        .symlink("bin/link", "../etc/target")
        .symlink("abs", "/etc/passwd")
        .hardlink("bin/hard", "bin/owned")
        .device("dev/null", EntryType::Char, 1, 3)
        .device("dev/loop0", EntryType::Block, 7, 0)
        .device("run/fifo", EntryType::Fifo, 0, 0)
        .pax(&[
            ("SCHILY.xattr.user.comment", b"hello"),
            (
                "SCHILY.xattr.security.capability",
                &[1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            ("mtime", b"1600000000.123456789"),
        ])
        .entry("bin/caps", EntryType::Regular, 0o755, 0, 0, MTIME, b"elf");
    let tar = l.build();
    let (chain, stats) = add_layer(&sn, None, &tar, Compression::None);
    assert_eq!(stats.entries, 12);
    let fs = layer_fs(&sn, &chain);

    let m = std::fs::symlink_metadata(fs.join("bin")).unwrap();
    assert!(m.is_dir());
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o750, 1000, 1001));
    assert_eq!(
        m.mtime(),
        (MTIME + 1) as i64,
        "directory mtime applied after its children"
    );
    let m = std::fs::symlink_metadata(fs.join("bin/suid")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4755);
    assert_eq!(m.mtime(), (MTIME + 2) as i64);
    let m = std::fs::symlink_metadata(fs.join("bin/owned")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o600, 1234, 5678));
    assert_eq!(m.nlink(), 2);
    let h = std::fs::symlink_metadata(fs.join("bin/hard")).unwrap();
    assert_eq!(h.ino(), m.ino(), "hardlink shares the inode");
    assert_eq!(
        std::fs::symlink_metadata(fs.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert_eq!(
        std::fs::read_link(fs.join("bin/link")).unwrap(),
        Path::new("../etc/target")
    );
    assert_eq!(
        std::fs::read_link(fs.join("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    let m = std::fs::symlink_metadata(fs.join("abs")).unwrap();
    assert_eq!(
        m.mtime(),
        MTIME as i64,
        "symlink times set without following"
    );
    let d = std::fs::symlink_metadata(fs.join("dev/null")).unwrap();
    assert!(d.file_type().is_char_device());
    assert_eq!(
        (rustix::fs::major(d.rdev()), rustix::fs::minor(d.rdev())),
        (1, 3)
    );
    assert_eq!(d.mode() & 0o7777, 0o640);
    let d = std::fs::symlink_metadata(fs.join("dev/loop0")).unwrap();
    assert!(d.file_type().is_block_device());
    assert_eq!(
        (rustix::fs::major(d.rdev()), rustix::fs::minor(d.rdev())),
        (7, 0)
    );
    let implicit = std::fs::symlink_metadata(fs.join("dev")).unwrap();
    assert_eq!(
        (implicit.mode() & 0o7777, implicit.uid()),
        (0o755, 0),
        "implicit parents are 0755 root"
    );
    assert!(
        std::fs::symlink_metadata(fs.join("run/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let c = fs.join("bin/caps");
    assert_eq!(xattr(&c, "user.comment").unwrap(), b"hello");
    assert!(
        xattr(&c, "security.capability").is_some(),
        "capability xattr survives chown"
    );
    let m = std::fs::symlink_metadata(&c).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 123_456_789));
}

#[test]
fn compressions_give_the_same_tree_and_diff_id() {
    let t = TestDir::new();
    let sn = Snapshotter::open(&t.join("snap")).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let mut l = Layer::new();
    l.dir("a/").file("a/big", &big).file("a/small", b"s");
    let tar = l.build();
    let diff = Digest::sha256_of(&tar);
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        // Distinct chain ids so each is unpacked for real.
        let parent = Digest::sha256_of(format!("{c:?}").as_bytes());
        let chain = chain_id(Some(&parent), &diff);
        let mut x = sn.begin_layer(&chain, None).unwrap();
        let stats = x.unpack(&compress(&tar, c)[..], c).unwrap();
        assert_eq!(stats.diff_id, diff, "{c:?}");
        assert_eq!(stats.uncompressed_bytes, tar.len() as u64);
        assert_eq!(stats.entries, 3);
        x.commit().unwrap();
        assert_eq!(
            std::fs::read(layer_fs(&sn, &chain).join("a/big")).unwrap(),
            big
        );
    }
    // Multi-member gzip (as pigz/concatenation produce) is one stream.
    let half = tar.len() / 2;
    let mut two = compress(&tar[..half], Compression::Gzip);
    two.extend(compress(&tar[half..], Compression::Gzip));
    let mut x = sn.begin_layer(&Digest::sha256_of(b"multi"), None).unwrap();
    assert_eq!(x.unpack(&two[..], Compression::Gzip).unwrap().diff_id, diff);
}

#[test]
fn sparse_files_stay_sparse() {
    let t = TestDir::new();
    let sn = Snapshotter::open(&t.join("snap")).unwrap();
    // A zero-filled region in an ordinary entry becomes a hole.
    let mut data = vec![0u8; 8 << 20];
    data[0] = 1;
    let last = data.len() - 1;
    data[last] = 2;
    let mut l = Layer::new();
    l.file("zeros", &data);
    let (chain, _) = add_layer(&sn, None, &l.build(), Compression::Gzip);
    let p = layer_fs(&sn, &chain).join("zeros");
    let m = std::fs::metadata(&p).unwrap();
    assert_eq!(m.len(), 8 << 20);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "allocated {} bytes",
        m.blocks() * 512
    );
    assert_eq!(std::fs::read(&p).unwrap(), data);

    // A real GNU sparse entry, made by GNU tar.
    if Path::new("/bin/tar").exists() {
        let src = t.join("src");
        std::fs::create_dir(&src).unwrap();
        let f = std::fs::File::create(src.join("sparse")).unwrap();
        f.set_len(64 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"middle", 32 << 20).unwrap();
        let out = std::process::Command::new("/bin/tar")
            .args(["--sparse", "--format=gnu", "-cf", "-", "-C"])
            .arg(&src)
            .arg("sparse")
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(out.stdout.len() < 1 << 20, "GNU tar wrote a sparse entry");
        let (chain, _) = add_layer(&sn, None, &out.stdout, Compression::None);
        let p = layer_fs(&sn, &chain).join("sparse");
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.len(), 64 << 20);
        assert!(m.blocks() * 512 < 1 << 20);
        let mut buf = [0u8; 6];
        std::os::unix::fs::FileExt::read_exact_at(
            &std::fs::File::open(&p).unwrap(),
            &mut buf,
            32 << 20,
        )
        .unwrap();
        assert_eq!(&buf, b"middle");
    }
}

fn assert_tmp_empty(t: &TestDir) {
    let left: Vec<_> = std::fs::read_dir(t.join("snap/tmp")).unwrap().collect();
    assert!(left.is_empty(), "temp dirs left: {left:?}");
    assert!(
        std::fs::read_dir(t.join("snap/layers"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn broken_input_is_refused_cleanly() {
    let t = TestDir::new();
    let sn = Snapshotter::open(&t.join("snap")).unwrap();
    let mut l = Layer::new();
    l.file("f", &vec![7u8; 100_000]).file("g", b"g");
    let tar = l.build();
    let chain = Digest::sha256_of(b"broken");
    let cases: Vec<(&str, Vec<u8>, Compression)> = vec![
        ("truncated tar", tar[..50_000].to_vec(), Compression::None),
        (
            "truncated gzip",
            {
                let g = compress(&tar, Compression::Gzip);
                g[..g.len() / 2].to_vec()
            },
            Compression::Gzip,
        ),
        ("not gzip", tar.clone(), Compression::Gzip),
        ("not zstd", tar.clone(), Compression::Zstd),
        (
            "truncated zstd",
            {
                let z = compress(&tar, Compression::Zstd);
                z[..z.len() - 10].to_vec()
            },
            Compression::Zstd,
        ),
        (
            "bad header checksum",
            {
                let mut b = tar.clone();
                b[148] ^= 0x55;
                b
            },
            Compression::None,
        ),
    ];
    for (what, blob, c) in cases {
        let mut x = sn.begin_layer(&chain, None).unwrap();
        let e = x.unpack(&blob[..], c).unwrap_err();
        assert!(matches!(e, Error::InvalidLayer { .. }), "{what}: {e}");
        assert!(
            x.commit().is_err(),
            "{what}: a failed unpack cannot be committed"
        );
        assert!(!sn.has_layer(&chain));
        assert_tmp_empty(&t);
    }
}

#[test]
fn a_decompression_bomb_stops_at_the_size_limit() {
    let t = TestDir::new();
    let sn = Snapshotter::open(&t.join("snap")).unwrap();
    // 8 MiB of zeros: far less than the 1 MiB limit compressed (how much less depends
    // on the zlib backend cargo picks for the build).
    let mut l = Layer::new();
    l.file("zeros", &vec![0u8; 8 << 20]);
    let tar = l.build();
    for c in [Compression::Gzip, Compression::Zstd] {
        let blob = compress(&tar, c);
        assert!(blob.len() < 256 << 10, "{c:?} compresses to {}", blob.len());
        let chain = Digest::sha256_of(format!("bomb {c:?}").as_bytes());
        let mut x = sn.begin_layer(&chain, None).unwrap();
        x.set_size_limit(1 << 20);
        let e = x.unpack(&blob[..], c).unwrap_err();
        assert!(
            matches!(&e, Error::LayerTooLarge { limit: 1_048_576 })
                && e.to_string().contains("1048576 bytes"),
            "{c:?}: {e}"
        );
        assert!(!sn.has_layer(&chain));
        assert_tmp_empty(&t);
        // Under a limit it fits, it unpacks.
        let mut x = sn.begin_layer(&chain, None).unwrap();
        x.set_size_limit(tar.len() as u64);
        x.unpack(&blob[..], c).unwrap();
    }
}

/// Unpacks `tar`, expects UnsafeEntry naming `entry`, and checks nothing escaped.
fn refused(t: &TestDir, sn: &Snapshotter, tar: Vec<u8>, entry: &str) {
    let chain = Digest::sha256_of(&tar);
    let mut x = sn.begin_layer(&chain, None).unwrap();
    match x.unpack(&tar[..], Compression::None) {
        Err(Error::UnsafeEntry { entry: e, reason }) => {
            assert_eq!(e, entry, "reason: {reason}");
            assert!(!reason.is_empty());
        }
        other => panic!("entry {entry}: expected UnsafeEntry, got {other:?}"),
    }
    drop(x);
    assert!(!sn.has_layer(&chain));
    assert_tmp_empty(t);
    // The canary directory is as the test left it.
    let mut names: Vec<_> = std::fs::read_dir(t.join("canary"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["secret"], "entry {entry} wrote outside");
    assert_eq!(std::fs::read(t.join("canary/secret")).unwrap(), b"keep");
    // Nothing appeared beside the snapshotter root either.
    let mut top: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, vec!["canary", "snap"], "entry {entry} wrote outside");
    assert!(!Path::new("/x").exists() && !Path::new("/tmp/x").exists());
}

#[test]
fn escapes_are_refused() {
    let t = TestDir::new();
    let canary = t.join("canary");
    std::fs::create_dir(&canary).unwrap();
    std::fs::write(canary.join("secret"), b"keep").unwrap();
    let sn = Snapshotter::open(&t.join("snap")).unwrap();
    let c = canary.to_str().unwrap();
    let passwd_links = std::fs::metadata("/etc/passwd").unwrap().nlink();

    // `..` in names.
    let mut l = Layer::new();
    l.file("ok", b"1")
        .raw("../x", EntryType::Regular, None, 0o644, b"evil");
    refused(&t, &sn, l.build(), "../x");
    let mut l = Layer::new();
    l.raw("/abs/../../x", EntryType::Regular, None, 0o644, b"evil");
    refused(&t, &sn, l.build(), "/abs/../../x");
    let mut l = Layer::new();
    l.raw(
        "a/../../../../../../../../tmp/x",
        EntryType::Directory,
        None,
        0o755,
        b"",
    );
    refused(&t, &sn, l.build(), "a/../../../../../../../../tmp/x");

    // A symlinked directory pointing outside, then a file under it.
    let mut l = Layer::new();
    l.symlink("evil", c).file("evil/pwned", b"evil");
    refused(&t, &sn, l.build(), "evil/pwned");
    // ... pointing at /tmp.
    let mut l = Layer::new();
    l.symlink("tmpdir", "/tmp").file("tmpdir/x", b"evil");
    refused(&t, &sn, l.build(), "tmpdir/x");
    // A relative symlink climbing out (it would resolve to the canary), then a write.
    let mut l = Layer::new();
    l.symlink("up", "../../../../canary")
        .file("up/pwned", b"evil");
    refused(&t, &sn, l.build(), "up/pwned");
    // ... and a directory entry through it.
    let mut l = Layer::new();
    l.symlink("up", "../../../../canary").dir("up/newdir/");
    refused(&t, &sn, l.build(), "up/newdir/");
    // Even a symlink to inside the layer is never written through.
    let mut l = Layer::new();
    l.dir("real/")
        .symlink("alias", "real")
        .file("alias/f", b"x");
    refused(&t, &sn, l.build(), "alias/f");

    // Hardlinks: to a host file, through a symlink, climbing out.
    let mut l = Layer::new();
    l.hardlink("passwd", "/etc/passwd");
    refused(&t, &sn, l.build(), "passwd");
    let mut l = Layer::new();
    l.symlink("s", c).hardlink("stolen", "s/secret");
    refused(&t, &sn, l.build(), "stolen");
    let mut l = Layer::new();
    l.hardlink("stolen", "../../../../canary/secret");
    refused(&t, &sn, l.build(), "stolen");
    assert_eq!(
        std::fs::metadata("/etc/passwd").unwrap().nlink(),
        passwd_links
    );

    // Whiteouts naming a path outside, or through a symlink.
    let mut l = Layer::new();
    l.raw("../.wh.x", EntryType::Regular, None, 0o644, b"");
    refused(&t, &sn, l.build(), "../.wh.x");
    let mut l = Layer::new();
    l.symlink("s", c)
        .raw("s/.wh.secret", EntryType::Regular, None, 0o644, b"");
    refused(&t, &sn, l.build(), "s/.wh.secret");
    let mut l = Layer::new();
    l.symlink("s", c)
        .raw("s/.wh..wh..opq", EntryType::Regular, None, 0o644, b"");
    refused(&t, &sn, l.build(), "s/.wh..wh..opq");

    // xattrs that would steer overlayfs.
    let mut l = Layer::new();
    l.pax(&[("SCHILY.xattr.trusted.overlay.redirect", b"/etc")])
        .dir("d/");
    refused(&t, &sn, l.build(), "d/");
    let mut l = Layer::new();
    l.pax(&[("SCHILY.xattr.trusted.overlay.metacopy", b"")])
        .file("f", b"f");
    refused(&t, &sn, l.build(), "f");
    // ... but an opaque marker as an xattr is the same as `.wh..wh..opq` and is kept.
    let mut l = Layer::new();
    l.pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")])
        .dir("o/");
    let (c, _) = common::add_layer(&sn, None, &l.build(), Compression::None);
    let mut buf = [0u8; 4];
    let p = common::layer_fs(&sn, &c).join("o");
    assert_eq!(
        rustix::fs::lgetxattr(p, "trusted.overlay.opaque", &mut buf[..]).unwrap(),
        1
    );
}

#[test]
fn absolute_names_are_relative_to_the_layer_and_replacements_work() {
    let t = TestDir::new();
    let sn = Snapshotter::open(&t.join("snap")).unwrap();
    let mut l = Layer::new();
    l.raw("/etc/hostname", EntryType::Regular, None, 0o644, b"abs")
        .symlink("x", "target")
        .file("x", b"replaces the symlink, not written through it")
        .dir("d/")
        .file("d/child", b"c")
        .file("d", b"a file replaces the directory")
        .file("f", b"old")
        .dir("f/")
        .file("f/new", b"directory replaced the file");
    let (chain, _) = add_layer(&sn, None, &l.build(), Compression::None);
    let fs = layer_fs(&sn, &chain);
    assert_eq!(std::fs::read(fs.join("etc/hostname")).unwrap(), b"abs");
    assert!(std::fs::symlink_metadata(fs.join("x")).unwrap().is_file());
    assert_eq!(
        std::fs::read(fs.join("d")).unwrap(),
        b"a file replaces the directory"
    );
    assert_eq!(
        std::fs::read(fs.join("f/new")).unwrap(),
        b"directory replaced the file"
    );
    assert!(
        !Path::new("/etc/hostname").exists() || std::fs::read("/etc/hostname").unwrap() != b"abs"
    );
}

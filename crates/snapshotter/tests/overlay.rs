//! Snapshotter: real overlay mounts of multi-layer images, whiteouts and opaque
//! directories, long chains, concurrency, usage, removal rules and crash recovery.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::sync::{Arc, Barrier};

use common::{Layer, Mounted, TestDir, add_layer, compress, layer_fs, mounts_under};
use crius_snapshotter::{
    Compression, Digest, Error, MAX_MOUNT_DATA, Snapshotter, chain_id, mount_all, unmount,
};

fn names(p: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn image(sn: &Snapshotter) -> (Digest, Digest) {
    let mut l1 = Layer::new();
    l1.dir("etc/")
        .file("etc/a", b"A")
        .file("etc/b", b"B")
        .dir("d/")
        .file("d/x", b"x")
        .dir("d/sub/")
        .file("d/sub/y", b"y")
        .file("keep", b"keep");
    let (c1, _) = add_layer(sn, None, &l1.build(), Compression::Gzip);
    let mut l2 = Layer::new();
    l2.dir("etc/")
        .file("etc/.wh.a", b"")
        .dir("d/")
        .file("d/.wh..wh..opq", b"")
        .file("d/z", b"z")
        .file("new", b"new");
    let (c2, _) = add_layer(sn, Some(&c1), &l2.build(), Compression::Zstd);
    (c1, c2)
}

#[test]
fn multi_layer_image_mounts_with_whiteouts_and_opaque_dirs() {
    let t = TestDir::new();
    let sn = Snapshotter::open(&t.join("snap")).unwrap();
    let (c1, c2) = image(&sn);

    // The upper layer holds overlay whiteouts and an opaque directory.
    let fs2 = layer_fs(&sn, &c2);
    let wh = std::fs::symlink_metadata(fs2.join("etc/a")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    let mut buf = [0u8; 4];
    let n = rustix::fs::lgetxattr(fs2.join("d"), "trusted.overlay.opaque", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"y");

    // A writable snapshot, mounted for real.
    let mounts = sn.prepare("ctr1", Some(&c2)).unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].kind, "overlay");
    assert_eq!(sn.mounts("ctr1").unwrap(), mounts);
    let target = t.join("rootfs");
    std::fs::create_dir(&target).unwrap();
    mount_all(&mounts, &target).unwrap();
    {
        let _m = Mounted(target.clone());
        assert_eq!(names(&target), set(&["d", "etc", "keep", "new"]));
        assert_eq!(
            names(&target.join("etc")),
            set(&["b"]),
            "etc/a is whited out"
        );
        assert_eq!(names(&target.join("d")), set(&["z"]), "d is opaque");
        assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"keep");
        // Writes land in the snapshot, not in the layers.
        std::fs::write(target.join("written"), vec![1u8; 100_000]).unwrap();
        std::fs::remove_file(target.join("keep")).unwrap();
        let u = sn.snapshot_usage("ctr1").unwrap();
        assert!(u.bytes >= 100_000, "{u:?}");
        assert!(sn.snapshots_usage().unwrap().bytes >= u.bytes);
    }
    assert!(mounts_under(t.path()).is_empty());
    assert!(
        layer_fs(&sn, &c1).join("keep").exists(),
        "lower layer untouched"
    );

    // Read-only views: one layer is a bind mount, two are an overlay without upper.
    for (chain, expect) in [
        (&c1, set(&["d", "etc", "keep"])),
        (&c2, set(&["d", "etc", "keep", "new"])),
    ] {
        let v = sn.view_mounts(chain).unwrap();
        assert!(v[0].is_read_only());
        mount_all(&v, &target).unwrap();
        let _m = Mounted(target.clone());
        assert_eq!(names(&target), expect);
        assert!(
            std::fs::write(target.join("nope"), b"").is_err(),
            "view is read-only"
        );
    }

    // A snapshot with no parent is a plain writable bind mount.
    let m = sn.prepare("scratch", None).unwrap();
    assert_eq!(m[0].kind, "bind");
    mount_all(&m, &target).unwrap();
    {
        let _m = Mounted(target.clone());
        std::fs::write(target.join("f"), b"f").unwrap();
    }
    assert!(matches!(
        sn.prepare("ctr1", Some(&c1)),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        sn.prepare("../x", Some(&c1)),
        Err(Error::InvalidKey { .. })
    ));
    assert!(matches!(
        sn.prepare("k", Some(&Digest::sha256_of(b"none"))),
        Err(Error::NotFound { .. })
    ));
    let mut keys: Vec<_> = sn
        .snapshots()
        .unwrap()
        .into_iter()
        .map(|s| (s.key, s.parent))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            ("ctr1".to_string(), Some(c2.clone())),
            ("scratch".to_string(), None)
        ]
    );
    sn.remove_snapshot("ctr1").unwrap();
    sn.remove_snapshot("ctr1").unwrap();
    sn.remove_snapshot("scratch").unwrap();
    assert!(sn.snapshots().unwrap().is_empty());
    assert!(matches!(sn.mounts("ctr1"), Err(Error::NotFound { .. })));
    assert!(mounts_under(t.path()).is_empty());
}

#[test]
fn hundred_layer_chain_mounts() {
    let t = TestDir::new();
    // A long root makes the absolute lowerdirs far exceed a page.
    let root = t.join(&"r".repeat(100)).join("snap");
    let quick = crius_snapshotter::Options {
        sync_on_commit: false,
    };
    let sn = Snapshotter::open_with(&root, quick).unwrap();
    let mut parent: Option<Digest> = None;
    for i in 0..100 {
        let mut l = Layer::new();
        l.file(&format!("f{i}"), format!("{i}").as_bytes());
        if i > 0 {
            l.file(&format!(".wh.f{}", i - 1), b""); // each layer hides the previous file
        }
        l.file("top", format!("{i}").as_bytes());
        let (c, _) = add_layer(&sn, parent.as_ref(), &l.build(), Compression::None);
        parent = Some(c);
    }
    let top = parent.unwrap();
    assert_eq!(sn.layers().unwrap().len(), 100);
    let cwd = std::env::current_dir().unwrap();
    let m = sn.prepare("long", Some(&top)).unwrap();
    let opts = m[0].options.join(",");
    assert!(
        opts.len() > MAX_MOUNT_DATA,
        "options are {} bytes: the relative fallback is exercised",
        opts.len()
    );
    let target = t.join("rootfs");
    std::fs::create_dir(&target).unwrap();
    mount_all(&m, &target).unwrap();
    {
        let _m = Mounted(target.clone());
        assert_eq!(names(&target), set(&["f99", "top"]));
        assert_eq!(std::fs::read(target.join("top")).unwrap(), b"99");
        std::fs::write(target.join("w"), b"w").unwrap();
    }
    // The working directory of the process is untouched by the mount thread.
    assert_eq!(std::env::current_dir().unwrap(), cwd);
    let v = sn.view_mounts(&top).unwrap();
    mount_all(&v, &target).unwrap();
    {
        let _m = Mounted(target.clone());
        assert_eq!(names(&target), set(&["f99", "top"]));
    }
    sn.remove_snapshot("long").unwrap();
    assert!(mounts_under(t.path()).is_empty());
}

#[test]
fn two_threads_unpacking_the_same_chain() {
    let t = TestDir::new();
    let sn = Snapshotter::open(&t.join("snap")).unwrap();
    let mut l = Layer::new();
    for i in 0..200 {
        l.file(&format!("dir{}/file{i}", i % 10), &vec![i as u8; 10_000]);
    }
    let tar = l.build();
    let blob = compress(&tar, Compression::Gzip);
    let chain = chain_id(None, &Digest::sha256_of(&tar));
    for _round in 0..3 {
        let barrier = Arc::new(Barrier::new(4));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let (sn, blob, chain, barrier) =
                    (sn.clone(), blob.clone(), chain.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut x = sn.begin_layer(&chain, None)?;
                    x.unpack(&blob[..], Compression::Gzip)?;
                    barrier.wait();
                    x.commit()
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap().unwrap();
        }
        assert_eq!(sn.layers().unwrap().len(), 1);
        assert_eq!(std::fs::read_dir(t.join("snap/layers")).unwrap().count(), 1);
        assert_eq!(std::fs::read_dir(t.join("snap/tmp")).unwrap().count(), 0);
        let fs = layer_fs(&sn, &chain);
        assert_eq!(
            std::fs::read(fs.join("dir3/file13")).unwrap(),
            vec![13u8; 10_000]
        );
        sn.remove_layer(&chain).unwrap();
    }
    // Two snapshotters (as two processes would) on one root.
    let other = Snapshotter::open(&t.join("snap")).unwrap();
    let mut a = sn.begin_layer(&chain, None).unwrap();
    let mut b = other.begin_layer(&chain, None).unwrap();
    a.unpack(&blob[..], Compression::Gzip).unwrap();
    b.unpack(&blob[..], Compression::Gzip).unwrap();
    b.commit().unwrap();
    a.commit().unwrap();
    assert!(sn.has_layer(&chain) && other.has_layer(&chain));
    assert_eq!(std::fs::read_dir(t.join("snap/layers")).unwrap().count(), 1);
}

#[test]
fn usage_numbers() {
    let t = TestDir::new();
    let sn = Snapshotter::open(&t.join("snap")).unwrap();
    let data: Vec<u8> = (0..1_048_576u32).map(|i| (i % 253 + 1) as u8).collect();
    let mut l = Layer::new();
    l.file("one", &data)
        .file("two", &data[..4096])
        .hardlink("one-again", "one");
    let (c, _) = add_layer(&sn, None, &l.build(), Compression::Zstd);
    let u = sn.layer_usage(&c).unwrap();
    // 1 MiB + 4 KiB of data, the root directory and two files (the hardlink counted once).
    assert!(
        u.bytes >= 1_048_576 + 4096 && u.bytes < 1_048_576 + 64 * 1024,
        "{u:?}"
    );
    assert_eq!(u.inodes, 3, "{u:?}");
    let info = &sn.layers().unwrap()[0];
    assert_eq!(
        (info.chain_id.clone(), info.parent.clone(), info.size),
        (c.clone(), None, u.bytes)
    );
    assert_eq!(sn.layers_usage().unwrap(), u);
    sn.prepare("s", Some(&c)).unwrap();
    assert_eq!(sn.snapshot_usage("s").unwrap().inodes, 1);
    std::fs::write(t.join("snap/snapshots/s/fs/blob"), &data).unwrap();
    let su = sn.snapshot_usage("s").unwrap();
    assert!(su.bytes >= 1_048_576 && su.inodes == 2, "{su:?}");
    assert!(matches!(
        sn.snapshot_usage("nope"),
        Err(Error::NotFound { .. })
    ));
    sn.remove_snapshot("s").unwrap();
    sn.remove_layer(&c).unwrap();
    assert_eq!(sn.layers_usage().unwrap(), Default::default());
}

#[test]
fn unpack_while_downloading_through_a_tee() {
    let t = TestDir::new();
    let sn = Snapshotter::open_with(
        &t.join("snap"),
        crius_snapshotter::Options {
            sync_on_commit: false,
        },
    )
    .unwrap();
    let cs = crius_snapshotter::ContentStore::open(&t.join("content")).unwrap();
    let mut l = Layer::new();
    l.file("a", &vec![3u8; 200_000]).file("b", b"b");
    let tar = l.build();
    let blob = compress(&tar, Compression::Zstd);
    let blob_digest = Digest::sha256_of(&blob);
    let chain = chain_id(None, &Digest::sha256_of(&tar));
    let mut w = cs.writer(&blob_digest, Some(blob.len() as u64)).unwrap();
    let mut x = sn.begin_layer(&chain, None).unwrap();
    {
        let mut tee = w.tee(&blob[..]);
        let stats = x.unpack(&mut tee, Compression::Zstd).unwrap();
        assert_eq!(stats.diff_id, Digest::sha256_of(&tar));
        std::io::copy(&mut tee, &mut std::io::sink()).unwrap();
    }
    w.commit().unwrap();
    assert_eq!(cs.read(&blob_digest).unwrap(), blob);
    x.commit().unwrap();
    assert!(sn.has_layer(&chain));
}

#[test]
fn remove_layer_refuses_while_in_use() {
    let t = TestDir::new();
    let sn = Snapshotter::open(&t.join("snap")).unwrap();
    let (c1, c2) = image(&sn);
    match sn.remove_layer(&c1) {
        Err(Error::InUse { what, by }) => {
            assert!(
                what.contains(c1.as_str()) && by.contains(c2.as_str()),
                "{what} / {by}"
            );
        }
        other => panic!("{other:?}"),
    }
    sn.prepare("c", Some(&c2)).unwrap();
    match sn.remove_layer(&c2) {
        Err(Error::InUse { by, .. }) => assert!(by.contains("\"c\""), "{by}"),
        other => panic!("{other:?}"),
    }
    sn.remove_snapshot("c").unwrap();
    sn.remove_layer(&c2).unwrap();
    sn.remove_layer(&c2).unwrap(); // missing is Ok
    sn.remove_layer(&c1).unwrap();
    assert!(sn.layers().unwrap().is_empty());
    assert!(!sn.has_layer(&c1));
    // A child cannot be committed on a removed parent.
    let mut x = sn
        .begin_layer(&chain_id(Some(&c1), &c2), Some(&c1))
        .unwrap();
    x.unpack(&Layer::new().build()[..], Compression::None)
        .unwrap();
    assert!(matches!(x.commit(), Err(Error::NotFound { .. })));
    assert_eq!(std::fs::read_dir(t.join("snap/tmp")).unwrap().count(), 0);
}

#[test]
fn prune_removes_unreferenced_layers_topmost_first() {
    let t = TestDir::new();
    let sn = Snapshotter::open(&t.join("snap")).unwrap();
    let (c1, c2) = image(&sn);
    let mut l = Layer::new();
    l.file("other", b"o");
    let (c3, _) = add_layer(&sn, Some(&c1), &l.build(), Compression::None);
    let mut l = Layer::new();
    l.file("lone", b"l");
    let (c4, _) = add_layer(&sn, None, &l.build(), Compression::None);
    sn.prepare("ctr", Some(&c3)).unwrap();
    // Keep nothing: c2 and c4 go; c3 (snapshot) and c1 (its parent) stay.
    let mut removed = sn.prune_layers(&Default::default()).unwrap();
    removed.sort();
    let mut expect = vec![c2.clone(), c4.clone()];
    expect.sort();
    assert_eq!(removed, expect);
    sn.remove_snapshot("ctr").unwrap();
    // Keep c1 only: c3 goes.
    let keep = [c1.clone()].into_iter().collect();
    assert_eq!(sn.prune_layers(&keep).unwrap(), vec![c3]);
    assert_eq!(sn.prune_layers(&Default::default()).unwrap(), vec![c1]);
    assert!(sn.layers().unwrap().is_empty());
}

#[test]
fn open_repairs_what_a_crash_left() {
    let t = TestDir::new();
    let root = t.join("snap");
    let sn = Snapshotter::open(&root).unwrap();
    let (c1, _) = image(&sn);
    // An extraction of this (live) process survives a second open...
    let mut live = sn.begin_layer(&Digest::sha256_of(b"live"), None).unwrap();
    // ...while leftovers of dead processes go.
    std::fs::create_dir_all(root.join("tmp/4194999-3-3/fs/usr")).unwrap();
    std::fs::create_dir_all(root.join("layers/777/fs")).unwrap(); // renamed, never published
    std::os::unix::fs::symlink(
        "888",
        root.join("chains")
            .join(Digest::sha256_of(b"dangling").hex()),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("snapshots/half")).unwrap(); // no meta.json
    let sn2 = Snapshotter::open(&root).unwrap();
    assert!(!root.join("tmp/4194999-3-3").exists());
    assert!(!root.join("layers/777").exists());
    assert!(!root.join("snapshots/half").exists());
    assert!(!sn2.has_layer(&Digest::sha256_of(b"dangling")));
    assert_eq!(sn2.layers().unwrap().len(), 2);
    assert!(sn2.has_layer(&c1));
    live.unpack(&Layer::new().build()[..], Compression::None)
        .unwrap();
    live.commit().unwrap();
    assert_eq!(sn2.layers().unwrap().len(), 3);
    // Roots that would break overlay options are refused.
    assert!(Snapshotter::open(&t.join("a:b")).is_err());
    drop(mounts_under(t.path()));
    unmount(&t.join("never-mounted")).unwrap();
}

#[test]
fn views_are_read_only_overlays_that_hold_their_layers() {
    let t = TestDir::new();
    let sn = Snapshotter::open(&t.join("snap")).unwrap();
    let (c1, c2) = image(&sn);
    let target = t.join("vol");
    std::fs::create_dir(&target).unwrap();
    for (key, chain, expect) in [
        ("v1", &c1, set(&["d", "etc", "keep"])),
        ("v2", &c2, set(&["d", "etc", "keep", "new"])),
    ] {
        let mounts = sn.prepare_view(key, chain).unwrap();
        assert_eq!(sn.mounts(key).unwrap(), mounts);
        // Always an overlay without upper, one layer included: a remount cannot make
        // it writable (a bind of the layer directory could be).
        assert_eq!(mounts[0].kind, "overlay", "{mounts:?}");
        assert!(mounts[0].is_read_only());
        assert!(!mounts[0].options.iter().any(|o| o.starts_with("upperdir=")));
        assert!(matches!(
            sn.prepare_view(key, chain),
            Err(Error::AlreadyExists { .. })
        ));
        mount_all(&mounts, &target).unwrap();
        let _m = Mounted(target.clone());
        assert_eq!(names(&target), expect);
        assert!(std::fs::write(target.join("nope"), b"").is_err());
        let remount = rustix::mount::mount_remount(&target, rustix::mount::MountFlags::empty(), "");
        assert!(remount.is_err(), "a view cannot be remounted read-write");
        assert!(std::fs::write(target.join("nope"), b"").is_err());
        assert_eq!(sn.snapshot_usage(key).unwrap().bytes, 0);
    }
    let infos = sn.snapshots().unwrap();
    assert!(infos.iter().all(|s| s.view), "{infos:?}");
    // The views hold their chains: neither removal nor garbage collection takes them.
    assert!(matches!(sn.remove_layer(&c2), Err(Error::InUse { .. })));
    assert!(sn.prune_layers(&Default::default()).unwrap().is_empty());
    sn.remove_snapshot("v2").unwrap();
    assert!(matches!(sn.remove_layer(&c1), Err(Error::InUse { .. })));
    assert_eq!(
        sn.prune_layers(&Default::default()).unwrap(),
        vec![c2.clone()]
    );
    sn.remove_snapshot("v1").unwrap();
    assert_eq!(sn.prune_layers(&Default::default()).unwrap(), vec![c1]);
    // A view of a chain that is not there is NotFound, and leaves nothing.
    assert!(sn.prepare_view("v3", &c2).unwrap_err().is_not_found());
    assert!(sn.snapshots().unwrap().is_empty());
    // A view survives reopening (and the repair it runs).
    let (c1, _) = image(&sn);
    sn.prepare_view("v4", &c1).unwrap();
    let sn = Snapshotter::open(&t.join("snap")).unwrap();
    assert!(sn.snapshots().unwrap()[0].view);
    assert!(matches!(sn.remove_layer(&c1), Err(Error::InUse { .. })));
    assert!(mounts_under(t.path()).is_empty());
}

//! Content store: write/verify, mismatches, concurrency, crash leftovers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Barrier};

use common::TestDir;
use crius_snapshotter::{ContentStore, Digest, Error};

#[test]
fn write_commit_read_list_delete() {
    let t = TestDir::new();
    let cs = ContentStore::open(t.path()).unwrap();
    let data = b"hello, blobs".repeat(1000);
    let d = Digest::sha256_of(&data);
    assert!(!cs.has(&d));
    let mut w = cs.writer(&d, Some(data.len() as u64)).unwrap();
    for chunk in data.chunks(777) {
        w.write_all(chunk).unwrap();
    }
    assert_eq!(w.written(), data.len() as u64);
    w.commit().unwrap();
    assert!(cs.has(&d));
    assert_eq!(cs.size(&d), Some(data.len() as u64));
    assert_eq!(cs.read(&d).unwrap(), data);
    assert_eq!(cs.path(&d), t.path().join("blobs/sha256").join(d.hex()));
    assert_eq!(cs.list().unwrap(), vec![(d.clone(), data.len() as u64)]);
    let u = cs.disk_usage().unwrap();
    assert!(u.bytes >= data.len() as u64 && u.inodes >= 4, "{u:?}");
    // Nothing left in ingest.
    assert_eq!(std::fs::read_dir(t.join("ingest")).unwrap().count(), 0);
    cs.delete(&d).unwrap();
    cs.delete(&d).unwrap(); // missing is Ok
    assert!(!cs.has(&d));
    assert!(matches!(cs.read(&d), Err(Error::NotFound { .. })));
    assert!(cs.list().unwrap().is_empty());
}

#[test]
fn digest_mismatch_removes_temp() {
    let t = TestDir::new();
    let cs = ContentStore::open(t.path()).unwrap();
    let d = Digest::sha256_of(b"expected");
    let mut w = cs.writer(&d, None).unwrap();
    w.write_all(b"something else").unwrap();
    match w.commit() {
        Err(Error::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, d);
            assert_eq!(actual, Digest::sha256_of(b"something else"));
        }
        other => panic!("{other:?}"),
    }
    assert!(!cs.has(&d));
    assert_eq!(std::fs::read_dir(t.join("ingest")).unwrap().count(), 0);
}

#[test]
fn size_mismatch_short_and_long() {
    let t = TestDir::new();
    let cs = ContentStore::open(t.path()).unwrap();
    let data = b"0123456789";
    let d = Digest::sha256_of(data);
    // Too short.
    let mut w = cs.writer(&d, Some(11)).unwrap();
    w.write_all(data).unwrap();
    assert!(matches!(
        w.commit(),
        Err(Error::SizeMismatch {
            expected: 11,
            actual: 10,
            ..
        })
    ));
    // Too long: refused as it is written.
    let mut w = cs.writer(&d, Some(5)).unwrap();
    assert!(w.write_all(data).is_err());
    assert!(w.commit().is_err());
    assert!(!cs.has(&d));
    assert_eq!(std::fs::read_dir(t.join("ingest")).unwrap().count(), 0);
    // Dropped without commit.
    let mut w = cs.writer(&d, None).unwrap();
    w.write_all(b"01234").unwrap();
    drop(w);
    assert_eq!(std::fs::read_dir(t.join("ingest")).unwrap().count(), 0);
}

#[test]
fn concurrent_writers_of_same_digest_both_succeed() {
    let t = TestDir::new();
    let cs = ContentStore::open(t.path()).unwrap();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let d = Digest::sha256_of(&data);
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (cs, d, data, barrier) = (cs.clone(), d.clone(), data.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut w = cs.writer(&d, Some(data.len() as u64)).unwrap();
                barrier.wait();
                for c in data.chunks(65536) {
                    w.write_all(c).unwrap();
                }
                barrier.wait();
                w.commit()
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    assert_eq!(cs.read(&d).unwrap(), data);
    assert_eq!(cs.list().unwrap().len(), 1);
    assert_eq!(std::fs::read_dir(t.join("ingest")).unwrap().count(), 0);
}

#[test]
fn open_removes_crash_leftovers_and_read_verifies() {
    let t = TestDir::new();
    {
        let cs = ContentStore::open(t.path()).unwrap();
        let d = Digest::sha256_of(b"x");
        let mut w = cs.writer(&d, None).unwrap();
        w.write_all(b"x").unwrap();
        std::mem::forget(w); // as if the process died mid-write: the temp file stays
    }
    // Leftovers of a dead process and junk.
    std::fs::write(t.join("ingest/4194999-1-1"), b"partial").unwrap();
    std::fs::write(t.join("ingest/garbage"), b"junk").unwrap();
    assert_eq!(std::fs::read_dir(t.join("ingest")).unwrap().count(), 3);
    let cs = ContentStore::open(t.path()).unwrap();
    // Ours (this pid, alive) stays; the dead process's and the junk go.
    let left: Vec<_> = std::fs::read_dir(t.join("ingest"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0]
            .to_string_lossy()
            .starts_with(&format!("{}-", std::process::id()))
    );

    // A blob corrupted on disk is reported, not returned.
    let d = Digest::sha256_of(b"good");
    cs.ingest(&d, Some(4), &b"good"[..]).unwrap();
    std::fs::write(cs.path(&d), b"evil").unwrap();
    assert!(matches!(cs.read(&d), Err(Error::DigestMismatch { .. })));
    // Names that are not digests are not listed.
    std::fs::write(t.join("blobs/sha256/nothex"), b"").unwrap();
    assert_eq!(cs.list().unwrap().len(), 1);

    // Garbage collection keeps what is referenced.
    let other = Digest::sha256_of(b"other");
    cs.ingest(&other, None, &b"other"[..]).unwrap();
    let keep = [other.clone()].into_iter().collect();
    assert_eq!(cs.prune(&keep).unwrap(), vec![d.clone()]);
    assert!(cs.has(&other) && !cs.has(&d));
}

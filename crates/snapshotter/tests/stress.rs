//! Many threads committing, preparing and removing at once keep the store consistent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Layer, TestDir};
use crius_snapshotter::{Compression, Digest, Error, Snapshotter, chain_id};

#[test]
fn concurrent_commit_prepare_remove_stay_consistent() {
    let t = TestDir::new();
    let root = t.join("snap");
    let mut l = Layer::new();
    l.dir("base/").file("base/f", b"base");
    let base_tar = l.build();
    let base = chain_id(None, &Digest::sha256_of(&base_tar));
    let children: Vec<(Digest, Vec<u8>)> = (0..4)
        .map(|i| {
            let mut l = Layer::new();
            l.file(&format!("child{i}"), format!("{i}").as_bytes());
            let tar = l.build();
            (chain_id(Some(&base), &Digest::sha256_of(&tar)), tar)
        })
        .collect();

    let threads: Vec<_> = (0..8)
        .map(|n| {
            // Half the threads share one Snapshotter, the others open their own (as
            // separate processes would).
            let root = root.clone();
            let (base, base_tar, children) = (base.clone(), base_tar.clone(), children.clone());
            std::thread::spawn(move || {
                let sn = Snapshotter::open(&root).unwrap();
                let ok_or = |r: Result<(), Error>| match r {
                    Ok(()) | Err(Error::NotFound { .. }) | Err(Error::InUse { .. }) => {}
                    Err(e) => panic!("thread {n}: {e}"),
                };
                for i in 0..15 {
                    let (chain, tar) = &children[(n + i) % children.len()];
                    if !sn.has_layer(&base) {
                        let mut x = sn.begin_layer(&base, None).unwrap();
                        x.unpack(&base_tar[..], Compression::None).unwrap();
                        x.commit().unwrap();
                    }
                    let mut x = sn.begin_layer(chain, Some(&base)).unwrap();
                    x.unpack(&tar[..], Compression::None).unwrap();
                    ok_or(x.commit());
                    let key = format!("t{n}-{i}");
                    match sn.prepare(&key, Some(chain)) {
                        Ok(m) => assert_eq!(m.len(), 1),
                        Err(Error::NotFound { .. }) => {}
                        Err(e) => panic!("thread {n}: {e}"),
                    }
                    if i % 3 == 0 {
                        ok_or(sn.remove_layer(chain));
                        ok_or(sn.remove_layer(&base));
                    }
                    sn.remove_snapshot(&key).unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let sn = Snapshotter::open(&root).unwrap();
    let layers = sn.layers().unwrap();
    for l in &layers {
        if let Some(p) = &l.parent {
            assert!(sn.has_layer(p), "layer {} lost its parent", l.chain_id);
        }
        sn.view_mounts(&l.chain_id).unwrap();
    }
    assert!(sn.snapshots().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(root.join("layers")).unwrap().count(),
        layers.len()
    );
    assert_eq!(
        std::fs::read_dir(root.join("chains")).unwrap().count(),
        layers.len()
    );
    let mut removed = sn.prune_layers(&Default::default()).unwrap();
    removed.sort();
    let mut all: Vec<_> = layers.into_iter().map(|l| l.chain_id).collect();
    all.sort();
    assert_eq!(removed, all);
}

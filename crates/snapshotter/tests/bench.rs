//! Unpack throughput (prints, never asserts). Run with
//! `cargo test --release -p crius-snapshotter --test bench -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use common::{Layer, TestDir, compress};
use crius_snapshotter::{Compression, Digest, Snapshotter, chain_id};

#[test]
#[ignore = "benchmark; run explicitly"]
fn unpack_throughput() {
    let t = TestDir::new();
    let sn = Snapshotter::open(&t.join("snap")).unwrap();
    // Five 10 MiB layers of incompressible-ish data in 1 MiB files, plus a layer of many
    // small files.
    let mut seed = 0x1234_5678_u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut layers = Vec::new();
    for i in 0..5 {
        let mut l = Layer::new();
        for f in 0..10 {
            let data: Vec<u8> = (0..(1 << 20) / 8)
                .flat_map(|_| rnd().to_le_bytes())
                .collect();
            l.file(&format!("l{i}/f{f}"), &data);
        }
        layers.push(("10 MiB random", l.build()));
    }
    let mut l = Layer::new();
    for f in 0..5000 {
        l.file(&format!("d{}/small{f}", f % 50), &vec![b'x'; 2000]);
    }
    layers.push(("5000 x 2 KB", l.build()));
    println!(
        "{:<14} {:>6} {:>10} {:>10} {:>10}",
        "layer", "comp", "tar MiB", "ms", "MiB/s"
    );
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let mut parent: Option<Digest> = None;
        for (what, tar) in &layers {
            let blob = compress(tar, c);
            let salt = Digest::sha256_of(format!("{c:?}").as_bytes());
            let chain = chain_id(
                Some(parent.as_ref().unwrap_or(&salt)),
                &Digest::sha256_of(tar),
            );
            let start = Instant::now();
            let mut x = sn.begin_layer(&chain, parent.as_ref()).unwrap();
            x.unpack(&blob[..], c).unwrap();
            x.commit().unwrap();
            let s = start.elapsed().as_secs_f64();
            let mib = tar.len() as f64 / (1 << 20) as f64;
            println!(
                "{what:<14} {:>6} {mib:>10.1} {:>10.1} {:>10.1}",
                format!("{c:?}"),
                s * 1000.0,
                mib / s
            );
            parent = Some(chain);
        }
    }
}

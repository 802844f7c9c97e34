//! Unpack throughput beside GNU tar on the same blobs (prints, never asserts). Run with
//! `cargo test --release -p crius-snapshotter --test bench -- --ignored --nocapture`.
//! crius also hashes the stream (diff id), measures usage and syncs the filesystem before
//! publishing; GNU tar does none of that.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::{Layer, TestDir, compress};
use crius_snapshotter::{Compression, Digest, Snapshotter, chain_id};

fn gnu_tar(t: &TestDir, blob: &[u8], c: Compression) -> Option<f64> {
    if c == Compression::Zstd && !Path::new("/usr/bin/zstd").exists() {
        return None;
    }
    let f = t.join("blob");
    std::fs::write(&f, blob).unwrap();
    let out = t.join("gnu");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir(&out).unwrap();
    let mut cmd = Command::new("tar");
    cmd.arg("-C").arg(&out);
    match c {
        Compression::None => cmd.arg("-xf"),
        Compression::Gzip => cmd.arg("-xzf"),
        Compression::Zstd => cmd.arg("--zstd").arg("-xf"),
    };
    let start = Instant::now();
    let ok = cmd.arg(&f).status().ok()?.success();
    // Make the comparison fair on durability: tar's data reaches disk too.
    rustix::fs::sync();
    let s = start.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&out).unwrap();
    ok.then_some(s)
}

#[test]
#[ignore = "benchmark; run explicitly"]
fn unpack_throughput() {
    let t = TestDir::new();
    let sn = Snapshotter::open(&t.join("snap")).unwrap();
    let mut seed = 0x1234_5678_u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // Five 10 MiB layers of random data in 1 MiB files, plus a layer of many small files.
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
        "{:<14} {:>5} {:>8} {:>9} {:>10} {:>8} {:>11} {:>10}",
        "layer", "comp", "tar MiB", "crius ms", "(unpack)", "MiB/s", "GNU tar ms", "tar/crius"
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
            let unpacked = start.elapsed().as_secs_f64();
            x.commit().unwrap();
            let s = start.elapsed().as_secs_f64();
            let mib = tar.len() as f64 / f64::from(1 << 20);
            let (g, r) = match gnu_tar(&t, &blob, c) {
                Some(g) => (format!("{:.1}", g * 1000.0), format!("{:.2}", g / s)),
                None => ("-".into(), "-".into()),
            };
            println!(
                "{what:<14} {:>5} {mib:>8.1} {:>9.1} {:>10.1} {:>8.1} {g:>11} {r:>10}",
                format!("{c:?}"),
                s * 1000.0,
                unpacked * 1000.0,
                mib / s
            );
            parent = Some(chain);
        }
    }
}

//! A small deterministic mutation fuzzer for the unpacker: header fields of benign and
//! hostile layers are mutated (checksums fixed up so the mutations reach the unpacker), and
//! whatever happens, nothing may be written outside the layer and nothing may panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Layer, TestDir};
use crius_snapshotter::{Compression, Digest, Snapshotter};
use tar::EntryType;

const TOKENS: &[&[u8]] = &[
    b"../",
    b"/",
    b"..",
    b".wh.",
    b".wh..wh..opq",
    b"./",
    b"a/",
    b"\0",
    b"//",
    b"../../canary/",
];

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
        let size = h.entry_size().unwrap_or(0) as usize;
        off += 512 + size.div_ceil(512) * 512;
    }
    out
}

#[test]
fn mutated_headers_never_escape() {
    let t = TestDir::new();
    let canary = t.join("canary");
    std::fs::create_dir(&canary).unwrap();
    std::fs::write(canary.join("secret"), b"keep").unwrap();
    let sn = Snapshotter::open(&t.join("snap")).unwrap();
    let c = canary.to_str().unwrap().to_owned();

    let mut seeds = Vec::new();
    let mut l = Layer::new();
    l.dir("a/")
        .file("a/f", b"data")
        .symlink("a/s", "../../../../canary")
        .hardlink("a/h", "a/f")
        .file("a/.wh.x", b"");
    seeds.push(l.build());
    let mut l = Layer::new();
    l.symlink("s", &c)
        .file("t", b"t")
        .dir("d/")
        .file("d/.wh..wh..opq", b"")
        .device("d/n", EntryType::Char, 1, 3);
    seeds.push(l.build());

    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let iterations = 1000;
    let (mut ok, mut err) = (0, 0);
    for i in 0..iterations {
        let mut tar = seeds[i % seeds.len()].clone();
        let hs = headers(&tar);
        for _ in 0..(1 + rnd() % 4) {
            let h = hs[(rnd() as usize) % hs.len()];
            // name (0..100), typeflag (156), linkname (157..257)
            let field = match rnd() % 3 {
                0 => h + (rnd() as usize % 100),
                1 => h + 156,
                _ => h + 157 + (rnd() as usize % 100),
            };
            if rnd() % 2 == 0 {
                let tok = TOKENS[(rnd() as usize) % TOKENS.len()];
                let end = (field + tok.len()).min(h + 257);
                tar[field..end].copy_from_slice(&tok[..end - field]);
            } else if field == h + 156 {
                tar[field] = b"0123456xgLKS"[(rnd() as usize) % 12];
            } else {
                tar[field] = rnd() as u8;
            }
            let mut hdr = tar::Header::new_old();
            hdr.as_mut_bytes().copy_from_slice(&tar[h..h + 512]);
            hdr.set_cksum();
            tar[h..h + 512].copy_from_slice(hdr.as_bytes());
        }
        let chain = Digest::sha256_of(&tar);
        let mut x = sn.begin_layer(&chain, None).unwrap();
        match x.unpack(&tar[..], Compression::None) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
        drop(x);
        let names: Vec<_> = std::fs::read_dir(&canary)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names.len(),
            1,
            "iteration {i} wrote into the canary: {names:?}"
        );
        assert_eq!(std::fs::read(canary.join("secret")).unwrap(), b"keep");
        assert_eq!(
            std::fs::read_dir(t.path()).unwrap().count(),
            2,
            "iteration {i} wrote beside the root"
        );
        assert_eq!(std::fs::read_dir(t.join("snap/tmp")).unwrap().count(), 0);
    }
    println!("mutations: {ok} unpacked, {err} refused");
    assert!(ok > 0 && err > 0);
}

//! Pull benchmark: a 5 x 10 MiB image from a loopback docker-registry,
//! cold (fresh roots every run), crius beside containerd 1.6 (Debian's, through its
//! CRI plugin, with the registry configured as a mirror for both). Prints a table;
//! asserts nothing about time.
//!
//! Run as root: `cargo bench -p crius-e2e --bench pull` (builds criusd in release
//! first: `cargo build --release --bins`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crius_e2e::bench::{self, start_containerd};
use crius_e2e::images::*;
use crius_e2e::v1::image_service_client::ImageServiceClient;
use crius_e2e::*;

const RUNS: usize = 5;
const LAYERS: usize = 5;
const LAYER_BYTES: usize = 10 * 1024 * 1024;
const UPSTREAM: &str = "bench.crius.invalid";

fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn timed_pull(
    c: &mut ImageServiceClient<tonic::transport::Channel>,
    image: &str,
) -> Duration {
    let start = Instant::now();
    pull_image(c, image, None).await.expect("pull");
    start.elapsed()
}

async fn crius_run(root: &Path, registry: &str, image: &str) -> Duration {
    let bin = std::env::var("CRIUSD")
        .map(PathBuf::from)
        .unwrap_or_else(|_| bench::release_bin("criusd"));
    let mirror = format!("[images.mirrors]\n\"{UPSTREAM}\" = [\"{registry}\"]\n");
    let d = bench::spawn_criusd(&bin, root, &mirror).await;
    timed_pull(&mut ImageServiceClient::new(d.channel.clone()), image).await
}

async fn containerd_run(root: &Path, registry: &str, image: &str) -> Duration {
    std::fs::create_dir_all(root).unwrap();
    let d = start_containerd(root, UPSTREAM, registry, &root.join("cni-conf"), "unused").await;
    timed_pull(&mut ImageServiceClient::new(d.channel.clone()), image).await
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let (base, reg) = bench::scratch("bench-pull").await;
    let mut big = ImageBuilder::new("bench/big");
    for i in 0..LAYERS {
        let blob = file_layer(&format!("blob{i}"), noise(i as u64 + 1, LAYER_BYTES));
        big = big.layer(blob, Comp::Gzip);
    }
    let pushed = big.push(&reg).await.unwrap();
    let image = format!("{UPSTREAM}/{}:{}", pushed.repo, pushed.tag);
    println!(
        "pull of {image}: {LAYERS} x {} MiB gzip layers from docker-registry on {}, cold, {RUNS} runs each",
        LAYER_BYTES >> 20,
        reg.host
    );
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        let a = crius_run(&base.join(format!("crius-{run}")), &reg.host, &image).await;
        let b = containerd_run(&base.join(format!("containerd-{run}")), &reg.host, &image).await;
        println!(
            "run {run}: crius {:>7.3}s  containerd {:>7.3}s",
            a.as_secs_f64(),
            b.as_secs_f64()
        );
        ours.push(a);
        theirs.push(b);
    }
    let (a, b) = (median(ours), median(theirs));
    println!();
    println!("| runtime | median pull (s) |");
    println!("|---|---|");
    println!("| crius | {:.3} |", a.as_secs_f64());
    println!("| containerd 1.6.20 (CRI) | {:.3} |", b.as_secs_f64());
    println!(
        "| ratio containerd / crius | {:.2}x |",
        b.as_secs_f64() / a.as_secs_f64()
    );
    drop(reg);
    force_clean(&base);
}

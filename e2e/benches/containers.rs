//! Container start benchmark: pod + container create-and-start until the
//! container runs, p50 and p95 over N pods, for crius beside containerd 1.6
//! (Debian's, through its CRI socket, same image from a loopback registry) and
//! beside the floor (`runc run -d` of the same rootfs); and the RSS of one idle
//! crius-shim beside containerd-shim-runc-v2. Prints, never asserts.
//!
//! Run as root: `cargo build --release --bins && cargo bench -p crius-e2e --bench containers`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crius_e2e::bench;
use crius_e2e::images::*;
use crius_e2e::v1::image_service_client::ImageServiceClient;
use crius_e2e::v1::runtime_service_client::RuntimeServiceClient;
use crius_e2e::*;
use serde_json::json;

const PODS: usize = 50;

/// The deployable shim (`crates/shim/scripts/build-small.sh`) when built, else the
/// release (or debug) one.
fn shim_bin() -> PathBuf {
    let target = bin_dir().parent().unwrap().to_path_buf();
    let small = target.join("shim-small/x86_64-unknown-linux-gnu/release/crius-shim");
    if small.is_file() {
        small
    } else {
        bench::release_bin("crius-shim")
    }
}

async fn pull(ch: tonic::transport::Channel, image: &str) {
    pull_image(&mut ImageServiceClient::new(ch), image, None)
        .await
        .expect("pull");
}

/// Runs `PODS` pods with one `sleep` container each; returns the start latencies
/// and leaves everything running (the caller measures memory, then cleans up).
async fn start_pods(rt: &mut Rt, image: &str, tag: &str) -> (Vec<Duration>, Vec<(String, String)>) {
    let mut times = Vec::new();
    let mut ids = Vec::new();
    for i in 0..PODS {
        let pc = PodBuilder::new(&format!("{tag}-{i}"))
            .log_directory("")
            .build();
        let app = ContainerBuilder::new("app", image)
            .command(["/bin/sleep", "100000"])
            .no_log();
        let start = Instant::now();
        let pod = run_pod(rt, pc.clone()).await.expect("RunPodSandbox");
        let ctr = create_container(rt, &pod, app, Some(pc))
            .await
            .expect("CreateContainer");
        start_container(rt, &ctr).await.expect("StartContainer");
        times.push(start.elapsed());
        ids.push((pod, ctr));
    }
    (times, ids)
}

async fn cleanup(rt: &mut Rt, ids: &[(String, String)]) {
    for (pod, _) in ids {
        let _ = remove_pod(rt, pod).await;
    }
}

/// VmRSS in KiB of every process whose command line contains `needle`.
fn rss_of(needle: &str, exe_contains: &str) -> Vec<u64> {
    processes_mentioning(needle)
        .iter()
        .filter(|p| p.contains(exe_contains))
        .filter_map(|p| p.split(':').next().map(str::to_string))
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .collect()
}

fn median_kib(mut v: Vec<u64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort();
    v[v.len() / 2] as f64 / 1024.0
}

async fn crius(root: &Path, registry: &str, image: &str) -> (Vec<Duration>, f64) {
    let d = bench::start_criusd(root, registry, &shim_bin()).await;
    pull(d.channel.clone(), image).await;
    let mut rt = RuntimeServiceClient::new(d.channel.clone());
    let (times, ids) = start_pods(&mut rt, image, "crius").await;
    tokio::time::sleep(Duration::from_secs(2)).await; // let the shims go idle
    let rss = median_kib(rss_of(&root.display().to_string(), "crius-shim"));
    cleanup(&mut rt, &ids).await;
    drop(d);
    (times, rss)
}

async fn containerd(root: &Path, registry: &str, image: &str) -> (Vec<Duration>, f64) {
    let d = bench::start_containerd_bridged(root, registry).await;
    pull(d.channel.clone(), image).await;
    pull(d.channel.clone(), bench::PAUSE).await;
    let mut rt = RuntimeServiceClient::new(d.channel.clone());
    let (times, ids) = start_pods(&mut rt, image, "containerd").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = median_kib(rss_of(
        &d.socket.display().to_string(),
        "containerd-shim-runc-v2",
    ));
    cleanup(&mut rt, &ids).await;
    drop(d);
    (times, rss)
}

/// The floor: `runc run -d` of a bundle over the same busybox rootfs.
fn runc_floor(root: &Path) -> Vec<Duration> {
    let rootfs = root.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let tar = tar_of(&busybox_layer().unwrap());
    tar::Archive::new(tar.as_slice()).unpack(&rootfs).unwrap();
    let spec = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(root)
        .output()
        .unwrap();
    assert!(spec.status.success());
    let path = root.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cfg["process"]["args"] = json!(["/bin/sleep", "100000"]);
    cfg["process"]["terminal"] = json!(false);
    std::fs::write(&path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let state = root.join("runc-state");
    let mut times = Vec::new();
    for i in 0..PODS {
        let id = format!("crius-bench-floor-{}-{i}", std::process::id());
        let start = Instant::now();
        let st = Command::new("runc")
            .arg("--root")
            .arg(&state)
            .args(["run", "-d", "--bundle"])
            .arg(root)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        times.push(start.elapsed());
        assert!(st.success(), "runc run");
        let _ = Command::new("runc")
            .arg("--root")
            .arg(&state)
            .args(["delete", "-f", &id])
            .status();
    }
    force_clean(root);
    times
}

#[tokio::main]
async fn main() {
    let (base, reg) = bench::scratch("bench-ctr").await;
    bench::push_images(&reg, json!({"Cmd": ["/bin/sh"]})).await;
    let image = bench::IMAGE;
    let (a, a_rss) = crius(&base.join("crius"), &reg.host, image).await;
    let (b, b_rss) = containerd(&base.join("containerd"), &reg.host, image).await;
    let c = runc_floor(&base.join("floor"));
    let (a50, a95) = bench::p50_p95_ms(&a);
    let (b50, b95) = bench::p50_p95_ms(&b);
    let (c50, c95) = bench::p50_p95_ms(&c);
    println!(
        "pod + container create-and-start until running, {PODS} pods one after another (ms); shim: {}",
        shim_bin().display()
    );
    println!();
    println!("| runtime | p50 | p95 | idle shim RSS (MiB, median) |");
    println!("|---|---|---|---|");
    println!("| crius (built-in bridge) | {a50:.1} | {a95:.1} | {a_rss:.2} |");
    println!(
        "| containerd 1.6.20 (CNI bridge, pause container) | {b50:.1} | {b95:.1} | {b_rss:.2} |"
    );
    println!(
        "| floor: runc run -d (container only, no pod, no network) | {c50:.1} | {c95:.1} | - |"
    );
    println!();
    println!(
        "start: crius / containerd = {:.2}; shim RSS: crius / containerd = {:.2}",
        a50 / b50,
        a_rss / b_rss
    );
    drop(reg);
    force_clean(&base);
}

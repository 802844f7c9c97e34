//! Pod sandbox benchmark: RunPodSandbox + StopPodSandbox +
//! RemovePodSandbox per pod through the CRI socket, for crius with its built-in
//! bridge, crius with Debian's CNI plugins (bridge + host-local + portmap +
//! loopback), and containerd 1.6 (Debian's) with the same plugins. containerd's
//! sandbox also starts a pause container (a busybox image from a loopback
//! registry); crius needs none. Median and p95 over N pods; prints, never asserts.
//!
//! Run as root: `cargo build --release --bins && cargo bench -p crius-e2e --bench sandbox`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use crius_e2e::bench::{self, start_containerd};
use crius_e2e::v1::runtime_service_client::RuntimeServiceClient;
use crius_e2e::*;
use serde_json::json;

const PODS: usize = 30;

async fn lifecycle(rt: &mut Rt, tag: &str) -> Vec<Duration> {
    let mut out = Vec::new();
    for i in 0..PODS {
        let cfg = PodBuilder::new(&format!("{tag}-{i}")).log_directory("");
        let start = Instant::now();
        let id = run_pod(rt, cfg).await.expect("RunPodSandbox");
        remove_pod(rt, &id).await.expect("stop and remove");
        out.push(start.elapsed());
    }
    out
}

fn conflist(dir: &Path, net: &TestNetwork) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let bridge = format!("cb{}", &net.bridge[2..]);
    let c = json!({
        "cniVersion": "0.4.0",
        "name": format!("crius-bench-{}", &net.bridge[2..]),
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": net.subnet}]], "dataDir": dir.join("ipam").display().to_string()}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "loopback"}
        ]
    });
    std::fs::write(
        dir.join("10-bench.conflist"),
        serde_json::to_vec_pretty(&c).unwrap(),
    )
    .unwrap();
    bridge
}

async fn crius(root: &Path, network: &str) -> Vec<Duration> {
    let d = bench::spawn_criusd(&bench::release_bin("criusd"), root, network).await;
    lifecycle(&mut RuntimeServiceClient::new(d.channel.clone()), "crius").await
}

async fn containerd(root: &Path, registry: &str, cni_dir: &Path) -> Vec<Duration> {
    std::fs::create_dir_all(root).unwrap();
    let pause = format!("{registry}/bench/pause:3.6");
    let d = start_containerd(root, registry, registry, cni_dir, &pause).await;
    let ch = d.channel.clone();
    let mut rt = RuntimeServiceClient::new(ch.clone());
    // Pull the pause image first: the timing is of the sandbox, not of the pull.
    let mut img = crius_e2e::v1::image_service_client::ImageServiceClient::new(ch);
    pull_image(&mut img, &pause, None)
        .await
        .expect("pulling the pause image into containerd");
    lifecycle(&mut rt, "containerd").await
}

#[tokio::main]
async fn main() {
    let (base, reg) = bench::scratch("bench-sandbox").await;
    bench::pause_image("bench/pause").push(&reg).await.unwrap();

    let builtin = TestNetwork::unique();
    let bridge_net = format!(
        "[network]\nbackend = \"bridge\"\nbridge = \"{}\"\nsubnet = \"{}\"\nchain_prefix = \"{}\"\n",
        builtin.bridge, builtin.subnet, builtin.chain_prefix
    );
    let a = crius(&base.join("crius-bridge"), &bridge_net).await;
    let _ = builtin.remove();

    let cni_net = TestNetwork::unique();
    let cni_dir = base.join("cni-conf");
    let cni_bridge = conflist(&cni_dir, &cni_net);
    let b = crius(
        &base.join("crius-cni"),
        &format!(
            "[network]\nbackend = \"cni\"\ncni_conf_dir = \"{}\"\n",
            cni_dir.display()
        ),
    )
    .await;
    let c = containerd(&base.join("containerd"), &reg.host, &cni_dir).await;
    let _ = run_cmd("ip", &["link", "del", &cni_bridge]);

    let (a50, a95) = bench::p50_p95_ms(&a);
    let (b50, b95) = bench::p50_p95_ms(&b);
    let (c50, c95) = bench::p50_p95_ms(&c);
    println!(
        "RunPodSandbox + StopPodSandbox + RemovePodSandbox, {PODS} pods one after another (ms)"
    );
    println!();
    println!("| runtime, network | p50 | p95 | containerd p50 / this p50 |");
    println!("|---|---|---|---|");
    println!(
        "| crius, built-in bridge | {a50:.1} | {a95:.1} | {:.1}x |",
        c50 / a50
    );
    println!(
        "| crius, CNI plugins (bridge, host-local, portmap, loopback) | {b50:.1} | {b95:.1} | {:.1}x |",
        c50 / b50
    );
    println!(
        "| containerd 1.6.20, same CNI plugins, pause container | {c50:.1} | {c95:.1} | 1.0x |"
    );
    println!();
    println!(
        "built-in bridge vs CNI chain inside crius: {:.1}x",
        b50 / a50
    );
    drop(reg);
    force_clean(&base);
}

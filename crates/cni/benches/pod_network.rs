//! Pod network setup + teardown time: the built-in bridge backend against the CNI
//! plugin chain (Debian's bridge + host-local + portmap + loopback), on the same
//! machine in one run. Prints a table; asserts nothing about time. Root only.
//!
//! `cargo bench -p crius-cni --bench pod_network` (N from `CRIUS_BENCH_N`, default 30).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use crius_cni::{CniBackend, CniConfig, NetworkBackend};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn measure(
    backend: &dyn NetworkBackend,
    pod: &Pod,
    n: usize,
    ports: bool,
) -> (Duration, Duration, Duration) {
    let (mut up, mut down, mut both) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n + 1 {
        let hp = free_port();
        let maps = if ports { vec![tcp(hp, 80)] } else { vec![] };
        let mut req = pod.request(&maps);
        req.pod_id = format!("bench{i}{}", rand_hex(12));
        let t0 = Instant::now();
        backend.setup(&req).await.unwrap();
        let t1 = Instant::now();
        backend.teardown(&req).await.unwrap();
        let t2 = Instant::now();
        if i > 0 {
            // The first round creates the bridge and base rules: not per pod.
            up.push(t1 - t0);
            down.push(t2 - t1);
            both.push(t2 - t0);
        }
    }
    (median(up), median(down), median(both))
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    require_root();
    let n: usize = std::env::var("CRIUS_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let pod = Pod::new();

    let net = Net::new(false);
    let builtin = measure(net.backend.as_ref(), &pod, n, false).await;
    let builtin_ports = measure(net.backend.as_ref(), &pod, n, true).await;
    net.finish().await;

    let dir = tempfile::tempdir().unwrap();
    let bridge = format!("cr{}", rand_hex(8));
    let subnet = free_subnet_v4();
    std::fs::create_dir_all(dir.path().join("net.d")).unwrap();
    std::fs::write(
        dir.path().join("net.d/10-bench.conflist"),
        format!(
            r#"{{"cniVersion":"1.0.0","name":"crb-{bridge}","plugins":[
  {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":true,"hairpinMode":true,
    "ipam":{{"type":"host-local","ranges":[[{{"subnet":"{subnet}"}}]],
            "routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"{ipam}"}}}},
  {{"type":"portmap","capabilities":{{"portMappings":true}},"snat":true}},
  {{"type":"loopback"}}]}}"#,
            ipam = dir.path().join("ipam").display()
        ),
    )
    .unwrap();
    let cni = CniBackend::new(CniConfig {
        conf_dir: dir.path().join("net.d"),
        bin_dirs: vec!["/usr/lib/cni".into()],
        cache_dir: dir.path().join("cache"),
        ..CniConfig::default()
    });
    let chain = measure(&cni, &pod, n, false).await;
    let chain_ports = measure(&cni, &pod, n, true).await;
    let _ = run("ip", &["link", "del", &bridge]);

    println!("pod network setup + teardown, median of {n} pods (ms), one run on this machine");
    println!(
        "{:<44} {:>8} {:>9} {:>8} {:>9}",
        "backend", "setup", "teardown", "total", "vs chain"
    );
    for (name, (u, d, t), base) in [
        ("built-in bridge", builtin, chain.2),
        ("built-in bridge, 1 hostPort", builtin_ports, chain_ports.2),
        (
            "CNI chain bridge+host-local+portmap+loopback",
            chain,
            chain.2,
        ),
        ("CNI chain, 1 hostPort", chain_ports, chain_ports.2),
    ] {
        println!(
            "{name:<44} {:>8} {:>9} {:>8} {:>8.1}x",
            ms(u),
            ms(d),
            ms(t),
            base.as_secs_f64() / t.as_secs_f64()
        );
    }
    println!("containerd 1.6 with the same plugins: not installed on this machine, not measured");
}

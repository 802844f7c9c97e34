//! Pod sandbox benchmark (issue 5): RunPodSandbox + StopPodSandbox +
//! RemovePodSandbox per pod through the CRI socket, for crius with its built-in
//! bridge, crius with Debian's CNI plugins (bridge + host-local + portmap +
//! loopback), and containerd 1.6 (Debian's) with the same plugins. containerd's
//! sandbox also starts a pause container (a busybox image from a loopback
//! registry); crius needs none. Median and p95 over N pods; prints, never asserts.
//!
//! Run as root: `cargo build --release --bins && cargo bench -p crius-e2e --bench sandbox`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crius_e2e::images::*;
use crius_e2e::registry::*;
use crius_e2e::v1 as cri;
use crius_e2e::v1::runtime_service_client::RuntimeServiceClient;
use crius_e2e::*;
use serde_json::json;

const PODS: usize = 30;

type Rt = RuntimeServiceClient<tonic::transport::Channel>;

async fn lifecycle(rt: &mut Rt, tag: &str) -> Vec<Duration> {
    let mut out = Vec::new();
    for i in 0..PODS {
        let mut cfg = pod_config(&format!("{tag}-{i}"));
        cfg.log_directory = String::new();
        let start = Instant::now();
        let id = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(cfg),
                runtime_handler: String::new(),
            })
            .await
            .expect("RunPodSandbox")
            .into_inner()
            .pod_sandbox_id;
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .expect("stop");
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
            .expect("remove");
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

fn criusd() -> PathBuf {
    let release = bin_dir().parent().unwrap().join("release/criusd");
    if release.is_file() {
        release
    } else {
        criusd_bin()
    }
}

async fn crius(root: &Path, network: &str) -> Vec<Duration> {
    std::fs::create_dir_all(root).unwrap();
    let cfg = root.join("criusd.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{r}/state\"\nrun_dir = \"{r}/run\"\nsocket = \"{r}/run/crius.sock\"\nlog_level = \"warn\"\n{network}",
            r = root.display()
        ),
    )
    .unwrap();
    let log = root.join("criusd.log");
    let mut child = Command::new(criusd())
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut rt = RuntimeServiceClient::new(
        wait_for_cri(&root.join("run/crius.sock"), &mut child, &log).await,
    );
    let t = lifecycle(&mut rt, "crius").await;
    stop_child(child);
    t
}

async fn containerd(root: &Path, registry: &str, cni_dir: &Path) -> Vec<Duration> {
    std::fs::create_dir_all(root).unwrap();
    let pause = format!("{registry}/bench/pause:3.6");
    let (child, ch, _) = start_containerd(root, registry, registry, cni_dir, &pause).await;
    let mut rt = RuntimeServiceClient::new(ch.clone());
    // Pull the pause image first: the timing is of the sandbox, not of the pull.
    let mut img = crius_e2e::v1::image_service_client::ImageServiceClient::new(ch);
    pull_image(&mut img, &pause, None)
        .await
        .expect("pulling the pause image into containerd");
    let t = lifecycle(&mut rt, "containerd").await;
    stop_child(child);
    // Its roots (and what its shims mounted there) go with the base directory.
    t
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (
        ms(v[v.len() / 2]),
        ms(v[(v.len() * 95 / 100).min(v.len() - 1)]),
    )
}

#[tokio::main]
async fn main() {
    require_root();
    let base = unique_root("bench-sandbox");
    let reg = TestRegistry::start(&base.join("registry"), None)
        .await
        .unwrap();
    push_image(
        &reg,
        "bench/pause",
        "3.6",
        &[(tar_of(&busybox_layer().unwrap()), Comp::Gzip)],
        json!({"Entrypoint": ["/bin/sleep", "2147483647"]}),
        host_arch(),
        false,
    )
    .await
    .unwrap();

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

    let (a50, a95) = stats(a);
    let (b50, b95) = stats(b);
    let (c50, c95) = stats(c);
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

//! What the benchmarks share: release binaries, the two runtimes started side by side
//! on their own roots (crius with its built-in bridge, containerd 1.6 with the CNI
//! bridge plugin and a pause image), and the test images in a loopback registry.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::json;
use tonic::transport::Channel;

use crate::images::{Comp, busybox_layer, host_arch, push_image, tar_of};
use crate::registry::TestRegistry;
use crate::{TestNetwork, bin_dir, run_cmd, start_containerd, wait_for_cri};

/// The registry host name both runtimes mirror to the loopback registry.
pub const MIRRORED: &str = "bench.crius.invalid";
/// The busybox image, as both runtimes pull it.
pub const IMAGE: &str = "bench.crius.invalid/bench/busybox:v1";
/// containerd's pause image (the same busybox, sleeping).
pub const PAUSE: &str = "bench.crius.invalid/bench/pause:3.6";

/// The release build of `name` when there is one, else the debug one.
pub fn release_bin(name: &str) -> PathBuf {
    let release = bin_dir()
        .parent()
        .expect("a target directory")
        .join("release")
        .join(name);
    if release.is_file() {
        release
    } else {
        bin_dir().join(name)
    }
}

/// Pushes `bench/busybox:v1` (with `config` as its run config) and `bench/pause:3.6`.
pub async fn push_images(reg: &TestRegistry, config: serde_json::Value) {
    let layer = tar_of(&busybox_layer().expect("busybox layer"));
    push_image(
        reg,
        "bench/busybox",
        "v1",
        &[(layer.clone(), Comp::Gzip)],
        config,
        host_arch(),
        false,
    )
    .await
    .expect("pushing the busybox image");
    push_image(
        reg,
        "bench/pause",
        "3.6",
        &[(layer, Comp::Gzip)],
        json!({"Entrypoint": ["/bin/sleep", "2147483647"]}),
        host_arch(),
        false,
    )
    .await
    .expect("pushing the pause image");
}

/// A criusd on `root` with the built-in bridge, quiet logs, `shim` as its shim and the
/// loopback `registry` as the mirror of [`MIRRORED`].
pub async fn start_criusd(
    root: &Path,
    registry: &str,
    shim: &Path,
) -> (Child, Channel, TestNetwork) {
    std::fs::create_dir_all(root).expect("bench root");
    let net = TestNetwork::unique();
    let cfg = root.join("criusd.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{r}/state\"\nrun_dir = \"{r}/run\"\nsocket = \"{r}/run/crius.sock\"\nlog_level = \"warn\"\nshim_path = \"{shim}\"\n[images.mirrors]\n\"{MIRRORED}\" = [\"{registry}\"]\n[network]\nbackend = \"bridge\"\nbridge = \"{}\"\nsubnet = \"{}\"\nchain_prefix = \"{}\"\n",
            net.bridge,
            net.subnet,
            net.chain_prefix,
            r = root.display(),
            shim = shim.display(),
        ),
    )
    .expect("writing the bench config");
    let log = root.join("criusd.log");
    let mut child = Command::new(release_bin("criusd"))
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("criusd log"))
        .spawn()
        .expect("starting criusd");
    let ch = wait_for_cri(&root.join("run/crius.sock"), &mut child, &log).await;
    (child, ch, net)
}

/// containerd with the CNI bridge plugin on a unique bridge and subnet; returns the
/// child, its CRI channel, its socket and the bridge (delete it afterwards).
pub async fn start_containerd_bridged(
    root: &Path,
    registry: &str,
) -> (Child, Channel, PathBuf, String) {
    std::fs::create_dir_all(root).expect("bench root");
    let cni = root.join("cni");
    std::fs::create_dir_all(&cni).expect("cni dir");
    let net = TestNetwork::unique();
    let bridge = format!("cd{}", &net.bridge[2..]);
    std::fs::write(
        cni.join("10-bench.conflist"),
        serde_json::to_vec(&json!({
            "cniVersion": "0.4.0", "name": format!("bench-{}", &net.bridge[2..]),
            "plugins": [
                {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": net.subnet}]], "dataDir": root.join("ipam").display().to_string()}},
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "loopback"}
            ]
        }))
        .expect("conflist"),
    )
    .expect("writing the conflist");
    let (child, ch, sock) = start_containerd(root, MIRRORED, registry, &cni, PAUSE).await;
    (child, ch, sock, bridge)
}

/// Deletes a bridge [`start_containerd_bridged`] made.
pub fn delete_bridge(bridge: &str) {
    let _ = run_cmd("ip", &["link", "del", bridge]);
}

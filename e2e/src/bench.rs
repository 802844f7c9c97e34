//! What the benchmarks share: release binaries, the two runtimes started side by side
//! on their own roots (crius with its built-in bridge, containerd 1.6 with the CNI
//! bridge plugin and a pause image), and the test images in a loopback registry.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crius_cri_api::v1 as cri;
use crius_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use serde_json::json;
use tonic::transport::{Channel, Endpoint};

use crate::images::{Comp, ImageBuilder, busybox_layer, tar_of};
use crate::registry::TestRegistry;
use crate::{DEADLINE, TestNetwork, bin_dir, connect, run_cmd};

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

/// The start of a benchmark run: fails unless root; a unique scratch root (remove
/// it with [`force_clean`](crate::force_clean) at the end) and a loopback registry
/// under it.
pub async fn scratch(tag: &str) -> (PathBuf, TestRegistry) {
    crate::require_root();
    let base = crate::unique_root(tag);
    let reg = TestRegistry::start(&base.join("registry"), None)
        .await
        .expect("starting the benchmark's registry");
    (base, reg)
}

/// The `p`th percentile of `times`, in milliseconds: the time at `len * p / 100` in
/// sorted order.
pub fn percentile_ms(times: &[Duration], p: usize) -> f64 {
    let mut v = times.to_vec();
    v.sort();
    v[(v.len() * p / 100).min(v.len() - 1)].as_secs_f64() * 1000.0
}

/// The median and the 95th percentile of `times`, in milliseconds.
pub fn p50_p95_ms(times: &[Duration]) -> (f64, f64) {
    (percentile_ms(times, 50), percentile_ms(times, 95))
}

/// The pause image: busybox sleeping for ever, as `repo:3.6`.
pub fn pause_image(repo: &str) -> ImageBuilder {
    ImageBuilder::new(repo)
        .tag("3.6")
        .layer(tar_of(&busybox_layer().expect("busybox layer")), Comp::Gzip)
        .run_config(json!({"Entrypoint": ["/bin/sleep", "2147483647"]}))
}

/// Pushes `bench/busybox:v1` (with `config` as its run config) and `bench/pause:3.6`.
pub async fn push_images(reg: &TestRegistry, config: serde_json::Value) {
    ImageBuilder::new("bench/busybox")
        .layer(tar_of(&busybox_layer().expect("busybox layer")), Comp::Gzip)
        .run_config(config)
        .push(reg)
        .await
        .expect("pushing the busybox image");
    pause_image("bench/pause")
        .push(reg)
        .await
        .expect("pushing the pause image");
}

/// Starts `bin --config <config>`, its stdout dropped and its stderr in `log`.
fn spawn_logged(bin: &Path, config: &Path, log: &Path) -> std::io::Result<Child> {
    Command::new(bin)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
}

/// A runtime a benchmark started, with what it made on the host. Dropping it stops
/// the daemon (SIGTERM, SIGKILL after 20 s), removes its network (crius's bridge and
/// chains, or the CNI bridge) and force-cleans its root (processes naming it, such as
/// shims; mounts; files) — also when the benchmark panics part way, so that a failed
/// run leaves nothing running or mounted.
pub struct Started {
    child: Option<Child>,
    root: PathBuf,
    /// crius's built-in bridge network.
    net: Option<TestNetwork>,
    /// A bridge the CNI bridge plugin made.
    bridge: Option<String>,
    pub channel: Channel,
    /// The CRI socket.
    pub socket: PathBuf,
}

impl Started {
    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// crius's built-in bridge network, when it has one.
    pub fn net(&self) -> Option<&TestNetwork> {
        self.net.as_ref()
    }

    /// Names a bridge the CNI plugins of this runtime make, to delete with the rest.
    pub fn with_bridge(mut self, bridge: String) -> Started {
        self.bridge = Some(bridge);
        self
    }

    /// Stops the daemon now (the rest goes when this is dropped).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child);
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        self.stop();
        if let Some(net) = self.net.take() {
            let _ = net.remove();
        }
        if let Some(bridge) = self.bridge.take() {
            delete_bridge(&bridge);
        }
        crate::force_clean(&self.root);
    }
}

/// The criusd `bin` on `root` (state, run dir and socket under it, warnings only in
/// its log), with `extra` appended to its config; waits until it answers.
pub async fn spawn_criusd(bin: &Path, root: &Path, extra: &str) -> Started {
    std::fs::create_dir_all(root).expect("bench root");
    let cfg = root.join("criusd.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{r}/state\"\nrun_dir = \"{r}/run\"\nsocket = \"{r}/run/crius.sock\"\nlog_level = \"warn\"\n{extra}{nri}",
            r = root.display(),
            // No NRI socket on the node's path (a containerd beside it may serve it).
            nri = if extra.contains("[nri]") { "" } else { "\n[nri]\nenabled = false\n" },
        ),
    )
    .expect("writing the bench config");
    let log = root.join("criusd.log");
    let child = spawn_logged(bin, &cfg, &log).expect("starting criusd");
    Started::answering(child, root, root.join("run/crius.sock"), &log).await
}

impl Started {
    /// The daemon `child` on `root`, once it answers on `socket` (its log in the
    /// panic when it does not).
    async fn answering(child: Child, root: &Path, socket: PathBuf, log: &Path) -> Started {
        let mut started = Started {
            child: Some(child),
            root: root.to_path_buf(),
            net: None,
            bridge: None,
            channel: Endpoint::from_static("http://unused").connect_lazy(),
            socket,
        };
        if let Some(child) = started.child.as_mut() {
            started.channel = wait_for_cri(&started.socket, child, log).await;
        }
        started
    }
}

/// A release criusd on `root` with the built-in bridge, `shim` as its shim and the
/// loopback `registry` as the mirror of [`MIRRORED`].
pub async fn start_criusd(root: &Path, registry: &str, shim: &Path) -> Started {
    start_criusd_bin(&release_bin("criusd"), root, registry, shim).await
}

/// [`start_criusd`] with the criusd executable `bin`.
pub async fn start_criusd_bin(bin: &Path, root: &Path, registry: &str, shim: &Path) -> Started {
    start_criusd_bin_and(bin, root, registry, shim, "").await
}

/// [`start_criusd_bin`] with `extra` appended to the config.
pub async fn start_criusd_bin_and(
    bin: &Path,
    root: &Path,
    registry: &str,
    shim: &Path,
    extra: &str,
) -> Started {
    let net = TestNetwork::unique();
    let config = format!(
        "shim_path = \"{shim}\"\n[images.mirrors]\n\"{MIRRORED}\" = [\"{registry}\"]\n[network]\nbackend = \"bridge\"\nbridge = \"{}\"\nsubnet = \"{}\"\nchain_prefix = \"{}\"\n{extra}",
        net.bridge,
        net.subnet,
        net.chain_prefix,
        shim = shim.display(),
    );
    let mut started = spawn_criusd(bin, root, &config).await;
    started.net = Some(net);
    started
}

/// containerd with the CNI bridge plugin on a unique bridge and subnet (deleted with
/// the rest when the result is dropped).
pub async fn start_containerd_bridged(root: &Path, registry: &str) -> Started {
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
    start_containerd(root, MIRRORED, registry, &cni, PAUSE)
        .await
        .with_bridge(bridge)
}

/// Deletes a bridge [`start_containerd_bridged`] made.
pub fn delete_bridge(bridge: &str) {
    let _ = run_cmd("ip", &["link", "del", bridge]);
}

/// Waits until a CRI server started as `child` answers Version on `sock`; panics
/// with its log if it exits or does not answer within [`DEADLINE`].
pub async fn wait_for_cri(sock: &Path, child: &mut Child, log: &Path) -> Channel {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            panic!(
                "daemon exited {st}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if let Ok(ch) = connect(sock).await {
            if RuntimeServiceClient::new(ch.clone())
                .version(cri::VersionRequest::default())
                .await
                .is_ok()
            {
                return ch;
            }
        }
        assert!(
            start.elapsed() < DEADLINE,
            "daemon did not answer: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERMs a daemon and waits for it (SIGKILL after 20 s).
pub fn stop_child(mut child: Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let start = Instant::now();
    while matches!(child.try_wait(), Ok(None)) {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Debian's containerd for side-by-side benchmarks: its own roots and sockets under
/// `root`; its CRI plugin pulls images of `mirror_host` from the loopback `registry`,
/// runs Debian's CNI plugins with the configs in `cni_conf_dir`, uses
/// `sandbox_image` as its pause image, and restricts oom_score_adj (this host's root
/// lacks CAP_SYS_RESOURCE).
pub async fn start_containerd(
    root: &Path,
    mirror_host: &str,
    registry: &str,
    cni_conf_dir: &Path,
    sandbox_image: &str,
) -> Started {
    std::fs::create_dir_all(root).expect("containerd root");
    let cfg = root.join("containerd.toml");
    let sock = root.join("containerd.sock");
    let config = format!(
        r#"version = 2
root = "{r}/root"
state = "{r}/state"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = "{sock}.debug"
[plugins."io.containerd.grpc.v1.cri"]
  disable_apparmor = true
  restrict_oom_score_adj = true
  sandbox_image = "{sandbox_image}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{mirror_host}"]
    endpoint = ["http://{registry}"]
"#,
        r = root.display(),
        sock = sock.display(),
        cni = cni_conf_dir.display()
    );
    std::fs::write(&cfg, config).expect("writing the containerd config");
    let log = root.join("containerd.log");
    let child = spawn_logged(Path::new("containerd"), &cfg, &log)
        .expect("containerd (Debian's containerd package) must be installed");
    Started::answering(child, root, sock, &log).await
}

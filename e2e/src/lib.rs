//! The crius end-to-end harness: a real criusd on unique temporary roots, driven
//! over its socket by a tonic CRI client.
//!
//! Every [`Daemon`] gets its own state dir, run dir, socket and log under one
//! unique root, so tests run side by side and next to a developer's own daemon.
//! [`Daemon::finish`] stops the daemon and asserts that nothing it made is left:
//! no mount under the root, no pod directory, no process mentioning the root, no
//! stray file. Dropping a `Daemon` (a failed test) kills it and cleans up by force.
//!
//! The tests need root and the binaries built by `cargo build --workspace --bins`;
//! without either they fail loudly, never skip.
// Test harness code: a failed expectation is a failed test, so panics are the point.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

pub use k8s_cri::v1;

pub mod bench;
pub mod images;
pub mod registry;
pub mod soak;
pub mod stream;

/// Default deadline for things that should happen promptly.
pub const DEADLINE: Duration = Duration::from_secs(30);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Fails the test unless it runs as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the crius e2e tests need root (they create namespaces, mounts and sockets)"
    );
}

/// The directory holding the workspace's built binaries (criusd, crius-shim).
pub fn bin_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a parent");
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    };
    let criusd = dir.join("criusd");
    assert!(
        criusd.is_file(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        criusd.display()
    );
    dir
}

/// Path of the criusd binary.
pub fn criusd_bin() -> PathBuf {
    bin_dir().join("criusd")
}

/// A unique scratch root for one test.
pub fn unique_root(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let mut rnd = [0u8; 4];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut rnd));
    let root = PathBuf::from(format!(
        "/tmp/crius-e2e-{tag}-{}-{n}-{:02x}{:02x}{:02x}{:02x}",
        std::process::id(),
        rnd[0],
        rnd[1],
        rnd[2],
        rnd[3]
    ));
    std::fs::create_dir_all(&root).expect("creating the test root");
    root
}

/// Polls `check` until it returns `Some`, or fails after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Connects a gRPC channel to a unix socket.
pub async fn connect(socket: &Path) -> Result<Channel> {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .context("connecting to the CRI socket")
}

/// The pod network a test daemon owns: a unique bridge, subnet and chain prefix.
#[derive(Debug, Clone)]
pub struct TestNetwork {
    pub bridge: String,
    pub subnet: String,
    pub chain_prefix: String,
}

static SUBNETS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    u32::from_le_bytes(b)
}

impl TestNetwork {
    /// Unique names and a /24 that no interface here uses.
    pub fn unique() -> TestNetwork {
        let used = run_cmd("ip", &["-o", "-4", "addr"]).unwrap_or_default();
        let mut taken = SUBNETS.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let r = random_u32();
            let subnet = format!("10.{}.{}.0/24", 200 + (r % 50), (r >> 8) % 256);
            let prefix3 = subnet.trim_end_matches("0/24").to_string();
            if used.contains(&format!(" {prefix3}")) || taken.contains(&subnet) {
                continue;
            }
            taken.push(subnet.clone());
            let tag = format!("{:08x}", random_u32());
            return TestNetwork {
                bridge: format!("ct{tag}"),
                subnet,
                chain_prefix: format!("CT{}", tag.to_uppercase()),
            };
        }
    }

    /// The bridge backend configuration this network corresponds to.
    pub fn bridge_config(&self) -> crius_cni::BridgeConfig {
        crius_cni::BridgeConfig {
            bridge: self.bridge.clone(),
            subnet: self.subnet.parse().expect("subnet"),
            chain_prefix: self.chain_prefix.clone(),
            ..Default::default()
        }
    }

    /// What of this network is left that only pods own: veths on the bridge and
    /// per-pod iptables chains.
    pub fn pod_leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        let veths =
            run_cmd("ip", &["-o", "link", "show", "master", &self.bridge]).unwrap_or_default();
        out.extend(
            veths
                .lines()
                .map(|l| format!("veth on {}: {l}", self.bridge)),
        );
        for table in ["nat", "filter"] {
            let rules = run_cmd("iptables-save", &["-t", table]).unwrap_or_default();
            let base = [
                format!(":{}-HOSTPORTS ", self.chain_prefix),
                format!(":{}-POSTROUTING ", self.chain_prefix),
                format!(":{}-FORWARD ", self.chain_prefix),
            ];
            out.extend(
                rules
                    .lines()
                    .filter(|l| l.starts_with(&format!(":{}-", self.chain_prefix)))
                    .filter(|l| !base.iter().any(|b| l.starts_with(b.as_str())))
                    .map(|l| format!("pod chain in {table}: {l}")),
            );
        }
        out
    }

    /// Removes the bridge and every chain of the prefix, then says what is left.
    pub fn remove(&self) -> Vec<String> {
        let cfg = self.bridge_config();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let leases: std::sync::Arc<dyn crius_cni::LeaseStore> =
                    std::sync::Arc::new(crius_cni::MemoryLeaseStore::default());
                match crius_cni::BridgeBackend::new(cfg, leases) {
                    Ok(b) => b.remove_host_network().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            })
        })
        .join();
        let mut out = Vec::new();
        if let Ok(Err(e)) = done {
            out.push(format!("removing the test network: {e}"));
        }
        if run_cmd("ip", &["link", "show", &self.bridge]).is_ok() {
            out.push(format!("bridge {} still exists", self.bridge));
        }
        for table in ["nat", "filter"] {
            let rules = run_cmd("iptables-save", &["-t", table]).unwrap_or_default();
            out.extend(
                rules
                    .lines()
                    .filter(|l| l.contains(&format!("{}-", self.chain_prefix)))
                    .map(|l| format!("{table}: {l}")),
            );
        }
        out
    }
}

/// A running criusd on unique roots.
pub struct Daemon {
    pub root: PathBuf,
    pub net: TestNetwork,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    pub rt: RuntimeServiceClient<Channel>,
    pub img: ImageServiceClient<Channel>,
    finished: bool,
}

/// How to start a test daemon.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Config lines appended to the test config; `{root}` becomes the test root.
    pub extra_config: String,
    /// A smaller subnet than the test network's /24 (it must lie inside it).
    pub subnet: Option<String>,
}

impl Daemon {
    /// Starts a daemon with the default test configuration.
    pub async fn start(tag: &str) -> Daemon {
        Daemon::start_with(tag, Options::default()).await
    }

    /// Starts a daemon with extra configuration.
    pub async fn start_with(tag: &str, opts: Options) -> Daemon {
        require_root();
        let root = unique_root(tag);
        let config_path = root.join("criusd.toml");
        let mut net = TestNetwork::unique();
        if let Some(sub) = &opts.subnet {
            net.subnet = sub.replace("{net}", net.subnet.trim_end_matches("0/24"));
        }
        let extra = opts
            .extra_config
            .replace("{root}", &root.display().to_string());
        let network = if extra.contains("[network]") {
            String::new()
        } else {
            std::fs::create_dir_all(root.join("cni-conf")).expect("cni conf dir");
            format!(
                "[network]\nbridge = \"{}\"\nsubnet = \"{}\"\nchain_prefix = \"{}\"\ncni_conf_dir = \"{}/cni-conf\"\n",
                net.bridge,
                net.subnet,
                net.chain_prefix,
                root.display()
            )
        };
        // Top-level keys first: everything after a [table] header belongs to it.
        let split = if extra.starts_with('[') {
            Some(0)
        } else {
            extra.find("\n[").map(|i| i + 1)
        };
        let (top, tables) = match split {
            Some(i) => (extra[..i].to_string(), extra[i..].to_string()),
            None => (extra.clone(), String::new()),
        };
        let config = format!(
            "state_dir = \"{root}/state\"\nrun_dir = \"{root}/run\"\nsocket = \"{root}/run/crius.sock\"\nlog_level = \"info,crius_cri_server=debug,criusd=debug\"\n{top}\n{network}\n{tables}\n",
            root = root.display(),
        );
        std::fs::write(&config_path, config).expect("writing the test config");
        let log_path = root.join("criusd.log");
        let mut d = Daemon {
            root,
            net,
            config_path,
            log_path,
            child: None,
            rt: RuntimeServiceClient::new(Endpoint::from_static("http://unused").connect_lazy()),
            img: ImageServiceClient::new(Endpoint::from_static("http://unused").connect_lazy()),
            finished: false,
        };
        d.spawn().await.expect("starting criusd");
        d
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join("run/crius.sock")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Starts criusd (again) on this daemon's roots and waits until it answers.
    pub async fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let child = Command::new(criusd_bin())
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning criusd")?;
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("criusd exited at start ({status}):\n{}", self.log());
                }
            }
            if let Ok(channel) = connect(&self.socket()).await {
                let mut rt = RuntimeServiceClient::new(channel.clone());
                if rt.version(cri::VersionRequest::default()).await.is_ok() {
                    self.rt = rt;
                    self.img = ImageServiceClient::new(channel);
                    return Ok(());
                }
            }
            if start.elapsed() > DEADLINE {
                bail!("criusd did not answer within {DEADLINE:?}:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILLs the daemon, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERMs the daemon and waits for it to exit.
    pub async fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("criusd exited with {status} on SIGTERM:\n{}", self.log());
                }
                return Ok(());
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                bail!("criusd did not exit within {DEADLINE:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills and restarts the daemon on the same roots.
    pub async fn crash_and_restart(&mut self) {
        self.kill();
        self.spawn().await.expect("restarting criusd");
    }

    /// Stops the daemon and asserts that nothing it created is left behind.
    pub async fn finish(mut self) {
        self.stop().await.expect("stopping criusd");
        let mut leaks = leaks(&self.root);
        leaks.extend(self.net.pod_leftovers());
        leaks.extend(self.net.remove());
        assert!(
            leaks.is_empty(),
            "left behind after the test:\n{}\n--- criusd log ---\n{}",
            leaks.join("\n"),
            self.log()
        );
        self.finished = true;
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Everything under `root` that a clean daemon should not have left: mounts, pod
/// directories, processes whose command line or cwd mentions the root, files other
/// than the store, the config and the log.
pub fn leaks(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let root_s = root.to_string_lossy().into_owned();
    for m in mounts_under(root) {
        out.push(format!("mount: {m}"));
    }
    for p in processes_mentioning(&root_s) {
        out.push(format!("process: {p}"));
    }
    let allowed: Vec<PathBuf> = [
        "criusd.toml",
        "criusd.log",
        "state",
        "state/store.redb",
        "state/snapshots/lock",
        "run",
        "run/pods",
        "run/containers",
        "run/s",
        "run/streams",
        "cni-conf",
    ]
    .iter()
    .map(|p| root.join(p))
    .collect();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.starts_with(root.join("fixtures")) {
                continue;
            }
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if is_dir {
                stack.push(path.clone());
            }
            // The image stores keep their (empty) directory layout.
            let store_dir = is_dir
                && (path.starts_with(root.join("state/content"))
                    || path.starts_with(root.join("state/snapshots"))
                    || path.starts_with(root.join("state/cni")));
            if !allowed.contains(&path) && !store_dir {
                out.push(format!("file: {}", path.display()));
            }
        }
    }
    out
}

/// Mount points under `root`, from /proc/self/mountinfo.
pub fn mounts_under(root: &Path) -> Vec<String> {
    let root_s = root.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|mp| mp.starts_with(&root_s))
        .collect()
}

/// Processes (other than this one) whose command line or cwd mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) || name == me {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let cwd = std::fs::read_link(e.path().join("cwd"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if cmdline.contains(needle) || cwd.starts_with(needle) {
            out.push(format!("{name}: {}", cmdline.trim()));
        }
    }
    out
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if std::thread::panicking() {
            eprintln!(
                "--- criusd log ({}) ---\n{}",
                self.log_path.display(),
                self.log()
            );
        }
        self.kill();
        let _ = self.net.remove();
        force_clean(&self.root);
    }
}

/// Best-effort removal of everything under `root`: processes whose command line
/// names it (shims of a failed test outlive its daemon), then mounts (deepest
/// first), then files.
pub fn force_clean(root: &Path) {
    let kill = |pid: i32| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    };
    for p in processes_mentioning(&root.to_string_lossy()) {
        if let Some(pid) = p.split(':').next().and_then(|n| n.parse::<i32>().ok()) {
            kill(pid);
        }
    }
    // Container processes name nothing of the root: find them by their cgroup
    // (`crius-<container id>`), kill them, and remove the cgroups.
    let ids: Vec<String> = std::fs::read_dir(root.join("run/containers"))
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if !ids.is_empty() {
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cg = std::fs::read_to_string(p.path().join("cgroup")).unwrap_or_default();
                if ids.iter().any(|id| cg.contains(&format!("crius-{id}"))) {
                    kill(pid);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") {
            for c in ctrls.flatten() {
                for id in &ids {
                    let _ = std::fs::remove_dir(c.path().join("crius").join(format!("crius-{id}")));
                }
            }
        }
    }
    let mut mounts = mounts_under(root);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(root);
}

/// A pod config shaped like crictl's example.
pub fn pod_config(name: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            namespace: "default".to_string(),
            uid: format!("uid-{name}"),
            attempt: 1,
        }),
        hostname: name.chars().take(60).collect(),
        log_directory: "/tmp".to_string(),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

/// RunPodSandbox with the default handler.
pub async fn run_pod(
    rt: &mut RuntimeServiceClient<Channel>,
    config: cri::PodSandboxConfig,
) -> Result<String, tonic::Status> {
    rt.run_pod_sandbox(cri::RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

/// PullImage; returns the image ref (id).
pub async fn pull_image(
    img: &mut ImageServiceClient<Channel>,
    image: &str,
    auth: Option<cri::AuthConfig>,
) -> Result<String, tonic::Status> {
    img.pull_image(cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        auth,
        sandbox_config: None,
    })
    .await
    .map(|r| r.into_inner().image_ref)
}

/// Removes an image by its id, as the kubelet does: every reference to it goes.
pub async fn remove_image_by_id(img: &mut ImageServiceClient<Channel>, image: &str) {
    let id = img
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
        .image
        .expect("the image exists")
        .id;
    img.remove_image(cri::RemoveImageRequest {
        image: Some(cri::ImageSpec {
            image: id,
            ..Default::default()
        }),
    })
    .await
    .expect("RemoveImage");
}

/// Stops and removes a pod.
pub async fn remove_pod(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> Result<()> {
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id.to_string(),
    })
    .await
    .map_err(|s| anyhow!("StopPodSandbox {id}: {s}"))?;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.to_string(),
    })
    .await
    .map_err(|s| anyhow!("RemovePodSandbox {id}: {s}"))?;
    Ok(())
}

/// PodSandboxStatus.
pub async fn pod_status(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    verbose: bool,
) -> Result<cri::PodSandboxStatusResponse, tonic::Status> {
    rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
        pod_sandbox_id: id.to_string(),
        verbose,
    })
    .await
    .map(|r| r.into_inner())
}

/// ListPodSandbox with a filter.
pub async fn list_pods(
    rt: &mut RuntimeServiceClient<Channel>,
    filter: Option<cri::PodSandboxFilter>,
) -> Vec<cri::PodSandbox> {
    rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter })
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
}

/// Runs a command and returns its stdout, failing on a non-zero exit.
pub fn run_cmd(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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
/// lacks CAP_SYS_RESOURCE). Returns the process, a channel to its CRI socket, and the
/// socket's path.
pub async fn start_containerd(
    root: &Path,
    mirror_host: &str,
    registry: &str,
    cni_conf_dir: &Path,
    sandbox_image: &str,
) -> (Child, Channel, PathBuf) {
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
    let mut child = Command::new("containerd")
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("containerd log"))
        .spawn()
        .expect("containerd (Debian's containerd package) must be installed");
    let channel = wait_for_cri(&sock, &mut child, &log).await;
    (child, channel, sock)
}

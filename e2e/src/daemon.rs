//! A criusd per test on unique roots, and the checks that it left nothing behind.
//!
//! Every [`Daemon`] gets its own state dir, run dir, socket and log under one
//! unique root, so tests run side by side and next to a developer's own daemon.
//! [`Daemon::finish`] stops the daemon and asserts that nothing it made is left:
//! no mount under the root, no pod directory, no process mentioning the root, no
//! stray file. Dropping a `Daemon` (a failed test) kills it and cleans up by force.
//! Test-owned files (wrappers, logs, host directories to mount) go under
//! `<root>/fixtures`, which the leak check passes over.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use crius_cri_api::v1 as cri;
use crius_cri_api::v1::image_service_client::ImageServiceClient;
use crius_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use crius_testkit::Runtime;
use tonic::transport::{Channel, Endpoint};

use crate::{DEADLINE, TestNetwork, connect, criusd_bin, require_root, unique_root};

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
    /// The daemon binary (criusd unless the options named another).
    binary: PathBuf,
    /// Extra environment of the daemon process.
    env: Vec<(String, String)>,
}

/// How to start a test daemon.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Config lines appended to the test config; `{root}` becomes the test root.
    pub extra_config: String,
    /// A smaller subnet than the test network's /24 (it must lie inside it); `{net}`
    /// becomes the /24's first three octets and their dots (`10.201.7.`).
    pub subnet: Option<String>,
    /// The runtime the tests' pods run under. For crun, the daemon's `crun` handler
    /// runs it through [`Runtime::executable_in`]'s wrapper (in `<root>/fixtures`).
    pub runtime: Runtime,
    /// Another daemon binary than `criusd` (e.g. `criusd-failpoints`), next to it.
    pub binary: Option<String>,
    /// Extra environment variables of the daemon.
    pub env: Vec<(String, String)>,
    /// A directory of CNI plugins searched before Debian's (`/usr/lib/cni`).
    pub cni_bin_dir: Option<PathBuf>,
    /// `cni_plugin_timeout_secs`, when not the default.
    pub cni_timeout_secs: Option<u64>,
}

impl Options {
    /// The default test configuration plus `extra` (see [`Options::extra_config`]).
    pub fn config(extra: impl Into<String>) -> Options {
        Options {
            extra_config: extra.into(),
            ..Options::default()
        }
    }

    /// The test network's subnet narrowed to `subnet` (see [`Options::subnet`]).
    pub fn with_subnet(mut self, subnet: &str) -> Options {
        self.subnet = Some(subnet.to_string());
        self
    }

    /// Pods run under `runtime` (see [`Options::runtime`]).
    pub fn with_runtime(mut self, runtime: Runtime) -> Options {
        self.runtime = runtime;
        self
    }
}

impl Daemon {
    /// Starts a daemon with the default test configuration.
    pub async fn start(tag: &str) -> Daemon {
        Daemon::start_with(tag, Options::default()).await
    }

    /// Starts a daemon with extra configuration.
    pub async fn start_with(tag: &str, opts: Options) -> Daemon {
        require_root();
        // The root's name says the runtime when it is not the default.
        let root = match opts.runtime {
            Runtime::Runc => unique_root(tag),
            other => unique_root(&format!("{tag}-{other}")),
        };
        let mut net = TestNetwork::unique();
        if let Some(sub) = &opts.subnet {
            net.subnet = sub.replace("{net}", net.subnet.trim_end_matches("0/24"));
        }
        let config_path = write_config(&root, &net, &opts);
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
            binary: match &opts.binary {
                Some(name) => criusd_bin().with_file_name(name),
                None => criusd_bin(),
            },
            env: opts.env.clone(),
        };
        assert!(
            d.binary.is_file(),
            "{} is missing: build it first (see README's test command)",
            d.binary.display()
        );
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
        let child = Command::new(&self.binary)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
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

    /// Starts `binary` instead from the next [`spawn`](Self::spawn) on: an upgrade
    /// (the daemon stopped, then started from a newly installed file).
    pub fn set_binary(&mut self, binary: PathBuf) {
        self.binary = binary;
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

/// Writes `<root>/criusd.toml`: the test roots, the test network (unless the extra
/// config has its own `[network]`), the runtime's handler, then `opts`' extra config;
/// returns its path.
fn write_config(root: &Path, net: &TestNetwork, opts: &Options) -> PathBuf {
    let mut extra = opts.extra_config.clone();
    if !extra.is_empty() && !extra.ends_with('\n') {
        extra.push('\n');
    }
    if opts.runtime == Runtime::Crun {
        let crun = opts
            .runtime
            .executable_in(&root.join("fixtures"))
            .expect("crun for the tests (install Debian's crun)");
        extra.push_str(&format!(
            "[runtimes.runc]\npath = \"runc\"\n[runtimes.crun]\npath = \"{}\"\n",
            crun.display()
        ));
    }
    // Registry host directories of the test's own: a node's /etc/containerd/certs.d
    // must not redirect the tests' pulls.
    if !extra.contains("config_path") {
        extra = match extra.find("[images]\n") {
            Some(i) => format!(
                "{}[images]\nconfig_path = \"{{root}}/certs.d\"\n{}",
                &extra[..i],
                &extra[i + "[images]\n".len()..]
            ),
            None => format!("{extra}[images]\nconfig_path = \"{{root}}/certs.d\"\n"),
        };
    }
    // NRI on a socket of the test's own (a node's plugins must not see test pods);
    // a test that sets up NRI itself gives the whole [nri] table.
    if !extra.contains("[nri]") {
        extra.push_str("[nri]\nsocket_path = \"{root}/fixtures/nri.sock\"\nplugin_path = \"{root}/fixtures/nri-plugins\"\nplugin_config_path = \"{root}/fixtures/nri-conf\"\n");
    }
    let extra = extra.replace("{root}", &root.display().to_string());
    let network = if extra.contains("[network]") {
        String::new()
    } else {
        std::fs::create_dir_all(root.join("cni-conf")).expect("cni conf dir");
        let bins = match &opts.cni_bin_dir {
            Some(dir) => format!("cni_bin_dirs = [\"{}\", \"/usr/lib/cni\"]\n", dir.display()),
            None => String::new(),
        };
        let bins = match opts.cni_timeout_secs {
            Some(t) => format!("{bins}cni_plugin_timeout_secs = {t}\n"),
            None => bins,
        };
        format!(
            "[network]\nbridge = \"{}\"\nsubnet = \"{}\"\nchain_prefix = \"{}\"\ncni_conf_dir = \"{}/cni-conf\"\n{bins}",
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
    let path = root.join("criusd.toml");
    std::fs::write(&path, config).expect("writing the test config");
    path
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

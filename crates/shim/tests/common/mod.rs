//! Test fixtures: a busybox rootfs and OCI bundle in a unique temp dir, a shim started
//! through the client, and a check that nothing is left behind.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crius_shim::client::{self, ProcessStatus, Shim, StartOptions};
pub use crius_testkit::Runtime;
use serde_json::json;

/// The shim under test: this build's, or `CRIUS_SHIM_BIN` (e.g. a release build, to
/// measure its memory).
pub fn shim_bin() -> PathBuf {
    std::env::var_os("CRIUS_SHIM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_crius-shim")))
}

/// Fails loudly when not root: these tests drive real runc/crun.
pub fn require_root() {
    // SAFETY-free check: /proc/self/status Uid line.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap();
    assert_eq!(uid, "0", "crius-shim integration tests must run as root");
}

/// The runtime binary to hand the shim (see [`Runtime::executable_in`]: crun runs
/// through a wrapper written into `dir`).
pub fn runtime_for(runtime: Runtime, dir: &Path) -> PathBuf {
    runtime
        .executable_in(dir)
        .unwrap_or_else(|e| panic!("the {runtime} runtime for the tests: {e}"))
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub id: String,
    pub runtime: PathBuf,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

pub const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "printf", "head", "tr", "seq", "true", "false", "ls", "kill",
    "yes", "dd", "tty", "stty",
];

impl Fixture {
    /// A bundle whose container runs `args`.
    pub fn new(runtime: Runtime, args: &[&str]) -> Fixture {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("crius-shim-t")
            .tempdir_in("/tmp")
            .unwrap();
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let id = format!(
            "crius-test-{}-{}-{}",
            std::process::id(),
            n,
            dir.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace('.', "")
        );
        let rootfs = dir.path().join("bundle/rootfs");
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).unwrap();
        }
        let runtime = runtime_for(runtime, dir.path());
        let fx = Fixture { dir, id, runtime };
        fx.write_config(args, false);
        fx
    }

    /// A bundle whose container runs `sh -c <script>` (busybox's shell).
    pub fn sh(runtime: Runtime, script: &str) -> Fixture {
        Fixture::new(runtime, &["sh", "-c", script])
    }

    pub fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("ctr.log")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("s.sock")
    }

    pub fn cgroup_name(&self) -> String {
        self.id.clone()
    }

    pub fn write_config(&self, args: &[&str], terminal: bool) {
        let caps = json!(crius_spec::DEFAULT_CAPABILITIES);
        let spec = json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": terminal,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/bin", "HOME=/"],
                "cwd": "/",
                "capabilities": {
                    "bounding": caps, "effective": caps, "permitted": caps
                },
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": false},
            "hostname": "crius-test",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                 "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]}
            ],
            "linux": {
                "cgroupsPath": format!("/{}", self.cgroup_name()),
                "namespaces": [
                    {"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                    {"type": "mount"}, {"type": "network"}
                ],
                "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
                "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]
            }
        });
        std::fs::write(
            self.bundle().join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
    }

    /// Edits config.json in place.
    pub fn patch_config(&self, f: impl FnOnce(&mut serde_json::Value)) {
        let path = self.bundle().join("config.json");
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    }

    pub fn start_options(&self) -> StartOptions {
        StartOptions {
            shim_binary: shim_bin(),
            id: self.id.clone(),
            bundle: self.bundle(),
            socket: self.socket(),
            runtime: self.runtime.clone(),
            runtime_root: Some(self.dir.path().join("rt")),
            log_path: Some(self.log_path()),
            exit_file: Some(self.dir.path().join("exit.json")),
            shim_log: Some(self.dir.path().join("shim.log")),
        }
    }

    pub fn start_shim(&self) -> Shim {
        client::start(&self.start_options()).unwrap()
    }

    /// A FIFO `stdin.fifo` in the test's directory, for a process's stdin.
    pub fn stdin_fifo(&self) -> PathBuf {
        let path = self.dir.path().join("stdin.fifo");
        mkfifo(&path);
        path
    }

    /// A shim with the container created (its output to the CRI log) and started.
    pub fn start_running(&self) -> Shim {
        let shim = self.start_shim();
        shim.create(&client::ProcessIo::default()).unwrap();
        shim.start("").unwrap();
        shim
    }

    /// Deletes the exited container, shuts the shim down, and checks that nothing is
    /// left ([`assert_clean`](Self::assert_clean)).
    pub fn delete_and_clean(self, shim: &Shim) {
        shim.delete("").unwrap();
        shim.shutdown(false).unwrap();
        self.assert_clean();
    }

    /// Checks that no process, mount or cgroup of this test is left; then removes the dir.
    pub fn assert_clean(self) {
        let marker = self.dir.path().to_string_lossy().into_owned();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let procs = procs_mentioning(&marker);
            let cgroups = cgroups_named(&self.cgroup_name());
            let mounts = std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .lines()
                .filter(|l| l.contains(&marker))
                .map(str::to_string)
                .collect::<Vec<_>>();
            if procs.is_empty() && cgroups.is_empty() && mounts.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                panic!("left behind: processes {procs:?}, cgroups {cgroups:?}, mounts {mounts:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let path = self.dir.path().to_owned();
        std::fs::remove_dir_all(&path).unwrap();
        assert!(!path.exists());
    }
}

impl Drop for Fixture {
    /// Best effort after a failed test: stop the container and the shim so nothing
    /// outlives the test run.
    fn drop(&mut self) {
        if client::is_alive(&self.socket()) {
            if let Ok(shim) = client::connect(&self.socket(), &self.id) {
                let _ = shim.kill("", 9, true);
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline
                    && shim
                        .state("")
                        .map(|s| s.status != ProcessStatus::Stopped)
                        .unwrap_or(false)
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = shim.delete("");
                let _ = shim.shutdown(true);
            }
        }
        if self.dir.path().join("rt").exists() {
            let _ = std::process::Command::new(&self.runtime)
                .arg("--root")
                .arg(self.dir.path().join("rt"))
                .args(["delete", "--force", &self.id])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Pids whose command line mentions `marker`.
pub fn procs_mentioning(marker: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(marker) {
                out.push((pid, cmd));
            }
        }
    }
    out
}

/// cgroup directories (any v1 controller or the unified tree) with this name.
pub fn cgroups_named(name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(rd.flatten().map(|e| e.path()));
    }
    for r in roots {
        let p = r.join(name);
        if p.exists() {
            out.push(p);
        }
    }
    out
}

/// Waits until `f` is true (panics after `limit`).
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Parses every line of a CRI log, panicking on any malformed one. Returns
/// (stream, partial, message) triples.
pub fn parse_log(path: &Path) -> Vec<(crius_shim::crilog::Stream, bool, Vec<u8>)> {
    let text = std::fs::read(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with(b"\n"),
        "log does not end with a newline"
    );
    parse_records(&text)
}

/// [`parse_log`] of the lines written whole so far, for polling while the shim may be
/// in the middle of a line.
pub fn parse_log_so_far(path: &Path) -> Vec<(crius_shim::crilog::Stream, bool, Vec<u8>)> {
    let text = std::fs::read(path).unwrap_or_default();
    let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    parse_records(&text[..whole])
}

fn parse_records(text: &[u8]) -> Vec<(crius_shim::crilog::Stream, bool, Vec<u8>)> {
    text.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let r = crius_shim::crilog::parse_record(l).unwrap_or_else(|| {
                panic!("malformed CRI log line: {:?}", String::from_utf8_lossy(l))
            });
            (r.stream, r.partial, r.message.to_vec())
        })
        .collect()
}

/// Joins P records with the following F record, as the kubelet does.
pub fn join_lines(
    recs: &[(crius_shim::crilog::Stream, bool, Vec<u8>)],
    stream: crius_shim::crilog::Stream,
) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    let mut cur = Vec::new();
    let mut open = false;
    for (s, partial, msg) in recs {
        if *s != stream {
            continue;
        }
        cur.extend_from_slice(msg);
        open = true;
        if !partial {
            lines.push(std::mem::take(&mut cur));
            open = false;
        }
    }
    if open {
        lines.push(cur);
    }
    lines
}

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success(), "mkfifo {}", path.display());
}

/// Process I/O with stdin from the FIFO at `path` (output to the CRI log).
pub fn stdin_io(path: &Path) -> client::ProcessIo {
    client::ProcessIo {
        stdin: path.display().to_string(),
        ..Default::default()
    }
}

/// A process spec for exec.
pub fn process_json(args: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "terminal": false,
        "user": {"uid": 0, "gid": 0},
        "args": args,
        "env": ["PATH=/bin"],
        "cwd": "/",
        "noNewPrivileges": true
    }))
    .unwrap()
}

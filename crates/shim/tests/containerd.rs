//! Debian's containerd (1.6) drives crius-shim through the shim v2 protocol:
//! `ctr run --runtime io.containerd.crius.v1` resolves to `containerd-shim-crius-v1`
//! on containerd's PATH, a symlink to crius-shim.
//!
//! containerd runs with its own root, state, sockets and FIFO dir inside the test's
//! temp dir; nothing under /run/containerd is used. It is stopped by its pid.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::*;

struct Containerd {
    child: Child,
    address: String,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_containerd(dir: &Path) -> Containerd {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(shim_bin(), bin.join("containerd-shim-crius-v1")).unwrap();
    let address = dir.join("c.sock").display().to_string();
    let config = format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{address}"
[ttrpc]
  address = "{address}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#,
        d = dir.display()
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
    let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
    );
    let child = Command::new("containerd")
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let c = Containerd { child, address };
    wait_until(Duration::from_secs(30), "containerd socket", || {
        std::os::unix::net::UnixStream::connect(&c.address).is_ok()
    });
    c
}

/// On a failed test, removes what the test started through containerd before
/// containerd itself is stopped.
struct Tasks<'a> {
    c: &'a Containerd,
    ns: String,
    ids: Vec<String>,
}

impl Drop for Tasks<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for id in &self.ids {
            let _ = ctr(self.c, &self.ns, &["task", "kill", "-s", "SIGKILL", id]);
            std::thread::sleep(Duration::from_millis(300));
            let _ = ctr(self.c, &self.ns, &["task", "delete", "--force", id]);
            let _ = ctr(self.c, &self.ns, &["container", "delete", id]);
        }
    }
}

fn ctr(c: &Containerd, ns: &str, args: &[&str]) -> Output {
    Command::new("ctr")
        .args(["--address", &c.address, "--namespace", ns])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Sockets in crius-shim's default socket dir (containerd does not choose shim sockets).
fn shim_sockets() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir("/run/crius/s")
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn containerd_runs_a_container_through_crius_shim() {
    let fx = Fixture::new(Runtime::Runc, &["true"]);
    let dir = fx.dir.path().to_owned();
    let rootfs = fx.bundle().join("rootfs");
    let fifo_dir = dir.join("fifo");
    let sockets_before = shim_sockets();
    let c = start_containerd(&dir);
    let ns = format!("crius-test-{}", std::process::id());
    let id = format!("ctr-{}", fx.id);
    let cgroup = format!("/{}", fx.cgroup_name());
    let tasks = Tasks {
        c: &c,
        ns: ns.clone(),
        ids: vec![id.clone(), format!("{id}-d")],
    };

    // Watch containerd's event stream (the shim publishes task events to it).
    let events_out = std::fs::File::create(dir.join("events.txt")).unwrap();
    let mut events = Command::new("ctr")
        .args(["--address", &c.address, "events"])
        .stdin(Stdio::null())
        .stdout(events_out)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));

    // `ctr run <flag>` of the bundle's rootfs through crius-shim.
    let run = |flag: &str, cgroup: &str, id: &str, cmd: &[&str]| {
        let mut args = vec![
            "run",
            flag,
            "--fifo-dir",
            fifo_dir.to_str().unwrap(),
            "--cgroup",
            cgroup,
            "--env",
            "PATH=/bin",
            "--runtime",
            "io.containerd.crius.v1",
            "--rootfs",
            rootfs.to_str().unwrap(),
            id,
        ];
        args.extend_from_slice(cmd);
        ctr(&c, &ns, &args)
    };

    // Foreground run: output relayed through the FIFOs, exit code propagated.
    let out = run(
        "--rm",
        &cgroup,
        &id,
        &[
            "sh",
            "-c",
            "echo hello from crius-shim; echo to stderr >&2; exit 3",
        ],
    );
    let log = || std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(3),
        "ctr run: stdout {:?} stderr {:?}\ncontainerd log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from crius-shim\n"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("to stderr"));

    // Detached run, exec into it, kill, delete.
    let id2 = format!("{id}-d");
    let out = run("-d", &format!("{cgroup}-d"), &id2, &["sleep", "1000"]);
    assert!(out.status.success(), "ctr run -d: {:?}\n{}", out, log());
    let out = ctr(
        &c,
        &ns,
        &[
            "task",
            "exec",
            "--fifo-dir",
            fifo_dir.to_str().unwrap(),
            "--exec-id",
            "x1",
            &id2,
            "sh",
            "-c",
            "echo exec ok; exit 4",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "ctr task exec: {:?}\n{}",
        out,
        log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "exec ok\n");
    let out = ctr(&c, &ns, &["task", "ls"]);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        listing.contains(&id2) && listing.contains("RUNNING"),
        "{listing}"
    );
    let out = ctr(&c, &ns, &["task", "kill", "-s", "SIGKILL", &id2]);
    assert!(out.status.success(), "ctr task kill: {out:?}");
    wait_until(Duration::from_secs(20), "task stopped", || {
        String::from_utf8_lossy(&ctr(&c, &ns, &["task", "ls"]).stdout).contains("STOPPED")
    });
    let out = ctr(&c, &ns, &["task", "delete", &id2]);
    assert!(out.status.success(), "ctr task delete: {out:?}\n{}", log());
    let out = ctr(&c, &ns, &["container", "delete", &id2]);
    assert!(out.status.success(), "ctr container delete: {out:?}");
    let out = ctr(&c, &ns, &["namespace", "remove", &ns]);
    assert!(out.status.success(), "ctr namespace remove: {out:?}");

    // The shim's events reached containerd.
    wait_until(Duration::from_secs(10), "task events", || {
        let ev = std::fs::read_to_string(dir.join("events.txt")).unwrap_or_default();
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exec-added",
            "/tasks/exec-started",
            "/tasks/exit",
            "/tasks/delete",
        ]
        .iter()
        .all(|t| ev.contains(t))
    });
    let _ = Command::new("kill").arg(events.id().to_string()).status();
    let _ = events.wait();
    assert!(!log().contains("crius-shim: publishing"), "{}", log());

    // Every crius-shim has exited (Shutdown after Delete).
    wait_until(Duration::from_secs(10), "shims gone", || {
        procs_mentioning(&dir.display().to_string())
            .iter()
            .all(|(_, cmd)| cmd.starts_with("containerd "))
    });
    // ... and removed its socket.
    assert_eq!(shim_sockets(), sockets_before);
    drop(tasks);
    drop(c);
    assert!(cgroups_named(&format!("{}-d", fx.cgroup_name())).is_empty());
    fx.assert_clean();
}

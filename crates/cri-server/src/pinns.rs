//! Pinned pod namespaces.
//!
//! A pod's network, IPC and UTS namespaces are created by a helper process (`criusd
//! pinns`, or `pinns_path` from the config): a fresh single-threaded process that
//! calls `unshare`, sets the hostname, brings `lo` up, and bind-mounts each
//! `/proc/self/ns/X` onto `<pod dir>/ns/X` before it exits. The bind mount keeps the
//! namespace alive; containers join it by path. The daemon itself never unshares:
//! it is multi-threaded, and `unshare` acts on one thread only.
//!
//! Undo is [`unpin`]: detach every mount under `<pod dir>/ns` and delete the files.
//! It succeeds on a half-made directory and on one already gone.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// A failure of the namespace or infra helper, as the daemon sees it.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("starting {what} {}", helper.display())]
    Spawn {
        what: &'static str,
        helper: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} {} did not finish within {timeout:?}", helper.display())]
    Timeout {
        what: &'static str,
        helper: PathBuf,
        timeout: Duration,
    },
    #[error("{what} {} failed ({status}): {stderr}", helper.display())]
    Failed {
        what: &'static str,
        helper: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("the infra helper wrote {text:?}, not a pid")]
    BadPid { text: String },
}

/// What the helper is asked to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinRequest {
    /// The directory that receives one file per pinned namespace.
    pub dir: PathBuf,
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
    /// Set in the new UTS namespace (only with `uts`).
    pub hostname: Option<String>,
}

impl PinRequest {
    /// The helper's command line after the program name.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "pinns".to_string(),
            "--dir".to_string(),
            self.dir.to_string_lossy().into_owned(),
        ];
        for (on, flag) in [
            (self.net, "--net"),
            (self.ipc, "--ipc"),
            (self.uts, "--uts"),
        ] {
            if on {
                args.push(flag.to_string());
            }
        }
        if let Some(h) = &self.hostname {
            args.push("--hostname".to_string());
            args.push(h.clone());
        }
        args
    }

    /// The path where namespace `kind` is pinned.
    pub fn path(dir: &Path, kind: &str) -> PathBuf {
        dir.join(kind)
    }
}

/// The environment variable through which the daemon tells the helper its pid.
pub const PARENT_ENV: &str = "CRIUS_PINNS_PARENT";

/// Whether `ancestor` is this process's parent, grandparent, and so on.
fn has_ancestor(ancestor: i32) -> bool {
    let mut pid = std::process::id().to_string();
    for _ in 0..64 {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // The command name is in parentheses and may hold spaces: skip past it.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        else {
            return false;
        };
        if ppid == ancestor.to_string() {
            return true;
        }
        if ppid == "0" || ppid == "1" {
            return false;
        }
        pid = ppid.to_string();
    }
    false
}

/// Runs in the helper process: creates the namespaces and pins them.
/// On failure nothing is left pinned.
///
/// A helper whose daemon died (a crash mid-RunPodSandbox) must not pin anything
/// after the restarted daemon has cleaned up: it dies with its parent
/// (PR_SET_PDEATHSIG), and refuses to start when the daemon that asked for it is
/// no longer among its ancestors.
pub fn run_helper(req: &PinRequest) -> Result<(), String> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("setting the parent-death signal: {e}"))?;
    if let Some(parent) = std::env::var(PARENT_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        if !has_ancestor(parent) {
            return Err(format!(
                "criusd (pid {parent}) that asked for these namespaces is gone; not pinning"
            ));
        }
    }
    let mut flags = CloneFlags::empty();
    if req.net {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if req.ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if req.uts {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    if flags.is_empty() {
        return Ok(());
    }
    nix::sched::unshare(flags).map_err(|e| format!("unshare: {e}"))?;
    if req.uts {
        if let Some(h) = &req.hostname {
            nix::unistd::sethostname(h).map_err(|e| format!("sethostname {h:?}: {e}"))?;
        }
    }
    if req.net {
        crate::sys::set_loopback_up().map_err(|e| format!("bringing lo up: {e}"))?;
    }
    fs::create_dir_all(&req.dir).map_err(|e| format!("creating {}: {e}", req.dir.display()))?;
    let mut pinned: Vec<PathBuf> = Vec::new();
    for (on, kind) in [(req.net, "net"), (req.ipc, "ipc"), (req.uts, "uts")] {
        if !on {
            continue;
        }
        let target = PinRequest::path(&req.dir, kind);
        if let Err(e) = pin_one(kind, &target) {
            for done in &pinned {
                let _ = unpin_path(done.as_path());
            }
            let _ = unpin_path(&target);
            return Err(e);
        }
        pinned.push(target);
    }
    Ok(())
}

fn pin_one(kind: &str, target: &Path) -> Result<(), String> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(target)
        .map_err(|e| format!("creating {}: {e}", target.display()))?;
    let source = format!("/proc/self/ns/{kind}");
    nix::mount::mount(
        Some(source.as_str()),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("bind-mounting {source} on {}: {e}", target.display()))
}

/// Detaches and deletes one pinned namespace file. Missing is fine.
pub fn unpin_path(path: &Path) -> io::Result<()> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => {
            return Err(io::Error::other(format!(
                "unmounting {}: {e}",
                path.display()
            )));
        }
    }
    missing_is_fine(fs::remove_file(path), path)
}

/// Releases every namespace pinned under `dir` and removes `dir`.
pub fn unpin(dir: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("reading {}: {e}", dir.display()),
            ));
        }
    };
    for entry in entries {
        let entry = entry?;
        unpin_path(&entry.path())?;
    }
    missing_is_fine(fs::remove_dir(dir), dir)
}

/// A removal of `path` whose target is already gone succeeded; other errors name it.
fn missing_is_fine(removed: io::Result<()>, path: &Path) -> io::Result<()> {
    match removed {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io::Error::new(
            e.kind(),
            format!("removing {}: {e}", path.display()),
        )),
        _ => Ok(()),
    }
}

/// Whether `path` is a live pinned namespace (an nsfs mount).
pub fn is_pinned(path: &Path) -> bool {
    matches!(nix::sys::statfs::statfs(path), Ok(s) if s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Runs in the `criusd infra` helper: starts the pod's infra process, PID 1 of a new
/// PID namespace that the pod's containers share, writes its host pid to `pidfile`
/// and returns. The infra process detaches (own session), reaps whatever the
/// namespace orphans, and lives until it is killed.
pub fn run_infra(pidfile: &Path) -> Result<(), String> {
    nix::sched::unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("unshare(PID): {e}"))?;
    match crate::sys::fork_single_threaded().map_err(|e| format!("fork: {e}"))? {
        Some(child) => {
            let tmp = pidfile.with_extension("tmp");
            fs::write(&tmp, child.as_raw().to_string())
                .and_then(|()| fs::rename(&tmp, pidfile))
                .map_err(|e| format!("writing {}: {e}", pidfile.display()))?;
            Ok(())
        }
        None => {
            let _ = nix::unistd::setsid();
            let _ = std::env::set_current_dir("/");
            if let Ok(null) = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                let _ = nix::unistd::dup2_stdin(&null);
                let _ = nix::unistd::dup2_stdout(&null);
                let _ = nix::unistd::dup2_stderr(&null);
            }
            let _ = crate::sys::catch_sigchld();
            loop {
                while let Ok(status) =
                    nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
                {
                    if status == nix::sys::wait::WaitStatus::StillAlive {
                        break;
                    }
                }
                nix::unistd::pause();
            }
        }
    }
}

/// Whether `pid` is still the infra process started from `dir`'s pidfile helper
/// (guards against pid reuse: its command line names the pod's directory).
pub fn infra_alive(pid: u32, dir: &Path) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(&*dir.to_string_lossy()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip_shape() {
        let req = PinRequest {
            dir: PathBuf::from("/run/crius/pods/x/ns"),
            net: true,
            ipc: false,
            uts: true,
            hostname: Some("h".into()),
        };
        assert_eq!(
            req.to_args(),
            vec![
                "pinns",
                "--dir",
                "/run/crius/pods/x/ns",
                "--net",
                "--uts",
                "--hostname",
                "h"
            ]
        );
    }

    #[test]
    fn unpin_of_missing_or_plain_files_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let ns = dir.path().join("ns");
        unpin(&ns).unwrap();
        fs::create_dir(&ns).unwrap();
        fs::write(ns.join("net"), b"").unwrap();
        unpin(&ns).unwrap();
        assert!(!ns.exists());
    }
}

//! Pinned pod namespaces.
//!
//! A pod's network, IPC and UTS namespaces are created by a helper process (`criusd
//! pinns`, or `pinns_path` from the config): a fresh single-threaded process that
//! calls `unshare`, sets the hostname, brings `lo` up, and bind-mounts each
//! `/proc/self/ns/X` onto `<pod dir>/ns/X` before it exits. The bind mount keeps the
//! namespace alive; containers join it by path. The daemon itself never unshares:
//! it is multi-threaded, and `unshare` acts on one thread only.
//!
//! A pod with its own user namespace (`hostUsers: false`) gets it from the same
//! helper, and its other namespaces are made inside it, so that they belong to it
//! (the container's root may then mount sysfs and proc, and configure its own
//! network). The helper forks a child that unshares the user namespace; the helper,
//! still privileged in the host's namespace, writes the child's uid and gid maps;
//! the child then unshares the others, and the helper pins the child's namespaces
//! (a process inside the new user namespace could not mount on the host).
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
    /// A new user namespace with these maps, owning the others (`None`: the host's).
    pub user: Option<UserMaps>,
}

/// One line of a uid or gid map: `size` ids from `container` inside map to ids
/// from `host` outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdMap {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

impl std::fmt::Display for IdMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.container, self.host, self.size)
    }
}

impl std::str::FromStr for IdMap {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let num = |p: &str| {
            p.parse::<u32>()
                .map_err(|_| format!("{s:?}: {p:?} is not an id"))
        };
        match parts.as_slice() {
            [c, h, n] => Ok(IdMap {
                container: num(c)?,
                host: num(h)?,
                size: num(n)?,
            }),
            _ => Err(format!("{s:?} is not container:host:size")),
        }
    }
}

/// The uid and gid maps of a pod's user namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserMaps {
    pub uids: Vec<IdMap>,
    pub gids: Vec<IdMap>,
}

impl UserMaps {
    /// The host ids the container's root (0) maps to, when it is mapped.
    pub fn root_on_host(&self) -> Option<(u32, u32)> {
        let find = |maps: &[IdMap]| {
            maps.iter()
                .find(|m| m.container == 0 && m.size > 0)
                .map(|m| m.host)
        };
        Some((find(&self.uids)?, find(&self.gids)?))
    }

    /// The text of /proc/<pid>/uid_map or gid_map for `maps`.
    pub fn proc_text(maps: &[IdMap]) -> String {
        maps.iter()
            .map(|m| format!("{} {} {}\n", m.container, m.host, m.size))
            .collect()
    }
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
        if let Some(u) = &self.user {
            for (flag, maps) in [("--uid-map", &u.uids), ("--gid-map", &u.gids)] {
                for m in maps {
                    args.push(flag.to_string());
                    args.push(m.to_string());
                }
            }
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
    if let Some(maps) = &req.user {
        return with_user_namespace(req, flags, maps);
    }
    if flags.is_empty() {
        return Ok(());
    }
    nix::sched::unshare(flags).map_err(|e| format!("unshare: {e}"))?;
    enter_namespaces(req, CloneFlags::empty())?;
    pin_all(req, "self", false)
}

/// In the process that just unshared `flags`: names the host and brings `lo` up.
fn enter_namespaces(req: &PinRequest, flags: CloneFlags) -> Result<(), String> {
    if !flags.is_empty() {
        nix::sched::unshare(flags).map_err(|e| format!("unshare: {e}"))?;
    }
    if req.uts {
        if let Some(h) = &req.hostname {
            nix::unistd::sethostname(h).map_err(|e| format!("sethostname {h:?}: {e}"))?;
        }
    }
    if req.net {
        crate::sys::set_loopback_up().map_err(|e| format!("bringing lo up: {e}"))?;
    }
    Ok(())
}

/// Pins the namespaces of `/proc/<who>` (`self` or a pid) that `req` asks for, and
/// the user namespace too when `user`. On failure nothing is left pinned.
fn pin_all(req: &PinRequest, who: &str, user: bool) -> Result<(), String> {
    fs::create_dir_all(&req.dir).map_err(|e| format!("creating {}: {e}", req.dir.display()))?;
    let mut pinned: Vec<PathBuf> = Vec::new();
    for (on, kind) in [
        (user, "user"),
        (req.net, "net"),
        (req.ipc, "ipc"),
        (req.uts, "uts"),
    ] {
        if !on {
            continue;
        }
        let target = PinRequest::path(&req.dir, kind);
        if let Err(e) = pin_one(&format!("/proc/{who}/ns/{kind}"), &target) {
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

/// Makes the pod's user namespace and the others inside it (see the module's
/// comment): a forked child unshares, this process writes its maps and pins.
fn with_user_namespace(req: &PinRequest, flags: CloneFlags, maps: &UserMaps) -> Result<(), String> {
    use std::io::{Read, Write};
    let pipe = || -> Result<(fs::File, fs::File), String> {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        Ok((fs::File::from(r), fs::File::from(w)))
    };
    // child → helper: unshared; helper → child: mapped (then EOF: pinned, exit);
    // child → helper: the result of making the others ("" when fine).
    let (mut unshared_r, mut unshared_w) = pipe()?;
    let (mut mapped_r, mut mapped_w) = pipe()?;
    let (mut result_r, mut result_w) = pipe()?;
    let child = match crate::sys::fork_single_threaded().map_err(|e| format!("fork: {e}"))? {
        Some(child) => child,
        None => {
            drop((unshared_r, mapped_w, result_r));
            let mut byte = [0u8; 1];
            let outcome = nix::sched::unshare(CloneFlags::CLONE_NEWUSER)
                .map_err(|e| format!("unshare(USER): {e}"))
                .and_then(|()| {
                    unshared_w
                        .write_all(b"u")
                        .map_err(|e| format!("telling the helper: {e}"))
                })
                .and_then(|()| match mapped_r.read(&mut byte) {
                    Ok(1) => Ok(()),
                    _ => Err("the helper did not map the user namespace".to_string()),
                })
                .and_then(|()| enter_namespaces(req, flags));
            let text = match outcome {
                Ok(()) => String::new(),
                Err(e) => e,
            };
            let _ = result_w.write_all(text.as_bytes());
            drop(result_w);
            drop(unshared_w);
            // Held until the helper has pinned (it closes its end).
            let _ = mapped_r.read(&mut byte);
            std::process::exit(0);
        }
    };
    drop((unshared_w, mapped_r, result_w));
    let finish = |e: String| {
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(child, None);
        Err(e)
    };
    let mut byte = [0u8; 1];
    if !matches!(unshared_r.read(&mut byte), Ok(1)) {
        let mut text = String::new();
        let _ = result_r.read_to_string(&mut text);
        return finish(format!("making the user namespace: {text}"));
    }
    for (file, list) in [("uid_map", &maps.uids), ("gid_map", &maps.gids)] {
        let path = format!("/proc/{child}/{file}");
        if let Err(e) = fs::write(&path, UserMaps::proc_text(list)) {
            return finish(format!("writing {path}: {e}"));
        }
    }
    if let Err(e) = mapped_w.write_all(b"m") {
        return finish(format!("telling the child: {e}"));
    }
    let mut text = String::new();
    if let Err(e) = result_r.read_to_string(&mut text) {
        return finish(format!("reading the child's result: {e}"));
    }
    if !text.is_empty() {
        return finish(text);
    }
    let pinned = pin_all(req, &child.to_string(), true);
    drop(mapped_w);
    let _ = nix::sys::wait::waitpid(child, None);
    pinned
}

fn pin_one(source: &str, target: &Path) -> Result<(), String> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(target)
        .map_err(|e| format!("creating {}: {e}", target.display()))?;
    nix::mount::mount(
        Some(source),
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
        // The kernel checks the caller's privilege before whether anything is mounted
        // there: without CAP_SYS_ADMIN a plain file gives EPERM, and is fine.
        Err(Errno::EPERM) if !is_pinned(path) => {}
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
///
/// With `userns` (a pinned user namespace) the PID namespace is made inside it, so
/// that the pod's containers, root there, may mount its proc.
pub fn run_infra(pidfile: &Path, userns: Option<&Path>) -> Result<(), String> {
    if let Some(path) = userns {
        let f = fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
        nix::sched::setns(&f, CloneFlags::CLONE_NEWUSER)
            .map_err(|e| format!("joining the user namespace {}: {e}", path.display()))?;
    }
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
            user: None,
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
    fn user_maps_on_the_command_line_and_in_proc() {
        let m = |c, h, s| IdMap {
            container: c,
            host: h,
            size: s,
        };
        let req = PinRequest {
            dir: PathBuf::from("/d"),
            user: Some(UserMaps {
                uids: vec![m(0, 100000, 65536)],
                gids: vec![m(0, 200000, 1), m(1, 300000, 2)],
            }),
            ..Default::default()
        };
        assert_eq!(
            req.to_args(),
            vec![
                "pinns",
                "--dir",
                "/d",
                "--uid-map",
                "0:100000:65536",
                "--gid-map",
                "0:200000:1",
                "--gid-map",
                "1:300000:2"
            ]
        );
        assert_eq!("0:100000:65536".parse::<IdMap>(), Ok(m(0, 100000, 65536)));
        assert!("0:100000".parse::<IdMap>().is_err());
        assert!("0:x:1".parse::<IdMap>().is_err());
        let maps = req.user.unwrap();
        assert_eq!(UserMaps::proc_text(&maps.gids), "0 200000 1\n1 300000 2\n");
        assert_eq!(maps.root_on_host(), Some((100000, 200000)));
        assert_eq!(UserMaps::default().root_on_host(), None);
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

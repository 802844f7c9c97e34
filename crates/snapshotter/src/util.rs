//! Small helpers shared by the content store and the snapshotter: temporary names that a
//! restarted process can recognise as stale, the cross-process lock, directory listing
//! and fsync, and disk usage.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{FlockOperation, flock};

use crate::error::{Error, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The start time (clock ticks since boot, field 22 of `/proc/<pid>/stat`) of a process.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn own_start_time() -> u64 {
    static START: OnceLock<u64> = OnceLock::new();
    *START.get_or_init(|| start_time(std::process::id()).unwrap_or(0))
}

/// A unique temporary name `<pid>-<start time>-<counter>-<nanos>`: pid and start time let
/// [`is_stale`] tell whether the process that made it is still alive, even when a restarted
/// daemon gets the same pid again (as it does as pid 1 of a container).
pub(crate) fn temp_name() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{}-{n}-{nanos}", std::process::id(), own_start_time())
}

/// Whether a temporary entry named by [`temp_name`] was left by a process that no longer
/// exists. Names that do not parse are stale (nothing else belongs in a temp directory).
pub(crate) fn is_stale(name: &str) -> bool {
    let mut parts = name.split('-');
    let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
    let start = parts.next().and_then(|p| p.parse::<u64>().ok());
    let (Some(pid), Some(start)) = (pid, start) else {
        return true;
    };
    if pid == std::process::id() {
        return start != own_start_time();
    }
    start_time(pid) != Some(start)
}

/// The entries of `dir`, as they are read; failing to open it or to read an entry is an
/// error `<what> <dir>`.
pub(crate) fn read_dir<'a>(
    dir: &'a Path,
    what: &'static str,
) -> Result<impl Iterator<Item = Result<fs::DirEntry>> + 'a> {
    let rd = fs::read_dir(dir).map_err(|e| Error::io_path(what, dir, e))?;
    Ok(rd.map(move |ent| ent.map_err(|e| Error::io_path(what, dir, e))))
}

/// Removes stale entries (files or directories) from a temporary directory.
pub(crate) fn clean_stale(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    for ent in read_dir(dir, "read directory")? {
        let ent = ent?;
        let name = ent.file_name();
        if !is_stale(&name.to_string_lossy()) {
            continue;
        }
        let p = ent.path();
        remove_any(&p)?;
        tracing::info!(path = %p.display(), "removed stale temporary left by a crash");
        removed += 1;
    }
    Ok(removed)
}

/// Removes a file or a directory tree; a missing path is fine. Never follows symlinks.
pub(crate) fn remove_any(p: &Path) -> Result<()> {
    let md = match fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io_path("stat", p, e)),
    };
    let r = if md.is_dir() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io_path("remove", p, e)),
    }
}

pub(crate) fn create_dir_all(p: &Path) -> Result<()> {
    fs::create_dir_all(p).map_err(|e| Error::io_path("create directory", p, e))
}

/// fsync a directory so that renames and creations in it are durable.
pub(crate) fn fsync_dir(p: &Path) -> Result<()> {
    let f = File::open(p).map_err(|e| Error::io_path("open directory", p, e))?;
    f.sync_all()
        .map_err(|e| Error::io_path("fsync directory", p, e))
}

/// An exclusive `flock` on a lock file, held until dropped. Each holder opens the file
/// anew, so the lock excludes other threads of this process as well as other processes.
pub(crate) struct Lock {
    _file: File,
}

impl Lock {
    pub(crate) fn acquire(path: &Path) -> Result<Lock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io_path("open lock file", path, e))?;
        flock(&file, FlockOperation::LockExclusive).map_err(|e| Error::io_path("lock", path, e))?;
        Ok(Lock { _file: file })
    }
}

/// Bytes (allocated blocks) and inodes used under `root`, counting each inode once
/// (hardlinks) and not crossing into other filesystems. A missing root is zero.
pub(crate) fn disk_usage(root: &Path) -> Result<crate::Usage> {
    let mut seen = HashSet::new();
    let mut usage = crate::Usage::default();
    let md = match fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(usage),
        Err(e) => return Err(Error::io_path("stat", root, e)),
    };
    let dev = md.dev();
    let mut stack = vec![(root.to_path_buf(), md)];
    while let Some((p, md)) = stack.pop() {
        if md.dev() != dev {
            continue;
        }
        if seen.insert(md.ino()) {
            usage.inodes += 1;
            usage.bytes += md.blocks() * 512;
        }
        if md.is_dir() {
            let rd = match fs::read_dir(&p) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io_path("read directory", &p, e)),
            };
            for ent in rd {
                let ent = ent.map_err(|e| Error::io_path("read directory", &p, e))?;
                let cp = ent.path();
                match fs::symlink_metadata(&cp) {
                    Ok(m) => stack.push((cp, m)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io_path("stat", &cp, e)),
                }
            }
        }
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn stale_names() {
        let mine = temp_name();
        assert!(!is_stale(&mine), "{mine}");
        assert_ne!(temp_name(), mine);
        let me = std::process::id();
        // Same pid, other start time: a previous incarnation (e.g. pid 1 of a container).
        assert!(is_stale(&format!("{me}-{}-0-0", own_start_time() + 1)));
        // Live process 1 with its real start time is not stale; with another it is.
        let init = start_time(1).unwrap();
        assert!(!is_stale(&format!("1-{init}-0-0")));
        assert!(is_stale(&format!("1-{}-0-0", init + 1)));
        assert!(is_stale("4194999-1-1-1"));
        assert!(is_stale("garbage"));
        assert!(is_stale("123"));
    }
}

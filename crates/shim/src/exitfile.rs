//! The durable record of a container's exit.
//!
//! The shim writes it (temp file, fsync, rename, fsync of the directory) before any
//! caller can learn of the exit (Wait, State, Delete), so a criusd that was down when
//! the container exited, or whose shim died afterwards, still finds the real exit code
//! and time. The file is JSON: `{"pid":..,"exit_code":..,"exited_at":"RFC3339Nano",
//! "exited_at_unix_nanos":..}`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::crilog::rfc3339_nano;
use crate::sys;

/// A container's recorded exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Host pid of the container's init process.
    pub pid: u32,
    /// Exit code; 128 + signal number when a signal killed it.
    pub exit_code: u32,
    /// Finish time, RFC3339 with nanoseconds, UTC.
    pub exited_at: String,
    /// Finish time in nanoseconds since the Unix epoch.
    pub exited_at_unix_nanos: u64,
    /// The kernel's OOM killer killed a process of the container's memory cgroup while
    /// it ran (its `oom_kill` counter rose), so "OOMKilled" is the reason to report.
    #[serde(default)]
    pub oom_killed: bool,
}

impl ExitRecord {
    pub(crate) fn new(pid: u32, exit_code: u32, at: SystemTime, oom_killed: bool) -> Self {
        let nanos = at
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        ExitRecord {
            pid,
            exit_code,
            exited_at: rfc3339_nano(at),
            exited_at_unix_nanos: nanos,
            oom_killed,
        }
    }

    /// The finish time as a `SystemTime`.
    pub fn exited_at_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.exited_at_unix_nanos)
    }
}

/// Writes `rec` to `path` atomically and durably.
pub(crate) fn write(path: &Path, rec: &ExitRecord) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = Path::new(&tmp_name);
    let body = serde_json::to_vec(rec).map_err(io::Error::other)?;
    let mut f = File::create(tmp)?;
    f.write_all(&body)?;
    f.sync_all()?;
    drop(f);
    fs::rename(tmp, path)?;
    sys::fsync_dir(dir)
}

/// Reads an exit record; `Ok(None)` when the file does not exist (no exit recorded).
pub fn read(path: &Path) -> io::Result<Option<ExitRecord>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

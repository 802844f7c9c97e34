//! Small helpers shared by the managers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{CriError, CriResult};

/// Nanoseconds since the epoch, as the CRI reports times.
pub fn now_nanos() -> i64 {
    nanos_of(SystemTime::now())
}

/// `t` in nanoseconds since the epoch.
pub fn nanos_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Runs blocking work (store transactions, shim calls, file system work) off the
/// async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> CriResult<T> + Send + 'static,
) -> CriResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CriError::Internal(format!("a blocking task was lost: {e}")))?
}

/// Per-id async locks: slow work on one pod or container never holds a global lock.
#[derive(Default)]
pub struct Locks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Locks {
    /// Locks `id`, waiting for whoever holds it.
    pub async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(id.to_string()).or_default().clone()
        };
        m.lock_owned().await
    }

    /// Drops the lock of an id that no longer exists.
    pub fn forget(&self, id: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(id);
    }
}

/// A new 64-hex-digit id, as containerd and CRI-O make them.
pub fn new_id() -> CriResult<String> {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).map_err(|e| CriError::Internal(format!("generating an id: {e}")))?;
    Ok(hex::encode(buf))
}

/// Looks a binary up the way exec does: a path with a slash as is, else in PATH.
pub fn find_binary(name: &std::path::Path) -> Option<std::path::PathBuf> {
    let is_exec = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.as_os_str().to_string_lossy().contains('/') {
        return is_exec(name).then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_exec(p))
}

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
        .map_err(|e| CriError::internal("blocking task", e))?
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

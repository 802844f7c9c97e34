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
/// async workers, inside the caller's span (its logs and trace spans stay the call's).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> CriResult<T> + Send + 'static,
) -> CriResult<T> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| CriError::Internal(format!("a blocking task was lost: {e}")))?
}

/// Per-id async locks: slow work on one pod or container never holds a global lock.
/// An id has an entry only while someone holds or waits for its lock: the last one
/// to leave removes it, so the map holds the ids being worked on now, never every id
/// a long-running daemon has seen (a waiter that gives up counts as leaving).
#[derive(Default)]
pub struct Locks {
    map: Arc<Mutex<HashMap<String, LockEntry>>>,
}

struct LockEntry {
    mutex: Arc<tokio::sync::Mutex<()>>,
    /// Holders and waiters of this id's lock.
    users: usize,
}

/// One holder's or waiter's claim on an id's entry; dropping it gives the claim up
/// and removes the entry when it was the last.
struct LockUser {
    map: Arc<Mutex<HashMap<String, LockEntry>>>,
    id: String,
}

impl Drop for LockUser {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = map.get_mut(&self.id) {
            entry.users = entry.users.saturating_sub(1);
            if entry.users == 0 {
                map.remove(&self.id);
            }
        }
    }
}

/// The lock of one id, held until dropped.
pub struct IdGuard {
    // Fields drop in order: the lock is released before the claim is given up.
    _guard: tokio::sync::OwnedMutexGuard<()>,
    _user: LockUser,
}

impl Locks {
    /// Locks `id`, waiting for whoever holds it.
    pub async fn lock(&self, id: &str) -> IdGuard {
        let (mutex, user) = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            let entry = map.entry(id.to_string()).or_insert_with(|| LockEntry {
                mutex: Arc::default(),
                users: 0,
            });
            entry.users += 1;
            let user = LockUser {
                map: self.map.clone(),
                id: id.to_string(),
            };
            (entry.mutex.clone(), user)
        };
        // Cancelled while waiting: `user` goes with the future and gives its claim up.
        let guard = mutex.lock_owned().await;
        IdGuard {
            _guard: guard,
            _user: user,
        }
    }

    /// Ids with an entry (held or waited for).
    #[cfg(test)]
    pub fn ids_tracked(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A new 64-hex-digit id, as containerd and CRI-O make them.
pub fn new_id() -> CriResult<String> {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).map_err(|e| CriError::Internal(format!("generating an id: {e}")))?;
    Ok(hex::encode(buf))
}

/// The search path where none is set (and a node's, seen from outside it).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_exec(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn an_id_has_an_entry_only_while_its_lock_is_held_or_waited_for() {
        let locks = Arc::new(Locks::default());
        for i in 0..1000 {
            let _g = locks.lock(&format!("id-{i}")).await;
            assert_eq!(locks.ids_tracked(), 1);
        }
        assert_eq!(locks.ids_tracked(), 0, "released ids are forgotten");

        // A waiter keeps the entry while the holder lets go, then removes it.
        let held = locks.lock("a").await;
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _g = locks.lock("a").await;
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the waiter waits for the holder");
        drop(held);
        waiter.await.unwrap();
        assert_eq!(locks.ids_tracked(), 0);

        // A waiter that gives up leaves no entry behind either.
        let held = locks.lock("b").await;
        let gave_up = tokio::time::timeout(Duration::from_millis(20), locks.lock("b")).await;
        assert!(gave_up.is_err());
        assert_eq!(locks.ids_tracked(), 1);
        drop(held);
        assert_eq!(locks.ids_tracked(), 0);
    }

    #[tokio::test]
    async fn the_lock_excludes() {
        let locks = Arc::new(Locks::default());
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (locks, inside) = (locks.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                let _g = locks.lock("same").await;
                let n = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::task::yield_now().await;
                inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                n
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 0, "one holder at a time");
        }
        assert_eq!(locks.ids_tracked(), 0);
    }
}

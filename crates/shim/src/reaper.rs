//! The shim's only `waitpid` caller.
//!
//! The shim is a child subreaper, so besides the runc invocations it starts it also
//! inherits the container's init and exec processes when runc exits. One thread blocks
//! in `waitpid(-1)` and files every exit here; everyone else waits for the pid they care
//! about. Nothing else in the shim may call `wait` on a child (no `Command::status`,
//! `Command::output` or `Child::wait`), or exits would be lost.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::sys;

/// Exits nobody claimed are kept for late claimers (a container init can exit before
/// the shim learns its pid); beyond this many the oldest are dropped.
const MAX_UNCLAIMED: usize = 1024;

struct Inner {
    exited: HashMap<i32, (i32, u64)>,
    seq: u64,
    spawned: u64,
}

struct Reaper {
    inner: Mutex<Inner>,
    cv: Condvar,
}

fn reaper() -> &'static Reaper {
    static R: OnceLock<Reaper> = OnceLock::new();
    R.get_or_init(|| Reaper {
        inner: Mutex::new(Inner {
            exited: HashMap::new(),
            seq: 0,
            spawned: 0,
        }),
        cv: Condvar::new(),
    })
}

fn lock() -> MutexGuard<'static, Inner> {
    reaper()
        .inner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts the reaping thread. Call once, early, before spawning anything.
pub(crate) fn start() -> io::Result<()> {
    std::thread::Builder::new()
        .name("reaper".into())
        .stack_size(64 * 1024)
        .spawn(reap_loop)
        .map(|_| ())
}

fn reap_loop() {
    loop {
        let spawned = lock().spawned;
        match sys::wait_any() {
            Ok((pid, status)) => {
                let mut g = lock();
                g.seq += 1;
                let seq = g.seq;
                g.exited.insert(pid, (status, seq));
                if g.exited.len() > MAX_UNCLAIMED {
                    if let Some((&old, _)) = g.exited.iter().min_by_key(|(_, (_, s))| *s) {
                        g.exited.remove(&old);
                    }
                }
                drop(g);
                reaper().cv.notify_all();
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(_) => {
                // ECHILD: no children. Sleep until something is spawned.
                let mut g = lock();
                while g.spawned == spawned {
                    g = reaper()
                        .cv
                        .wait(g)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
            }
        }
    }
}

/// Spawns `cmd` and tells the reaper a child exists. The returned pid must be
/// waited for with [`wait`] / [`wait_timeout`], never with `Child::wait`.
pub(crate) fn spawn(cmd: &mut Command) -> io::Result<Child> {
    let child = cmd.spawn()?;
    note_child();
    Ok(child)
}

/// Tells the reaper that a child may exist now (after runc left one behind).
pub(crate) fn note_child() {
    lock().spawned += 1;
    reaper().cv.notify_all();
}

/// Waits for `pid` to exit and returns its raw wait status.
pub(crate) fn wait(pid: i32) -> i32 {
    let mut g = lock();
    loop {
        if let Some((status, _)) = g.exited.remove(&pid) {
            return status;
        }
        g = reaper()
            .cv
            .wait(g)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
    }
}

/// Waits at most `timeout` for `pid` to exit.
pub(crate) fn wait_timeout(pid: i32, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    let mut g = lock();
    loop {
        if let Some((status, _)) = g.exited.remove(&pid) {
            return Some(status);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        g = reaper()
            .cv
            .wait_timeout(g, deadline - now)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0;
    }
}

//! glibc's heap, given back and counted.
//!
//! criusd's live heap is bounded (nothing per pod or container outlives it), but
//! glibc's malloc keeps what is freed in its arenas, one per thread that ever
//! allocated (up to eight per core), and the churn of the blocking pool's and the
//! shim clients' short-lived threads spreads small allocations over all of them: the
//! freed pages stay resident, so RSS crept up over thousands of lifecycles while the
//! bytes in use did not. [`spawn_trimmer`] hands the free pages of every arena back
//! to the kernel (`malloc_trim`) every [`TRIM_EVERY`], and [`usage`] reports the
//! bytes in use and held free for the metrics endpoint. Under the `mimalloc`
//! feature (another allocator) both are off.

use std::time::Duration;

/// How often the free heap is handed back. A trim of criusd's few MiB takes well
/// under a millisecond; a node's lifecycles make at most a few MiB of free pages in
/// that time.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// The C allocator's heap: bytes in use by the program, and bytes it holds free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub in_use: u64,
    pub free: u64,
}

/// Starts the thread that trims the heap every [`TRIM_EVERY`] (a thread of its own:
/// a trim takes the arenas' locks, and a tokio worker should not wait on them).
pub fn spawn_trimmer() {
    if !glibc::ACTIVE {
        return;
    }
    let started = std::thread::Builder::new()
        .name("heap-trim".into())
        .spawn(|| {
            loop {
                std::thread::sleep(TRIM_EVERY);
                trim();
            }
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "starting the heap trimmer; freed heap stays resident");
    }
}

/// Hands the free pages of every arena back to the kernel now; false under another
/// allocator.
pub fn trim() -> bool {
    glibc::trim();
    glibc::ACTIVE
}

/// The heap now; `None` under another allocator.
pub fn usage() -> Option<Usage> {
    glibc::usage()
}

#[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
mod glibc {
    pub const ACTIVE: bool = true;

    #[allow(unsafe_code)]
    pub fn trim() {
        // SAFETY: malloc_trim only walks and madvises glibc's own arenas under their
        // locks; it takes no pointers from us.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    #[allow(unsafe_code)]
    pub fn usage() -> Option<super::Usage> {
        // SAFETY: mallinfo2 reads glibc's arena counters under their locks and
        // returns a plain struct by value.
        let m = unsafe { libc::mallinfo2() };
        Some(super::Usage {
            in_use: (m.uordblks + m.hblkhd) as u64,
            free: m.fordblks as u64,
        })
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc"))))]
mod glibc {
    pub const ACTIVE: bool = false;

    pub fn trim() {}

    pub fn usage() -> Option<super::Usage> {
        None
    }
}

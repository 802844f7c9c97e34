//! glibc's heap, counted for the metrics endpoint: the bytes the program has in use
//! and the freed bytes the allocator holds. RSS alone cannot tell a leak (in use
//! grows) from memory the allocator keeps for reuse (free grows); criusd's heap was
//! measured bounded, and what RSS still gains over thousands of lifecycles is the
//! allocator's. Under the `mimalloc` feature (another allocator) there is nothing to
//! report.

/// The C allocator's heap: bytes in use by the program, and bytes it holds free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub in_use: u64,
    pub free: u64,
}

/// The heap now; `None` under another allocator.
pub fn usage() -> Option<Usage> {
    glibc::usage()
}

#[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
mod glibc {
    #[allow(unsafe_code)]
    pub fn usage() -> Option<super::Usage> {
        // SAFETY: mallinfo2 reads glibc's arena counters under their locks and
        // returns a plain struct by value; it takes no pointers from us.
        let m = unsafe { libc::mallinfo2() };
        Some(super::Usage {
            in_use: (m.uordblks + m.hblkhd) as u64,
            free: m.fordblks as u64,
        })
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc"))))]
mod glibc {
    pub fn usage() -> Option<super::Usage> {
        None
    }
}

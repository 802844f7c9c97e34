//! Edge coverage from SanitizerCoverage's inline 8-bit counters, when the code under
//! test was built with them (stable rustc: `-Cpasses=sancov-module` plus
//! `-Cllvm-args=-sanitizer-coverage-inline-8bit-counters`; `fuzz/sancov-rustc` adds
//! them to the workspace crates only). Each instrumented object registers its
//! counter array through [`__sanitizer_cov_8bit_counters_init`] before `main`; in a
//! normal build nothing registers and [`Coverage::available`] is false, so the
//! engine falls back to outcome signatures alone.
//!
//! Between executions the counters are zeroed; after one, every counter that moved
//! is folded into a hit-count bucket (1, 2, 3, 4-7, 8-15, 16-31, 32-127, 128+), and
//! an input that sets a bucket bit never seen before for its target is kept.

use std::sync::Mutex;

/// Counter arrays registered by instrumented code: (start address, length).
static REGIONS: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

/// Called by the constructor of every instrumented object file.
///
/// # Safety
/// `start..stop` must be the object's counter array, alive for the whole program,
/// as SanitizerCoverage guarantees.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __sanitizer_cov_8bit_counters_init(start: *mut u8, stop: *mut u8) {
    let (a, b) = (start as usize, stop as usize);
    if b > a {
        REGIONS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((a, b - a));
    }
}

/// Called when the program-counter table is enabled too; the engine has no use for it.
///
/// # Safety
/// Never dereferences its arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __sanitizer_cov_pcs_init(_start: *const usize, _stop: *const usize) {}

fn regions() -> Vec<(usize, usize)> {
    REGIONS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn bucket(count: u8) -> u8 {
    match count {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => 4,
        4..=7 => 8,
        8..=15 => 16,
        16..=31 => 32,
        32..=127 => 64,
        _ => 128,
    }
}

/// What one target has covered so far.
#[derive(Debug, Default)]
pub(crate) struct Coverage {
    regions: Vec<(usize, usize)>,
    /// Bucket bits seen per counter, all regions end to end.
    seen: Vec<u8>,
    /// Counters hit at least once.
    edges: usize,
}

impl Coverage {
    pub(crate) fn new() -> Coverage {
        let regions = regions();
        let total = regions.iter().map(|r| r.1).sum();
        Coverage {
            regions,
            seen: vec![0; total],
            edges: 0,
        }
    }

    /// Whether the build has counters at all.
    pub(crate) fn available(&self) -> bool {
        !self.regions.is_empty()
    }

    /// Counters (edges) hit at least once so far.
    pub(crate) fn edges(&self) -> usize {
        self.edges
    }

    /// Zeroes every counter, before an execution.
    pub(crate) fn reset(&self) {
        for &(start, len) in &self.regions {
            // SAFETY: `start..start+len` is a counter array registered by
            // SanitizerCoverage, static for the program's life. The instrumented code
            // increments its bytes without synchronisation, so a thread still running
            // from an earlier input can at worst leave one count behind.
            unsafe { std::ptr::write_bytes(start as *mut u8, 0, len) };
        }
    }

    /// Folds the counters of the execution just finished in; true when they show
    /// something new.
    pub(crate) fn collect(&mut self) -> bool {
        let mut new = false;
        let mut base = 0;
        for &(start, len) in &self.regions {
            // SAFETY: as in `reset`: a registered, static counter array, read between
            // executions; a racing increment only changes one count.
            let counters = unsafe { std::slice::from_raw_parts(start as *const u8, len) };
            let seen = &mut self.seen[base..base + len];
            // Most counters are zero: skip them eight at a time.
            let mut i = 0;
            while i < len {
                if i + 8 <= len && counters[i..i + 8].iter().all(|&c| c == 0) {
                    i += 8;
                    continue;
                }
                let b = bucket(counters[i]);
                if b != 0 && seen[i] & b == 0 {
                    if seen[i] == 0 {
                        self.edges += 1;
                    }
                    seen[i] |= b;
                    new = true;
                }
                i += 1;
            }
            base += len;
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_single_bits_in_order() {
        let bs: Vec<u8> = [1u8, 2, 3, 5, 9, 20, 100, 200].map(bucket).to_vec();
        assert_eq!(bs, vec![1, 2, 4, 8, 16, 32, 64, 128]);
        assert_eq!(bucket(0), 0);
    }
}

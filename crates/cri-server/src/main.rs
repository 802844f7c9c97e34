//! criusd: the crius CRI v1 server. The command line is `crius_cri_server::cli`.
#![deny(unsafe_code)]

/// criusd allocates through glibc's malloc; the `mimalloc` feature swaps in mimalloc
/// (built with `no_thp`: by default mimalloc 3 madvises its arenas for transparent
/// huge pages, and a 2 MiB page that is only partly free stays resident). Measured
/// with the soak benchmark (`e2e/benches/soak.rs`, release builds side by side on the
/// 2-core VM): criusd's RssAnon was 11-12 MiB on glibc, 20-21 MiB on mimalloc without
/// huge pages and 89-99 MiB with them. heaptrack found the live heap bounded once
/// nothing per pod was kept (the per-id locks forget ids); what glibc's RSS still
/// gains over thousands of lifecycles is fragmentation of its arenas by criusd's churn
/// of short-lived threads (the blocking pool, the sync ttrpc client's threads per shim
/// connection). README.md has the figures of the 5,000-lifecycle runs.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    crius_cri_server::cli::main()
}

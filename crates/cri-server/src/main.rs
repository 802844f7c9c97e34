//! criusd: the crius CRI v1 server. The command line is `crius_cri_server::cli`.
#![deny(unsafe_code)]

/// criusd allocates through mimalloc, not glibc's malloc. Measured with the soak
/// benchmark (`e2e/benches/soak.rs`): once nothing per pod was kept any more, heaptrack
/// found the live heap bounded (under 1 MB allocated after lifecycle 300 was still
/// live 1,450 lifecycles later, nearly all of it the requests in flight), yet under
/// glibc the RSS kept rising about 0.9 KiB per lifecycle, with `MALLOC_ARENA_MAX=2`
/// as well, and `malloc_trim` gave back almost nothing: fragmentation of glibc's
/// arenas by criusd's churn of short-lived threads (the blocking pool, and two
/// threads per shim connection of the sync ttrpc client). The same run on another
/// allocator stayed flat.
///
/// mimalloc is built with `no_thp` (Cargo.toml): by default mimalloc 3 madvises its
/// arenas for transparent huge pages, and a 2 MiB page that is only partly free stays
/// resident. Three release soaks run side by side on the 2-core VM (started within two
/// minutes of each other, sampled at the same moment 13 minutes in): criusd's RssAnon
/// was 95 MiB (26 MiB of it huge pages) with huge pages, 19.8 MiB without, 11.0 MiB on
/// glibc's malloc. glibc's is lower in level; mimalloc is kept for glibc's growth.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    crius_cri_server::cli::main()
}

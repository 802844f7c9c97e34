//! The heap trimmer on glibc's malloc: freed pages between live blocks leave RSS
//! only when trimmed, and the usage counts the bytes in use. A test binary of its
//! own, so that no other test allocates beside it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

fn rss_anon_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("reading /proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/self/status")
}

#[test]
fn freed_pages_between_live_blocks_go_back_to_the_kernel_when_trimmed() {
    use crius_cri_server::heap;
    let before = heap::usage().expect("glibc's malloc");
    // 8,000 blocks of 4 KiB (32 MiB), then all but every 100th freed: the free
    // memory lies between live blocks, where free() itself never gives it back.
    let mut blocks: Vec<Vec<u8>> = (0..8000u32).map(|i| vec![i as u8; 4096]).collect();
    let full = heap::usage().unwrap();
    assert!(
        full.in_use >= before.in_use + 8000 * 4096,
        "{before:?} then {full:?}"
    );
    let mut i = 0;
    blocks.retain(|_| {
        i += 1;
        i % 100 == 0
    });
    let freed = heap::usage().unwrap();
    assert!(freed.in_use < full.in_use - 7000 * 4096, "{freed:?}");
    assert!(freed.free >= 7000 * 4096, "held free: {freed:?}");
    let resident = rss_anon_kib();
    assert!(heap::trim());
    let trimmed = rss_anon_kib();
    assert!(
        trimmed + 16 * 1024 < resident,
        "RssAnon {resident} KiB before the trim, {trimmed} KiB after"
    );
    // The live blocks are untouched.
    assert_eq!(blocks.len(), 80);
    assert!(
        blocks
            .iter()
            .enumerate()
            .all(|(k, b)| b.len() == 4096 && b[0] == ((k * 100 + 99) as u32) as u8)
    );
}

//! The heap usage on glibc's malloc: blocks allocated count as in use, and once
//! freed as held free. A test binary of its own, so that no other test allocates
//! beside it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn allocated_bytes_are_in_use_and_freed_ones_held_free() {
    use crius_cri_server::heap;
    let before = heap::usage().expect("glibc's malloc");
    // 8,000 blocks of 4 KiB (32 MiB), then all but every 100th freed: the free
    // memory lies between live blocks, where the allocator keeps it.
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
    assert_eq!(blocks.len(), 80);
    assert!(
        blocks
            .iter()
            .enumerate()
            .all(|(k, b)| b.len() == 4096 && b[0] == ((k * 100 + 99) as u32) as u8)
    );
}

//! A soak in CI: 500 pod + container lifecycles, 10 at a time, each with an ExecSync
//! and a read of the container's CRI log, against the debug criusd. Every lifecycle
//! must succeed; nothing may be left behind (mounts, the pods' pinned namespaces, pod
//! directories, shims and container processes, veths, iptables chains, IP leases,
//! cgroups); and the daemon's anonymous memory may grow at most [`MAX_GROWTH_KIB`]
//! from lifecycle [`WARM`] to the last. The release benchmark `benches/soak.rs` runs
//! 5,000 and prints the whole curve.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crius_e2e::soak::{self, Soak};
use crius_e2e::*;

/// Lifecycles in CI (`SOAK_LIFECYCLES` to change).
const LIFECYCLES: usize = 500;

/// The lifecycle from which growth is measured: by then the allocator's pages, the
/// runtime's worker and blocking threads and the store's pages have settled.
const WARM: usize = 100;

/// The most criusd's RssAnon may grow from lifecycle [`WARM`] to the last, KiB.
const MAX_GROWTH_KIB: u64 = 1024;

#[tokio::test(flavor = "multi_thread")]
async fn many_lifecycles_all_succeed_leave_nothing_and_keep_memory_flat() {
    let mut f = Fixture::start("soak", Options::default()).await;
    let image = f.pull_busybox().await;
    let lifecycles = soak::lifecycles_from_env(LIFECYCLES);
    let cfg = Soak {
        lifecycles,
        parallel: 10,
        sample_every: 50,
        image,
        log_root: f.logs(),
        tag: format!("{}", std::process::id()),
        daemon_pid: f.d.pid().expect("a running daemon"),
    };
    let report = soak::run(f.d.rt.clone(), &cfg).await;
    println!(
        "{} lifecycles in {:.0} s (p50 {:.0} ms, p99 {:.0} ms); criusd memory (debug build):\n{}",
        report.latencies.len(),
        report.elapsed.as_secs_f64(),
        report.latency_ms(0.50),
        report.latency_ms(0.99),
        report.curve()
    );
    assert!(
        report.failures.is_empty(),
        "{} of {lifecycles} lifecycles failed:\n{}",
        report.failures.len(),
        report.failures.join("\n")
    );
    assert_eq!(report.latencies.len(), lifecycles);
    if lifecycles > WARM {
        let warm = report.at(WARM).expect("a sample at the warm-up mark");
        let last = *report.samples.last().expect("a last sample");
        let grew = last.mem.rss_anon_kib.saturating_sub(warm.mem.rss_anon_kib);
        assert!(
            grew <= MAX_GROWTH_KIB,
            "criusd's RssAnon grew {grew} KiB from lifecycle {} to {} (at most {MAX_GROWTH_KIB}):\n{}",
            warm.done,
            last.done,
            report.curve()
        );
    }
    let pods = list_pods(&mut f.d.rt, None).await;
    assert!(pods.is_empty(), "pods left: {pods:?}");
    let containers = list_containers(&mut f.d.rt, None).await;
    assert!(containers.is_empty(), "containers left: {containers:?}");
    // The store can be read once the daemon is gone: no address may stay leased.
    f.d.stop().await.expect("stopping criusd");
    let leases = soak::leases_left(&f.d.state_dir().join("store.redb"), &f.d.net.bridge).unwrap();
    assert!(leases.is_empty(), "leases left: {leases:?}");
    // Back up on the same roots, so the fixture removes its image and checks the rest
    // (mounts, files, processes, veths, chains).
    f.d.spawn().await.expect("restarting criusd");
    f.finish().await;
    let cgroups = soak::cgroups_left(&report.ids);
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
}

//! A small soak: 150 pod + container lifecycles, 10 at a time, each with an ExecSync
//! and a read of the container's CRI log, against the debug criusd. Every lifecycle
//! must succeed and nothing may be left behind (mounts, pod directories, processes,
//! veths, iptables chains, IP leases). The daemon's memory curve is printed, never
//! asserted (the release benchmark `benches/soak.rs` measures it).
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crius_e2e::soak::{self, Soak};
use crius_e2e::*;

/// Lifecycles in CI (`SOAK_LIFECYCLES` to change). 500 took 570 s with the debug
/// build on a loaded 2-core machine (about 0.9 a second); 150 fit in about three
/// minutes there.
const LIFECYCLES: usize = 150;

#[tokio::test(flavor = "multi_thread")]
async fn many_lifecycles_all_succeed_and_leave_nothing() {
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
        "{} lifecycles in {:.0} s; criusd memory (debug build):\n{}",
        report.latencies.len(),
        report.elapsed.as_secs_f64(),
        report.curve()
    );
    assert!(
        report.failures.is_empty(),
        "{} of {lifecycles} lifecycles failed:\n{}",
        report.failures.len(),
        report.failures.join("\n")
    );
    assert_eq!(report.latencies.len(), lifecycles);
    let pods = list_pods(&mut f.d.rt, None).await;
    assert!(pods.is_empty(), "pods left: {pods:?}");
    let containers = list_containers(&mut f.d.rt, None).await;
    assert!(containers.is_empty(), "containers left: {containers:?}");
    // The store can be read once the daemon is gone: no address may stay leased.
    f.d.stop().await.expect("stopping criusd");
    let leases = soak::leases_left(&f.d.state_dir().join("store.redb"), &f.d.net.bridge).unwrap();
    assert!(leases.is_empty(), "leases left: {leases:?}");
    // Back up on the same roots, so the fixture removes its image and checks the rest.
    f.d.spawn().await.expect("restarting criusd");
    f.finish().await;
}

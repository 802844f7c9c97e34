//! A small soak: 150 pod + container lifecycles, 10 at a time, each with an ExecSync
//! and a read of the container's CRI log, against the debug criusd. Every lifecycle
//! must succeed and nothing may be left behind (mounts, pod directories, processes,
//! veths, iptables chains, IP leases). The daemon's memory curve is printed, never
//! asserted (the release benchmark `benches/soak.rs` measures it).
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crius_e2e::images::*;
use crius_e2e::registry::*;
use crius_e2e::soak::{self, Soak};
use crius_e2e::*;

/// Lifecycles in CI (`SOAK_LIFECYCLES` to change). 500 took 570 s with the debug
/// build on a loaded 2-core machine (about 0.9 a second); 150 fit in about three
/// minutes there.
const LIFECYCLES: usize = 150;

#[tokio::test(flavor = "multi_thread")]
async fn many_lifecycles_all_succeed_and_leave_nothing() {
    let mut d = Daemon::start("soak").await;
    let reg = TestRegistry::start(&d.root.join("fixtures/registry"), None)
        .await
        .unwrap();
    let pushed = push_busybox(&reg, "test/busybox", "v1", Comp::Gzip)
        .await
        .unwrap();
    let image = pushed.reference(&reg.host);
    pull_image(&mut d.img, &image, None).await.expect("pull");
    let log_root = d.root.join("fixtures/logs");
    std::fs::create_dir_all(&log_root).unwrap();
    let lifecycles = soak::lifecycles_from_env(LIFECYCLES);
    let cfg = Soak {
        lifecycles,
        parallel: 10,
        sample_every: 50,
        image: image.clone(),
        log_root,
        tag: format!("{}", std::process::id()),
        daemon_pid: d.pid().expect("a running daemon"),
    };
    let report = soak::run(d.rt.clone(), &cfg).await;
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
    let pods = list_pods(&mut d.rt, None).await;
    assert!(pods.is_empty(), "pods left: {pods:?}");
    remove_image_by_id(&mut d.img, &image).await;
    drop(reg);
    // The store can be read once the daemon is gone: no address may stay leased.
    d.stop().await.expect("stopping criusd");
    let leases = soak::leases_left(&d.state_dir().join("store.redb"), &d.net.bridge).unwrap();
    assert!(leases.is_empty(), "leases left: {leases:?}");
    d.finish().await;
}

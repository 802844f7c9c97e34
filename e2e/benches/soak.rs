//! Soak benchmark: N pod + container lifecycles (default 5,000; `SOAK_LIFECYCLES` to
//! change), 10 at a time, each with an ExecSync and a read of the container's CRI
//! log, against a release criusd with the built-in bridge. Prints criusd's VmRSS and
//! RssAnon every 500 lifecycles (`SOAK_SAMPLE_EVERY` to change), the p50 and p99
//! lifecycle latency, and everything left behind after the run (mounts, pod
//! directories, pinned namespaces, processes, veths, iptables chains, IP leases,
//! cgroups). The bar: VmRSS grows
//! at most 1 MiB from lifecycle 500 to the end, and nothing is left. Prints the
//! verdict; exits non-zero only when a lifecycle failed or something was left.
//! `SOAK_CRIUSD` names another criusd executable (say one built with
//! `--features mimalloc`, on mimalloc) to measure instead.
//!
//! Run as root: `cargo build --release --bins && cargo bench -p crius-e2e --bench soak`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crius_e2e::bench;
use crius_e2e::soak::{self, Soak};
use crius_e2e::v1::image_service_client::ImageServiceClient;
use crius_e2e::v1::runtime_service_client::RuntimeServiceClient;
use crius_e2e::*;
use serde_json::json;

/// The lifecycle from which growth is measured (allocator pools, caches and the
/// store's pages have settled by then).
const WARM: usize = 500;

/// criusd's `crius_heap_bytes` (in use, free) from its metrics endpoint.
async fn heap_of(address: &str) -> Option<(f64, f64)> {
    let text = reqwest::get(format!("http://{address}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |state: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("crius_heap_bytes{{state=\"{state}\"}} ")))
            .and_then(|v| v.trim().parse().ok())
    };
    Some((value("in_use")?, value("free")?))
}

/// Prints the heap and RssAnon every 30 s until aborted.
async fn heap_every(address: String, pid: u32) {
    let start = std::time::Instant::now();
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        if let (Some((in_use, free)), Some(mem)) = (heap_of(&address).await, soak::mem_of(pid)) {
            eprintln!(
                "{:>4} s: heap in use {:.2} MiB, held free {:.2} MiB; RssAnon {:.2} MiB",
                start.elapsed().as_secs(),
                in_use / 1048576.0,
                free / 1048576.0,
                mem.rss_anon_kib as f64 / 1024.0
            );
        }
    }
}

#[tokio::main]
async fn main() {
    let lifecycles = soak::lifecycles_from_env(5_000);
    let sample_every = std::env::var("SOAK_SAMPLE_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let (base, reg) = bench::scratch("bench-soak").await;
    bench::push_images(&reg, json!({"Cmd": ["/bin/sh"]})).await;
    let root = base.join("crius");
    let shim = bench::release_bin("crius-shim");
    let criusd = std::env::var_os("SOAK_CRIUSD")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| bench::release_bin("criusd"));
    let metrics = format!("127.0.0.1:{}", crius_e2e::registry::free_port());
    let mut d = bench::start_criusd_bin_and(
        &criusd,
        &root,
        &reg.host,
        &shim,
        &format!("[metrics]\naddress = \"{metrics}\"\n"),
    )
    .await;
    let ch = d.channel.clone();
    // glibc's heap, beside RSS, every 30 s: live bytes growing would be a leak, free
    // ones the allocator's keeping.
    let heap_log = tokio::spawn(heap_every(metrics.clone(), d.pid()));
    pull_image(&mut ImageServiceClient::new(ch.clone()), bench::IMAGE, None)
        .await
        .expect("pull");
    let log_root = root.join("fixtures/logs");
    std::fs::create_dir_all(&log_root).unwrap();
    let cfg = Soak {
        lifecycles,
        first: 0,
        parallel: 10,
        sample_every,
        image: bench::IMAGE.into(),
        log_root,
        tag: format!("{}", std::process::id()),
        daemon_pid: d.pid(),
    };
    let report = soak::run(RuntimeServiceClient::new(ch.clone()), &cfg).await;
    let end = soak::mem_of(d.pid());
    heap_log.abort();
    let heap_end = heap_of(&metrics).await;
    remove_image_by_id(&mut ImageServiceClient::new(ch), bench::IMAGE).await;
    d.stop();
    let left = soak::leftovers(&root, d.net().expect("the built-in bridge"), &report.ids);

    println!(
        "soak: {lifecycles} pod + container lifecycles (run, create, start, exec, log read, stop, remove), 10 at a time; criusd {} (MALLOC_ARENA_MAX={})",
        criusd.display(),
        std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| "unset".into())
    );
    println!();
    print!("{}", report.curve());
    println!();
    println!(
        "{} lifecycles in {:.0} s ({:.1}/s); lifecycle latency p50 {:.0} ms, p99 {:.0} ms; {} failed",
        report.latencies.len(),
        report.elapsed.as_secs_f64(),
        report.latencies.len() as f64 / report.elapsed.as_secs_f64(),
        report.latency_ms(0.50),
        report.latency_ms(0.99),
        report.failures.len()
    );
    if let Some(end) = end {
        println!(
            "after the last lifecycle: VmRSS {:.2} MiB, RssAnon {:.2} MiB",
            end.vm_rss_kib as f64 / 1024.0,
            end.rss_anon_kib as f64 / 1024.0
        );
    }
    let (warm, last) = (report.at(WARM), report.samples.last().copied());
    if let (Some(w), Some(l)) = (warm, last) {
        let grew = |a: u64, b: u64| (b as f64 - a as f64) / 1024.0;
        let rss = grew(w.mem.vm_rss_kib, l.mem.vm_rss_kib);
        println!(
            "growth from lifecycle {} to {}: VmRSS {rss:+.2} MiB, RssAnon {:+.2} MiB (bar: at most +1 MiB VmRSS): {}",
            w.done,
            l.done,
            grew(w.mem.rss_anon_kib, l.mem.rss_anon_kib),
            if rss <= 1.0 { "met" } else { "NOT met" }
        );
    }
    if let Some((in_use, free)) = heap_end {
        println!(
            "glibc heap after the last lifecycle: {:.2} MiB in use, {:.2} MiB held free",
            in_use / 1048576.0,
            free / 1048576.0
        );
    }
    println!("left behind after the run: {}", left.len());
    for l in &left {
        println!("  {l}");
    }
    for f in report.failures.iter().take(20) {
        println!("failed: {f}");
    }
    drop(d);
    drop(reg);
    force_clean(&base);
    if !left.is_empty() || !report.failures.is_empty() {
        std::process::exit(1);
    }
}

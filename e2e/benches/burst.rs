//! Burst benchmark: N pods with one container each, created and started all at once
//! (as a kubelet does when a drained node takes its pods back), then torn down all at
//! once; crius beside containerd 1.6 (Debian's, through its CRI socket, the same images
//! from a loopback registry). Each pod is its own task: RunPodSandbox, CreateContainer,
//! StartContainer. Prints, per runtime, the time until every container runs and until
//! every pod is gone, and each call's median and slowest: a call that waits behind
//! another pod's slow step shows as a slowest far above the median. Never asserts a time.
//!
//! Run as root: `cargo build --release --bins && cargo bench -p crius-e2e --bench burst`
//! (`BURST=n` pods, 30 by default; `ROUNDS=n` bursts per runtime, 3 by default).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use crius_e2e::bench;
use crius_e2e::v1::image_service_client::ImageServiceClient;
use crius_e2e::v1::runtime_service_client::RuntimeServiceClient;
use crius_e2e::*;
use serde_json::json;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One round: the time until all run, until all are gone, and each call's times.
#[derive(Default)]
struct Round {
    all_running: Duration,
    all_gone: Duration,
    run_pod: Vec<Duration>,
    create: Vec<Duration>,
    start: Vec<Duration>,
    teardown: Vec<Duration>,
}

/// One pod's RunPodSandbox, CreateContainer and StartContainer, each timed.
async fn bring_up(mut rt: Rt, image: String, name: String) -> (String, [Duration; 3]) {
    let pc = PodBuilder::new(&name).log_directory("").build();
    let t0 = Instant::now();
    let pod = run_pod(&mut rt, pc.clone()).await.expect("RunPodSandbox");
    let t1 = Instant::now();
    let app = ContainerBuilder::new("app", &image)
        .command(["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"])
        .no_log();
    let id = create_container(&mut rt, &pod, app, Some(pc))
        .await
        .expect("CreateContainer");
    let t2 = Instant::now();
    start_container(&mut rt, &id).await.expect("StartContainer");
    let t3 = Instant::now();
    (pod, [t1 - t0, t2 - t1, t3 - t2])
}

async fn burst(rt: &Rt, image: &str, tag: &str, round: usize) -> Round {
    let n = env_or("BURST", 30);
    let begin = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(bring_up(
                rt.clone(),
                image.to_string(),
                format!("{tag}-burst{round}-{i}"),
            ))
        })
        .collect();
    let mut r = Round::default();
    let mut pods = Vec::new();
    for t in tasks {
        let (pod, [a, b, c]) = t.await.expect("a pod's task");
        pods.push(pod);
        r.run_pod.push(a);
        r.create.push(b);
        r.start.push(c);
    }
    r.all_running = begin.elapsed();
    let begin = Instant::now();
    let tasks: Vec<_> = pods
        .into_iter()
        .map(|pod| {
            let mut rt = rt.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                remove_pod(&mut rt, &pod)
                    .await
                    .expect("Stop+RemovePodSandbox");
                t.elapsed()
            })
        })
        .collect();
    for t in tasks {
        r.teardown.push(t.await.expect("a teardown task"));
    }
    r.all_gone = begin.elapsed();
    r
}

async fn rounds(ch: tonic::transport::Channel, image: &str, tag: &str) -> Vec<Round> {
    let rt = RuntimeServiceClient::new(ch);
    let mut out = Vec::new();
    for round in 0..env_or("ROUNDS", 3) {
        out.push(burst(&rt, image, tag, round).await);
    }
    out
}

async fn pull(ch: tonic::transport::Channel, image: &str) {
    pull_image(&mut ImageServiceClient::new(ch), image, None)
        .await
        .expect("pull");
}

async fn crius(root: &Path, registry: &str, image: &str) -> Vec<Round> {
    let shim = bench::release_bin("crius-shim");
    let d = bench::start_criusd(root, registry, &shim).await;
    pull(d.channel.clone(), image).await;
    rounds(d.channel.clone(), image, "crius").await
}

async fn containerd(root: &Path, registry: &str, image: &str) -> Vec<Round> {
    let d = bench::start_containerd_bridged(root, registry).await;
    pull(d.channel.clone(), image).await;
    pull(d.channel.clone(), bench::PAUSE).await;
    rounds(d.channel.clone(), image, "containerd").await
}

/// The median over rounds of `f`, in milliseconds.
fn median_ms(rounds: &[Round], f: impl Fn(&Round) -> Duration) -> f64 {
    let v: Vec<Duration> = rounds.iter().map(f).collect();
    bench::percentile_ms(&v, 50)
}

/// Over all rounds: the median and the slowest of one call's times.
fn call_ms(rounds: &[Round], f: impl Fn(&Round) -> &Vec<Duration>) -> (f64, f64) {
    let v: Vec<Duration> = rounds.iter().flat_map(|r| f(r).iter().copied()).collect();
    (bench::percentile_ms(&v, 50), bench::percentile_ms(&v, 100))
}

#[tokio::main]
async fn main() {
    let (base, reg) = bench::scratch("bench-burst").await;
    bench::push_images(&reg, json!({"Cmd": ["/bin/sh"]})).await;
    let image = bench::IMAGE;
    let a = crius(&base.join("crius"), &reg.host, image).await;
    let b = containerd(&base.join("containerd"), &reg.host, image).await;
    println!(
        "burst: {} pods with one container each, all at once; median of {} rounds (ms)",
        env_or("BURST", 30),
        a.len()
    );
    println!();
    println!("| | crius | containerd 1.6.20 | crius / containerd |");
    println!("|---|---|---|---|");
    let whole = |name: &str, f: &dyn Fn(&Round) -> Duration| {
        let (x, y) = (median_ms(&a, f), median_ms(&b, f));
        println!("| {name} | {x:.0} | {y:.0} | {:.2} |", x / y);
    };
    whole("until all run", &|r| r.all_running);
    whole("until all are gone", &|r| r.all_gone);
    println!();
    println!("each call, median / slowest over all pods and rounds (ms)");
    println!();
    println!("| call | crius | containerd 1.6.20 |");
    println!("|---|---|---|");
    let call = |name: &str, f: &dyn Fn(&Round) -> &Vec<Duration>| {
        let ((x50, xmax), (y50, ymax)) = (call_ms(&a, f), call_ms(&b, f));
        println!("| {name} | {x50:.0} / {xmax:.0} | {y50:.0} / {ymax:.0} |");
    };
    call("RunPodSandbox", &|r| &r.run_pod);
    call("CreateContainer", &|r| &r.create);
    call("StartContainer", &|r| &r.start);
    call("StopPodSandbox + RemovePodSandbox", &|r| &r.teardown);
    drop(reg);
    force_clean(&base);
}

//! Container lifecycle benchmark: in one pod, N containers one after another, each
//! CreateContainer, StartContainer, ContainerStatus, StopContainer and
//! RemoveContainer, every step timed apart; crius beside containerd 1.6 (Debian's,
//! through its CRI socket, same image from a loopback registry). The container is a
//! busybox shell that exits at once on SIGTERM. Prints a table of medians and p95s, never
//! asserts.
//!
//! Run as root: `cargo build --release --bins && cargo bench -p crius-e2e --bench lifecycle`
//! (`LIFECYCLES=n` for another count than 50).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use crius_e2e::bench;
use crius_e2e::v1 as cri;
use crius_e2e::v1::image_service_client::ImageServiceClient;
use crius_e2e::v1::runtime_service_client::RuntimeServiceClient;
use crius_e2e::*;
use serde_json::json;

const STEPS: [&str; 5] = ["create", "start", "status", "stop", "remove"];

fn lifecycles() -> usize {
    std::env::var("LIFECYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

/// Per step, the time of each lifecycle; and the whole lifecycle's.
struct Times {
    steps: [Vec<Duration>; 5],
    whole: Vec<Duration>,
}

async fn lifecycle_runs(rt: &mut Rt, image: &str, tag: &str) -> Times {
    let pc = PodBuilder::new(&format!("{tag}-lifecycle"))
        .log_directory("")
        .build();
    let pod = run_pod(rt, pc.clone()).await.expect("RunPodSandbox");
    let mut t = Times {
        steps: Default::default(),
        whole: Vec::new(),
    };
    for i in 0..lifecycles() {
        let app = ContainerBuilder::new(&format!("app{i}"), image)
            .command(["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"])
            .no_log();
        let begin = Instant::now();
        let id = create_container(rt, &pod, app, Some(pc.clone()))
            .await
            .expect("CreateContainer");
        let t1 = Instant::now();
        start_container(rt, &id).await.expect("StartContainer");
        let t2 = Instant::now();
        let st = rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus")
            .into_inner();
        assert_eq!(
            st.status.map(|s| s.state),
            Some(cri::ContainerState::ContainerRunning as i32)
        );
        let t3 = Instant::now();
        rt.stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 10,
        })
        .await
        .expect("StopContainer");
        let t4 = Instant::now();
        rt.remove_container(cri::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("RemoveContainer");
        let t5 = Instant::now();
        for (k, (a, b)) in [(begin, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)]
            .into_iter()
            .enumerate()
        {
            t.steps[k].push(b - a);
        }
        t.whole.push(t5 - begin);
    }
    remove_pod(rt, &pod).await.expect("RemovePodSandbox");
    t
}

async fn pull(ch: tonic::transport::Channel, image: &str) {
    pull_image(&mut ImageServiceClient::new(ch), image, None)
        .await
        .expect("pull");
}

async fn crius(root: &Path, registry: &str, image: &str) -> Times {
    let shim = bench::release_bin("crius-shim");
    let d = bench::start_criusd(root, registry, &shim).await;
    pull(d.channel.clone(), image).await;
    lifecycle_runs(
        &mut RuntimeServiceClient::new(d.channel.clone()),
        image,
        "crius",
    )
    .await
}

async fn containerd(root: &Path, registry: &str, image: &str) -> Times {
    let d = bench::start_containerd_bridged(root, registry).await;
    pull(d.channel.clone(), image).await;
    pull(d.channel.clone(), bench::PAUSE).await;
    lifecycle_runs(
        &mut RuntimeServiceClient::new(d.channel.clone()),
        image,
        "containerd",
    )
    .await
}

#[tokio::main]
async fn main() {
    let (base, reg) = bench::scratch("bench-life").await;
    bench::push_images(&reg, json!({"Cmd": ["/bin/sh"]})).await;
    let image = bench::IMAGE;
    let a = crius(&base.join("crius"), &reg.host, image).await;
    let b = containerd(&base.join("containerd"), &reg.host, image).await;
    println!(
        "container lifecycle in one pod, {} containers one after another (ms, p50 / p95)",
        lifecycles()
    );
    println!();
    println!("| step | crius | containerd 1.6.20 | crius / containerd (p50) |");
    println!("|---|---|---|---|");
    let row = |name: &str, x: &[Duration], y: &[Duration]| {
        let (x50, x95) = bench::p50_p95_ms(x);
        let (y50, y95) = bench::p50_p95_ms(y);
        println!(
            "| {name} | {x50:.1} / {x95:.1} | {y50:.1} / {y95:.1} | {:.2} |",
            x50 / y50
        );
    };
    for (k, name) in STEPS.iter().enumerate() {
        row(name, &a.steps[k], &b.steps[k]);
    }
    row("whole lifecycle", &a.whole, &b.whole);
    drop(reg);
    force_clean(&base);
}

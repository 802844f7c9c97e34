//! Streaming benchmark: exec round trips and port-forward throughput through
//! the runtime's streaming server, crius beside containerd 1.6 (Debian's), both driven
//! by the suite's own SPDY client over CRI URLs. Prints, never asserts.
//!
//! - exec: Exec RPC, upgrade, streams, `true` runs, status read (one after another);
//! - port forward: one connection pulling a 64 MiB file from busybox httpd in the pod.
//!
//! Run as root: `cargo build --release --bins && cargo bench -p crius-e2e --bench streaming`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use crius_e2e::bench;
use crius_e2e::stream::*;
use crius_e2e::v1 as cri;
use crius_e2e::v1::image_service_client::ImageServiceClient;
use crius_e2e::v1::runtime_service_client::RuntimeServiceClient;
use crius_e2e::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const EXECS: usize = 40;
const FILE_MIB: usize = 64;
const PULLS: usize = 3;

struct Results {
    exec: Vec<Duration>,
    mib_per_s: Vec<f64>,
}

async fn container(
    rt: &mut Rt,
    pod: &str,
    pc: &cri::PodSandboxConfig,
    image: &str,
    name: &str,
    cmd: &[&str],
) -> String {
    let config = ContainerBuilder::new(name, image).command(cmd).no_log();
    let id = create_container(rt, pod, config, Some(pc.clone()))
        .await
        .expect("CreateContainer");
    start_container(rt, &id).await.expect("StartContainer");
    id
}

/// One HTTP GET of the big file over a fresh port-forward connection; bytes received.
async fn pull_file(rt: &mut Rt, pod: &str) -> usize {
    let url = rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod.into(),
            port: vec![8080],
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url;
    let conn = spdy_connect(&url, &["portforward.k8s.io"]).await.unwrap();
    let err = conn
        .open("error", &[("port", "8080"), ("requestID", "0")])
        .await
        .unwrap();
    let (_, mut ew) = err.split();
    ew.shutdown().await.unwrap();
    let data = conn
        .open("data", &[("port", "8080"), ("requestID", "0")])
        .await
        .unwrap();
    let (mut r, mut w) = data.split();
    w.write_all(b"GET /big HTTP/1.0\r\n\r\n").await.unwrap();
    w.shutdown().await.unwrap();
    let mut n = 0;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    conn.session.close();
    n
}

async fn run(rt: &mut Rt, image: &str, tag: &str) -> Results {
    let pc = PodBuilder::new(tag).log_directory("").build();
    let pod = run_pod(rt, pc.clone()).await.expect("RunPodSandbox");
    let sleeper = container(rt, &pod, &pc, image, "sleeper", &["/bin/sleep", "100000"]).await;
    container(
        rt,
        &pod,
        &pc,
        image,
        "web",
        &[
            "/bin/sh",
            "-c",
            &format!("mkdir -p /tmp/www && dd if=/dev/zero of=/tmp/www/big bs=1048576 count={FILE_MIB} 2>/dev/null && exec httpd -f -p 8080 -h /tmp/www"),
        ],
    )
    .await;
    let want = Want {
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let mut exec = Vec::new();
    for _ in 0..EXECS {
        let start = Instant::now();
        let url = rt
            .exec(cri::ExecRequest {
                container_id: sleeper.clone(),
                cmd: vec!["true".into()],
                stdout: true,
                stderr: true,
                ..Default::default()
            })
            .await
            .expect("Exec")
            .into_inner()
            .url;
        let f = spdy_command(&url, "v4.channel.k8s.io", want)
            .await
            .unwrap()
            .run(b"", Duration::from_secs(30))
            .await
            .unwrap();
        exec.push(start.elapsed());
        assert_eq!(f.exit_code().unwrap(), 0);
    }
    // Until httpd serves the whole file.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pull_file(rt, &pod).await < FILE_MIB << 20 {
        assert!(Instant::now() < deadline, "httpd never served the file");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut mib_per_s = Vec::new();
    for _ in 0..PULLS {
        let start = Instant::now();
        let n = pull_file(rt, &pod).await;
        assert!(n >= FILE_MIB << 20);
        mib_per_s.push(n as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64());
    }
    let _ = remove_pod(rt, &pod).await;
    Results { exec, mib_per_s }
}

async fn crius(root: &Path, registry: &str) -> Results {
    let d = bench::start_criusd(root, registry, &bench::release_bin("crius-shim")).await;
    pull_image(
        &mut ImageServiceClient::new(d.channel.clone()),
        bench::IMAGE,
        None,
    )
    .await
    .expect("pull");
    run(
        &mut RuntimeServiceClient::new(d.channel.clone()),
        bench::IMAGE,
        "crius-st",
    )
    .await
}

async fn containerd(root: &Path, registry: &str) -> Results {
    let d = bench::start_containerd_bridged(root, registry).await;
    let mut img = ImageServiceClient::new(d.channel.clone());
    pull_image(&mut img, bench::IMAGE, None)
        .await
        .expect("pull");
    pull_image(&mut img, bench::PAUSE, None)
        .await
        .expect("pull pause");
    let r = run(
        &mut RuntimeServiceClient::new(d.channel.clone()),
        bench::IMAGE,
        "containerd-st",
    )
    .await;
    drop(d);
    r
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let (base, reg) = bench::scratch("bench-st").await;
    bench::push_images(&reg, json!({"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]})).await;
    let a = crius(&base.join("crius"), &reg.host).await;
    let b = containerd(&base.join("containerd"), &reg.host).await;
    println!(
        "exec of `true` ({EXECS}, one after another: Exec RPC, SPDY upgrade, streams, exit status), and one port-forward connection pulling {FILE_MIB} MiB from busybox httpd ({PULLS} pulls, median)"
    );
    println!();
    println!("| runtime | exec p50 (ms) | exec p95 (ms) | port-forward MiB/s |");
    println!("|---|---|---|---|");
    for (name, r) in [("crius", a), ("containerd 1.6.20", b)] {
        println!(
            "| {name} | {:.1} | {:.1} | {:.0} |",
            bench::percentile_ms(&r.exec, 50),
            bench::percentile_ms(&r.exec, 95),
            median(r.mib_per_s)
        );
    }
    drop(reg);
    force_clean(&base);
    let _ = std::fs::remove_dir_all(&base);
}

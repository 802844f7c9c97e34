//! criusd's Prometheus endpoint, scraped by Debian's prometheus server on loopback;
//! the series are read back through its HTTP API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crius_e2e::registry::free_port;
use crius_e2e::v1 as cri;
use crius_e2e::*;
use tonic::Code;

const DEADLINE: Duration = Duration::from_secs(90);

/// A prometheus server scraping `target` every second, on a root of its own.
struct Prometheus {
    child: Child,
    root: tempfile::TempDir,
    api: String,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let bin = "/usr/bin/prometheus";
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} is missing: install Debian's prometheus package"
        );
        let root = tempfile::tempdir().unwrap();
        let config = root.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: crius\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(root.path().join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                root.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        Prometheus {
            child,
            root,
            api: format!("http://127.0.0.1:{port}/api/v1/query"),
        }
    }

    /// The value of the single series `query` returns, once it returns one.
    async fn value(&self, query: &str) -> Option<f64> {
        let url = reqwest::Url::parse_with_params(&self.api, &[("query", query)]).unwrap();
        let text = reqwest::get(url).await.ok()?.text().await.ok()?;
        let body: serde_json::Value = serde_json::from_str(&text).ok()?;
        let result = body["data"]["result"].as_array()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    async fn eventually_equals(&self, query: &str, want: f64) {
        eventually(
            DEADLINE,
            &format!("prometheus: {query} == {want}"),
            || async { (self.value(query).await == Some(want)).then_some(()) },
        )
        .await;
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.root;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_calls_errors_latency_and_state() {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let before_start = unix_now();
    let mut f = Fixture::start(
        "metrics",
        Options::config(format!("[metrics]\naddress = \"{address}\"\n")),
    )
    .await;
    let prom = Prometheus::start(&address);
    f.pull_busybox().await;
    let registry = f.registry().host.clone();
    let missing = format!("{registry}/test/missing:v1");
    assert!(pull_image(&mut f.d.img, &missing, None).await.is_err());
    let pod = f.pod(PodBuilder::new("metrics")).await;
    let err =
        f.d.rt
            .container_status(cri::ContainerStatusRequest {
                container_id: "0123456789abcdef".into(),
                verbose: false,
            })
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    prom.eventually_equals("up{job=\"crius\"}", 1.0).await;
    prom.eventually_equals("crius_pods{state=\"ready\"}", 1.0)
        .await;
    prom.eventually_equals("crius_operations_total{operation=\"RunPodSandbox\"}", 1.0)
        .await;
    prom.eventually_equals(
        "crius_operations_errors_total{operation=\"ContainerStatus\",code=\"NotFound\"}",
        1.0,
    )
    .await;
    prom.eventually_equals(
        "crius_operations_latency_seconds_count{operation=\"RunPodSandbox\"}",
        1.0,
    )
    .await;
    // The histogram's buckets hold the one call by its +Inf bound at least.
    prom.eventually_equals(
        "crius_operations_latency_seconds_bucket{operation=\"RunPodSandbox\",le=\"+Inf\"}",
        1.0,
    )
    .await;
    prom.eventually_equals("crius_network_ready", 1.0).await;
    for (result, n) in [("succeeded", 1.0), ("failed", 1.0)] {
        prom.eventually_equals(
            &format!("crius_image_pulls_total{{registry=\"{registry}\",result=\"{result}\"}}"),
            n,
        )
        .await;
    }
    // The busybox layer and config came over the wire.
    prom.eventually_equals(
        &format!("crius_image_pull_bytes_total{{registry=\"{registry}\"}} > bool 100000"),
        1.0,
    )
    .await;
    prom.eventually_equals("crius_runtime_ready", 1.0).await;

    // The pod stops: the gauge follows.
    f.d.rt
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    prom.eventually_equals("crius_pods{state=\"notready\"}", 1.0)
        .await;
    // The process's own figures, as Prometheus client libraries name them, and
    // glibc's heap.
    let pid = f.d.pid().expect("criusd runs");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as f64;
    let vm_rss = crius_e2e::soak::mem_of(pid).unwrap().vm_rss_kib as f64 * 1024.0;
    for (query, low, high) in [
        ("process_resident_memory_bytes", vm_rss / 2.0, vm_rss * 2.0),
        // Whole clock ticks, from the boot time in whole seconds.
        ("process_start_time_seconds", before_start - 1.0, unix_now()),
        ("process_open_fds", fds / 2.0, fds * 2.0),
        ("process_max_fds", 1024.0, f64::MAX),
        ("process_threads", 2.0, 1000.0),
        ("process_cpu_seconds_total", 0.0, 1000.0),
        ("crius_heap_bytes{state=\"in_use\"}", 64.0 * 1024.0, vm_rss),
        ("crius_heap_bytes{state=\"free\"}", 0.0, vm_rss),
    ] {
        let v = prom.value(query).await;
        assert!(
            v.is_some_and(|v| (low..=high).contains(&v)),
            "{query}: {v:?} not in {low}..={high}"
        );
    }
    // Anything but /metrics is NotFound.
    let resp = reqwest::get(format!("http://{address}/other"))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    drop(prom);
    f.finish().await;
    // The endpoint went with the daemon.
    assert!(std::net::TcpStream::connect(&address).is_err());
}

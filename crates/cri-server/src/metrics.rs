//! The Prometheus endpoint (`[metrics] address`, off when empty): criusd's own
//! metrics in the text exposition format at `/metrics`.
//!
//! - per CRI call (through `services::call`'s observer): `crius_operations_total`,
//!   `crius_operations_errors_total` by gRPC code, and the latency histogram
//!   `crius_operations_latency_seconds` (the names of CRI-O's family, crius's prefix);
//! - read at each scrape: `crius_pods` and `crius_containers` by state,
//!   `crius_network_ready`, `crius_runtime_ready`, `crius_build_info`, and the
//!   image pulls by registry (`crius_image_pulls_total` by result,
//!   `crius_image_pull_bytes_total`, `crius_image_pull_seconds_total`), the
//!   process's own `process_*` figures and glibc's heap (`crius_heap_bytes`).
//!
//! Containers' own resource metrics are the CRI's (ListPodSandboxMetrics), for the
//! kubelet; this endpoint is about the runtime.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crius_cri_api::v1 as cri;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tracing::{info, warn};

use crate::services::CallObserver;

/// Upper bounds of the latency buckets, seconds (CRI calls span a millisecond
/// ListContainers to a minute-long pull or stop).
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

#[derive(Default)]
struct Operation {
    count: u64,
    sum_secs: f64,
    /// Calls at most each bound of [`BUCKETS`] (not cumulative; summed when rendered).
    buckets: [u64; BUCKETS.len()],
    errors: BTreeMap<&'static str, u64>,
}

/// The per-call metrics, filled by every CRI call.
#[derive(Default)]
pub struct Metrics {
    operations: Mutex<BTreeMap<&'static str, Operation>>,
}

impl CallObserver for Metrics {
    fn observe(&self, rpc: &'static str, elapsed: Duration, code: Code) {
        let secs = elapsed.as_secs_f64();
        let mut ops = self
            .operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let op = ops.entry(rpc).or_default();
        op.count += 1;
        op.sum_secs += secs;
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            op.buckets[i] += 1;
        }
        if code != Code::Ok {
            *op.errors.entry(code_name(code)).or_default() += 1;
        }
    }
}

/// What a scrape reads from the daemon's state.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Pods by state name (`ready`, `notready`).
    pub pods: BTreeMap<&'static str, u64>,
    /// Containers by state name (`created`, `running`, `exited`, `unknown`).
    pub containers: BTreeMap<&'static str, u64>,
    pub network_ready: bool,
    pub runtime_ready: bool,
    /// Pull outcomes by registry.
    pub pulls: Vec<(String, crius_images::PullCounts)>,
    /// The daemon process itself (`None` when /proc could not be read).
    pub process: Option<Process>,
    /// glibc's heap (`None` under another allocator).
    pub heap: Option<crate::heap::Usage>,
}

/// The daemon process's own figures, under the names Prometheus client libraries
/// give them (`process_*`), so that the dashboards that watch containerd's or
/// CRI-O's memory, CPU and descriptors watch criusd's too.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Process {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub start_time_seconds: f64,
    pub threads: u64,
    pub open_fds: u64,
    pub max_fds: u64,
}

impl Process {
    /// Reads `/proc/self` (and the boot time from `/proc/stat`).
    pub fn read_self() -> Option<Process> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        Process::parse(&stat, &boot, &limits, open_fds, clock_ticks(), page_size())
    }

    /// The figures from the texts of `/proc/self/stat`, `/proc/stat` and
    /// `/proc/self/limits`.
    pub fn parse(
        stat: &str,
        proc_stat: &str,
        limits: &str,
        open_fds: u64,
        ticks_per_second: u64,
        page_size: u64,
    ) -> Option<Process> {
        // The fields after the command name, which is in parentheses and may hold
        // spaces: the state is field 3 of proc(5), so field n is at index n - 3.
        let fields: Vec<&str> = stat
            .get(stat.rfind(')')? + 1..)?
            .split_whitespace()
            .collect();
        let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
        let ticks = ticks_per_second.max(1) as f64;
        let boot_time: u64 = proc_stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        let max_fds = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Some(Process {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
            threads: field(20)?,
            start_time_seconds: boot_time as f64 + field(22)? as f64 / ticks,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)? * page_size,
            open_fds,
            max_fds,
        })
    }
}

#[allow(unsafe_code)]
fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(n).unwrap_or(100)
}

#[allow(unsafe_code)]
fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).unwrap_or(4096)
}

impl Snapshot {
    /// Counts the answers of ListPodSandbox and ListContainers by state.
    pub fn count(&mut self, pods: &[cri::PodSandbox], containers: &[cri::Container]) {
        for state in ["ready", "notready"] {
            self.pods.insert(state, 0);
        }
        for state in ["created", "running", "exited", "unknown"] {
            self.containers.insert(state, 0);
        }
        for p in pods {
            let s = match cri::PodSandboxState::try_from(p.state) {
                Ok(cri::PodSandboxState::SandboxReady) => "ready",
                _ => "notready",
            };
            *self.pods.entry(s).or_default() += 1;
        }
        for c in containers {
            let s = match cri::ContainerState::try_from(c.state) {
                Ok(cri::ContainerState::ContainerCreated) => "created",
                Ok(cri::ContainerState::ContainerRunning) => "running",
                Ok(cri::ContainerState::ContainerExited) => "exited",
                _ => "unknown",
            };
            *self.containers.entry(s).or_default() += 1;
        }
    }
}

/// Reads a [`Snapshot`] at each scrape.
pub type SnapshotFn =
    Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, Snapshot> + Send + Sync + 'static>;

impl Metrics {
    /// The exposition text: the per-call metrics and `snap`.
    pub fn render(&self, snap: &Snapshot) -> String {
        let mut out = String::new();
        let ops = self
            .operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        header(
            &mut out,
            "crius_operations_total",
            "counter",
            "CRI calls served, by operation.",
        );
        for (rpc, op) in ops.iter() {
            let _ = writeln!(
                out,
                "crius_operations_total{{operation=\"{rpc}\"}} {}",
                op.count
            );
        }
        header(
            &mut out,
            "crius_operations_errors_total",
            "counter",
            "CRI calls that failed, by operation and gRPC code.",
        );
        for (rpc, op) in ops.iter() {
            for (code, n) in &op.errors {
                let _ = writeln!(
                    out,
                    "crius_operations_errors_total{{operation=\"{rpc}\",code=\"{code}\"}} {n}"
                );
            }
        }
        header(
            &mut out,
            "crius_operations_latency_seconds",
            "histogram",
            "Latency of CRI calls, by operation.",
        );
        for (rpc, op) in ops.iter() {
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(op.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "crius_operations_latency_seconds_bucket{{operation=\"{rpc}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "crius_operations_latency_seconds_bucket{{operation=\"{rpc}\",le=\"+Inf\"}} {}",
                op.count
            );
            let _ = writeln!(
                out,
                "crius_operations_latency_seconds_sum{{operation=\"{rpc}\"}} {}",
                op.sum_secs
            );
            let _ = writeln!(
                out,
                "crius_operations_latency_seconds_count{{operation=\"{rpc}\"}} {}",
                op.count
            );
        }
        drop(ops);
        header(&mut out, "crius_pods", "gauge", "Pod sandboxes, by state.");
        for (state, n) in &snap.pods {
            let _ = writeln!(out, "crius_pods{{state=\"{state}\"}} {n}");
        }
        header(
            &mut out,
            "crius_containers",
            "gauge",
            "Containers, by state.",
        );
        for (state, n) in &snap.containers {
            let _ = writeln!(out, "crius_containers{{state=\"{state}\"}} {n}");
        }
        for (name, help, v) in [
            (
                "crius_network_ready",
                "Whether the CRI's NetworkReady condition holds.",
                snap.network_ready,
            ),
            (
                "crius_runtime_ready",
                "Whether the CRI's RuntimeReady condition holds.",
                snap.runtime_ready,
            ),
        ] {
            header(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {}", u8::from(v));
        }
        header(
            &mut out,
            "crius_image_pulls_total",
            "counter",
            "Image pulls, by the image's registry and result.",
        );
        for (registry, c) in &snap.pulls {
            for (result, n) in [("succeeded", c.succeeded), ("failed", c.failed)] {
                let _ = writeln!(
                    out,
                    "crius_image_pulls_total{{registry=\"{registry}\",result=\"{result}\"}} {n}"
                );
            }
        }
        type Of = fn(&crius_images::PullCounts) -> f64;
        let per_registry: [(&str, &str, Of); 2] = [
            (
                "crius_image_pull_bytes_total",
                "Bytes downloaded by successful pulls, by the image's registry.",
                |c| c.bytes as f64,
            ),
            (
                "crius_image_pull_seconds_total",
                "Time successful pulls took, summed, by the image's registry.",
                |c| c.seconds,
            ),
        ];
        for (name, help, of) in per_registry {
            header(&mut out, name, "counter", help);
            for (registry, c) in &snap.pulls {
                let _ = writeln!(out, "{name}{{registry=\"{registry}\"}} {}", of(c));
            }
        }
        if let Some(p) = &snap.process {
            let gauges: [(&str, &str, &str, f64); 7] = [
                (
                    "process_cpu_seconds_total",
                    "counter",
                    "User and system CPU time spent, seconds.",
                    p.cpu_seconds,
                ),
                (
                    "process_resident_memory_bytes",
                    "gauge",
                    "Resident memory size, bytes.",
                    p.resident_bytes as f64,
                ),
                (
                    "process_virtual_memory_bytes",
                    "gauge",
                    "Virtual memory size, bytes.",
                    p.virtual_bytes as f64,
                ),
                (
                    "process_start_time_seconds",
                    "gauge",
                    "Start time of the process since the Unix epoch, seconds.",
                    p.start_time_seconds,
                ),
                (
                    "process_open_fds",
                    "gauge",
                    "Open file descriptors.",
                    p.open_fds as f64,
                ),
                (
                    "process_max_fds",
                    "gauge",
                    "The limit on open file descriptors.",
                    p.max_fds as f64,
                ),
                (
                    "process_threads",
                    "gauge",
                    "Threads of the process.",
                    p.threads as f64,
                ),
            ];
            for (name, kind, help, v) in gauges {
                header(&mut out, name, kind, help);
                let _ = writeln!(out, "{name} {v}");
            }
        }
        if let Some(h) = &snap.heap {
            header(
                &mut out,
                "crius_heap_bytes",
                "gauge",
                "glibc's heap: bytes in use, and freed bytes the allocator holds.",
            );
            let _ = writeln!(out, "crius_heap_bytes{{state=\"in_use\"}} {}", h.in_use);
            let _ = writeln!(out, "crius_heap_bytes{{state=\"free\"}} {}", h.free);
        }
        header(&mut out, "crius_build_info", "gauge", "criusd's version.");
        let _ = writeln!(
            out,
            "crius_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The gRPC code's name as grpc-go spells it (`NotFound`).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// Serves `/metrics` on `listener` until `stop`.
pub fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    snapshot: SnapshotFn,
    stop: CancellationToken,
) {
    let addr = listener.local_addr().ok();
    info!(address = ?addr, "metrics endpoint listening at /metrics");
    tokio::spawn(async move {
        loop {
            let (io, _) = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!("metrics endpoint: accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (metrics, snapshot) = (metrics.clone(), snapshot.clone());
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (metrics, snapshot) = (metrics.clone(), snapshot.clone());
                async move {
                    if req.uri().path() == "/metrics" {
                        let mut snap = snapshot().await;
                        snap.process = Process::read_self();
                        snap.heap = crate::heap::usage();
                        Response::builder()
                            .header("content-type", "text/plain; version=0.0.4")
                            .body(Full::new(Bytes::from(metrics.render(&snap))))
                    } else {
                        Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from_static(b"metrics are at /metrics\n")))
                    }
                }
            });
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(io), service);
                let _ = conn.await;
            });
        }
    });
}

/// Binds the metrics address (`host:port`).
pub async fn bind(address: &str) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context as _;
    let addr: SocketAddr = address
        .parse()
        .with_context(|| format!("config key `metrics.address`: {address:?} is not host:port"))?;
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint on {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_become_counters_errors_and_cumulative_buckets() {
        let m = Metrics::default();
        m.observe("RunPodSandbox", Duration::from_millis(3), Code::Ok);
        m.observe("RunPodSandbox", Duration::from_millis(40), Code::Ok);
        m.observe("RunPodSandbox", Duration::from_secs(100), Code::NotFound);
        let mut snap = Snapshot {
            pulls: vec![(
                "registry.example".into(),
                crius_images::PullCounts {
                    succeeded: 2,
                    failed: 1,
                    bytes: 300,
                    seconds: 0.5,
                },
            )],
            ..Default::default()
        };
        snap.count(
            &[cri::PodSandbox {
                state: cri::PodSandboxState::SandboxReady as i32,
                ..Default::default()
            }],
            &[],
        );
        // pid (comm with spaces) state ppid ... as proc(5) lays them out.
        let stat = "42 (crius d) S 1 42 42 0 -1 4194560 100 0 0 0 100 50 0 0 20 0 7 0 50 1000000 2 18446744073709551615";
        snap.process = Process::parse(
            stat,
            "cpu  1 2 3\nbtime 1000\n",
            "Limit Soft Limit Hard Limit Units\nMax open files            1048576              1048576              files\n",
            12,
            100,
            4096,
        );
        assert_eq!(snap.process.map(|p| p.virtual_bytes), Some(1_000_000));
        snap.heap = Some(crate::heap::Usage {
            in_use: 100,
            free: 20,
        });
        let text = m.render(&snap);
        for line in [
            "crius_operations_total{operation=\"RunPodSandbox\"} 3",
            "crius_operations_errors_total{operation=\"RunPodSandbox\",code=\"NotFound\"} 1",
            "crius_operations_latency_seconds_bucket{operation=\"RunPodSandbox\",le=\"0.001\"} 0",
            "crius_operations_latency_seconds_bucket{operation=\"RunPodSandbox\",le=\"0.005\"} 1",
            "crius_operations_latency_seconds_bucket{operation=\"RunPodSandbox\",le=\"0.05\"} 2",
            "crius_operations_latency_seconds_bucket{operation=\"RunPodSandbox\",le=\"60\"} 2",
            "crius_operations_latency_seconds_bucket{operation=\"RunPodSandbox\",le=\"+Inf\"} 3",
            "crius_operations_latency_seconds_count{operation=\"RunPodSandbox\"} 3",
            "crius_pods{state=\"ready\"} 1",
            "crius_pods{state=\"notready\"} 0",
            "crius_containers{state=\"running\"} 0",
            "crius_network_ready 0",
            "crius_image_pulls_total{registry=\"registry.example\",result=\"succeeded\"} 2",
            "crius_image_pulls_total{registry=\"registry.example\",result=\"failed\"} 1",
            "crius_image_pull_bytes_total{registry=\"registry.example\"} 300",
            "# TYPE crius_operations_latency_seconds histogram",
            "process_resident_memory_bytes 8192",
            "process_cpu_seconds_total 1.5",
            "process_start_time_seconds 1000.5",
            "process_threads 7",
            "process_open_fds 12",
            "process_max_fds 1048576",
            "crius_heap_bytes{state=\"in_use\"} 100",
            "crius_heap_bytes{state=\"free\"} 20",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}

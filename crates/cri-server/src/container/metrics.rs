//! The CRI metrics (ListMetricDescriptors, ListPodSandboxMetrics): cAdvisor's
//! metric names, types and label sets, so that a kubelet serving `/metrics/cadvisor`
//! from the runtime (PodAndContainerStatsFromCRI) exports what dashboards expect.
//!
//! Every metric has the labels `container`, `id`, `image`, `name`, `namespace`,
//! `pod` (cAdvisor's, as the kubelet exports them), then its own (`cpu`,
//! `interface`, `device`, ...). A container's metrics come from one [`Sample`] of its
//! cgroup (v1 or v2 alike) and its writable layer; a pod's own are its network
//! interfaces (`container` empty, `id` the pod id). Only running containers have
//! metrics, as a cgroup exists only while something runs in it.
//!
//! The CRI carries integers: metrics in seconds are whole seconds (rounded down), as
//! containerd and CRI-O report them. Where cAdvisor emits a metric only under a
//! condition, so does crius: the CFS counters and `container_spec_cpu_quota` only
//! for a container with a CPU quota, the pressure metrics only where the cgroup has
//! PSI files (cgroup v2), the hugepage metrics only where the hugetlb controller is.
//! cAdvisor's `container_hugetlb_failcnt` is left out: a client checking that every
//! descriptor has values (critest does) would fail on every node without hugepages.

use std::path::Path;

use crius_cri_api::v1 as cri;
use crius_store::{ContainerRecord, ContainerState, PodRecord};

use super::Containers;
use super::sample::{self, Sample};
use crate::error::CriResult;
use crate::host::cgroup;
use crate::util::{blocking, now_nanos};
use cri::MetricType::{Counter, Gauge};

/// The labels every metric has, in this order.
pub const BASE_LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

/// One metric crius reports.
pub struct Desc {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: cri::MetricType,
    /// Labels after [`BASE_LABELS`].
    pub extra: &'static [&'static str],
}

const fn d(
    name: &'static str,
    kind: cri::MetricType,
    extra: &'static [&'static str],
    help: &'static str,
) -> Desc {
    Desc {
        name,
        help,
        kind,
        extra,
    }
}

const DEVICE: &[&str] = &["device"];
const IFACE: &[&str] = &["interface"];
const PAGESIZE: &[&str] = &["pagesize"];

/// Every metric crius can report.
pub const DESCRIPTORS: &[Desc] = &[
    d(
        "container_last_seen",
        Gauge,
        &[],
        "When the runtime last saw the container, in seconds since the epoch.",
    ),
    d(
        "container_start_time_seconds",
        Gauge,
        &[],
        "When the container started, in seconds since the epoch.",
    ),
    d(
        "container_cpu_usage_seconds_total",
        Counter,
        &["cpu"],
        "CPU time the container used, in seconds (cpu=\"total\": all CPUs).",
    ),
    d(
        "container_cpu_user_seconds_total",
        Counter,
        &[],
        "CPU time the container used in user mode, in seconds.",
    ),
    d(
        "container_cpu_system_seconds_total",
        Counter,
        &[],
        "CPU time the container used in kernel mode, in seconds.",
    ),
    d(
        "container_cpu_cfs_periods_total",
        Counter,
        &[],
        "CFS enforcement periods that elapsed while the container ran.",
    ),
    d(
        "container_cpu_cfs_throttled_periods_total",
        Counter,
        &[],
        "CFS enforcement periods in which the container was throttled.",
    ),
    d(
        "container_cpu_cfs_throttled_seconds_total",
        Counter,
        &[],
        "Time the container spent throttled by its CPU quota, in seconds.",
    ),
    d(
        "container_memory_usage_bytes",
        Gauge,
        &[],
        "Memory the container uses, page cache included, in bytes.",
    ),
    d(
        "container_memory_max_usage_bytes",
        Gauge,
        &[],
        "The most memory the container has used, in bytes.",
    ),
    d(
        "container_memory_working_set_bytes",
        Gauge,
        &[],
        "Memory usage less inactive file pages, in bytes (what eviction looks at).",
    ),
    d(
        "container_memory_rss",
        Gauge,
        &[],
        "Anonymous memory of the container (RSS), in bytes.",
    ),
    d(
        "container_memory_cache",
        Gauge,
        &[],
        "Page cache memory of the container, in bytes.",
    ),
    d(
        "container_memory_swap",
        Gauge,
        &[],
        "Swap the container uses, in bytes.",
    ),
    d(
        "container_memory_mapped_file",
        Gauge,
        &[],
        "Memory-mapped files of the container, in bytes.",
    ),
    d(
        "container_memory_kernel_usage",
        Gauge,
        &[],
        "Kernel memory charged to the container, in bytes.",
    ),
    d(
        "container_memory_total_active_file_bytes",
        Gauge,
        &[],
        "Active file-backed memory of the container, in bytes.",
    ),
    d(
        "container_memory_total_inactive_file_bytes",
        Gauge,
        &[],
        "Inactive file-backed memory of the container, in bytes.",
    ),
    d(
        "container_memory_failcnt",
        Counter,
        &[],
        "Times the container's memory usage reached its limit.",
    ),
    d(
        "container_memory_failures_total",
        Counter,
        &["failure_type", "scope"],
        "Page faults of the container (failure_type pgfault or pgmajfault; scope container or hierarchy).",
    ),
    d(
        "container_oom_events_total",
        Counter,
        &[],
        "Processes of the container the OOM killer killed.",
    ),
    d(
        "container_spec_cpu_period",
        Gauge,
        &[],
        "The container's CFS period, in microseconds.",
    ),
    d(
        "container_spec_cpu_quota",
        Gauge,
        &[],
        "The container's CFS quota per period, in microseconds.",
    ),
    d(
        "container_spec_cpu_shares",
        Gauge,
        &[],
        "The container's CPU shares.",
    ),
    d(
        "container_spec_memory_limit_bytes",
        Gauge,
        &[],
        "The container's memory limit, in bytes (0: none).",
    ),
    d(
        "container_spec_memory_reservation_limit_bytes",
        Gauge,
        &[],
        "The container's memory reservation, in bytes (0: none).",
    ),
    d(
        "container_spec_memory_swap_limit_bytes",
        Gauge,
        &[],
        "The container's memory plus swap limit, in bytes (0: none).",
    ),
    d(
        "container_processes",
        Gauge,
        &[],
        "Processes in the container.",
    ),
    d("container_threads", Gauge, &[], "Threads in the container."),
    d(
        "container_threads_max",
        Gauge,
        &[],
        "The most threads the container may have (0: no limit).",
    ),
    d(
        "container_file_descriptors",
        Gauge,
        &[],
        "File descriptors the container's processes hold open.",
    ),
    d(
        "container_sockets",
        Gauge,
        &[],
        "Sockets the container's processes hold open.",
    ),
    d(
        "container_ulimits_soft",
        Gauge,
        &["ulimit"],
        "Soft resource limits of the container's init process.",
    ),
    d(
        "container_fs_usage_bytes",
        Gauge,
        DEVICE,
        "Bytes the container's writable layer uses on its file system.",
    ),
    d(
        "container_fs_limit_bytes",
        Gauge,
        DEVICE,
        "Size of the file system holding the container's writable layer, in bytes.",
    ),
    d(
        "container_fs_inodes_total",
        Gauge,
        DEVICE,
        "Inodes of the file system holding the container's writable layer.",
    ),
    d(
        "container_fs_inodes_free",
        Gauge,
        DEVICE,
        "Free inodes of the file system holding the container's writable layer.",
    ),
    d(
        "container_fs_reads_bytes_total",
        Counter,
        DEVICE,
        "Bytes the container read from the device.",
    ),
    d(
        "container_fs_reads_total",
        Counter,
        DEVICE,
        "Reads the container completed on the device.",
    ),
    d(
        "container_fs_writes_bytes_total",
        Counter,
        DEVICE,
        "Bytes the container wrote to the device.",
    ),
    d(
        "container_fs_writes_total",
        Counter,
        DEVICE,
        "Writes the container completed on the device.",
    ),
    d(
        "container_blkio_device_usage_total",
        Counter,
        &["device", "major", "minor", "operation"],
        "Bytes of block I/O of the container, by device and operation.",
    ),
    d(
        "container_hugetlb_usage_bytes",
        Gauge,
        PAGESIZE,
        "Hugepage memory the container uses, in bytes.",
    ),
    d(
        "container_hugetlb_max_usage_bytes",
        Gauge,
        PAGESIZE,
        "The most hugepage memory the container has used, in bytes.",
    ),
    d(
        "container_pressure_cpu_stalled_seconds_total",
        Counter,
        &[],
        "Time no task of the container could run for lack of CPU, in seconds.",
    ),
    d(
        "container_pressure_cpu_waiting_seconds_total",
        Counter,
        &[],
        "Time tasks of the container waited for CPU, in seconds.",
    ),
    d(
        "container_pressure_memory_stalled_seconds_total",
        Counter,
        &[],
        "Time no task of the container could make progress for lack of memory, in seconds.",
    ),
    d(
        "container_pressure_memory_waiting_seconds_total",
        Counter,
        &[],
        "Time tasks of the container waited for memory, in seconds.",
    ),
    d(
        "container_pressure_io_stalled_seconds_total",
        Counter,
        &[],
        "Time no task of the container could make progress waiting for I/O, in seconds.",
    ),
    d(
        "container_pressure_io_waiting_seconds_total",
        Counter,
        &[],
        "Time tasks of the container waited for I/O, in seconds.",
    ),
    d(
        "container_network_receive_bytes_total",
        Counter,
        IFACE,
        "Bytes the pod received on the interface.",
    ),
    d(
        "container_network_receive_packets_total",
        Counter,
        IFACE,
        "Packets the pod received on the interface.",
    ),
    d(
        "container_network_receive_packets_dropped_total",
        Counter,
        IFACE,
        "Packets dropped while the pod received on the interface.",
    ),
    d(
        "container_network_receive_errors_total",
        Counter,
        IFACE,
        "Errors while the pod received on the interface.",
    ),
    d(
        "container_network_transmit_bytes_total",
        Counter,
        IFACE,
        "Bytes the pod sent on the interface.",
    ),
    d(
        "container_network_transmit_packets_total",
        Counter,
        IFACE,
        "Packets the pod sent on the interface.",
    ),
    d(
        "container_network_transmit_packets_dropped_total",
        Counter,
        IFACE,
        "Packets dropped while the pod sent on the interface.",
    ),
    d(
        "container_network_transmit_errors_total",
        Counter,
        IFACE,
        "Errors while the pod sent on the interface.",
    ),
];

/// ListMetricDescriptors.
pub fn descriptors() -> Vec<cri::MetricDescriptor> {
    DESCRIPTORS
        .iter()
        .map(|d| cri::MetricDescriptor {
            name: d.name.to_string(),
            help: d.help.to_string(),
            label_keys: BASE_LABELS
                .iter()
                .chain(d.extra)
                .map(|l| l.to_string())
                .collect(),
        })
        .collect()
}

fn desc(name: &str) -> Option<&'static Desc> {
    DESCRIPTORS.iter().find(|d| d.name == name)
}

/// Metrics with one set of base label values and one timestamp.
pub struct Metrics {
    base: Vec<String>,
    timestamp: i64,
    pub out: Vec<cri::Metric>,
}

impl Metrics {
    pub fn new(base: [String; 6], timestamp: i64) -> Metrics {
        Metrics {
            base: base.into(),
            timestamp,
            out: Vec::new(),
        }
    }

    /// Adds a value of the metric `name` with its own labels' values `extra`. A name
    /// not in [`DESCRIPTORS`], or the wrong number of labels, is a bug.
    fn push(&mut self, name: &str, value: u64, extra: &[&str]) {
        let Some(d) = desc(name) else {
            debug_assert!(false, "metric {name} has no descriptor");
            return;
        };
        debug_assert_eq!(d.extra.len(), extra.len(), "labels of {name}");
        self.out.push(cri::Metric {
            name: d.name.to_string(),
            timestamp: self.timestamp,
            metric_type: d.kind as i32,
            label_values: self
                .base
                .iter()
                .cloned()
                .chain(extra.iter().map(|s| s.to_string()))
                .collect(),
            value: Some(cri::UInt64Value { value }),
        });
    }

    fn one(&mut self, name: &str, value: u64) {
        self.push(name, value, &[]);
    }
}

/// Whole seconds of a nanosecond count.
fn secs_ns(ns: u64) -> u64 {
    ns / 1_000_000_000
}

/// Whole seconds of a microsecond count.
fn secs_us(us: u64) -> u64 {
    us / 1_000_000
}

/// The base label values of a container's metrics.
pub fn container_labels(c: &ContainerRecord, pod: &PodRecord) -> [String; 6] {
    let pmd = pod.config.metadata.clone().unwrap_or_default();
    [
        c.config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default(),
        c.id.clone(),
        c.config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| c.image.clone()),
        c.name.clone(),
        pmd.namespace,
        pmd.name,
    ]
}

/// The base label values of a pod's own metrics (its network).
pub fn pod_labels(pod: &PodRecord) -> [String; 6] {
    let pmd = pod.config.metadata.clone().unwrap_or_default();
    [
        String::new(),
        pod.id.clone(),
        String::new(),
        String::new(),
        pmd.namespace,
        pmd.name,
    ]
}

/// The writable layer of a container and the file system it is on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filesystem {
    pub device: String,
    pub usage_bytes: u64,
    pub capacity_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

/// What a container's metrics are made of, besides its record.
pub struct ContainerInput<'a> {
    pub sample: &'a Sample,
    pub fs: Option<&'a Filesystem>,
    /// Device names by (major, minor), for the block I/O labels.
    pub device_name: &'a dyn Fn(u64, u64) -> String,
    pub now_secs: u64,
    pub started_at_nanos: i64,
}

/// A running container's metrics.
pub fn container_metrics(m: &mut Metrics, x: &ContainerInput<'_>) {
    let s = x.sample;
    m.one("container_last_seen", x.now_secs);
    m.one(
        "container_start_time_seconds",
        u64::try_from(x.started_at_nanos.max(0)).unwrap_or(0) / 1_000_000_000,
    );
    let quota = s.cpu_spec.and_then(|c| c.quota_us);
    if let Some(cpu) = s.cpu {
        m.push(
            "container_cpu_usage_seconds_total",
            secs_ns(cpu.usage_ns),
            &["total"],
        );
        m.one("container_cpu_user_seconds_total", secs_ns(cpu.user_ns));
        m.one("container_cpu_system_seconds_total", secs_ns(cpu.system_ns));
        if quota.is_some() {
            m.one("container_cpu_cfs_periods_total", cpu.periods);
            m.one(
                "container_cpu_cfs_throttled_periods_total",
                cpu.throttled_periods,
            );
            m.one(
                "container_cpu_cfs_throttled_seconds_total",
                secs_ns(cpu.throttled_ns),
            );
        }
    }
    if let Some(mem) = s.memory {
        m.one("container_memory_usage_bytes", mem.usage);
        m.one(
            "container_memory_max_usage_bytes",
            mem.max_usage.unwrap_or(mem.usage),
        );
        m.one("container_memory_working_set_bytes", mem.working_set);
        m.one("container_memory_rss", mem.rss);
        m.one("container_memory_cache", mem.cache);
        m.one("container_memory_swap", mem.swap);
        m.one("container_memory_mapped_file", mem.mapped_file);
        m.one("container_memory_kernel_usage", mem.kernel);
        m.one("container_memory_total_active_file_bytes", mem.active_file);
        m.one(
            "container_memory_total_inactive_file_bytes",
            mem.inactive_file,
        );
        m.one("container_memory_failcnt", mem.failcnt);
        let f = "container_memory_failures_total";
        m.push(f, mem.pgfault, &["pgfault", "container"]);
        m.push(f, mem.pgmajfault, &["pgmajfault", "container"]);
        m.push(f, mem.pgfault_hierarchy, &["pgfault", "hierarchy"]);
        m.push(f, mem.pgmajfault_hierarchy, &["pgmajfault", "hierarchy"]);
        m.one("container_oom_events_total", mem.oom_kills);
    }
    if let Some(cpu) = s.cpu_spec {
        m.one("container_spec_cpu_period", cpu.period_us);
        if let Some(q) = cpu.quota_us {
            m.one("container_spec_cpu_quota", q);
        }
        m.one("container_spec_cpu_shares", cpu.shares);
    }
    if let Some(mem) = s.memory_spec {
        m.one("container_spec_memory_limit_bytes", mem.limit);
        m.one(
            "container_spec_memory_reservation_limit_bytes",
            mem.reservation,
        );
        m.one("container_spec_memory_swap_limit_bytes", mem.swap_limit);
    }
    m.one("container_processes", s.procs.processes);
    m.one("container_file_descriptors", s.procs.fds);
    m.one("container_sockets", s.procs.sockets);
    if let Some(p) = s.pids {
        m.one("container_threads", p.current);
        m.one("container_threads_max", p.max);
    }
    if let Some(n) = s.procs.max_open_files {
        m.push("container_ulimits_soft", n, &["max_open_files"]);
    }
    if let Some(fs) = x.fs {
        let dev = [fs.device.as_str()];
        m.push("container_fs_usage_bytes", fs.usage_bytes, &dev);
        m.push("container_fs_limit_bytes", fs.capacity_bytes, &dev);
        m.push("container_fs_inodes_total", fs.inodes, &dev);
        m.push("container_fs_inodes_free", fs.inodes_free, &dev);
    }
    for io in &s.io {
        let name = (x.device_name)(io.major, io.minor);
        let dev = [name.as_str()];
        m.push("container_fs_reads_bytes_total", io.read_bytes, &dev);
        m.push("container_fs_reads_total", io.reads, &dev);
        m.push("container_fs_writes_bytes_total", io.write_bytes, &dev);
        m.push("container_fs_writes_total", io.writes, &dev);
        let (major, minor) = (io.major.to_string(), io.minor.to_string());
        for (op, v) in &io.bytes_by_op {
            m.push(
                "container_blkio_device_usage_total",
                *v,
                &[name.as_str(), major.as_str(), minor.as_str(), op.as_str()],
            );
        }
    }
    for h in &s.hugetlb {
        let size = [h.pagesize.as_str()];
        m.push("container_hugetlb_usage_bytes", h.usage, &size);
        if let Some(max) = h.max_usage {
            m.push("container_hugetlb_max_usage_bytes", max, &size);
        }
    }
    let psi = [
        ("cpu", s.psi.cpu),
        ("memory", s.psi.memory),
        ("io", s.psi.io),
    ];
    for (what, p) in psi {
        if let Some(p) = p {
            m.one(
                &format!("container_pressure_{what}_stalled_seconds_total"),
                secs_us(p.full_us),
            );
            m.one(
                &format!("container_pressure_{what}_waiting_seconds_total"),
                secs_us(p.some_us),
            );
        }
    }
}

/// One interface of `/proc/<pid>/net/dev`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// The interfaces of a `/proc/<pid>/net/dev` text, loopback left out.
pub fn net_dev(text: &str) -> Vec<Interface> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|v| v.parse().ok())
                .collect::<Option<_>>()?;
            let name = name.trim();
            (name != "lo" && f.len() >= 16).then(|| Interface {
                name: name.to_string(),
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            })
        })
        .collect()
}

/// A pod's own metrics: its interfaces.
pub fn pod_metrics(m: &mut Metrics, interfaces: &[Interface]) {
    for i in interfaces {
        let l = [i.name.as_str()];
        for (name, value) in [
            ("container_network_receive_bytes_total", i.rx_bytes),
            ("container_network_receive_packets_total", i.rx_packets),
            (
                "container_network_receive_packets_dropped_total",
                i.rx_dropped,
            ),
            ("container_network_receive_errors_total", i.rx_errors),
            ("container_network_transmit_bytes_total", i.tx_bytes),
            ("container_network_transmit_packets_total", i.tx_packets),
            (
                "container_network_transmit_packets_dropped_total",
                i.tx_dropped,
            ),
            ("container_network_transmit_errors_total", i.tx_errors),
        ] {
            m.push(name, value, &l);
        }
    }
}

/// The source (device) of the mount that holds `path`, from a `/proc/self/mountinfo`
/// text: the deepest mount point that is `path` or one of its parents.
pub fn mount_source(mountinfo: &str, path: &Path) -> Option<String> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let mount_point = f.nth(4)?;
            let mut rest = f.skip_while(|x| *x != "-");
            rest.next()?;
            let _fstype = rest.next()?;
            let source = rest.next()?;
            Some((unescape(mount_point), source.to_string()))
        })
        .filter(|(mp, _)| path.starts_with(mp))
        .max_by_key(|(mp, _)| mp.components().count())
        .map(|(_, source)| source)
}

/// mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> std::path::PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    use std::os::unix::ffi::OsStringExt;
    std::path::PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// A device's name from sysfs (`/sys/dev/block/8:0/uevent`'s DEVNAME), as
/// `/dev/<name>`; `major:minor` when sysfs does not say.
pub fn block_device_name(sys: &Path, major: u64, minor: u64) -> String {
    std::fs::read_to_string(sys.join(format!("dev/block/{major}:{minor}/uevent")))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("DEVNAME="))
                .map(|n| format!("/dev/{n}"))
        })
        .unwrap_or_else(|| format!("{major}:{minor}"))
}

/// Where cgroup file systems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl Containers {
    /// ListPodSandboxMetrics: every pod (none being created) with its network, and
    /// its running containers with theirs.
    pub async fn pod_sandbox_metrics(&self) -> CriResult<Vec<cri::PodSandboxMetrics>> {
        let pods = self
            .sandboxes
            .records("", &std::collections::HashMap::new())
            .await?;
        let snapshots = self.config.state_dir.join("snapshots");
        let layer_fs = blocking(move || Ok(layer_filesystem(&snapshots))).await?;
        let mut out = Vec::with_capacity(pods.len());
        for pod in pods {
            let mut container_metrics = Vec::new();
            let mut in_netns = None;
            for c in self.of_pod(&pod.id).await? {
                if c.state != ContainerState::Running {
                    continue;
                }
                if c.pid > 0 {
                    in_netns.get_or_insert(c.pid);
                }
                let (rootfs, layer_fs) = (self.rootfs.clone(), layer_fs.clone());
                let labels = container_labels(&c, &pod);
                let metrics =
                    blocking(move || Ok(one_container(&c, labels, &*rootfs, layer_fs.as_ref())))
                        .await?;
                if let Some(m) = metrics {
                    container_metrics.push(m);
                }
            }
            let mut m = Metrics::new(pod_labels(&pod), now_nanos());
            // Host-network pods have the node's interfaces, which are not theirs.
            if let (true, Some(pid)) = (pod.namespaces.net.is_some(), in_netns) {
                if let Ok(text) = tokio::fs::read_to_string(format!("/proc/{pid}/net/dev")).await {
                    pod_metrics(&mut m, &net_dev(&text));
                }
            }
            out.push(cri::PodSandboxMetrics {
                pod_sandbox_id: pod.id.clone(),
                metrics: m.out,
                container_metrics,
            });
        }
        Ok(out)
    }
}

/// The file system the writable layers are on (size, inodes, device), without any
/// layer's usage. Blocking.
fn layer_filesystem(snapshots: &Path) -> Option<Filesystem> {
    let st = nix::sys::statvfs::statvfs(snapshots).ok()?;
    let device = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|t| mount_source(&t, snapshots))
        .unwrap_or_default();
    Some(Filesystem {
        device,
        usage_bytes: 0,
        capacity_bytes: st.blocks().saturating_mul(st.fragment_size()),
        inodes: st.files(),
        inodes_free: st.files_free(),
    })
}

/// One reading of a running container's cgroup (None when it is gone). Blocking.
pub(super) fn sample_of(c: &ContainerRecord) -> Option<sample::Sample> {
    let rel = match cgroup::relative_dir_of(&c.bundle) {
        Ok(Some(rel)) => rel,
        Ok(None) => return None,
        Err(e) => {
            tracing::debug!(container_id = %c.id, error = %e, "no cgroup to read");
            return None;
        }
    };
    sample::read(Path::new(CGROUP_ROOT), Path::new("/proc"), &rel, c.pid)
}

/// One running container's metrics (None when its cgroup is gone). Blocking.
fn one_container(
    c: &ContainerRecord,
    labels: [String; 6],
    rootfs: &dyn crate::host::Rootfs,
    layer_fs: Option<&Filesystem>,
) -> Option<cri::ContainerMetrics> {
    let ts = now_nanos();
    let s = sample_of(c)?;
    let fs = layer_fs.map(|f| {
        let usage = rootfs.usage(&c.id);
        Filesystem {
            usage_bytes: usage.map_or(0, |u| u.bytes),
            ..f.clone()
        }
    });
    let mut m = Metrics::new(labels, ts);
    let sys = Path::new("/sys");
    container_metrics(
        &mut m,
        &ContainerInput {
            sample: &s,
            fs: fs.as_ref(),
            device_name: &|major, minor| block_device_name(sys, major, minor),
            now_secs: u64::try_from(ts).unwrap_or(0) / 1_000_000_000,
            started_at_nanos: if c.started_at > 0 {
                c.started_at
            } else {
                c.created_at
            },
        },
    );
    Some(cri::ContainerMetrics {
        container_id: c.id.clone(),
        metrics: m.out,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::container::sample::{Cpu, CpuSpec, Memory, MemorySpec, Pids, Pressure, Procs, Psi};

    fn by_name(m: &Metrics) -> std::collections::HashMap<String, Vec<&cri::Metric>> {
        let mut out: std::collections::HashMap<String, Vec<&cri::Metric>> = Default::default();
        for x in &m.out {
            out.entry(x.name.clone()).or_default().push(x);
        }
        out
    }

    #[test]
    fn descriptors_are_unique_and_have_help_and_labels() {
        let ds = descriptors();
        let names: HashSet<&str> = ds.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names.len(), ds.len(), "no name twice");
        for d in &ds {
            assert!(!d.help.is_empty() && d.label_keys.len() >= 6, "{}", d.name);
            let keys: HashSet<&String> = d.label_keys.iter().collect();
            assert_eq!(keys.len(), d.label_keys.len(), "no label twice: {}", d.name);
        }
    }

    #[test]
    fn a_sample_becomes_cadvisor_metrics_with_matching_labels() {
        let s = Sample {
            v2: true,
            cpu: Some(Cpu {
                usage_ns: 2_900_000_000,
                user_ns: 1_000_000_000,
                system_ns: 999_999_999,
                periods: 40,
                throttled_periods: 7,
                throttled_ns: 3_000_000_000,
            }),
            memory: Some(Memory {
                usage: 100,
                max_usage: None,
                working_set: 80,
                pgfault: 5,
                pgfault_hierarchy: 6,
                oom_kills: 1,
                ..Memory::default()
            }),
            pids: Some(Pids { current: 4, max: 0 }),
            cpu_spec: Some(CpuSpec {
                period_us: 100_000,
                quota_us: Some(20_000),
                shares: 1024,
            }),
            memory_spec: Some(MemorySpec {
                limit: 64 << 20,
                reservation: 0,
                swap_limit: 0,
            }),
            io: sample::io_stat_v2("8:0 rbytes=10 wbytes=20 rios=1 wios=2\n"),
            hugetlb: vec![],
            psi: Psi {
                cpu: Some(Pressure {
                    some_us: 2_500_000,
                    full_us: 1_000_000,
                    ..Pressure::default()
                }),
                ..Psi::default()
            },
            procs: Procs {
                processes: 2,
                fds: 9,
                sockets: 1,
                max_open_files: Some(1024),
            },
        };
        let fs = Filesystem {
            device: "/dev/vda1".into(),
            usage_bytes: 4096,
            capacity_bytes: 1 << 30,
            inodes: 1000,
            inodes_free: 900,
        };
        let base = [
            "app",
            "id1",
            "busybox",
            "app_web_default_uid_0",
            "default",
            "web",
        ]
        .map(String::from);
        let mut m = Metrics::new(base.clone(), 77);
        container_metrics(
            &mut m,
            &ContainerInput {
                sample: &s,
                fs: Some(&fs),
                device_name: &|a, b| format!("dev{a}-{b}"),
                now_secs: 1_700_000_000,
                started_at_nanos: 1_600_000_000_500_000_000,
            },
        );
        let got = by_name(&m);
        let v = |name: &str| got[name][0].value.as_ref().unwrap().value;
        assert_eq!(v("container_cpu_usage_seconds_total"), 2, "whole seconds");
        assert_eq!(
            got["container_cpu_usage_seconds_total"][0].label_values[6],
            "total"
        );
        assert_eq!(v("container_cpu_system_seconds_total"), 0);
        assert_eq!(v("container_cpu_cfs_throttled_seconds_total"), 3);
        assert_eq!(v("container_start_time_seconds"), 1_600_000_000);
        assert_eq!(
            v("container_memory_max_usage_bytes"),
            100,
            "no peak file: the usage"
        );
        assert_eq!(got["container_memory_failures_total"].len(), 4);
        assert_eq!(v("container_spec_cpu_quota"), 20_000);
        assert_eq!(v("container_fs_usage_bytes"), 4096);
        assert_eq!(
            got["container_fs_usage_bytes"][0].label_values[6],
            "/dev/vda1"
        );
        assert_eq!(
            got["container_fs_reads_bytes_total"][0].label_values[6],
            "dev8-0"
        );
        assert_eq!(got["container_blkio_device_usage_total"].len(), 2);
        assert_eq!(v("container_pressure_cpu_stalled_seconds_total"), 1);
        assert_eq!(v("container_pressure_cpu_waiting_seconds_total"), 2);
        assert!(!got.contains_key("container_pressure_io_waiting_seconds_total"));
        assert_eq!(v("container_ulimits_soft"), 1024);
        // Every value's labels are its descriptor's, base first; types match.
        for x in &m.out {
            let d = desc(&x.name).unwrap();
            assert_eq!(x.label_values.len(), 6 + d.extra.len(), "{}", x.name);
            assert_eq!(x.label_values[..6], base, "{}", x.name);
            assert_eq!(x.metric_type, d.kind as i32, "{}", x.name);
            assert_eq!(x.timestamp, 77);
        }
        // Without a quota there are no CFS counters and no quota (as cAdvisor).
        let mut s2 = s.clone();
        s2.cpu_spec = Some(CpuSpec {
            quota_us: None,
            ..s.cpu_spec.unwrap()
        });
        let mut m2 = Metrics::new(base, 1);
        container_metrics(
            &mut m2,
            &ContainerInput {
                sample: &s2,
                fs: None,
                device_name: &|_, _| String::new(),
                now_secs: 0,
                started_at_nanos: 0,
            },
        );
        let got = by_name(&m2);
        assert!(!got.contains_key("container_cpu_cfs_periods_total"));
        assert!(!got.contains_key("container_spec_cpu_quota"));
        assert!(!got.contains_key("container_fs_usage_bytes"));
        assert!(got.contains_key("container_spec_cpu_period"));
    }

    #[test]
    fn pod_interfaces_and_mounts() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0:    5000      40    1    2    0     0          0         0     7000      50    3    4    0     0       0          0
";
        let ifs = net_dev(text);
        assert_eq!(
            ifs,
            vec![Interface {
                name: "eth0".into(),
                rx_bytes: 5000,
                rx_packets: 40,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 7000,
                tx_packets: 50,
                tx_errors: 3,
                tx_dropped: 4,
            }]
        );
        let mut m = Metrics::new(["", "pod1", "", "", "default", "web"].map(String::from), 5);
        pod_metrics(&mut m, &ifs);
        assert_eq!(m.out.len(), 8);
        assert!(m.out.iter().all(|x| x.label_values[6] == "eth0"));

        let mountinfo = "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
                         30 22 0:25 / /var/lib/crius\\040x rw shared:2 - tmpfs tmpfs rw\n\
                         31 22 0:26 / /var rw - xfs /dev/vdb rw\n";
        assert_eq!(
            mount_source(mountinfo, Path::new("/var/lib/crius x/snapshots")).as_deref(),
            Some("tmpfs")
        );
        assert_eq!(
            mount_source(mountinfo, Path::new("/var/lib/other")).as_deref(),
            Some("/dev/vdb")
        );
        assert_eq!(
            mount_source(mountinfo, Path::new("/srv")).as_deref(),
            Some("/dev/vda1")
        );
        assert_eq!(mount_source("garbage", Path::new("/")), None);
    }
}

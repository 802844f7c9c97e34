//! The CRI metrics (ListMetricDescriptors, ListPodSandboxMetrics) against a real
//! criusd: cAdvisor's names, label sets and types, and values checked against the
//! container's own cgroup files and its pod's interfaces.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cri::MetricType::{Counter, Gauge};
use crius_e2e::v1 as cri;
use crius_e2e::*;

/// cAdvisor's type and own labels (after container, id, image, name, namespace,
/// pod) of the metrics a running container and its pod must have here.
const EXPECTED: &[(&str, cri::MetricType, &[&str])] = &[
    ("container_last_seen", Gauge, &[]),
    ("container_start_time_seconds", Gauge, &[]),
    ("container_cpu_usage_seconds_total", Counter, &["cpu"]),
    ("container_cpu_user_seconds_total", Counter, &[]),
    ("container_cpu_system_seconds_total", Counter, &[]),
    ("container_cpu_cfs_periods_total", Counter, &[]),
    ("container_cpu_cfs_throttled_periods_total", Counter, &[]),
    ("container_cpu_cfs_throttled_seconds_total", Counter, &[]),
    ("container_memory_usage_bytes", Gauge, &[]),
    ("container_memory_max_usage_bytes", Gauge, &[]),
    ("container_memory_working_set_bytes", Gauge, &[]),
    ("container_memory_rss", Gauge, &[]),
    ("container_memory_cache", Gauge, &[]),
    ("container_memory_swap", Gauge, &[]),
    ("container_memory_mapped_file", Gauge, &[]),
    ("container_memory_kernel_usage", Gauge, &[]),
    ("container_memory_failcnt", Counter, &[]),
    (
        "container_memory_failures_total",
        Counter,
        &["failure_type", "scope"],
    ),
    ("container_oom_events_total", Counter, &[]),
    ("container_spec_cpu_period", Gauge, &[]),
    ("container_spec_cpu_quota", Gauge, &[]),
    ("container_spec_cpu_shares", Gauge, &[]),
    ("container_spec_memory_limit_bytes", Gauge, &[]),
    ("container_spec_memory_reservation_limit_bytes", Gauge, &[]),
    ("container_spec_memory_swap_limit_bytes", Gauge, &[]),
    ("container_processes", Gauge, &[]),
    ("container_threads", Gauge, &[]),
    ("container_threads_max", Gauge, &[]),
    ("container_file_descriptors", Gauge, &[]),
    ("container_sockets", Gauge, &[]),
    ("container_ulimits_soft", Gauge, &["ulimit"]),
    ("container_fs_usage_bytes", Gauge, &["device"]),
    ("container_fs_limit_bytes", Gauge, &["device"]),
    ("container_fs_inodes_total", Gauge, &["device"]),
    ("container_fs_inodes_free", Gauge, &["device"]),
    (
        "container_network_receive_bytes_total",
        Counter,
        &["interface"],
    ),
    (
        "container_network_receive_packets_total",
        Counter,
        &["interface"],
    ),
    (
        "container_network_receive_packets_dropped_total",
        Counter,
        &["interface"],
    ),
    (
        "container_network_receive_errors_total",
        Counter,
        &["interface"],
    ),
    (
        "container_network_transmit_bytes_total",
        Counter,
        &["interface"],
    ),
    (
        "container_network_transmit_packets_total",
        Counter,
        &["interface"],
    ),
    (
        "container_network_transmit_packets_dropped_total",
        Counter,
        &["interface"],
    ),
    (
        "container_network_transmit_errors_total",
        Counter,
        &["interface"],
    ),
];

const BASE: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn num(path: &Path) -> u64 {
    read(path).trim().parse().unwrap()
}

fn kv(path: &Path, key: &str) -> u64 {
    read(path)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .unwrap_or_else(|| panic!("{key} in {}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

/// The v1 directory of controller `c` for a container's cgroupsPath.
fn v1_dir(c: &str, cgroups_path: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup")
        .join(c)
        .join(cgroups_path.trim_start_matches('/'))
}

type ByName<'a> = HashMap<&'a str, Vec<&'a cri::Metric>>;

fn by_name(metrics: &[cri::Metric]) -> ByName<'_> {
    let mut out: ByName<'_> = HashMap::new();
    for m in metrics {
        out.entry(m.name.as_str()).or_default().push(m);
    }
    out
}

fn value(m: &ByName<'_>, name: &str) -> u64 {
    let v = m.get(name).unwrap_or_else(|| panic!("{name} is missing"));
    assert_eq!(v.len(), 1, "{name} once");
    v[0].value.as_ref().unwrap().value
}

#[tokio::test]
async fn metrics_have_cadvisor_names_labels_and_types_and_the_cgroup_values() {
    assert!(
        !Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
        "this test reads cgroup v1 files (v2 parsing is unit-tested on fixture trees)"
    );
    let (mut f, image, pod) = Fixture::with_busybox_pod("metrics", Options::default()).await;
    let resources = cri::LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 20_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 64 << 20,
        memory_swap_limit_in_bytes: 64 << 20,
        ..Default::default()
    };
    // Burns CPU for seven seconds under a 20% quota (so that its whole CPU seconds
    // are not zero and throttling shows), writes a file into its writable layer,
    // then sleeps. The file is written aside and renamed, so that it is whole once
    // it is there.
    let script = "end=$(($(busybox date +%s) + 7)); \
                  while [ $(busybox date +%s) -lt $end ]; do :; done; \
                  head -c 1048576 /dev/zero > /big.part && mv /big.part /big; exec sleep 3600";
    let id = f
        .run(
            &pod,
            ContainerBuilder::new("worker", &image)
                .command(["/bin/sh", "-c", script])
                .run_as_user(0)
                .resources(resources),
        )
        .await;
    let verbose =
        f.d.rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    let cgroups_path = info["runtimeSpec"]["linux"]["cgroupsPath"]
        .as_str()
        .unwrap()
        .to_string();
    let init = info["pid"].as_u64().unwrap();
    // Wait for the busy loop to end and the file to be written.
    let rt = f.d.rt.clone();
    eventually(
        std::time::Duration::from_secs(60),
        "the worker to settle",
        || {
            let mut rt = rt.clone();
            let id = id.clone();
            async move {
                let out = rt
                    .exec_sync(cri::ExecSyncRequest {
                        container_id: id,
                        cmd: vec!["/bin/sh".into(), "-c".into(), "test -s /big".into()],
                        timeout: 10,
                    })
                    .await
                    .ok()?
                    .into_inner();
                (out.exit_code == 0).then_some(())
            }
        },
    )
    .await;
    let mem = v1_dir("memory", &cgroups_path);
    let cpu = v1_dir("cpu", &cgroups_path);
    let cpuacct = v1_dir("cpuacct", &cgroups_path);
    let pids = v1_dir("pids", &cgroups_path);

    let descs =
        f.d.rt
            .list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
            .await
            .unwrap()
            .into_inner()
            .descriptors;
    let descs: HashMap<&str, &cri::MetricDescriptor> =
        descs.iter().map(|d| (d.name.as_str(), d)).collect();
    for (name, _, extra) in EXPECTED {
        let d = descs
            .get(name)
            .unwrap_or_else(|| panic!("no descriptor {name}"));
        let keys: Vec<&str> = BASE.iter().chain(extra.iter()).copied().collect();
        assert_eq!(d.label_keys, keys, "{name}");
        assert!(!d.help.is_empty(), "{name}");
    }

    let usage_before = num(&cpuacct.join("cpuacct.usage"));
    let throttled_before = kv(&cpu.join("cpu.stat"), "nr_throttled");
    let netdev_pid = init;
    let rx_before = rx_bytes(netdev_pid);
    let all =
        f.d.rt
            .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
            .await
            .unwrap()
            .into_inner()
            .pod_metrics;
    let usage_after = num(&cpuacct.join("cpuacct.usage"));
    let throttled_after = kv(&cpu.join("cpu.stat"), "nr_throttled");
    let rx_after = rx_bytes(netdev_pid);

    let pm = all
        .iter()
        .find(|p| p.pod_sandbox_id == pod)
        .expect("the pod");
    assert_eq!(pm.container_metrics.len(), 1);
    let cm = &pm.container_metrics[0];
    assert_eq!(cm.container_id, id);
    let c = by_name(&cm.metrics);
    let p = by_name(&pm.metrics);

    // Names, types, labels: every value's labels are its descriptor's.
    for (name, kind, _) in EXPECTED {
        let got = c.get(name).or_else(|| p.get(name));
        let got = got.unwrap_or_else(|| panic!("no value of {name}"));
        for m in got {
            assert_eq!(m.metric_type, *kind as i32, "{name}");
            assert_eq!(m.label_values.len(), descs[name].label_keys.len(), "{name}");
            assert!(m.timestamp > 0);
        }
    }
    for m in cm.metrics.iter().chain(&pm.metrics) {
        let d = descs
            .get(m.name.as_str())
            .unwrap_or_else(|| panic!("{} has no descriptor", m.name));
        assert_eq!(m.label_values.len(), d.label_keys.len(), "{}", m.name);
    }
    let labels = &c["container_memory_usage_bytes"][0].label_values;
    assert_eq!(labels[0], "worker");
    assert_eq!(labels[1], id);
    assert!(labels[2].contains("busybox"), "{labels:?}");
    assert_eq!(labels[5], "metrics", "the pod's name");
    let pod_labels = &p["container_network_receive_bytes_total"][0].label_values;
    assert_eq!(&pod_labels[..2], ["", pod.as_str()]);
    assert_eq!(pod_labels[6], "eth0");

    // Values, against the cgroup files read around the call.
    let secs = value(&c, "container_cpu_usage_seconds_total");
    assert!(
        usage_before / 1_000_000_000 <= secs && secs <= usage_after / 1_000_000_000,
        "{secs} s against {usage_before}..{usage_after} ns"
    );
    assert!(secs >= 1, "the busy loop used CPU: {secs}");
    assert_eq!(
        c["container_cpu_usage_seconds_total"][0].label_values[6],
        "total"
    );
    let throttled = value(&c, "container_cpu_cfs_throttled_periods_total");
    assert!((throttled_before..=throttled_after).contains(&throttled));
    assert!(throttled > 0, "a 20% quota throttles a busy loop");
    assert_eq!(
        value(&c, "container_spec_cpu_quota"),
        num(&cpu.join("cpu.cfs_quota_us"))
    );
    assert_eq!(value(&c, "container_spec_cpu_quota"), 20_000);
    assert_eq!(value(&c, "container_spec_cpu_period"), 100_000);
    assert_eq!(
        value(&c, "container_spec_cpu_shares"),
        num(&cpu.join("cpu.shares"))
    );
    assert_eq!(value(&c, "container_spec_memory_limit_bytes"), 64 << 20);
    assert_eq!(
        value(&c, "container_spec_memory_limit_bytes"),
        num(&mem.join("memory.limit_in_bytes"))
    );
    let memsw = mem.join("memory.memsw.limit_in_bytes");
    if memsw.exists() {
        assert_eq!(
            value(&c, "container_spec_memory_swap_limit_bytes"),
            num(&memsw)
        );
    }
    assert_eq!(
        value(&c, "container_memory_failcnt"),
        num(&mem.join("memory.failcnt"))
    );
    let usage = value(&c, "container_memory_usage_bytes");
    let now = num(&mem.join("memory.usage_in_bytes"));
    assert!(
        usage > 0 && usage.abs_diff(now) < 4 << 20,
        "{usage} against {now}"
    );
    let ws = value(&c, "container_memory_working_set_bytes");
    assert!(ws <= usage);
    assert!(value(&c, "container_memory_max_usage_bytes") >= usage);
    assert_eq!(
        value(&c, "container_oom_events_total"),
        kv(&mem.join("memory.oom_control"), "oom_kill")
    );
    let procs = read(&pids.join("cgroup.procs")).lines().count() as u64;
    assert_eq!(value(&c, "container_processes"), procs);
    assert_eq!(
        value(&c, "container_threads"),
        num(&pids.join("pids.current"))
    );
    assert!(
        value(&c, "container_file_descriptors") >= 3,
        "stdio at least"
    );
    assert_eq!(
        c["container_ulimits_soft"][0].label_values[6],
        "max_open_files"
    );
    assert_eq!(
        value(&c, "container_ulimits_soft"),
        soft_nofile(init),
        "the init's limit"
    );
    let start = value(&c, "container_start_time_seconds");
    let st = f.status(&id).await;
    assert_eq!(start, (st.started_at / 1_000_000_000) as u64);
    // The writable layer holds the 1 MiB file.
    assert!(value(&c, "container_fs_usage_bytes") >= 1 << 20);
    let snapshots = f.d.state_dir().join("snapshots");
    let vfs = nix::sys::statvfs::statvfs(&snapshots).unwrap();
    assert_eq!(
        value(&c, "container_fs_limit_bytes"),
        vfs.blocks() * vfs.fragment_size()
    );
    assert_eq!(value(&c, "container_fs_inodes_total"), vfs.files());
    // The pod's interface, against its /proc/<pid>/net/dev read around the call.
    let rx = p["container_network_receive_bytes_total"][0]
        .value
        .as_ref()
        .unwrap()
        .value;
    assert!(
        (rx_before..=rx_after).contains(&rx),
        "{rx} against {rx_before}..{rx_after}"
    );

    // A stopped container has no metrics (its cgroup is empty), its pod still has
    // an entry.
    f.d.rt
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    let all =
        f.d.rt
            .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
            .await
            .unwrap()
            .into_inner()
            .pod_metrics;
    let pm = all
        .iter()
        .find(|p| p.pod_sandbox_id == pod)
        .expect("the pod");
    assert!(pm.container_metrics.is_empty());
    f.finish().await;
}

/// eth0's received bytes in the network namespace of `pid`.
fn rx_bytes(pid: u64) -> u64 {
    read(Path::new(&format!("/proc/{pid}/net/dev")))
        .lines()
        .find_map(|l| l.trim().strip_prefix("eth0:"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

/// The soft limit of open files of `pid`.
fn soft_nofile(pid: u64) -> u64 {
    read(Path::new(&format!("/proc/{pid}/limits")))
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

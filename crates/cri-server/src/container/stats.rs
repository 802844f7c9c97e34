//! ContainerStats, ListContainerStats and the per-pod sums of PodSandboxStats.

use crius_cri_api::v1 as cri;
use crius_store::{ContainerRecord, ContainerState, PodRecord};

use super::Containers;
use super::sample::{Pressure, Sample};
use crate::error::CriResult;
use crate::util::{blocking, now_nanos};

impl Containers {
    /// One container's stats: cgroup metrics from its shim (running containers) and
    /// its writable layer measured on disk.
    async fn stats_of(&self, c: &ContainerRecord) -> CriResult<cri::ContainerStats> {
        Ok(self.stats_and_pids(c).await?.0)
    }

    /// A container's stats, and how many processes its cgroup holds (when running):
    /// one reading of its cgroup by criusd itself (no call to its shim), and its
    /// writable layer measured on disk.
    async fn stats_and_pids(
        &self,
        c: &ContainerRecord,
    ) -> CriResult<(cri::ContainerStats, Option<u64>)> {
        let running = c.state == ContainerState::Running;
        let (rootfs, r) = (self.rootfs.clone(), c.clone());
        let (sample, layer, ts) = blocking(move || {
            let sample = if running {
                super::metrics::sample_of(&r)
            } else {
                None
            };
            Ok((sample, rootfs.usage(&r.id), now_nanos()))
        })
        .await?;
        let u = |value: u64| Some(cri::UInt64Value { value });
        // The reading before this one; before the first, the container's start with
        // no CPU used.
        let before = sample
            .as_ref()
            .and_then(|s| {
                let now = s.cpu?.usage_ns;
                let mut seen = self.cpu_seen.lock().unwrap_or_else(|p| p.into_inner());
                seen.insert(c.id.clone(), (ts, now))
            })
            .unwrap_or((c.started_at, 0));
        let usage = sample.as_ref().map(|s| usage_of(s, ts, before));
        let pids = sample.as_ref().and_then(|s| s.pids.map(|p| p.current));
        let (cpu, memory, swap, io) = usage.unwrap_or_default();
        let stats = cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: c.id.clone(),
                metadata: c.config.metadata.clone(),
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
            }),
            cpu,
            memory,
            writable_layer: layer.map(|l| cri::FilesystemUsage {
                timestamp: ts,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: self
                        .config
                        .state_dir
                        .join("snapshots")
                        .to_string_lossy()
                        .into_owned(),
                }),
                used_bytes: u(l.bytes),
                inodes_used: u(l.inodes),
            }),
            swap,
            io,
        };
        Ok((stats, pids))
    }

    /// PodSandboxStats: the pod's containers' stats, and their CPU and memory summed.
    pub async fn pod_stats(&self, pod: &PodRecord) -> CriResult<cri::PodSandboxStats> {
        let ts = now_nanos();
        let mut containers = Vec::new();
        let mut processes: Option<u64> = None;
        // A process in the pod's network namespace, to read its interfaces through.
        let mut in_netns: Option<u32> = None;
        for c in self.of_pod(&pod.id).await? {
            if c.state != ContainerState::Creating {
                let (stats, pids) = self.stats_and_pids(&c).await?;
                if let Some(n) = pids {
                    processes = Some(processes.unwrap_or(0) + n);
                    if c.pid > 0 {
                        in_netns.get_or_insert(c.pid);
                    }
                }
                containers.push(stats);
            }
        }
        // Host-network pods have the node's interfaces; the kubelet counts those itself.
        let network = match (pod.namespaces.net.is_some(), in_netns) {
            (true, Some(pid)) => {
                let text = tokio::fs::read_to_string(format!("/proc/{pid}/net/dev"))
                    .await
                    .ok();
                text.map(|t| network_usage(&t, ts))
            }
            _ => None,
        };
        let sum = |f: &dyn Fn(&cri::ContainerStats) -> Option<u64>| -> Option<cri::UInt64Value> {
            let values: Vec<u64> = containers.iter().filter_map(f).collect();
            (!values.is_empty()).then(|| cri::UInt64Value {
                value: values.iter().sum(),
            })
        };
        let value = |v: &Option<cri::UInt64Value>| v.as_ref().map(|v| v.value);
        let cpu = sum(&|c| value(&c.cpu.as_ref()?.usage_core_nano_seconds));
        let nano_cores = sum(&|c| value(&c.cpu.as_ref()?.usage_nano_cores));
        let working_set = sum(&|c| value(&c.memory.as_ref()?.working_set_bytes));
        let usage = sum(&|c| value(&c.memory.as_ref()?.usage_bytes));
        let rss = sum(&|c| value(&c.memory.as_ref()?.rss_bytes));
        Ok(cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: pod.id.clone(),
                metadata: pod.config.metadata.clone(),
                labels: pod.config.labels.clone(),
                annotations: pod.config.annotations.clone(),
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                cpu: cpu.map(|v| cri::CpuUsage {
                    timestamp: ts,
                    usage_core_nano_seconds: Some(v),
                    usage_nano_cores: nano_cores,
                    psi: None,
                }),
                memory: working_set.map(|v| cri::MemoryUsage {
                    timestamp: ts,
                    working_set_bytes: Some(v),
                    available_bytes: None,
                    usage_bytes: usage,
                    rss_bytes: rss,
                    page_faults: None,
                    major_page_faults: None,
                    psi: None,
                }),
                network,
                process: processes.map(|n| cri::ProcessUsage {
                    timestamp: ts,
                    process_count: Some(cri::UInt64Value { value: n }),
                }),
                containers,
                io: None,
            }),
            windows: None,
        })
    }

    /// ContainerStats.
    pub async fn stats(&self, id: &str) -> CriResult<cri::ContainerStats> {
        let c = self.must(id).await?;
        self.stats_of(&c).await
    }

    /// ListContainerStats.
    pub async fn list_stats(
        &self,
        filter: Option<cri::ContainerStatsFilter>,
    ) -> CriResult<Vec<cri::ContainerStats>> {
        let f = filter.unwrap_or_default();
        let all = self.store.containers().await?;
        let mut out = Vec::new();
        for c in all.iter().filter(|c| c.state != ContainerState::Creating) {
            if (!f.id.is_empty() && !c.id.starts_with(&f.id))
                || (!f.pod_sandbox_id.is_empty() && !c.pod_id.starts_with(&f.pod_sandbox_id))
                || !f
                    .label_selector
                    .iter()
                    .all(|(k, v)| c.config.labels.get(k) == Some(v))
            {
                continue;
            }
            out.push(self.stats_of(c).await?);
        }
        Ok(out)
    }
}

/// A pod's interfaces from its `/proc/<pid>/net/dev` (loopback left out); `eth0`, the
/// interface pods get, is the default one.
fn network_usage(net_dev: &str, ts: i64) -> cri::NetworkUsage {
    let u = |value: u64| Some(cri::UInt64Value { value });
    let interfaces: Vec<cri::NetworkInterfaceUsage> = net_dev
        .lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|v| v.parse().ok())
                .collect::<Option<_>>()?;
            if name == "lo" || f.len() < 16 {
                return None;
            }
            Some(cri::NetworkInterfaceUsage {
                name: name.to_string(),
                rx_bytes: u(f[0]),
                rx_errors: u(f[2]),
                tx_bytes: u(f[8]),
                tx_errors: u(f[10]),
            })
        })
        .collect();
    cri::NetworkUsage {
        timestamp: ts,
        default_interface: interfaces
            .iter()
            .find(|i| i.name == "eth0")
            .or(interfaces.first())
            .cloned(),
        interfaces,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_interfaces_come_from_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0:    5000      40    1    0    0     0          0         0     7000      50    3    0    0     0       0          0
";
        let n = network_usage(text, 42);
        assert_eq!(n.timestamp, 42);
        assert_eq!(n.interfaces.len(), 1, "loopback is left out");
        let eth0 = n.default_interface.unwrap();
        assert_eq!(eth0.name, "eth0");
        assert_eq!(eth0.rx_bytes.unwrap().value, 5000);
        assert_eq!(eth0.rx_errors.unwrap().value, 1);
        assert_eq!(eth0.tx_bytes.unwrap().value, 7000);
        assert_eq!(eth0.tx_errors.unwrap().value, 3);
        // Garbage lines are skipped, not fatal.
        let n = network_usage("h1\nh2\n  eth0: x y\n", 1);
        assert!(n.interfaces.is_empty() && n.default_interface.is_none());
    }
}

/// The CPU, memory, swap and I/O parts of a container's stats from one reading of
/// its cgroup at `ts`. `before` is the (time, CPU nanoseconds) of the reading before,
/// or the container's start with none used: `usage_nano_cores` is the rate between
/// the two, so it is never left out (nor 0 for a busy container) on a first call.
/// Swap and I/O pressure are what cgroup v2 has (v1 has no swap accounting of its
/// own and no PSI).
pub(super) fn usage_of(
    s: &Sample,
    ts: i64,
    before: (i64, u64),
) -> (
    Option<cri::CpuUsage>,
    Option<cri::MemoryUsage>,
    Option<cri::SwapUsage>,
    Option<cri::IoUsage>,
) {
    let u = |value: u64| Some(cri::UInt64Value { value });
    let cpu = s.cpu.map(|c| {
        let (t0, ns0) = before;
        let elapsed = u128::try_from(ts.saturating_sub(t0)).unwrap_or(0);
        let rate = (elapsed > 0 && c.usage_ns >= ns0).then(|| {
            let cores = u128::from(c.usage_ns - ns0) * 1_000_000_000 / elapsed;
            cri::UInt64Value {
                value: u64::try_from(cores).unwrap_or(u64::MAX),
            }
        });
        cri::CpuUsage {
            timestamp: ts,
            usage_core_nano_seconds: u(c.usage_ns),
            usage_nano_cores: rate,
            psi: s.psi.cpu.map(psi),
        }
    });
    let limit = s.memory_spec.map_or(0, |m| m.limit);
    let memory = s.memory.map(|m| cri::MemoryUsage {
        timestamp: ts,
        working_set_bytes: u(m.working_set),
        available_bytes: (limit > 0).then(|| cri::UInt64Value {
            value: limit.saturating_sub(m.working_set),
        }),
        usage_bytes: u(m.usage),
        rss_bytes: u(m.rss),
        page_faults: u(m.pgfault),
        major_page_faults: u(m.pgmajfault),
        psi: s.psi.memory.map(psi),
    });
    let swap = (s.v2).then_some(()).and(s.memory).map(|m| {
        let swap_limit = s.memory_spec.map_or(0, |m| m.swap_limit);
        cri::SwapUsage {
            timestamp: ts,
            swap_available_bytes: (swap_limit > 0).then(|| cri::UInt64Value {
                value: swap_limit.saturating_sub(m.swap),
            }),
            swap_usage_bytes: u(m.swap),
        }
    });
    let io = s.psi.io.map(|p| cri::IoUsage {
        timestamp: ts,
        psi: Some(psi(p)),
    });
    (cpu, memory, swap, io)
}

/// A PSI reading as the CRI carries it: the totals in microseconds, the averages in
/// percent.
fn psi(p: Pressure) -> cri::PsiStats {
    let data = |total: u64, avg: [u32; 3]| cri::PsiData {
        total,
        avg10: f64::from(avg[0]) / 100.0,
        avg60: f64::from(avg[1]) / 100.0,
        avg300: f64::from(avg[2]) / 100.0,
    };
    cri::PsiStats {
        full: Some(data(p.full_us, p.full_avg)),
        some: Some(data(p.some_us, p.some_avg)),
    }
}

#[cfg(test)]
mod usage_tests {
    use super::super::sample::{Cpu, Memory, MemorySpec, Pids, Psi};
    use super::*;

    fn v2_sample() -> Sample {
        let pressure = |some_us, avg10| Pressure {
            some_us,
            full_us: some_us / 2,
            some_avg: [avg10, 0, 0],
            full_avg: [0, 0, 1],
        };
        Sample {
            v2: true,
            cpu: Some(Cpu {
                usage_ns: 3_000_000_000,
                ..Cpu::default()
            }),
            memory: Some(Memory {
                usage: 900,
                working_set: 600,
                rss: 500,
                swap: 100,
                pgfault: 40,
                pgmajfault: 2,
                ..Memory::default()
            }),
            pids: Some(Pids { current: 3, max: 0 }),
            memory_spec: Some(MemorySpec {
                limit: 1000,
                reservation: 0,
                swap_limit: 400,
            }),
            psi: Psi {
                cpu: Some(pressure(10, 150)),
                memory: Some(pressure(20, 0)),
                io: Some(pressure(30, 5)),
            },
            ..Sample::default()
        }
    }

    #[test]
    fn a_v2_reading_fills_cpu_rate_memory_swap_and_pressure() {
        let s = v2_sample();
        // 1 s of CPU over the 2 s since the reading before: half a core.
        let (cpu, memory, swap, io) = usage_of(&s, 4_000_000_000, (2_000_000_000, 2_000_000_000));
        let cpu = cpu.unwrap();
        assert_eq!(cpu.usage_core_nano_seconds.unwrap().value, 3_000_000_000);
        assert_eq!(cpu.usage_nano_cores.unwrap().value, 500_000_000);
        let psi = cpu.psi.unwrap();
        let some = psi.some.unwrap();
        assert_eq!((some.total, some.avg10), (10, 1.5));
        assert_eq!(psi.full.unwrap().avg300, 0.01);
        let memory = memory.unwrap();
        assert_eq!(memory.working_set_bytes.unwrap().value, 600);
        assert_eq!(
            memory.available_bytes.unwrap().value,
            400,
            "limit - working set"
        );
        assert_eq!(memory.usage_bytes.unwrap().value, 900);
        assert_eq!(memory.rss_bytes.unwrap().value, 500);
        assert_eq!(memory.page_faults.unwrap().value, 40);
        assert_eq!(memory.major_page_faults.unwrap().value, 2);
        assert_eq!(memory.psi.unwrap().some.unwrap().total, 20);
        let swap = swap.unwrap();
        assert_eq!(swap.swap_usage_bytes.unwrap().value, 100);
        assert_eq!(swap.swap_available_bytes.unwrap().value, 300);
        let io = io.unwrap();
        assert_eq!(io.timestamp, 4_000_000_000);
        assert_eq!(io.psi.unwrap().full.unwrap().total, 15);
    }

    #[test]
    fn the_first_reading_rates_cpu_since_the_start_and_v1_has_no_swap_or_pressure() {
        let mut s = v2_sample();
        s.v2 = false;
        s.psi = Psi::default();
        s.memory_spec = Some(MemorySpec::default());
        // 3 s of CPU in the 6 s since the start.
        let (cpu, memory, swap, io) = usage_of(&s, 7_000_000_000, (1_000_000_000, 0));
        let cpu = cpu.unwrap();
        assert_eq!(cpu.usage_nano_cores.unwrap().value, 500_000_000);
        assert!(cpu.psi.is_none());
        let memory = memory.unwrap();
        assert!(memory.available_bytes.is_none(), "no limit");
        assert!(memory.psi.is_none());
        assert!(swap.is_none() && io.is_none());
        // A reading at the same instant, or a counter that went back (a new cgroup),
        // has no rate.
        let (cpu, ..) = usage_of(&s, 7_000_000_000, (7_000_000_000, 0));
        assert!(cpu.unwrap().usage_nano_cores.is_none());
        let (cpu, ..) = usage_of(&s, 8_000_000_000, (7_000_000_000, 4_000_000_000));
        assert!(cpu.unwrap().usage_nano_cores.is_none());
    }
}

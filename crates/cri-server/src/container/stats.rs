//! ContainerStats, ListContainerStats and the per-pod sums of PodSandboxStats.

use crius_cri_api::v1 as cri;
use crius_store::{ContainerRecord, ContainerState, PodRecord};

use super::Containers;
use crate::error::CriResult;
use crate::util::{blocking, now_nanos};

impl Containers {
    /// One container's stats: cgroup metrics from its shim (running containers) and
    /// its writable layer measured on disk.
    async fn stats_of(&self, c: &ContainerRecord) -> CriResult<cri::ContainerStats> {
        Ok(self.stats_and_pids(c).await?.0)
    }

    /// A container's stats, and how many processes its cgroup holds (when running).
    async fn stats_and_pids(
        &self,
        c: &ContainerRecord,
    ) -> CriResult<(cri::ContainerStats, Option<u64>)> {
        let ts = now_nanos();
        let u = |value: u64| Some(cri::UInt64Value { value });
        let metrics = if c.state == ContainerState::Running {
            self.on_shim(c, |shims, at| Ok(shims.stats(at).ok()))
                .await?
        } else {
            None
        };
        let (rootfs, key) = (self.rootfs.clone(), c.id.clone());
        let layer = blocking(move || Ok(rootfs.usage(&key))).await?;
        let pids = metrics.map(|m| m.pids);
        let stats = cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: c.id.clone(),
                metadata: c.config.metadata.clone(),
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
            }),
            cpu: metrics.map(|m| cri::CpuUsage {
                timestamp: ts,
                usage_core_nano_seconds: u(m.cpu_usage_ns),
                usage_nano_cores: None,
                psi: None,
            }),
            memory: metrics.map(|m| cri::MemoryUsage {
                timestamp: ts,
                working_set_bytes: u(m.memory_working_set),
                available_bytes: None,
                usage_bytes: u(m.memory_usage),
                rss_bytes: u(m.memory_rss),
                page_faults: None,
                major_page_faults: None,
                psi: None,
            }),
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
            swap: None,
            io: None,
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
                    usage_nano_cores: None,
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

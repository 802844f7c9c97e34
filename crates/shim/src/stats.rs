//! Task `Stats`: the container's cgroup metrics, read from its init's cgroup and
//! returned as containerd does — an `Any` holding `io.containerd.cgroups.v1.Metrics`
//! (cgroup v1 or hybrid hosts) or `io.containerd.cgroups.v2.Metrics` (pure v2).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};

/// The cgroup root (a parameter so tests can use fixture trees).
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Where a process's cgroups are: v1 controller -> path, or the v2 path.
#[derive(Debug, PartialEq, Eq)]
pub enum Placement {
    V1(HashMap<String, String>),
    V2(String),
}

/// Parses /proc/<pid>/cgroup.
pub fn placement(text: &str) -> Option<Placement> {
    let mut v1 = HashMap::new();
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if ctrls.is_empty() {
            v2 = Some(path.to_string());
        } else {
            for c in ctrls.split(',') {
                v1.insert(c.trim_start_matches("name=").to_string(), path.to_string());
            }
        }
    }
    if !v1.is_empty() {
        Some(Placement::V1(v1))
    } else {
        v2.map(Placement::V2)
    }
}

fn read_u64(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            let t = s.trim();
            if t == "max" {
                Some(u64::MAX)
            } else {
                t.parse().ok()
            }
        })
        .unwrap_or(0)
}

fn read_kv(path: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// The ticks of cpuacct.stat are USER_HZ (100 on Linux).
const NS_PER_TICK: u64 = 10_000_000;

fn v1_metrics(root: &Path, paths: &HashMap<String, String>) -> v1::Metrics {
    let dir = |ctrl: &str| -> Option<PathBuf> {
        paths
            .get(ctrl)
            .map(|p| root.join(ctrl).join(p.trim_start_matches('/')))
    };
    let mut m = v1::Metrics::new();
    if let Some(d) = dir("memory") {
        let stat = read_kv(&d.join("memory.stat"));
        let g = |k: &str| stat.get(k).copied().unwrap_or(0);
        let mut mem = v1::MemoryStat::new();
        mem.cache = g("cache");
        mem.rss = g("rss");
        mem.rss_huge = g("rss_huge");
        mem.mapped_file = g("mapped_file");
        mem.dirty = g("dirty");
        mem.writeback = g("writeback");
        mem.pg_fault = g("pgfault");
        mem.pg_maj_fault = g("pgmajfault");
        mem.inactive_anon = g("inactive_anon");
        mem.active_anon = g("active_anon");
        mem.inactive_file = g("inactive_file");
        mem.active_file = g("active_file");
        mem.unevictable = g("unevictable");
        mem.hierarchical_memory_limit = g("hierarchical_memory_limit");
        mem.total_cache = g("total_cache");
        mem.total_rss = g("total_rss");
        mem.total_inactive_file = g("total_inactive_file");
        mem.total_active_file = g("total_active_file");
        let mut usage = v1::MemoryEntry::new();
        usage.usage = read_u64(&d.join("memory.usage_in_bytes"));
        usage.limit = read_u64(&d.join("memory.limit_in_bytes"));
        usage.max = read_u64(&d.join("memory.max_usage_in_bytes"));
        usage.failcnt = read_u64(&d.join("memory.failcnt"));
        mem.usage = MessageField::some(usage);
        m.memory = MessageField::some(mem);
    }
    let mut cpu = v1::CPUStat::new();
    if let Some(d) = dir("cpuacct") {
        let mut u = v1::CPUUsage::new();
        u.total = read_u64(&d.join("cpuacct.usage"));
        let st = read_kv(&d.join("cpuacct.stat"));
        u.user = st.get("user").copied().unwrap_or(0) * NS_PER_TICK;
        u.kernel = st.get("system").copied().unwrap_or(0) * NS_PER_TICK;
        u.per_cpu = std::fs::read_to_string(d.join("cpuacct.usage_percpu"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        cpu.usage = MessageField::some(u);
    }
    if let Some(d) = dir("cpu") {
        let st = read_kv(&d.join("cpu.stat"));
        let mut t = v1::Throttle::new();
        t.periods = st.get("nr_periods").copied().unwrap_or(0);
        t.throttled_periods = st.get("nr_throttled").copied().unwrap_or(0);
        t.throttled_time = st.get("throttled_time").copied().unwrap_or(0);
        cpu.throttling = MessageField::some(t);
    }
    m.cpu = MessageField::some(cpu);
    if let Some(d) = dir("pids") {
        let mut p = v1::PidsStat::new();
        p.current = read_u64(&d.join("pids.current"));
        p.limit = read_u64(&d.join("pids.max"));
        m.pids = MessageField::some(p);
    }
    m
}

fn v2_metrics(dir: &Path) -> v2::Metrics {
    let mut m = v2::Metrics::new();
    let cpu = read_kv(&dir.join("cpu.stat"));
    let c = |k: &str| cpu.get(k).copied().unwrap_or(0);
    let mut cs = v2::CPUStat::new();
    cs.usage_usec = c("usage_usec");
    cs.user_usec = c("user_usec");
    cs.system_usec = c("system_usec");
    cs.nr_periods = c("nr_periods");
    cs.nr_throttled = c("nr_throttled");
    cs.throttled_usec = c("throttled_usec");
    m.cpu = MessageField::some(cs);
    let stat = read_kv(&dir.join("memory.stat"));
    let g = |k: &str| stat.get(k).copied().unwrap_or(0);
    let mut mem = v2::MemoryStat::new();
    mem.anon = g("anon");
    mem.file = g("file");
    mem.kernel_stack = g("kernel_stack");
    mem.slab = g("slab");
    mem.sock = g("sock");
    mem.shmem = g("shmem");
    mem.file_mapped = g("file_mapped");
    mem.inactive_anon = g("inactive_anon");
    mem.active_anon = g("active_anon");
    mem.inactive_file = g("inactive_file");
    mem.active_file = g("active_file");
    mem.pgfault = g("pgfault");
    mem.pgmajfault = g("pgmajfault");
    mem.usage = read_u64(&dir.join("memory.current"));
    mem.usage_limit = read_u64(&dir.join("memory.max"));
    mem.swap_usage = read_u64(&dir.join("memory.swap.current"));
    mem.swap_limit = read_u64(&dir.join("memory.swap.max"));
    m.memory = MessageField::some(mem);
    let mut p = v2::PidsStat::new();
    p.current = read_u64(&dir.join("pids.current"));
    p.limit = read_u64(&dir.join("pids.max"));
    m.pids = MessageField::some(p);
    m
}

/// The metrics of the cgroup `pid` is in, under `root`.
pub fn metrics_under(root: &Path, pid: i32) -> Result<Any, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| format!("reading /proc/{pid}/cgroup: {e}"))?;
    metrics_for(root, &text)
}

/// The metrics for a /proc/<pid>/cgroup text, under `root`.
pub fn metrics_for(root: &Path, cgroup_text: &str) -> Result<Any, String> {
    let placement = placement(cgroup_text).ok_or("the process is in no cgroup")?;
    let (type_url, value) = match placement {
        Placement::V1(paths) => (
            "io.containerd.cgroups.v1.Metrics",
            v1_metrics(root, &paths).write_to_bytes(),
        ),
        Placement::V2(path) => (
            "io.containerd.cgroups.v2.Metrics",
            v2_metrics(&root.join(path.trim_start_matches('/'))).write_to_bytes(),
        ),
    };
    let mut any = Any::new();
    any.type_url = type_url.to_string();
    any.value = value.map_err(|e| format!("encoding metrics: {e}"))?;
    Ok(any)
}

/// The metrics of `pid`'s cgroup on this host.
pub fn metrics(pid: i32) -> Result<Any, String> {
    metrics_under(Path::new(CGROUP_ROOT), pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_v1_hybrid_and_v2() {
        let hybrid = "12:memory:/crius/abc\n11:cpu,cpuacct:/crius/abc\n1:name=systemd:/x\n0::/";
        match placement(hybrid).unwrap() {
            Placement::V1(m) => {
                assert_eq!(m["memory"], "/crius/abc");
                assert_eq!(m["cpuacct"], "/crius/abc");
                assert_eq!(m["systemd"], "/x");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            placement("0::/kubepods.slice/x.scope").unwrap(),
            Placement::V2("/kubepods.slice/x.scope".into())
        );
    }

    #[test]
    fn v1_and_v2_fixture_trees() {
        let root = tempfile::tempdir().unwrap();
        let mem = root.path().join("memory/crius/c1");
        let acct = root.path().join("cpuacct/crius/c1");
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::create_dir_all(&acct).unwrap();
        std::fs::write(mem.join("memory.usage_in_bytes"), "4096\n").unwrap();
        std::fs::write(mem.join("memory.limit_in_bytes"), "67108864\n").unwrap();
        std::fs::write(
            mem.join("memory.stat"),
            "rss 1024\ncache 2048\ntotal_inactive_file 512\n",
        )
        .unwrap();
        std::fs::write(acct.join("cpuacct.usage"), "123456789\n").unwrap();
        std::fs::write(acct.join("cpuacct.stat"), "user 3\nsystem 4\n").unwrap();
        let any =
            metrics_for(root.path(), "5:memory:/crius/c1\n4:cpu,cpuacct:/crius/c1\n").unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let m = v1::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.memory.usage.usage, 4096);
        assert_eq!(m.memory.usage.limit, 67108864);
        assert_eq!(m.memory.rss, 1024);
        assert_eq!(m.memory.total_inactive_file, 512);
        assert_eq!(m.cpu.usage.total, 123456789);
        assert_eq!(m.cpu.usage.user, 30_000_000);

        let v2dir = root.path().join("kubepods.slice/c2.scope");
        std::fs::create_dir_all(&v2dir).unwrap();
        std::fs::write(v2dir.join("memory.current"), "8192\n").unwrap();
        std::fs::write(v2dir.join("memory.max"), "max\n").unwrap();
        std::fs::write(
            v2dir.join("cpu.stat"),
            "usage_usec 77\nuser_usec 7\nsystem_usec 70\n",
        )
        .unwrap();
        std::fs::write(v2dir.join("pids.current"), "3\n").unwrap();
        let any = metrics_for(root.path(), "0::/kubepods.slice/c2.scope\n").unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = v2::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.memory.usage, 8192);
        assert_eq!(m.memory.usage_limit, u64::MAX);
        assert_eq!(m.cpu.usage_usec, 77);
        assert_eq!(m.pids.current, 3);
    }
}

//! One reading of a container's cgroup and processes, for the CRI metrics
//! (ListPodSandboxMetrics): CPU, memory, pids, the limits set on the cgroup, block
//! I/O, hugepages, pressure (PSI), and the processes' file descriptors.
//!
//! The same [`Sample`] comes from either cgroup version: [`read`] finds the
//! container's directory under each v1 controller's hierarchy (`cpu`, `cpuacct` and
//! `cpu,cpuacct` mounts alike) or in the v2 unified tree, and parses each file the way
//! the kernel writes it. Every path is under a root given by the caller, so tests
//! read fixture trees. A file that is missing leaves its part out (a controller not
//! mounted, a kernel without PSI or `memory.peak`), never an error: metrics are a
//! best-effort reading of a running container.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// CPU time, in nanoseconds, and CFS enforcement counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cpu {
    pub usage_ns: u64,
    pub user_ns: u64,
    pub system_ns: u64,
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_ns: u64,
}

/// Memory, in bytes (and counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub usage: u64,
    /// The peak usage (v1 `max_usage_in_bytes`, v2 `memory.peak` on kernels with it).
    pub max_usage: Option<u64>,
    /// Usage less inactive file pages (what the kubelet evicts on).
    pub working_set: u64,
    pub rss: u64,
    pub cache: u64,
    pub swap: u64,
    pub mapped_file: u64,
    pub kernel: u64,
    pub active_file: u64,
    pub inactive_file: u64,
    /// Times usage hit the limit (v1 `failcnt`, v2 `memory.events` max).
    pub failcnt: u64,
    /// Page faults in the cgroup itself and in its whole subtree.
    pub pgfault: u64,
    pub pgmajfault: u64,
    pub pgfault_hierarchy: u64,
    pub pgmajfault_hierarchy: u64,
    /// Processes the OOM killer killed in the cgroup (`oom_kill`).
    pub oom_kills: u64,
}

/// Tasks (threads) in the cgroup and its limit (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pids {
    pub current: u64,
    pub max: u64,
}

/// The CPU limits set on the cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuSpec {
    pub period_us: u64,
    /// None: no quota.
    pub quota_us: Option<u64>,
    /// cpu.shares (on v2, converted from cpu.weight).
    pub shares: u64,
}

/// The memory limits set on the cgroup, in bytes (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemorySpec {
    pub limit: u64,
    pub reservation: u64,
    pub swap_limit: u64,
}

/// Block I/O on one device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoDevice {
    pub major: u64,
    pub minor: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
    /// Bytes by operation, as the kernel names them (`Read`, `Write`, ...).
    pub bytes_by_op: Vec<(String, u64)>,
}

/// Hugepages of one size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hugetlb {
    /// `2MB`, `1GB`.
    pub pagesize: String,
    pub usage: u64,
    /// v1 only.
    pub max_usage: Option<u64>,
    pub failcnt: u64,
}

/// Total stall time of one resource, in microseconds: `some` (at least one task
/// waited) and `full` (no task could make progress).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    pub some_us: u64,
    pub full_us: u64,
    /// The share of time stalled over the last 10, 60 and 300 s, in hundredths of a
    /// percent (the file's two decimals): `some`, then `full`.
    pub some_avg: [u32; 3],
    pub full_avg: [u32; 3],
}

/// Pressure stall information (cgroup v2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Psi {
    pub cpu: Option<Pressure>,
    pub memory: Option<Pressure>,
    pub io: Option<Pressure>,
}

/// The processes of the cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Procs {
    pub processes: u64,
    pub fds: u64,
    pub sockets: u64,
    /// The soft `nofile` limit of the container's init.
    pub max_open_files: Option<u64>,
}

/// One reading of a container's cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    pub v2: bool,
    pub cpu: Option<Cpu>,
    pub memory: Option<Memory>,
    pub pids: Option<Pids>,
    pub cpu_spec: Option<CpuSpec>,
    pub memory_spec: Option<MemorySpec>,
    pub io: Vec<IoDevice>,
    pub hugetlb: Vec<Hugetlb>,
    pub psi: Psi,
    pub procs: Procs,
}

/// Memory limits at or above this are "no limit" (what the kernel writes for an
/// unlimited v1 cgroup is a page-rounded i64::MAX).
const NO_MEMORY_LIMIT: u64 = 1 << 62;

/// USER_HZ: the unit of `cpuacct.stat`.
const NS_PER_TICK: u64 = 10_000_000;

/// Reads the cgroup at `rel` (relative to each hierarchy's root) under `root`
/// (`/sys/fs/cgroup`), and the processes in it through `proc` (`/proc`); `init` is
/// the container's init pid (for its limits). None when the cgroup is gone.
pub fn read(root: &Path, proc: &Path, rel: &Path, init: u32) -> Option<Sample> {
    let (mut s, cgroup_procs) = if root.join("cgroup.controllers").is_file() {
        let dir = root.join(rel);
        if !dir.is_dir() {
            return None;
        }
        read_v2(&dir)
    } else {
        let dirs = V1Dirs::find(root, rel);
        if dirs.is_empty() {
            return None;
        }
        read_v1(&dirs)
    };
    s.procs = procs(proc, cgroup_procs.as_deref(), init);
    Some(s)
}

/// The v1 directories of one cgroup, by controller.
struct V1Dirs(HashMap<&'static str, PathBuf>);

impl V1Dirs {
    /// The mounts a v1 controller may be at: alone, or co-mounted (`cpu,cpuacct`).
    fn mounts(controller: &str) -> &'static [&'static str] {
        match controller {
            "cpu" => &["cpu", "cpu,cpuacct", "cpuacct,cpu"],
            "cpuacct" => &["cpuacct", "cpu,cpuacct", "cpuacct,cpu"],
            "memory" => &["memory"],
            "pids" => &["pids"],
            "blkio" => &["blkio", "blkio,io"],
            "hugetlb" => &["hugetlb"],
            _ => &[],
        }
    }

    fn find(root: &Path, rel: &Path) -> V1Dirs {
        let mut dirs = HashMap::new();
        for c in ["cpu", "cpuacct", "memory", "pids", "blkio", "hugetlb"] {
            if let Some(d) = V1Dirs::mounts(c)
                .iter()
                .map(|m| root.join(m).join(rel))
                .find(|d| d.is_dir())
            {
                dirs.insert(c, d);
            }
        }
        V1Dirs(dirs)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn get(&self, c: &str) -> Option<&PathBuf> {
        self.0.get(c)
    }
}

/// A v1 reading, and the `cgroup.procs` file to list the processes from.
fn read_v1(dirs: &V1Dirs) -> (Sample, Option<PathBuf>) {
    let mut s = Sample::default();
    if let Some(d) = dirs.get("cpuacct") {
        let stat = kv(&d.join("cpuacct.stat"));
        let cpu = s.cpu.get_or_insert_with(Cpu::default);
        cpu.usage_ns = num(&d.join("cpuacct.usage")).unwrap_or(0);
        cpu.user_ns = stat.get("user").copied().unwrap_or(0) * NS_PER_TICK;
        cpu.system_ns = stat.get("system").copied().unwrap_or(0) * NS_PER_TICK;
    }
    if let Some(d) = dirs.get("cpu") {
        let stat = kv(&d.join("cpu.stat"));
        let cpu = s.cpu.get_or_insert_with(Cpu::default);
        cpu.periods = stat.get("nr_periods").copied().unwrap_or(0);
        cpu.throttled_periods = stat.get("nr_throttled").copied().unwrap_or(0);
        cpu.throttled_ns = stat.get("throttled_time").copied().unwrap_or(0);
        let quota = text(&d.join("cpu.cfs_quota_us"));
        s.cpu_spec = Some(CpuSpec {
            period_us: num(&d.join("cpu.cfs_period_us")).unwrap_or(0),
            quota_us: quota
                .as_deref()
                .and_then(|q| q.trim().parse::<i64>().ok())
                .and_then(|q| u64::try_from(q).ok())
                .filter(|q| *q > 0),
            shares: num(&d.join("cpu.shares")).unwrap_or(0),
        });
    }
    if let Some(d) = dirs.get("memory") {
        let stat = kv(&d.join("memory.stat"));
        let g = |k: &str| stat.get(k).copied().unwrap_or(0);
        let hierarchy = num(&d.join("memory.use_hierarchy")) == Some(1);
        let k = |name: &'static str| -> u64 {
            if hierarchy {
                g(&format!("total_{name}"))
            } else {
                g(name)
            }
        };
        let usage = num(&d.join("memory.usage_in_bytes")).unwrap_or(0);
        let inactive_file = g("total_inactive_file");
        s.memory = Some(Memory {
            usage,
            max_usage: num(&d.join("memory.max_usage_in_bytes")),
            working_set: usage.saturating_sub(inactive_file),
            rss: k("rss"),
            cache: k("cache"),
            swap: k("swap"),
            mapped_file: k("mapped_file"),
            kernel: num(&d.join("memory.kmem.usage_in_bytes")).unwrap_or(0),
            active_file: g("total_active_file"),
            inactive_file,
            failcnt: num(&d.join("memory.failcnt")).unwrap_or(0),
            pgfault: g("pgfault"),
            pgmajfault: g("pgmajfault"),
            pgfault_hierarchy: stat.get("total_pgfault").copied().unwrap_or(g("pgfault")),
            pgmajfault_hierarchy: stat
                .get("total_pgmajfault")
                .copied()
                .unwrap_or(g("pgmajfault")),
            oom_kills: kv(&d.join("memory.oom_control"))
                .get("oom_kill")
                .copied()
                .unwrap_or(0),
        });
        s.memory_spec = Some(MemorySpec {
            limit: memory_limit(num(&d.join("memory.limit_in_bytes"))),
            reservation: memory_limit(num(&d.join("memory.soft_limit_in_bytes"))),
            swap_limit: memory_limit(num(&d.join("memory.memsw.limit_in_bytes"))),
        });
    }
    if let Some(d) = dirs.get("pids") {
        s.pids = Some(Pids {
            current: num(&d.join("pids.current")).unwrap_or(0),
            max: num(&d.join("pids.max")).unwrap_or(0),
        });
    }
    if let Some(d) = dirs.get("blkio") {
        // The recursive files of the I/O scheduler when it keeps them; the throttling
        // layer's (always there) otherwise.
        let pick = |name: &str| {
            let sched = blkio_v1(&text(&d.join(format!("blkio.{name}"))).unwrap_or_default());
            if sched.is_empty() {
                blkio_v1(&text(&d.join(format!("blkio.throttle.{name}"))).unwrap_or_default())
            } else {
                sched
            }
        };
        s.io = merge_blkio(
            &pick("io_service_bytes_recursive"),
            &pick("io_serviced_recursive"),
        );
    }
    if let Some(d) = dirs.get("hugetlb") {
        s.hugetlb = hugetlb_sizes(d)
            .into_iter()
            .map(|size| Hugetlb {
                usage: num(&d.join(format!("hugetlb.{size}.usage_in_bytes"))).unwrap_or(0),
                max_usage: num(&d.join(format!("hugetlb.{size}.max_usage_in_bytes"))),
                failcnt: num(&d.join(format!("hugetlb.{size}.failcnt"))).unwrap_or(0),
                pagesize: size,
            })
            .collect();
    }
    // Any hierarchy lists the same processes; the pids one is made for it.
    let pids_procs = ["pids", "memory", "cpu", "cpuacct", "blkio"]
        .iter()
        .filter_map(|c| dirs.get(c))
        .map(|d| d.join("cgroup.procs"))
        .find(|p| p.is_file());
    (s, pids_procs)
}

/// A v2 reading, and its `cgroup.procs` file.
fn read_v2(dir: &Path) -> (Sample, Option<PathBuf>) {
    let mut s = Sample {
        v2: true,
        ..Sample::default()
    };
    let cpu = kv(&dir.join("cpu.stat"));
    if !cpu.is_empty() {
        let c = |k: &str| cpu.get(k).copied().unwrap_or(0);
        s.cpu = Some(Cpu {
            usage_ns: c("usage_usec").saturating_mul(1000),
            user_ns: c("user_usec").saturating_mul(1000),
            system_ns: c("system_usec").saturating_mul(1000),
            periods: c("nr_periods"),
            throttled_periods: c("nr_throttled"),
            throttled_ns: c("throttled_usec").saturating_mul(1000),
        });
    }
    if let Some(max) = text(&dir.join("cpu.max")) {
        let mut f = max.split_whitespace();
        let quota = f.next().and_then(|q| q.parse::<u64>().ok());
        let period_us = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        s.cpu_spec = Some(CpuSpec {
            period_us,
            quota_us: quota.filter(|q| *q > 0),
            shares: num(&dir.join("cpu.weight"))
                .and_then(weight_to_shares)
                .unwrap_or(0),
        });
    }
    if let Some(usage) = num(&dir.join("memory.current")) {
        let stat = kv(&dir.join("memory.stat"));
        let g = |k: &str| stat.get(k).copied().unwrap_or(0);
        let events = kv(&dir.join("memory.events"));
        let inactive_file = g("inactive_file");
        let kernel = stat
            .get("kernel")
            .copied()
            .unwrap_or_else(|| g("kernel_stack") + g("pagetables") + g("slab"));
        s.memory = Some(Memory {
            usage,
            max_usage: num(&dir.join("memory.peak")),
            working_set: usage.saturating_sub(inactive_file),
            rss: g("anon"),
            cache: g("file"),
            swap: num(&dir.join("memory.swap.current")).unwrap_or(0),
            mapped_file: g("file_mapped"),
            kernel,
            active_file: g("active_file"),
            inactive_file,
            failcnt: events.get("max").copied().unwrap_or(0),
            pgfault: g("pgfault"),
            pgmajfault: g("pgmajfault"),
            pgfault_hierarchy: g("pgfault"),
            pgmajfault_hierarchy: g("pgmajfault"),
            oom_kills: events.get("oom_kill").copied().unwrap_or(0),
        });
        s.memory_spec = Some(MemorySpec {
            limit: memory_limit(num(&dir.join("memory.max"))),
            reservation: memory_limit(num(&dir.join("memory.min"))),
            swap_limit: memory_limit(num(&dir.join("memory.swap.max"))),
        });
    }
    if let Some(current) = num(&dir.join("pids.current")) {
        s.pids = Some(Pids {
            current,
            max: num(&dir.join("pids.max")).unwrap_or(0),
        });
    }
    s.io = io_stat_v2(&text(&dir.join("io.stat")).unwrap_or_default());
    s.hugetlb = hugetlb_sizes(dir)
        .into_iter()
        .map(|size| Hugetlb {
            usage: num(&dir.join(format!("hugetlb.{size}.current"))).unwrap_or(0),
            max_usage: None,
            failcnt: kv(&dir.join(format!("hugetlb.{size}.events")))
                .get("max")
                .copied()
                .unwrap_or(0),
            pagesize: size,
        })
        .collect();
    s.psi = Psi {
        cpu: pressure(&dir.join("cpu.pressure")),
        memory: pressure(&dir.join("memory.pressure")),
        io: pressure(&dir.join("io.pressure")),
    };
    (s, Some(dir.join("cgroup.procs")))
}

/// The processes listed in `cgroup_procs`: how many, their open file descriptors and
/// sockets; and the init's soft limit of open files.
fn procs(proc: &Path, cgroup_procs: Option<&Path>, init: u32) -> Procs {
    let pids: Vec<u32> = cgroup_procs
        .and_then(text)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let mut out = Procs {
        processes: pids.len() as u64,
        ..Procs::default()
    };
    for pid in &pids {
        let Ok(fds) = std::fs::read_dir(proc.join(pid.to_string()).join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            out.fds += 1;
            if std::fs::read_link(fd.path())
                .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
            {
                out.sockets += 1;
            }
        }
    }
    if init > 0 {
        out.max_open_files = text(&proc.join(init.to_string()).join("limits"))
            .as_deref()
            .and_then(max_open_files);
    }
    out
}

/// The soft limit on the `Max open files` line of a `/proc/<pid>/limits` text
/// (None when unlimited or absent).
pub fn max_open_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

/// cgroup v2's cpu.weight (1-10000) as v1 cpu.shares (2-262144), the conversion
/// runc and the kubelet use the other way round.
pub fn weight_to_shares(weight: u64) -> Option<u64> {
    (1..=10_000)
        .contains(&weight)
        .then(|| 2 + (weight - 1) * 262_142 / 9_999)
}

/// A memory limit as reported: 0 for none.
fn memory_limit(v: Option<u64>) -> u64 {
    match v {
        Some(v) if v < NO_MEMORY_LIMIT => v,
        _ => 0,
    }
}

/// The hugepage sizes a cgroup directory has files for (`hugetlb.2MB.*`).
fn hugetlb_sizes(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut sizes: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let size = name.strip_prefix("hugetlb.")?;
            let (size, file) = size.split_once('.')?;
            (file == "usage_in_bytes" || file == "current").then(|| size.to_string())
        })
        .collect();
    sizes.sort();
    sizes.dedup();
    sizes
}

/// The `total=` values of a PSI file (`some avg10=0.00 avg60=0.00 avg300=0.00
/// total=123`, then a `full` line).
pub fn parse_pressure(text: &str) -> Option<Pressure> {
    let line = |kind: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(kind))
    };
    let field = |l: &str, key: &str| {
        l.split_whitespace()
            .find_map(|f| f.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .map(str::to_string)
    };
    let total = |l: Option<&str>| l.and_then(|l| field(l, "total")?.parse().ok());
    let avgs = |l: Option<&str>| {
        let one = |key| l.and_then(|l| hundredths(&field(l, key)?)).unwrap_or(0);
        [one("avg10"), one("avg60"), one("avg300")]
    };
    let (some, full) = (line("some"), line("full"));
    Some(Pressure {
        some_us: total(some)?,
        full_us: total(full).unwrap_or(0),
        some_avg: avgs(some),
        full_avg: avgs(full),
    })
}

/// `12.34` as 1234.
fn hundredths(v: &str) -> Option<u32> {
    let (whole, frac) = v.split_once('.').unwrap_or((v, "0"));
    let frac: String = frac.chars().chain("00".chars()).take(2).collect();
    whole
        .parse::<u32>()
        .ok()?
        .checked_mul(100)?
        .checked_add(frac.parse().ok()?)
}

fn pressure(path: &Path) -> Option<Pressure> {
    parse_pressure(&text(path)?)
}

/// v1 blkio lines (`8:0 Read 4096`; the `Total` line without a device is left out)
/// as (major, minor, operation, value).
pub fn blkio_v1(text: &str) -> Vec<(u64, u64, String, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (major, minor) = f.next()?.split_once(':')?;
            let op = f.next()?;
            let v = f.next()?.parse().ok()?;
            Some((major.parse().ok()?, minor.parse().ok()?, op.to_string(), v))
        })
        .collect()
}

/// Bytes and operation counts per device, from the v1 service-bytes and serviced
/// files.
fn merge_blkio(
    bytes: &[(u64, u64, String, u64)],
    serviced: &[(u64, u64, String, u64)],
) -> Vec<IoDevice> {
    let mut devices: Vec<IoDevice> = Vec::new();
    let mut at = |major: u64, minor: u64| -> usize {
        match devices
            .iter()
            .position(|d| d.major == major && d.minor == minor)
        {
            Some(i) => i,
            None => {
                devices.push(IoDevice {
                    major,
                    minor,
                    ..IoDevice::default()
                });
                devices.len() - 1
            }
        }
    };
    let mut updates = Vec::new();
    for (major, minor, op, v) in bytes {
        let i = at(*major, *minor);
        updates.push((i, true, op.clone(), *v));
    }
    for (major, minor, op, v) in serviced {
        let i = at(*major, *minor);
        updates.push((i, false, op.clone(), *v));
    }
    for (i, is_bytes, op, v) in updates {
        let d = &mut devices[i];
        match (is_bytes, op.as_str()) {
            (true, "Read") => d.read_bytes = v,
            (true, "Write") => d.write_bytes = v,
            (false, "Read") => d.reads = v,
            (false, "Write") => d.writes = v,
            _ => {}
        }
        if is_bytes {
            d.bytes_by_op.push((op, v));
        }
    }
    devices
}

/// v2 `io.stat` lines (`8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0`).
pub fn io_stat_v2(text: &str) -> Vec<IoDevice> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (major, minor) = f.next()?.split_once(':')?;
            let mut d = IoDevice {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                ..IoDevice::default()
            };
            for kv in f {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let Ok(v) = v.parse::<u64>() else { continue };
                match k {
                    "rbytes" => d.read_bytes = v,
                    "wbytes" => d.write_bytes = v,
                    "rios" => d.reads = v,
                    "wios" => d.writes = v,
                    "dbytes" => d.bytes_by_op.push(("Discard".into(), v)),
                    _ => {}
                }
            }
            d.bytes_by_op.insert(0, ("Write".into(), d.write_bytes));
            d.bytes_by_op.insert(0, ("Read".into(), d.read_bytes));
            Some(d)
        })
        .collect()
}

fn text(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// A file holding one number (`max` is no number).
fn num(path: &Path) -> Option<u64> {
    text(path)?.trim().parse().ok()
}

/// A `key value` per line file (memory.stat, cpu.stat, memory.events).
fn kv(path: &Path) -> HashMap<String, u64> {
    parse_kv(&text(path).unwrap_or_default())
}

pub fn parse_kv(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, body) in files {
            std::fs::write(dir.join(name), body).unwrap();
        }
    }

    const REL: &str = "kubepods/pod1/crius-abc";

    #[test]
    fn a_v1_tree_with_split_cpu_and_cpuacct_mounts() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("cg");
        let proc = t.path().join("proc");
        put(
            &root.join("cpuacct").join(REL),
            &[
                ("cpuacct.usage", "2500000000\n"),
                ("cpuacct.stat", "user 150\nsystem 30\n"),
                ("cgroup.procs", "10\n11\n"),
            ],
        );
        put(
            &root.join("cpu").join(REL),
            &[
                (
                    "cpu.stat",
                    "nr_periods 40\nnr_throttled 7\nthrottled_time 3000000000\n",
                ),
                ("cpu.cfs_period_us", "100000\n"),
                ("cpu.cfs_quota_us", "20000\n"),
                ("cpu.shares", "1024\n"),
            ],
        );
        put(
            &root.join("memory").join(REL),
            &[
                ("memory.usage_in_bytes", "10000\n"),
                ("memory.max_usage_in_bytes", "12000\n"),
                ("memory.failcnt", "3\n"),
                ("memory.kmem.usage_in_bytes", "400\n"),
                ("memory.use_hierarchy", "1\n"),
                (
                    "memory.stat",
                    "cache 1\nrss 2\nmapped_file 3\nswap 4\npgfault 50\npgmajfault 5\n\
                     total_cache 100\ntotal_rss 200\ntotal_mapped_file 30\ntotal_swap 40\n\
                     total_inactive_file 2500\ntotal_active_file 600\n\
                     total_pgfault 70\ntotal_pgmajfault 8\n",
                ),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                ),
                ("memory.limit_in_bytes", "67108864\n"),
                ("memory.soft_limit_in_bytes", "9223372036854771712\n"),
                ("memory.memsw.limit_in_bytes", "134217728\n"),
            ],
        );
        put(
            &root.join("pids").join(REL),
            &[
                ("pids.current", "5\n"),
                ("pids.max", "max\n"),
                ("cgroup.procs", "10\n11\n"),
            ],
        );
        put(
            &root.join("blkio").join(REL),
            &[
                ("blkio.io_service_bytes_recursive", "Total 0\n"),
                (
                    "blkio.throttle.io_service_bytes_recursive",
                    "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Total 12288\nTotal 12288\n",
                ),
                (
                    "blkio.throttle.io_serviced_recursive",
                    "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nTotal 3\n",
                ),
            ],
        );
        put(
            &proc.join("10"),
            &[(
                "limits",
                "Limit  Soft Limit Hard Limit Units\nMax open files            1024                 4096                 files\n",
            )],
        );
        std::fs::create_dir_all(proc.join("10/fd")).unwrap();
        std::os::unix::fs::symlink("socket:[123]", proc.join("10/fd/3")).unwrap();
        std::os::unix::fs::symlink("/dev/null", proc.join("10/fd/0")).unwrap();
        std::fs::create_dir_all(proc.join("11/fd")).unwrap();
        std::os::unix::fs::symlink("pipe:[9]", proc.join("11/fd/1")).unwrap();

        let s = read(&root, &proc, Path::new(REL), 10).unwrap();
        assert!(!s.v2);
        assert_eq!(
            s.cpu,
            Some(Cpu {
                usage_ns: 2_500_000_000,
                user_ns: 1_500_000_000,
                system_ns: 300_000_000,
                periods: 40,
                throttled_periods: 7,
                throttled_ns: 3_000_000_000,
            })
        );
        assert_eq!(
            s.cpu_spec,
            Some(CpuSpec {
                period_us: 100_000,
                quota_us: Some(20_000),
                shares: 1024
            })
        );
        let m = s.memory.unwrap();
        assert_eq!(
            (m.usage, m.max_usage, m.failcnt, m.kernel),
            (10_000, Some(12_000), 3, 400)
        );
        assert_eq!(m.working_set, 7_500, "usage less total_inactive_file");
        assert_eq!(
            (m.cache, m.rss, m.mapped_file, m.swap),
            (100, 200, 30, 40),
            "hierarchical counters"
        );
        assert_eq!((m.pgfault, m.pgmajfault), (50, 5));
        assert_eq!((m.pgfault_hierarchy, m.pgmajfault_hierarchy), (70, 8));
        assert_eq!(
            (m.active_file, m.inactive_file, m.oom_kills),
            (600, 2500, 2)
        );
        assert_eq!(
            s.memory_spec,
            Some(MemorySpec {
                limit: 64 << 20,
                reservation: 0,
                swap_limit: 128 << 20
            }),
            "an unlimited soft limit is 0"
        );
        assert_eq!(s.pids, Some(Pids { current: 5, max: 0 }));
        assert_eq!(
            s.io.len(),
            1,
            "the throttle files, as the scheduler's are empty"
        );
        let d = &s.io[0];
        assert_eq!(
            (
                d.major,
                d.minor,
                d.read_bytes,
                d.write_bytes,
                d.reads,
                d.writes
            ),
            (8, 0, 4096, 8192, 1, 2)
        );
        assert_eq!(d.bytes_by_op.len(), 5);
        assert!(s.hugetlb.is_empty());
        assert_eq!(s.psi, Psi::default(), "no PSI on v1");
        assert_eq!(
            s.procs,
            Procs {
                processes: 2,
                fds: 3,
                sockets: 1,
                max_open_files: Some(1024)
            }
        );
        // A cgroup that is gone.
        assert_eq!(read(&root, &proc, Path::new("kubepods/gone"), 0), None);
    }

    #[test]
    fn a_v2_tree() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("cg");
        let proc = t.path().join("proc");
        put(
            &root,
            &[("cgroup.controllers", "cpu io memory pids hugetlb\n")],
        );
        put(
            &root.join(REL),
            &[
                (
                    "cpu.stat",
                    "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n\
                     nr_periods 10\nnr_throttled 4\nthrottled_usec 1500000\n",
                ),
                ("cpu.max", "20000 100000\n"),
                ("cpu.weight", "100\n"),
                ("memory.current", "10000\n"),
                ("memory.peak", "15000\n"),
                (
                    "memory.stat",
                    "anon 3000\nfile 5000\nkernel 700\nfile_mapped 80\nactive_file 900\n\
                     inactive_file 4000\npgfault 60\npgmajfault 6\n",
                ),
                ("memory.swap.current", "256\n"),
                ("memory.events", "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n"),
                ("memory.max", "max\n"),
                ("memory.min", "1048576\n"),
                ("memory.swap.max", "0\n"),
                ("pids.current", "3\n"),
                ("pids.max", "1024\n"),
                (
                    "io.stat",
                    "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n253:1 rbytes=1 wbytes=0 rios=1 wios=0\n",
                ),
                ("hugetlb.2MB.current", "4194304\n"),
                ("hugetlb.2MB.max", "max\n"),
                ("hugetlb.2MB.events", "max 1\n"),
                (
                    "cpu.pressure",
                    "some avg10=0.00 avg60=0.00 avg300=0.00 total=1200\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=300\n",
                ),
                (
                    "memory.pressure",
                    "some avg10=0.00 avg60=0.00 avg300=0.00 total=50\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=20\n",
                ),
                ("cgroup.procs", "42\n"),
            ],
        );
        std::fs::create_dir_all(proc.join("42/fd")).unwrap();
        std::os::unix::fs::symlink("socket:[1]", proc.join("42/fd/4")).unwrap();

        let s = read(&root, &proc, Path::new(REL), 0).unwrap();
        assert!(s.v2);
        assert_eq!(
            s.cpu,
            Some(Cpu {
                usage_ns: 2_500_000_000,
                user_ns: 2_000_000_000,
                system_ns: 500_000_000,
                periods: 10,
                throttled_periods: 4,
                throttled_ns: 1_500_000_000,
            })
        );
        assert_eq!(
            s.cpu_spec,
            Some(CpuSpec {
                period_us: 100_000,
                quota_us: Some(20_000),
                shares: 2 + 99 * 262_142 / 9_999,
            })
        );
        let m = s.memory.unwrap();
        assert_eq!(
            (m.usage, m.max_usage, m.working_set),
            (10_000, Some(15_000), 6_000)
        );
        assert_eq!(
            (m.rss, m.cache, m.kernel, m.mapped_file, m.swap),
            (3000, 5000, 700, 80, 256)
        );
        assert_eq!(
            (m.failcnt, m.oom_kills, m.pgfault, m.pgmajfault),
            (9, 1, 60, 6)
        );
        assert_eq!(
            s.memory_spec,
            Some(MemorySpec {
                limit: 0,
                reservation: 1 << 20,
                swap_limit: 0
            })
        );
        assert_eq!(
            s.pids,
            Some(Pids {
                current: 3,
                max: 1024
            })
        );
        assert_eq!(s.io.len(), 2);
        assert_eq!(
            (
                s.io[0].read_bytes,
                s.io[0].write_bytes,
                s.io[0].reads,
                s.io[0].writes
            ),
            (4096, 8192, 1, 2)
        );
        assert_eq!(
            s.hugetlb,
            vec![Hugetlb {
                pagesize: "2MB".into(),
                usage: 4 << 20,
                max_usage: None,
                failcnt: 1
            }]
        );
        assert_eq!(
            s.psi.cpu,
            Some(Pressure {
                some_us: 1200,
                full_us: 300,
                ..s.psi.cpu.unwrap_or_default()
            })
        );
        assert_eq!(
            s.psi.memory,
            Some(Pressure {
                some_us: 50,
                full_us: 20,
                ..s.psi.memory.unwrap_or_default()
            })
        );
        assert_eq!(s.psi.io, None, "no io.pressure file");
        assert_eq!((s.procs.processes, s.procs.fds, s.procs.sockets), (1, 1, 1));
        // No quota.
        std::fs::write(root.join(REL).join("cpu.max"), "max 100000\n").unwrap();
        let s = read(&root, &proc, Path::new(REL), 0).unwrap();
        assert_eq!(s.cpu_spec.unwrap().quota_us, None);
    }

    #[test]
    fn small_parsers() {
        assert_eq!(weight_to_shares(1), Some(2));
        assert_eq!(weight_to_shares(10_000), Some(262_144));
        assert_eq!(weight_to_shares(0), None);
        assert_eq!(parse_pressure("garbage"), None);
        assert_eq!(
            parse_pressure("some avg10=1.00 avg60=0.00 avg300=0.00 total=5\n"),
            Some(Pressure {
                some_us: 5,
                full_us: 0,
                some_avg: [100, 0, 0],
                full_avg: [0, 0, 0],
            })
        );
        assert_eq!(
            parse_pressure(
                "some avg10=12.34 avg60=0.5 avg300=100.00 total=7\nfull avg10=0.01 avg60=0.00 avg300=3.10 total=2\n"
            ),
            Some(Pressure {
                some_us: 7,
                full_us: 2,
                some_avg: [1234, 50, 10000],
                full_avg: [1, 0, 310],
            })
        );
        assert_eq!(
            max_open_files("Max open files  unlimited unlimited files\n"),
            None
        );
        assert_eq!(blkio_v1("8:0 Read x\nbad\n"), vec![]);
        assert!(io_stat_v2("nonsense\n").is_empty());
    }
}

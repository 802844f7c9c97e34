//! linux.resources (as containerd maps the CRI's), process.oomScoreAdj and
//! linux.cgroupsPath.
//!
//! Resources are checked here, for CreateContainer and UpdateContainerResources alike,
//! so that a value the kernel or runc would refuse is refused naming its field rather
//! than coming back as runc's text:
//! - `memory_limit_in_bytes`: 0 (unset) or at least [`MIN_MEMORY_LIMIT`];
//! - `memory_swap_limit_in_bytes`: 0 (unset), -1 (unlimited) or at least the limit;
//! - `cpu_shares`: 0 (unset) or 2..=262144; `cpu_period`: 0 or 1000..=1000000 µs;
//!   `cpu_quota`: 0, -1 (unlimited) or at least 1000 µs;
//! - `cpuset_cpus`, `cpuset_mems`: a list like `0-3,5` of the node's online CPUs and
//!   memory nodes;
//! - hugepage limits: a page size like `2MB` or `1GB`;
//! - `unified`: keys plain cgroup file names, values without NUL or newline.

use crius_cri_api::v1 as cri;
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxHugepageLimit, LinuxHugepageLimitBuilder, LinuxMemoryBuilder,
    LinuxResources, LinuxResourcesBuilder,
};

use crate::error::{Result, build, invalid};
use crate::host::{HostFacts, IdSet};
use crate::mounts::clean;

/// The smallest memory limit accepted (CRI-O's floor): a container needs some memory to
/// start at all, and runc's own failure for less says nothing of the field.
pub const MIN_MEMORY_LIMIT: i64 = 12 << 20;

const F: &str = "config.linux.resources";

/// How container cgroups are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    /// Plain cgroupfs paths: `<parent>/crius-<id>`.
    Cgroupfs,
    /// systemd slices and scopes: `<slice>:crius:<id>`.
    Systemd,
}

fn non_negative(field: &str, v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| invalid(field, format!("{v} must not be negative")))
}

fn in_range(field: &str, v: i64, range: std::ops::RangeInclusive<i64>, unit: &str) -> Result<u64> {
    let n = non_negative(field, v)?;
    if !range.contains(&v) {
        return Err(invalid(
            field,
            format!(
                "{v} is outside {}..={}{unit} (0: unset)",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(n)
}

/// linux.resources.cpu, `None` when the request sets nothing of it.
fn cpu(
    r: &cri::LinuxContainerResources,
    host: &HostFacts,
) -> Result<Option<oci_spec::runtime::LinuxCpu>> {
    let mut b = LinuxCpuBuilder::default();
    let mut any = false;
    if r.cpu_period != 0 {
        let field = format!("{F}.cpu_period");
        b = b.period(in_range(&field, r.cpu_period, 1000..=1_000_000, " µs")?);
        any = true;
    }
    if r.cpu_quota != 0 {
        if r.cpu_quota != -1 && r.cpu_quota < 1000 {
            return Err(invalid(
                format!("{F}.cpu_quota"),
                format!(
                    "{} must be -1 (unlimited) or at least 1000 µs (0: unset)",
                    r.cpu_quota
                ),
            ));
        }
        b = b.quota(r.cpu_quota);
        any = true;
    }
    if r.cpu_shares != 0 {
        let field = format!("{F}.cpu_shares");
        b = b.shares(in_range(&field, r.cpu_shares, 2..=262_144, "")?);
        any = true;
    }
    if !r.cpuset_cpus.is_empty() {
        cpuset(
            &format!("{F}.cpuset_cpus"),
            &r.cpuset_cpus,
            &host.online_cpus,
            "CPUs",
        )?;
        b = b.cpus(r.cpuset_cpus.clone());
        any = true;
    }
    if !r.cpuset_mems.is_empty() {
        let field = format!("{F}.cpuset_mems");
        cpuset(&field, &r.cpuset_mems, &host.online_mems, "memory nodes")?;
        b = b.mems(r.cpuset_mems.clone());
        any = true;
    }
    if !any {
        return Ok(None);
    }
    b.build().map(Some).map_err(build("cpu resources"))
}

/// A cpuset list: valid syntax, and only ids the node has online.
fn cpuset(field: &str, list: &str, online: &IdSet, what: &str) -> Result<()> {
    let set = IdSet::parse(list).map_err(|e| invalid(field, e.to_string()))?;
    if !online.contains_all(&set) {
        return Err(invalid(
            field,
            format!("{list:?} is not within the node's online {what} ({online})"),
        ));
    }
    Ok(())
}

/// linux.resources.memory, `None` when the request sets nothing of it. With swap
/// accounting and a limit but no swap limit, swap is set equal to the limit (no
/// swapping); without swap accounting swap is left alone.
fn memory(
    r: &cri::LinuxContainerResources,
    swap_ok: bool,
) -> Result<Option<oci_spec::runtime::LinuxMemory>> {
    let limit_field = format!("{F}.memory_limit_in_bytes");
    let limit = r.memory_limit_in_bytes;
    non_negative(&limit_field, limit)?;
    if limit != 0 && limit < MIN_MEMORY_LIMIT {
        return Err(invalid(
            limit_field,
            format!("{limit} is below the minimum of {MIN_MEMORY_LIMIT} bytes (12 MiB; 0: unset)"),
        ));
    }
    let swap = r.memory_swap_limit_in_bytes;
    if swap != 0 && swap != -1 && swap < limit.max(0) {
        return Err(invalid(
            format!("{F}.memory_swap_limit_in_bytes"),
            format!(
                "{swap} must be -1 (unlimited) or at least the memory limit {limit} (0: unset)"
            ),
        ));
    }
    let mut b = LinuxMemoryBuilder::default();
    let mut any = false;
    if limit != 0 {
        b = b.limit(limit);
        any = true;
        if swap == 0 && swap_ok {
            b = b.swap(limit);
        }
    }
    if swap != 0 && swap_ok {
        b = b.swap(swap);
        any = true;
    }
    if !any {
        return Ok(None);
    }
    b.build().map(Some).map_err(build("memory resources"))
}

/// Whether `size` is a hugepage size as runc names them: a number and a unit.
fn is_page_size(size: &str) -> bool {
    let digits = size.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = size.split_at(digits);
    !n.is_empty() && !n.starts_with('0') && ["KB", "MB", "GB", "TB", "PB"].contains(&unit)
}

fn hugepages(r: &cri::LinuxContainerResources) -> Result<Vec<LinuxHugepageLimit>> {
    let mut pages = Vec::new();
    for (i, h) in r.hugepage_limits.iter().enumerate() {
        let limit = i64::try_from(h.limit)
            .map_err(|_| invalid(format!("{F}.hugepage_limits[{i}].limit"), "is too large"))?;
        let field = format!("{F}.hugepage_limits[{i}].page_size");
        if h.page_size.is_empty() {
            return Err(invalid(field, "must not be empty"));
        }
        if !is_page_size(&h.page_size) {
            return Err(invalid(
                field,
                format!(
                    "{:?} is not a page size like \"2MB\" or \"1GB\"",
                    h.page_size
                ),
            ));
        }
        pages.push(
            LinuxHugepageLimitBuilder::default()
                .page_size(h.page_size.clone())
                .limit(limit)
                .build()
                .map_err(build("hugepage limits"))?,
        );
    }
    Ok(pages)
}

fn check_unified(r: &cri::LinuxContainerResources) -> Result<()> {
    for (key, value) in &r.unified {
        let field = format!("{F}.unified[{key}]");
        if key.is_empty() || key == "." || key == ".." || key.contains(['/', '\0']) {
            return Err(invalid(field, format!("{key:?} is not a cgroup file name")));
        }
        if value.contains(['\0', '\n']) {
            return Err(invalid(
                field,
                "the value must not contain NUL or a newline",
            ));
        }
    }
    Ok(())
}

/// linux.resources (without devices), checked (see the module's rules).
pub(crate) fn resources(
    r: Option<&cri::LinuxContainerResources>,
    host: &HostFacts,
) -> Result<LinuxResources> {
    let mut b = LinuxResourcesBuilder::default();
    let Some(r) = r else {
        return b.build().map_err(build("resources"));
    };
    if let Some(cpu) = cpu(r, host)? {
        b = b.cpu(cpu);
    }
    if let Some(memory) = memory(r, host.swap_accounting)? {
        b = b.memory(memory);
    }
    let pages = hugepages(r)?;
    if !pages.is_empty() {
        b = b.hugepage_limits(pages);
    }
    check_unified(r)?;
    if !r.unified.is_empty() {
        b = b.unified(r.unified.clone());
    }
    b.build().map_err(build("resources"))
}

/// linux.resources for UpdateContainerResources (the shim passes them to `runc
/// update`), checked as for CreateContainer.
pub fn linux_resources(
    r: &cri::LinuxContainerResources,
    host: &HostFacts,
) -> Result<LinuxResources> {
    resources(Some(r), host)
}

/// process.oomScoreAdj: the request's, never below what the daemon may set.
pub(crate) fn oom_score_adj(r: Option<&cri::LinuxContainerResources>, floor: i64) -> Result<i32> {
    const FIELD: &str = "config.linux.resources.oom_score_adj";
    let adj = r.map_or(0, |r| r.oom_score_adj);
    if !(-1000..=1000).contains(&adj) {
        return Err(invalid(FIELD, format!("{adj} is outside [-1000, 1000]")));
    }
    let clamped = adj.max(floor).min(1000);
    i32::try_from(clamped).map_err(|_| invalid(FIELD, format!("{clamped} is out of range")))
}

/// linux.cgroupsPath for the driver: cgroupfs `<parent>/crius-<id>` (parent "/crius"
/// by default); systemd `<slice>:crius:<id>` (slice "system.slice" by default).
pub(crate) fn cgroups_path(driver: CgroupDriver, parent: &str, id: &str) -> Result<String> {
    const FIELD: &str = "sandbox_config.linux.cgroup_parent";
    if parent.split('/').any(|c| c == "..") {
        return Err(invalid(FIELD, format!("{parent:?} holds '..'")));
    }
    match driver {
        CgroupDriver::Cgroupfs => {
            let parent = if parent.is_empty() { "/crius" } else { parent };
            let parent = clean(parent);
            if parent == "/" {
                Ok(format!("/crius-{id}"))
            } else {
                Ok(format!("{parent}/crius-{id}"))
            }
        }
        CgroupDriver::Systemd => {
            let slice = parent
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .filter(|s| !s.is_empty())
                .unwrap_or("system.slice");
            if !slice.ends_with(".slice") {
                return Err(invalid(
                    FIELD,
                    format!(
                        "{parent:?} is not a systemd slice (the systemd cgroup driver is in use)"
                    ),
                ));
            }
            Ok(format!("{slice}:crius:{id}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn host(swap: bool) -> HostFacts {
        HostFacts {
            oom_score_adj_floor: i64::MIN,
            cap_bounding_set: u64::MAX,
            swap_accounting: swap,
            online_cpus: IdSet::parse("0-3").unwrap(),
            online_mems: IdSet::parse("0").unwrap(),
        }
    }

    fn json_of(r: &cri::LinuxContainerResources, swap: bool) -> Value {
        serde_json::to_value(linux_resources(r, &host(swap)).unwrap()).unwrap()
    }

    fn refused(r: &cri::LinuxContainerResources) -> String {
        let e = linux_resources(r, &host(true)).unwrap_err();
        assert!(matches!(e, crate::SpecError::InvalidField { .. }), "{e:?}");
        e.field().unwrap_or_default().to_string()
    }

    fn full() -> cri::LinuxContainerResources {
        cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![cri::HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            unified: [("memory.high".to_string(), "1000000".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn resources_mapping() {
        let out = json_of(&full(), true);
        assert_eq!(
            out,
            json!({
                "cpu": {"period": 100_000, "quota": 50_000, "shares": 512,
                        "cpus": "0-1", "mems": "0"},
                "memory": {"limit": 64 << 20, "swap": 64 << 20},
                "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}],
                "unified": {"memory.high": "1000000"},
            })
        );
        assert!(json_of(&full(), false)["memory"].get("swap").is_none());
        let r = cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 128 << 20,
            ..Default::default()
        };
        assert_eq!(json_of(&r, true)["memory"]["swap"], 128 << 20);
        assert_eq!(
            json_of(&cri::LinuxContainerResources::default(), true),
            json!({})
        );
        let none = resources(None, &host(true)).unwrap();
        assert_eq!(serde_json::to_value(none).unwrap(), json!({}));
    }

    #[test]
    fn memory_limits() {
        let mem = |limit: i64, swap: i64| cri::LinuxContainerResources {
            memory_limit_in_bytes: limit,
            memory_swap_limit_in_bytes: swap,
            ..Default::default()
        };
        let field = "config.linux.resources.memory_limit_in_bytes";
        for bad in [1, 4096, MIN_MEMORY_LIMIT - 1, -1, i64::MIN] {
            assert_eq!(refused(&mem(bad, 0)), field, "{bad}");
        }
        for ok in [0, MIN_MEMORY_LIMIT, 1 << 40] {
            linux_resources(&mem(ok, 0), &host(true)).unwrap();
        }
        let field = "config.linux.resources.memory_swap_limit_in_bytes";
        for bad in [-2, 1, (64 << 20) - 1] {
            assert_eq!(refused(&mem(64 << 20, bad)), field, "{bad}");
        }
        for ok in [0, -1, 64 << 20, 1 << 40] {
            linux_resources(&mem(64 << 20, ok), &host(true)).unwrap();
        }
        assert_eq!(json_of(&mem(64 << 20, -1), true)["memory"]["swap"], -1);
        // Without a memory limit any non-negative swap limit is at least it.
        assert_eq!(json_of(&mem(0, 5), true), json!({"memory": {"swap": 5}}));
        assert_eq!(json_of(&mem(0, 5), false), json!({}));
    }

    #[test]
    fn cpu_shares_period_and_quota() {
        let cpu = |shares: i64, period: i64, quota: i64| cri::LinuxContainerResources {
            cpu_shares: shares,
            cpu_period: period,
            cpu_quota: quota,
            ..Default::default()
        };
        for bad in [1, -1, 262_145, 1 << 62] {
            assert_eq!(
                refused(&cpu(bad, 0, 0)),
                "config.linux.resources.cpu_shares",
                "{bad}"
            );
        }
        for ok in [0, 2, 1024, 262_144] {
            linux_resources(&cpu(ok, 0, 0), &host(true)).unwrap();
        }
        for bad in [1, 999, 1_000_001, -5] {
            assert_eq!(
                refused(&cpu(0, bad, 0)),
                "config.linux.resources.cpu_period",
                "{bad}"
            );
        }
        for ok in [0, 1000, 100_000, 1_000_000] {
            linux_resources(&cpu(0, ok, 0), &host(true)).unwrap();
        }
        for bad in [-2, -1000, 1, 999] {
            assert_eq!(
                refused(&cpu(0, 0, bad)),
                "config.linux.resources.cpu_quota",
                "{bad}"
            );
        }
        for ok in [0, -1, 1000, 1 << 40] {
            linux_resources(&cpu(0, 0, ok), &host(true)).unwrap();
        }
        assert_eq!(json_of(&cpu(0, 0, -1), true), json!({"cpu": {"quota": -1}}));
    }

    #[test]
    fn cpusets_within_the_online_ids() {
        let set = |cpus: &str, mems: &str| cri::LinuxContainerResources {
            cpuset_cpus: cpus.into(),
            cpuset_mems: mems.into(),
            ..Default::default()
        };
        for ok in ["0", "0-3", "0,2-3", "3,1", "1-1"] {
            linux_resources(&set(ok, ""), &host(true)).unwrap();
        }
        for bad in ["4", "0-4", "3-1", "0,,1", "a", "0 - 1", "-1", "0-", "1,"] {
            assert_eq!(
                refused(&set(bad, "")),
                "config.linux.resources.cpuset_cpus",
                "{bad:?}"
            );
        }
        linux_resources(&set("", "0"), &host(true)).unwrap();
        for bad in ["1", "0-1", "x"] {
            assert_eq!(
                refused(&set("", bad)),
                "config.linux.resources.cpuset_mems",
                "{bad:?}"
            );
        }
        let e = linux_resources(&set("7", ""), &host(true)).unwrap_err();
        assert!(e.to_string().contains("online CPUs (0-3)"), "{e}");
    }

    #[test]
    fn hugepage_sizes_and_unified_keys() {
        let pages = |size: &str| cri::LinuxContainerResources {
            hugepage_limits: vec![cri::HugepageLimit {
                page_size: size.into(),
                limit: 1 << 21,
            }],
            ..Default::default()
        };
        for ok in ["2MB", "1GB", "64KB", "16GB"] {
            linux_resources(&pages(ok), &host(true)).unwrap();
        }
        for bad in ["", "2", "MB", "2M", "2mb", "02MB", "2 MB", "1GiB", "-2MB"] {
            assert_eq!(
                refused(&pages(bad)),
                "config.linux.resources.hugepage_limits[0].page_size",
                "{bad:?}"
            );
        }
        let mut too_large = pages("2MB");
        too_large.hugepage_limits[0].limit = u64::MAX;
        assert_eq!(
            refused(&too_large),
            "config.linux.resources.hugepage_limits[0].limit"
        );
        let unified = |k: &str, v: &str| cri::LinuxContainerResources {
            unified: [(k.to_string(), v.to_string())].into(),
            ..Default::default()
        };
        for (k, v) in [
            ("memory.high", "max"),
            ("cpu.weight", "100"),
            ("io.max", "8:0 rbps=1"),
        ] {
            linux_resources(&unified(k, v), &host(true)).unwrap();
        }
        for (k, v) in [
            ("../memory.high", "1"),
            ("a/b", "1"),
            (".", "1"),
            ("..", "1"),
            ("", "1"),
            ("m\0x", "1"),
            ("memory.high", "1\n2"),
            ("memory.high", "1\0"),
        ] {
            assert_eq!(
                refused(&unified(k, v)),
                format!("config.linux.resources.unified[{k}]"),
                "{k:?}={v:?}"
            );
        }
    }

    #[test]
    fn oom_score_adj_is_clamped_to_the_floor() {
        let r = |adj| cri::LinuxContainerResources {
            oom_score_adj: adj,
            ..Default::default()
        };
        assert_eq!(oom_score_adj(None, i64::MIN).unwrap(), 0);
        assert_eq!(oom_score_adj(Some(&r(-997)), i64::MIN).unwrap(), -997);
        assert_eq!(oom_score_adj(Some(&r(-997)), -500).unwrap(), -500);
        assert_eq!(oom_score_adj(Some(&r(1000)), -500).unwrap(), 1000);
        assert_eq!(oom_score_adj(Some(&r(0)), 0).unwrap(), 0);
        for bad in [1001, -1001] {
            let e = oom_score_adj(Some(&r(bad)), 0).unwrap_err();
            assert_eq!(e.field(), Some("config.linux.resources.oom_score_adj"));
        }
    }

    #[test]
    fn cgroups_paths_for_both_drivers() {
        use CgroupDriver::*;
        assert_eq!(
            cgroups_path(Cgroupfs, "/kubepods/burstable/pod1", "abc").unwrap(),
            "/kubepods/burstable/pod1/crius-abc"
        );
        assert_eq!(
            cgroups_path(Cgroupfs, "", "abc").unwrap(),
            "/crius/crius-abc"
        );
        assert_eq!(
            cgroups_path(Cgroupfs, "kubepods/", "abc").unwrap(),
            "/kubepods/crius-abc"
        );
        assert_eq!(cgroups_path(Cgroupfs, "/", "abc").unwrap(), "/crius-abc");
        assert!(cgroups_path(Cgroupfs, "/a/../b", "abc").is_err());
        assert_eq!(
            cgroups_path(Systemd, "kubepods-besteffort-pod1.slice", "abc").unwrap(),
            "kubepods-besteffort-pod1.slice:crius:abc"
        );
        assert_eq!(
            cgroups_path(
                Systemd,
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2.slice",
                "abc"
            )
            .unwrap(),
            "kubepods-burstable-pod2.slice:crius:abc"
        );
        assert_eq!(
            cgroups_path(Systemd, "", "abc").unwrap(),
            "system.slice:crius:abc"
        );
        let e = cgroups_path(Systemd, "/kubepods/pod1", "abc").unwrap_err();
        assert_eq!(e.field(), Some("sandbox_config.linux.cgroup_parent"));
    }
}

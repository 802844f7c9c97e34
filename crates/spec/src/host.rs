//! Facts about the node the generator needs, probed once ([`HostFacts::probe`]) and
//! passed in, so that generation itself reads no host state beyond the files a
//! container's spec is made from.

use std::path::Path;

/// What the generator needs to know about the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// The lowest oom_score_adj the daemon may give a container; `i64::MIN`: anything.
    pub oom_score_adj_floor: i64,
    /// The daemon's capability bounding set (bit n: capability number n): privileged
    /// and "ALL" mean every capability in it, and adding one outside it is refused
    /// (the runtime could not grant it).
    pub cap_bounding_set: u64,
    /// Whether the node accounts swap: only then is a container's swap limited.
    pub swap_accounting: bool,
    /// The node's online CPUs: a cpuset outside them is refused.
    pub online_cpus: IdSet,
    /// The node's online memory nodes: a cpuset's mems outside them are refused.
    pub online_mems: IdSet,
}

impl HostFacts {
    /// Probes this process and node: its capability bounding set and whether it may
    /// lower oom_score_adj (else its own is the floor), swap accounting as containerd
    /// checks it, and /sys/devices/system/{cpu,node}/online (no node file: node 0).
    pub fn probe() -> HostFacts {
        let oom_score_adj_floor = if host_can_set_negative_oom_score_adj() {
            i64::MIN
        } else {
            own_oom_score_adj()
        };
        HostFacts {
            oom_score_adj_floor,
            cap_bounding_set: own_capability_bounding_set(),
            swap_accounting: swap_accounting(),
            online_cpus: online("/sys/devices/system/cpu/online").unwrap_or_else(|| {
                let n = std::thread::available_parallelism().map_or(1, |n| n.get());
                IdSet::range(0, u32::try_from(n).unwrap_or(u32::MAX).saturating_sub(1))
            }),
            online_mems: online("/sys/devices/system/node/online")
                .unwrap_or_else(|| IdSet::range(0, 0)),
        }
    }
}

fn online(path: &str) -> Option<IdSet> {
    IdSet::parse(std::fs::read_to_string(path).ok()?.trim()).ok()
}

/// A set of CPU or memory-node ids, in the kernel's list format (`0-3,5`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdSet {
    /// Sorted, disjoint, non-adjacent inclusive ranges.
    ranges: Vec<(u32, u32)>,
}

/// A malformed id list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{list:?} is not a list of ids like \"0-3,5\": {reason}")]
pub struct IdListError {
    pub list: String,
    pub reason: &'static str,
}

impl IdSet {
    /// The ids `first..=last`.
    pub fn range(first: u32, last: u32) -> IdSet {
        IdSet {
            ranges: vec![(first.min(last), last.max(first))],
        }
    }

    /// Parses a non-empty list: comma-separated ids and ascending ranges `a-b`,
    /// without white space.
    pub fn parse(list: &str) -> Result<IdSet, IdListError> {
        let err = |reason| IdListError {
            list: list.to_string(),
            reason,
        };
        let id = |s: &str| -> Result<u32, IdListError> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err("an element is not a number or a range"));
            }
            s.parse().map_err(|_| err("an id is too large"))
        };
        if list.is_empty() {
            return Err(err("it is empty"));
        }
        let mut ranges = Vec::new();
        for part in list.split(',') {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (id(a)?, id(b)?),
                None => {
                    let a = id(part)?;
                    (a, a)
                }
            };
            if a > b {
                return Err(err("a range is not ascending"));
            }
            ranges.push((a, b));
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(last) if u64::from(a) <= u64::from(last.1) + 1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        Ok(IdSet { ranges: merged })
    }

    /// Whether every id of `other` is in this set.
    pub fn contains_all(&self, other: &IdSet) -> bool {
        other.ranges.iter().all(|&(a, b)| {
            self.ranges
                .iter()
                .any(|&(first, last)| first <= a && b <= last)
        })
    }
}

impl std::fmt::Display for IdSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (a, b)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

/// This process's capability bounding set: what any container it starts can hold.
pub(crate) fn own_capability_bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| status_mask(&s, "CapBnd:"))
        .unwrap_or(u64::MAX)
}

fn status_mask(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    u64::from_str_radix(line.trim_start_matches(key).trim(), 16).ok()
}

/// Whether this process may lower oom_score_adj (holds CAP_SYS_RESOURCE).
pub(crate) fn host_can_set_negative_oom_score_adj() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| cap_eff_has(&s, 24)) // CAP_SYS_RESOURCE
        .unwrap_or(false)
}

fn cap_eff_has(status: &str, bit: u32) -> Option<bool> {
    Some(status_mask(status, "CapEff:")? & (1u64 << bit) != 0)
}

/// This process's oom_score_adj (0 when unreadable).
pub(crate) fn own_oom_score_adj() -> i64 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Whether the host accounts swap, as containerd checks it: on cgroup v2, whether this
/// process's own cgroup has `memory.swap.max` (the root cgroup has none); on v1, whether
/// the memory hierarchy has the memsw files.
fn swap_accounting() -> bool {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        return match own.lines().find_map(|l| l.strip_prefix("0::")) {
            Some("/") | None => Path::new("/sys/fs/cgroup/memory.swap.max").exists(),
            Some(path) => Path::new("/sys/fs/cgroup")
                .join(path.trim_start_matches('/'))
                .join("memory.swap.max")
                .exists(),
        };
    }
    Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_probes() {
        assert_eq!(
            cap_eff_has("Name:\tx\nCapEff:\t0000000001000000\n", 24),
            Some(true)
        );
        assert_eq!(cap_eff_has("CapEff:\t0000000000000000\n", 24), Some(false));
        assert_eq!(cap_eff_has("nothing", 24), None);
        assert_eq!(
            status_mask("CapBnd:\t000001ffffffffff\n", "CapBnd:"),
            Some((1 << 41) - 1)
        );
        let own = own_oom_score_adj();
        assert!((-1000..=1000).contains(&own));
        let facts = HostFacts::probe();
        if !host_can_set_negative_oom_score_adj() {
            assert_eq!(facts.oom_score_adj_floor, own);
        }
        // Every Linux node has CPU 0 and memory node 0 online.
        assert!(facts.online_cpus.contains_all(&IdSet::range(0, 0)));
        assert!(facts.online_mems.contains_all(&IdSet::range(0, 0)));
    }

    #[test]
    fn id_lists_parse_merge_and_contain() {
        let s = IdSet::parse("0-3,5,4,8-9,9").unwrap();
        assert_eq!(s.to_string(), "0-5,8-9");
        assert!(s.contains_all(&IdSet::parse("1-2,9").unwrap()));
        assert!(s.contains_all(&IdSet::parse("0-5").unwrap()));
        assert!(!s.contains_all(&IdSet::parse("5-8").unwrap()));
        assert!(!s.contains_all(&IdSet::parse("10").unwrap()));
        assert_eq!(IdSet::parse("7").unwrap(), IdSet::range(7, 7));
        assert_eq!(IdSet::range(3, 1).to_string(), "1-3");
        assert_eq!(
            IdSet::parse("4294967295").unwrap().to_string(),
            "4294967295"
        );
        for bad in [
            "",
            "3-1",
            "0-",
            "-1",
            "a",
            "0,,1",
            "0 ,1",
            " 0",
            "0-1-2",
            "1,",
            "4294967296",
        ] {
            assert!(IdSet::parse(bad).is_err(), "{bad:?} accepted");
        }
        let e = IdSet::parse("3-1").unwrap_err();
        assert_eq!(e.reason, "a range is not ascending");
        assert!(e.to_string().starts_with("\"3-1\" is not a list of ids"));
    }
}

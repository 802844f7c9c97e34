//! IP address management for the built-in bridge.
//!
//! Leases live in a [`LeaseStore`] that criusd implements over its database, so that
//! an address survives a daemon restart and is reclaimed after a crash by
//! [`crate::BridgeBackend::reconcile`]. Invariants:
//! - one lease per (network, pod, family);
//! - one pod per (network, address);
//! - [`LeaseStore::insert`] enforces both in one transaction, so concurrent
//!   allocations never hand out the same address: a loser gets
//!   [`LeaseStoreError::AddressTaken`] and tries the next address.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::cidr::IpNet;

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        if ip.is_ipv6() { Self::V6 } else { Self::V4 }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

/// One address held by one pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The network the address belongs to (the bridge name).
    pub network: String,
    /// The sandbox id holding it.
    pub pod_id: String,
    /// The address family.
    pub family: IpFamily,
    /// The address.
    pub address: IpAddr,
}

/// Which lease: a pod's address of one family in one network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseKey<'a> {
    /// The network (the bridge name).
    pub network: &'a str,
    /// The sandbox id.
    pub pod_id: &'a str,
    /// The address family.
    pub family: IpFamily,
}

impl LeaseKey<'_> {
    /// Whether `lease` is the one this key names.
    pub fn names(&self, lease: &Lease) -> bool {
        lease.network == self.network && lease.pod_id == self.pod_id && lease.family == self.family
    }
}

impl Lease {
    /// The key naming this lease.
    pub fn key(&self) -> LeaseKey<'_> {
        LeaseKey {
            network: &self.network,
            pod_id: &self.pod_id,
            family: self.family,
        }
    }
}

/// A lease store failure.
#[derive(Debug, thiserror::Error)]
pub enum LeaseStoreError {
    /// Another pod holds the address.
    #[error("address {0} is already leased")]
    AddressTaken(IpAddr),
    /// The pod already holds an address of that family in that network.
    #[error("pod {pod_id} already holds an {family} lease in {network}")]
    AlreadyLeased {
        /// The network.
        network: String,
        /// The pod.
        pod_id: String,
        /// The family.
        family: IpFamily,
    },
    /// The store itself failed.
    #[error("lease store: {0}")]
    Backend(String),
    /// The store's file system is full; the same call works once space is freed.
    #[error("lease store: no space left: {0}")]
    Full(String),
}

/// Where IP leases are kept. criusd implements it over its redb store; each call must
/// be one transaction.
pub trait LeaseStore: Send + Sync {
    /// Every lease of `network`.
    fn list(&self, network: &str) -> Result<Vec<Lease>, LeaseStoreError>;
    /// Records `lease`, atomically refusing it with [`LeaseStoreError::AddressTaken`]
    /// when another pod holds the address in that network, and with
    /// [`LeaseStoreError::AlreadyLeased`] when the pod holds one of that family.
    fn insert(&self, lease: &Lease) -> Result<(), LeaseStoreError>;
    /// Removes the lease `key` names, returning it; `Ok(None)` when there was none.
    fn remove(&self, key: LeaseKey<'_>) -> Result<Option<Lease>, LeaseStoreError>;
}

/// Checks that `lease` may join `leases` (the leases of its network; others are
/// ignored): [`LeaseStoreError::AlreadyLeased`] when its pod already holds one of its
/// family there, else [`LeaseStoreError::AddressTaken`] when another lease has its
/// address. Every [`LeaseStore::insert`] makes this check inside its transaction.
pub fn check_new_lease(leases: &[Lease], lease: &Lease) -> Result<(), LeaseStoreError> {
    let mut same_network = leases.iter().filter(|l| l.network == lease.network);
    if same_network
        .clone()
        .any(|l| l.pod_id == lease.pod_id && l.family == lease.family)
    {
        return Err(LeaseStoreError::AlreadyLeased {
            network: lease.network.clone(),
            pod_id: lease.pod_id.clone(),
            family: lease.family,
        });
    }
    if same_network.any(|l| l.address == lease.address) {
        return Err(LeaseStoreError::AddressTaken(lease.address));
    }
    Ok(())
}

fn take(leases: &mut Vec<Lease>, key: LeaseKey<'_>) -> Option<Lease> {
    let pos = leases.iter().position(|l| key.names(l))?;
    Some(leases.remove(pos))
}

/// Leases in memory: for tests and for a daemon that accepts losing them on restart.
#[derive(Debug, Default)]
pub struct MemoryLeaseStore {
    leases: Mutex<Vec<Lease>>,
}

impl MemoryLeaseStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Vec<Lease>>, LeaseStoreError> {
        self.leases
            .lock()
            .map_err(|_| LeaseStoreError::Backend("lease store lock poisoned".into()))
    }
}

impl LeaseStore for MemoryLeaseStore {
    fn list(&self, network: &str) -> Result<Vec<Lease>, LeaseStoreError> {
        Ok(self
            .lock()?
            .iter()
            .filter(|l| l.network == network)
            .cloned()
            .collect())
    }

    fn insert(&self, lease: &Lease) -> Result<(), LeaseStoreError> {
        let mut g = self.lock()?;
        check_new_lease(&g, lease)?;
        g.push(lease.clone());
        Ok(())
    }

    fn remove(&self, key: LeaseKey<'_>) -> Result<Option<Lease>, LeaseStoreError> {
        let mut g = self.lock()?;
        Ok(take(&mut g, key))
    }
}

/// Leases in a JSON file, rewritten atomically (temp file + rename) on every change.
#[derive(Debug)]
pub struct JsonFileLeaseStore {
    path: PathBuf,
    lock: Mutex<()>,
}

/// errno values of a full file system and of a used-up quota.
const ENOSPC: i32 = nix::errno::Errno::ENOSPC as i32;
const EDQUOT: i32 = nix::errno::Errno::EDQUOT as i32;

/// An I/O failure on the lease file; a full file system is [`LeaseStoreError::Full`].
fn io_error(path: &Path, e: std::io::Error) -> LeaseStoreError {
    let message = format!("{}: {e}", path.display());
    match e.raw_os_error() {
        Some(ENOSPC | EDQUOT) => LeaseStoreError::Full(message),
        _ => LeaseStoreError::Backend(message),
    }
}

impl JsonFileLeaseStore {
    /// A store kept at `path` (created on first insert).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }

    fn read(path: &Path) -> Result<Vec<Lease>, LeaseStoreError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| LeaseStoreError::Backend(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(LeaseStoreError::Backend(format!("{}: {e}", path.display()))),
        }
    }

    fn write(path: &Path, leases: &[Lease]) -> Result<(), LeaseStoreError> {
        let err = |e: std::io::Error| io_error(path, e);
        let tmp = path.with_extension("tmp");
        let body = serde_json::to_vec_pretty(leases)
            .map_err(|e| LeaseStoreError::Backend(e.to_string()))?;
        std::fs::write(&tmp, body).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Vec<Lease>) -> Result<(T, bool), LeaseStoreError>,
    ) -> Result<T, LeaseStoreError> {
        let _g = self
            .lock
            .lock()
            .map_err(|_| LeaseStoreError::Backend("lease store lock poisoned".into()))?;
        let mut leases = Self::read(&self.path)?;
        let (out, dirty) = f(&mut leases)?;
        if dirty {
            Self::write(&self.path, &leases)?;
        }
        Ok(out)
    }
}

impl LeaseStore for JsonFileLeaseStore {
    fn list(&self, network: &str) -> Result<Vec<Lease>, LeaseStoreError> {
        self.with(|l| {
            Ok((
                l.iter().filter(|l| l.network == network).cloned().collect(),
                false,
            ))
        })
    }

    fn insert(&self, lease: &Lease) -> Result<(), LeaseStoreError> {
        self.with(|l| {
            check_new_lease(l, lease)?;
            l.push(lease.clone());
            Ok(((), true))
        })
    }

    fn remove(&self, key: LeaseKey<'_>) -> Result<Option<Lease>, LeaseStoreError> {
        self.with(|l| {
            let out = take(l, key);
            let dirty = out.is_some();
            Ok((out, dirty))
        })
    }
}

/// FNV-1a, a stable hash for names derived from pod ids (not for security).
pub(crate) fn fnv64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Why no address could be given.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IpamError {
    #[error("no free {family} address left in {subnet}")]
    Exhausted { family: IpFamily, subnet: IpNet },
    #[error(transparent)]
    Store(#[from] LeaseStoreError),
}

/// Gives `pod_id` an address of `subnet`'s family, reusing the lease it already holds.
/// The network address, the gateway (first host) and the IPv4 broadcast are never given.
pub(crate) fn allocate(
    store: &dyn LeaseStore,
    network: &str,
    pod_id: &str,
    subnet: IpNet,
) -> Result<IpAddr, IpamError> {
    let family = IpFamily::of(subnet.addr());
    // Hosts are indices 2..last; IPv6 scans at most 2^24 candidates.
    let size = subnet.size();
    let last = if subnet.is_ipv6() {
        size.min(1 << 24)
    } else {
        size.saturating_sub(1)
    };
    if last <= 2 {
        return Err(IpamError::Exhausted { family, subnet });
    }
    let span = last - 2;
    let start = u128::from(fnv64(&[pod_id])) % span;
    let mut retries = 0;
    loop {
        let leases = store.list(network)?;
        if let Some(l) = leases
            .iter()
            .find(|l| l.pod_id == pod_id && l.family == family)
        {
            return Ok(l.address);
        }
        let used: HashSet<IpAddr> = leases.iter().map(|l| l.address).collect();
        let candidate = (0..span)
            .map(|i| 2 + (start + i) % span)
            .filter_map(|i| subnet.nth(i))
            .find(|a| !used.contains(a));
        let Some(address) = candidate else {
            return Err(IpamError::Exhausted { family, subnet });
        };
        let lease = Lease {
            network: network.to_string(),
            pod_id: pod_id.to_string(),
            family,
            address,
        };
        match store.insert(&lease) {
            Ok(()) => return Ok(address),
            Err(LeaseStoreError::AddressTaken(_) | LeaseStoreError::AlreadyLeased { .. })
                if retries < 64 =>
            {
                retries += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(network: &'a str, pod_id: &'a str, family: IpFamily) -> LeaseKey<'a> {
        LeaseKey {
            network,
            pod_id,
            family,
        }
    }

    #[test]
    fn a_full_file_system_is_told_apart() {
        let p = Path::new("/var/lib/leases.json");
        let full = io_error(p, std::io::Error::from_raw_os_error(ENOSPC));
        assert!(
            matches!(&full, LeaseStoreError::Full(m) if m.contains("leases.json")),
            "{full}"
        );
        let other = io_error(
            p,
            std::io::Error::from_raw_os_error(nix::errno::Errno::EACCES as i32),
        );
        assert!(matches!(other, LeaseStoreError::Backend(_)), "{other}");
    }

    #[test]
    fn allocates_distinct_and_reuses() {
        let s = MemoryLeaseStore::new();
        let net: IpNet = "10.1.2.0/29".parse().unwrap();
        let mut got = HashSet::new();
        for i in 0..5 {
            let a = allocate(&s, "n", &format!("p{i}"), net).unwrap();
            assert!(net.contains(a));
            assert_ne!(a.to_string(), "10.1.2.1");
            assert_ne!(a.to_string(), "10.1.2.0");
            assert_ne!(a.to_string(), "10.1.2.7");
            assert!(got.insert(a));
        }
        assert!(matches!(
            allocate(&s, "n", "p9", net),
            Err(IpamError::Exhausted { .. })
        ));
        let again = allocate(&s, "n", "p0", net).unwrap();
        assert!(got.contains(&again));
        s.remove(key("n", "p0", IpFamily::V4)).unwrap().unwrap();
        assert!(s.remove(key("n", "p0", IpFamily::V4)).unwrap().is_none());
        allocate(&s, "n", "p9", net).unwrap();
    }

    #[test]
    fn new_lease_checks() {
        let lease = |network: &str, pod: &str, addr: &str| Lease {
            network: network.into(),
            pod_id: pod.into(),
            family: IpFamily::V4,
            address: addr.parse().unwrap(),
        };
        let held = [
            lease("n", "a", "10.0.0.2"),
            lease("n", "b", "10.0.0.3"),
            lease("other", "c", "10.0.0.4"),
        ];
        check_new_lease(&held, &lease("n", "c", "10.0.0.4")).unwrap();
        check_new_lease(&held, &lease("other", "a", "10.0.0.2")).unwrap();
        assert!(matches!(
            check_new_lease(&held, &lease("n", "c", "10.0.0.2")),
            Err(LeaseStoreError::AddressTaken(_))
        ));
        // Both conflicts: the pod's own lease is reported, whatever the order.
        assert!(matches!(
            check_new_lease(&held, &lease("n", "b", "10.0.0.2")),
            Err(LeaseStoreError::AlreadyLeased { .. })
        ));
        let v6 = Lease {
            family: IpFamily::V6,
            address: "fd00::2".parse().unwrap(),
            ..lease("n", "a", "10.0.0.2")
        };
        check_new_lease(&held, &v6).unwrap();
    }

    #[test]
    fn json_store_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let s = JsonFileLeaseStore::new(d.path().join("leases.json"));
        let net: IpNet = "fd00:9::/64".parse().unwrap();
        let a = allocate(&s, "n", "p", net).unwrap();
        let s2 = JsonFileLeaseStore::new(d.path().join("leases.json"));
        assert_eq!(s2.list("n").unwrap()[0].address, a);
        assert!(s2.list("other").unwrap().is_empty());
    }
}

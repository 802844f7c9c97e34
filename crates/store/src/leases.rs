//! The `ip_leases` table: the built-in bridge's address leases,
//! `network \x1f family \x1f pod id` → address. They live in the same database as
//! the pods, so a lease and the pod it belongs to are recovered together after a
//! crash.

use crius_cni::{IpFamily, Lease, LeaseKey, LeaseStore, LeaseStoreError};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::table::{Index, redb_err};
use crate::{Db, Store, StoreError};

pub(crate) const IP_LEASES: Index = TableDefinition::new("ip_leases");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(IP_LEASES)
        .map_err(redb_err("creating the lease table"))?;
    Ok(())
}

const SEP: char = '\x1f';

fn family_str(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "v4",
        IpFamily::V6 => "v6",
    }
}

fn lease_key(key: LeaseKey<'_>) -> String {
    let LeaseKey {
        network,
        pod_id,
        family,
    } = key;
    format!("{network}{SEP}{}{SEP}{pod_id}", family_str(family))
}

/// A store failure as the lease store reports it: the whole chain, so the network
/// backend's message still names the file and the cause.
fn lease_err(e: StoreError) -> LeaseStoreError {
    if e.is_disk_full() {
        LeaseStoreError::Full(crate::error::chain(&e))
    } else {
        LeaseStoreError::Backend(crate::error::chain(&e))
    }
}

/// Parses a lease entry; `None` when it is not one (the check reports it).
pub(crate) fn parse_lease(key: &str, value: &str) -> Option<Lease> {
    let mut parts = key.split(SEP);
    let network = parts.next()?.to_string();
    let family = match parts.next()? {
        "v4" => IpFamily::V4,
        "v6" => IpFamily::V6,
        _ => return None,
    };
    let pod_id = parts.next()?.to_string();
    Some(Lease {
        network,
        pod_id,
        family,
        address: value.parse().ok()?,
    })
}

fn leases_of(
    table: &impl ReadableTable<&'static str, &'static str>,
    network: &str,
) -> Result<Vec<Lease>, StoreError> {
    let op = "listing leases";
    let prefix = format!("{network}{SEP}");
    let mut out = Vec::new();
    for entry in table.range(prefix.as_str()..).map_err(redb_err(op))? {
        let (k, v) = entry.map_err(redb_err(op))?;
        if !k.value().starts_with(&prefix) {
            break;
        }
        if let Some(l) = parse_lease(k.value(), v.value()) {
            out.push(l);
        }
    }
    Ok(out)
}

impl LeaseStore for Db {
    fn list(&self, network: &str) -> Result<Vec<Lease>, LeaseStoreError> {
        let op = "listing leases";
        self.read(op, |txn| {
            let table = txn.open_table(IP_LEASES).map_err(redb_err(op))?;
            leases_of(&table, network)
        })
        .map_err(lease_err)
    }

    fn insert(&self, lease: &Lease) -> Result<(), LeaseStoreError> {
        let op = "writing a lease";
        let key = lease_key(lease.key());
        let addr = lease.address.to_string();
        // The refusals are the transaction's result (nothing written), not failures.
        self.write(op, |txn| {
            let mut table = txn.open_table(IP_LEASES).map_err(redb_err(op))?;
            if table.get(key.as_str()).map_err(redb_err(op))?.is_some() {
                return Ok(Err(LeaseStoreError::AlreadyLeased {
                    network: lease.network.clone(),
                    pod_id: lease.pod_id.clone(),
                    family: lease.family,
                }));
            }
            if leases_of(&table, &lease.network)?
                .iter()
                .any(|l| l.address == lease.address)
            {
                return Ok(Err(LeaseStoreError::AddressTaken(lease.address)));
            }
            table
                .insert(key.as_str(), addr.as_str())
                .map_err(redb_err(op))?;
            Ok(Ok(()))
        })
        .map_err(lease_err)?
    }

    fn remove(&self, key: LeaseKey<'_>) -> Result<Option<Lease>, LeaseStoreError> {
        let op = "removing a lease";
        let key = lease_key(key);
        self.write(op, |txn| {
            let mut table = txn.open_table(IP_LEASES).map_err(redb_err(op))?;
            Ok(table
                .remove(key.as_str())
                .map_err(redb_err(op))?
                .and_then(|v| parse_lease(&key, v.value())))
        })
        .map_err(lease_err)
    }
}

/// The network backend calls the lease store from its own blocking context.
impl LeaseStore for Store {
    fn list(&self, network: &str) -> Result<Vec<Lease>, LeaseStoreError> {
        self.blocking().list(network)
    }

    fn insert(&self, lease: &Lease) -> Result<(), LeaseStoreError> {
        self.blocking().insert(lease)
    }

    fn remove(&self, key: LeaseKey<'_>) -> Result<Option<Lease>, LeaseStoreError> {
        self.blocking().remove(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_unique_per_pod_family_and_address() {
        let dir = tempfile::tempdir().unwrap();
        let store = Db::open(&dir.path().join("s.redb")).unwrap();
        let lease = |pod: &str, addr: &str| Lease {
            network: "crius0".into(),
            pod_id: pod.into(),
            family: IpFamily::V4,
            address: addr.parse().unwrap(),
        };
        store.insert(&lease("a", "10.88.0.2")).unwrap();
        assert!(matches!(
            store.insert(&lease("b", "10.88.0.2")),
            Err(LeaseStoreError::AddressTaken(_))
        ));
        assert!(matches!(
            store.insert(&lease("a", "10.88.0.3")),
            Err(LeaseStoreError::AlreadyLeased { .. })
        ));
        store.insert(&lease("b", "10.88.0.3")).unwrap();
        let other = Lease {
            network: "crius1".into(),
            ..lease("a", "10.88.0.2")
        };
        store.insert(&other).unwrap();
        assert_eq!(LeaseStore::list(&store, "crius0").unwrap().len(), 2);
        assert_eq!(LeaseStore::list(&store, "crius1").unwrap(), vec![other]);
        assert_eq!(
            store
                .remove(LeaseKey {
                    network: "crius0",
                    pod_id: "a",
                    family: IpFamily::V4
                })
                .unwrap(),
            Some(lease("a", "10.88.0.2"))
        );
        assert_eq!(
            store
                .remove(LeaseKey {
                    network: "crius0",
                    pod_id: "a",
                    family: IpFamily::V4
                })
                .unwrap(),
            None
        );
        assert_eq!(
            LeaseStore::list(&store, "crius0").unwrap(),
            vec![lease("b", "10.88.0.3")]
        );
    }
}

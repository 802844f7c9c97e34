//! The `ip_leases` table: the built-in bridge's address leases,
//! `network \x1f family \x1f pod id` → address. They live in the same database as
//! the pods, so a lease and the pod it belongs to are recovered together after a
//! crash.

use crius_cni::{IpFamily, Lease, LeaseStore, LeaseStoreError};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use crate::table::{Index, redb_err};
use crate::{Db, Store, StoreError};

const IP_LEASES: Index = TableDefinition::new("ip_leases");

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

fn lease_key(network: &str, family: IpFamily, pod_id: &str) -> String {
    format!("{network}{SEP}{}{SEP}{pod_id}", family_str(family))
}

fn lease_err(e: impl std::fmt::Display) -> LeaseStoreError {
    LeaseStoreError::Backend(e.to_string())
}

fn parse_lease(key: &str, value: &str) -> Option<Lease> {
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
) -> Result<Vec<Lease>, LeaseStoreError> {
    let prefix = format!("{network}{SEP}");
    let mut out = Vec::new();
    for entry in table.range(prefix.as_str()..).map_err(lease_err)? {
        let (k, v) = entry.map_err(lease_err)?;
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
        let txn = self.db.begin_read().map_err(lease_err)?;
        let table = txn.open_table(IP_LEASES).map_err(lease_err)?;
        leases_of(&table, network)
    }

    fn insert(&self, lease: &Lease) -> Result<(), LeaseStoreError> {
        let txn = self.db.begin_write().map_err(lease_err)?;
        {
            let mut table = txn.open_table(IP_LEASES).map_err(lease_err)?;
            let key = lease_key(&lease.network, lease.family, &lease.pod_id);
            if table.get(key.as_str()).map_err(lease_err)?.is_some() {
                return Err(LeaseStoreError::AlreadyLeased {
                    network: lease.network.clone(),
                    pod_id: lease.pod_id.clone(),
                    family: lease.family,
                });
            }
            if leases_of(&table, &lease.network)?
                .iter()
                .any(|l| l.address == lease.address)
            {
                return Err(LeaseStoreError::AddressTaken(lease.address));
            }
            let addr = lease.address.to_string();
            table
                .insert(key.as_str(), addr.as_str())
                .map_err(lease_err)?;
        }
        txn.commit().map_err(lease_err)
    }

    fn remove(
        &self,
        network: &str,
        pod_id: &str,
        family: IpFamily,
    ) -> Result<Option<Lease>, LeaseStoreError> {
        let txn = self.db.begin_write().map_err(lease_err)?;
        let removed;
        {
            let mut table = txn.open_table(IP_LEASES).map_err(lease_err)?;
            let key = lease_key(network, family, pod_id);
            removed = table
                .remove(key.as_str())
                .map_err(lease_err)?
                .and_then(|v| parse_lease(&key, v.value()));
        }
        txn.commit().map_err(lease_err)?;
        Ok(removed)
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

    fn remove(
        &self,
        network: &str,
        pod_id: &str,
        family: IpFamily,
    ) -> Result<Option<Lease>, LeaseStoreError> {
        self.blocking().remove(network, pod_id, family)
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
            store.remove("crius0", "a", IpFamily::V4).unwrap(),
            Some(lease("a", "10.88.0.2"))
        );
        assert_eq!(store.remove("crius0", "a", IpFamily::V4).unwrap(), None);
        assert_eq!(
            LeaseStore::list(&store, "crius0").unwrap(),
            vec![lease("b", "10.88.0.3")]
        );
    }
}

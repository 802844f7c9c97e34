//! The `containers` table (container records by id), `container_names` (reserved
//! name → id) and, since schema version 2, `containers_by_pod` ((pod id, container
//! id) → nothing): every container's entry, written and removed in the same
//! transaction as its record.

use std::path::PathBuf;

use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::table::{Index, Owned, Records, decode, encode, redb_err, remove_named, reserve};
use crate::{Db, Reserve, StoreError};

pub(crate) const CONTAINERS: Records = TableDefinition::new("containers");
pub(crate) const CONTAINER_NAMES: Index = TableDefinition::new("container_names");
/// A pod's containers, by (pod id, container id).
pub(crate) const CONTAINERS_BY_POD: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("containers_by_pod");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    let op = "creating the container tables";
    txn.open_table(CONTAINERS).map_err(redb_err(op))?;
    txn.open_table(CONTAINER_NAMES).map_err(redb_err(op))?;
    txn.open_table(CONTAINERS_BY_POD).map_err(redb_err(op))?;
    Ok(())
}

/// The migration from schema version 1 to 2: `containers_by_pod` from the container
/// records. A record that does not decode gets no entry (the check reports it).
pub(crate) fn index_by_pod(txn: &WriteTransaction) -> Result<(), StoreError> {
    let op = "indexing containers by pod";
    let containers = txn.open_table(CONTAINERS).map_err(redb_err(op))?;
    let mut by_pod = txn.open_table(CONTAINERS_BY_POD).map_err(redb_err(op))?;
    for entry in containers.iter().map_err(redb_err(op))? {
        let (k, v) = entry.map_err(redb_err(op))?;
        if let Ok(c) = decode::<ContainerRecord>(CONTAINERS.name(), k.value(), v.value()) {
            by_pod
                .insert((c.pod_id.as_str(), k.value()), ())
                .map_err(redb_err(op))?;
        }
    }
    Ok(())
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    /// CreateContainer is making it; found at start-up, it is undone.
    Creating,
    Created,
    Running,
    Exited,
}

/// A container, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    /// The reserved name, `name_podname_podnamespace_poduid_attempt`.
    pub name: String,
    pub state: ContainerState,
    pub created_at: i64,
    #[serde(default)]
    pub started_at: i64,
    #[serde(default)]
    pub finished_at: i64,
    #[serde(default)]
    pub exit_code: i32,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// The config the kubelet sent.
    pub config: crius_cri_api::v1::ContainerConfig,
    /// The image as the kubelet named it, and its id.
    pub image: String,
    pub image_ref: String,
    /// Absolute CRI log path, if the pod has a log directory.
    pub log_path: Option<PathBuf>,
    /// OCI bundle (config.json, rootfs, exit record).
    pub bundle: PathBuf,
    /// The shim's socket.
    pub socket: PathBuf,
    /// The OCI runtime binary.
    pub runtime: PathBuf,
    #[serde(default)]
    pub pid: u32,
    /// The image's stop signal ("" for SIGTERM).
    #[serde(default)]
    pub stop_signal: String,
    /// The user the process runs as (resolved in the container's own files).
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub supplemental_groups: Vec<u32>,
}

impl Db {
    /// Writes a new container, reserves its name and lists it under its pod, unless
    /// the name is taken.
    pub fn insert_container(&self, c: &ContainerRecord) -> Result<Reserve, StoreError> {
        let bytes = encode(CONTAINERS.name(), c)?;
        let op = "writing a new container";
        self.write(op, |txn| {
            if let Some(holder) = reserve(txn, CONTAINER_NAMES, &c.name, &c.id)? {
                return Ok(Reserve::Taken(holder));
            }
            txn.open_table(CONTAINERS)
                .map_err(redb_err(op))?
                .insert(c.id.as_str(), bytes.as_slice())
                .map_err(redb_err(op))?;
            txn.open_table(CONTAINERS_BY_POD)
                .map_err(redb_err(op))?
                .insert((c.pod_id.as_str(), c.id.as_str()), ())
                .map_err(redb_err(op))?;
            Ok(Reserve::Done)
        })
    }

    /// Replaces a container's record (and its pod entry, should its pod change).
    pub fn update_container(&self, c: &ContainerRecord) -> Result<(), StoreError> {
        let bytes = encode(CONTAINERS.name(), c)?;
        let op = "writing a container";
        self.write(op, |txn| {
            let old = txn
                .open_table(CONTAINERS)
                .map_err(redb_err(op))?
                .insert(c.id.as_str(), bytes.as_slice())
                .owned(op)?;
            let mut by_pod = txn.open_table(CONTAINERS_BY_POD).map_err(redb_err(op))?;
            let old_pod = old
                .and_then(|o| decode::<ContainerRecord>(CONTAINERS.name(), &c.id, &o).ok())
                .map(|o| o.pod_id);
            if let Some(old_pod) = old_pod.filter(|p| *p != c.pod_id) {
                by_pod
                    .remove((old_pod.as_str(), c.id.as_str()))
                    .map_err(redb_err(op))?;
            }
            by_pod
                .insert((c.pod_id.as_str(), c.id.as_str()), ())
                .map_err(redb_err(op))?;
            Ok(())
        })
    }

    /// Deletes a container, frees its name and drops its pod entry; missing is fine.
    pub fn delete_container(&self, id: &str) -> Result<(), StoreError> {
        let op = "deleting a container";
        self.write(op, |txn| {
            let removed = remove_named::<ContainerRecord>(txn, (CONTAINERS, CONTAINER_NAMES), id)?;
            let mut by_pod = txn.open_table(CONTAINERS_BY_POD).map_err(redb_err(op))?;
            match removed {
                None => {}
                Some(Some(old)) => {
                    by_pod
                        .remove((old.pod_id.as_str(), id))
                        .map_err(redb_err(op))?;
                }
                // The record did not decode: its entry is found by scanning.
                Some(None) => {
                    let mut stale = Vec::new();
                    for entry in by_pod.iter().map_err(redb_err(op))? {
                        let (k, _) = entry.map_err(redb_err(op))?;
                        let (pod, container) = k.value();
                        if container == id {
                            stale.push(pod.to_string());
                        }
                    }
                    for pod in stale {
                        by_pod.remove((pod.as_str(), id)).map_err(redb_err(op))?;
                    }
                }
            }
            Ok(())
        })
    }

    /// The id of the container holding a reserved name.
    pub fn container_id_by_name(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.lookup(CONTAINER_NAMES, name)
    }

    /// One container by exact id.
    pub fn container(&self, id: &str) -> Result<Option<ContainerRecord>, StoreError> {
        self.get(CONTAINERS, id)
    }

    /// Every container (those whose record does not decode are skipped).
    pub fn containers(&self) -> Result<Vec<ContainerRecord>, StoreError> {
        self.all(CONTAINERS)
    }

    /// The containers of one pod, through `containers_by_pod`: only that pod's
    /// records are read.
    pub fn containers_of_pod(&self, pod_id: &str) -> Result<Vec<ContainerRecord>, StoreError> {
        let op = "listing a pod's containers";
        self.read(op, |txn| {
            let by_pod = txn.open_table(CONTAINERS_BY_POD).map_err(redb_err(op))?;
            let containers = txn.open_table(CONTAINERS).map_err(redb_err(op))?;
            let mut out = Vec::new();
            for entry in by_pod.range((pod_id, "")..).map_err(redb_err(op))? {
                let (k, _) = entry.map_err(redb_err(op))?;
                let (pod, id) = k.value();
                if pod != pod_id {
                    break;
                }
                let Some(v) = containers.get(id).map_err(redb_err(op))? else {
                    continue;
                };
                if let Some(c) = self.decode_or_skip(CONTAINERS.name(), id, v.value()) {
                    out.push(c);
                }
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            pod_id: "p".into(),
            name: name.into(),
            state: ContainerState::Creating,
            created_at: 1,
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            config: Default::default(),
            image: "busybox".into(),
            image_ref: "sha256:1".into(),
            log_path: None,
            bundle: PathBuf::from("/b"),
            socket: PathBuf::from("/s"),
            runtime: PathBuf::from("runc"),
            pid: 0,
            stop_signal: String::new(),
            uid: 0,
            gid: 0,
            supplemental_groups: vec![],
        }
    }

    #[test]
    fn container_names_are_reserved_and_freed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("s.redb")).unwrap();
        assert_eq!(
            db.insert_container(&record("a", "n")).unwrap(),
            Reserve::Done
        );
        assert_eq!(
            db.insert_container(&record("b", "n")).unwrap(),
            Reserve::Taken("a".into())
        );
        let mut a = db.container("a").unwrap().unwrap();
        a.state = ContainerState::Running;
        db.update_container(&a).unwrap();
        assert_eq!(db.containers().unwrap()[0].state, ContainerState::Running);
        assert_eq!(db.container_id_by_name("n").unwrap().as_deref(), Some("a"));
        db.delete_container("a").unwrap();
        db.delete_container("a").unwrap();
        assert!(db.container_id_by_name("n").unwrap().is_none());
        assert!(db.containers().unwrap().is_empty());
    }

    #[test]
    fn a_pods_containers_come_from_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("s.redb")).unwrap();
        let in_pod = |id: &str, pod: &str| ContainerRecord {
            pod_id: pod.into(),
            ..record(id, &format!("n-{id}"))
        };
        db.insert_container(&in_pod("a", "p")).unwrap();
        db.insert_container(&in_pod("b", "p")).unwrap();
        db.insert_container(&in_pod("c", "p2")).unwrap();
        // "p" is a prefix of "p2": the range must stop at the pod's own entries.
        let ids = |pod: &str| -> Vec<String> {
            db.containers_of_pod(pod)
                .unwrap()
                .into_iter()
                .map(|c| c.id)
                .collect()
        };
        assert_eq!(ids("p"), ["a", "b"]);
        assert_eq!(ids("p2"), ["c"]);
        assert!(ids("").is_empty());
        // Moving a container to another pod moves its entry.
        db.update_container(&in_pod("b", "p2")).unwrap();
        assert_eq!(ids("p"), ["a"]);
        assert_eq!(ids("p2"), ["b", "c"]);
        db.delete_container("b").unwrap();
        assert_eq!(ids("p2"), ["c"]);
        let updated = ContainerRecord {
            state: ContainerState::Running,
            ..in_pod("a", "p")
        };
        db.update_container(&updated).unwrap();
        assert_eq!(db.containers_of_pod("p").unwrap(), vec![updated]);
    }
}

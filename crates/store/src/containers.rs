//! The `containers` table (container records by id) and `container_names` (reserved
//! name → id).

use std::path::PathBuf;

use redb::{TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::table::{Index, Named, Records, redb_err};
use crate::{Db, Reserve, StoreError};

const CONTAINERS: Records = TableDefinition::new("containers");
const CONTAINER_NAMES: Index = TableDefinition::new("container_names");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    let op = "creating the container tables";
    txn.open_table(CONTAINERS).map_err(redb_err(op))?;
    txn.open_table(CONTAINER_NAMES).map_err(redb_err(op))?;
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    pub config: k8s_cri::v1::ContainerConfig,
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

impl Named for ContainerRecord {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Db {
    /// Writes a new container and reserves its name, unless the name is taken.
    pub fn insert_container(&self, c: &ContainerRecord) -> Result<Reserve, StoreError> {
        self.insert_named((CONTAINERS, CONTAINER_NAMES), &c.id, &c.name, c)
    }

    /// Replaces a container's record.
    pub fn update_container(&self, c: &ContainerRecord) -> Result<(), StoreError> {
        self.put(CONTAINERS, &c.id, c)
    }

    /// Deletes a container and frees its name; missing is fine.
    pub fn delete_container(&self, id: &str) -> Result<(), StoreError> {
        self.delete_named::<ContainerRecord>((CONTAINERS, CONTAINER_NAMES), id)
    }

    /// The id of the container holding a reserved name.
    pub fn container_id_by_name(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.lookup(CONTAINER_NAMES, name)
    }

    /// One container by exact id.
    pub fn container(&self, id: &str) -> Result<Option<ContainerRecord>, StoreError> {
        self.get(CONTAINERS, id)
    }

    /// Every container.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>, StoreError> {
        self.all(CONTAINERS)
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
}

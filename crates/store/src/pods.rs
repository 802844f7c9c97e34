//! The `pods` table (pod sandbox records by id) and `pod_names` (reserved name → id).

use std::path::PathBuf;

use crius_cri_api::v1::PodSandboxConfig;
use redb::{TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::table::{Index, Records, redb_err};
use crate::{Db, Reserve, StoreError};

pub(crate) const PODS: Records = TableDefinition::new("pods");
pub(crate) const POD_NAMES: Index = TableDefinition::new("pod_names");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    let op = "creating the pod tables";
    txn.open_table(PODS).map_err(redb_err(op))?;
    txn.open_table(POD_NAMES).map_err(redb_err(op))?;
    Ok(())
}

/// Where a pod sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodState {
    /// RunPodSandbox is making it; a record found in this state at start-up is the
    /// remains of a crash and is undone.
    Creating,
    /// Namespaces pinned and network set up.
    Ready,
    /// Stopped (or found broken at start-up): namespaces and network released.
    NotReady,
}

/// Paths of a pod's pinned namespaces; `None` where the pod shares the host's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// The pod's own user namespace (`hostUsers: false`), owner of the others.
    #[serde(default)]
    pub user: Option<PathBuf>,
}

impl PinnedNamespaces {
    /// Every pinned path.
    pub fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.net
            .iter()
            .chain(self.ipc.iter())
            .chain(self.uts.iter())
            .chain(self.user.iter())
    }
}

/// A pod sandbox as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    /// The reserved name, `name_namespace_uid_attempt`.
    pub name: String,
    pub state: PodState,
    /// Creation time, nanoseconds since the epoch.
    pub created_at: i64,
    /// The RuntimeClass handler, resolved (never empty).
    pub runtime_handler: String,
    /// The config the kubelet sent, as received.
    pub config: PodSandboxConfig,
    /// The pod's own directory (hostname, hosts, resolv.conf, pinned namespaces).
    pub dir: PathBuf,
    pub namespaces: PinnedNamespaces,
    /// Pod addresses, primary first.
    #[serde(default)]
    pub ips: Vec<String>,
    /// The infra process holding the pod's shared PID namespace, when the pod asked
    /// for one (`namespace_options.pid = POD`).
    #[serde(default)]
    pub infra_pid: Option<u32>,
}

impl Db {
    /// Writes a new pod and reserves its name, unless the name is taken.
    pub fn insert_pod(&self, pod: &PodRecord) -> Result<Reserve, StoreError> {
        self.insert_named((PODS, POD_NAMES), &pod.id, &pod.name, pod)
    }

    /// Replaces an existing pod's record.
    pub fn update_pod(&self, pod: &PodRecord) -> Result<(), StoreError> {
        self.put(PODS, &pod.id, pod)
    }

    /// Deletes a pod and frees its name. Deleting a missing pod is not an error.
    pub fn delete_pod(&self, id: &str) -> Result<(), StoreError> {
        self.delete_named::<PodRecord>((PODS, POD_NAMES), id)
    }

    /// One pod by exact id.
    pub fn pod(&self, id: &str) -> Result<Option<PodRecord>, StoreError> {
        self.get(PODS, id)
    }

    /// Every pod (those whose record does not decode are skipped).
    pub fn pods(&self) -> Result<Vec<PodRecord>, StoreError> {
        self.all(PODS)
    }

    /// The id of the pod holding a reserved name.
    pub fn pod_id_by_name(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.lookup(POD_NAMES, name)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(id: &str, name: &str) -> PodRecord {
        PodRecord {
            id: id.into(),
            name: name.into(),
            state: PodState::Creating,
            created_at: 1,
            runtime_handler: "runc".into(),
            config: PodSandboxConfig::default(),
            dir: PathBuf::from("/x"),
            namespaces: PinnedNamespaces::default(),
            ips: vec![],
            infra_pid: None,
        }
    }

    #[test]
    fn names_are_reserved_once_and_freed_on_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Db::open(&dir.path().join("s.redb")).unwrap();
        assert_eq!(store.insert_pod(&record("a", "n")).unwrap(), Reserve::Done);
        assert_eq!(
            store.insert_pod(&record("b", "n")).unwrap(),
            Reserve::Taken("a".into())
        );
        assert!(store.pod("b").unwrap().is_none());
        let mut a = store.pod("a").unwrap().unwrap();
        a.state = PodState::Ready;
        store.update_pod(&a).unwrap();
        assert_eq!(store.pods().unwrap()[0].state, PodState::Ready);
        store.delete_pod("a").unwrap();
        store.delete_pod("a").unwrap();
        assert!(store.pod_id_by_name("n").unwrap().is_none());
        assert_eq!(store.insert_pod(&record("b", "n")).unwrap(), Reserve::Done);
    }

    #[test]
    fn reopens_with_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let store = Db::open(&path).unwrap();
            store.insert_pod(&record("a", "n")).unwrap();
        }
        let store = Db::open(&path).unwrap();
        assert_eq!(store.pod_id_by_name("n").unwrap().as_deref(), Some("a"));
        assert_eq!(store.pods().unwrap().len(), 1);
    }
}
